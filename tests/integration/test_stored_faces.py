"""The faces the API aligns at Explain time, kept with the job and used by the worker (a real
redis-server; the worker's library in this process, and once as a ``facexplain worker`` process).

Explain stores both faces (exact chips) next to the images; the job id stays the content hash of
the images and the request; the worker computes from them without aligning again and gives the
in-process library's maps; faces cut for another chip or other options, or damaged ones, are not
used (the worker aligns, the maps are the same); a worker process uses stored faces as they are
(a crafted chip comes back in the result).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from explainer_service.alignment import Aligner
from explainer_service.api.service import ApiService
from explainer_service.pipeline import align_image, explain_pair
from explainer_service.spec import ARCFACE_CHIP
from explainer_service.store import EmbeddedRedis, JobState, RedisJobStore
from explainer_service.store.faces import FACES_INPUT, faces_from_inputs, faces_to_inputs
from explainer_service.worker import ModelPool, Outcome, WorkerContext
from explainer_service.worker.explain import run_unit
from explainer_service.worker.plan import Unit, plan_shards
from tests.inprocess_api import RecordingQueue

PARAMS = {"n_masks": 32, "seed": 3, "patches": 8}
SHARD = 16


@pytest.fixture(scope="module")
def library(pair: tuple[bytes, bytes], local_model: Any) -> Any:
    return explain_pair(pair[0], pair[1], local_model, "corrrise", PARAMS)



@pytest.fixture
def service(job_store: RedisJobStore) -> Iterator[ApiService]:
    with ApiService(job_store, engine="local", enqueue=RecordingQueue()) as s:
        yield s


def _context(store: RedisJobStore, model: Any) -> WorkerContext:
    pool = ModelPool(engine="local")
    pool._models[model.spec.name] = model  # the test's model: no second load
    return WorkerContext(store, pool, worker=f"w-{uuid.uuid4().hex[:6]}", lease_s=30)


def _run_all(ctx: WorkerContext, job_id: str, total: int) -> None:
    for lo, hi in plan_shards(total, SHARD):
        assert run_unit(ctx, job_id, Unit(lo, hi)) is Outcome.DONE


def _assert_library_maps(result: Any, library: Any) -> None:
    np.testing.assert_array_equal(result.s_a, library.s_a)
    np.testing.assert_array_equal(result.s_b, library.s_b)
    assert result.score == pytest.approx(library.score, abs=1e-6) and result.masks == library.masks


def test_explain_keeps_the_faces_it_aligned_with_the_job(service, job_store, pair, local_model):
    a, b = pair
    record, reused = service.explain(a, b, params=PARAMS)
    assert not reused
    # the id is still the content hash of the images and the request, not of the stored faces
    assert record.id == service.job_request(a, b, "", "corrrise", PARAMS)[0]
    names = job_store.input_names(record.id)
    assert {"a", "b", FACES_INPUT, "faces.a.chip", "faces.b.chip"} <= set(names)
    stored = faces_from_inputs(lambda name: job_store.get_input(record.id, name))
    assert stored.chip == local_model.spec.chip and stored.matches(local_model.spec.chip, record.params["align"])
    for face, data, source in ((stored.face_a, a, "image_a"), (stored.face_b, b, "image_b")):
        aligned = align_image(data, local_model.spec.chip, aligner=Aligner(), name=source)
        assert face.source == source and face.method == aligned.method
        np.testing.assert_array_equal(face.chip, aligned.chip)
        np.testing.assert_array_equal(face.transform, aligned.transform)
    assert stored.align_s > 0


def test_the_worker_uses_the_stored_faces_and_gives_the_librarys_maps(service, job_store, pair, local_model, library):
    record, _ = service.explain(*pair, params=PARAMS)
    ctx = _context(job_store, local_model)
    _run_all(ctx, record.id, record.total)
    assert ctx.alignments == 0  # no pair aligned in the worker
    assert job_store.get_job(record.id).state is JobState.DONE
    result = job_store.get_result(record.id)
    assert result is not None
    _assert_library_maps(result, library)
    for got, want in ((result.face_a, library.face_a), (result.face_b, library.face_b)):
        np.testing.assert_array_equal(got.chip, want.chip)
        np.testing.assert_array_equal(got.transform, want.transform)
        assert got.to_dict() == want.to_dict()


def _replace_faces(store: RedisJobStore, job_id: str, inputs: dict[str, bytes]) -> None:
    client = redis.Redis.from_url(store.url, socket_timeout=5)
    try:
        key = f"{store.prefix}:job:{{{job_id}}}:inputs"
        client.hdel(key, *[n for n in client.hkeys(key) if n not in (b"a", b"b")])
        if inputs:
            client.hset(key, mapping=inputs)  # type: ignore[arg-type]
    finally:
        client.close()


@pytest.mark.parametrize("how", ["other chip", "other options", "damaged", "absent"])
def test_faces_that_do_not_fit_the_job_are_not_used(service, job_store, pair, local_model, library, how):
    record, _ = service.explain(*pair, params=PARAMS)
    stored = faces_from_inputs(lambda name: job_store.get_input(record.id, name))
    odd = dataclasses.replace(stored.face_a, chip=np.zeros((112, 112, 3), np.uint8))
    if how == "other chip":
        faces = faces_to_inputs(odd, dataclasses.replace(odd), ARCFACE_CHIP, stored.align)
    elif how == "other options":
        faces = faces_to_inputs(stored.face_a, stored.face_b, stored.chip, {"face": "center", "aligned": "auto"})
    elif how == "damaged":
        faces = faces_to_inputs(stored.face_a, stored.face_b, stored.chip, stored.align)
        faces["faces.a.chip"] = faces["faces.a.chip"][:100]
    else:
        faces = {}
    _replace_faces(job_store, record.id, faces)
    ctx = _context(job_store, local_model)
    _run_all(ctx, record.id, record.total)
    assert ctx.alignments == 1  # aligned once for all the job's shards
    result = job_store.get_result(record.id)
    assert result is not None
    _assert_library_maps(result, library)


@pytest.mark.slow
def test_a_worker_process_computes_from_the_stored_chips(redis_server: EmbeddedRedis, tmp_path: Path, pair, library):
    """Through a ``facexplain worker`` process: an API job gives the library's maps, and a chip
    the worker could never make (the aligned one, mirrored) comes back in the result, so the
    process used the stored faces instead of aligning the images."""
    from explainer_service.worker import enqueue_explain
    from tests.integration.test_worker import group, wait_final

    with group(redis_server, tmp_path / "worker.log") as g:
        g.start(1)
        with ApiService(g.store, engine="local", enqueue=lambda job_id: enqueue_explain(g.app, g.store, job_id)) as api:
            record, _ = api.explain(*pair, params=PARAMS)
        final = wait_final(g.store, record.id, timeout=120)
        assert final.state is JobState.DONE, final.error
        result = g.store.get_result(record.id)
        assert result is not None
        _assert_library_maps(result, library)

        stored = faces_from_inputs(lambda name: g.store.get_input(record.id, name))
        mirrored = [dataclasses.replace(f, chip=np.ascontiguousarray(f.chip[:, ::-1]))
                    for f in (stored.face_a, stored.face_b)]
        job_id = uuid.uuid4().hex
        faces = faces_to_inputs(mirrored[0], mirrored[1], stored.chip, stored.align, 0.0)
        g.store.create_job(job_id, "explain", model=record.model, method="corrrise", params=record.params,
                           total=record.total, inputs={"a": pair[0], "b": pair[1], **faces})
        enqueue_explain(g.app, g.store, job_id)
        final = wait_final(g.store, job_id, timeout=120)
        assert final.state is JobState.DONE, final.error
        crafted = g.store.get_result(job_id)
        assert crafted is not None
        np.testing.assert_array_equal(crafted.face_a.chip, mirrored[0].chip)
        np.testing.assert_array_equal(crafted.face_b.chip, mirrored[1].chip)
        assert not np.array_equal(crafted.s_a, result.s_a)  # other chips, other maps
