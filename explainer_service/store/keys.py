"""Deterministic Redis keys of the job store, and content-hash job ids: pure functions.

Every key of one job shares the hash tag ``{<id>}`` (Redis Cluster puts them in one slot, so one
Lua script or one ``DEL`` reaches them all) and the namespace prefix (``fx`` by default), so the
store's keys never collide with Celery's (``celery``, ``_kombu.*``, ``unacked``) in one database::

    fx:job:{<id>}            HASH  the job record (state, progress, lease, error, timestamps...)
    fx:job:{<id>}:inputs     HASH  name -> uploaded image bytes ("a", "b"; audits "3a", "3b"...)
    fx:job:{<id>}:shards     HASH  "<lo>-<hi>" -> a CorrRISE shard's state (.npz bytes)
    fx:job:{<id>}:pairs      HASH  "<i>" -> an audit pair's row (JSON)
    fx:job:{<id>}:pairmaps   HASH  "<i>" -> an audit pair's maps (.npz bytes), when kept
    fx:job:{<id>}:result     HASH  "summary" (JSON), "maps" (.npz bytes)
    fx:job:{<id>}:leases     HASH  unit ("shard:0-64", "pair:3", "job") -> "<worker>|<expiry ms>"
    fx:jobs                  ZSET  job id -> its expiry (ms since the epoch): the listing index
    fx:job:{<id>}:events     pub/sub channel: a word ("running", "stored", "done"...) each time a
                             write changes the job (published by the writing script itself)

One hash per kind of data (not one key per shard or pair) keeps a job at a fixed, small set of
keys: each carries the job's expiry, :func:`job_keys` names them all for a delete, and nothing
needs a ``SCAN``. A rewrite of the same shard or pair sets the same field (idempotent).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError

__all__ = [
    "DEFAULT_PREFIX",
    "JOB_ID_PATTERN",
    "JOB_PARTS",
    "check_job_id",
    "check_prefix",
    "job_key",
    "part_key",
    "job_keys",
    "index_key",
    "events_channel",
    "events_pattern",
    "job_id_of_channel",
    "shard_field",
    "parse_shard_field",
    "pair_field",
    "lease_unit",
    "check_field_name",
    "content_job_id",
]

#: Namespace of every key of the store (``FACEXPLAIN``'s jobs, not Celery's).
DEFAULT_PREFIX = "fx"
#: A job id: letters, digits, ``_`` and ``-`` (a content hash is 64 hex digits), at most 128.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
#: The per-job keys besides the record, in :func:`job_keys` order.
JOB_PARTS = ("inputs", "shards", "pairs", "pairmaps", "result", "leases")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_job_id(job_id: object) -> str:
    """``job_id`` if it is a well-formed id; InputError naming it otherwise (an id never contains
    the key separators ``:``, ``{``, ``}``)."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        shown = repr(job_id) if len(repr(job_id)) <= 80 else repr(job_id)[:77] + "..."
        raise InputError(f"job id {shown} is malformed (1 to 128 letters, digits, '_' or '-')")
    return job_id


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is a usable key namespace (1 to 32 of letters, digits, ``_.-``)."""
    if not isinstance(prefix, str) or not _PREFIX_PATTERN.match(prefix):
        raise InputError(f"key prefix {prefix!r} is malformed (1 to 32 letters, digits, '_', '.' or '-')")
    return prefix


def job_key(job_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The job record's key: ``fx:job:{<id>}``."""
    return f"{check_prefix(prefix)}:job:{{{check_job_id(job_id)}}}"


def part_key(job_id: str, part: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The key of one part of a job (one of :data:`JOB_PARTS`): ``fx:job:{<id>}:<part>``."""
    if part not in JOB_PARTS:
        raise InputError(f"unknown job part {part!r} (known: {', '.join(JOB_PARTS)})")
    return f"{job_key(job_id, prefix)}:{part}"


def job_keys(job_id: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, ...]:
    """Every key of a job: the record first, then :data:`JOB_PARTS` (the listing index is shared
    by all jobs and not among them)."""
    return (job_key(job_id, prefix),) + tuple(part_key(job_id, p, prefix) for p in JOB_PARTS)


def index_key(prefix: str = DEFAULT_PREFIX) -> str:
    """The listing index of all jobs: ``fx:jobs``."""
    return f"{check_prefix(prefix)}:jobs"


def events_channel(job_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The pub/sub channel of a job's changes: ``fx:job:{<id>}:events`` (a channel, not a key)."""
    return f"{job_key(job_id, prefix)}:events"


def events_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """The ``PSUBSCRIBE`` pattern of every job's channel under ``prefix``: ``fx:job:*:events``
    (a prefix and an id never hold a glob character)."""
    return f"{check_prefix(prefix)}:job:*:events"


def job_id_of_channel(channel: str | bytes, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The job id of an :func:`events_channel` name under ``prefix``; None for any other name."""
    text = channel.decode("ascii", "replace") if isinstance(channel, bytes) else channel
    head, tail = f"{check_prefix(prefix)}:job:{{", "}:events"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    job_id = text[len(head) : len(text) - len(tail)]
    return job_id if JOB_ID_PATTERN.match(job_id) else None


def _index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def shard_field(lo: int, hi: int) -> str:
    """The field of the shard of masks [lo, hi): ``"<lo>-<hi>"``."""
    lo, hi = _index(lo, "shard start"), _index(hi, "shard stop")
    if hi <= lo:
        raise InputError(f"a shard must be masks [lo, hi) with lo < hi, got [{lo}, {hi})")
    return f"{lo}-{hi}"


def parse_shard_field(field: str | bytes) -> tuple[int, int]:
    """Inverse of :func:`shard_field`; InputError for anything else."""
    text = field.decode("ascii", "replace") if isinstance(field, bytes) else field
    m = re.fullmatch(r"(\d{1,18})-(\d{1,18})", text)
    if m is None or int(m.group(2)) <= int(m.group(1)):
        raise InputError(f"not a shard field: {text[:40]!r}")
    return int(m.group(1)), int(m.group(2))


def pair_field(index: int) -> str:
    """The field of audit pair ``index``: its decimal digits."""
    return str(_index(index, "pair index"))


def lease_unit(kind: str, *, lo: int | None = None, hi: int | None = None, index: int | None = None) -> str:
    """The name of a unit of work a worker leases: ``"job"``, ``"merge"``, ``"shard:<lo>-<hi>"``
    or ``"pair:<i>"``."""
    if kind in ("job", "merge") and lo is None and hi is None and index is None:
        return kind
    if kind == "shard" and lo is not None and hi is not None and index is None:
        return f"shard:{shard_field(lo, hi)}"
    if kind == "pair" and index is not None and lo is None and hi is None:
        return f"pair:{pair_field(index)}"
    raise InputError(f"a lease unit is job, merge, shard (lo, hi) or pair (index), got {kind!r}")


def check_field_name(name: object, what: str = "input name") -> str:
    """A field name of ours (``a``, ``3b``...): 1 to 64 of letters, digits, ``_.-``."""
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise InputError(f"{what} {name!r} is malformed (1 to 64 letters, digits, '_', '.' or '-')")
    return name


def _canonical(value: Any) -> bytes:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise InputError(f"job parameters must be plain JSON values: {e}") from None


def content_job_id(
    kind: str,
    images: Sequence[bytes],
    *,
    model: str,
    model_sha256: str | None,
    method: str,
    params: Mapping[str, Any],
) -> str:
    """The id of a job as a content hash: SHA-256 (64 hex digits) of the kind, every image's bytes
    (in order), the model and its weights' SHA-256, the method and the parameters (canonical JSON:
    key order does not matter). Asking again for the same work gives the same id.

    Each part is length-prefixed, so no two different requests share a byte stream.
    """
    h = hashlib.sha256()

    def part(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)

    part(b"facexplain.job/1")
    part(kind.encode())
    part(len(images).to_bytes(8, "big"))
    for img in images:
        if not isinstance(img, (bytes, bytearray, memoryview)):
            raise InputError(f"job images must be bytes, got {type(img).__name__}")
        part(hashlib.sha256(img).digest())
    part(model.encode())
    part((model_sha256 or "").encode())
    part(method.encode())
    part(_canonical(dict(params)))
    return h.hexdigest()
