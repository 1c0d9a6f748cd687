"""One entry point for every format: :func:`read_dataset` reads a ``KIND:PATH`` spec."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .ca_cp import find_images_dir, read_calfw_pairs, read_cplfw_pairs
from .cfp import read_cfp_pairs
from .csv_pairs import read_csv_pairs
from .insightface_bin import read_bin_pairs
from .lfw import read_lfw_pairs
from .pairs import ALIGNED_DIR, Dataset

__all__ = ["DATASET_KINDS", "read_dataset"]

#: The kinds :func:`read_dataset` accepts (each also with ``-aligned`` except ``bin``).
DATASET_KINDS = ("lfw", "cfp-ff", "cfp-fp", "cplfw", "calfw", "bin", "csv")


def read_dataset(spec: str) -> Dataset:
    """Read a dataset from ``KIND:PATH``.

    Kinds: ``lfw`` (root with ``pairs.txt``; images from ``images/`` if present, else
    ``aligned112/``), ``cfp-ff``/``cfp-fp`` (root with ``Protocol/``), ``cplfw``/``calfw`` (root with
    the pair list, or the pair list itself), ``bin`` (an insightface .bin), ``csv`` (a CSV file).
    ``lfw``, ``cfp-*``, ``cplfw``, ``calfw`` and ``csv`` take an ``-aligned`` suffix
    (``lfw-aligned:PATH``): read the ``aligned112`` mirror (for ``csv``: declare the images aligned).

    Raises:
        InputError: unknown kind, missing files, malformed lists (naming file and line).
    """
    kind, sep, path = str(spec).partition(":")
    kind = kind.strip().lower()
    if not sep or not path:
        raise InputError(f"dataset spec must be KIND:PATH (kinds: {', '.join(DATASET_KINDS)}), got {spec!r}")
    aligned = kind.endswith("-aligned")
    base = kind.removesuffix("-aligned")
    if base not in DATASET_KINDS or (aligned and base == "bin"):
        raise InputError(
            f"unknown dataset kind {kind!r} in {spec!r} (kinds: {', '.join(DATASET_KINDS)}, "
            f"each but bin also with -aligned)"
        )
    p = Path(path)
    try:
        exists = p.exists()
    except (OSError, ValueError) as e:  # a name too long, a loop of links, a NUL character
        raise InputError(f"dataset spec {spec!r}: cannot look up the path ({getattr(e, 'strerror', None) or e})") from None
    if not exists:
        raise InputError(f"{p}: no such file or folder (dataset spec {spec!r})")

    if base == "lfw":
        root, pairs_name = (p.parent, p.name) if p.is_file() else (p, "pairs.txt")
        if aligned:
            images = ALIGNED_DIR
        elif (root / "images").is_dir():
            images = "images"
        elif (root / ALIGNED_DIR).is_dir():
            images = ALIGNED_DIR
        else:
            raise InputError(f"{root}: neither images/ nor {ALIGNED_DIR}/ found beside {pairs_name}")
        if not (root / images).is_dir():
            raise InputError(f"{root / images}: no such folder")
        pairs = read_lfw_pairs(root, images=images, pairs=pairs_name)
        return Dataset("lfw", tuple(pairs), images == ALIGNED_DIR, spec)
    if base in ("cfp-ff", "cfp-fp"):
        pairs = read_cfp_pairs(p, base[-2:].upper(), aligned=aligned)
        return Dataset(base, tuple(pairs), aligned, spec)
    if base in ("cplfw", "calfw"):
        reader = read_cplfw_pairs if base == "cplfw" else read_calfw_pairs
        root = p.parent if p.is_file() else p
        images = ALIGNED_DIR if aligned else find_images_dir(root, base)
        pairs = reader(p, images=images)
        return Dataset(base, tuple(pairs), images == ALIGNED_DIR, spec)
    if base == "bin":
        return Dataset(p.stem, tuple(read_bin_pairs(p)), True, spec)
    return Dataset(p.stem, tuple(read_csv_pairs(p)), aligned, spec)
