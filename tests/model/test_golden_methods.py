"""Every method rebuilt through the registry gives, bit for bit, the maps the pre-refactor code gave
on the demo pair (tests/fixtures/golden/demo_pair.json, key ``library_seed3_budget64``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from explainer_service.methods import METHOD_NAMES, build

pytestmark = pytest.mark.model

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden" / "demo_pair.json").read_text())
LIBRARY = GOLDEN["library_seed3_budget64"]


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    from explainer_service.alignment import Aligner
    from explainer_service.demo import make_demo_pair
    from explainer_service.spec import DLIB_CHIP

    a, b = make_demo_pair(tmp_path_factory.mktemp("demo"))
    aligner = Aligner()
    return aligner.align_file(a, DLIB_CHIP).chip, aligner.align_file(b, DLIB_CHIP).chip


@pytest.fixture(scope="module")
def model():
    from explainer_service.pipeline import load_face_model

    return load_face_model()


def test_the_golden_file_covers_every_method():
    assert set(LIBRARY) == set(METHOD_NAMES)


# minplus and xface take 15-25 s each: slow, so `make test-fast` skips them (`make test` runs them)
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in ("minplus", "xface") else n for n in METHOD_NAMES]
)
def test_maps_are_unchanged(name, chips, model):
    want = LIBRARY[name]
    ex = build(name, model, seed=3, budget=64).attribute(*chips)
    assert (sha(ex.s_a), sha(ex.s_b)) == (want["s_a"], want["s_b"]), name
    assert ex.score == want["score"]
    assert ex.masks == want["masks"]
    # the recorded parameters are still there, with the same values
    assert {k: ex.params[k] for k in want["params"]} == want["params"]
    assert ex.forward_passes == 2 * ex.masks + 2 if ex.masks else ex.forward_passes == 2
