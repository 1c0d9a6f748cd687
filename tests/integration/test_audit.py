"""Audit pairs on a real redis-server, done by the worker library (``worker.audit.run_pair``, what
the ``facexplain.audit_pair`` task calls): every pair once, the summary equal to what
``evaluation.evaluate_methods`` computes in-process on the same chips, bad pairs reported as
dropped, reruns changing nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from explainer_service.alignment import Aligner
from explainer_service.datasets import read_dataset
from explainer_service.errors import InputError
from explainer_service.evaluation import evaluate_methods
from explainer_service.methods import registry
from explainer_service.metrics import default_steps
from explainer_service.pipeline import align_image, open_face_model
from explainer_service.store import JobState, RedisJobStore
from explainer_service.worker import ModelPool, Outcome, WorkerContext
from explainer_service.worker.audit import AuditPairSpec, AuditRequest, dataset_path, run_pair

LFW = Path("/work/shared/data/lfw-dev")
PARAMS: dict[str, dict[str, Any]] = {"gradcam": {}, "corrrise": {"n_masks": 32, "seed": 0}}
STEPS = 5


@pytest.fixture(scope="module")
def local_model() -> Iterator[Any]:
    with open_face_model(engine="local") as model:
        yield model


def _pairs() -> list[AuditPairSpec]:
    ds = read_dataset(f"lfw-aligned:{LFW}")
    matched = [p for p in ds.pairs if p.same][:3]
    other = [p for p in ds.pairs if not p.same][:1]
    return [AuditPairSpec(f"{p.a}|{p.b}", p.same, ("path", str(p.a)), ("path", str(p.b))) for p in matched + other]


def _request(pairs: list[AuditPairSpec]) -> AuditRequest:
    return AuditRequest(tuple(pairs), tuple(PARAMS.items()), ("deletion", "insertion"), STEPS, "zeros", True,
                        {"face": "largest", "aligned": "auto"})


def test_an_audit_gives_the_librarys_numbers_once_per_pair(job_store: RedisJobStore, local_model: Any) -> None:
    pairs = _pairs()
    bad = AuditPairSpec("bad", True, ("input", "a9"), ("path", pairs[0].b[1]))
    request = _request([*pairs, bad])
    job_id = "a" * 64
    job_store.create_job(job_id, "audit", model=local_model.spec.name, params=request.to_params(),
                         total=len(request.pairs), inputs={"a9": b"not an image"})
    pool = ModelPool(engine="local")
    pool._models[local_model.spec.name] = local_model
    ctx = WorkerContext(job_store, pool, worker="w1", lease_s=30)
    for i in range(len(request.pairs)):
        assert run_pair(ctx, job_id, i) is Outcome.DONE
    record = job_store.get_job(job_id)
    assert record.state is JobState.DONE and record.done == record.total == 5
    summary = job_store.get_summary(job_id)
    assert summary is not None
    assert run_pair(ctx, job_id, 2) is Outcome.STOPPED  # finished: nothing redone
    assert job_store.get_summary(job_id) == summary and job_store.get_job(job_id).done == 5
    rows = job_store.get_pairs(job_id, offset=0, limit=10)
    assert [i for i, _ in rows] == [0, 1, 2, 3, 4]
    assert rows[4][1]["error"]["status"] == "INVALID_ARGUMENT" and summary["pairs_failed"] == 1
    assert summary["dropped"][0]["index"] == 4 and summary["dropped"][0]["error"]["message"]
    assert job_store.get_pair_maps(job_id, 0) is not None

    # the library on the same chips
    aligner = Aligner(multiple_faces="largest", pre_aligned="auto")
    chip = local_model.spec.chip
    chips = [(align_image(p.a[1], chip, aligner=aligner).chip, align_image(p.b[1], chip, aligner=aligner).chip)
             for p in pairs]
    matched = [c for c, p in zip(chips, pairs, strict=True) if p.same]
    ca, cb = np.stack([c[0] for c in matched]), np.stack([c[1] for c in matched])

    def build(name: str, model: Any, **kw: Any) -> Any:
        return registry.build(name, model, **{**kw, **PARAMS[name]})

    results = evaluate_methods(ca, cb, local_model, list(PARAMS), steps=default_steps(STEPS), build=build)
    for res, got in zip(results, summary["methods"], strict=True):
        assert got["method"] == res.method
        assert got["deletion"]["n"] == 3
        assert got["deletion"]["mean"] == pytest.approx(res.deletion.auc, abs=1e-9)
        assert got["insertion"]["mean"] == pytest.approx(res.insertion.auc, abs=1e-9)
        ci = res.insertion.confidence_interval()
        assert ci is not None and got["insertion"]["ci_low"] == pytest.approx(ci[0], abs=1e-9)
    thr = local_model.spec.threshold
    ok_rows = [r for _, r in rows[:4]]
    expected = sum(1 for r in ok_rows if (r["score"] >= thr) == r["same"]) / 4
    assert summary["accuracy"] == pytest.approx(expected)
    assert summary["true_matches"] + summary["false_non_matches"] == 3


def test_dataset_paths_stay_under_the_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "lfw").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert dataset_path("lfw", [root]) == (root / "lfw").resolve()
    assert dataset_path(str(root / "lfw"), [root]) == (root / "lfw").resolve()
    for bad in ("../outside", "lfw/../../outside", str(tmp_path / "outside"), "link", "/etc"):
        with pytest.raises(InputError):
            dataset_path(bad, [root])
    with pytest.raises(InputError, match="--dataset-root"):
        dataset_path("lfw", [])


def test_submit_audit_inline_and_dataset_through_the_service(job_store: RedisJobStore, local_model: Any) -> None:
    import dataclasses

    from explainer_service.api.service import ApiService
    from explainer_service.settings import get_settings

    pool = ModelPool(engine="local")
    pool._models[local_model.spec.name] = local_model
    ctx = WorkerContext(job_store, pool, worker="w1", lease_s=30)
    sent: list[str] = []

    def enqueue(job_id: str) -> None:  # the worker's work, in this process, per pair
        sent.append(job_id)
        for i in range(job_store.get_job(job_id).total):
            run_pair(ctx, job_id, i)

    settings = dataclasses.replace(get_settings(), dataset_roots=(LFW,))
    service = ApiService(job_store, settings=settings, engine="local", enqueue=enqueue)
    service._models[local_model.spec.name] = local_model
    pairs = _pairs()[:2]
    inline = [(Path(p.a[1]).read_bytes(), Path(p.b[1]).read_bytes(), p.same, p.name) for p in pairs]
    inline.append((b"\x89PNG truncated", inline[0][1], True, "broken"))
    methods: list[tuple[str, dict[str, Any]]] = [("gradcam", {})]
    record, reused = service.submit_audit(pairs=inline, methods=methods, metrics=["deletion"], steps=STEPS)
    assert not reused and record.total == 3 and sent == [record.id]
    again, reused = service.submit_audit(pairs=inline, methods=methods, metrics=["deletion"], steps=STEPS)
    assert reused and again.id == record.id and sent == [record.id]  # cache hit: nothing queued
    done, summary, rows = service.audit_page(record.id, offset=1, limit=2)
    assert done.state is JobState.DONE and summary is not None
    assert [i for i, _ in rows] == [1, 2] and rows[1][1]["error"]["status"] == "INVALID_ARGUMENT"
    assert summary["pairs"] == 3 and summary["pairs_failed"] == 1 and summary["dropped"][0]["name"] == "broken"

    ds_record, _ = service.submit_audit(dataset=f"lfw-aligned:{LFW}", limit=3, methods=methods)
    _, ds_summary, ds_rows = service.audit_page(ds_record.id, limit=10)
    assert ds_record.total == 3 and len(ds_rows) == 3 and ds_summary is not None and ds_summary["pairs"] == 3
    for bad in (f"lfw-aligned:{LFW}/..", "lfw-aligned:/etc", "nope:x"):
        with pytest.raises(InputError):
            service.submit_audit(dataset=bad)
    with pytest.raises(InputError, match="metric"):
        service.submit_audit(pairs=inline, metrics=["accuracy"])
