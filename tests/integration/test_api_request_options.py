"""A request's options through the real gRPC servicer to the workers' result (issues 11 §2 and 12),
with the API in a thread of the test process and the jobs done by the worker library
(:mod:`tests.inline_worker`) on a real redis-server:

- ``detector``: ``facexplain client explain/verify --detector mtcnn`` aligns with MTCNN (the
  default, auto, finds these faces with HOG), summary.json says so; an audit's kept results name
  it; an unknown detector is INVALID_ARGUMENT naming the choices, before any job;
- ExplainRequest's early stopping and uncertainty options (``client explain --until-agreement
  --max-masks --fdr-q --ci-level``) reach the job and its summary.json;
- an audit with kept maps and ``fdr_q``/``ci_level``: each kept result's intervals and
  significance masks are those of the options (recomputed from its map), recorded in the summary;
- an audit with an unreadable image and a photo without a face: GetResult's summary counts the
  drops per reason, the client prints them, ``client result --out`` writes them to summary.json;
- the client's bad values: one line, exit 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from explainer_service import cli
from explainer_service.alignment import DETECTORS
from explainer_service.api.client import FacexplainClient
from explainer_service.api.pb import service_pb2, service_pb2_grpc, types_pb2
from explainer_service.datasets.drops import DROP_REASONS
from explainer_service.demo import make_demo_pair
from explainer_service.errors import InputError
from explainer_service.results import PairResult
from explainer_service.store import RedisJobStore
from explainer_service.uncertainty import map_uncertainty
from tests.inline_worker import InlineWorker, inline_api

MASKS = ["--masks", "32", "--seed", "1"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo pair (photos: detected), an undecodable file and a photo with no face."""
    folder = tmp_path_factory.mktemp("images")
    a, b = make_demo_pair(folder)
    bad = folder / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    sky = folder / "sky.png"
    ramp = np.tile(np.linspace(40, 220, 240)[None, :, None], (200, 1, 3))  # a smooth sky, no face
    Image.fromarray(ramp.astype(np.uint8)).save(sky)
    return {"a": a, "b": b, "bad": bad, "sky": sky}


@pytest.fixture
def api(job_store: RedisJobStore, local_model: Any) -> Iterator[tuple[str, InlineWorker]]:
    with inline_api(job_store, local_model) as (address, worker):
        yield address, worker
    assert worker.errors == []


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_detector_reaches_the_aligner_and_summary_json(api, images, tmp_path, capsys) -> None:
    address, _ = api
    faces = {}
    for detector in ("", "mtcnn"):
        out = tmp_path / (detector or "default")
        code, _, err = _run(capsys, "client", "explain", str(images["a"]), str(images["b"]), "--out", str(out),
                            "--server", address, "--no-progress", *MASKS,
                            *(["--detector", detector] if detector else []))
        assert code == 0, err
        summary = json.loads((out / "summary.json").read_text())
        faces[detector] = (summary["alignment_a"], summary["alignment_b"])
    # auto (the default) finds these frontal faces with HOG; --detector mtcnn is MTCNN's, with its score
    assert [f["detector"] for f in faces[""]] == ["hog", "hog"]
    mtcnn = faces["mtcnn"]
    assert [f["detector"] for f in mtcnn] == ["mtcnn", "mtcnn"]
    assert all(0.5 < f["confidence"] <= 1.0 for f in mtcnn)
    assert mtcnn[0]["face_box"] != faces[""][0]["face_box"]

    code, printed, err = _run(capsys, "client", "verify", str(images["a"]), str(images["b"]), "--server", address,
                              "--detector", "mtcnn")
    assert code == 0, err
    lines = printed.splitlines()
    for label, line in zip("ab", lines[1:], strict=True):
        assert re.fullmatch(rf"face {label}: detected by mtcnn, confidence [01]\.\d{{3}}, yaw -?\d+ deg", line), line


def test_an_unknown_detector_is_invalid_argument_naming_the_choices(api, images, capsys) -> None:
    address, worker = api
    data = images["a"].read_bytes(), images["b"].read_bytes()
    pair = types_pb2.ImagePair(a=types_pb2.Image(data=data[0]), b=types_pb2.Image(data=data[1]))
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.FacexplainStub(channel)
        for call, request in ((stub.Verify, service_pb2.VerifyRequest(pair=pair, detector="retina")),
                              (stub.Explain, service_pb2.ExplainRequest(pair=pair, detector="retina"))):
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=60)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert f"detector: unknown 'retina' (known: {', '.join(DETECTORS)})" in str(info.value.details())
    with FacexplainClient(address) as client, pytest.raises(InputError, match="known: hog, mtcnn"):
        client.submit_audit(pairs=[(*data, True, "p")], detector="retina")
    for argv in (["verify", str(images["a"]), str(images["b"])],
                 ["audit", "--pairs", str(_csv(images["a"].parent, [("astronaut.png", "astronaut_sunglasses.png", 1)]))]):
        code, _, err = _run(capsys, "client", *argv, "--server", address, "--detector", "retina")
        assert code == 2 and err.count("\n") == 1 and "known: hog, mtcnn, mmod, auto" in err, err
    assert worker.ids == []  # refused before any job


def test_early_stopping_and_uncertainty_options_reach_the_job(api, images, job_store, tmp_path, capsys) -> None:
    address, worker = api
    out = tmp_path / "until"
    code, printed, err = _run(capsys, "client", "explain", str(images["a"]), str(images["b"]), "--out", str(out),
                              "--server", address, "--no-progress", "--seed", "1", "--until-agreement", "0.5",
                              "--max-masks", "128", "--fdr-q", "0.2", "--ci-level", "0.9")
    assert code == 0, err
    record = job_store.get_job(worker.ids[-1])
    assert record.params["until"]["max_masks"] == 128 and record.params["until"]["agreement"] == 0.5
    assert record.params["uncertainty"] == {"fdr_q": 0.2, "ci_level": 0.9}
    summary = json.loads((out / "summary.json").read_text())
    params = summary["params"]
    assert params["until_agreement"] == 0.5 and params["max_masks"] == 128
    assert isinstance(params["stopped_early"], bool) and 64 <= summary["masks"] <= 128
    unc = summary["uncertainty"]
    assert (unc["q"], unc["level"], unc["n"]) == (0.2, 0.9, summary["masks"])
    result = PairResult.read(out)  # the intervals are the options', from the map and its masks
    assert result.uncertainty is not None and result.s_a is not None
    want = map_uncertainty(result.s_a, summary["masks"], q=0.2, level=0.9)
    assert np.allclose(result.uncertainty.a.ci_low, want.ci_low, atol=1e-5)
    assert np.array_equal(result.uncertainty.a.significant, want.significant)


def _csv(folder: Path, rows: list[tuple[str, str, int]]) -> Path:
    path = folder / f"pairs{len(rows)}.csv"
    path.write_text("img1,img2,same\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    return path


def test_audit_drops_per_reason_and_the_kept_maps_options(api, images, tmp_path, capsys) -> None:
    address, _ = api
    rows = [("astronaut.png", "astronaut_sunglasses.png", 1), ("astronaut.png", "bad.jpg", 1),
            ("sky.png", "astronaut.png", 0)]
    csv_path = _csv(images["a"].parent, rows)
    code, printed, err = _run(capsys, "client", "audit", "--pairs", str(csv_path), "--server", address, "--wait",
                              "--no-progress", "--detector", "mtcnn")
    assert code == 0, err
    job_id = printed.splitlines()[0].split()[1]
    assert "pairs 3 (2 failed)" in printed and "detector mtcnn" in printed
    assert "#1     astronaut.png|bad.jpg: unreadable: INVALID_ARGUMENT" in printed
    assert "#2     sky.png|astronaut.png: no_face: " in printed
    assert "dropped per reason: no_face 1, not_aligned 0, several_faces 0, unreadable 1" in printed
    with FacexplainClient(address) as client:
        summary = client.audit_result(job_id, page_size=1).summary
    assert summary is not None and summary["detector"] == "mtcnn" and "uncertainty" not in summary
    assert summary["dropped_reasons"] == {**dict.fromkeys(DROP_REASONS, 0), "unreadable": 1, "no_face": 1}
    assert [(d["index"], d["reason"]) for d in summary["dropped"]] == [(1, "unreadable"), (2, "no_face")]
    out = tmp_path / "drops"
    code, printed, err = _run(capsys, "client", "result", job_id, "--out", str(out), "--server", address)
    assert code == 0, err
    assert "dropped per reason: no_face 1" in printed
    written = json.loads((out / "summary.json").read_text())
    assert written["dropped_reasons"] == summary["dropped_reasons"] and written["detector"] == "mtcnn"

    # kept maps with their uncertainty options (the library client: CorrRISE with few masks)
    with FacexplainClient(address) as client:
        job = client.submit_audit(pairs=[(images["a"].read_bytes(), images["b"].read_bytes(), True, "p")],
                                  methods=[("corrrise", {"n_masks": 32, "seed": 2})], keep_maps=True,
                                  detector="mtcnn", fdr_q=0.2, ci_level=0.9).job
        job = client.wait(job.id, timeout=300)
        assert job.state == "done", job.error
        page = client.audit_result(job.id, page_size=1, maps=True)
    assert page.summary is not None and page.summary["uncertainty"] == {"fdr_q": 0.2, "ci_level": 0.9}
    kept = page.rows[0]["methods"][0]["result"]
    assert kept.face_a.detector == "mtcnn" and kept.face_b.detector == "mtcnn"
    unc = kept.uncertainty
    assert (unc.q, unc.level, unc.n) == (0.2, 0.9, 32)
    for face, s in ((unc.a, kept.s_a), (unc.b, kept.s_b)):
        want = map_uncertainty(s, 32, q=0.2, level=0.9)
        assert np.allclose(face.ci_high, want.ci_high, atol=1e-5) and np.array_equal(face.significant,
                                                                                    want.significant)
    out = tmp_path / "kept"
    code, printed, err = _run(capsys, "client", "result", job.id, "--out", str(out), "--server", address)
    assert code == 0, err
    assert "kept maps' uncertainty: fdr_q 0.2  ci_level 0.9" in printed
    written = json.loads((out / "pairs" / "0" / "corrrise" / "summary.json").read_text())
    assert (written["uncertainty"]["q"], written["uncertainty"]["level"]) == (0.2, 0.9)
    assert json.loads((out / "summary.json").read_text())["uncertainty"] == {"fdr_q": 0.2, "ci_level": 0.9}


@pytest.mark.parametrize(("argv", "needle"), [
    (["audit", "--dataset", "lfw-aligned:.", "--fdr-q", "0.1"], "--fdr-q/--ci-level state the uncertainty of kept"),
    (["audit", "--dataset", "lfw-aligned:.", "--keep-maps", "--methods", "corrrise", "--ci-level", "1.5"],
     "--ci-level must be in (0, 1), got 1.5"),
    (["audit", "--dataset", "lfw-aligned:.", "--keep-maps", "--fdr-q", "nan"], "--fdr-q must be in (0, 1)"),
    (["explain", "{a}", "{b}", "--out", "{out}", "--until-agreement", "0.9"], "--until-agreement needs --max-masks"),
    (["explain", "{a}", "{b}", "--out", "{out}", "--until-agreement", "0.9", "--max-masks", "32"],
     "--max-masks must be at least 64"),
    (["explain", "{a}", "{b}", "--out", "{out}", "--fdr-q", "0"], "--fdr-q must be in (0, 1), got 0.0"),
    (["verify", "{a}", "{b}", "--detector"], "--detector: expected one argument"),
])
def test_the_clients_bad_values_are_one_line_exit_2(argv, needle, images, tmp_path, capsys) -> None:
    filled = [a.format(a=images["a"], b=images["b"], out=tmp_path / "out") for a in argv]
    code, _, err = _run(capsys, "client", *filled, "--server", "127.0.0.1:1")
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_kept_maps_options_need_keep_maps_at_the_api(api, images) -> None:
    address, worker = api
    with FacexplainClient(address) as client:
        for kwargs, needle in (({"fdr_q": 0.2}, "need keep_maps"), ({"keep_maps": True, "ci_level": 2.0},
                                                                    "ci_level must be in")):
            with pytest.raises(InputError, match=needle):
                client.submit_audit(pairs=[(images["a"].read_bytes(), images["b"].read_bytes(), True, "p")],
                                    methods=["corrrise"], **kwargs)
    assert worker.ids == []


def test_corrrise_plus_with_chip_dependent_maps_runs_through_the_service(api, images, tmp_path, capsys) -> None:
    """corrrise-plus with superpixels in its basis makes its maps from the chips: the workers'
    finish passes the job's aligned chips, so the service's maps equal the in-process CLI's."""
    address, _ = api
    params = ["--method", "corrrise-plus", "--param", "superpixels=20", "--param", "n_masks=48", "--seed", "2"]
    served, local = tmp_path / "served", tmp_path / "local"
    code, _, err = _run(capsys, "client", "explain", str(images["a"]), str(images["b"]), "--out", str(served),
                        "--server", address, "--no-progress", *params)
    assert code == 0, err
    code, _, err = _run(capsys, "explain", str(images["a"]), str(images["b"]), "--out", str(local),
                        "--engine", "local", "--no-progress", *params)
    assert code == 0, err
    with np.load(served / "maps.npz") as s, np.load(local / "maps.npz") as loc:
        for name in ("s_a", "s_b"):
            assert np.abs(s[name]).max() > 0
            np.testing.assert_allclose(s[name], loc[name], atol=1e-6)
    summary = json.loads((served / "summary.json").read_text())
    assert summary["method"] == "corrrise-plus" and summary["params"]["superpixels"] == [20]
