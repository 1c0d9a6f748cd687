"""LFW View 2 (Huang et al. 2007): ``pairs.txt`` over ``images/`` (or the ``aligned112`` mirror)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .pairs import Pair, read_lines

__all__ = ["read_lfw_pairs"]


def _lfw_path(images: Path, name: str, idx: str, pairs_file: Path, line_no: int) -> Path:
    try:
        i = int(idx)
    except ValueError:
        raise InputError(f"{pairs_file}:{line_no}: image number {idx!r} is not an integer") from None
    return images / name / f"{name}_{i:04d}.jpg"


def read_lfw_pairs(root: str | Path, images: str = "images", pairs: str = "pairs.txt") -> list[Pair]:
    """LFW View 2: ``root/pairs.txt`` (header ``folds<TAB>n``, then per fold n matched lines
    ``name i j`` and n mismatched lines ``name1 i name2 j``) over ``root/<images>/Name/Name_000i.jpg``."""
    root = Path(root)
    pairs_file = root / pairs
    lines = read_lines(pairs_file, "the LFW pair list")
    img_dir = root / images
    try:
        n_folds, n = (int(v) for v in lines[0].split())
    except (ValueError, IndexError):
        raise InputError(f"{pairs_file}:1: header must be '<folds> <pairs per half-fold>'") from None
    body = [(k + 2, ln) for k, ln in enumerate(lines[1:]) if ln.strip()]
    if len(body) != 2 * n * n_folds:
        raise InputError(f"{pairs_file}: {len(body)} pair lines, the header promises {2 * n * n_folds}")
    out: list[Pair] = []
    for k, (line_no, line) in enumerate(body):
        fields = line.split()
        fold = k // (2 * n)
        if len(fields) == 3:
            a = _lfw_path(img_dir, fields[0], fields[1], pairs_file, line_no)
            b = _lfw_path(img_dir, fields[0], fields[2], pairs_file, line_no)
            out.append(Pair(a, b, True, fold))
        elif len(fields) == 4:
            a = _lfw_path(img_dir, fields[0], fields[1], pairs_file, line_no)
            b = _lfw_path(img_dir, fields[2], fields[3], pairs_file, line_no)
            out.append(Pair(a, b, False, fold))
        else:
            raise InputError(f"{pairs_file}:{line_no}: expected 3 or 4 fields, got {len(fields)}")
    return out
