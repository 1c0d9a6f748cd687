"""CorrRISE's device engine: masks, masked batches, scores and accumulators in PyTorch on the
model's device (a GPU in deployment, torch's CPU device in the tests); the method class over it is
:class:`~.corrrise_torch.CorrRISETorch`.

Pipeline role: the same work as :meth:`CorrRISE.run_shard <.corrrise.CorrRISE.run_shard>` (Lu, Xu,
Ebrahimi, WACV 2024 workshops, Algorithm 1) without the host in the loop, returning the same
:class:`~.shards.ShardResult`, so the store, the workers, ``merge`` and ``finish`` work unchanged
and shards of both engines merge with each other.

- **Masks**: made on the device (:mod:`explainer_service.masks_torch`, shared with the Triton model
  ``corrrise_scores``), bit-identical to :func:`explainer_service.masks.generate_masks`.
  Only the random draws of mask ``k`` (its patch corners and fill values, a few dozen numbers) come
  from the host, from the same generator (:func:`~explainer_service.masks.mask_generator`, seeded
  by ``(seed, k)``), and they are cached per mask range, so a batch of pairs draws them once; the
  patches are pasted on the device in the generator's order (a later patch overwrites an earlier
  one). ``tests/unit/test_corrrise_torch.py`` checks every mask option bit for bit.
- **Scores**: the masked A and B chips of a block of masks are formed on the device and embedded by
  the model's module there (a :class:`~explainer_service.models.torch_model.TorchFaceModel`); any
  other FaceModel is called through its ``embed`` on host arrays (the accumulators still run on the
  device). Cosines against the clean embeddings are float64.
- **Accumulators**: float64 per-pixel co-moments on the device, fed in the NumPy engine's blocks of
  :data:`~.shards.ACCUMULATION_BLOCK` masks from the shard's start (two-pass moments per block,
  Chan et al.'s pairwise merge between blocks), so the batching never changes the accumulators and
  they agree with the NumPy engine's to float64 rounding; copied to the host once, at the end.
  The even-indexed masks are accumulated apart too when shards carry them (``even_a``/``even_b``,
  the split halves of the maps' uncertainty).
- **Clean pair**: embedded by :meth:`CorrRISE.clean_embeddings` exactly as the NumPy engine does, so
  shards of the two engines carry equal embeddings and merge.

Spearman needs no device work here: it ranks the per-mask scores in ``finish`` on the host (as the
NumPy engine does), and the scores a device shard carries are the same.

Which engine runs: :meth:`CorrRISE.run_shard` hands over to :func:`run_shard_on_device` when the
model is a TorchFaceModel on a non-CPU device (:func:`device_of`); :class:`~.corrrise_torch.CorrRISETorch`
runs it on any model and device (the library's explicit choice). PyTorch is imported on first use.
``corrrise.py`` imports this module, never the other way round: the engine takes any method with
what it reads (:class:`ShardMethod`) and returns the shard type of :mod:`.shards`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..correlation import CorrelationAccumulator
from ..errors import InputError
from ..masks import MaskConfig
from ..masks_torch import device_masks, mask_draws
from ..masks_torch import paste_masks as _paste
from ..models.base import FaceModel, cosine_to, to_model_input
from ..progress import Progress
from .perturbation import _check_chip
from .shards import ACCUMULATION_BLOCK, ShardResult

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ShardMethod", "run_shard_on_device", "device_of", "device_masks", "mask_draws"]


class _MaskSetConfig(Protocol):
    """The part of a CorrRISE config the engine reads: the mask set."""

    @property
    def masks(self) -> MaskConfig: ...


class ShardMethod(Protocol):
    """What :func:`run_shard_on_device` needs of a CorrRISE method (:class:`~.corrrise.CorrRISE`
    and its subclasses have it): its model and mask set, the clean embeddings, the batching and
    the identity its shards carry. A protocol, so this module does not import ``corrrise.py``."""

    @property
    def model(self) -> FaceModel: ...

    @property
    def config(self) -> _MaskSetConfig: ...

    def clean_embeddings(self, chip_a: np.ndarray, chip_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def perturbations_per_eval(self) -> int: ...

    def _identity(self) -> str: ...

#: Whether shards carry the even-indexed masks' accumulators (the split halves of the uncertainty).
_SPLIT_HALVES = "even_a" in {f.name for f in dataclasses.fields(ShardResult)}


def device_of(model: Any) -> str | None:
    """The torch device (e.g. ``"cuda:0"``) of an in-process PyTorch model on an accelerator; None
    for any other model (ONNX, Triton, a TorchFaceModel on the CPU). Imports nothing."""
    from ..models.torch_model import TorchFaceModel

    if isinstance(model, TorchFaceModel) and model.device.type != "cpu":
        return str(model.device)
    return None


class _DeviceAccumulator:
    """Float64 per-pixel co-moments on a torch device (the state of ``CorrelationAccumulator``)."""

    def __init__(self, pixels: int, device: torch.device) -> None:
        import torch

        self.n = 0
        self.mean_s = torch.zeros((), dtype=torch.float64, device=device)
        self.m2_s = torch.zeros((), dtype=torch.float64, device=device)
        self.mean_m = torch.zeros(pixels, dtype=torch.float64, device=device)
        self.m2_m = torch.zeros(pixels, dtype=torch.float64, device=device)
        self.c_ms = torch.zeros(pixels, dtype=torch.float64, device=device)

    def update_blocks(self, masks: torch.Tensor, scores: torch.Tensor, block: int) -> None:
        """Fold masks (b, P) and scores (b,) in blocks of ``block`` rows (b a multiple of it, or
        one block): two-pass moments of every block at once, then Chan's merge block by block.
        """
        k = masks.shape[0] // block
        self._fold(masks.reshape(k, block, -1), scores.reshape(k, block))

    def update_every_other(self, masks: torch.Tensor, scores: torch.Tensor, block: int, first: int) -> None:
        """Like :meth:`update_blocks`, keeping only rows ``first``, ``first + 2``, ... of each block
        (the even-indexed masks when ``first`` is the parity of the block's first mask index)."""
        k = masks.shape[0] // block
        m = masks.reshape(k, block, -1)[:, first::2]
        if m.shape[1]:
            self._fold(m, scores.reshape(k, block)[:, first::2])

    def _fold(self, masks: torch.Tensor, scores: torch.Tensor) -> None:
        """Masks (k, b, P) and scores (k, b): the k blocks' moments, merged in order."""
        m = masks.double()
        mean_m = m.mean(dim=1)  # (k, P)
        dm = m - mean_m[:, None]
        mean_s = scores.mean(dim=1)  # (k,)
        ds = scores - mean_s[:, None]
        m2_s = (ds * ds).sum(dim=1)
        m2_m = (dm * dm).sum(dim=1)
        c_ms = (ds[:, :, None] * dm).sum(dim=1)
        for i in range(m.shape[0]):
            self._merge(m.shape[1], mean_s[i], m2_s[i], mean_m[i], m2_m[i], c_ms[i])

    def _merge(self, n_b: int, mean_s: Any, m2_s: Any, mean_m: Any, m2_m: Any, c_ms: Any) -> None:
        n_a = self.n
        if n_a == 0:
            self.n = n_b
            self.mean_s, self.m2_s, self.mean_m, self.m2_m, self.c_ms = mean_s, m2_s, mean_m, m2_m, c_ms
            return
        n = n_a + n_b
        weight = n_a * n_b / n
        d_s = mean_s - self.mean_s
        d_m = mean_m - self.mean_m
        self.mean_s = self.mean_s + d_s * (n_b / n)
        self.m2_s = self.m2_s + m2_s + d_s * d_s * weight
        self.mean_m = self.mean_m + d_m * (n_b / n)
        self.m2_m = self.m2_m + m2_m + d_m * d_m * weight
        self.c_ms = self.c_ms + c_ms + d_m * (d_s * weight)
        self.n = n

    def to_host(self, shape: tuple[int, int]) -> CorrelationAccumulator:
        """The equivalent NumPy accumulator (one copy to the host)."""
        return CorrelationAccumulator.from_state({
            "n": self.n,
            "mean_s": float(self.mean_s),
            "m2_s": float(self.m2_s),
            "mean_m": self.mean_m.cpu().numpy().reshape(shape),
            "m2_m": self.m2_m.cpu().numpy().reshape(shape),
            "c_ms": self.c_ms.cpu().numpy().reshape(shape),
        })


def _embedder(model: FaceModel, device: torch.device) -> Any:
    """A function (k, 3, S, S) float32 tensor on ``device`` -> (k, D) float32 embeddings there:
    the module of a TorchFaceModel on its own device, else the model's ``embed`` on host arrays."""
    import torch

    from ..models.torch_model import TorchFaceModel

    if isinstance(model, TorchFaceModel) and model.device == device:
        module, dtype = model.module, model.dtype

        def embed_module(x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = module(x.to(dtype)).float()
            return out

        return embed_module

    def embed_host(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(model.embed(x.cpu().numpy()), np.float32)).to(device)

    return embed_host


def _cosines(emb: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Float64 cosines of each row of ``emb`` (k, D) with ``ref`` (D,) (as ``cosine_to``); row by
    row reductions, not a matrix product, so a row's bits do not depend on how many rows came."""
    e = emb.double()
    r = ref.double()
    norms = (e * e).sum(dim=1).sqrt() * (r * r).sum().sqrt()
    return (e * r).sum(dim=1) / norms.clamp(min=1e-12)


def run_shard_on_device(
    method: ShardMethod,
    chip_a: np.ndarray,
    chip_b: np.ndarray,
    start: int,
    stop: int,
    *,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    device: str | None = None,
) -> ShardResult:
    """:meth:`CorrRISE.run_shard` on a torch device: masks [start, stop) of ``method``'s set for
    both faces (chips (S, S, 3) uint8), 2 * (stop - start) forward passes (plus 2 for the clean
    pair unless ``embeddings`` are given), ``progress(done, total)`` in masks.

    ``device``: where masks, batches and accumulators live; None: the model's device for a
    TorchFaceModel, else ``"cpu"``. The result has the NumPy engine's layout and merges with its
    shards; its maps agree with the NumPy engine's to float32 rounding of the embeddings.
    InputError for a bad range, bad chips, or a model that scores masks on a server.
    """
    import torch

    from ..models.torch_model import TorchFaceModel

    model = method.model
    cfg = method.config
    n_masks = cfg.masks.n_masks
    if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))) or not (
        0 <= start < stop <= n_masks
    ):
        raise InputError(f"a shard must be masks [start, stop) with 0 <= start < stop <= {n_masks}, "
                         f"got [{start}, {stop})")
    if getattr(model, "server_masks", False):
        raise InputError(f"model {model.spec.name} scores masks on its server; the device engine needs the model "
                         "in-process")
    start, stop = int(start), int(stop)
    if device is None:
        device = str(model.device) if isinstance(model, TorchFaceModel) else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    a = _check_chip(model, chip_a, "A")
    b = _check_chip(model, chip_b, "B")
    clean_passes = 0
    if embeddings is None:
        embeddings = method.clean_embeddings(a, b)
        clean_passes = 2
    emb_a, emb_b = (np.asarray(e) for e in embeddings)
    size = model.spec.chip.size
    side = cfg.masks.patch_size_for(size)
    per_eval = method.perturbations_per_eval()
    step = max(1, per_eval // 2)
    embed = _embedder(model, dev)
    corners_np, fills_np = mask_draws(cfg.masks, size, start, stop)
    with torch.inference_mode():
        corners = torch.from_numpy(corners_np.copy()).to(dev)
        fills = torch.from_numpy(fills_np.copy()).to(dev)
        xa = torch.from_numpy(to_model_input(a)[0]).to(dev)
        xb = torch.from_numpy(to_model_input(b)[0]).to(dev)
        ref_a = torch.from_numpy(np.asarray(emb_a, np.float32)).to(dev)
        ref_b = torch.from_numpy(np.asarray(emb_b, np.float32)).to(dev)
        acc_a = _DeviceAccumulator(size * size, dev)
        acc_b = _DeviceAccumulator(size * size, dev)
        even_a = _DeviceAccumulator(size * size, dev)  # the even-indexed masks only (split halves)
        even_b = _DeviceAccumulator(size * size, dev)
        scores_a: list[torch.Tensor] = []
        scores_b: list[torch.Tensor] = []
        pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # masks, s^A, s^B to accumulate
        waiting = 0

        def flush(rows: int, block: int) -> None:
            nonlocal pending, waiting
            m = torch.cat([q[0] for q in pending])
            sa = torch.cat([q[1] for q in pending])
            sb = torch.cat([q[2] for q in pending])
            acc_a.update_blocks(m[:rows], sa[:rows], block)
            acc_b.update_blocks(m[:rows], sb[:rows], block)
            # every block starts start + 16j: its first even-indexed mask is at row start % 2
            even_a.update_every_other(m[:rows], sa[:rows], block, start % 2)
            even_b.update_every_other(m[:rows], sb[:rows], block, start % 2)
            pending = [(m[rows:], sa[rows:], sb[rows:])] if rows < len(m) else []
            waiting = len(m) - rows

        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            masks = _paste(corners[lo - start : hi - start], fills[lo - start : hi - start], side, size)
            mm = masks[:, None]
            batch = torch.cat([xa[None] * mm, xb[None] * mm])  # (2n, 3, S, S): masked A, then masked B
            emb = torch.cat([embed(batch[i : i + per_eval]) for i in range(0, len(batch), per_eval)])
            n = hi - lo
            sa, sb = _cosines(emb[:n], ref_b), _cosines(emb[n:], ref_a)
            scores_a.append(sa)
            scores_b.append(sb)
            pending.append((masks.reshape(n, -1), sa, sb))
            waiting += n
            if waiting >= ACCUMULATION_BLOCK:
                flush(waiting - waiting % ACCUMULATION_BLOCK, ACCUMULATION_BLOCK)
            if progress is not None:
                progress(hi - start, stop - start)
        if waiting:
            flush(waiting, waiting)
        host_a = torch.cat(scores_a).cpu().numpy()
        host_b = torch.cat(scores_b).cpu().numpy()
        if not (np.all(np.isfinite(host_a)) and np.all(np.isfinite(host_b))):
            raise InputError("scores must be finite (found NaN or infinity): the model returned a bad embedding")
        shard_acc_a = acc_a.to_host((size, size))
        shard_acc_b = acc_b.to_host((size, size))
        halves: dict[str, Any] = {}
        if _SPLIT_HALVES:
            halves = {"even_a": even_a.to_host((size, size)), "even_b": even_b.to_host((size, size))}
    score = float(cosine_to(emb_a[None], emb_b)[0])
    return ShardResult(
        ((start, stop),), shard_acc_a, shard_acc_b, host_a.astype(np.float64), host_b.astype(np.float64),
        emb_a, emb_b, score, method._identity(), clean_passes, **halves,
    )
