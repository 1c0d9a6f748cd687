"""Image references: the images of a pair, as files on disk or in memory, and how to load them.

An image of a pair is an :data:`ImageRef`: a :class:`~pathlib.Path`, or an in-memory
:class:`ImageSource` (an :class:`EncodedImage` from an insightface ``.bin``, an :class:`ArrayImage`,
or an occluded variant from :mod:`explainer_service.occlusion`). :func:`load_pair_image` loads any of
them as ``(H, W, 3)`` ``uint8`` RGB like :func:`~explainer_service.images.load_image`, and
:func:`ref_name` names one in reports and errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
from ..images import decode_image, image_from_array, load_image

__all__ = ["ImageSource", "ImageRef", "EncodedImage", "ArrayImage", "load_pair_image", "ref_name"]


@runtime_checkable
class ImageSource(Protocol):
    """An image that is not a file on disk: it has a unique name and produces its own pixels."""

    @property
    def name(self) -> str: ...

    def load(self) -> np.ndarray: ...


#: One image of a pair: a file path, or an in-memory :class:`ImageSource`.
ImageRef = Path | ImageSource


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image file (JPEG, PNG, ...) held in memory, e.g. one entry of an insightface .bin.

    Equal and hashed by ``name`` (``"<file>#<index>"`` for a .bin), which must be unique.
    """

    name: str
    data: bytes = field(repr=False, compare=False)

    def load(self) -> np.ndarray:
        """Decode to ``(H, W, 3)`` uint8 RGB with the checks of ``load_image``."""
        return decode_image(self.data, self.name)

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


def ref_name(ref: ImageRef | str) -> str:
    """The name of an image reference: a path as a string, or an :class:`ImageSource`'s name."""
    if isinstance(ref, (str, os.PathLike)):
        return str(ref)
    return str(getattr(ref, "name", ref))
