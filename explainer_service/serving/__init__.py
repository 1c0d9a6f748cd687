"""Serving: the Triton model repository, the embedded tritonserver, and the Triton client."""
