"""The job store on Redis: :class:`RedisJobStore`.

Every write is one Lua script, so it is atomic and conditional: it writes only while the job's
record exists (a late worker's shard cannot resurrect a deleted or expired job: NotFoundError),
and it gives each key it touches the job's absolute expiry (``PEXPIREAT`` of the record's
``expires``), so all keys of a job vanish at the same moment. Times come from Redis's clock
(``TIME``), so workers on machines with skewed clocks agree on leases.

Binary data is stored as it is (image bytes; shard states and maps as ``.npz`` archives read
back with ``allow_pickle=False``): nothing is pickled. Every call has socket timeouts
(``Settings.redis_timeout_s``; redis-py 8's defaults retry a dead server for about a minute) and a
short retry budget; a server that does not answer raises BackendUnavailableError (retryable).
Log lines name jobs, keys and sizes, never image bytes, maps or embeddings.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import redis
import redis.exceptions as rex
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ..errors import BackendError, BackendUnavailableError, InputError, NotFoundError
from ..methods.corrrise import ShardResult
from ..results import PairResult
from ..settings import Settings, get_settings
from . import keys as K
from .base import ClaimResult
from .records import (
    FINAL_STATES,
    PROGRESS_FIELDS,
    JobError,
    JobKind,
    JobProgress,
    JobRecord,
    JobState,
    encode_params,
)

__all__ = ["RedisJobStore", "shard_to_bytes", "shard_from_bytes", "redact_url"]

log = logging.getLogger(__name__)

#: Retries of one call after a connection error or timeout (with jittered backoff up to 0.5 s).
_RETRIES = 2
#: Listing reads the index in chunks of this many ids.
_LIST_CHUNK = 200

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function notify(what)
  redis.call('PUBLISH', KEYS[1] .. ':events', what)
end
"""

# KEYS: job, inputs, index.  ARGV: id, ttl_ms, kind, total, model, method, params, name1, data1, ...
_CREATE = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = now_ms()
local exp = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'kind', ARGV[3], 'state', 'queued', 'done', 0, 'total', ARGV[4],
  'model', ARGV[5], 'method', ARGV[6], 'params', ARGV[7], 'created', now, 'updated', now,
  'expires', exp, 'cancel', '0')
redis.call('PEXPIREAT', KEYS[1], exp)
if #ARGV > 7 then
  for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('PEXPIREAT', KEYS[2], exp)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], exp, ARGV[1])
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[3], last[2])
notify('created')
return 1
"""

# KEYS: job, parts...  ARGV: increment, then (key index, field, value) triples.
# Returns -1 (no job), else 1 when the first field was new, 0 when it was overwritten.
# A unit that counts progress (increment > 0) stored again bumps the record's 'rewrites'.
_PUT = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local exp = redis.call('HGET', KEYS[1], 'expires')
local added = -2
for i = 2, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  local n = redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2])
  redis.call('PEXPIREAT', key, exp)
  if added == -2 then added = n end
end
local inc = tonumber(ARGV[1])
if added == 1 and inc > 0 then redis.call('HINCRBY', KEYS[1], 'done', inc) end
if added == 0 and inc > 0 then redis.call('HINCRBY', KEYS[1], 'rewrites', 1) end
redis.call('HSET', KEYS[1], 'updated', now_ms())
notify('stored')
if added < 0 then added = 0 end
return added
"""

# KEYS: job.  ARGV: state, error status, error message.  Returns -1 (no job), else 1.
_TRANSITION = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == 'done' or cur == 'failed' or cur == 'cancelled' or cur == ARGV[1] then return 1 end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated', now)
if ARGV[1] == 'running' and not redis.call('HGET', KEYS[1], 'started') then
  redis.call('HSET', KEYS[1], 'started', now)
end
if ARGV[1] == 'done' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' then
  redis.call('HSET', KEYS[1], 'finished', now)
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'error_status', ARGV[2], 'error_message', ARGV[3])
end
notify(ARGV[1])
return 1
"""

# KEYS: job.  ARGV: done, total ('' keeps it).  done only grows.
_PROGRESS = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'done', ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'total', ARGV[2]) end
redis.call('HSET', KEYS[1], 'updated', now_ms())
notify('progress')
return 1
"""

# KEYS: job.  A queued job is cancelled at once; a running one gets the flag its worker checks.
_CANCEL = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == 'done' or cur == 'failed' or cur == 'cancelled' then return 1 end
local now = now_ms()
redis.call('HSET', KEYS[1], 'cancel', '1', 'updated', now)
if cur == 'queued' then redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', now) end
notify('cancel')
return 1
"""

# KEYS: job, leases, done-part.  ARGV: unit, worker, lease ms, done field ('' none).
# Returns -1 no job, 0 stopped (final or cancel asked), 1 claimed, 2 already done, 3 held by another.
_CLAIM = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'failed' or state == 'cancelled'
   or redis.call('HGET', KEYS[1], 'cancel') == '1' then return 0 end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then return 2 end
local now = now_ms()
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local owner, until_ms = string.match(cur, '^(.*)|(%d+)$')
  if owner and owner ~= ARGV[2] and tonumber(until_ms) > now then return 3 end
end
local until_ms = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. until_ms)
redis.call('PEXPIREAT', KEYS[2], redis.call('HGET', KEYS[1], 'expires'))
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2], 'lease_unit', ARGV[1], 'lease_expires', until_ms,
  'updated', now)
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running')
  if not redis.call('HGET', KEYS[1], 'started') then redis.call('HSET', KEYS[1], 'started', now) end
  notify('running')
end
return 1
"""

# KEYS: job.  One requeue by the stuck-job sweep: counts requeues since the job's progress
# (``done``) last moved, and touches ``updated``.  Returns -1 (no job), else that count.
_REQUEUED = _NOW + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local done = redis.call('HGET', KEYS[1], 'done') or '0'
local n = 1
if redis.call('HGET', KEYS[1], 'requeue_done') == done then
  n = tonumber(redis.call('HGET', KEYS[1], 'requeues') or '0') + 1
end
redis.call('HSET', KEYS[1], 'requeues', n, 'requeue_done', done, 'updated', now_ms())
return n
"""

# KEYS: job, leases.  ARGV: unit, worker.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local owner = string.match(cur, '^(.*)|%d+$')
  if owner == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
end
return 1
"""

# KEYS: index, every key of the job.  ARGV: id.  Returns the number of keys removed.
_DELETE = """
local n = 0
for i = 2, #KEYS do n = n + redis.call('DEL', KEYS[i]) end
redis.call('ZREM', KEYS[1], ARGV[1])
if n > 0 then redis.call('PUBLISH', KEYS[2] .. ':events', 'deleted') end
return n
"""

# KEYS: index.  Drops the ids whose expiry has passed.
_PRUNE = _NOW + """
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
"""


def _bytes(value: object) -> bytes:
    """A reply value as bytes (the client answers bytes: ``decode_responses=False``)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise BackendError(f"unexpected reply from the job store: {type(value).__name__}")


def _hash(value: object) -> dict[bytes, bytes]:
    """A hash reply (HGETALL) as bytes to bytes."""
    if not isinstance(value, dict):
        raise BackendError(f"unexpected reply from the job store: {type(value).__name__}")
    return {_bytes(k): _bytes(v) for k, v in value.items()}


def redact_url(url: str) -> str:
    """``redis://host:port/db`` without user or password (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:  # not a URL: shown as given, unless it may hold a secret
            return "<malformed Redis URL>" if "@" in url else url
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<malformed Redis URL>"


def shard_to_bytes(shard: ShardResult) -> bytes:
    """A shard's state (:meth:`ShardResult.state`) as ``.npz`` bytes (no pickled objects)."""
    buf = io.BytesIO()
    savez: Any = np.savez  # numpy's stubs do not type **arrays
    savez(buf, **shard.state())
    return buf.getvalue()


def shard_from_bytes(data: bytes, where: str = "shard") -> ShardResult:
    """Inverse of :func:`shard_to_bytes`; InputError for damaged bytes."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise InputError(f"{where}: not an .npz archive")
            state = {key: archive[key] for key in archive.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputError(f"{where}: not a readable shard archive ({str(e)[:120]})") from None
    return ShardResult.from_state(state)


class RedisJobStore:
    """The :class:`~explainer_service.store.base.JobStore` on a Redis server.

    Args:
        url: ``redis://[:password@]host:port/db`` (default: ``Settings.redis_url``).
        ttl_s: seconds every key of a new job lives (default: ``Settings.job_ttl_s``, 24 h).
        timeout_s: socket (connect and read) timeout of each call (default:
            ``Settings.redis_timeout_s``).
        prefix: namespace of every key (:data:`keys.DEFAULT_PREFIX`).
        settings: where the defaults come from (default: :func:`get_settings`).
        client: an existing ``redis.Redis`` (bytes replies) instead of one built from ``url``.

    Use as a context manager (or call :meth:`close`). Safe to share between threads; create one
    per process after a fork (the connection pool does not survive a fork safely).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        ttl_s: float | None = None,
        timeout_s: float | None = None,
        prefix: str = K.DEFAULT_PREFIX,
        settings: Settings | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.url = url or self.settings.redis_url
        self.ttl_s = float(self.settings.job_ttl_s if ttl_s is None else ttl_s)
        if not self.ttl_s > 0 or self.ttl_s > 10 * 365 * 86400:
            raise InputError(f"job TTL must be > 0 s and at most 10 years, got {ttl_s!r}")
        self.timeout_s = float(self.settings.redis_timeout_s if timeout_s is None else timeout_s)
        if not self.timeout_s > 0:
            raise InputError(f"Redis timeout must be > 0 s, got {timeout_s!r}")
        self.prefix = K.check_prefix(prefix)
        self._where = redact_url(self.url)
        if client is None:
            try:
                client = redis.Redis.from_url(
                    self.url,
                    socket_timeout=self.timeout_s,
                    socket_connect_timeout=self.timeout_s,
                    retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), _RETRIES),
                    health_check_interval=30,
                    decode_responses=False,
                )
            except ValueError as e:
                raise InputError(f"Redis URL {self._where}: {e}") from None
        self._r = client
        self._create = self._r.register_script(_CREATE)
        self._put = self._r.register_script(_PUT)
        self._transition = self._r.register_script(_TRANSITION)
        self._progress = self._r.register_script(_PROGRESS)
        self._cancel = self._r.register_script(_CANCEL)
        self._claim = self._r.register_script(_CLAIM)
        self._release = self._r.register_script(_RELEASE)
        self._requeued = self._r.register_script(_REQUEUED)
        self._delete = self._r.register_script(_DELETE)
        self._prune = self._r.register_script(_PRUNE)

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _backend(self, what: str) -> Iterator[None]:
        """Redis failures as the error tree's: unreachable/slow -> BackendUnavailableError."""
        try:
            yield
        except (rex.ConnectionError, rex.TimeoutError, TimeoutError, ConnectionError) as e:
            raise BackendUnavailableError(
                f"the job store at {self._where} is not answering ({what}: {type(e).__name__}); "
                "is Redis running? (FACEXPLAIN_REDIS_URL)"
            ) from None
        except rex.ResponseError as e:
            text = str(e)
            if text.startswith("OOM"):
                raise BackendError(
                    f"the job store at {self._where} is full (maxmemory reached, noeviction): "
                    "delete jobs or give Redis more memory"
                ) from None
            raise BackendError(f"the job store at {self._where} refused {what}: {text[:200]}") from None
        except rex.RedisError as e:
            raise BackendError(f"the job store at {self._where} failed ({what}): {type(e).__name__}") from None

    def _jk(self, job_id: str) -> str:
        return K.job_key(job_id, self.prefix)

    def _pk(self, job_id: str, part: str) -> str:
        return K.part_key(job_id, part, self.prefix)

    @staticmethod
    def _missing(job_id: str) -> NotFoundError:
        return NotFoundError(f"no job {job_id} (unknown, expired or deleted)")

    def _run(self, script: Any, what: str, keys: Sequence[str], args: Sequence[Any], job_id: str) -> int:
        with self._backend(what):
            code = int(script(keys=list(keys), args=list(args)))
        if code == -1:
            raise self._missing(job_id)
        return code

    def ping(self) -> None:
        """BackendUnavailableError unless the server answers."""
        with self._backend("PING"):
            self._r.ping()

    def close(self) -> None:
        """Close the connections (the store can still be used: they reopen on demand)."""
        self._r.close()

    def __enter__(self) -> RedisJobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs -----------------------------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        kind: JobKind | str,
        *,
        model: str = "",
        method: str = "",
        params: Mapping[str, Any] | None = None,
        total: int = 0,
        inputs: Mapping[str, bytes] | None = None,
        ttl_s: float | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job with its uploaded images (``inputs``: name -> bytes), or find the
        one of that id: ``(record, created)``; ``created`` False means the job existed (its
        record is returned unchanged: the cache hit of a content-hash id)."""
        K.check_job_id(job_id)
        kind = JobKind(kind)
        ttl = self.ttl_s if ttl_s is None else float(ttl_s)
        if not ttl > 0:
            raise InputError(f"job TTL must be > 0 s, got {ttl_s!r}")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise InputError(f"job total must be an integer >= 0, got {total!r}")
        args: list[Any] = [job_id, max(1, round(ttl * 1000)), kind.value, total, model, method,
                           encode_params(params or {})]
        size = 0
        for name, data in (inputs or {}).items():
            K.check_field_name(name)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputError(f"input {name!r} must be bytes, got {type(data).__name__}")
            args += [name, bytes(data)]
            size += len(data)
        keys = [self._jk(job_id), self._pk(job_id, "inputs"), K.index_key(self.prefix)]
        with self._backend("create job"):
            created = bool(self._create(keys=keys, args=args))
        if created:
            log.info("job %s created (%s, %d input(s), %d bytes, ttl %.0f s)", job_id, kind.value,
                     len(inputs or {}), size, ttl)
        return self.get_job(job_id), created

    def find_job(self, job_id: str) -> JobRecord | None:
        """The job's record, or None when there is no such job."""
        key = self._jk(job_id)
        with self._backend("read job"):
            raw = _hash(self._r.hgetall(key))
        if not raw:
            return None
        return JobRecord.from_hash(job_id, raw)

    def get_job(self, job_id: str) -> JobRecord:
        """The job's record; NotFoundError when there is no such job."""
        record = self.find_job(job_id)
        if record is None:
            raise self._missing(job_id)
        return record

    def list_jobs(
        self,
        *,
        limit: int = 100,
        states: Sequence[JobState | str] | None = None,
        kind: JobKind | str | None = None,
    ) -> list[JobRecord]:
        """Up to ``limit`` live jobs, the newest (latest expiry) first, optionally only those in
        ``states`` or of ``kind``. Expired and deleted ids are pruned from the index on the way."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InputError(f"limit must be an integer >= 0, got {limit!r}")
        wanted = None if states is None else {JobState(s) for s in states}
        want_kind = None if kind is None else JobKind(kind)
        out: list[JobRecord] = []
        with self._backend("list jobs"):
            for job_id, raw in self._indexed(lambda pipe, key: pipe.hgetall(key), lambda: len(out) >= limit):
                record = JobRecord.from_hash(job_id, _hash(raw))
                if (wanted is None or record.state in wanted) and (want_kind is None or record.kind == want_kind):
                    out.append(record)
        return out[:limit]

    def _indexed(self, read: Any, enough: Any = lambda: False) -> Iterator[tuple[str, Any]]:
        """``(job id, read(pipeline, record key)'s answer)`` for the live jobs of the index, newest
        first, in chunks, until ``enough()``; ids of jobs gone (expired, deleted) are pruned."""
        index = K.index_key(self.prefix)
        start = 0
        self._prune(keys=[index], args=[])
        while not enough():
            ids = [_bytes(i).decode() for i in self._r.zrevrange(index, start, start + _LIST_CHUNK - 1)]
            if not ids:
                return
            start += len(ids)
            pipe = self._r.pipeline(transaction=False)
            for job_id in ids:
                read(pipe, self._jk(job_id))
            gone = []
            for job_id, raw in zip(ids, pipe.execute(), strict=True):
                if not raw:
                    gone.append(job_id)
                    continue
                yield job_id, raw
            if gone:
                self._r.zrem(index, *gone)
                start -= len(gone)

    def count_by_state(self) -> dict[JobState, int]:
        """How many live jobs are in each state (``facexplain status``, the API's job limit): one
        field per job is read, so the cost does not grow with the jobs' requests."""
        counts = dict.fromkeys(JobState, 0)
        with self._backend("count jobs"):
            for _, raw in self._indexed(lambda pipe, key: pipe.hget(key, "state")):
                with contextlib.suppress(ValueError):
                    counts[JobState(_bytes(raw).decode())] += 1
        return counts

    def job_progress(self, job_id: str) -> JobProgress:
        """The job's state, progress and creation time without its parameters (a worker's check
        after each unit); NotFoundError when there is no such job."""
        with self._backend("read job progress"):
            values = self._r.hmget(self._jk(job_id), list(PROGRESS_FIELDS))
        if all(v is None for v in values):
            raise self._missing(job_id)
        return JobProgress.from_fields(job_id, [None if v is None else _bytes(v) for v in values])

    def set_state(self, job_id: str, state: JobState | str, *, error: JobError | None = None) -> JobRecord:
        """Move the job to ``state`` (with ``error`` when failing); a job in a final state stays
        there (the returned record says where it is)."""
        state = JobState(state)
        if state is JobState.FAILED and error is None:
            raise InputError("a failed job needs an error")
        status, message = ("", "") if error is None else (error.status, error.message[:2000])
        self._run(self._transition, "set state", [self._jk(job_id)], [state.value, status, message], job_id)
        record = self.get_job(job_id)
        if record.state is state:
            log.info("job %s %s%s", job_id, state.value, "" if error is None else f" ({error.status})")
        return record

    def report_progress(self, job_id: str, done: int, *, total: int | None = None) -> None:
        """Set progress (``done`` only grows; ``total`` None keeps it). Shards and pairs count
        themselves when stored; this is for the other methods' single step."""
        for name, value in (("done", done), ("total", total)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"progress {name} must be an integer >= 0, got {value!r}")
        self._run(self._progress, "report progress", [self._jk(job_id)],
                  [done, "" if total is None else total], job_id)

    def request_cancel(self, job_id: str) -> JobRecord:
        """Ask for the job to stop: a queued job is cancelled at once, a running one when its
        worker next checks :meth:`cancel_requested`; a finished job is unchanged."""
        self._run(self._cancel, "cancel job", [self._jk(job_id)], [], job_id)
        log.info("job %s: cancel requested", job_id)
        return self.get_job(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the worker should stop: a cancel was asked for, the job is in a final state, or
        it no longer exists (deleted or expired)."""
        with self._backend("read job"):
            cancel, state = self._r.hmget(self._jk(job_id), ["cancel", "state"])
        if state is None:
            return True
        return cancel == b"1" or JobState(_bytes(state).decode()) in FINAL_STATES

    def claim(self, job_id: str, unit: str, worker: str, *, lease_s: float) -> ClaimResult:
        """Lease ``unit`` of the job (``keys.lease_unit``: ``"shard:0-64"``, ``"pair:3"``,
        ``"job"``...) to ``worker`` for ``lease_s`` seconds (again by the same worker: renew).

        CLAIMED; DONE when the unit's shard or pair is already stored (a redelivered task skips
        it); HELD while another worker's lease on it is live; STOPPED when the job is final or a
        cancel was asked for. A claim moves a queued job to running.
        """
        if not isinstance(worker, str) or not worker or len(worker) > 200:
            raise InputError("worker id must be a non-empty string of at most 200 characters")
        if not isinstance(lease_s, (int, float)) or not lease_s > 0:
            raise InputError(f"lease must be > 0 s, got {lease_s!r}")
        done_part, done_field = self._unit_done(job_id, unit)
        keys = [self._jk(job_id), self._pk(job_id, "leases"), done_part]
        code = self._run(self._claim, "claim", keys, [unit, worker, max(1, round(lease_s * 1000)), done_field],
                         job_id)
        return {0: ClaimResult.STOPPED, 1: ClaimResult.CLAIMED, 2: ClaimResult.DONE, 3: ClaimResult.HELD}[code]

    def _unit_done(self, job_id: str, unit: str) -> tuple[str, str]:
        """(key, field) whose existence means ``unit`` is finished ("" field: none)."""
        if not isinstance(unit, str):
            raise InputError(f"lease unit must be a string, got {type(unit).__name__}")
        kind, _, rest = unit.partition(":")
        if kind == "shard":
            lo, hi = K.parse_shard_field(rest)
            return self._pk(job_id, "shards"), K.shard_field(lo, hi)
        if kind == "pair" and rest.isdigit():
            return self._pk(job_id, "pairs"), K.pair_field(int(rest))
        if unit in ("job", "merge"):
            return self._jk(job_id), ""
        raise InputError(f"unknown lease unit {unit!r} (job, merge, shard:<lo>-<hi> or pair:<i>)")

    def mark_requeued(self, job_id: str) -> int:
        """Record that the stuck-job sweep (``worker.sweep``) sent the job's tasks again; returns
        how many times it did so since the job's progress last moved (1 after progress). The
        record's ``extra`` keeps ``requeues``; ``updated`` is touched."""
        return self._run(self._requeued, "mark requeued", [self._jk(job_id)], [], job_id)

    def release(self, job_id: str, unit: str, worker: str) -> None:
        """Give up ``worker``'s lease on ``unit`` (another worker's lease is left alone)."""
        self._unit_done(job_id, unit)
        self._run(self._release, "release", [self._jk(job_id), self._pk(job_id, "leases")], [unit, worker], job_id)

    def delete_job(self, job_id: str) -> int:
        """Remove every key of the job at once (record, images, shards, rows, maps, leases) and its
        index entry: the number of keys removed (the index entry not counted); NotFoundError when
        nothing of it exists."""
        keys = [K.index_key(self.prefix), *K.job_keys(job_id, self.prefix)]
        with self._backend("delete job"):
            removed = int(self._delete(keys=keys, args=[job_id]))
        if removed == 0:
            raise self._missing(job_id)
        log.info("job %s deleted (%d keys)", job_id, removed)
        return removed

    # -- data -----------------------------------------------------------------------------------

    def _put_fields(
        self, job_id: str, what: str, fields: Sequence[tuple[str, str, bytes]], increment: int = 0
    ) -> bool:
        parts = sorted({part for part, _, _ in fields})
        keys = [self._jk(job_id)] + [self._pk(job_id, p) for p in parts]
        args: list[Any] = [increment]
        for part, name, value in fields:
            args += [parts.index(part) + 2, name, value]
        added = self._run(self._put, what, keys, args, job_id) == 1
        log.debug("job %s: %s stored (%d bytes%s)", job_id, what, sum(len(v) for _, _, v in fields),
                  "" if added else ", rewritten")
        return added

    def put_inputs(self, job_id: str, inputs: Mapping[str, bytes]) -> None:
        """Add uploaded images (name -> bytes) to an existing job (an audit's pairs in chunks)."""
        fields = []
        for name, data in inputs.items():
            K.check_field_name(name)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputError(f"input {name!r} must be bytes, got {type(data).__name__}")
            fields.append(("inputs", name, bytes(data)))
        if fields:
            self._put_fields(job_id, f"{len(fields)} input(s)", fields)

    def get_input(self, job_id: str, name: str) -> bytes:
        """An uploaded image's bytes; NotFoundError when the job or the input is missing."""
        K.check_field_name(name)
        with self._backend("read input"):
            data = self._r.hget(self._pk(job_id, "inputs"), name)
        if data is None:
            self.get_job(job_id)
            raise NotFoundError(f"job {job_id} has no input {name!r}")
        return _bytes(data)

    def input_names(self, job_id: str) -> list[str]:
        """Names of the job's uploaded images, sorted."""
        with self._backend("read inputs"):
            names = self._r.hkeys(self._pk(job_id, "inputs"))
        return sorted(_bytes(n).decode() for n in names)

    def put_shard(self, job_id: str, shard: ShardResult) -> bool:
        """Store a CorrRISE shard (one mask range) under its range; progress grows by its masks
        the first time only. True when it was new (a rerun overwrites the same field)."""
        if not isinstance(shard, ShardResult):
            raise InputError(f"put_shard needs a ShardResult, got {type(shard).__name__}")
        if len(shard.ranges) != 1:
            raise InputError(f"a stored shard covers one mask range, this one {len(shard.ranges)}")
        lo, hi = shard.ranges[0]
        field = K.shard_field(lo, hi)
        return self._put_fields(job_id, f"shard {field}", [("shards", field, shard_to_bytes(shard))], shard.masks)

    def get_shards(self, job_id: str) -> list[ShardResult]:
        """The job's stored shards, by mask range start."""
        with self._backend("read shards"):
            raw = _hash(self._r.hgetall(self._pk(job_id, "shards")))
        found = sorted((K.parse_shard_field(f), data) for f, data in raw.items())
        return [shard_from_bytes(data, f"job {job_id} shard {lo}-{hi}") for (lo, hi), data in found]

    def stored_shards(self, job_id: str) -> list[tuple[int, int]]:
        """The mask ranges [lo, hi) of the job's stored shards, sorted (their data not read)."""
        with self._backend("read shard names"):
            names = self._r.hkeys(self._pk(job_id, "shards"))
        return sorted(K.parse_shard_field(n) for n in names)

    def merged_shard(self, job_id: str) -> ShardResult | None:
        """The stored shards merged in mask order (the same result however many workers computed
        them); None before the first shard."""
        merged: ShardResult | None = None
        for shard in self.get_shards(job_id):
            merged = shard if merged is None else merged.merge(shard)
        return merged

    def put_pair(self, job_id: str, index: int, row: Mapping[str, Any], maps: bytes | None = None) -> bool:
        """Store an audit pair's row (plain JSON values) and, when kept, its maps (``.npz`` bytes);
        progress grows by one the first time only. True when the row was new."""
        field = K.pair_field(index)
        try:
            text = json.dumps(dict(row), sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise InputError(f"pair row {index} must be plain JSON values: {e}") from None
        fields = [("pairs", field, text)]
        if maps is not None:
            fields.append(("pairmaps", field, bytes(maps)))
        return self._put_fields(job_id, f"pair {field}", fields, 1)

    def get_pairs(self, job_id: str, *, offset: int = 0, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """Rows of pairs ``offset`` .. ``offset + limit - 1`` that are stored, as (index, row)."""
        for name, value in (("offset", offset), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        if limit == 0:
            return []
        fields = [K.pair_field(i) for i in range(offset, offset + limit)]
        with self._backend("read pairs"):
            values = self._r.hmget(self._pk(job_id, "pairs"), fields)
        return [(offset + i, json.loads(v)) for i, v in enumerate(values) if v is not None]

    def get_pair_maps(self, job_id: str, index: int) -> bytes | None:
        """An audit pair's kept maps (``.npz`` bytes), or None."""
        with self._backend("read pair maps"):
            data = self._r.hget(self._pk(job_id, "pairmaps"), K.pair_field(index))
        return None if data is None else _bytes(data)

    def put_result(self, job_id: str, result: PairResult) -> None:
        """Store an explained pair: its summary (``to_dict``) and arrays (``maps_to_bytes``)."""
        if not isinstance(result, PairResult):
            raise InputError(f"put_result needs a PairResult, got {type(result).__name__}")
        summary = json.dumps(result.to_dict(), sort_keys=True).encode()
        self._put_fields(job_id, "result", [("result", "summary", summary), ("result", "maps", result.maps_to_bytes())])

    def get_result(self, job_id: str) -> PairResult | None:
        """The stored result with its maps (exact float32), or None while there is none (the job
        exists; NotFoundError otherwise)."""
        with self._backend("read result"):
            summary, maps = self._r.hmget(self._pk(job_id, "result"), ["summary", "maps"])
        if summary is None or maps is None:
            self.get_job(job_id)
            return None
        return PairResult.from_bytes(json.loads(summary), _bytes(maps), where=f"job {job_id} maps",
                                     summary_where=f"job {job_id} summary")

    def put_summary(self, job_id: str, summary: Mapping[str, Any]) -> None:
        """Store an audit's summary (plain JSON values)."""
        try:
            text = json.dumps(dict(summary), sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise InputError(f"a job summary must be plain JSON values: {e}") from None
        self._put_fields(job_id, "summary", [("result", "summary", text)])

    def get_summary(self, job_id: str) -> dict[str, Any] | None:
        """The stored summary (an audit's, or an explained pair's ``to_dict``), or None while there
        is none (NotFoundError when the job does not exist)."""
        with self._backend("read summary"):
            text = self._r.hget(self._pk(job_id, "result"), "summary")
        if text is None:
            self.get_job(job_id)
            return None
        value = json.loads(text)
        if not isinstance(value, dict):
            raise BackendError(f"job {job_id}: damaged summary")
        return value
