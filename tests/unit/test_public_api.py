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
            # issue 8: the error tree and the settings
            "LimitExceededError", "UnknownModelError", "NotFoundError", "AuthenticationError",
            "CancelledError", "TransientError", "BackendUnavailableError", "DeadlineExceededError",
            "Limits", "Settings", "get_settings",
            # issue 8: methods by name, one result type, any method on a pair, images from bytes
            "list_methods", "PairResult", "explain_pair", "decode_image",
        ]
    )
    for name in explainer_service.__all__:
        assert getattr(explainer_service, name) is not None
    assert len(set(explainer_service.__all__)) == len(explainer_service.__all__)


def test_every_error_class_is_exported():
    from explainer_service import errors

    classes = {
        name for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.FacexplainError)
    }
    assert classes <= set(explainer_service.__all__)


def test_layers_point_down():
    """Contract modules import nothing above them; models/ never imports serving/ (no circle)."""
    code = (
        "import sys, explainer_service.models.store, explainer_service.models.registry;"
        "print(sorted(m for m in sys.modules if m.startswith('explainer_service.serving')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import ast
    from pathlib import Path

    models = Path(explainer_service.__file__).parent / "models"
    for path in models.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                assert "serving" not in target, f"{path.name} imports {target}"
            elif isinstance(node, ast.Import):
                assert not any("serving" in a.name for a in node.names), path.name


def test_import_is_light():
    code = "import sys, explainer_service; print(sorted(m for m in ('dlib', 'onnxruntime', 'torch', 'tritonclient') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_contract_modules_depend_only_on_the_bottom_layer():
    import ast
    from pathlib import Path

    pkg = Path(explainer_service.__file__).parent
    allowed = {
        "errors.py": set(),
        "fileio.py": {"errors"},
        "spec.py": {"errors"},
        "settings.py": {"errors"},
        "progress.py": {"errors"},
        "models/store.py": {"errors", "fileio", "settings", "spec"},
    }
    for rel, ok in allowed.items():
        depth = rel.count("/") + 1  # relative level that reaches the package root
        for node in ast.walk(ast.parse((pkg / rel).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == depth and (node.module or "").split(".")[0] in ok, (
                    f"{rel} imports {'.' * node.level}{node.module}"
                )
