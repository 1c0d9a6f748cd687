"""Paired comparison of explanation methods evaluated on the same pairs (Table 1 with paired intervals).

``facexplain evaluate`` writes each method's per-pair Deletion and Insertion AUCs and the names of
the pairs to ``evaluation.json``. This module reads such folders, made at different times and with
different methods, matches their pairs by name, and writes the Table 1 of AUC x100 with 95 %
intervals, each method's forward passes per pair, and the paired differences of a reference method
to every other one with a verdict per cell.

Statistics: Student t intervals over pairs. For a method, mean +- t(0.975, n-1) * sd / sqrt(n) of
its per-pair AUCs; for a paired difference, the same over the per-pair differences
``reference - other`` (the interval of a paired t-test). The differences are paired because every
method explained and was scored on the same pairs; that removes the pair-to-pair spread, which
dominates the per-method intervals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "BETTER", "NOT_SIGNIFICANT", "WORSE", "Interval", "MethodRun", "describe", "load_runs", "mean_interval",
    "paired_difference", "paired_report", "verdict",
]

#: Verdicts of a paired difference: its interval excludes zero in the reference's favour,
#: against it, or includes zero.
BETTER, WORSE, NOT_SIGNIFICANT = "better", "worse", "n.s."

#: The metrics and the sign of a difference that favours the reference (lower Deletion is better).
_FAVOURABLE = {"deletion": -1, "insertion": +1}


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t interval over ``n`` values: ``low <= mean <= high``."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.high - self.low) / 2


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """The mean of ``values`` (n,) with its Student t interval (mean +- t * sd / sqrt(n)).

    Raises:
        InputError: fewer than two values, a value that is not finite, or a confidence outside (0, 1).
    """
    from scipy.special import stdtrit

    x = np.asarray(values, dtype=np.float64).ravel()
    if len(x) < 2:
        raise InputError(f"an interval over pairs needs at least 2 pairs, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise InputError("an interval over pairs needs finite values (got NaN or infinity)")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    half = float(stdtrit(len(x) - 1, 0.5 + confidence / 2) * x.std(ddof=1) / np.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


def paired_difference(
    reference: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> Interval:
    """Mean of ``reference - other`` (n,) per pair with its t interval (the paired t-test's).

    Raises:
        InputError: the two do not have the same number of pairs (see :func:`mean_interval`).
    """
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(other, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise InputError(f"a paired difference needs the same pairs, got {len(a)} and {len(b)} values")
    return mean_interval(a - b, confidence)


def verdict(diff: Interval, metric: str) -> str:
    """``better`` when the interval of ``reference - other`` excludes zero in the reference's favour
    (below zero for Deletion, above for Insertion), ``worse`` when it excludes zero the other way,
    else ``n.s.``."""
    if metric not in _FAVOURABLE:
        raise InputError(f"metric must be deletion or insertion, got {metric!r}")
    sign = _FAVOURABLE[metric]
    lo, hi = sorted((sign * diff.low, sign * diff.high))
    if lo > 0:
        return BETTER
    if hi < 0:
        return WORSE
    return NOT_SIGNIFICANT


@dataclass(frozen=True)
class MethodRun:
    """One method's per-pair AUCs (x100) from one evaluation folder.

    ``scenario`` is the evaluation's dataset (with `` (occluded)``), ``pairs`` the ``(name A, name B)``
    of each pair in the order of ``deletion`` and ``insertion`` (n,); ``chips`` a digest of each
    pair's two chips (None: not recorded).
    """

    source: str
    scenario: str
    model: str
    method: str
    pairs: tuple[tuple[str, str], ...]
    deletion: np.ndarray
    insertion: np.ndarray
    forward_passes: int | None
    settings: tuple[tuple[str, str], ...]
    chips: tuple[str, ...] | None = None

    def aligned_to(self, pairs: Sequence[tuple[str, str]]) -> MethodRun:
        """This run with its pairs put in the order of ``pairs`` (the same set)."""
        index = {p: i for i, p in enumerate(self.pairs)}
        order = [index[p] for p in pairs]
        chips = None if self.chips is None else tuple(self.chips[k] for k in order)
        return MethodRun(self.source, self.scenario, self.model, self.method, tuple(pairs),
                         self.deletion[order], self.insertion[order], self.forward_passes, self.settings, chips)


#: Evaluation settings that must agree for two runs to be compared pair by pair.
_SETTINGS = ("substrate", "perturb", "steps", "threshold")


def _runs_of(path: Path) -> list[MethodRun]:
    try:
        data = json.loads(path.read_text())
        meta, rows = data["meta"], data["rows"]
        names = meta.get("pair_names")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not an evaluation.json of facexplain evaluate ({e})") from None
    if not names:
        raise InputError(f"{path}: no pair names (written before evaluate recorded them); rerun that evaluation")
    pairs = tuple((str(a), str(b)) for a, b in names)
    if len(set(pairs)) != len(pairs):
        raise InputError(f"{path}: the same pair appears twice")
    settings = tuple((k, str(meta.get(k))) for k in _SETTINGS)
    digests = meta.get("pair_chips_sha256")
    chips = None if digests is None else tuple(str(d) for d in digests)
    if chips is not None and len(chips) != len(pairs):
        raise InputError(f"{path}: {len(chips)} chip digests for {len(pairs)} pairs")
    out = []
    for row in rows:
        if "deletion_per_pair" not in row:
            raise InputError(f"{path}: method {row.get('method')} has no per-pair AUCs; rerun that evaluation")
        d = np.asarray(row["deletion_per_pair"], dtype=np.float64)
        i = np.asarray(row["insertion_per_pair"], dtype=np.float64)
        if len(d) != len(pairs) or len(i) != len(pairs):
            raise InputError(f"{path}: method {row['method']} has {len(d)} per-pair AUCs for {len(pairs)} pairs")
        out.append(MethodRun(str(path.parent), str(meta["dataset"]), str(meta["model"]), str(row["method"]),
                             pairs, d, i, row.get("forward_passes"), settings, chips))
    return out


def load_runs(paths: Iterable[str | Path]) -> list[MethodRun]:
    """Every method run in the ``evaluation.json`` files under ``paths`` (files or folders, searched
    recursively), in path order.

    Raises:
        InputError: a path that does not exist, no evaluation found, or a file without per-pair AUCs
            or pair names.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("evaluation.json")))
        else:
            raise InputError(f"{p}: no such file or folder")
    if not files:
        raise InputError("no evaluation.json found under the given paths")
    return [run for f in files for run in _runs_of(f)]


def _group(runs: Sequence[MethodRun]) -> dict[tuple[str, str], dict[str, MethodRun]]:
    """Runs by (model, scenario) and method, pairs aligned to the first run's order; InputError for
    a method given twice, different settings or different pair sets within a group."""
    groups: dict[tuple[str, str], dict[str, MethodRun]] = {}
    for run in runs:
        group = groups.setdefault((run.model, run.scenario), {})
        if run.method in group:
            raise InputError(f"{run.model}, {run.scenario}: method {run.method} is given twice "
                             f"({group[run.method].source} and {run.source})")
        if group:
            first = next(iter(group.values()))
            if run.settings != first.settings:
                raise InputError(f"{run.model}, {run.scenario}: {run.source} was evaluated with "
                                 f"{dict(run.settings)}, {first.source} with {dict(first.settings)}")
            if set(run.pairs) != set(first.pairs):
                only = len(set(run.pairs) - set(first.pairs))
                missing = len(set(first.pairs) - set(run.pairs))
                raise InputError(
                    f"{run.model}, {run.scenario}: {run.method} ({run.source}) was evaluated on other pairs than "
                    f"{first.method} ({first.source}): {only} pairs only in the first, {missing} only in the second"
                )
            run = run.aligned_to(first.pairs)
            if run.chips is not None and first.chips is not None and run.chips != first.chips:
                other = sum(a != b for a, b in zip(run.chips, first.chips, strict=True))
                raise InputError(f"{run.model}, {run.scenario}: {run.method} ({run.source}) had other chips than "
                                 f"{first.method} ({first.source}) for {other} of the same-named pairs "
                                 "(another aligner or occluder?)")
        group[run.method] = run
    return groups


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def paired_report(
    runs: Sequence[MethodRun],
    reference: str,
    *,
    labels: Mapping[str, str] | None = None,
    confidence: float = 0.95,
) -> str:
    """Markdown: per model, the AUC table (mean [t interval] per scenario and metric, forward passes
    per pair) and the table of ``reference`` minus each other method (mean +- half-width and the
    verdict of each cell), with a summary line of how many cells are ``better``.

    ``labels`` renames scenarios (dataset specs) in the headers.

    Raises:
        InputError: ``reference`` missing from a (model, scenario), or runs that cannot be paired.
    """
    labels = dict(labels or {})
    groups = _group(runs)
    for (model, scen), group in groups.items():
        if reference not in group:
            raise InputError(f"{model}, {scen}: no run of the reference method {reference} "
                             f"(methods: {', '.join(group)})")
    pct = f"{confidence * 100:g} %"
    out: list[str] = []
    for model in dict.fromkeys(m for m, _ in groups):
        scens = [s for m, s in groups if m == model]
        methods = list(dict.fromkeys(r for m, s in groups if m == model for r in groups[(m, s)]))
        methods.remove(reference)
        methods.insert(0, reference)
        head = " | ".join(f"{labels.get(s, s)} Deletion | {labels.get(s, s)} Insertion" for s in scens)
        sizes = ", ".join(f"{labels.get(s, s)} {len(groups[(model, s)][reference].pairs)}" for s in scens)
        out += [f"Model {model}; pairs: {sizes}. AUC x100, mean [{pct} t interval over pairs]; "
                "lower Deletion and higher Insertion are better; forward passes per pair.", "",
                f"| method | passes | {head} |", "|---" * (2 + 2 * len(scens)) + "|"]
        for method in methods:
            cells, passes = [], set()
            for s in scens:
                run = groups[(model, s)].get(method)
                if run is None:
                    cells += ["-", "-"]
                    continue
                passes.add(run.forward_passes)
                for values in (run.deletion, run.insertion):
                    iv = mean_interval(values, confidence)
                    cells.append(f"{_fmt(iv.mean)} [{_fmt(iv.low)}, {_fmt(iv.high)}]")
            budget = "/".join("?" if p is None else f"{p:,}" for p in sorted(passes, key=lambda p: p or 0))
            out.append(f"| {method} | {budget} | " + " | ".join(cells) + " |")
        out += ["", f"{reference} minus each method on the same pairs (mean +- {pct} half-width, paired t; "
                "Deletion: negative favours "
                f"{reference}, Insertion: positive); verdict: {BETTER} / {WORSE} = the interval excludes zero "
                f"in {reference}'s favour / against it, {NOT_SIGNIFICANT} = it includes zero.", "",
                f"| vs | passes | {head} |", "|---" * (2 + 2 * len(scens)) + "|"]
        counts = {BETTER: 0, WORSE: 0, NOT_SIGNIFICANT: 0}
        for method in methods[1:]:
            cells, passes = [], set()
            for s in scens:
                group = groups[(model, s)]
                if method not in group:
                    cells += ["-", "-"]
                    continue
                passes.add(group[method].forward_passes)
                for metric in ("deletion", "insertion"):
                    diff = paired_difference(getattr(group[reference], metric), getattr(group[method], metric),
                                             confidence)
                    v = verdict(diff, metric)
                    counts[v] += 1
                    cells.append(f"{diff.mean:+.2f} +- {diff.half_width:.2f} {v}")
            budget = "/".join("?" if p is None else f"{p:,}" for p in sorted(passes, key=lambda p: p or 0))
            out.append(f"| {method} | {budget} | " + " | ".join(cells) + " |")
        total = sum(counts.values())
        out += ["", f"{reference}, of {total} cells: {counts[BETTER]} {BETTER}, {counts[WORSE]} {WORSE}, "
                f"{counts[NOT_SIGNIFICANT]} {NOT_SIGNIFICANT}", ""]
    return "\n".join(out)


def describe(run: MethodRun) -> dict[str, Any]:
    """A compact JSON-able record of one run (per-pair AUCs and names), for committed results."""
    return {
        "model": run.model, "scenario": run.scenario, "method": run.method, "forward_passes": run.forward_passes,
        "settings": dict(run.settings), "pairs": [list(p) for p in run.pairs],
        "deletion_per_pair": run.deletion.tolist(), "insertion_per_pair": run.insertion.tolist(),
    }
