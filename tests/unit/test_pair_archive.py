"""An audit pair's kept results (``pair_archive``): one archive holds each method's complete
PairResult on the pair's chips and gives it back bit for bit (maps, scores, chips, alignment,
parameters); damaged archives and inconsistent inputs are refused with a message naming them."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from explainer_service.errors import InputError
from explainer_service.explanation import Explanation
from explainer_service.models.registry import DLIB_RESNET_V1
from explainer_service.pair_archive import pack_pair_results, unpack_pair_results
from explainer_service.results import FaceRecord, ModelInfo, PairResult, Timing

rng = np.random.default_rng(11)
CHIP_A = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
CHIP_B = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
FACE_A = FaceRecord("p A", "detected", 1, (1, 2, 140, 149), rng.uniform(0, 150, (5, 2)), rng.standard_normal((2, 3)),
                    CHIP_A)
FACE_B = FaceRecord("p B", "pre-aligned", 0, chip=CHIP_B)


def _result(method: str, n: int, seed: int) -> PairResult:
    r = np.random.default_rng(seed)
    ex = Explanation(
        s_a=r.uniform(-1, 1, (150, 150)).astype(np.float32), s_b=r.uniform(-1, 1, (150, 150)).astype(np.float32),
        score=0.5 + seed / 1000, threshold=0.6, model="dlib-resnet-v1", masks=n, method=method,
        params={"seed": seed, "patch_sizes": [7, 14]}, scores_a=r.standard_normal(n).astype(np.float32),
        scores_b=r.standard_normal(n).astype(np.float32), forward_passes=2 * n + 2,
    )
    return PairResult.from_explanation(ex, FACE_A, FACE_B, ModelInfo.from_spec(DLIB_RESNET_V1, "cd" * 32),
                                       engine="local", timing=Timing(0.25, 1.5 + seed))


def _bits(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x).tobytes()


def test_each_methods_result_comes_back_exactly() -> None:
    results = [_result("corrrise", 40, 1), _result("gradcam", 1, 2)]
    back = unpack_pair_results(pack_pair_results(results))
    assert list(back) == ["corrrise", "gradcam"]
    for want in results:
        got = back[want.method]
        assert got.to_dict() == want.to_dict()
        for name in ("s_a", "s_b", "scores_a", "scores_b"):
            x, y = getattr(got, name), getattr(want, name)
            assert x.dtype == np.float32 and x.shape == y.shape and _bits(x) == _bits(y), name
        assert _bits(got.face_a.chip) == _bits(CHIP_A) and _bits(got.face_b.chip) == _bits(CHIP_B)
        assert got.face_a.landmarks is not None and _bits(got.face_a.landmarks) == _bits(FACE_A.landmarks)
        assert got.face_a.face_box == FACE_A.face_box and got.face_b.method == "pre-aligned"
        assert got.timing == want.timing and got.params == want.params and got.masks == want.masks


def test_written_folder_reads_back_as_explain_writes_it(tmp_path) -> None:
    result = unpack_pair_results(pack_pair_results([_result("corrrise", 40, 3)]))["corrrise"]
    paths = result.write(tmp_path / "p")
    assert {p.name for p in paths.values()} == {"summary.json", "maps.npz", "figure.png"}
    again = PairResult.read(tmp_path / "p")
    assert again.s_a is not None and _bits(again.s_a) == _bits(result.s_a)


def test_an_archive_of_maps_only_has_no_results() -> None:
    buf = io.BytesIO()
    np.savez(buf, chip_a=CHIP_A, chip_b=CHIP_B, **{"gradcam.s_a": np.zeros((150, 150), np.float32)})
    assert unpack_pair_results(buf.getvalue()) == {}


def test_inconsistent_inputs_refused() -> None:
    one = _result("gradcam", 1, 4)
    with pytest.raises(InputError, match="at least one"):
        pack_pair_results([])
    with pytest.raises(InputError, match="given twice"):
        pack_pair_results([one, one])
    with pytest.raises(InputError, match="no maps"):
        pack_pair_results([replace(one, s_a=None)])
    other_chip = replace(_result("rise", 5, 5), face_a=replace(FACE_A, chip=CHIP_B))
    with pytest.raises(InputError, match="rise result was not computed on the pair's chips"):
        pack_pair_results([one, other_chip])


def test_damaged_archives_refused() -> None:
    with pytest.raises(InputError, match="kept maps: not a readable .npz"):
        unpack_pair_results(b"not an archive", where="kept maps")
    good = pack_pair_results([_result("gradcam", 1, 6)])
    with np.load(io.BytesIO(good)) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value, words in (
        ("gradcam.s_a", np.zeros((10, 10), np.float32), "'gradcam.s_a' has shape (10, 10), expected (150, 150)"),
        ("gradcam.scores_a", np.zeros(3, np.float64), "'gradcam.scores_a' is float64"),
        ("chip_b", np.zeros((112, 112, 3), np.uint8), "'chip_b' has shape (112, 112, 3), expected (150, 150, 3)"),
        ("gradcam.summary", np.frombuffer(b"{nope", np.uint8), "gradcam summary is not JSON"),
    ):
        buf = io.BytesIO()
        np.savez(buf, **{**arrays, key: value})
        with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
            unpack_pair_results(buf.getvalue())


def test_a_results_uncertainty_is_kept_with_its_arrays(tmp_path):
    from explainer_service.uncertainty import Uncertainty

    result = _result("corrrise", 30, 2)
    r = np.random.default_rng(9)
    halves = [r.uniform(-1, 1, (150, 150)).astype(np.float32) for _ in range(4)]
    unc = Uncertainty.of_maps(result.s_a, result.s_b, 30, halves_a=(halves[0], halves[1]),
                              halves_b=(halves[2], halves[3]))
    result = replace(result, uncertainty=unc)
    back = unpack_pair_results(pack_pair_results([result, _result("rise", 20, 3)]))
    got = back["corrrise"].uncertainty
    assert got is not None and got.summary() == unc.summary() and back["rise"].uncertainty is None
    for key, arr in unc.arrays().items():
        assert got.arrays()[key].dtype == arr.dtype and _bits(got.arrays()[key]) == _bits(arr), key
    back["corrrise"].write(tmp_path)  # the folder `client result` writes reads back whole
    again = PairResult.read(tmp_path)
    assert again.uncertainty is not None and again.uncertainty.has_arrays
    # an archive whose summary announces an uncertainty without its arrays is refused by name
    arrays = dict(np.load(io.BytesIO(pack_pair_results([result]))))
    del arrays["corrrise.significant_b"]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(InputError, match="missing array 'corrrise.significant_b'"):
        unpack_pair_results(buf.getvalue())
