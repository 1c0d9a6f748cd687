"""Audits over the API with real processes: a redis-server, ``facexplain api --engine local
--dataset-root LFW`` and one ``facexplain worker --engine local`` subprocess, driven by
``facexplain client audit``. Inline pairs from a local CSV (the client sends the images) and a
dataset spec on the server both finish with every pair stored once and the summary printed; rows
read back page by page; a spec escaping the allowed root exits 2 with the server's
INVALID_ARGUMENT message in one line. An audit with kept maps and a bad pair: the summary printed
and sent names the dropped pair, GetResult's rows carry each pair's PairResult equal to the stored
one, ``client result --out`` writes summary.json, pairs.csv and one folder per kept result, and
DeleteJob removes exactly the keys the job had."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from explainer_service import cli
from explainer_service.api.client import FacexplainClient
from explainer_service.errors import InputError, NotFoundError
from explainer_service.metrics import auc
from explainer_service.processes import api_address, start_command, stop_groups
from explainer_service.store import EmbeddedRedis
from tests.integration.procs import left_after, marked_env

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-dev"
IMG = LFW / "aligned112"
# (img1, img2, same): two matched pairs and one mismatched, relative to the CSV's folder
PAIRS = [
    ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", 1),
    ("Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg", "Akhmed_Zakayev/Akhmed_Zakayev_0003.jpg", 1),
    ("Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg", "Dean_Barker/Dean_Barker_0001.jpg", 0),
]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """redis-server, the API and one worker as separate processes: (the API's address, Redis URL)."""
    tmp = tmp_path_factory.mktemp("api-audit")
    with EmbeddedRedis(tmp / "redis", startup_timeout=30) as redis:
        env, mark = marked_env(FACEXPLAIN_REDIS_URL=redis.url)
        api = start_command(["api", "--redis", redis.url, "--engine", "local", "--port", "0", "--dataset-root",
                             str(LFW)], tmp / "api.log", env=env)
        worker = start_command(["worker", "--redis", redis.url, "--engine", "local"], tmp / "worker.log", env=env)
        try:
            yield api_address(tmp / "api.log", api), redis.url
        finally:
            stop_groups([api, worker])
        assert left_after(mark, 10) == []


@pytest.fixture(scope="module")
def stack(services: tuple[str, str]) -> str:
    """The API's address."""
    return services[0]


def _csv(tmp_path: Path) -> Path:
    """A CSV naming the images relative to its own folder (through a link to the LFW mirror)."""
    (tmp_path / "img").symlink_to(IMG, target_is_directory=True)
    path = tmp_path / "pairs.csv"
    path.write_text("img1,img2,same\n" + "".join(f"img/{a},img/{b},{s}\n" for a, b, s in PAIRS))
    return path


@pytest.mark.slow
def test_client_audit_of_csv_pairs_and_of_a_dataset(stack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _csv(tmp_path)
    code = cli.main(["client", "audit", "--pairs", str(csv_path), "--server", stack, "--methods", "gradcam",
                     "--metrics", "deletion,insertion", "--steps", "5", "--wait", "--no-progress"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    job_id = out.splitlines()[0].split()[1]
    assert "pairs 3 (0 failed)" in out and "gradcam" in out and "worst pairs" in out
    with FacexplainClient(stack) as client:
        rows = list(client.audit_rows(job_id, page_size=2))  # two pages
        assert [r["index"] for r in rows] == [0, 1, 2]
        assert [r["same"] for r in rows] == [True, True, False]
        for r in rows:
            assert r["error"] is None and [m["method"] for m in r["methods"]] == ["gradcam"]
            assert 0.0 <= r["methods"][0]["deletion"]["auc"] <= 100.0  # percent, as Table 1 and "insertion" in r["methods"][0]
        page = client.audit_result(job_id, page_size=2)
        assert page.job.state == "done" and page.job.done == 3 and page.total_rows == 3
        assert page.next_page_token == "2" and page.summary is not None
        summary = page.summary
        assert summary["pairs"] == 3 and summary["true_matches"] + summary["false_non_matches"] == 2
        gradcam = summary["methods"][0]
        assert gradcam["method"] == "gradcam" and gradcam["deletion"]["n"] == 2 and gradcam["insertion"]["n"] == 2
        for mode in ("deletion", "insertion"):  # the mean curve over the two matched pairs, whose area is the mean
            curve = gradcam[mode]["curve"]
            assert curve["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
            assert all(a in (0.0, 0.5, 1.0) for a in curve["accuracy"])  # two pairs: 0, 1 or 2 kept
            assert abs(auc(curve["accuracy"], curve["fractions"]) - gradcam[mode]["mean"]) < 1e-9
        assert f"{summary['accuracy']:.4f}" in out
        # the same audit again: the stored job, nothing queued
        again = client.submit_audit(
            pairs=[((IMG / a).read_bytes(), (IMG / b).read_bytes(), bool(s), f"{Path(a).name}|{Path(b).name}")
                   for a, b, s in PAIRS],
            methods=["gradcam"], metrics=["deletion", "insertion"], steps=5,
        )
        assert again.reused and again.job.id == job_id
        with pytest.raises(InputError, match="not an explanation"):
            client.get_result(job_id)

    code = cli.main(["client", "audit", "--dataset", "lfw-aligned:.", "--limit", "2", "--server", stack, "--wait",
                     "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "pairs 2 (0 failed)" in out

    code = cli.main(["client", "audit", "--dataset", "lfw-aligned:../lfw-dev", "--server", stack])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "may not contain '..'" in err and "Traceback" not in err
    code = cli.main(["client", "audit", "--dataset", "lfw-aligned:/etc", "--server", stack])
    err = capsys.readouterr().err
    assert code == 2 and "outside the allowed dataset roots" in err


def test_client_audit_bad_csv_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\nx,y,1\n")
    assert cli.main(["client", "audit", "--pairs", str(bad), "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "img1,img2,same" in err
    bad.write_text(f"img1,img2,same\n{IMG / PAIRS[0][0]},{tmp_path / 'missing.jpg'},1\n")
    assert cli.main(["client", "audit", "--pairs", str(bad), "--server", "127.0.0.1:1"]) == 2
    assert "missing.jpg" in capsys.readouterr().err


def test_submit_audit_answers_bad_requests_with_their_status(redis_server: EmbeddedRedis, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """SubmitAudit and GetResult of an audit on an in-process server whose jobs are recorded, not
    run: each malformed request gets its status and a message naming the problem, never INTERNAL;
    a queued audit's page has no rows and no summary yet, and `client result` of it says so in one
    line (exit 2), writing nothing."""
    import uuid

    import grpc

    from explainer_service.api.pb import audit_pb2, service_pb2, service_pb2_grpc, types_pb2
    from explainer_service.api.server import BackgroundServer
    from explainer_service.api.service import ApiService
    from explainer_service.store import RedisJobStore
    from tests.inprocess_api import RecordingQueue

    image = (IMG / PAIRS[0][0]).read_bytes()
    pair = audit_pb2.LabeledPair(pair=types_pb2.ImagePair(a=types_pb2.Image(data=image), b=types_pb2.Image(data=image)),
                                 same=True)
    inline = audit_pb2.InlinePairs(pairs=[pair])
    store = RedisJobStore(redis_server.url, prefix=f"aud{uuid.uuid4().hex[:8]}")
    queue = RecordingQueue()
    with ApiService(store, engine="local", enqueue=queue) as service, BackgroundServer(service) as address, \
            grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.FacexplainStub(channel)

        def status(request: audit_pb2.SubmitAuditRequest) -> tuple[str, str]:
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitAudit(request, timeout=30)
            return info.value.code().name, info.value.details() or ""

        cases = [
            (audit_pb2.SubmitAuditRequest(), "INVALID_ARGUMENT", "inline pairs or a dataset"),
            (audit_pb2.SubmitAuditRequest(pairs=audit_pb2.InlinePairs()), "INVALID_ARGUMENT", "at least one pair"),
            (audit_pb2.SubmitAuditRequest(pairs=inline, methods=[audit_pb2.MethodRequest(name="nope")]),
             "INVALID_ARGUMENT", "nope"),
            (audit_pb2.SubmitAuditRequest(pairs=inline, metrics=["accuracy"]), "INVALID_ARGUMENT", "accuracy"),
            (audit_pb2.SubmitAuditRequest(pairs=inline, limit=-1), "INVALID_ARGUMENT", "limit"),
            (audit_pb2.SubmitAuditRequest(pairs=inline, model="no-such-model"), "NOT_FOUND", "no-such-model"),
            (audit_pb2.SubmitAuditRequest(dataset="lfw-aligned:."), "FAILED_PRECONDITION", "--dataset-root"),
        ]
        masks = audit_pb2.MethodRequest(name="corrrise")
        masks.params["n_masks"].CopyFrom(types_pb2.ParamValue(int_value=10**9))
        cases.append((audit_pb2.SubmitAuditRequest(pairs=inline, methods=[masks]), "RESOURCE_EXHAUSTED", "10"))
        for request, code, words in cases:
            got, message = status(request)
            assert (got, words in message) == (code, True), (got, message)
        assert queue.ids == []

        submitted = stub.SubmitAudit(audit_pb2.SubmitAuditRequest(pairs=inline), timeout=30)
        assert not submitted.reused and queue.ids == [submitted.job.id]
        page = stub.GetResult(service_pb2.GetResultRequest(id=submitted.job.id), timeout=30)
        assert page.WhichOneof("result") == "audit" and page.job.state == types_pb2.JOB_STATE_QUEUED
        assert not page.audit.rows and not page.audit.HasField("summary") and page.audit.total_rows == 1
        assert page.audit.next_page_token == ""
        with pytest.raises(grpc.RpcError) as info:
            stub.GetResult(service_pb2.GetResultRequest(id=submitted.job.id, page_token="x"), timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        code = cli.main(["client", "result", submitted.job.id, "--out", str(tmp_path / "r"), "--server", address])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "is queued (0/1 pairs): no result yet" in err, err
        assert not (tmp_path / "r" / "summary.json").exists()
    store.close()


def test_client_explain_waits_at_most_wait_timeout(redis_server: EmbeddedRedis, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A job no worker runs: `client explain` gives up after --wait-timeout with one line naming the
    job (exit 75, retryable), writes nothing, and the job stays for `client result`."""
    import uuid

    from explainer_service.api.server import BackgroundServer
    from explainer_service.api.service import ApiService
    from explainer_service.store import RedisJobStore
    from tests.inprocess_api import RecordingQueue

    a, b = IMG / PAIRS[0][0], IMG / PAIRS[0][1]
    store = RedisJobStore(redis_server.url, prefix=f"wt{uuid.uuid4().hex[:8]}")
    queue = RecordingQueue()
    with ApiService(store, engine="local", enqueue=queue) as service, BackgroundServer(service) as address:
        t0 = time.monotonic()
        code = cli.main(["client", "explain", str(a), str(b), "--server", address, "--out", str(tmp_path / "out"),
                         "--masks", "32", "--wait-timeout", "2", "--no-progress"])
        elapsed = time.monotonic() - t0
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 75 and len(err) == 1 and "--wait-timeout 2" in err[0], err
        assert queue.ids and queue.ids[0] in err[0]
        assert elapsed < 20
        assert not (tmp_path / "out" / "summary.json").exists()
        assert not store.get_job(queue.ids[0]).final


@pytest.mark.slow
def test_audit_with_kept_maps_end_to_end(services: tuple[str, str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import csv
    import json

    import redis as redis_py

    from explainer_service.pair_archive import unpack_pair_results
    from explainer_service.results import PairResult
    from explainer_service.store import RedisJobStore

    address, redis_url = services
    csv_path = _csv(tmp_path)
    (tmp_path / "bad.jpg").write_bytes(b"this is not an image")
    with csv_path.open("a") as f:
        f.write(f"img/{PAIRS[0][0]},bad.jpg,1\n")  # pair 3: dropped
    code = cli.main(["client", "audit", "--pairs", str(csv_path), "--server", address, "--methods", "gradcam",
                     "--metrics", "deletion", "--steps", "5", "--keep-maps", "--wait", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    job_id = out.splitlines()[0].split()[1]
    assert "pairs 4 (1 failed)" in out and "worst pairs" in out
    dropped_lines = out.split("dropped pairs (1, not in the accuracy or the means):\n", 1)[1].splitlines()
    assert dropped_lines[0].split()[:2] == ["#3", f"{Path(PAIRS[0][0]).name}|bad.jpg:"]
    assert "INVALID_ARGUMENT" in dropped_lines[0]

    store = RedisJobStore(redis_url)
    try:
        stored = {i: unpack_pair_results(store.get_pair_maps(job_id, i) or b"")["gradcam"] for i in range(3)}
        assert store.get_pair_maps(job_id, 3) is None  # the dropped pair has no maps
    finally:
        store.close()

    with FacexplainClient(address) as client:
        page = client.audit_result(job_id, page_size=2, maps=True)
        assert page.summary is not None and page.next_page_token == "2"
        assert [(d["index"], d["error"]["status"]) for d in page.summary["dropped"]] == [(3, "INVALID_ARGUMENT")]
        rows = list(client.audit_rows(job_id, page_size=3, maps=True))
        assert [r["index"] for r in rows] == [0, 1, 2, 3] and rows[3]["methods"] == []
        for r in rows[:3]:
            got, want = r["methods"][0]["result"], stored[r["index"]]
            assert got.method == "gradcam" and got.score == pytest.approx(r["score"], abs=1e-6)
            for name in ("s_a", "s_b", "scores_a", "scores_b"):
                assert getattr(got, name).dtype == np.float32
                assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name
            assert got.face_a.chip is not None and got.face_a.chip.tobytes() == want.face_a.chip.tobytes()
            assert got.face_a.source.endswith(" A") and got.face_a.transform is not None
        assert all("result" not in m for r in client.audit_rows(job_id) for m in r["methods"])  # summary_only

    out_dir = tmp_path / "result"
    assert cli.main(["client", "result", job_id, "--out", str(out_dir), "--server", address]) == 0
    printed = capsys.readouterr().out
    assert "pairs.csv (4 pairs), 3 result folder(s)" in printed and "dropped pairs (1" in printed
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["job"]["id"] == job_id and summary["pairs"] == 4 and summary["pairs_failed"] == 1
    assert summary["dropped"][0]["index"] == 3 and summary["worst"]
    assert summary["methods"][0]["deletion"]["n"] == 2 and summary["methods"][0]["insertion"] is None
    curve = summary["methods"][0]["deletion"]["curve"]  # summary.json keeps the mean curve
    assert len(curve["fractions"]) == len(curve["accuracy"]) == len(curve["mean_score"]) == 5
    assert abs(auc(curve["accuracy"], curve["fractions"]) - summary["methods"][0]["deletion"]["mean"]) < 1e-9
    with (out_dir / "pairs.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [line["index"] for line in lines] == ["0", "1", "2", "3"]
    assert "gradcam.deletion" in lines[0] and "gradcam.insertion" not in lines[0]
    assert lines[3]["error"].startswith("INVALID_ARGUMENT: ") and lines[3]["score"] == ""
    assert float(lines[1]["score"]) == pytest.approx(rows[1]["score"])
    assert sorted(p.name for p in (out_dir / "pairs").iterdir()) == ["0", "1", "2"]
    for i in range(3):
        written = PairResult.read(out_dir / "pairs" / str(i) / "gradcam")
        assert written.s_a is not None and written.s_a.tobytes() == stored[i].s_a.tobytes()
        assert written.to_dict() == stored[i].to_dict()
        assert (out_dir / "pairs" / str(i) / "gradcam" / "figure.png").stat().st_size > 0

    # DeleteJob answers the keys it removed: every key of the job that existed, none left
    r = redis_py.Redis.from_url(redis_url)
    try:
        before = sorted(r.scan_iter(match=f"*{job_id}*"))
        assert len(before) >= 4  # record, inputs, rows, kept maps (and the summary)
        assert cli.main(["client", "delete", job_id, "--server", address]) == 0
        assert f"{len(before)} store key(s) removed" in capsys.readouterr().out
        assert list(r.scan_iter(match=f"*{job_id}*")) == []
    finally:
        r.close()
    with FacexplainClient(address) as client, pytest.raises(NotFoundError):
        client.delete(job_id)
