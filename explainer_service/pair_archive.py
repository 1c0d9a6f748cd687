"""An audit pair's kept results as one archive: what a worker stores for a pair of an audit with
``keep_maps``, and what GetResult reads back into one :class:`~explainer_service.results.PairResult`
per method.

The archive is one ``.npz`` (read with ``allow_pickle=False``) holding

- ``chip_a``, ``chip_b``: the pair's aligned chips, ``(S, S, 3)`` uint8, once for all methods;
- per method ``M``: ``M.s_a``, ``M.s_b`` (``(H, W)`` float32, exact), ``M.scores_a``,
  ``M.scores_b`` (``(N,)`` float32, one score per perturbation) and ``M.summary``: the result's
  :meth:`PairResult.to_dict` (alignment geometry, parameters used, masks, forward passes, model,
  timing) as UTF-8 JSON bytes in a uint8 array.

So a kept result comes back complete, as ``facexplain explain`` would write it
(:meth:`PairResult.write`). Pure functions: bytes in, values out; InputError names what is wrong
with a damaged archive.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import InputError
from .results import PairResult, load_npz_arrays
from .uncertainty import ARRAY_KEYS as UNCERTAINTY_ARRAYS
from .uncertainty import Uncertainty

__all__ = ["pack_pair_results", "unpack_pair_results"]

_CHIPS = ("chip_a", "chip_b")


def pack_pair_results(results: Sequence[PairResult]) -> bytes:
    """The archive of one pair's results (one per method, all on the same chips): see the
    module docstring. InputError for no result, a result without maps or chips, two results of
    one method, or results whose chips differ."""
    if not results:
        raise InputError("an audit pair archive needs at least one result")
    first = results[0]
    chip_a, chip_b = first.face_a.chip, first.face_b.chip
    if chip_a is None or chip_b is None:
        raise InputError("an audit pair archive needs the aligned chips")
    arrays: dict[str, np.ndarray] = {
        "chip_a": np.ascontiguousarray(chip_a, np.uint8),
        "chip_b": np.ascontiguousarray(chip_b, np.uint8),
    }
    for result in results:
        name = result.method
        if not name or "." in name:
            raise InputError(f"method name {name!r} cannot name archive entries")
        if f"{name}.summary" in arrays:
            raise InputError(f"method {name!r} given twice")
        if result.s_a is None or result.s_b is None or result.scores_a is None or result.scores_b is None:
            raise InputError(f"the {name} result has no maps")
        for own, chip in ((result.face_a.chip, chip_a), (result.face_b.chip, chip_b)):
            if own is None or not np.array_equal(own, chip):
                raise InputError(f"the {name} result was not computed on the pair's chips")
        arrays[f"{name}.s_a"] = np.asarray(result.s_a, np.float32)
        arrays[f"{name}.s_b"] = np.asarray(result.s_b, np.float32)
        arrays[f"{name}.scores_a"] = np.asarray(result.scores_a, np.float32)
        arrays[f"{name}.scores_b"] = np.asarray(result.scores_b, np.float32)
        if result.uncertainty is not None and result.uncertainty.has_arrays:
            for key, arr in result.uncertainty.arrays().items():
                arrays[f"{name}.{key}"] = arr
        text = json.dumps(result.to_dict(), sort_keys=True, allow_nan=False).encode()
        arrays[f"{name}.summary"] = np.frombuffer(text, np.uint8)
    buf = io.BytesIO()
    savez: Any = np.savez  # numpy's stubs do not type **arrays
    savez(buf, **arrays)
    return buf.getvalue()


def _methods(arrays: dict[str, np.ndarray]) -> list[str]:
    """The methods an archive's arrays hold a complete result of, in the archive's order (an
    archive written before summaries were kept has maps only: none)."""
    return [key[: -len(".summary")] for key in arrays if key.endswith(".summary")]


def _array(arrays: dict[str, np.ndarray], key: str, dtype: Any, shape: tuple[int | None, ...], where: str) -> np.ndarray:
    if key not in arrays:
        raise InputError(f"{where}: missing array {key!r}")
    arr = arrays[key]
    if arr.dtype != np.dtype(dtype):
        raise InputError(f"{where}: array {key!r} is {arr.dtype}, expected {np.dtype(dtype)}")
    if arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape, strict=True)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{where}: array {key!r} has shape {arr.shape}, expected {want}")
    return arr


def unpack_pair_results(data: bytes, *, where: str = "pair archive") -> dict[str, PairResult]:
    """Each method's complete result (maps, scores, chips, alignment) from :func:`pack_pair_results`'s
    bytes, by method name in the archive's order; InputError naming ``where`` for a damaged archive
    or one whose arrays do not fit its summaries."""
    arrays = load_npz_arrays(data, where)
    out: dict[str, PairResult] = {}
    methods = _methods(arrays)
    if not methods:
        return out
    chip_a = _array(arrays, "chip_a", np.uint8, (None, None, 3), where)
    chip_b = _array(arrays, "chip_b", np.uint8, (None, None, 3), where)
    for name in methods:
        raw = _array(arrays, f"{name}.summary", np.uint8, (None,), where)
        try:
            summary = json.loads(raw.tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{where}: the {name} summary is not JSON ({e})") from None
        head = PairResult.from_dict(summary, where=f"{where} {name}.summary")
        h, w = head.map_shape
        if head.model_info is not None:
            size = head.model_info.chip.size
            for key in _CHIPS:
                _array(arrays, key, np.uint8, (size, size, 3), where)
        uncertainty = head.uncertainty
        if uncertainty is not None:  # its per-pixel arrays sit beside the maps
            kept = {key: _array(arrays, f"{name}.{key}", dtype, (h, w), where) for key, dtype in UNCERTAINTY_ARRAYS.items()}
            uncertainty = Uncertainty.from_summary(uncertainty.summary(), f"{where} {name}.uncertainty", kept)
        out[name] = replace(
            head,
            uncertainty=uncertainty,
            s_a=_array(arrays, f"{name}.s_a", np.float32, (h, w), where),
            s_b=_array(arrays, f"{name}.s_b", np.float32, (h, w), where),
            scores_a=_array(arrays, f"{name}.scores_a", np.float32, (None,), where),
            scores_b=_array(arrays, f"{name}.scores_b", np.float32, (None,), where),
            face_a=replace(head.face_a, chip=chip_a),
            face_b=replace(head.face_b, chip=chip_b),
        )
    return out
