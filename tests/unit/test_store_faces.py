"""The aligned faces the API keeps with an explain job (``store.faces``): exact round trip, the
match on chip and alignment options, and a clear InputError for every kind of damage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.results import FaceRecord
from explainer_service.spec import ARCFACE_CHIP, DLIB_CHIP
from explainer_service.store.faces import FACES_FORMAT, FACES_INPUT, faces_from_inputs, faces_to_inputs

ALIGN = {"face": "largest", "aligned": "auto"}


def _face(seed: int, *, landmarks: bool = True, size: int = 150) -> FaceRecord:
    rng = np.random.default_rng(seed)
    return FaceRecord(
        source=f"image_{'ab'[seed % 2]}",
        method="detected",
        faces_found=2,
        face_box=(10, 20, 110, 140),
        landmarks=rng.normal(size=(5, 2)) * 100 if landmarks else None,
        transform=rng.normal(size=(2, 3)),
        chip=rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8),
    )


def _read(inputs: dict[str, bytes]):
    def read(name: str) -> bytes:
        return inputs[name]

    return read


def test_round_trip_is_bit_exact():
    a, b = _face(0), _face(1, landmarks=False)
    inputs = faces_to_inputs(a, b, DLIB_CHIP, ALIGN, 0.25)
    assert set(inputs) == {FACES_INPUT, "faces.a.chip", "faces.a.transform", "faces.a.landmarks",
                           "faces.b.chip", "faces.b.transform"}
    assert inputs["faces.a.chip"] == a.chip.tobytes()  # raw C-order bytes, no container
    stored = faces_from_inputs(_read(inputs))
    assert stored.chip == DLIB_CHIP and dict(stored.align) == ALIGN and stored.align_s == 0.25
    for got, want in ((stored.face_a, a), (stored.face_b, b)):
        assert got.source == want.source and got.method == want.method
        assert got.faces_found == want.faces_found and got.face_box == want.face_box
        assert got.chip is not None and got.chip.dtype == np.uint8 and got.chip.flags.writeable
        np.testing.assert_array_equal(got.chip, want.chip)
        np.testing.assert_array_equal(got.transform, want.transform)  # float64 exactly, not via text
    np.testing.assert_array_equal(stored.face_a.landmarks, a.landmarks)
    assert stored.face_b.landmarks is None


def test_matches_only_the_chip_and_alignment_options_they_were_cut_for():
    stored = faces_from_inputs(_read(faces_to_inputs(_face(0), _face(1), DLIB_CHIP, ALIGN)))
    assert stored.matches(DLIB_CHIP, dict(ALIGN))
    assert not stored.matches(ARCFACE_CHIP, ALIGN)
    assert not stored.matches(DLIB_CHIP, {"face": "center", "aligned": "auto"})
    assert not stored.matches(DLIB_CHIP, {"face": "largest"})


def test_a_face_without_chip_or_of_another_size_is_refused():
    no_chip = FaceRecord("image_a", "detected", 1, transform=np.eye(2, 3))
    with pytest.raises(InputError, match="face a: a stored face needs its chip"):
        faces_to_inputs(no_chip, _face(1), DLIB_CHIP, ALIGN)
    with pytest.raises(InputError, match="face b: chip of shape"):
        faces_to_inputs(_face(0), _face(1, size=112), DLIB_CHIP, ALIGN)


def _damaged(change) -> dict[str, bytes]:
    inputs = faces_to_inputs(_face(0), _face(1), DLIB_CHIP, ALIGN)
    meta = json.loads(inputs[FACES_INPUT])
    change(meta, inputs)
    inputs[FACES_INPUT] = json.dumps(meta).encode()
    return inputs


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m, i: m.update(format="facexplain.faces/0"), "format 'facexplain.faces/0'"),
        (lambda m, i: m["faces"]["a"]["arrays"]["chip"].update(shape=[112, 112, 3]), "chip: unexpected shape"),
        (lambda m, i: m["faces"]["b"]["arrays"]["transform"].update(dtype="<f4"), "transform: expected dtype"),
        (lambda m, i: i.update({"faces.a.chip": i["faces.a.chip"][:-1]}), "bytes do not hold"),
        (lambda m, i: m["faces"]["a"]["arrays"].pop("transform"), "missing transform"),
        (lambda m, i: m["faces"]["a"]["arrays"].update(mask={}), "unexpected arrays"),
        (lambda m, i: m["faces"]["b"].update(face_box=[1, 2, 3]), "face_box"),
        (lambda m, i: m["faces"]["b"].update(faces_found=-1), "faces_found"),
        (lambda m, i: m.pop("chip"), "lacks 'chip'"),
        (lambda m, i: m["chip"].update(size=10**6), "chip size"),
        (lambda m, i: m.update(align_s=-1), "align_s"),
        (lambda m, i: i.update({"faces.b.transform": np.full((2, 3), np.nan).tobytes()}), "non-finite"),
    ],
)
def test_damaged_fields_are_an_input_error_naming_the_problem(change, words):
    with pytest.raises(InputError, match=words):
        faces_from_inputs(_read(_damaged(change)))


def test_a_description_that_is_not_json_or_of_another_format():
    inputs = faces_to_inputs(_face(0), _face(1), DLIB_CHIP, ALIGN)
    inputs[FACES_INPUT] = b"\x80not json"
    with pytest.raises(InputError, match="not JSON"):
        faces_from_inputs(_read(inputs))
    inputs[FACES_INPUT] = b"[1, 2]"
    with pytest.raises(InputError, match=f"expected '{FACES_FORMAT}'"):
        faces_from_inputs(_read(inputs))
