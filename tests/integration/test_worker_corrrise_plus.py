"""corrrise-plus over the service's workers: CorrRISE's mask shards, CorrRISE+'s finish.

Jobs submitted through the API's use case (``ApiService.explain``: the job's ``total`` is its
masks) and run by real ``facexplain worker`` processes on a real redis-server (the ``group``
helper of test_worker.py): 2 workers give the in-process library's maps (max abs difference
<= 1e-6) from exactly the plan's shards, and the API's partial maps are CorrRISE+'s ``finish``
over the shards stored so far (in-process worker units, out of mask order).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.api.service import ApiService
from explainer_service.methods import build
from explainer_service.pipeline import explain_pair
from explainer_service.store import EmbeddedRedis, JobState, RedisJobStore
from explainer_service.store.faces import faces_from_inputs
from explainer_service.worker import ModelPool, WorkerContext, enqueue_explain
from explainer_service.worker.explain import run_unit
from explainer_service.worker.plan import Unit, plan_shards
from tests.inprocess_api import RecordingQueue
from tests.integration.test_worker import N_MASKS, SHARD, group, wait_final

METHOD = "corrrise-plus"
PARAMS = {"n_masks": N_MASKS, "seed": 5, "patches": 8}


@pytest.fixture(scope="module")
def library(pair: tuple[bytes, bytes], local_model: Any) -> Any:
    """The in-process library's corrrise-plus result for the job parameters."""
    return explain_pair(pair[0], pair[1], local_model, METHOD, PARAMS)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_two_workers_give_the_librarys_corrrise_plus_maps(redis_server: EmbeddedRedis, tmp_path: Path, pair, library):
    with group(redis_server, tmp_path / "workers.log") as g:
        g.start(2)
        with ApiService(g.store, engine="local", enqueue=lambda job_id: enqueue_explain(g.app, g.store, job_id)) as api:
            record, reused = api.explain(*pair, method=METHOD, params=PARAMS)
            assert not reused and record.total == N_MASKS  # a sharded method's units are its masks
            final = wait_final(g.store, record.id, timeout=120)
            assert final.state is JobState.DONE, final.error
            assert final.done == final.total == N_MASKS
            stored = g.store.get_shards(record.id)
            assert [s.ranges for s in stored] == [((lo, hi),) for lo, hi in plan_shards(N_MASKS, SHARD)]
            result = g.store.get_result(record.id)
            assert result is not None and result.method == METHOD and result.engine == "local"
            assert result.params == library.params
            # every shard embedded the clean pair itself: 2 passes each beside 2 per mask
            assert result.forward_passes == 2 * N_MASKS + 2 * len(stored)
            assert result.s_a.dtype == np.float32 and result.s_a.shape == library.s_a.shape
            assert _max_diff(result.s_a, library.s_a) <= 1e-6
            assert _max_diff(result.s_b, library.s_b) <= 1e-6
            assert result.score == pytest.approx(library.score, abs=1e-6)
            assert result.masks == library.masks == N_MASKS and result.decision == library.decision
            # the API's running maps over every mask are the result's
            partial = api.partial_maps(final)
            assert partial is not None and partial.masks == N_MASKS
            assert _max_diff(partial.s_a, result.s_a) <= 1e-6 and _max_diff(partial.s_b, result.s_b) <= 1e-6


def test_partial_maps_are_corrrise_plus_finish_over_the_stored_shards(job_store: RedisJobStore, pair, local_model):
    with ApiService(job_store, engine="local", enqueue=RecordingQueue()) as api:
        record, _ = api.explain(*pair, method=METHOD, params=PARAMS)
        assert record.total == N_MASKS
        assert api.partial_maps(record) is None  # no shard yet
        pool = ModelPool(engine="local")
        pool._models[local_model.spec.name] = local_model  # the test's model: no second load
        ctx = WorkerContext(job_store, pool, worker=f"w-{uuid.uuid4().hex[:6]}", lease_s=30)
        for lo, hi in ((32, 48), (0, 16)):  # out of mask order
            run_unit(ctx, record.id, Unit(lo, hi))
        partial = api.partial_maps(job_store.get_job(record.id))
        assert partial is not None and partial.masks == 32

        faces = faces_from_inputs(lambda name: job_store.get_input(record.id, name))
        method: Any = build(METHOD, local_model, **PARAMS)
        chips = (faces.face_a.chip, faces.face_b.chip)
        shard = method.run_shard(*chips, 0, 16).merge(method.run_shard(*chips, 32, 48))
        want = method.finish(shard)
        assert _max_diff(partial.s_a, want.s_a) <= 1e-6 and _max_diff(partial.s_b, want.s_b) <= 1e-6
        whole = method.finish(method.run_shard(*chips, 0, N_MASKS))
        assert _max_diff(partial.s_a, whole.s_a) > 1e-3  # running maps, not the finished ones
        assert job_store.get_job(record.id).state is not JobState.DONE
