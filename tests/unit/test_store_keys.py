"""The job store's pure parts: key names (deterministic, one hash tag per job, no collisions, ids
and fields checked), content-hash job ids, the job record's hash encoding, the retention settings."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explainer_service.errors import BackendError, InputError, NotFoundError, grpc_status
from explainer_service.settings import DEFAULT_JOB_TTL_S, Settings
from explainer_service.store import keys as K
from explainer_service.store.records import JobError, JobKind, JobRecord, JobState, encode_params

ID = "a" * 64


def test_keys_of_a_job_are_fixed_and_share_one_hash_tag():
    assert K.job_key(ID) == f"fx:job:{{{ID}}}"
    assert K.job_keys(ID) == (
        f"fx:job:{{{ID}}}",
        f"fx:job:{{{ID}}}:inputs",
        f"fx:job:{{{ID}}}:shards",
        f"fx:job:{{{ID}}}:pairs",
        f"fx:job:{{{ID}}}:pairmaps",
        f"fx:job:{{{ID}}}:result",
        f"fx:job:{{{ID}}}:leases",
    )
    tags = {re.search(r"\{([^}]*)\}", k).group(1) for k in K.job_keys(ID)}  # type: ignore[union-attr]
    assert tags == {ID}  # Redis Cluster: one slot for all keys of a job
    assert K.index_key() == "fx:jobs"
    assert K.job_keys("x", prefix="t1")[0] == "t1:job:{x}"
    assert K.part_key("x", "shards", prefix="t1") == "t1:job:{x}:shards"


def test_no_two_jobs_share_a_key():
    a, b = set(K.job_keys("ab")), set(K.job_keys("ab-c"))
    assert not a & b
    assert K.index_key() not in a


@pytest.mark.parametrize("bad", ["", "a:b", "{x}", "a b", "é", "x" * 129, None, 3, b"ab"])
def test_malformed_job_ids_are_input_errors(bad):
    with pytest.raises(InputError, match="job id"):
        K.job_key(bad)


@pytest.mark.parametrize("bad", ["", "a:b", "x" * 33, None])
def test_malformed_prefixes_are_refused(bad):
    with pytest.raises(InputError, match="prefix"):
        K.index_key(bad)


def test_unknown_part_is_refused():
    with pytest.raises(InputError, match="unknown job part"):
        K.part_key(ID, "images")


def test_shard_fields_round_trip_and_reject_empty_ranges():
    assert K.shard_field(0, 64) == "0-64"
    assert K.parse_shard_field(b"128-500") == (128, 500)
    for lo, hi in [(5, 5), (6, 5), (-1, 3)]:
        with pytest.raises(InputError):
            K.shard_field(lo, hi)
    for text in ["5-5", "a-b", "1-2-3", "", "-1-2", "1" * 30 + "-2"]:
        with pytest.raises(InputError, match="shard field"):
            K.parse_shard_field(text)


@given(st.integers(0, 10**12), st.integers(1, 10**6))
def test_shard_field_parse_inverts_format(lo, n):
    assert K.parse_shard_field(K.shard_field(lo, lo + n)) == (lo, lo + n)


def test_pair_fields_and_lease_units():
    assert K.pair_field(0) == "0" and K.pair_field(12) == "12"
    with pytest.raises(InputError):
        K.pair_field(-1)
    with pytest.raises(InputError):
        K.pair_field(True)  # type: ignore[arg-type]
    assert K.lease_unit("shard", lo=0, hi=16) == "shard:0-16"
    assert K.lease_unit("pair", index=3) == "pair:3"
    assert K.lease_unit("job") == "job" and K.lease_unit("merge") == "merge"
    for kw in [{"kind": "shard", "lo": 1}, {"kind": "pair"}, {"kind": "job", "index": 1}, {"kind": "other"}]:
        with pytest.raises(InputError, match="lease unit"):
            K.lease_unit(**kw)  # type: ignore[arg-type]


def test_field_names_are_checked():
    assert K.check_field_name("3a") == "3a"
    for bad in ["", "a:b", "x" * 65, None]:
        with pytest.raises(InputError):
            K.check_field_name(bad)


def test_content_id_is_a_hash_of_everything_that_defines_the_work():
    base = {"model": "m", "model_sha256": "s" * 64, "method": "corrrise"}
    params = {"n_masks": 500, "seed": 0, "values": [0.0, 1.0]}
    one = K.content_job_id("explain", [b"A", b"B"], params=params, **base)
    assert re.fullmatch(r"[0-9a-f]{64}", one)
    assert K.check_job_id(one) == one
    # same request (key order does not matter) -> same id
    assert K.content_job_id("explain", [b"A", b"B"], params=dict(reversed(params.items())), **base) == one
    # anything that changes the work -> another id
    others = {
        K.content_job_id("audit", [b"A", b"B"], params=params, **base),
        K.content_job_id("explain", [b"B", b"A"], params=params, **base),
        K.content_job_id("explain", [b"AB", b""], params=params, **base),  # framing: no concatenation clash
        K.content_job_id("explain", [b"A", b"B"], params={**params, "seed": 1}, **base),
        K.content_job_id("explain", [b"A", b"B"], params=params, **{**base, "model": "m2"}),
        K.content_job_id("explain", [b"A", b"B"], params=params, **{**base, "model_sha256": None}),
        K.content_job_id("explain", [b"A", b"B"], params=params, **{**base, "method": "rise"}),
    }
    assert one not in others and len(others) == 7
    with pytest.raises(InputError, match="JSON"):
        K.content_job_id("explain", [b"A"], params={"x": float("nan")}, **base)
    with pytest.raises(InputError, match="bytes"):
        K.content_job_id("explain", ["A"], params={}, **base)  # type: ignore[list-item]


def record_hash(**over: str) -> dict[bytes, bytes]:
    raw = {
        "kind": "explain", "state": "running", "done": "32", "total": "128", "model": "m",
        "method": "corrrise", "params": '{"n_masks":128}', "created": "1700000000000",
        "updated": "1700000000500", "started": "1700000000100", "expires": "1700086400000",
        "lease_owner": "w1@host", "lease_unit": "shard:0-32", "lease_expires": "1700000030000", "cancel": "0",
    }
    raw.update(over)
    return {k.encode(): v.encode() for k, v in raw.items() if v is not None}


def test_record_reads_its_hash():
    r = JobRecord.from_hash("j1", record_hash())
    assert (r.kind, r.state, r.done, r.total) == (JobKind.EXPLAIN, JobState.RUNNING, 32, 128)
    assert r.params == {"n_masks": 128}
    assert r.created_at == 1_700_000_000.0 and r.started_at == 1_700_000_000.1 and r.finished_at is None
    assert r.expires_at - r.created_at == DEFAULT_JOB_TTL_S
    assert r.lease is not None and (r.lease.owner, r.lease.unit) == ("w1@host", "shard:0-32")
    assert r.error is None and not r.cancel_requested and not r.final
    assert r.fraction == 0.25
    d = r.to_dict()
    assert d["state"] == "running" and d["lease"]["unit"] == "shard:0-32" and d["error"] is None
    failed = JobRecord.from_hash(
        "j1", record_hash(state="failed", error_status="UNAVAILABLE", error_message="Triton down", cancel="1")
    )
    assert failed.final and failed.error == JobError("UNAVAILABLE", "Triton down") and failed.cancel_requested


@pytest.mark.parametrize(
    "over", [{"state": "lost"}, {"kind": "other"}, {"params": "[1]"}, {"params": "{"}, {"done": "x"},
             {"created": "yesterday"}]
)
def test_damaged_records_are_backend_errors(over):
    with pytest.raises(BackendError):
        JobRecord.from_hash("j1", record_hash(**over))


def test_states_and_errors():
    assert {s for s in JobState if s.final} == {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
    assert JobError.from_exception(NotFoundError("no job x")) == JobError("NOT_FOUND", "no job x")
    # an unexpected exception's message (which might quote request data) stays out of the record
    leaked = JobError.from_exception(RuntimeError("pixels 1 2 3"))
    assert leaked.status == "INTERNAL" and "pixels" not in leaked.message
    assert grpc_status(NotFoundError("x")) == "NOT_FOUND"
    assert encode_params({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    with pytest.raises(InputError):
        encode_params({"x": object()})


def test_retention_settings_come_from_the_environment():
    base = {"FACEXPLAIN_HOME": "/tmp/fx"}
    s = Settings.from_env(base)
    assert s.job_ttl_s == DEFAULT_JOB_TTL_S == 86400 and s.redis_timeout_s == 5.0 and s.redis_server is None
    s = Settings.from_env({**base, "FACEXPLAIN_JOB_TTL": "2.5", "FACEXPLAIN_REDIS_TIMEOUT": "1",
                           "FACEXPLAIN_REDIS_SERVER": "/opt/redis-server"})
    assert (s.job_ttl_s, s.redis_timeout_s, str(s.redis_server)) == (2.5, 1.0, "/opt/redis-server")
    for bad in ["0", "-1", "soon", "inf"]:
        with pytest.raises(InputError, match="FACEXPLAIN_JOB_TTL"):
            Settings.from_env({**base, "FACEXPLAIN_JOB_TTL": bad})
