"""CPLFW (Zheng & Deng 2018) and CALFW (Zheng, Deng & Hu 2017): one pair list, two lines a pair.

The published files list the 3000 matched pairs first, then the 3000 mismatched ones; fold k holds
the k-th tenth of each (as FaceX-Zoo evaluates them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from .pairs import ALIGNED_DIR, DEFAULT_FOLDS, Pair, read_lines

__all__ = ["read_cplfw_pairs", "read_calfw_pairs", "find_images_dir"]

_CA_CP = {
    "cplfw": ("pairs_CPLFW.txt", ("images", "aligned images", "image")),
    "calfw": ("pairs_CALFW.txt", ("images", "aligned images", "images&landmarks/images", "image")),
}


def read_cplfw_pairs(
    path: str | Path, *, images: str | None = None, folds: int = DEFAULT_FOLDS
) -> list[Pair]:
    """CPLFW (Zheng & Deng 2018): ``pairs_CPLFW.txt``, two lines ``Name_k.jpg label`` per pair,
    label 1 on both lines of a matched pair and 0 on a mismatched one; images in one flat folder.

    ``path`` is the dataset root (holding ``pairs_CPLFW.txt``) or the pair list itself;
    ``images`` the image folder under the root (found among ``images``, ``aligned images``, ...
    when None). The i-th matched pair of the file goes to fold ``i * folds // n_matched``, likewise
    the mismatched ones (the published file lists 3000 matched pairs, then 3000 mismatched: fold k =
    the k-th 300 of each). The result is grouped by fold, matched pairs first.
    """
    return _read_ca_cp(path, "cplfw", images, folds)


def read_calfw_pairs(
    path: str | Path, *, images: str | None = None, folds: int = DEFAULT_FOLDS
) -> list[Pair]:
    """CALFW (Zheng, Deng & Hu 2017): ``pairs_CALFW.txt``, the layout of CPLFW; the token on both
    lines of a pair is 0 for a mismatched pair and non-zero for a matched one (the published file
    numbers its matched pairs' folds 1..10). Folds as in :func:`read_cplfw_pairs`."""
    return _read_ca_cp(path, "calfw", images, folds)


def find_images_dir(root: Path, kind: str) -> str:
    """The image folder of a CPLFW/CALFW root: the first of the usual names that exists."""
    for cand in _CA_CP[kind][1] + (ALIGNED_DIR,):
        if (root / cand).is_dir():
            return cand
    raise InputError(
        f"{root}: no image folder found for {kind} (looked for {', '.join(_CA_CP[kind][1] + (ALIGNED_DIR,))})"
    )


def _read_ca_cp(path: str | Path, kind: str, images: str | None, folds: int) -> list[Pair]:
    list_name = _CA_CP[kind][0]
    p = Path(path)
    if p.is_file():
        root, pairs_file = p.parent, p
    else:
        root = p
        pairs_file = next((c for c in (p / list_name, p / "txts" / list_name) if c.is_file()), p / list_name)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise InputError(f"folds must be a positive integer, got {folds!r}")
    img_dir = root / (images if images is not None else find_images_dir(root, kind))
    lines = [
        (k, ln)
        for k, ln in enumerate(read_lines(pairs_file, f"the {kind.upper()} pair list"), start=1)
        if ln.strip()
    ]
    if len(lines) % 2:
        raise InputError(f"{pairs_file}:{lines[-1][0]}: odd number of image lines; each pair takes two lines")

    def parse(line_no: int, line: str) -> tuple[str, int]:
        fields = line.split()
        if len(fields) != 2:
            raise InputError(f"{pairs_file}:{line_no}: expected 'image.jpg label', got {line.strip()!r}")
        try:
            token = int(fields[1])
        except ValueError:
            raise InputError(f"{pairs_file}:{line_no}: label {fields[1]!r} is not an integer") from None
        if token < 0 or (kind == "cplfw" and token > 1):
            allowed = "0 or 1" if kind == "cplfw" else "0 (mismatched) or a positive number (matched)"
            raise InputError(f"{pairs_file}:{line_no}: label must be {allowed}, got {token}")
        return fields[0], token

    matched: list[tuple[Path, Path]] = []
    mismatched: list[tuple[Path, Path]] = []
    for k in range(0, len(lines), 2):
        (na, ta), (nb, tb) = parse(*lines[k]), parse(*lines[k + 1])
        if ta != tb:
            raise InputError(
                f"{pairs_file}:{lines[k + 1][0]}: label {tb} differs from {ta} on line {lines[k][0]}, "
                "the first image of the pair"
            )
        (matched if ta else mismatched).append((img_dir / na, img_dir / nb))
    return _folded(matched, mismatched, folds)


def _folded(matched: list[tuple[Any, Any]], mismatched: list[tuple[Any, Any]], folds: int) -> list[Pair]:
    """Fold k = the k-th of ``folds`` equal slices of the matched and of the mismatched pairs."""
    out: list[tuple[int, int, Pair]] = []
    for same, group in ((True, matched), (False, mismatched)):
        n = len(group)
        for i, (a, b) in enumerate(group):
            fold = i * folds // n
            out.append((fold, 0 if same else 1, Pair(a, b, same, fold)))
    out.sort(key=lambda t: (t[0], t[1]))  # stable: file order within each half-fold
    return [p for _, _, p in out]
