"""One explained pair as a value: what the CLI writes, the API sends and the store keeps.

A :class:`PairResult` holds the explanation (maps, score, threshold, decision, method, parameters,
forward passes), how each image became its chip (:class:`FaceRecord`), which model produced it
(:class:`ModelInfo`), the engine and the timing. It travels in two parts:

- :meth:`PairResult.to_dict` / :meth:`PairResult.from_dict`: the JSON-ready summary (no arrays;
  ``summary.json``; a job listing). A result read from a dict alone has no maps.
- :meth:`PairResult.maps_to_bytes` / :meth:`PairResult.from_bytes`: the arrays as an ``.npz``
  archive (``maps.npz``; read with ``allow_pickle=False``): the maps ``s_a``/``s_b`` and their
  similar/dissimilar parts (float32, exact), the per-perturbation scores (float32) and the
  aligned chips (uint8); with an uncertainty (CorrRISE), its intervals ``ci_low_a``,
  ``ci_high_a``, ``ci_low_b``, ``ci_high_b`` (float32) and significance masks
  ``significant_a``, ``significant_b`` (bool).

:meth:`PairResult.write` / :meth:`PairResult.read` put both, with the figure, in a folder as the
CLI's three files (``summary.json``, ``maps.npz``, ``figure.png``), each written atomically.

The summary keeps the keys the CLI has always written (``model``, ``method``, ``score``,
``threshold``, ``decision``, ``masks``, ``params``, ``map_shape``, ``s_a_range``, ``s_b_range``,
``image_a``/``image_b``, ``alignment_a``/``alignment_b``, ``engine``, ``server_masks``,
``seconds``) and adds ``forward_passes``, ``timing``, ``model_info``, ``uncertainty`` (None for a
method without one, and when read from a summary written before it) and ``format``. Scores and
ranges are rounded to 6 decimals there (the maps in the archive are exact); keys it does not know
are kept in :attr:`PairResult.extra`, so a newer writer's summary survives a round trip.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .explanation import Explanation, decide
from .spec import ChipSpec, ModelSpec
from .uncertainty import ARRAY_KEYS as _UNCERTAINTY_KEYS
from .uncertainty import Uncertainty

if TYPE_CHECKING:
    from .alignment import AlignedFace

__all__ = [
    "Verification",
    "RESULT_FORMAT",
    "SUMMARY_FILE",
    "MAPS_FILE",
    "FIGURE_FILE",
    "FaceRecord",
    "ModelInfo",
    "Timing",
    "PairResult",
    "load_npz_arrays",
]

#: The summary layout's name and version (``format`` key); bumped when a key changes meaning.
RESULT_FORMAT = "facexplain.pair/1"
SUMMARY_FILE = "summary.json"
MAPS_FILE = "maps.npz"
FIGURE_FILE = "figure.png"

#: Float32 arrays of the archive, in the order they are written.
_MAP_KEYS = ("s_a", "s_b", "similar_a", "dissimilar_a", "similar_b", "dissimilar_b", "scores_a", "scores_b")
_CHIP_KEYS = ("chip_a", "chip_b")
#: Keys of the summary this module writes itself (everything else lands in ``extra``).
_OWN_KEYS = frozenset(
    {
        "model", "method", "score", "threshold", "decision", "masks", "forward_passes", "params",
        "map_shape", "s_a_range", "s_b_range", "image_a", "image_b", "alignment_a", "alignment_b",
        "engine", "server_masks", "seconds", "timing", "model_info", "format", "uncertainty",
    }
)


def _r6(x: float) -> float:
    return round(float(x), 6)


def _need(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise InputError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise InputError(f"{where}: missing key {key!r}")
    return d[key]


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: expected an integer, got {value!r}")
    return value


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _opt_num(value: Any, where: str) -> float | None:
    return None if value is None else _num(value, where)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {value!r}")
    return value


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(f"{where}: expected [low, high], got {value!r}")
    return _num(value[0], where), _num(value[1], where)


def _points(value: Any, rows: int | None, where: str) -> np.ndarray | None:
    """A list of [x, y] (or affine rows) as a float64 array; None stays None."""
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a list of number lists") from None
    if arr.ndim != 2 or (rows is not None and arr.shape[0] != rows) or not np.isfinite(arr).all():
        raise InputError(f"{where}: unexpected shape {arr.shape} or non-finite values")
    return arr


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _jsonable(params: Any) -> dict[str, Any]:
    """``params`` as plain JSON values (tuples become lists, numpy scalars numbers)."""
    try:
        out = json.loads(json.dumps(dict(params), default=_json_default))
    except (TypeError, ValueError) as e:
        raise InputError(f"params must be JSON values: {e}") from None
    return dict(out)


def _listed(arr: np.ndarray | None) -> list[list[float]] | None:
    return None if arr is None else [[float(v) for v in row] for row in np.asarray(arr, np.float64)]


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """How one image of the pair became its chip.

    Attributes:
        source: the file name, or ``"<bytes>"`` / ``"<array>"`` for an image given in memory.
        method: ``"detected"`` (detector + landmarks) or ``"pre-aligned"`` (an ArcFace crop).
        faces_found: faces the detector found (0 for pre-aligned input).
        face_box: the chosen detection ``(left, top, right, bottom)``, image pixels, or None.
        landmarks: ``(k, 2)`` float64 image ``(x, y)`` of the landmarks used, or None.
        transform: ``(2, 3)`` float64 affine mapping image ``(x, y)`` to chip ``(x, y)``, or None.
        chip: ``(S, S, 3)`` uint8 RGB aligned chip; None in a result read from a summary alone.
        detector: the detector that found the face (one of ``alignment.DETECTORS``); None for
            pre-aligned input (``method == "pre-aligned"``: nothing was detected).
        confidence: the detector's score for the face, on its own scale; None when it gives none.
        pose: the detector's head-pose estimate in degrees (e.g. ``{"yaw": -35.0}``); None when
            it gives none.
    """

    source: str
    method: str
    faces_found: int
    face_box: tuple[int, int, int, int] | None = None
    landmarks: np.ndarray | None = None
    transform: np.ndarray | None = None
    chip: np.ndarray | None = field(default=None, repr=False)
    detector: str | None = None
    confidence: float | None = None
    pose: dict[str, float] | None = None

    @classmethod
    def from_aligned(cls, face: AlignedFace) -> FaceRecord:
        """The record of an :class:`~explainer_service.alignment.AlignedFace`."""
        box: tuple[int, int, int, int] | None = None
        if face.face_box is not None:
            left, top, right, bottom = face.face_box
            box = (int(left), int(top), int(right), int(bottom))
        return cls(
            source=str(face.source),
            method=str(face.method),
            faces_found=int(face.faces_found),
            face_box=box,
            landmarks=None if face.landmarks is None else np.array(face.landmarks, np.float64),
            transform=np.array(face.transform, np.float64),
            chip=np.ascontiguousarray(face.chip, np.uint8),
            detector=face.detector,
            confidence=None if face.confidence is None else float(face.confidence),
            pose=None if face.pose is None else {str(k): float(v) for k, v in face.pose.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """``alignment_a``/``alignment_b`` of the summary (the source is ``image_a``/``image_b``)."""
        return {
            "method": self.method,
            "faces_found": self.faces_found,
            "face_box": None if self.face_box is None else list(self.face_box),
            "landmarks": _listed(self.landmarks),
            "transform": _listed(self.transform),
            "detector": self.detector,
            "confidence": None if self.confidence is None else _r6(self.confidence),
            "pose": None if self.pose is None else {k: _r6(v) for k, v in self.pose.items()},
        }

    @classmethod
    def from_dict(cls, d: Any, source: str, where: str, chip: np.ndarray | None = None) -> FaceRecord:
        """Inverse of :meth:`to_dict`; older summaries without the geometry or detector keys are
        accepted."""
        method = _str(_need(d, "method", where), f"{where}.method")
        faces = _int(_need(d, "faces_found", where), f"{where}.faces_found")
        box_raw = d.get("face_box")
        box: tuple[int, int, int, int] | None = None
        if box_raw is not None:
            if not isinstance(box_raw, list) or len(box_raw) != 4:
                raise InputError(f"{where}.face_box: expected [left, top, right, bottom], got {box_raw!r}")
            left, top, right, bottom = (_int(v, f"{where}.face_box") for v in box_raw)
            box = (left, top, right, bottom)
        return cls(
            source=source,
            method=method,
            faces_found=faces,
            face_box=box,
            landmarks=_points(d.get("landmarks"), None, f"{where}.landmarks"),
            transform=_points(d.get("transform"), 2, f"{where}.transform"),
            chip=chip,
            detector=None if d.get("detector") is None else _str(d["detector"], f"{where}.detector"),
            confidence=_opt_num(d.get("confidence"), f"{where}.confidence"),
            pose=_pose(d.get("pose"), f"{where}.pose"),
        )


def _pose(value: Any, where: str) -> dict[str, float] | None:
    """A pose estimate ``{"yaw": degrees, ...}``; None stays None."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"{where}: expected an object of angles in degrees, got {value!r:.80}")
    return {k: _num(v, f"{where}.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class ModelInfo:
    """The model behind a result: name, chip, embedding size, threshold and, when the model
    repository's record has one, the SHA-256 of the weights it was built from."""

    name: str
    chip: ChipSpec
    embedding_dim: int
    threshold: float | None
    sha256: str | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec, sha256: str | None = None) -> ModelInfo:
        return cls(spec.name, spec.chip, int(spec.embedding_dim), spec.threshold, sha256)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "chip": {"kind": self.chip.kind, "size": self.chip.size},
            "embedding_dim": self.embedding_dim,
            "threshold": self.threshold,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "model_info") -> ModelInfo:
        chip = _need(d, "chip", where)
        sha = d.get("sha256")
        return cls(
            name=_str(_need(d, "name", where), f"{where}.name"),
            chip=ChipSpec(
                _str(_need(chip, "kind", f"{where}.chip"), f"{where}.chip.kind"),
                _int(_need(chip, "size", f"{where}.chip"), f"{where}.chip.size"),
            ),
            embedding_dim=_int(_need(d, "embedding_dim", where), f"{where}.embedding_dim"),
            threshold=_opt_num(d.get("threshold"), f"{where}.threshold"),
            sha256=None if sha is None else _str(sha, f"{where}.sha256"),
        )


@dataclass(frozen=True)
class Timing:
    """Seconds spent: decoding and aligning both images, and explaining the pair (model start-up
    not included)."""

    align_s: float = 0.0
    explain_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.align_s + self.explain_s

    def to_dict(self) -> dict[str, float]:
        return {"align_s": float(self.align_s), "explain_s": float(self.explain_s)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "timing") -> Timing:
        return cls(
            _num(_need(d, "align_s", where), f"{where}.align_s"),
            _num(_need(d, "explain_s", where), f"{where}.explain_s"),
        )


@dataclass(frozen=True, eq=False)
class PairResult:
    """One explained pair; see the module docstring.

    The explanation's scalars are fields; its arrays (``s_a``, ``s_b``: ``(H, W)`` float32;
    ``scores_a``, ``scores_b``: ``(N,)`` float32) are present unless the result was read from a
    summary alone (:attr:`has_maps`); so are the arrays of ``uncertainty`` (None for a method
    without one). Build one with :meth:`from_explanation`.
    """

    model: str
    method: str
    score: float
    threshold: float | None
    masks: int
    forward_passes: int
    params: dict[str, Any]
    map_shape: tuple[int, int]
    s_a_range: tuple[float, float]
    s_b_range: tuple[float, float]
    face_a: FaceRecord
    face_b: FaceRecord
    model_info: ModelInfo | None
    engine: str | None = None
    server_masks: bool = False
    timing: Timing = field(default_factory=Timing)
    s_a: np.ndarray | None = field(default=None, repr=False)
    s_b: np.ndarray | None = field(default=None, repr=False)
    scores_a: np.ndarray | None = field(default=None, repr=False)
    scores_b: np.ndarray | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    uncertainty: Uncertainty | None = field(default=None, repr=False)

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def from_explanation(
        cls,
        explanation: Explanation,
        face_a: FaceRecord,
        face_b: FaceRecord,
        model_info: ModelInfo | None,
        *,
        engine: str | None = None,
        server_masks: bool = False,
        timing: Timing | None = None,
    ) -> PairResult:
        """The result of ``explanation`` computed on the chips of ``face_a`` and ``face_b``."""
        s_a = np.asarray(explanation.s_a, np.float32)
        s_b = np.asarray(explanation.s_b, np.float32)
        if s_a.ndim != 2 or s_a.shape != s_b.shape:
            raise InputError(f"maps must be two (H, W) arrays of one shape, got {s_a.shape} and {s_b.shape}")
        return cls(
            model=explanation.model,
            method=explanation.method,
            score=float(explanation.score),
            threshold=None if explanation.threshold is None else float(explanation.threshold),
            masks=int(explanation.masks),
            forward_passes=int(explanation.forward_passes),
            params=_jsonable(explanation.params),
            map_shape=(int(s_a.shape[0]), int(s_a.shape[1])),
            s_a_range=(_r6(s_a.min()), _r6(s_a.max())),
            s_b_range=(_r6(s_b.min()), _r6(s_b.max())),
            face_a=face_a,
            face_b=face_b,
            model_info=model_info,
            engine=engine,
            server_masks=bool(server_masks),
            timing=timing or Timing(),
            s_a=s_a,
            s_b=s_b,
            scores_a=np.asarray(explanation.scores_a, np.float32),
            scores_b=np.asarray(explanation.scores_b, np.float32),
            uncertainty=explanation.uncertainty,
        )

    def with_timing(self, timing: Timing) -> PairResult:
        """The same result with other timing."""
        return replace(self, timing=timing)

    # -- derived --------------------------------------------------------------------------------

    @property
    def decision(self) -> str:
        """``"match"``, ``"non-match"`` or ``"unknown"`` (no threshold)."""
        return decide(self.score, self.threshold)

    @property
    def has_maps(self) -> bool:
        """Whether the arrays (maps, scores, chips) are present (not a summary read alone)."""
        return self.s_a is not None and self.s_b is not None

    @property
    def explanation(self) -> Explanation:
        """The :class:`~explainer_service.explanation.Explanation` (needs the maps)."""
        s_a, s_b = self._maps()
        empty = np.zeros(0, np.float32)
        return Explanation(
            s_a=s_a,
            s_b=s_b,
            score=self.score,
            threshold=self.threshold,
            model=self.model,
            masks=self.masks,
            method=self.method,
            params=dict(self.params),
            scores_a=empty if self.scores_a is None else self.scores_a,
            scores_b=empty if self.scores_b is None else self.scores_b,
            forward_passes=self.forward_passes,
            uncertainty=self.uncertainty,
        )

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        if self.s_a is None or self.s_b is None:
            raise InputError("this result has no maps (it was read from a summary alone)")
        return self.s_a, self.s_b

    def _chips(self) -> tuple[np.ndarray, np.ndarray]:
        if self.face_a.chip is None or self.face_b.chip is None:
            raise InputError("this result has no aligned chips (it was read from a summary alone)")
        return self.face_a.chip, self.face_b.chip

    # -- the summary ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (no arrays); ``summary.json``'s content."""
        d: dict[str, Any] = {k: v for k, v in self.extra.items() if k not in _OWN_KEYS}
        d.update(
            {
                "model": self.model,
                "method": self.method,
                "score": _r6(self.score),
                "threshold": None if self.threshold is None else _r6(self.threshold),
                "decision": self.decision,
                "masks": self.masks,
                "forward_passes": self.forward_passes,
                "params": self.params,
                "map_shape": list(self.map_shape),
                "s_a_range": list(self.s_a_range),
                "s_b_range": list(self.s_b_range),
                "image_a": self.face_a.source,
                "image_b": self.face_b.source,
                "alignment_a": self.face_a.to_dict(),
                "alignment_b": self.face_b.to_dict(),
                "engine": self.engine,
                "server_masks": self.server_masks,
                "seconds": round(self.timing.total_s, 3),
                "timing": self.timing.to_dict(),
                "model_info": None if self.model_info is None else self.model_info.to_dict(),
                "uncertainty": None if self.uncertainty is None else self.uncertainty.summary(),
                "format": RESULT_FORMAT,
            }
        )
        return d

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "summary") -> PairResult:
        """A result (without arrays) from :meth:`to_dict`'s output; InputError naming a missing or
        malformed key. Summaries written before ``format`` 1 (no ``timing``/``model_info``/
        ``forward_passes``) are accepted."""
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected an object, got {type(d).__name__}")
        fmt = d.get("format", RESULT_FORMAT)
        if fmt != RESULT_FORMAT:
            raise InputError(f"{where}: unknown format {fmt!r} (this version reads {RESULT_FORMAT!r})")
        model = _str(_need(d, "model", where), f"{where}.model")
        threshold = _opt_num(d.get("threshold"), f"{where}.threshold")
        shape = _need(d, "map_shape", where)
        if not isinstance(shape, list) or len(shape) != 2:
            raise InputError(f"{where}.map_shape: expected [H, W], got {shape!r}")
        params = _need(d, "params", where)
        if not isinstance(params, dict):
            raise InputError(f"{where}.params: expected an object, got {params!r}")
        engine = d.get("engine")
        raw_info = d.get("model_info")
        info = None if raw_info is None else ModelInfo.from_dict(raw_info, f"{where}.model_info")
        seconds = _num(d.get("seconds", 0.0), f"{where}.seconds")
        timing = Timing.from_dict(d["timing"], f"{where}.timing") if "timing" in d else Timing(0.0, seconds)
        masks = _int(_need(d, "masks", where), f"{where}.masks")
        raw_unc = d.get("uncertainty")
        uncertainty = None if raw_unc is None else Uncertainty.from_summary(raw_unc, f"{where}.uncertainty")
        return cls(
            model=model,
            method=_str(_need(d, "method", where), f"{where}.method"),
            score=_num(_need(d, "score", where), f"{where}.score"),
            threshold=threshold,
            masks=masks,
            forward_passes=_int(d.get("forward_passes", 0), f"{where}.forward_passes"),
            params=_jsonable(params),
            map_shape=(_int(shape[0], f"{where}.map_shape"), _int(shape[1], f"{where}.map_shape")),
            s_a_range=_pair(_need(d, "s_a_range", where), f"{where}.s_a_range"),
            s_b_range=_pair(_need(d, "s_b_range", where), f"{where}.s_b_range"),
            face_a=FaceRecord.from_dict(
                _need(d, "alignment_a", where), _str(d.get("image_a", ""), f"{where}.image_a"), f"{where}.alignment_a"
            ),
            face_b=FaceRecord.from_dict(
                _need(d, "alignment_b", where), _str(d.get("image_b", ""), f"{where}.image_b"), f"{where}.alignment_b"
            ),
            model_info=info,
            engine=None if engine is None else _str(engine, f"{where}.engine"),
            server_masks=bool(d.get("server_masks", False)),
            timing=timing,
            extra={k: v for k, v in d.items() if k not in _OWN_KEYS},
            uncertainty=uncertainty,
        )

    # -- the arrays -----------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """The archive's arrays: aligned chips (uint8), maps and per-perturbation scores
        (float32)."""
        chip_a, chip_b = self._chips()
        arrays = {"chip_a": np.ascontiguousarray(chip_a, np.uint8), "chip_b": np.ascontiguousarray(chip_b, np.uint8)}
        arrays.update(self.explanation.arrays())
        return arrays

    def maps_to_bytes(self) -> bytes:
        """The arrays as a compressed ``.npz`` archive (``maps.npz``'s content; no pickled
        objects)."""
        buf = io.BytesIO()
        savez: Any = np.savez_compressed  # numpy's stubs do not type **arrays
        savez(buf, **self.arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(
        cls, summary: Any, npz: bytes, *, where: str = "maps", summary_where: str = "summary"
    ) -> PairResult:
        """A complete result from its summary (:meth:`to_dict`) and its archive
        (:meth:`maps_to_bytes`); InputError for a damaged archive or one that does not fit the
        summary (missing array, wrong dtype or shape). ``where``/``summary_where`` name the two
        parts in messages."""
        head = cls.from_dict(summary, where=summary_where)
        arrays = load_npz_arrays(npz, where)
        h, w = head.map_shape
        for key in _MAP_KEYS[:6]:
            _check_array(arrays, key, np.float32, (h, w), where)
        for key in _MAP_KEYS[6:]:
            _check_array(arrays, key, np.float32, None, where)
        for key in _CHIP_KEYS:
            _check_array(arrays, key, np.uint8, None, where, ndim=3)
        if head.model_info is not None:
            size = head.model_info.chip.size
            for key in _CHIP_KEYS:
                _check_array(arrays, key, np.uint8, (size, size, 3), where)
        uncertainty = head.uncertainty
        if uncertainty is not None:
            for key, dtype in _UNCERTAINTY_KEYS.items():
                _check_array(arrays, key, dtype, (h, w), where)
            uncertainty = Uncertainty.from_summary(
                uncertainty.summary(), f"{summary_where}.uncertainty", arrays
            )
        return replace(
            head,
            uncertainty=uncertainty,
            s_a=arrays["s_a"],
            s_b=arrays["s_b"],
            scores_a=arrays["scores_a"],
            scores_b=arrays["scores_b"],
            face_a=replace(head.face_a, chip=arrays["chip_a"]),
            face_b=replace(head.face_b, chip=arrays["chip_b"]),
        )

    # -- files ----------------------------------------------------------------------------------

    def figure_png(self, *, dpi: int = 120, grey_insignificant: bool = False) -> bytes:
        """The figure (both chips, similar and dissimilar regions) as PNG bytes;
        ``grey_insignificant``: see :func:`~explainer_service.report.render_figure_png`."""
        from .report import render_figure_png

        chip_a, chip_b = self._chips()
        return render_figure_png(chip_a, chip_b, self.explanation, dpi=dpi, grey_insignificant=grey_insignificant)

    def write(self, out_dir: str | os.PathLike[str], *, grey_insignificant: bool = False) -> dict[str, Path]:
        """Write ``maps.npz``, ``figure.png`` and, last, ``summary.json`` into ``out_dir`` (created
        if needed), each atomically; their paths by ``"maps"``, ``"figure"``, ``"summary"``.
        ``grey_insignificant``: the figure greys out the pixels that are not significant."""
        from .fileio import atomic_write_bytes, atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"summary": out / SUMMARY_FILE, "maps": out / MAPS_FILE, "figure": out / FIGURE_FILE}
        maps = self.maps_to_bytes()
        figure = self.figure_png(grey_insignificant=grey_insignificant)
        summary = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write_bytes(paths["maps"], maps)
        atomic_write_bytes(paths["figure"], figure)
        atomic_write_text(paths["summary"], summary)
        return paths

    @classmethod
    def read(cls, out_dir: str | os.PathLike[str], *, maps: bool = True) -> PairResult:
        """The result a :meth:`write` left in ``out_dir`` (``maps=False``: the summary alone);
        InputError naming a missing or damaged file."""
        folder = Path(out_dir)
        summary_path = folder / SUMMARY_FILE
        summary = _read_json(summary_path)
        if not maps:
            return cls.from_dict(summary, where=str(summary_path))
        maps_path = folder / MAPS_FILE
        try:
            data = maps_path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{maps_path}: no such file") from None
        except OSError as e:
            raise InputError(f"{maps_path}: cannot read ({e.strerror or e})") from None
        return cls.from_bytes(summary, data, where=str(maps_path), summary_where=str(summary_path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON summary ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def load_npz_arrays(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Every array of an .npz archive in ``data`` (pickles refused); InputError naming ``where``
    for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{where}: expected the bytes of an .npz archive, got {type(data).__name__}")
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise InputError(f"{where}: not an .npz archive")
            return {key: archive[key] for key in archive.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputError(f"{where}: not a readable .npz archive ({str(e)[:120]})") from None


def _check_array(
    arrays: dict[str, np.ndarray],
    key: str,
    dtype: type[np.generic],
    shape: tuple[int, ...] | None,
    where: str,
    *,
    ndim: int = 1,
) -> None:
    if key not in arrays:
        raise InputError(f"{where}: missing array {key!r}")
    arr = arrays[key]
    if arr.dtype != dtype:
        raise InputError(f"{where}: array {key!r} is {arr.dtype}, expected {np.dtype(dtype)}")
    if shape is None:
        if arr.ndim != ndim:
            raise InputError(f"{where}: array {key!r} must have {ndim} dimension(s), got shape {arr.shape}")
    elif arr.shape != shape:
        raise InputError(f"{where}: array {key!r} has shape {arr.shape}, expected {shape}")


@dataclass(frozen=True)
class Verification:
    """A pair verified now: cosine ``score``, the model's ``threshold`` (None: not calibrated),
    ``decision`` (``"match"``, ``"non-match"``, ``"unknown"``), the model's name, how each face
    was aligned (chips included) and the seconds spent aligning and embedding."""

    score: float
    threshold: float | None
    decision: str
    model: str
    face_a: FaceRecord
    face_b: FaceRecord
    align_s: float
    embed_s: float
