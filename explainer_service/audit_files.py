"""A finished audit as files: what ``facexplain client result JOB --out DIR`` writes for an audit.

- ``summary.json``: the audit's summary (pairs, failed pairs, threshold, accuracy, the confusion
  counts, each method's Deletion/Insertion mean with its 95 % interval as Table 1 of the paper
  and its mean curve under ``curve``: ``fractions``, ``accuracy`` and ``mean_score`` per step,
  the curve whose area the mean is; the worst pairs, the dropped pairs) with ``job`` (id, model, methods) and ``format``
  (:data:`AUDIT_FORMAT`); written last, so a folder with it is complete.
- ``pairs.csv``: one line per pair, by index: ``index, name, same (1/0), score, decision,
  correct (1/0), error`` (``STATUS: message`` for a pair that failed, else empty), then per method
  ``M.deletion`` / ``M.insertion`` (the pair's AUC, for the metrics the audit scored) and
  ``M.explain_s``. Empty cells where a value does not exist (a failed pair's score).
- ``pairs/<index>/<method>/``: when the audit kept maps, each pair's result per method as the
  three files of ``facexplain explain`` (:meth:`PairResult.write`: summary.json, maps.npz,
  figure.png); ``<index>`` zero-padded to the width of the largest index.

Rows come in the shape of ``api.convert.audit_row_from_message`` (a kept result under its
method's ``"result"``) and the summary in that of ``audit_summary_from_message``. Rows are consumed
one at a time: each kept result is written and dropped, so memory does not grow with the maps.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .fileio import atomic_write_text

__all__ = [
    "AUDIT_FORMAT",
    "AUDIT_SUMMARY_FILE",
    "AUDIT_PAIRS_FILE",
    "AUDIT_PAIRS_DIR",
    "AuditFiles",
    "pairs_csv",
    "summary_json",
    "pair_folder",
    "write_audit",
]

#: The layout's name and version (``format`` of summary.json).
AUDIT_FORMAT = "facexplain.audit/1"
AUDIT_SUMMARY_FILE = "summary.json"
AUDIT_PAIRS_FILE = "pairs.csv"
AUDIT_PAIRS_DIR = "pairs"
_METRICS = ("deletion", "insertion")
_BASE_COLUMNS = ("index", "name", "same", "score", "decision", "correct", "error")


@dataclass(frozen=True)
class AuditFiles:
    """What :func:`write_audit` wrote: the two files, the rows in pairs.csv and the result
    folders (one per pair and method with kept maps)."""

    summary: Path
    pairs: Path
    rows: int
    result_folders: tuple[Path, ...]


def _flag(value: Any) -> str:
    return "1" if value else "0"


def _number(value: Any) -> str:
    return "" if value is None else repr(float(value))


def pairs_csv(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> str:
    """pairs.csv's text (see the module docstring): a metric's column appears when some row of
    that method has it."""
    present = {(m["method"], mode) for r in rows for m in r.get("methods") or () for mode in _METRICS if mode in m}
    columns = list(_BASE_COLUMNS)
    for name in methods:
        columns += [f"{name}.{mode}" for mode in _METRICS if (name, mode) in present]
        columns.append(f"{name}.explain_s")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in sorted(rows, key=lambda r: int(r["index"])):
        error = r.get("error")
        line: dict[str, str] = {
            "index": str(int(r["index"])),
            "name": str(r.get("name", "")),
            "same": _flag(r["same"]),
            "score": _number(r.get("score")),
            "decision": str(r.get("decision", "")),
            "correct": _flag(r.get("correct")),
            "error": "" if error is None else f"{error['status']}: {error['message']}",
        }
        for m in r.get("methods") or ():
            for mode in _METRICS:
                if mode in m:
                    line[f"{m['method']}.{mode}"] = _number(m[mode]["auc"])
            line[f"{m['method']}.explain_s"] = _number(m.get("explain_s"))
        writer.writerow([line.get(c, "") for c in columns])
    return buf.getvalue()


def summary_json(summary: Mapping[str, Any], *, job_id: str, model: str, methods: Sequence[str]) -> str:
    """summary.json's text: ``format``, ``job`` and the summary's own keys."""
    doc = {"format": AUDIT_FORMAT, "job": {"id": job_id, "model": model, "methods": list(methods)}, **summary}
    try:
        return json.dumps(doc, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise InputError(f"the audit summary of job {job_id} is not plain JSON: {e}") from None


def pair_folder(out_dir: str | os.PathLike[str], index: int, total: int, method: str) -> Path:
    """``out_dir/pairs/<index>/<method>``, the index zero-padded to the width of ``total - 1``."""
    if index < 0 or (total and index >= total):
        raise InputError(f"pair index {index} is outside the audit's {total} pairs")
    if not method or method in (".", "..") or "/" in method or "\\" in method:
        raise InputError(f"method name {method!r} cannot name a folder")
    width = len(str(max(total - 1, 0)))
    return Path(out_dir) / AUDIT_PAIRS_DIR / str(index).zfill(width) / method


def write_audit(
    out_dir: str | os.PathLike[str],
    summary: Mapping[str, Any],
    rows: Iterable[Mapping[str, Any]],
    *,
    job_id: str,
    model: str,
    methods: Sequence[str],
    total: int,
) -> AuditFiles:
    """Write an audit's files into ``out_dir`` (created if needed): each row's kept results as
    they come, then pairs.csv, then summary.json (see the module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    light: list[dict[str, Any]] = []
    folders: list[Path] = []
    for row in rows:
        kept_methods = []
        for m in row.get("methods") or ():
            result = m.get("result")
            if result is not None:
                folder = pair_folder(out, int(row["index"]), total, str(m["method"]))
                result.write(folder)
                folders.append(folder)
            kept_methods.append({k: v for k, v in m.items() if k != "result"})
        light.append({**row, "methods": kept_methods})
    pairs_path = atomic_write_text(out / AUDIT_PAIRS_FILE, pairs_csv(light, methods))
    summary_path = atomic_write_text(out / AUDIT_SUMMARY_FILE,
                                     summary_json(summary, job_id=job_id, model=model, methods=methods))
    return AuditFiles(summary_path, pairs_path, len(light), tuple(folders))
