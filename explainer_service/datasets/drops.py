"""Why a pair was dropped: one reason per dropped pair, counted per reason, so no drop is silent.

A pair is dropped when one of its images cannot be used. :func:`drop_reason` names why from the
error and the stage that raised it; :func:`count_drops` and :func:`describe_drops` give the counts
that ``facexplain evaluate`` prints and writes (``table.md``, ``evaluation.json``) and that an
audit's summary carries (``AuditSummary.dropped_reasons``).

Reasons (:data:`DROP_REASONS`):

- ``unreadable``: the image could not be read or decoded (missing, not an image, too large...).
- ``no_face``: the detector found no face.
- ``several_faces``: several faces, refused (``--face refuse``).
- ``not_aligned``: read, but refused by the aligner for another reason (e.g. a non-square image
  taken as an ArcFace-aligned crop).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

from ..errors import FaceNotFoundError

__all__ = ["DROP_REASONS", "DROP_REASON_TEXT", "drop_reason", "count_drops", "describe_drops"]

#: The reasons a pair is dropped, in report order.
DROP_REASONS: tuple[str, ...] = ("unreadable", "no_face", "several_faces", "not_aligned")
#: How reports name each reason.
DROP_REASON_TEXT: Mapping[str, str] = {
    "unreadable": "unreadable image",
    "no_face": "no face",
    "several_faces": "several faces refused",
    "not_aligned": "not aligned",
}

# The detectors' refusal of several faces says "<n> faces found" (alignment.detector).
_SEVERAL_FACES = re.compile(r"\b\d+ faces found\b")


def drop_reason(exc: BaseException, *, stage: Literal["load", "align"]) -> str:
    """The reason (one of :data:`DROP_REASONS`) an image failed at ``stage``: reading it
    (``"load"``: always ``unreadable``) or aligning it (``no_face``, ``several_faces`` for a
    :class:`~explainer_service.errors.FaceNotFoundError`, else ``not_aligned``)."""
    if stage == "load":
        return "unreadable"
    if isinstance(exc, FaceNotFoundError):
        return "several_faces" if _SEVERAL_FACES.search(str(exc)) else "no_face"
    return "not_aligned"


def count_drops(reasons: Iterable[str]) -> dict[str, int]:
    """Dropped pairs per reason, every reason of :data:`DROP_REASONS` present (0 when none);
    an unknown reason is counted under its own name, after the known ones."""
    counts = dict.fromkeys(DROP_REASONS, 0)
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def describe_drops(counts: Mapping[str, int]) -> str:
    """``"3 dropped (1 unreadable image, 2 no face)"``, or ``"none dropped"``."""
    total = sum(counts.values())
    if not total:
        return "none dropped"
    parts = [f"{n} {DROP_REASON_TEXT.get(reason, reason)}" for reason, n in counts.items() if n]
    return f"{total} dropped ({', '.join(parts)})"
