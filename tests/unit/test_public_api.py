"""The package front: its public names are pinned, and importing it loads no model or dlib."""

from __future__ import annotations

import subprocess
import sys

import explainer_service


def test_public_names_are_pinned():
    assert sorted(explainer_service.__all__) == sorted(
        [
            "ARCFACE_CHIP", "DLIB_CHIP", "AlignedFace", "Aligner", "ChipSpec",
            "BackendError", "FaceNotFoundError", "FacexplainError", "InputError", "ModelFormatError",
            "ModelNotReadyError", "Explanation", "load_image", "MaskConfig", "generate_masks",
            "CorrRISE", "CorrRISEConfig", "FaceModel", "DEFAULT_MODEL", "ModelSpec", "get_spec",
            "explain_files", "load_face_model", "open_face_model",
        ]
    )
    for name in explainer_service.__all__:
        assert getattr(explainer_service, name) is not None


def test_import_is_light():
    code = "import sys, explainer_service; print(sorted(m for m in ('dlib', 'onnxruntime', 'torch', 'tritonclient') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
