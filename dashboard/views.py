"""What the dashboard's pages show, as plain functions (no Streamlit): testable on their own.

- Maps: :func:`overlay` blends one signed map over an aligned face with a diverging,
  colour-blind-safe colour map (:data:`CMAP`: blue = dissimilar, red = similar, white = 0; no
  red/green), :func:`legend_png` draws its colour bar, :func:`map_points` and
  :func:`heatmap_chart` give the hoverable chart (each region's correlation in a tooltip),
  :func:`region_value` the value around one pixel.
- Uncertainty: :func:`significant_only` (a map with what is not significant set to 0, so the
  overlay leaves it transparent: the CLI figure's ``--grey-insignificant`` rule),
  :func:`uncertainty_rows` (split-half agreement and significant share per face) and
  :func:`uncertainty_caption`; :func:`face_caption` names the detector that found a face.
- Requests: :func:`check_image_upload` (size, decodable) before anything is sent,
  :func:`params_from_values` turns the parameter widgets' values into a request's parameters,
  :data:`DETECTOR_CHOICES` / :func:`detector_label` the face detector select,
  :func:`uncertainty_request` reads the FDR q and CI level fields,
  :func:`pairs_from_csv` reads an audit's pairs from a CSV and the uploaded images.
- Tables (lists of row dicts, what ``st.dataframe`` takes): :func:`job_rows`,
  :func:`audit_rows`, :func:`select_rows`, :func:`gallery_rows`, :func:`method_table`,
  :func:`evaluation_table`, :func:`auc_points`, and :func:`csv_bytes` to export any of them;
  :func:`kept_results` picks one pair's kept maps out of an audit page, :func:`dropped_rows`
  counts an audit's dropped pairs per reason and :func:`dropped_pairs` lists them,
  :func:`audit_options_caption` states its face detector and kept maps' uncertainty options.
- Curves: :func:`curve_points` / :func:`evaluation_curve_points` (the mean Deletion/Insertion
  curves of audit summaries in long form, also their CSV) and :func:`curve_chart` (altair lines,
  Deletion and Insertion side by side, methods by colour from :data:`CURVE_PALETTE` and by point
  shape, audits by dash).
- Dataset pairs: :func:`pair_label` (the Explain page's picker).
- Results: :func:`result_files` (``summary.json``, ``maps.npz``, ``figure.png``, its figure greyed
  where not significant on request).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np

from explainer_service.alignment import DETECTORS
from explainer_service.api.client import JobInfo
from explainer_service.datasets.drops import DROP_REASON_TEXT, count_drops
from explainer_service.errors import InputError
from explainer_service.methods.registry import MethodInfo, MethodParam
from explainer_service.results import FIGURE_FILE, MAPS_FILE, SUMMARY_FILE, FaceRecord, PairResult
from explainer_service.uncertainty import Uncertainty

__all__ = [
    "CMAP",
    "MAP_PARTS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "map_scale",
    "map_parts",
    "shown_parts",
    "overlay",
    "legend_png",
    "map_points",
    "heatmap_chart",
    "region_value",
    "significant_only",
    "uncertainty_rows",
    "uncertainty_caption",
    "face_caption",
    "check_image_upload",
    "DETECTOR_CHOICES",
    "DETECTOR_HELP",
    "detector_label",
    "uncertainty_request",
    "param_widget_kind",
    "parse_param",
    "params_from_values",
    "pairs_from_csv",
    "progress_of",
    "job_rows",
    "audit_rows",
    "select_rows",
    "gallery_rows",
    "kept_results",
    "dropped_rows",
    "dropped_pairs",
    "audit_options_caption",
    "format_ci",
    "method_table",
    "evaluation_table",
    "auc_points",
    "interval_points",
    "interval_chart",
    "CURVE_PALETTE",
    "curve_points",
    "evaluation_curve_points",
    "curve_chart",
    "pair_label",
    "csv_bytes",
    "result_files",
]

#: The diverging colour map of every map (matplotlib's name): blue (dissimilar) - white - red
#: (similar); readable with red/green colour blindness (it has no green).
CMAP = "RdBu_r"
#: The four maps of a pair, in the order shown: (key, face, part, title).
MAP_PARTS: tuple[tuple[str, str, str, str], ...] = (
    ("similar_a", "a", "similar", "A: similar regions"),
    ("dissimilar_a", "a", "dissimilar", "A: dissimilar regions"),
    ("similar_b", "b", "similar", "B: similar regions"),
    ("dissimilar_b", "b", "dissimilar", "B: dissimilar regions"),
)
#: The largest image the Explain page sends (the server has its own limit, FACEXPLAIN_MAX_IMAGE_BYTES).
DEFAULT_MAX_UPLOAD_BYTES = 16 * 1024 * 1024


# -- maps -------------------------------------------------------------------------------------------


def map_scale(*maps: np.ndarray) -> float:
    """The colour scale shared by ``maps``: the largest absolute value (1e-6 for all-zero maps),
    so that the two faces' maps are comparable."""
    top = max((float(np.abs(m).max()) for m in maps if m.size), default=0.0)
    return max(top, 1e-6)


def map_parts(s_a: np.ndarray, s_b: np.ndarray) -> dict[str, np.ndarray]:
    """The four maps of :data:`MAP_PARTS` from the signed maps ``s_a``, ``s_b`` ((H, W)): the
    similar part is the positive values, the dissimilar part the negative ones (kept negative,
    so that the colour map draws it blue)."""
    return {
        "similar_a": np.maximum(s_a, 0.0),
        "dissimilar_a": np.minimum(s_a, 0.0),
        "similar_b": np.maximum(s_b, 0.0),
        "dissimilar_b": np.minimum(s_b, 0.0),
    }


def shown_parts(
    s_a: np.ndarray, s_b: np.ndarray, significant: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The four maps to draw: :func:`map_parts` of the maps, or, given the significance masks of
    A and B, of the maps with what is not significant zeroed (:func:`significant_only`)."""
    if significant is None:
        return map_parts(s_a, s_b)
    return map_parts(significant_only(s_a, significant[0]), significant_only(s_b, significant[1]))


def _resize(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``values`` ((H, W)) at ``shape`` by nearest neighbour (maps are usually at chip size)."""
    if values.shape == shape:
        return values
    rows = (np.arange(shape[0]) * values.shape[0] // shape[0]).astype(np.intp)
    cols = (np.arange(shape[1]) * values.shape[1] // shape[1]).astype(np.intp)
    out: np.ndarray = values[np.ix_(rows, cols)]
    return out


def _colormap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name]


def overlay(chip: np.ndarray | None, values: np.ndarray, *, vmax: float, opacity: float = 0.8) -> np.ndarray:
    """``values`` ((H, W), signed) drawn with :data:`CMAP` over the grey version of ``chip``
    ((S, S, 3) uint8; None: a mid-grey background of the map's size) as (S, S, 3) uint8 RGB.

    The colour at a pixel is ``CMAP(values / vmax)`` (``-vmax`` blue, 0 white, ``+vmax`` red);
    its opacity is ``opacity * |values| / vmax``, so regions where the map is 0 show the face
    unchanged. InputError for a map that is not 2-D, a chip that is not (S, S, 3), ``vmax`` <= 0
    or ``opacity`` outside [0, 1].
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"a map must be an (H, W) array, got shape {values.shape}")
    if not vmax > 0:
        raise InputError(f"the colour scale must be > 0, got {vmax!r}")
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity must be in [0, 1], got {opacity!r}")
    if chip is None:
        grey: np.ndarray = np.full((int(values.shape[0]), int(values.shape[1])), 0.5)
    else:
        chip = np.asarray(chip)
        if chip.ndim != 3 or chip.shape[2] != 3:
            raise InputError(f"a face chip must be an (S, S, 3) image, got shape {chip.shape}")
        grey = chip.astype(np.float64).mean(axis=2) / 255.0
    values = _resize(np.nan_to_num(values), (int(grey.shape[0]), int(grey.shape[1])))
    scaled = np.clip(values / vmax, -1.0, 1.0)
    rgb = np.asarray(_colormap(CMAP)((scaled + 1.0) / 2.0), np.float64)[..., :3]
    alpha = (opacity * np.abs(scaled))[..., None]
    out = (1.0 - alpha) * grey[..., None] + alpha * rgb
    result: np.ndarray = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return result


def legend_png(vmax: float, *, label: str = "correlation", dpi: int = 100) -> bytes:
    """A horizontal colour bar of :data:`CMAP` from ``-vmax`` to ``+vmax`` as PNG bytes, its
    ends named "dissimilar" and "similar" (the legend of every overlay drawn with ``vmax``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import Normalize

    if not vmax > 0:
        raise InputError(f"the colour scale must be > 0, got {vmax!r}")
    fig, ax = plt.subplots(figsize=(4.8, 0.9), constrained_layout=True)
    try:
        mappable = matplotlib.cm.ScalarMappable(norm=Normalize(-vmax, vmax), cmap=_colormap(CMAP))
        bar = fig.colorbar(mappable, cax=ax, orientation="horizontal")
        bar.set_ticks([-vmax, 0.0, vmax])
        bar.set_ticklabels([f"{-vmax:.3g}\ndissimilar", "0", f"{vmax:.3g}\nsimilar"])
        bar.set_label(label)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def map_points(values: np.ndarray, *, max_side: int = 50) -> list[dict[str, float]]:
    """The map ((H, W)) as chart points ``{"x", "y", "value"}``, averaged over square blocks so
    that neither side has more than ``max_side`` blocks; ``x``/``y`` are each block's first
    pixel column/row, ``value`` its mean."""
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"a map must be an (H, W) array, got shape {values.shape}")
    if max_side < 1:
        raise InputError(f"max_side must be >= 1, got {max_side}")
    h, w = values.shape
    step = max(1, -(-max(h, w) // max_side))
    points = []
    for y in range(0, h, step):
        for x in range(0, w, step):
            block = values[y : y + step, x : x + step]
            points.append({"x": float(x), "y": float(y), "value": round(float(block.mean()), 6)})
    return points


def heatmap_chart(values: np.ndarray, *, vmax: float, title: str, max_side: int = 50) -> Any:
    """An altair heat map of ``values`` (blocks of :func:`map_points`) with :data:`CMAP`'s
    scheme; hovering a block shows its pixel position and correlation."""
    import altair as alt

    points = map_points(values, max_side=max_side)
    step = points[1]["x"] - points[0]["x"] if len(points) > 1 and points[1]["y"] == points[0]["y"] else 1.0
    return (
        alt.Chart(alt.InlineData(values=points), title=title)
        .mark_rect()
        .encode(
            x=alt.X("x:O", title="x (pixel)", axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:O", title="y (pixel)", axis=alt.Axis(labels=False, ticks=False)),
            color=alt.Color("value:Q", title="correlation",
                            scale=alt.Scale(scheme="redblue", domain=[-vmax, vmax], reverse=True)),
            tooltip=[alt.Tooltip("x:Q", title=f"x (block of {int(step)} px)"), alt.Tooltip("y:Q", title="y"),
                     alt.Tooltip("value:Q", title="correlation", format=".4f")],
        )
        .properties(width=260, height=260)
    )


def region_value(values: np.ndarray, x: int, y: int, *, radius: int = 2) -> float:
    """The mean of ``values`` ((H, W)) over the square of side ``2 * radius + 1`` around pixel
    ``(x, y)`` (clipped at the borders); InputError for a pixel outside the map."""
    values = np.asarray(values, np.float64)
    h, w = values.shape
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"pixel ({x}, {y}) is outside the {w}x{h} map")
    if radius < 0:
        raise InputError(f"radius must be >= 0, got {radius}")
    block = values[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
    return float(block.mean())


def significant_only(values: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """``values`` ((H, W)) with every pixel where ``significant`` ((H, W) bool, the uncertainty's
    false-discovery mask) is False set to 0, so that :func:`overlay` leaves it transparent (the
    rule of the CLI figure's ``--grey-insignificant``: no colour where not significant). A new
    float64 array; InputError when the shapes differ or the map is not 2-D."""
    arr = np.asarray(values, np.float64)
    mask = np.asarray(significant)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"a map must be an (H, W) array, got shape {arr.shape}")
    if mask.shape != arr.shape:
        raise InputError(f"the significance mask's shape {mask.shape} differs from the map's {arr.shape}")
    if mask.dtype != np.bool_:
        raise InputError(f"a significance mask must be boolean, got {mask.dtype}")
    out: np.ndarray = np.where(mask, arr, 0.0)
    return out


def _r_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def uncertainty_rows(unc: Uncertainty) -> list[dict[str, Any]]:
    """One table row per face: the split-half agreement (Pearson r of the even- and odd-mask
    half maps), its Spearman-Brown prediction for two full-size maps (``-`` when unknown) and the
    percentage of significant pixels."""
    return [
        {"face": face, "split-half r": _r_text(m.split_half_r), "predicted full-map r": _r_text(m.predicted_r),
         "significant pixels": f"{100.0 * m.significant_fraction:.1f} %"}
        for face, m in (("A", unc.a), ("B", unc.b))
    ]


def uncertainty_caption(unc: Uncertainty) -> str:
    """What the uncertainty figures rest on: the masks, the false-discovery rate of the
    significance masks and the intervals' level."""
    rank = " (ranks)" if unc.method.endswith("spearman") else ""
    return (f"Uncertainty over {unc.n} masks: significant = Benjamini-Hochberg at q = {unc.q:g}; "
            f"per-pixel intervals: Fisher z{rank} at level {unc.level:g}")


def face_caption(label: str, face: FaceRecord) -> str:
    """The caption of an aligned face: ``"A (aligned)"``, with the detector that found it when the
    result names one (``"A (aligned; detected by mtcnn, confidence 0.990)"``)."""
    if not face.detector:
        return f"{label} (aligned)"
    confidence = "" if face.confidence is None else f", confidence {face.confidence:.3f}"
    return f"{label} (aligned; detected by {face.detector}{confidence})"


# -- requests ---------------------------------------------------------------------------------------

#: The face detector select's choices: ``""`` (the server's default) first, then every detector.
DETECTOR_CHOICES: tuple[str, ...] = ("", *DETECTORS)
#: The face detector select's help (Explain and Audits pages).
DETECTOR_HELP = ("How the server finds the face in a photo (hog: dlib's HOG; mtcnn: any pose; mmod: dlib's CNN; "
                 "auto: HOG, then MTCNN when HOG finds none); an aligned chip is not detected")


def detector_label(name: str) -> str:
    """How the detector select shows a choice (``""``: the server's default)."""
    return "server default" if not name else name


def _fraction_field(name: str, text: str) -> float:
    value = text.strip()
    if not value:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number == 0.0:
        return 0.0
    if not (np.isfinite(number) and 0.0 < number < 1.0):
        raise InputError(f"{name} must be a number in (0, 1) (empty or 0: the server's default), got {text!r}")
    return number


def uncertainty_request(fdr_q: str, ci_level: str) -> tuple[float, float]:
    """The ``fdr_q`` and ``ci_level`` of an explain request from their fields' text: a number in
    (0, 1), or 0.0 (the server's default) for an empty field or 0; InputError naming the field
    otherwise."""
    return _fraction_field("FDR q", fdr_q), _fraction_field("CI level", ci_level)


def check_image_upload(name: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
    """InputError naming ``name`` when the upload is empty, larger than ``max_bytes`` or not an
    image Pillow can decode (the server checks again and looks for the face)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise InputError(f"{name}: {len(data) / 1e6:.1f} MB is larger than the {max_bytes / 1e6:.0f} MB allowed")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = "not an image" if isinstance(e, UnidentifiedImageError) else f"a damaged image ({e})"
        raise InputError(f"{name}: {reason}") from None


def _kinds(param: MethodParam) -> tuple[str, bool]:
    kinds = [k.strip() for k in param.type.split("|")]
    return next((k for k in kinds if k != "None"), "str"), "None" in kinds


def param_widget_kind(param: MethodParam) -> str:
    """The widget of a parameter: ``"int"``/``"float"`` (a number box; never None),
    ``"bool"`` (a checkbox) or ``"text"`` (anything else: optional values, tuples, strings)."""
    kind, optional = _kinds(param)
    if kind == "bool" and not optional:
        return "bool"
    if kind in ("int", "float") and not optional:
        return kind
    return "text"


def parse_param(method: str, param: MethodParam, value: Any) -> Any:
    """A widget's ``value`` as the parameter's type (text: ``"none"``/empty for None of an
    optional parameter, ``"3, 5"`` for a tuple); InputError naming the method and parameter."""
    kind, optional = _kinds(param)
    if not isinstance(value, str):
        if kind == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    text = value.strip()
    if optional and text.lower() in ("", "none"):
        return None
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind.startswith("tuple[int"):
            return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{method}: {param.name} must be {param.type}, got {value!r}") from None
    return text


def params_from_values(info: MethodInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    """The request's parameters of method ``info`` from its widgets' ``values`` (by parameter
    name): each parsed by :func:`parse_param`, and only those that differ from the default (so
    that an unchanged form asks exactly what the CLI's defaults ask)."""
    out: dict[str, Any] = {}
    for param in info.params:
        if param.name not in values:
            continue
        value = parse_param(info.name, param, values[param.name])
        if value != param.default:
            out[param.name] = value
    return out


_TRUE = {"1", "true", "yes", "same"}
_FALSE = {"0", "false", "no", "different"}


def pairs_from_csv(data: bytes, images: Mapping[str, bytes]) -> list[tuple[bytes, bytes, bool, str]]:
    """An audit's pairs from a CSV (header ``img1,img2,same``, as ``facexplain client audit
    --pairs`` reads) whose images were uploaded beside it (``images``: file name -> bytes; a
    path in the CSV is matched by its file name). InputError naming the line of anything wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the pairs CSV is not UTF-8 text") from None
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or ()]
    if fields[:3] != ["img1", "img2", "same"]:
        raise InputError(f"the pairs CSV's header must be img1,img2,same, got {','.join(fields) or 'nothing'}")
    pairs = []
    for line, rec in enumerate(reader, start=2):
        values = [(rec.get(k) or "").strip() for k in ("img1", "img2", "same")]
        if not all(values):
            raise InputError(f"pairs CSV line {line}: img1, img2 and same are all needed")
        same = values[2].lower()
        if same not in _TRUE | _FALSE:
            raise InputError(f"pairs CSV line {line}: same must be 1/0, true/false or yes/no, got {values[2]!r}")
        names = [PurePath(v.replace("\\", "/")).name for v in values[:2]]
        missing = [n for n in names if n not in images]
        if missing:
            raise InputError(f"pairs CSV line {line}: image {missing[0]} was not uploaded")
        pairs.append((images[names[0]], images[names[1]], same in _TRUE, f"{names[0]}|{names[1]}"))
    if not pairs:
        raise InputError("the pairs CSV has no pairs")
    return pairs


# -- tables -----------------------------------------------------------------------------------------


def progress_of(job: JobInfo) -> tuple[float, str]:
    """A progress bar's fraction (0..1) and text for ``job``."""
    fraction = min(1.0, job.done / job.total) if job.total > 0 else (1.0 if job.state == "done" else 0.0)
    unit = job.unit or "units"
    text = f"{job.state}: {job.done} / {job.total} {unit}" if job.total else job.state
    if job.cancel_requested and not job.final:
        text += " (cancel requested)"
    return fraction, text


def job_rows(jobs: Sequence[JobInfo]) -> list[dict[str, Any]]:
    """One row per job: id, kind, state, progress, model, methods and, for a failed job, why."""
    rows = []
    for job in jobs:
        fraction, _ = progress_of(job)
        rows.append({
            "id": job.id,
            "kind": job.kind,
            "state": job.state,
            "progress": round(fraction, 4),
            "done": job.done,
            "total": job.total,
            "model": job.model,
            "methods": ", ".join(job.methods),
            "error": "" if job.error is None else f"{job.error.code}: {job.error.message}",
        })
    return rows


def _auc(entry: Mapping[str, Any], mode: str) -> float | None:
    value = entry.get(mode)
    return None if value is None else float(value["auc"])


def audit_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An audit's stored rows (``FacexplainClient.audit_rows``) flattened for a table: the pair,
    its truth, score, decision, whether it is correct, each method's Deletion/Insertion AUC as
    ``<method> deletion``/``<method> insertion`` and, for a failed pair, why."""
    out = []
    for row in rows:
        flat: dict[str, Any] = {
            "index": int(row["index"]),
            "name": row.get("name", ""),
            "same": bool(row["same"]),
            "score": row.get("score"),
            "decision": row.get("decision", "unknown"),
            "correct": bool(row.get("correct", False)),
        }
        for m in row.get("methods") or ():
            for mode in ("deletion", "insertion"):
                if m.get(mode) is not None:
                    flat[f"{m['method']} {mode}"] = _auc(m, mode)
        error = row.get("error")
        flat["error"] = "" if not error else f"{error.get('status', '')}: {error.get('message', '')}"
        out.append(flat)
    return out


def select_rows(
    rows: Sequence[Mapping[str, Any]], *, decision: str = "all", outcome: str = "all", sort_by: str = "index",
    descending: bool = False,
) -> list[dict[str, Any]]:
    """``rows`` of :func:`audit_rows` filtered by ``decision`` (``"all"``, ``"match"``,
    ``"non-match"``, ``"unknown"``) and ``outcome`` (``"all"``, ``"correct"``, ``"wrong"``,
    ``"failed"``), sorted by a column (rows without a value last)."""
    if decision not in ("all", "match", "non-match", "unknown"):
        raise InputError(f"decision filter must be all, match, non-match or unknown, got {decision!r}")
    if outcome not in ("all", "correct", "wrong", "failed"):
        raise InputError(f"outcome filter must be all, correct, wrong or failed, got {outcome!r}")
    kept = []
    for row in rows:
        failed = bool(row.get("error"))
        if decision != "all" and row.get("decision") != decision:
            continue
        if outcome == "failed" and not failed:
            continue
        if outcome == "correct" and (failed or not row.get("correct")):
            continue
        if outcome == "wrong" and (failed or row.get("correct")):
            continue
        kept.append(dict(row))
    present = [r for r in kept if r.get(sort_by) is not None]
    absent = [r for r in kept if r.get(sort_by) is None]
    present.sort(key=lambda r: r[sort_by], reverse=descending)
    return present + absent


def gallery_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's failure gallery (false matches and false non-matches first, then the
    correct pairs nearest the threshold, as the server orders it), each labelled by what went
    wrong."""
    out = []
    for row in summary.get("worst") or ():
        if row.get("error"):
            verdict = "failed"
        elif row.get("correct"):
            verdict = "correct, near the threshold"
        elif row.get("decision") == "match":
            verdict = "false match"
        elif row.get("decision") == "non-match":
            verdict = "false non-match"
        else:
            verdict = "undecided"
        out.append({"verdict": verdict, "index": row["index"], "name": row.get("name", ""),
                    "same": row["same"], "score": row.get("score"), "decision": row.get("decision")})
    return out


def kept_results(rows: Sequence[Mapping[str, Any]], index: int) -> dict[str, PairResult]:
    """The kept PairResult of each method of pair ``index`` in an audit page's rows (read with
    ``maps``), by method name; empty when the pair is not on the page, failed, or the audit kept
    no maps."""
    out: dict[str, PairResult] = {}
    for row in rows:
        if int(row["index"]) != index:
            continue
        for m in row.get("methods") or ():
            result = m.get("result")
            if isinstance(result, PairResult):
                out[str(m["method"])] = result
    return out


def _drop_counts(summary: Mapping[str, Any]) -> dict[str, int]:
    """The summary's dropped pairs per reason: its ``dropped_reasons`` (every reason, 0
    included), or for a summary written before reasons were kept, its ``dropped`` list counted
    (a pair without a reason under ``unknown``)."""
    reasons = summary.get("dropped_reasons")
    if reasons:
        return {str(r): int(n) for r, n in reasons.items()}
    return count_drops(str(d.get("reason") or "unknown") for d in summary.get("dropped") or ())


def dropped_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An audit's dropped pairs per reason, one row ``{reason, meaning, pairs}`` for every reason
    (0 included, as the server counts them: none hidden), in the server's order; empty when no
    pair was dropped."""
    counts = _drop_counts(summary)
    if not any(counts.values()):
        return []
    return [{"reason": reason, "meaning": DROP_REASON_TEXT.get(reason, reason), "pairs": n}
            for reason, n in counts.items()]


def dropped_pairs(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An audit's dropped pairs, one row ``{index, name, reason, error}`` each (the error as
    ``STATUS: message``; ``-`` for a reason a summary written before reasons were kept lacks)."""
    out = []
    for d in summary.get("dropped") or ():
        error = d.get("error") or {}
        out.append({"index": int(d["index"]), "name": str(d.get("name", "")), "reason": d.get("reason") or "-",
                    "error": f"{error.get('status', '')}: {error.get('message', '')}"})
    return out


def audit_options_caption(summary: Mapping[str, Any]) -> str:
    """What an audit was run with, as its summary states it: the face detector and, when it kept
    maps, the false-discovery rate and interval level of their uncertainty; ``""`` when the
    summary states neither (one written before they were kept)."""
    parts = []
    if summary.get("detector"):
        parts.append(f"Face detector: {summary['detector']}")
    stated = summary.get("uncertainty")
    if stated:
        parts.append(f"kept maps' uncertainty: FDR q = {float(stated['fdr_q']):g}, "
                     f"CI level {float(stated['ci_level']):g}")
    return " · ".join(parts)


def format_ci(value: Mapping[str, Any] | None) -> str:
    """``mean [low, high]`` of a ``{mean, ci_low, ci_high, n}`` (``-`` when absent; the mean
    alone when there is no interval)."""
    if value is None:
        return "-"
    if value.get("ci_low") is None or value.get("ci_high") is None:
        return f"{value['mean']:.4f}"
    return f"{value['mean']:.4f} [{value['ci_low']:.4f}, {value['ci_high']:.4f}]"


def method_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The audit's Table 1: per method, Deletion (lower is better) and Insertion (higher is
    better) means with their 95 % intervals (text and numbers), pairs averaged, pairs per second."""
    out = []
    for m in summary.get("methods") or ():
        row: dict[str, Any] = {"method": m["method"]}
        for mode in ("deletion", "insertion"):
            value = m.get(mode)
            row[mode] = format_ci(value)
            row[f"{mode} mean"] = None if value is None else value["mean"]
            row[f"{mode} ci low"] = None if value is None else value.get("ci_low")
            row[f"{mode} ci high"] = None if value is None else value.get("ci_high")
            row[f"{mode} n"] = None if value is None else value.get("n")
        row["pairs/s"] = round(float(m.get("explain_pairs_per_s", 0.0)), 4)
        out.append(row)
    return out


def evaluation_table(audits: Sequence[tuple[JobInfo, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Methods side by side over several finished audits: one row per (audit, method) with the
    audit's model, pairs and accuracy, then :func:`method_table`'s columns."""
    out = []
    for job, summary in audits:
        for row in method_table(summary) or [{"method": "(verification only)"}]:
            out.append({"audit": job.id[:12], "model": job.model, "pairs": summary.get("pairs"),
                        "accuracy": round(float(summary.get("accuracy", 0.0)), 4), **row})
    return out


def auc_points(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every per-pair AUC of an audit's stored rows as ``{"method", "metric", "auc", "index"}``
    (the data of the per-method AUC distributions)."""
    out = []
    for row in rows:
        for m in row.get("methods") or ():
            for mode in ("deletion", "insertion"):
                auc = _auc(m, mode)
                if auc is not None:
                    out.append({"method": m["method"], "metric": mode, "auc": auc, "index": int(row["index"])})
    return out


def interval_points(table: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The means and 95 % intervals of :func:`evaluation_table`'s rows in long form: one point
    ``{"audit", "method", "metric", "mean", "low", "high"}`` per row and metric that has a mean
    (an interval without bounds collapses to the mean)."""
    out = []
    for row in table:
        for mode in ("deletion", "insertion"):
            mean = row.get(f"{mode} mean")
            if mean is None:
                continue
            low, high = row.get(f"{mode} ci low"), row.get(f"{mode} ci high")
            out.append({"audit": row.get("audit", ""), "method": row["method"], "metric": mode, "mean": mean,
                        "low": mean if low is None else low, "high": mean if high is None else high})
    return out


def interval_chart(table: Sequence[Mapping[str, Any]]) -> Any:
    """An altair chart of :func:`interval_points`: per metric, each method's mean (a dot) and
    interval (a bar), audits side by side by colour; None when there is nothing to draw."""
    import altair as alt

    points = interval_points(table)
    if not points:
        return None
    base = alt.Chart(alt.InlineData(values=points)).encode(
        y=alt.Y("method:N", title="method"), color=alt.Color("audit:N", title="audit"),
        yOffset="audit:N",
        tooltip=["audit:N", "method:N", "metric:N", alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f")],
    )
    bars = base.mark_rule().encode(x=alt.X("low:Q", title="AUC"), x2="high:Q")
    dots = base.mark_point(filled=True).encode(x="mean:Q")
    return (bars + dots).properties(width=300).facet(column=alt.Column("metric:N", title=None))


#: Line colours of the curves: Okabe and Ito's palette, told apart with every common colour
#: blindness (https://jfly.uni-koeln.de/color/); a method's points also differ by shape.
CURVE_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_CURVE_AXES = {
    "deletion": ("Deletion (lower area is better)", "fraction of pixels removed"),
    "insertion": ("Insertion (higher area is better)", "fraction of pixels inserted"),
}


def curve_points(summary: Mapping[str, Any], *, audit: str = "") -> list[dict[str, Any]]:
    """The mean curves of an audit summary in long form: one point ``{"audit", "method",
    "metric", "step", "fraction", "accuracy", "mean_score", "auc"}`` per method, metric and step
    (``auc`` the metric's mean, the area under ``accuracy``). Metrics without a curve (not asked,
    or a summary written before curves were kept) give none."""
    out = []
    for m in summary.get("methods") or ():
        for mode in ("deletion", "insertion"):
            value = m.get(mode)
            curve = None if value is None else value.get("curve")
            if not curve:
                continue
            for step, (x, acc, score) in enumerate(
                    zip(curve["fractions"], curve["accuracy"], curve["mean_score"], strict=True)):
                out.append({"audit": audit, "method": m["method"], "metric": mode, "step": step, "fraction": x,
                            "accuracy": acc, "mean_score": score, "auc": value["mean"]})
    return out


def evaluation_curve_points(audits: Sequence[tuple[JobInfo, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """:func:`curve_points` of several finished audits, each named by its id's first 12 characters
    (as :func:`evaluation_table` names them)."""
    return [p for job, summary in audits for p in curve_points(summary, audit=job.id[:12])]


def curve_chart(points: Sequence[Mapping[str, Any]], *, by_audit: bool = False) -> Any:
    """An altair chart of :func:`curve_points`: Deletion and Insertion side by side, the
    verification accuracy of the matched pairs against the fraction of pixels removed or
    inserted, one line per method (colour and point shape) and, with ``by_audit``, per audit
    (dash); None when there is nothing to draw."""
    import altair as alt

    if not points:
        return None
    methods = sorted({str(p["method"]) for p in points})
    colour = alt.Color("method:N", title="method",
                       scale=alt.Scale(domain=methods,
                                       range=[CURVE_PALETTE[i % len(CURVE_PALETTE)] for i in range(len(methods))]))
    charts = []
    for mode, (title, x_title) in _CURVE_AXES.items():
        part = [dict(p) for p in points if p["metric"] == mode]
        if not part:
            continue
        encoding: dict[str, Any] = {
            "x": alt.X("fraction:Q", title=x_title, scale=alt.Scale(domain=[0, 1])),
            "y": alt.Y("accuracy:Q", title="verification accuracy (matched pairs)", scale=alt.Scale(domain=[0, 1])),
            "color": colour,
            "shape": alt.Shape("method:N", title="method"),
            "tooltip": ["audit:N", "method:N", alt.Tooltip("fraction:Q", format=".2f"),
                        alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("mean_score:Q", format=".3f"),
                        alt.Tooltip("auc:Q", title="AUC", format=".2f")],
            "detail": "audit:N",
        }
        if by_audit:
            encoding["strokeDash"] = alt.StrokeDash("audit:N", title="audit")
        charts.append(alt.Chart(alt.InlineData(values=part), title=title)
                      .mark_line(point=True).encode(**encoding).properties(width=300, height=240))
    return alt.hconcat(*charts).resolve_scale(color="shared", shape="shared")


def pair_label(index: int, name: str, same: bool) -> str:
    """How the Explain page's picker shows a dataset pair: ``#index name (same person)``."""
    return f"#{index} {name} ({'same person' if same else 'different people'})"


def csv_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """``rows`` as CSV (UTF-8; columns in order of first appearance; None as empty)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue().encode("utf-8")


# -- results ----------------------------------------------------------------------------------------


def result_files(result: PairResult, *, grey_insignificant: bool = False) -> dict[str, tuple[bytes, str]]:
    """The three files of ``facexplain explain`` for a result with its maps and chips: file name
    -> (content, MIME type). ``grey_insignificant``: the figure greys out what is not significant,
    as ``facexplain explain --grey-insignificant`` draws it (InputError without an uncertainty)."""
    from explainer_service.report import render_figure_png

    chip_a, chip_b = result.face_a.chip, result.face_b.chip
    if chip_a is None or chip_b is None or not result.has_maps:
        raise InputError("this result has no maps or aligned faces to download")
    summary = json.dumps(result.to_dict(), indent=2).encode("utf-8")
    figure = render_figure_png(chip_a, chip_b, result.explanation, grey_insignificant=grey_insignificant)
    return {
        SUMMARY_FILE: (summary, "application/json"),
        MAPS_FILE: (result.maps_to_bytes(), "application/octet-stream"),
        FIGURE_FILE: (figure, "image/png"),
    }
