"""ListDatasetPairs and GetDatasetPair on a real in-process API (local engine, jobs recorded, not
run) whose allowed dataset roots are ../shared's LFW and a temporary folder with ways out of it.

The pair list matches pairs.txt read by hand (names, same/different, order, pages); a pair's
bytes are the files' bytes, so explaining them names the same job as explaining the files; every
escape (``..``, an absolute path outside, a symlink pointing out, a CSV inside naming images
outside, a FIFO) is INVALID_ARGUMENT naming the problem, an image over the byte limit
RESOURCE_EXHAUSTED, and a server without roots answers FAILED_PRECONDITION naming --dataset-root.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from explainer_service.api.client import FacexplainClient
from explainer_service.api.pb import service_pb2, service_pb2_grpc
from explainer_service.api.server import BackgroundServer
from explainer_service.api.service import ApiService
from explainer_service.api.status import DatasetsNotAllowedError
from explainer_service.errors import InputError, LimitExceededError
from explainer_service.settings import get_settings
from explainer_service.store import EmbeddedRedis, RedisJobStore
from tests.conftest import SHARED
from tests.inprocess_api import RecordingQueue

LFW = SHARED / "data" / "lfw-dev"
IMAGE_LIMIT = 64 * 1024  # LFW's aligned JPEGs are ~5 KB; big.jpg below is over it

pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason=f"needs {LFW} (the ../shared data beside the checkout)")


def _pairs_txt() -> list[tuple[str, bool]]:
    """pairs.txt's pairs as ``(name, same)`` (read here, independently of the dataset readers)."""
    lines = (LFW / "pairs.txt").read_text().splitlines()[1:]
    out = []
    for line in lines:
        f = line.split("\t")
        if len(f) == 3:
            out.append((f"{f[0]}_{int(f[1]):04d}.jpg|{f[0]}_{int(f[2]):04d}.jpg", True))
        else:
            out.append((f"{f[0]}_{int(f[1]):04d}.jpg|{f[2]}_{int(f[3]):04d}.jpg", False))
    return out


@pytest.fixture(scope="module")
def escapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An allowed root with ways out of it, and the folder outside it they lead to."""
    tmp = tmp_path_factory.mktemp("dataset-pairs")
    a = LFW / "aligned112" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    b = LFW / "aligned112" / "Abel_Pacheco" / "Abel_Pacheco_0004.jpg"
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "a.jpg").write_bytes(a.read_bytes())
    (outside / "pairs.csv").write_text("img1,img2,same\na.jpg,a.jpg,1\n")
    root = tmp / "root"
    root.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "escape.csv").write_text(f"img1,img2,same\n{outside / 'a.jpg'},{b},1\n")
    (root / "a.jpg").write_bytes(a.read_bytes())
    (root / "big.jpg").write_bytes(a.read_bytes() + b"\0" * (IMAGE_LIMIT + 1))
    (root / "big.csv").write_text("img1,img2,same\na.jpg,big.jpg,0\n")
    os.mkfifo(root / "fifo.jpg")
    (root / "fifo.csv").write_text("img1,img2,same\na.jpg,fifo.jpg,0\n")
    return root, outside


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-dataset-pairs"), startup_timeout=30) as server:
        yield server.url


@contextmanager
def _serve(redis_url: str, roots: tuple[Path, ...]) -> Iterator[tuple[str, RecordingQueue]]:
    base = get_settings()
    settings = dataclasses.replace(base, dataset_roots=roots,
                                   limits=dataclasses.replace(base.limits, max_image_bytes=IMAGE_LIMIT))
    store = RedisJobStore(redis_url, prefix=f"dsp{uuid.uuid4().hex[:8]}")
    queue = RecordingQueue()
    try:
        with ApiService(store, settings=settings, engine="local", enqueue=queue) as service, \
                BackgroundServer(service) as address:
            yield address, queue
    finally:
        store.close()


@pytest.fixture(scope="module")
def api(redis_url: str, escapes: tuple[Path, Path]) -> Iterator[tuple[str, RecordingQueue]]:
    """An API allowing LFW (the first root: relative specs) and the escapes' root."""
    with _serve(redis_url, (LFW, escapes[0])) as served:
        yield served


def test_pairs_listed_by_pages_as_pairs_txt_has_them(api: tuple[str, RecordingQueue]) -> None:
    address, _ = api
    want = _pairs_txt()
    assert len(want) == 3000
    with FacexplainClient(address) as client:
        first = client.list_dataset_pairs("lfw-aligned:.", page_size=7)
        assert first.total == 3000 and first.next_page_token == "7" and len(first.pairs) == 7
        assert first.pairs[0].name == "Abel_Pacheco_0001.jpg|Abel_Pacheco_0004.jpg" and first.pairs[0].same
        middle = client.list_dataset_pairs("lfw-aligned:.", page_token="298", page_size=4)
        assert [(p.index, p.same) for p in middle.pairs] == [(298, True), (299, True), (300, False), (301, False)]
        last = client.list_dataset_pairs("lfw-aligned:.", page_token="2999")
        assert [p.index for p in last.pairs] == [2999] and last.next_page_token == ""
        listed = list(client.dataset_pairs("lfw:.", page_size=1000))  # three pages, the raw images
        assert [(p.name, p.same) for p in listed] == want
        assert [p.index for p in listed] == list(range(3000))
        assert client.list_dataset_pairs("lfw-aligned:.").pairs[-1].index == 99  # the default page: 100


def test_a_pair_is_its_files_bytes_and_names_the_same_job(api: tuple[str, RecordingQueue]) -> None:
    address, queue = api
    want = _pairs_txt()
    with FacexplainClient(address) as client:
        pair = client.dataset_pair("lfw-aligned:.", 300)
        assert (pair.index, pair.name, pair.same) == (300, want[300][0], False)
        assert pair.name_a == "aligned112/Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg"
        assert pair.name_b == "aligned112/Dean_Barker/Dean_Barker_0001.jpg"
        assert pair.image_a == (LFW / pair.name_a).read_bytes() and pair.image_b == (LFW / pair.name_b).read_bytes()
        # explained as sent by the dashboard: the job id is the content hash of those bytes
        submitted = client.explain(pair.image_a, pair.image_b, method="gradcam", names=(pair.name_a, pair.name_b))
        again = client.explain((LFW / pair.name_a).read_bytes(), (LFW / pair.name_b).read_bytes(), method="gradcam")
        assert again.reused and again.job.id == submitted.job.id and queue.ids == [submitted.job.id]


@pytest.mark.parametrize(("spec", "index", "words"), [
    ("lfw-aligned:..", None, "may not contain '..'"),
    ("lfw-aligned:../lfw-dev", None, "may not contain '..'"),
    ("lfw-aligned:/etc", None, "outside the allowed dataset roots"),
    ("csv:{outside}/pairs.csv", None, "outside the allowed dataset roots"),
    ("csv:{root}/out/pairs.csv", None, "outside the allowed dataset roots"),  # a symlink pointing out
    ("csv:{root}/escape.csv", 0, "outside the allowed dataset roots"),  # images named outside
    ("csv:{root}/fifo.csv", 0, "not a regular file|is a FIFO"),
    ("lfw-aligned:.", 3000, "outside its 3000 pairs"),
    ("lfw-aligned:.", -1, "outside its 3000 pairs"),
    ("nope:.", None, "nope"),
    ("lfw-aligned", None, "KIND:PATH"),
    ("", None, "KIND:PATH"),
    ("lfw-aligned:no-such-folder", None, "no-such-folder"),
])
def test_escapes_and_bad_requests_are_invalid_argument(api: tuple[str, RecordingQueue], escapes: tuple[Path, Path],
                                                       spec: str, index: int | None, words: str) -> None:
    import re

    address, _ = api
    root, outside = escapes
    spec = spec.format(root=root, outside=outside)
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.FacexplainStub(channel)
        calls = [lambda: stub.GetDatasetPair(service_pb2.GetDatasetPairRequest(dataset=spec, index=index or 0),
                                             timeout=30)]
        if index is None:
            calls.append(lambda: stub.ListDatasetPairs(service_pb2.ListDatasetPairsRequest(dataset=spec), timeout=30))
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert re.search(words, info.value.details() or ""), info.value.details()
            assert "Traceback" not in (info.value.details() or "")
    if spec.endswith("escape.csv"):  # its list is inside the root: the names may be listed, not the images read
        with FacexplainClient(address) as client:
            assert [p.name for p in client.dataset_pairs(spec)] == ["a.jpg|Abel_Pacheco_0004.jpg"]


def test_pages_out_of_range_and_images_over_the_limit(api: tuple[str, RecordingQueue],
                                                      escapes: tuple[Path, Path]) -> None:
    address, _ = api
    root, _ = escapes
    with FacexplainClient(address) as client:
        with pytest.raises(InputError, match="page_size"):
            client.list_dataset_pairs("lfw-aligned:.", page_size=1001)
        with pytest.raises(InputError, match="page_token"):
            client.list_dataset_pairs("lfw-aligned:.", page_token="x")
        with pytest.raises(InputError, match="index"):
            client.dataset_pair("lfw-aligned:.", -1)  # refused by the client before sending
        with pytest.raises(LimitExceededError, match="FACEXPLAIN_MAX_IMAGE_BYTES") as info:
            client.dataset_pair(f"csv:{root}/big.csv", 0)
        assert "pair 0 image b" in str(info.value)
        assert client.list_dataset_pairs(f"csv:{root}/big.csv").total == 1


def test_a_server_without_dataset_roots_says_how_to_allow_one(redis_url: str) -> None:
    with _serve(redis_url, ()) as (address, _):
        with FacexplainClient(address) as client:
            with pytest.raises(DatasetsNotAllowedError, match="--dataset-root"):
                client.list_dataset_pairs("lfw-aligned:.")
            with pytest.raises(DatasetsNotAllowedError, match="--dataset-root"):
                client.dataset_pair("lfw-aligned:.", 0)
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.FacexplainStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ListDatasetPairs(service_pb2.ListDatasetPairsRequest(dataset="lfw-aligned:."), timeout=30)
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
