"""CorrRISE's device engine on torch's CPU device: masks bit-identical to the host generator, maps
equal to the NumPy engine's, shards that merge across engines, batching invariance, and the hook
that picks the engine."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from explainer_service.errors import InputError  # noqa: E402
from explainer_service.masks import MaskConfig, generate_masks  # noqa: E402
from explainer_service.methods import corrrise_device  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig, ShardResult  # noqa: E402
from explainer_service.methods.corrrise_torch import (  # noqa: E402
    CorrRISETorch,
    device_masks,
    device_of,
    run_shard_on_device,
)
from explainer_service.models.torch_model import TorchFaceModel  # noqa: E402
from tests.toy import ToyModel, toy_pair  # noqa: E402


class Net(torch.nn.Module):
    """A small untrained CNN: an embedding that depends on every pixel, non-linearly."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(4),
        )
        self.fc = torch.nn.Linear(8 * 8 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features((x - 128.0) / 64.0).flatten(1))


def torch_model() -> TorchFaceModel:
    torch.manual_seed(0)
    return TorchFaceModel(Net(), ToyModel().spec)


def config(n: int = 120, correlation: str = "pearson", **kw) -> CorrRISEConfig:
    return CorrRISEConfig(masks=MaskConfig(n_masks=n, patches=3, patch_size=6, seed=4), correlation=correlation, **kw)


@pytest.mark.parametrize(
    "masks, chip",
    [
        (MaskConfig(n_masks=40, seed=3), 112),                                   # the paper's masks
        (MaskConfig(n_masks=40, seed=3), 150),                                   # scaled patch, dlib chip
        (MaskConfig(n_masks=30, patches=7, patch_size=5, values="binary"), 33),
        (MaskConfig(n_masks=30, patches=4, patch_size=9, per_pixel=True, seed=9), 32),
        (MaskConfig(n_masks=30, patches=4, patch_size=9, clip_at_border=False, seed=2), 31),
        (MaskConfig(n_masks=30, patches=2, patch_size=20, per_pixel=True, clip_at_border=False), 20),
    ],
)
def test_device_masks_are_the_host_masks_bit_for_bit(masks, chip):
    for lo, hi in ((0, masks.n_masks), (7, 23), (29, 30)):
        host = generate_masks(masks, chip, lo, hi)
        dev = device_masks(masks, chip, lo, hi, "cpu").numpy()
        assert dev.dtype == np.float32 and dev.shape == host.shape
        assert np.array_equal(dev, host), (lo, hi)


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
@pytest.mark.parametrize("make_model", [torch_model, ToyModel], ids=["torch-module", "host-embed"])
def test_maps_equal_the_numpy_engine(correlation, make_model):
    a, b = toy_pair(2)
    cfg = config(200, correlation)
    ref = CorrRISE(make_model(), cfg).attribute(a, b)
    got = CorrRISETorch(make_model(), cfg).attribute(a, b)
    assert np.abs(ref.s_a).max() > 0.2 and np.abs(ref.s_b).max() > 0.2  # maps with signal, not zeros
    np.testing.assert_allclose(got.s_a, ref.s_a, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.s_b, ref.s_b, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.scores_a, ref.scores_a, atol=1e-5, rtol=0)
    assert got.score == ref.score and got.forward_passes == ref.forward_passes == 402
    assert got.params == ref.params and got.masks == 200


def test_the_accumulators_equal_the_numpy_engines_to_float64_rounding():
    """With a model whose embeddings do not depend on the batch (the toy), scores agree to
    float64 rounding, and so do the per-pixel co-moments (the engines differ only in summation
    order)."""
    a, b = toy_pair(5)
    ref = CorrRISE(ToyModel(), config(75)).run_shard(a, b, 0, 75)
    got = CorrRISETorch(ToyModel(), config(75)).run_shard(a, b, 0, 75)
    np.testing.assert_allclose(got.scores_a, ref.scores_a, rtol=0, atol=1e-14)
    for key, value in ref.acc_a.state().items():
        np.testing.assert_allclose(got.acc_a.state()[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    assert got.acc_b.n == ref.acc_b.n == 75 and got.identity == ref.identity and got.clean_passes == 2


@pytest.mark.parametrize("start, stop", [(0, 75), (3, 40), (7, 8), (10, 11)])
def test_the_split_half_accumulators_equal_the_numpy_engines(start, stop):
    """Shards that carry the even-indexed masks' accumulators carry the same from both engines."""
    a, b = toy_pair(5)
    ref = CorrRISE(ToyModel(), config(75)).run_shard(a, b, start, stop)
    got = CorrRISETorch(ToyModel(), config(75)).run_shard(a, b, start, stop)
    for face in ("even_a", "even_b"):
        want, have = getattr(ref, face, None), getattr(got, face, None)
        assert (want is None) == (have is None)
        if want is not None:
            assert have.n == want.n == len(range(start + start % 2, stop, 2))
            for key, value in want.state().items():
                np.testing.assert_allclose(have.state()[key], value, rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_shards_of_both_engines_merge_to_the_single_pass(correlation):
    a, b = toy_pair(1)
    model = torch_model()
    numpy_engine, device_engine = CorrRISE(model, config(120, correlation)), CorrRISETorch(model, config(120, correlation))
    single = numpy_engine.attribute(a, b)
    cuts = [0, 9, 16, 40, 41, 70, 101, 120]
    emb = numpy_engine.clean_embeddings(a, b)
    parts = []
    for i, (lo, hi) in enumerate(zip(cuts, cuts[1:], strict=False)):
        e = device_engine if i % 2 else numpy_engine
        shard = e.run_shard(a, b, lo, hi, embeddings=None if i == 0 else emb)
        if i % 2:  # a device shard travels as plain arrays like any other
            shard = ShardResult.from_state(shard.state())
        parts.append(shard)
    rng = np.random.default_rng(0)
    pool = [parts[i] for i in rng.permutation(len(parts))]
    while len(pool) > 1:
        i, j = sorted(rng.choice(len(pool), 2, replace=False))
        right, left = pool.pop(j), pool.pop(i)
        pool.append(left.merge(right))
    merged = device_engine.finish(pool[0])
    assert pool[0].covers(120) and merged.forward_passes == single.forward_passes
    np.testing.assert_allclose(merged.s_a, single.s_a, atol=1e-4, rtol=0)
    np.testing.assert_allclose(merged.s_b, single.s_b, atol=1e-4, rtol=0)


def test_batching_never_changes_the_device_maps():
    """Images per model call 1, 2, 6, 32 and 512: the model's embeddings do not depend on the batch
    (the toy), so scores and accumulators are identical bit for bit (fixed 16-mask blocks)."""
    a, b = toy_pair(4)
    runs = [CorrRISETorch(ToyModel(), config(70, perturbations_per_eval=k)).run_shard(a, b, 3, 70)
            for k in (1, 2, 6, 32, 512)]
    first = runs[0].state()
    for shard in runs[1:]:
        for key, value in shard.state().items():
            assert np.array_equal(np.asarray(value), np.asarray(first[key])), key


def test_batching_on_a_torch_module_changes_maps_only_by_float32_rounding():
    a, b = toy_pair(4)
    maps = [CorrRISETorch(torch_model(), config(64, perturbations_per_eval=k)).attribute(a, b).s_b
            for k in (2, 10, 128)]
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], atol=1e-5, rtol=0)


def test_forward_passes_and_calls_follow_perturbations_per_eval():
    model = ToyModel()
    ex = CorrRISETorch(model, config(50, perturbations_per_eval=32)).attribute(*toy_pair())
    assert model.images == 2 * 50 + 2 == ex.forward_passes
    assert model.calls == 1 + 4  # the clean pair, then 16 masks (32 images) per call


def test_progress_counts_masks():
    seen: list[tuple[int, int]] = []
    CorrRISETorch(ToyModel(), config(40, perturbations_per_eval=20)).run_shard(
        *toy_pair(), 5, 40, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(10, 35), (20, 35), (30, 35), (35, 35)]


def test_device_of_names_only_accelerator_torch_models():
    assert device_of(ToyModel()) is None
    assert device_of(torch_model()) is None  # on the CPU the NumPy engine stays
    on_gpu = object.__new__(TorchFaceModel)  # no GPU here: a TorchFaceModel that says it is on one
    on_gpu.device = torch.device("cuda:0")
    assert device_of(on_gpu) == "cuda:0"


class _Spy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        kwargs.pop("device", None)
        return run_shard_on_device(*args, **kwargs, device="cpu")


def test_corrrise_hands_shards_to_the_device_engine_for_an_accelerator_model(monkeypatch):
    spy = _Spy()
    monkeypatch.setattr(corrrise_device, "run_shard_on_device", spy)  # where CorrRISE.run_shard looks them up
    monkeypatch.setattr(corrrise_device, "device_of", lambda model: "cuda:0" if isinstance(model, TorchFaceModel) else None)
    a, b = toy_pair()
    ex = CorrRISE(torch_model(), config(40)).attribute(a, b)
    assert spy.calls == 1 and ex.forward_passes == 82
    CorrRISE(ToyModel(), config(40)).attribute(a, b)  # not a torch model: the NumPy engine

    class Variant(CorrRISE):
        pass

    Variant(torch_model(), config(40)).attribute(a, b)  # variants keep the NumPy engine
    assert spy.calls == 1


def test_bad_input_is_an_input_error():
    a, b = toy_pair()
    engine = CorrRISETorch(ToyModel(), config(40))
    with pytest.raises(InputError, match=r"0 <= start < stop <= 40"):
        engine.run_shard(a, b, 10, 10)
    with pytest.raises(InputError, match="0 <= start < stop"):
        engine.run_shard(a, b, 0, 41)
    with pytest.raises(InputError, match="chip"):
        engine.run_shard(a[:10], b, 0, 4)
    with pytest.raises(InputError, match="torch device"):
        CorrRISETorch(ToyModel(), config(40), device="warp-drive").run_shard(a, b, 0, 4)

    class ServerMasks(ToyModel):
        server_masks = True

    with pytest.raises(InputError, match="in-process"):
        CorrRISETorch(ServerMasks(), config(40)).run_shard(a, b, 0, 4)
