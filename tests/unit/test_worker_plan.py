"""The worker's planner: mask shards on accumulation-block boundaries that cover a job exactly
once, one task for the other methods, bounded retry backoff; and the worker settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explainer_service.errors import InputError
from explainer_service.methods.corrrise import ACCUMULATION_BLOCK
from explainer_service.settings import Settings
from explainer_service.worker.plan import Unit, plan_explain, plan_shards, retry_delay


def test_shards_by_hand():
    assert plan_shards(64, 16) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert plan_shards(100, 40, block=16) == [(0, 48), (48, 96), (96, 100)]
    assert plan_shards(5, 96) == [(0, 5)]
    assert plan_shards(500, 96) == [(0, 96), (96, 192), (192, 288), (288, 384), (384, 480), (480, 500)]
    assert plan_shards(7, 1, block=1) == [(i, i + 1) for i in range(7)]


@given(st.integers(1, 5000), st.integers(1, 700), st.integers(1, 64))
def test_shards_cover_every_mask_once_on_block_boundaries(n, size, block):
    shards = plan_shards(n, size, block=block)
    assert shards[0][0] == 0 and shards[-1][1] == n
    for (_lo, hi), (lo2, _) in zip(shards, shards[1:], strict=False):
        assert hi == lo2  # consecutive, disjoint
    assert all(lo < hi for lo, hi in shards)
    assert all(lo % block == 0 for lo, _ in shards)  # boundaries on the accumulation block
    step = -(-size // block) * block
    assert all(hi - lo == step for lo, hi in shards[:-1]) and shards[-1][1] - shards[-1][0] <= step
    assert len(shards) == -(-n // step)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8", None])
def test_bad_counts_are_input_errors(bad):
    with pytest.raises(InputError):
        plan_shards(bad, 16)
    with pytest.raises(InputError):
        plan_shards(64, bad)


def test_default_block_is_the_corrrise_accumulation_block():
    assert all(lo % ACCUMULATION_BLOCK == 0 for lo, _ in plan_shards(1000, 50))


def test_explain_plans():
    assert plan_explain("corrrise", 64, 16) == [Unit(0, 16), Unit(16, 32), Unit(32, 48), Unit(48, 64)]
    assert [u.lease for u in plan_explain("corrrise", 40, 32)] == ["shard:0-32", "shard:32-40"]
    for method in ("rise", "lime", "xface", "minplus", "gradcam", "gradcam++"):
        (unit,) = plan_explain(method, 1, 16)
        assert not unit.sharded and unit.lease == "job"


def test_retry_delays_grow_to_the_cap_with_jitter():
    assert [retry_delay(i) for i in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry_delay(1, base=0.5, cap=10, jitter=0.5) == 1.5
    assert retry_delay(10**6) == 30  # no overflow
    for bad in (dict(jitter=1.0), dict(jitter=-0.1), dict(base=0), dict(base=5, cap=1)):
        with pytest.raises(InputError):
            retry_delay(0, **bad)
    with pytest.raises(InputError):
        retry_delay(-1)


def test_worker_settings_from_the_environment():
    s = Settings.from_env({})
    assert (s.shard_masks, s.task_retries, s.lease_s) == (96, 3, 30.0)
    assert s.visibility_timeout_s > s.task_time_limit_s
    s = Settings.from_env({"FACEXPLAIN_SHARD_MASKS": "16", "FACEXPLAIN_TASK_RETRIES": "0",
                           "FACEXPLAIN_LEASE": "2.5", "FACEXPLAIN_VISIBILITY_TIMEOUT": "90",
                           "FACEXPLAIN_TASK_TIME_LIMIT": "20"})
    assert (s.shard_masks, s.task_retries, s.lease_s, s.visibility_timeout_s, s.task_time_limit_s) == (16, 0, 2.5, 90, 20)
    for name, value in (("SHARD_MASKS", "0"), ("TASK_RETRIES", "-1"), ("TASK_RETRIES", "x"), ("LEASE", "0")):
        with pytest.raises(InputError, match=f"FACEXPLAIN_{name}"):
            Settings.from_env({f"FACEXPLAIN_{name}": value})


def test_app_refuses_a_visibility_timeout_under_the_task_time_limit():
    from explainer_service.worker import make_app

    s = Settings.from_env({"FACEXPLAIN_VISIBILITY_TIMEOUT": "60", "FACEXPLAIN_TASK_TIME_LIMIT": "60"})
    with pytest.raises(InputError, match="VISIBILITY_TIMEOUT"):
        make_app("redis://127.0.0.1:1/0", settings=s)
    with pytest.raises(InputError, match="needs a server address"):
        make_app("redis://127.0.0.1:1/0", settings=Settings.from_env({}), engine="triton")
    app = make_app("redis://127.0.0.1:1/0", settings=Settings.from_env({}), engine="local")
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit > conf.task_soft_time_limit
    assert {"facexplain.explain_shard", "facexplain.explain_job"} <= set(app.tasks)
