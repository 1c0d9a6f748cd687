"""The job and map store: our own job records, uploaded images, CorrRISE shards, audit rows and
results in Redis, with retention; and the embedded redis-server that holds them on one machine.

Modules: ``keys`` (deterministic key names, content-hash job ids, event channels: pure),
``records`` (the job record, its progress), ``base`` (the :class:`JobStore` protocol,
:class:`ClaimResult`), ``redis_store`` (:class:`RedisJobStore`: every write that changes a job
publishes on the job's channel), ``faces`` (the faces the API aligned, kept with an explain job),
``events`` (:class:`~.events.JobEvents`: one pub/sub listener that wakes an API's WatchJob
calls), ``server`` (:class:`EmbeddedRedis`, :func:`find_redis_server`).

How the API and the workers use it::

    store = RedisJobStore(settings.redis_url)            # one per process, after any fork

    # API, Explain: the id is a content hash, so asking again is a cache hit
    job_id = content_job_id("explain", [img_a, img_b], model=m, model_sha256=sha,
                            method="corrrise", params=params)
    if force or a failed/cancelled job of that id exists: # recompute: drop the old job whole
        with contextlib.suppress(NotFoundError):
            store.delete_job(job_id)
    record, created = store.create_job(job_id, "explain", model=m, method="corrrise",
                                       params=params, total=n_masks,
                                       inputs={"a": img_a, "b": img_b, **faces_to_inputs(...)})
    if created:
        enqueue tasks with the id only (never images): one per mask shard [lo, hi)

    # worker, one shard task (Celery acks late; redelivery and duplicates are harmless)
    match store.claim(job_id, lease_unit("shard", lo=lo, hi=hi), worker_id, lease_s=...):
        case ClaimResult.DONE | ClaimResult.STOPPED: return      # stored already / cancelled
        case ClaimResult.HELD: retry later (another worker holds a live lease)
    faces = faces_from_inputs(...)   # the API's aligned faces; else align store.get_input(job_id, "a"/"b")
    shard = corrrise.run_shard(chip_a, chip_b, lo, hi, progress=...)   # check
    store.cancel_requested(job_id) between batches; renew the lease with claim() again
    store.put_shard(job_id, shard)     # same field on a rerun; progress counts it once
    # the last shard (record.done == record.total), or a chained merge task:
    merged = store.merged_shard(job_id)                  # mask order: same maps for 1 or K workers
    store.put_result(job_id, PairResult.from_explanation(corrrise.finish(merged), ...))
    store.set_state(job_id, "done")     # failures: set_state(job_id, "failed",
                                        #   error=JobError.from_exception(exc)) once retries run out

    # worker, audit pair i: claim(job_id, lease_unit("pair", index=i), ...), then
    store.put_pair(job_id, i, row, maps=archive_or_None); job_progress(job_id) (a few fields,
    not the pair list); after the last pair put_summary(job_id, summary)

    # API, WatchJob: wait for the job's event (JobEvents; a poll as fallback), get_job (state,
    # done/total) and, for CorrRISE partial maps, merged_shard -> corrrise.finish (the running
    # maps over the masks done so far)
    # API, GetResult: get_result (None: not finished) / get_summary + get_pairs(offset, limit)
    # API, CancelJob: request_cancel;  DeleteJob: delete_job;  ListJobs: list_jobs
    # facexplain status, the API's job limit: count_by_state() (one field per job)

Retention: every key of a job expires at ``created + ttl`` (``Settings.job_ttl_s``, default
24 h, FACEXPLAIN_JOB_TTL), together; ``delete_job`` removes them all at once; the listing index is
pruned of expired and deleted ids and itself expires with its latest job. Errors: NotFoundError
(unknown, expired or deleted job), InputError (malformed id or value), BackendUnavailableError
(retryable: Redis not answering), BackendError (Redis refused, e.g. full).
"""

from __future__ import annotations

from .base import ClaimResult, JobStore
from .keys import DEFAULT_PREFIX, content_job_id, job_keys, lease_unit
from .records import FINAL_STATES, JobError, JobKind, JobProgress, JobRecord, JobState, Lease
from .redis_store import RedisJobStore, shard_from_bytes, shard_to_bytes
from .server import EmbeddedRedis, find_redis_server, stop_pid

__all__ = [
    "ClaimResult",
    "JobStore",
    "DEFAULT_PREFIX",
    "content_job_id",
    "job_keys",
    "lease_unit",
    "FINAL_STATES",
    "JobError",
    "JobKind",
    "JobRecord",
    "JobProgress",
    "JobState",
    "Lease",
    "RedisJobStore",
    "shard_from_bytes",
    "shard_to_bytes",
    "EmbeddedRedis",
    "find_redis_server",
    "stop_pid",
]
