"""CFP (Sengupta et al., WACV 2016): frontal-frontal and frontal-profile protocols."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .pairs import ALIGNED_DIR, Pair, read_lines

__all__ = ["read_cfp_pairs"]


def read_cfp_pairs(
    root: str | Path, protocol: str = "FP", *, aligned: bool = False, aligned_dir: str = ALIGNED_DIR
) -> list[Pair]:
    """CFP (Sengupta et al., WACV 2016), frontal-frontal (``"FF"``) or frontal-profile (``"FP"``).

    ``root/Protocol/Pair_list_F.txt`` and ``Pair_list_P.txt`` map an index to an image path
    (relative to ``Protocol/``); ``root/Protocol/Split/<protocol>/NN/same.txt`` and ``diff.txt`` hold
    lines ``i,j``: FF indexes F twice, FP indexes F then P. Every split folder present is read; split
    ``NN`` becomes fold ``NN - 1``, its same pairs first. With ``aligned`` the images are taken from
    ``root/<aligned_dir>/``, which mirrors ``Data/Images/`` (``.../001/frontal/01.jpg``).

    ``root`` may also be the ``Protocol`` folder itself.
    """
    protocol = protocol.upper()
    if protocol not in ("FF", "FP"):
        raise InputError(f"CFP protocol must be 'FF' or 'FP', got {protocol!r}")
    root = Path(root)
    proto_dir = root / "Protocol"
    if not proto_dir.is_dir() and (root / "Pair_list_F.txt").is_file():
        proto_dir, root = root, root.parent
    if not proto_dir.is_dir():
        raise InputError(f"{proto_dir}: no such folder (expected the CFP Protocol folder)")
    lists = {"F": _read_cfp_list(proto_dir / "Pair_list_F.txt")}
    if protocol == "FP":
        lists["P"] = _read_cfp_list(proto_dir / "Pair_list_P.txt")
    second = "F" if protocol == "FF" else "P"

    split_dir = proto_dir / "Split" / protocol
    if not split_dir.is_dir():
        raise InputError(f"{split_dir}: no such folder (expected CFP splits 01..10)")
    splits = sorted(
        (d for d in split_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )
    if not splits:
        raise InputError(f"{split_dir}: no split folders (expected 01..10)")

    resolved: dict[tuple[str, int], Path] = {}

    def image(which: str, idx: int, src: Path, line_no: int) -> Path:
        key = (which, idx)
        if key not in resolved:
            entry = lists[which].get(idx)
            if entry is None:
                raise InputError(f"{src}:{line_no}: index {idx} is not in Pair_list_{which}.txt")
            rel, list_line = entry
            path = Path(os.path.normpath(proto_dir / rel))
            if aligned:
                path = _cfp_aligned(root, path, aligned_dir, proto_dir / f"Pair_list_{which}.txt", list_line)
            resolved[key] = path
        return resolved[key]

    out: list[Pair] = []
    for d in splits:
        fold = int(d.name) - 1
        for fname, same in (("same.txt", True), ("diff.txt", False)):
            f = d / fname
            for line_no, line in enumerate(read_lines(f, "a CFP split list"), start=1):
                if not line.strip():
                    continue
                fields = [v.strip() for v in line.split(",")]
                if len(fields) != 2:
                    raise InputError(f"{f}:{line_no}: expected 'i,j', got {line.strip()!r}")
                try:
                    i, j = int(fields[0]), int(fields[1])
                except ValueError:
                    raise InputError(
                        f"{f}:{line_no}: indices must be integers, got {line.strip()!r}"
                    ) from None
                out.append(Pair(image("F", i, f, line_no), image(second, j, f, line_no), same, fold))
    return out


def _read_cfp_list(path: Path) -> dict[int, tuple[str, int]]:
    """``Pair_list_X.txt``: lines ``index relative/path.jpg`` -> {index: (path, line number)}."""
    out: dict[int, tuple[str, int]] = {}
    for line_no, line in enumerate(read_lines(path, "a CFP image list"), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise InputError(f"{path}:{line_no}: expected 'index path', got {line.strip()!r}")
        try:
            idx = int(fields[0])
        except ValueError:
            raise InputError(f"{path}:{line_no}: index {fields[0]!r} is not an integer") from None
        if idx in out:
            raise InputError(f"{path}:{line_no}: index {idx} already listed on line {out[idx][1]}")
        out[idx] = (fields[1].strip().replace("\\", "/"), line_no)
    return out


def _cfp_aligned(root: Path, path: Path, aligned_dir: str, list_file: Path, line_no: int) -> Path:
    """``root/Data/Images/001/frontal/01.jpg`` -> ``root/aligned112/001/frontal/01.jpg``."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise InputError(
            f"{list_file}:{line_no}: {path} lies outside {root}, so it has no {aligned_dir}/ mirror"
        ) from None
    parts = rel.parts
    if len(parts) > 2 and parts[0] == "Data" and parts[1] == "Images":
        parts = parts[2:]
    return root.joinpath(aligned_dir, *parts)
