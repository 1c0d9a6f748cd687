"""Writing an explanation to disk: summary.json, maps.npz and a figure in the spirit of the paper's
Fig. 3 (both aligned faces, similar and dissimilar regions overlaid, colour bars, verdict in the title)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .explanation import Explanation

__all__ = ["render_figure", "write_outputs"]


def _gray(chip: np.ndarray) -> np.ndarray:
    return chip.astype(np.float32).mean(axis=2) / 255.0


def render_figure(
    chip_a: np.ndarray, chip_b: np.ndarray, expl: Explanation, path: str | Path, *, dpi: int = 120
) -> None:
    """Save a 2x3 figure: per face, the aligned chip, its similar map (red) and dissimilar map (blue)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    vmax = max(float(np.abs(expl.s_a).max()), float(np.abs(expl.s_b).max()), 1e-6)
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 6.6), constrained_layout=True)
    rows = [
        ("A", chip_a, expl.similar_a, expl.dissimilar_a),
        ("B", chip_b, expl.similar_b, expl.dissimilar_b),
    ]
    for r, (label, chip, sim, dis) in enumerate(rows):
        axes[r, 0].imshow(chip)
        axes[r, 0].set_title(f"face {label} (aligned)")
        for c, (m, cmap, what) in enumerate([(sim, "Reds", "similar"), (dis, "Blues", "dissimilar")], 1):
            ax = axes[r, c]
            ax.imshow(_gray(chip), cmap="gray", vmin=0, vmax=1)
            im = ax.imshow(m, cmap=cmap, vmin=0, vmax=vmax)
            im.set_alpha(np.clip(m / vmax, 0, 1) * 0.85)  # transparent where the map is 0
            ax.set_title(f"{label}: {what} regions")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="|correlation|")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    thr = "none" if expl.threshold is None else f"{expl.threshold:.3f}"
    fig.suptitle(
        f"{expl.model} / {expl.method}: cosine {expl.score:.3f}, threshold {thr} -> {expl.decision}"
        f"  (N={expl.masks} masks)",
        fontsize=12,
    )
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_outputs(
    out_dir: str | Path,
    chip_a: np.ndarray,
    chip_b: np.ndarray,
    expl: Explanation,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``summary.json``, ``maps.npz`` and ``figure.png`` into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "maps": out / "maps.npz", "figure": out / "figure.png"}
    summary = {**expl.summary(), **(extra or {})}

    def save_npz(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, chip_a=chip_a, chip_b=chip_b, **expl.arrays())

    _atomic_write(paths["maps"], save_npz)
    _atomic_write(paths["figure"], lambda tmp: render_figure(chip_a, chip_b, expl, tmp))
    _atomic_write(paths["summary"], lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    return paths


def write_evaluation(out_dir: str | Path, results: list[Any], meta: dict[str, Any]) -> dict[str, Path]:
    """Write a Table-1-style ``table.md`` and ``table.csv`` (method, deletion, insertion, pairs, ...)
    and the accuracy curves ``curves.png`` of an evaluation (``evaluation.MethodResult`` list)."""
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    paths = {"md": out / "table.md", "csv": out / "table.csv", "curves": out / "curves.png", "json": out / "evaluation.json"}

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "deletion", "insertion", "pairs", "deletion_ci95_low", "deletion_ci95_high",
                     "insertion_ci95_low", "insertion_ci95_high", "explain_pairs_per_s"])
    for r in rows:
        writer.writerow([r["method"], r["deletion"], r["insertion"], r["pairs"], *r["deletion_ci95"],
                         *r["insertion_ci95"], r["explain_pairs_per_s"]])
    _atomic_write(paths["csv"], lambda tmp: Path(tmp).write_text(buf.getvalue()))

    head = " | ".join(f"{k}: {v}" for k, v in meta.items() if not isinstance(v, (list, dict)))
    lines = [f"# Deletion and Insertion ({head})", "",
             "| method | Deletion (lower is better) | Insertion (higher is better) | pairs | explain pairs/s |",
             "|---|---|---|---|---|"]
    best_d = min(r["deletion"] for r in rows)
    best_i = max(r["insertion"] for r in rows)
    for r in rows:
        d = f"{r['deletion']:.2f} [{r['deletion_ci95'][0]:.2f}, {r['deletion_ci95'][1]:.2f}]"
        i = f"{r['insertion']:.2f} [{r['insertion_ci95'][0]:.2f}, {r['insertion_ci95'][1]:.2f}]"
        if r["deletion"] == best_d:
            d = f"**{d}**"
        if r["insertion"] == best_i:
            i = f"**{i}**"
        lines.append(f"| {r['method']} | {d} | {i} | {r['pairs']} | {r['explain_pairs_per_s']} |")
    lines += ["", "AUC of the verification accuracy of matched pairs (x100), 95 % interval over pairs in brackets."]
    _atomic_write(paths["md"], lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    _atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for res in results:
        for ax, curve in zip(axes, (res.deletion, res.insertion)):
            ax.plot(curve.steps * 100, curve.accuracy * 100, marker="o", ms=3, label=f"{res.method} ({curve.auc:.1f})")
    for ax, title in zip(axes, ("Deletion", "Insertion")):
        ax.set_title(title)
        ax.set_xlabel("salient pixels removed (%)" if title == "Deletion" else "salient pixels inserted (%)")
        ax.set_ylabel("verification accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _atomic_write(paths["curves"], lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return paths


def write_sanity(out_dir: str | Path, rows: list[Any], meta: dict[str, Any]) -> dict[str, Path]:
    """Write the sanity check: ``sanity.md``, ``sanity.csv`` and ``sanity.png`` (similarity to the
    trained model's maps as layers are randomised, per method)."""
    import csv
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "sanity.md", "csv": out / "sanity.csv", "png": out / "sanity.png"}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "stage", "layers_randomized", "spearman", "ssim", "spearman_ci95", "maps"])
    for r in rows:
        w.writerow([r.method, r.stage, r.layers_randomized, round(r.spearman, 4), round(r.ssim, 4),
                    round(r.spearman_ci95, 4), r.maps])
    _atomic_write(paths["csv"], lambda tmp: Path(tmp).write_text(buf.getvalue()))
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
    _atomic_write(paths["md"], lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for m in methods:
        rs = [r for r in rows if r.method == m]
        ax.plot([r.stage for r in rs], [r.spearman for r in rs], marker="o", label=m)
    ax.set_ylabel("Spearman with trained maps")
    ax.set_xlabel("randomised down to")
    ax.set_ylim(-0.5, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _atomic_write(paths["png"], lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return paths
