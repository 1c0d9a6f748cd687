"""Figures and tables of explanations: the figure of one pair in the spirit of the paper's Fig. 3
(both aligned faces, similar and dissimilar regions overlaid, colour bars, verdict in the title)
as PNG bytes or a file, and the tables and curves of an evaluation or a sanity check.

Every file goes through :mod:`explainer_service.fileio` (atomic, ordinary permissions).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .explanation import Explanation
from .fileio import atomic_write, atomic_write_bytes, atomic_write_text

__all__ = ["render_figure", "render_figure_png", "write_outputs", "write_evaluation", "write_sanity"]


def _gray(chip: np.ndarray) -> np.ndarray:
    gray: np.ndarray = chip.astype(np.float32).mean(axis=2) / 255.0
    return gray


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _budget_text(expl: Explanation) -> str:
    if expl.method == "corrrise":
        return f"  (N={expl.masks} masks)"
    if expl.masks > 0:
        return f"  ({expl.masks} perturbations)"
    return ""


def _significance(expl: Explanation) -> tuple[np.ndarray, np.ndarray]:
    """The significance masks (H, W) bool of both faces; InputError when the explanation has none."""
    unc = expl.uncertainty
    if unc is None or unc.a.significant is None or unc.b.significant is None:
        raise InputError(f"greying out what is not significant needs a map with an uncertainty "
                         f"(CorrRISE); this {expl.method} explanation has none")
    return np.asarray(unc.a.significant, bool), np.asarray(unc.b.significant, bool)


def render_figure_png(
    chip_a: np.ndarray, chip_b: np.ndarray, expl: Explanation, *, dpi: int = 120, grey_insignificant: bool = False
) -> bytes:
    """A 2x3 figure as PNG bytes: per face, the aligned chip (``(S, S, 3)`` uint8), its similar
    map (red) and its dissimilar map (blue). ``grey_insignificant``: pixels outside the
    uncertainty's significance mask (false-discovery control) get no colour and a grey veil
    (InputError for an explanation without an uncertainty)."""
    significant = _significance(expl) if grey_insignificant else None
    plt = _pyplot()
    vmax = max(float(np.abs(expl.s_a).max()), float(np.abs(expl.s_b).max()), 1e-6)
    label = "|correlation|" if expl.method == "corrrise" else "|saliency|"
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 6.6), constrained_layout=True)
    try:
        rows = [
            ("A", chip_a, expl.similar_a, expl.dissimilar_a),
            ("B", chip_b, expl.similar_b, expl.dissimilar_b),
        ]
        for r, (face, chip, sim, dis) in enumerate(rows):
            keep = None if significant is None else significant[r]
            axes[r, 0].imshow(chip)
            axes[r, 0].set_title(f"face {face} (aligned)")
            for c, (m, cmap, what) in enumerate([(sim, "Reds", "similar"), (dis, "Blues", "dissimilar")], 1):
                ax = axes[r, c]
                ax.imshow(_gray(chip), cmap="gray", vmin=0, vmax=1)
                im = ax.imshow(m, cmap=cmap, vmin=0, vmax=vmax)
                alpha = np.clip(m / vmax, 0, 1) * 0.85  # transparent where the map is 0
                if keep is not None:
                    alpha = np.where(keep, alpha, 0.0)
                    veil = np.where(keep, np.nan, 0.5)  # grey over what is not significant
                    ax.imshow(veil, cmap="gray", vmin=0, vmax=1, alpha=0.6)
                im.set_alpha(alpha)
                ax.set_title(f"{face}: {what} regions")
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
        thr = "none" if expl.threshold is None else f"{expl.threshold:.3f}"
        fig.suptitle(
            f"{expl.model} / {expl.method}: cosine {expl.score:.3f}, threshold {thr} -> {expl.decision}"
            + _budget_text(expl)
            + ("" if significant is None or expl.uncertainty is None
               else f"\ngrey: not significant (Benjamini-Hochberg q={expl.uncertainty.q:g})"),
            fontsize=12,
        )
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def render_figure(
    chip_a: np.ndarray,
    chip_b: np.ndarray,
    expl: Explanation,
    path: str | os.PathLike[str],
    *,
    dpi: int = 120,
    grey_insignificant: bool = False,
) -> None:
    """Write :func:`render_figure_png`'s figure to ``path`` (PNG, atomically)."""
    atomic_write_bytes(path, render_figure_png(chip_a, chip_b, expl, dpi=dpi, grey_insignificant=grey_insignificant))


def write_outputs(
    out_dir: str | Path,
    chip_a: np.ndarray,
    chip_b: np.ndarray,
    expl: Explanation,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``summary.json`` (the explanation's summary and ``extra``), ``maps.npz`` and
    ``figure.png`` into ``out_dir`` (created if needed). The CLI writes a whole
    :class:`~explainer_service.results.PairResult` instead (``PairResult.write``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "maps": out / "maps.npz", "figure": out / "figure.png"}
    summary = {**expl.summary(), **(extra or {})}

    def save_npz(tmp: str) -> None:
        savez: Any = np.savez_compressed  # numpy's stubs do not type **arrays
        with open(tmp, "wb") as f:
            savez(f, chip_a=chip_a, chip_b=chip_b, **expl.arrays())

    atomic_write(paths["maps"], save_npz)
    render_figure(chip_a, chip_b, expl, paths["figure"])
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2) + "\n")
    return paths


def write_evaluation(out_dir: str | Path, results: list[Any], meta: dict[str, Any]) -> dict[str, Path]:
    """Write a Table-1-style ``table.md`` and ``table.csv`` (method, deletion, insertion, pairs, ...)
    and the accuracy curves ``curves.png`` of an evaluation (``evaluation.MethodResult`` list)."""
    import csv

    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    paths = {"md": out / "table.md", "csv": out / "table.csv", "curves": out / "curves.png", "json": out / "evaluation.json"}

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "deletion", "insertion", "pairs", "deletion_ci95_low", "deletion_ci95_high",
                     "insertion_ci95_low", "insertion_ci95_high", "explain_pairs_per_s"])
    for r in rows:
        writer.writerow([r["method"], r["deletion"], r["insertion"], r["pairs"], *(r["deletion_ci95"] or ["n/a"] * 2),
                         *(r["insertion_ci95"] or ["n/a"] * 2), r["explain_pairs_per_s"]])
    atomic_write_text(paths["csv"], buf.getvalue())

    head = " | ".join(f"{k}: {v}" for k, v in meta.items() if not isinstance(v, (list, dict)))
    lines = [f"# Deletion and Insertion ({head})", "",
             "| method | Deletion (lower is better) | Insertion (higher is better) | pairs | explain pairs/s |",
             "|---|---|---|---|---|"]
    best_d = min(r["deletion"] for r in rows)
    best_i = max(r["insertion"] for r in rows)
    for r in rows:
        d = f"{r['deletion']:.2f} " + (f"[{r['deletion_ci95'][0]:.2f}, {r['deletion_ci95'][1]:.2f}]" if r["deletion_ci95"] else "[n/a]")
        i = f"{r['insertion']:.2f} " + (f"[{r['insertion_ci95'][0]:.2f}, {r['insertion_ci95'][1]:.2f}]" if r["insertion_ci95"] else "[n/a]")
        if r["deletion"] == best_d:
            d = f"**{d}**"
        if r["insertion"] == best_i:
            i = f"**{i}**"
        lines.append(f"| {r['method']} | {d} | {i} | {r['pairs']} | {r['explain_pairs_per_s']} |")
    lines += ["", "AUC of the verification accuracy of matched pairs (x100), 95 % interval over pairs in brackets."]
    if isinstance(meta.get("pairs_report"), dict):
        lines += ["", pairs_report_line(str(meta.get("dataset", "")), meta["pairs_report"])]
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")
    atomic_write_text(paths["json"], json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for res in results:
        for ax, curve in zip(axes, (res.deletion, res.insertion), strict=True):
            ax.plot(curve.steps * 100, curve.accuracy * 100, marker="o", ms=3, label=f"{res.method} ({curve.auc:.1f})")
    for ax, title in zip(axes, ("Deletion", "Insertion"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("salient pixels removed (%)" if title == "Deletion" else "salient pixels inserted (%)")
        ax.set_ylabel("verification accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    atomic_write(paths["curves"], lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return paths


def pairs_report_line(dataset: str, report: dict[str, Any]) -> str:
    """The table's line on the pairs of ``dataset`` (``PreparedPairs.report()``): asked and
    delivered, dropped per reason (every reason, zeros included, so a reader sees none was hidden),
    replaced, and the shortfall."""
    from .datasets.drops import DROP_REASON_TEXT

    dropped = report.get("dropped", {})
    reasons = ", ".join(f"{DROP_REASON_TEXT.get(k, k)} {v}" for k, v in dropped.items())
    text = (f"Pairs of {dataset}: {report.get('delivered')} of {report.get('requested')} asked "
            f"({report.get('matched_available')} matched in the set); dropped {report.get('dropped_total', 0)} "
            f"({reasons}); replaced {report.get('replaced', 0)}")
    if report.get("replaced_cross_fold"):
        text += f" ({report['replaced_cross_fold']} from another fold)"
    if report.get("shortfall"):
        text += f"; {report['shortfall']} short: the set has no more matched pairs with two usable images"
    return text + "."


def write_sanity(out_dir: str | Path, rows: list[Any], meta: dict[str, Any]) -> dict[str, Path]:
    """Write the sanity check: ``sanity.md``, ``sanity.csv`` and ``sanity.png`` (similarity to the
    trained model's maps as layers are randomised, per method)."""
    import csv

    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "sanity.md", "csv": out / "sanity.csv", "png": out / "sanity.png"}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "stage", "layers_randomized", "spearman", "ssim", "spearman_ci95", "maps"])
    for r in rows:
        w.writerow([r.method, r.stage, r.layers_randomized, round(r.spearman, 4), round(r.ssim, 4),
                    round(r.spearman_ci95, 4), r.maps])
    atomic_write_text(paths["csv"], buf.getvalue())
    methods = list(dict.fromkeys(r.method for r in rows))
    stages = list(dict.fromkeys(r.stage for r in rows))
    head = " | ".join(f"{k}: {v}" for k, v in meta.items())
    lines = [f"# Cascading model-randomisation sanity check ({head})", "",
             "Spearman rank correlation (+- 95 % half-width over maps) / SSIM of each method's maps with "
             "the trained model's (1 = unchanged; a faithful method falls as layers are randomised, top first).", "",
             "| method | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    for m in methods:
        cells = {r.stage: (f"{r.spearman:.2f} / {r.ssim:.2f}" if r.layers_randomized == 0 else
                           f"{r.spearman:.2f} +- {r.spearman_ci95:.2f} / {r.ssim:.2f}") for r in rows if r.method == m}
        lines.append(f"| {m} | " + " | ".join(cells.get(s, "") for s in stages) + " |")
    atomic_write_text(paths["md"], "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for m in methods:
        rs = [r for r in rows if r.method == m]
        ax.plot([r.stage for r in rs], [r.spearman for r in rs], marker="o", label=m)
    ax.set_ylabel("Spearman with trained maps")
    ax.set_xlabel("randomised down to")
    ax.set_ylim(-0.5, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_write(paths["png"], lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return paths
