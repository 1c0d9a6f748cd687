"""Early stopping through the API and the workers (issue 11 §2): an explain job with
``until_agreement`` R and ``max_masks`` M runs the library's 64-mask steps in waves, checked after
each wave with ``CorrRISE.attribute_until``'s rule, and gives the library's result.

- real ``facexplain worker`` processes on a real redis-server (test_worker.py's ``group``),
  submitted through the API's use case: the result equals ``attribute_until`` for the same seed
  (maps within 1e-6, the same masks used, the same early-stopping params), with the job's
  uncertainty options applied;
- in-process worker units (the waves sent to a list instead of Celery): a retried shard of a
  finished wave counts once and queues nothing twice, and the sweep's plan names the waves' steps.
"""

from __future__ import annotations

import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.api.service import ApiService
from explainer_service.explanation import restate
from explainer_service.methods import build
from explainer_service.methods.corrrise import DEFAULT_UNTIL_STEP, CorrRISE
from explainer_service.store import EmbeddedRedis, JobState, RedisJobStore
from explainer_service.store.faces import faces_from_inputs
from explainer_service.uncertainty import UncertaintyOptions
from explainer_service.worker import ModelPool, WorkerContext, enqueue_explain
from explainer_service.worker.explain import Outcome, run_unit
from explainer_service.worker.plan import UNTIL_WAVE_SHARDS, Unit, Until, plan_explain, shard_masks_of
from explainer_service.worker.sweep import missing_explain_units
from tests.inprocess_api import RecordingQueue
from tests.integration.test_worker import group, wait_final

PARAMS = {"seed": 11, "patches": 8}
MAX_MASKS = 640
#: the prefix whose agreement is the target: the library stops there or before, past the first wave
TARGET_AT = 448
OPTIONS = UncertaintyOptions(q=0.1, level=0.9)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module")
def chips(pair: tuple[bytes, bytes], local_model: Any) -> tuple[np.ndarray, np.ndarray]:
    """The faces the API aligns for a job (the library explains the same chips)."""
    from explainer_service.alignment import Aligner
    from explainer_service.pipeline import align_image

    aligner = Aligner(multiple_faces="largest", pre_aligned="auto")  # the API's ALIGN_DEFAULTS
    a = align_image(pair[0], local_model.spec.chip, aligner=aligner, name="a")
    b = align_image(pair[1], local_model.spec.chip, aligner=aligner, name="b")
    return a.chip, b.chip


@pytest.fixture(scope="module")
def target(chips: tuple[np.ndarray, np.ndarray], local_model: Any) -> float:
    """An agreement the maps reach after the first wave and before MAX_MASKS: the library's own
    figure at TARGET_AT masks."""
    method: Any = build("corrrise", local_model, **PARAMS, n_masks=MAX_MASKS)
    figure = method.predicted_agreement(method.finish(method.run_shard(*chips, 0, TARGET_AT)))
    assert figure is not None
    return float(figure)


@pytest.fixture(scope="module")
def library(chips: tuple[np.ndarray, np.ndarray], local_model: Any, target: float) -> Any:
    """``attribute_until`` of the library for the job's parameters."""
    method: Any = build("corrrise", local_model, **PARAMS, n_masks=MAX_MASKS)
    assert isinstance(method, CorrRISE)
    explanation = method.attribute_until(*chips, agreement=target, max_masks=MAX_MASKS)
    wave = UNTIL_WAVE_SHARDS * DEFAULT_UNTIL_STEP
    assert wave < explanation.masks <= TARGET_AT and explanation.params["stopped_early"]
    return explanation


def _assert_library_result(result: Any, library: Any, *, options: UncertaintyOptions | None = None) -> None:
    assert result.masks == library.masks  # the same masks used
    assert _max_diff(result.s_a, library.s_a) <= 1e-6 and _max_diff(result.s_b, library.s_b) <= 1e-6
    assert np.allclose(result.scores_a, library.scores_a, atol=1e-6)
    assert result.params == {**library.params}  # until_agreement, max_masks, step, stopped_early...
    want = library if options is None else restate(library, options)
    unc, wunc = result.uncertainty, want.uncertainty
    assert (unc.q, unc.level, unc.n) == (wunc.q, wunc.level, wunc.n)
    assert unc.a.split_half_r == pytest.approx(wunc.a.split_half_r, abs=1e-6)  # a summary keeps 6 digits
    for key, value in wunc.arrays().items():
        got = unc.arrays()[key]
        if value.dtype == bool:  # a pixel at the BH cut could flip with a last-bit difference
            assert np.mean(got != value) <= 1e-3, key
        else:
            assert _max_diff(got, value) <= 1e-5, key


def test_two_workers_stop_where_the_library_stops(redis_server: EmbeddedRedis, tmp_path: Path, pair, library,
                                                 target):
    until = Until(target, MAX_MASKS)
    with group(redis_server, tmp_path / "workers.log") as g:
        g.start(2)
        with ApiService(g.store, engine="local", enqueue=lambda job_id: enqueue_explain(g.app, g.store, job_id)) as api:
            record, reused = api.explain(*pair, params=PARAMS, until=until, uncertainty=OPTIONS)
            assert not reused and record.total == until.wave_end(0)  # the first wave is queued
            assert record.params["until"] == until.to_dict()
            assert record.params["uncertainty"] == {"fdr_q": 0.1, "ci_level": 0.9}
            final = wait_final(g.store, record.id, timeout=180)
            assert final.state is JobState.DONE, final.error
            # whole waves were computed: the stopping step's wave, not beyond
            assert final.done == final.total == until.wave_end(until.wave_start(library.masks))
            stored = [s.ranges[0] for s in g.store.get_shards(record.id)]
            assert stored == [(lo, lo + DEFAULT_UNTIL_STEP) for lo in range(0, final.total, DEFAULT_UNTIL_STEP)]
            result = g.store.get_result(record.id)
            assert result is not None
            _assert_library_result(result, library, options=OPTIONS)
            assert result.uncertainty.summary()["q"] == 0.1 and result.uncertainty.summary()["level"] == 0.9
            partial = api.partial_maps(final)  # the running maps of every shard computed
            assert partial is not None and partial.masks == final.total


def test_a_retried_wave_counts_once_and_queues_nothing_twice(job_store: RedisJobStore, pair, local_model, library,
                                                             target):
    until = Until(target, MAX_MASKS)
    with ApiService(job_store, engine="local", enqueue=RecordingQueue()) as api:
        record, _ = api.explain(*pair, params=PARAMS, until=until)
        job_id = record.id
        assert "uncertainty" not in record.params  # the defaults keep the job's content id
        pool = ModelPool(engine="local")
        pool._models[local_model.spec.name] = local_model  # the test's model: no second load
        sent: list[list[Unit]] = []
        ctx = WorkerContext(job_store, pool, worker=f"w-{uuid.uuid4().hex[:6]}", lease_s=30,
                            send=lambda _record, units: sent.append(list(units)))
        queue = deque(plan_explain("corrrise", record.total, shard_masks_of(record.params, 96)))
        assert [(u.lo, u.hi) for u in queue] == [(0, 64), (64, 128)]  # the steps, not the 96-mask shards
        waves = 0
        while queue:
            wave = list(queue)
            queue.clear()
            for unit in wave:
                assert run_unit(ctx, job_id, unit) is Outcome.DONE
            waves += 1
            done = job_store.get_job(job_id).done
            # the wave's tasks delivered again (a worker lost after storing): nothing counted or sent twice
            before = len(sent)
            for unit in wave:
                assert run_unit(ctx, job_id, unit) in (Outcome.SKIPPED, Outcome.STOPPED)
            assert job_store.get_job(job_id).done == done and len(sent) == before
            if sent and sent[-1][0].lo == done:
                queue.extend(sent[-1])
                # the sweep's plan of the job names the next wave's steps as missing
                now = job_store.get_job(job_id)
                missing = missing_explain_units("corrrise", now.total, shard_masks_of(now.params, 96),
                                                job_store.stored_shards(job_id))
                assert missing == sent[-1]
        final = job_store.get_job(job_id)
        assert final.state is JobState.DONE and waves == len(sent) + 1
        assert final.done == final.total == until.wave_end(until.wave_start(library.masks))
        result = job_store.get_result(job_id)
        assert result is not None
        _assert_library_result(result, library)


def test_bad_early_stopping_requests_are_refused_before_any_job(job_store: RedisJobStore, pair):
    from explainer_service.errors import InputError, LimitExceededError

    queue = RecordingQueue()
    with ApiService(job_store, engine="local", enqueue=queue) as api:
        with pytest.raises(InputError, match="n_masks or budget"):
            api.explain(*pair, params={"n_masks": 500}, until=Until(0.9, 256))
        with pytest.raises(InputError, match="early stopping is for corrrise"):
            api.explain(*pair, method="rise", until=Until(0.9, 256))
        with pytest.raises(LimitExceededError, match="max_masks 10000000 is over the limit"):
            api.explain(*pair, until=Until(0.9, 10_000_000))
    assert queue.ids == []


def test_chips_are_the_jobs_faces(job_store: RedisJobStore, pair, chips):
    """The library runs above explain the chips the API stores with the job."""
    with ApiService(job_store, engine="local", enqueue=RecordingQueue()) as api:
        record, _ = api.explain(*pair, params=PARAMS, until=Until(0.9, 256))
        faces = faces_from_inputs(lambda name: job_store.get_input(record.id, name))
    assert np.array_equal(faces.face_a.chip, chips[0]) and np.array_equal(faces.face_b.chip, chips[1])
