"""facexplain: saliency explanations of face verification (CorrRISE) served through Triton."""
