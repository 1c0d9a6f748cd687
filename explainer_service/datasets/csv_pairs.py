"""Generic CSV pair lists: header ``img1,img2,same[,fold]``, paths relative to the CSV's folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import InputError
from ..fileio import read_regular_text
from .pairs import DEFAULT_FOLDS, Pair, consecutive_folds

__all__ = ["read_csv_pairs"]

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def read_csv_pairs(path: str | Path, *, folds: int = DEFAULT_FOLDS) -> list[Pair]:
    """A CSV with header ``img1,img2,same`` and an optional ``fold`` column (other columns are
    ignored). Paths are relative to the CSV's folder (absolute ones are kept); ``same`` is
    1/0/true/false/yes/no (any case). Without a ``fold`` column the pairs are split into
    :func:`consecutive_folds`."""
    p = Path(path)
    text = read_regular_text(p, "the CSV pair list")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{p}: empty file (expected the header img1,img2,same[,fold])") from None
    except csv.Error as e:
        raise InputError(f"{p}:1: malformed CSV ({e})") from None
    cols = [h.strip().lower() for h in header]
    missing = [c for c in ("img1", "img2", "same") if c not in cols]
    if missing:
        raise InputError(
            f"{p}:1: header lacks {', '.join(missing)} (expected img1,img2,same[,fold]), "
            f"got {','.join(header)!r}"
        )
    dup = sorted({c for c in cols if cols.count(c) > 1 and c in ("img1", "img2", "same", "fold")})
    if dup:
        raise InputError(f"{p}:1: column {dup[0]!r} appears twice")
    ia, ib, isame = cols.index("img1"), cols.index("img2"), cols.index("same")
    ifold = cols.index("fold") if "fold" in cols else None
    base = p.parent

    rows: list[tuple[Path, Path, bool, int | None]] = []
    try:
        for row in reader:
            line_no = reader.line_num
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != len(cols):
                raise InputError(f"{p}:{line_no}: {len(row)} fields, the header has {len(cols)}")
            a, b = row[ia].strip(), row[ib].strip()
            if not a or not b:
                raise InputError(f"{p}:{line_no}: empty image path")
            s = row[isame].strip().lower()
            if s in _TRUE:
                same = True
            elif s in _FALSE:
                same = False
            else:
                raise InputError(f"{p}:{line_no}: same must be 1/0/true/false/yes/no, got {row[isame]!r}")
            fold: int | None = None
            if ifold is not None:
                try:
                    fold = int(row[ifold].strip())
                except ValueError:
                    raise InputError(f"{p}:{line_no}: fold {row[ifold]!r} is not an integer") from None
            rows.append((base / a, base / b, same, fold))
    except csv.Error as e:
        raise InputError(f"{p}:{reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise InputError(f"{p}: no pairs after the header")
    if ifold is None:
        fold_of = consecutive_folds(len(rows), folds)
        return [Pair(a, b, s, fold_of[i]) for i, (a, b, s, _) in enumerate(rows)]
    return [Pair(a, b, s, f) for a, b, s, f in rows]  # type: ignore[arg-type]
