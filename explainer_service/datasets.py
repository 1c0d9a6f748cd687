"""Face-pair datasets: readers that turn a benchmark's pair list into (image A, image B, same) pairs.

Every reader returns ``list[Pair]``; :func:`read_dataset` wraps them behind one spec string and
returns a :class:`Dataset` (name, pairs, whether the images are ArcFace-aligned 112x112 crops).
An image of a pair is an :data:`ImageRef`: a :class:`~pathlib.Path`, or an in-memory
:class:`ImageSource` (an :class:`EncodedImage` from an insightface ``.bin``, an :class:`ArrayImage`,
or an occluded variant from :mod:`explainer_service.occlusion`). Consumers load any of them with
:func:`load_pair_image`, which returns ``(H, W, 3)`` ``uint8`` RGB like
:func:`~explainer_service.images.load_image`.

Formats (``read_dataset`` spec in brackets; ``-aligned`` reads the ``aligned112`` mirror):

- LFW View 2 [``lfw:``, ``lfw-aligned:``]: ``pairs.txt`` over ``images/`` or ``aligned112/``.
- CFP [``cfp-ff:``, ``cfp-fp:``]: ``Protocol/Pair_list_{F,P}.txt`` and
  ``Protocol/Split/{FF,FP}/NN/{same,diff}.txt``; fold = split number - 1.
- CPLFW / CALFW [``cplfw:``, ``calfw:``]: ``pairs_CPLFW.txt`` / ``pairs_CALFW.txt``, two lines
  ``image.jpg token`` per pair; token 0 = mismatched. The published files list the 3000 matched
  pairs first, then the 3000 mismatched ones; fold k holds the k-th tenth of each (FaceX-Zoo).
- insightface verification ``.bin`` [``bin:``]: a pickle of ``(bins, issame_list)``, read by a
  restricted unpickler; 10 consecutive folds as in insightface's ``KFold(10, shuffle=False)``.
- generic CSV [``csv:``]: header ``img1,img2,same[,fold]``, paths relative to the CSV's folder.

Readers check the lists, not the images: a missing or unreadable image surfaces when it is loaded,
and :func:`load_pairs_checked` skips such pairs with a count and a reason per image, never silently.
Folds are 0-based. Bad input raises :class:`~explainer_service.errors.InputError` naming the file
and line.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from .errors import InputError
from .images import MAX_PIXELS, image_from_array, load_image

__all__ = [
    "ImageSource",
    "ImageRef",
    "EncodedImage",
    "ArrayImage",
    "Pair",
    "Dataset",
    "DATASET_KINDS",
    "ALIGNED_DIR",
    "DEFAULT_FOLDS",
    "read_dataset",
    "read_lfw_pairs",
    "read_cfp_pairs",
    "read_cplfw_pairs",
    "read_calfw_pairs",
    "read_bin_pairs",
    "write_verification_bin",
    "read_csv_pairs",
    "consecutive_folds",
    "load_pair_image",
    "LoadedPair",
    "LoadReport",
    "load_pairs_checked",
]

log = logging.getLogger(__name__)

#: The folder of ArcFace-aligned 112x112 crops that mirrors a dataset's image folder.
ALIGNED_DIR = "aligned112"
#: Folds of the LFW-style protocols (LFW, CPLFW, CALFW, insightface .bin).
DEFAULT_FOLDS = 10


# --- image references ------------------------------------------------------------------------


@runtime_checkable
class ImageSource(Protocol):
    """An image that is not a file on disk: it has a unique name and produces its own pixels."""

    @property
    def name(self) -> str: ...

    def load(self) -> np.ndarray: ...


#: One image of a pair: a file path, or an in-memory :class:`ImageSource`.
ImageRef = Union[Path, ImageSource]


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image file (JPEG, PNG, ...) held in memory, e.g. one entry of an insightface .bin.

    Equal and hashed by ``name`` (``"<file>#<index>"`` for a .bin), which must be unique.
    """

    name: str
    data: bytes = field(repr=False, compare=False)

    def load(self) -> np.ndarray:
        """Decode to ``(H, W, 3)`` uint8 RGB with the checks of ``load_image``."""
        return _decode_bytes(self.data, self.name)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ArrayImage:
    """A decoded image held in memory, stored as a read-only ``(H, W, 3)`` uint8 RGB copy.

    Equal and hashed by ``name``, which must be unique within a dataset.
    """

    name: str
    array: np.ndarray = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        arr = np.array(image_from_array(self.array, self.name), copy=True)
        arr.flags.writeable = False
        object.__setattr__(self, "array", arr)

    def load(self) -> np.ndarray:
        return self.array

    def __str__(self) -> str:
        return self.name


def load_pair_image(ref: ImageRef | str) -> np.ndarray:
    """The pixels of one image of a pair, ``(H, W, 3)`` uint8 RGB.

    A path (or string) is read by :func:`~explainer_service.images.load_image`; an
    :class:`ImageSource` produces its array, validated by
    :func:`~explainer_service.images.image_from_array`.

    Raises:
        InputError: unreadable, missing or invalid image; the message names it.
    """
    if isinstance(ref, (str, os.PathLike)):
        return load_image(ref)
    if isinstance(ref, ImageSource):
        return image_from_array(ref.load(), str(ref.name))
    raise InputError(f"not an image reference: {type(ref).__name__} (expected a path or an ImageSource)")


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode an in-memory image file like ``load_image`` does (size check before decoding)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise InputError(f"{name}: image too large ({w}x{h} px; limit {MAX_PIXELS} px)")
                im.load()
                im = ImageOps.exif_transpose(im) or im
                has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
                arr = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image (no image format recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{name}: image too large (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, MemoryError) as e:
        raise InputError(
            f"{name}: image is truncated or corrupted ({str(e).splitlines()[0][:120]})"
        ) from None
    return image_from_array(arr, name)


# --- pairs and datasets ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Two images (paths or in-memory sources), whether they show the same person, and the fold."""

    a: ImageRef
    b: ImageRef
    same: bool
    fold: int


@dataclass(frozen=True)
class Dataset:
    """A named pair set.

    Attributes:
        name: short name (``"lfw"``, ``"cfp-fp"``, the .bin/.csv file stem, ...).
        pairs: the pairs, grouped by fold in protocol order (a tuple; lists are converted).
        aligned: whether the images are ArcFace-aligned 112x112 crops (no detection needed).
        source: where it was read from (the spec string), for reports.
    """

    name: str
    pairs: tuple[Pair, ...]
    aligned: bool
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def folds(self) -> list[int]:
        """The distinct fold numbers, ascending."""
        return sorted({p.fold for p in self.pairs})


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
    if not p.exists():
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
        return Dataset("lfw", pairs, images == ALIGNED_DIR, spec)
    if base in ("cfp-ff", "cfp-fp"):
        pairs = read_cfp_pairs(p, base[-2:].upper(), aligned=aligned)
        return Dataset(base, pairs, aligned, spec)
    if base in ("cplfw", "calfw"):
        reader = read_cplfw_pairs if base == "cplfw" else read_calfw_pairs
        root = p.parent if p.is_file() else p
        images = ALIGNED_DIR if aligned else _find_images_dir(root, base)
        pairs = reader(p, images=images)
        return Dataset(base, pairs, images == ALIGNED_DIR, spec)
    if base == "bin":
        return Dataset(p.stem, read_bin_pairs(p), True, spec)
    return Dataset(p.stem, read_csv_pairs(p), aligned, spec)


# --- LFW -------------------------------------------------------------------------------------


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
    lines = _read_lines(pairs_file, "the LFW pair list")
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


# --- CFP -------------------------------------------------------------------------------------


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
            for line_no, line in enumerate(_read_lines(f, "a CFP split list"), start=1):
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
    for line_no, line in enumerate(_read_lines(path, "a CFP image list"), start=1):
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


# --- CPLFW and CALFW -------------------------------------------------------------------------

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


def _find_images_dir(root: Path, kind: str) -> str:
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
    img_dir = root / (images if images is not None else _find_images_dir(root, kind))
    lines = [
        (k, ln)
        for k, ln in enumerate(_read_lines(pairs_file, f"the {kind.upper()} pair list"), start=1)
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


# --- insightface .bin ------------------------------------------------------------------------


def consecutive_folds(n: int, folds: int = DEFAULT_FOLDS) -> list[int]:
    """Fold of each of ``n`` pairs split into ``min(folds, n)`` consecutive folds, the first
    ``n % k`` one pair longer: the split of scikit-learn's ``KFold(shuffle=False)`` that
    insightface's ``verification.py`` uses."""
    if n <= 0:
        return []
    k = min(folds, n)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [f for f, size in enumerate(sizes) for _ in range(size)]


def _safe_codecs_encode(text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
    # Python 3 writes bytes into protocol 0-2 pickles as _codecs.encode(str, 'latin1').
    if (
        not isinstance(text, str)
        or str(encoding).lower().replace("-", "").replace("_", "") != "latin1"
        or rest
    ):
        raise pickle.UnpicklingError("_codecs.encode with arguments other than (str, 'latin1')")
    return text.encode("latin-1")


def _safe_bytes(*args: Any) -> bytes:
    # bytes() (an empty bytes object in protocol 0-2 pickles); bytes(n) could allocate any size.
    if args and not isinstance(args[0], (bytes, bytearray)):
        raise pickle.UnpicklingError("bytes() with an argument other than bytes")
    return bytes(*args[:1])


@functools.cache
def _bin_globals() -> dict[tuple[str, str], Any]:
    """The only globals a verification .bin may name: bytes helpers and numpy array rebuilding
    (images stored as ``cv2.imencode`` uint8 arrays, labels as numpy bools)."""
    allowed: dict[tuple[str, str], Any] = {
        ("_codecs", "encode"): _safe_codecs_encode,
        ("builtins", "bytes"): _safe_bytes,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _np_attr("_reconstruct")
        allowed[(f"{core}.multiarray", "scalar")] = _np_attr("scalar")
        allowed[(f"{core}.numeric", "_frombuffer")] = _np_attr("_frombuffer", "numeric")
    return {k: v for k, v in allowed.items() if v is not None}


def _np_attr(name: str, module: str = "multiarray") -> Any:
    import importlib

    for core in ("numpy._core", "numpy.core"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                mod = importlib.import_module(f"{core}.{module}")
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


class _Refused(pickle.UnpicklingError):
    pass


class _BinUnpickler(pickle.Unpickler):
    """An unpickler that builds lists, tuples, bytes, bools, ints and numpy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module
        obj = _bin_globals().get((module, name))
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def read_bin_pairs(path: str | Path, *, folds: int = DEFAULT_FOLDS) -> list[Pair]:
    """An insightface verification ``.bin`` (``lfw.bin``, ``cfp_fp.bin``, ``cplfw.bin``, ...).

    The file is a pickle of ``(bins, issame_list)``: ``bins`` holds two encoded images (JPEG/PNG
    bytes, or uint8 arrays as written by ``cv2.imencode``) per pair, consecutively; ``issame_list``
    one bool per pair. It is read with a restricted unpickler (``encoding='bytes'`` like
    insightface's ``load_bin``) that refuses every global other than bytes helpers and numpy array
    reconstruction, so a crafted file cannot run code. Images stay encoded in memory
    (:class:`EncodedImage` named ``<file>#<index>``) and are decoded by :func:`load_pair_image`.
    Folds: :func:`consecutive_folds` (10 consecutive folds, as insightface evaluates).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    try:
        with open(p, "rb") as f:
            payload = _BinUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise InputError(
            f"{p}: refused: the pickle asks for {e}, which a verification .bin never holds"
        ) from None
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - any failure of a corrupted pickle is bad input
        raise InputError(
            f"{p}: not a verification .bin pickle ({type(e).__name__}: {str(e)[:120]})"
        ) from None

    if not isinstance(payload, (tuple, list)) or len(payload) != 2:
        what = f"a {len(payload)}-tuple" if isinstance(payload, (tuple, list)) else type(payload).__name__
        raise InputError(f"{p}: expected a pickled (bins, issame_list), got {what}")
    bins, issame = payload
    if not isinstance(bins, (list, tuple)):
        raise InputError(f"{p}: bins must be a list of encoded images, got {type(bins).__name__}")
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1 or issame.dtype.kind not in "biu":
            raise InputError(f"{p}: issame_list must be a 1-d bool array, got {issame.dtype} {issame.shape}")
        issame = issame.tolist()
    if not isinstance(issame, (list, tuple)):
        raise InputError(f"{p}: issame_list must be a list of bools, got {type(issame).__name__}")
    if len(bins) != 2 * len(issame):
        raise InputError(f"{p}: {len(bins)} images for {len(issame)} pairs (need two images per pair)")
    if not issame:
        raise InputError(f"{p}: no pairs")

    labels: list[bool] = []
    for k, v in enumerate(issame):
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and int(v) in (0, 1)):
            labels.append(bool(v))
        else:
            raise InputError(f"{p}: issame_list[{k}] is {v!r}, not a bool")
    refs: list[EncodedImage] = []
    for k, b in enumerate(bins):
        if isinstance(b, (bytes, bytearray)):
            data = bytes(b)
        elif (
            isinstance(b, np.ndarray)
            and b.dtype == np.uint8
            and (b.ndim == 1 or (b.ndim == 2 and 1 in b.shape))
        ):
            data = b.tobytes()
        else:
            what = f"{b.dtype} array {b.shape}" if isinstance(b, np.ndarray) else type(b).__name__
            raise InputError(f"{p}: bins[{k}] is {what}, not encoded image bytes")
        refs.append(EncodedImage(f"{p}#{k}", data))
    fold_of = consecutive_folds(len(labels), folds)
    return [Pair(refs[2 * i], refs[2 * i + 1], labels[i], fold_of[i]) for i in range(len(labels))]


def write_verification_bin(
    path: str | Path,
    images: Sequence[bytes | np.ndarray],
    issame: Sequence[bool],
    *,
    image_format: str = "PNG",
) -> Path:
    """Write an insightface-style verification ``.bin``: ``pickle((bins, issame_list))``.

    ``images`` holds two images per pair, consecutively: encoded bytes (kept as they are) or
    ``(H, W, 3)`` uint8 RGB arrays (encoded as ``image_format``, lossless PNG by default).
    """
    from PIL import Image

    if len(images) != 2 * len(issame):
        raise InputError(f"{path}: {len(images)} images for {len(issame)} pairs (need two per pair)")
    bins: list[bytes] = []
    for k, im in enumerate(images):
        if isinstance(im, (bytes, bytearray)):
            bins.append(bytes(im))
        else:
            buf = io.BytesIO()
            Image.fromarray(image_from_array(im, f"{path}: images[{k}]")).save(buf, format=image_format)
            bins.append(buf.getvalue())
    p = Path(path)
    with open(p, "wb") as f:
        pickle.dump((bins, [bool(s) for s in issame]), f, protocol=pickle.HIGHEST_PROTOCOL)
    return p


# --- CSV -------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def read_csv_pairs(path: str | Path, *, folds: int = DEFAULT_FOLDS) -> list[Pair]:
    """A CSV with header ``img1,img2,same`` and an optional ``fold`` column (other columns are
    ignored). Paths are relative to the CSV's folder (absolute ones are kept); ``same`` is
    1/0/true/false/yes/no (any case). Without a ``fold`` column the pairs are split into
    :func:`consecutive_folds`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the CSV pair list ({e.strerror or e})") from None
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


# --- loading with a report -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPair:
    """A pair and its two decoded images, ``(H, W, 3)`` uint8 RGB, read-only and shared between
    the pairs that use the same image."""

    pair: Pair
    a: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pairs_checked` kept and skipped.

    Attributes:
        total: pairs considered.
        loaded: pairs whose two images loaded.
        skipped: pairs dropped because an image could not be loaded (``total - loaded``).
        failures: one reason per unreadable image, keyed by its path or name.
    """

    total: int
    loaded: int
    skipped: int
    failures: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: ``kept 2998 of 3000 pairs; skipped 2 (1 unreadable image)``."""
        if not self.skipped:
            return f"kept all {self.total} pairs"
        return (
            f"kept {self.loaded} of {self.total} pairs; skipped {self.skipped} "
            f"({len(self.failures)} unreadable image{'s' if len(self.failures) != 1 else ''})"
        )


def load_pairs_checked(
    dataset: Dataset | Iterable[Pair],
    *,
    loader: Callable[[ImageRef], np.ndarray] = load_pair_image,
) -> tuple[list[LoadedPair], LoadReport]:
    """Load the images of every pair, each distinct image once; skip the pairs with an unreadable
    image and say so: the report counts the skipped pairs and gives a reason per image, and a
    warning is logged when anything was skipped.

    Only :class:`~explainer_service.errors.InputError` (a bad image) is caught; other errors
    propagate.
    """
    pairs = list(dataset.pairs if isinstance(dataset, Dataset) else dataset)
    cache: dict[Any, np.ndarray | None] = {}
    failures: dict[str, str] = {}

    def get(ref: ImageRef) -> np.ndarray | None:
        if ref not in cache:
            try:
                img = loader(ref)
                img.flags.writeable = False
                cache[ref] = img
            except InputError as e:
                failures[str(ref)] = str(e)
                cache[ref] = None
        return cache[ref]

    out: list[LoadedPair] = []
    for pair in pairs:
        a, b = get(pair.a), get(pair.b)
        if a is not None and b is not None:
            out.append(LoadedPair(pair, a, b))
    report = LoadReport(len(pairs), len(out), len(pairs) - len(out), failures)
    if report.skipped:
        first = next(iter(failures.values()))
        log.warning("%s; first failure: %s", report.summary(), first)
    return out, report


# --- helpers ---------------------------------------------------------------------------------


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} ({e.strerror or e})") from None
