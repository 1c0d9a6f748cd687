"""The service run the way separate machines run it (issue 9 section 4).

A redis-server, one Triton (``facexplain serve``), the API (``facexplain api --redis URL --triton
HOST:PORT``) and two ``facexplain worker --redis URL --triton HOST:PORT`` processes, each started
on its own: its own working folder, HOME and TMPDIR, no ``FACEXPLAIN_*`` variable from this
process (only what its command line says) and no state folder in common; only the model
repository of the install is shared, as it would be copied onto every machine. The client sends
the images inline.

An Explain (CorrRISE, N=500: six mask shards) is computed by both workers (each worker's own log
names the shards it stored) and its maps equal the in-process explanation through the same Triton
(max abs difference <= 1e-6); a small audit (CorrRISE, Deletion/Insertion) gives every pair once
with the in-process scores and AUCs, and both workers stored pairs. Every process is stopped at the end and none is
left (each carries a mark of its own in its environment).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from explainer_service.api.client import FacexplainClient
from explainer_service.pipeline import explain_pair, open_face_model
from explainer_service.processes import stop_groups
from explainer_service.serving.embedded import free_port
from explainer_service.store import EmbeddedRedis
from tests.integration.procs import MARK, marked_env, marked_processes

pytestmark = pytest.mark.slow

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-dev" / "aligned112"
EXPLAIN = ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg")
EXPLAIN_PARAMS = {"n_masks": 500, "seed": 0}
# (img1, img2, same): an audit of four pairs, CorrRISE with Deletion/Insertion
AUDIT = [
    ("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", True),
    ("Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg", "Akhmed_Zakayev/Akhmed_Zakayev_0003.jpg", True),
    ("Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg", "Dean_Barker/Dean_Barker_0001.jpg", False),
    ("Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg", False),
]
AUDIT_PARAMS = {"n_masks": 48, "seed": 2}
STEPS = 5
STARTUP_S = 300.0  # a shared 2-core machine: Triton alone may take a minute


@dataclass
class Machine:
    """One process started as if on a machine of its own."""

    name: str
    root: Path
    env: dict[str, str]
    mark: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self, args: list[str]) -> Machine:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "explainer_service.cli", *args], cwd=self.root, env=self.env,
            stdin=subprocess.DEVNULL, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = STARTUP_S) -> re.Match[str]:
        """The first match of ``pattern`` in the log (AssertionError with its tail if the process
        ends or the time runs out first)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {pattern!r} in its log:\n{self.text()[-3000:]}")


def _machine(tmp: Path, name: str) -> Machine:
    """A folder, HOME and TMPDIR of its own and an environment without our settings."""
    root = tmp / name
    for sub in ("home", "tmp"):
        (root / sub).mkdir(parents=True)
    env, mark = marked_env()
    env = {k: v for k, v in env.items() if not k.startswith(("FACEXPLAIN_", "XDG_")) or k == MARK}
    env.update(HOME=str(root / "home"), TMPDIR=str(root / "tmp"))
    return Machine(name, root, env, mark)


@dataclass
class Cluster:
    api_address: str
    triton_url: str
    workers: list[Machine]
    machines: list[Machine] = field(default_factory=list)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("distributed")
    machines: list[Machine] = []
    with EmbeddedRedis(tmp / "redis", startup_timeout=60) as redis:
        try:
            grpc_port, http_port = free_port(), free_port()
            while http_port == grpc_port:
                http_port = free_port()
            triton = _machine(tmp, "triton").start(["serve", "--grpc-port", str(grpc_port), "--http-port", str(http_port)])
            machines.append(triton)
            triton.wait_for(r"Triton ready: gRPC (\S+),")
            triton_url = f"127.0.0.1:{grpc_port}"
            common = ["--redis", redis.url, "--triton", triton_url]
            api = _machine(tmp, "api").start(["api", *common, "--port", "0"])
            machines.append(api)
            workers = [_machine(tmp, f"worker-{i}").start(["worker", *common]) for i in (1, 2)]
            machines.extend(workers)
            address = api.wait_for(r"serving on (\S+)").group(1)
            for worker in workers:
                worker.wait_for(r"facexplain-\d+@\S+ ready")
            yield Cluster(address, triton_url, workers, machines)
        finally:
            for machine in reversed(machines):
                if machine.proc is not None:
                    stop_groups([machine.proc])
            marks = [m.mark for m in machines]
            deadline = time.monotonic() + 30
            while any(marked_processes(m) for m in marks) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = {m.name: marked_processes(m.mark) for m in machines if marked_processes(m.mark)}
            assert left == {}, f"processes left running: {left}"


def _stored_by_each(cluster: Cluster, job_id: str, what: str) -> list[int]:
    """How many units (``shard`` or ``pair``) of the job each worker's log says it stored."""
    pattern = re.compile(rf"job {job_id}: {what} \S+ stored by")
    return [len(pattern.findall(w.text())) for w in cluster.workers]


def _wait_logged(cluster: Cluster, job_id: str, what: str, total: int, timeout: float = 30) -> list[int]:
    """The per-worker counts once the logs name all ``total`` units (log lines may trail the job)."""
    deadline = time.monotonic() + timeout
    counts = _stored_by_each(cluster, job_id, what)
    while sum(counts) < total and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = _stored_by_each(cluster, job_id, what)
    return counts


def test_explain_is_shared_by_two_workers_and_equals_the_in_process_maps(cluster: Cluster) -> None:
    a, b = ((LFW / p).read_bytes() for p in EXPLAIN)
    with FacexplainClient(cluster.api_address, timeout=60) as client:
        submitted = client.explain(a, b, params=EXPLAIN_PARAMS, force=True)
        job = client.wait(submitted.job.id, timeout=900)
        assert job.state == "done", job
        result = client.get_result(job.id)
    assert result.engine == f"triton {cluster.triton_url}"
    counts = _wait_logged(cluster, job.id, "shard", 6)  # 500 masks in shards of 96: six shards
    assert sum(counts) == 6 and min(counts) >= 1, f"shards stored per worker: {counts}"
    with open_face_model(engine="triton", triton_url=cluster.triton_url) as model:
        local = explain_pair(a, b, model, "corrrise", EXPLAIN_PARAMS)
    assert abs(result.score - local.score) <= 1e-6 and result.decision == local.decision
    for name in ("s_a", "s_b"):
        got, want = getattr(result, name), getattr(local, name)
        assert got is not None and want is not None and got.shape == want.shape and got.dtype == want.dtype
        assert float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) <= 1e-6, name


def test_a_small_audit_is_shared_by_two_workers_and_equals_the_in_process_results(cluster: Cluster) -> None:
    from explainer_service.evaluation import score_maps
    from explainer_service.metrics import default_steps

    pairs = [((LFW / x).read_bytes(), (LFW / y).read_bytes(), same, f"{Path(x).stem}|{Path(y).stem}")
             for x, y, same in AUDIT]
    with FacexplainClient(cluster.api_address, timeout=60) as client:
        submitted = client.submit_audit(pairs=pairs, methods=[("corrrise", AUDIT_PARAMS)],
                                        metrics=["deletion", "insertion"], steps=STEPS, force=True)
        job = client.wait(submitted.job.id, timeout=900)
        assert job.state == "done" and job.done == len(AUDIT), job
        rows = list(client.audit_rows(job.id))
        summary = client.audit_result(job.id).summary
    assert [r["index"] for r in rows] == list(range(len(AUDIT)))
    assert summary is not None and summary["pairs"] == len(AUDIT)
    counts = _wait_logged(cluster, job.id, "pair", len(AUDIT))
    assert sum(counts) == len(AUDIT) and min(counts) >= 1, f"pairs stored per worker: {counts}"
    # in-process through the same Triton: the scores, then the maps seen through their
    # Deletion/Insertion AUCs (GetResult does not send an audit's kept maps)
    with open_face_model(engine="triton", triton_url=cluster.triton_url) as model:
        for row, (a, b, same, _name) in zip(rows, pairs, strict=True):
            local = explain_pair(a, b, model, "corrrise", AUDIT_PARAMS)
            assert row["error"] is None and row["same"] == same
            assert abs(row["score"] - local.score) <= 1e-6 and row["decision"] == local.decision
            chip_a, chip_b = local.face_a.chip, local.face_b.chip
            assert chip_a is not None and chip_b is not None and local.s_a is not None and local.s_b is not None
            deletion, insertion = score_maps(chip_a[None], chip_b[None], local.s_a[None], local.s_b[None], model,
                                             steps=default_steps(STEPS))
            outcome = row["methods"][0]
            assert outcome["method"] == "corrrise"
            assert abs(outcome["deletion"]["auc"] - float(deletion.auc)) <= 1e-4, row["index"]
            assert abs(outcome["insertion"]["auc"] - float(insertion.auc)) <= 1e-4, row["index"]


def test_no_process_shares_a_folder_or_our_settings(cluster: Cluster) -> None:
    """The parts share nothing but the addresses on their command lines."""
    for machine in cluster.machines:
        assert machine.proc is not None and machine.proc.poll() is None, machine.name
        environ = dict(
            item.split("=", 1) for item in
            Path(f"/proc/{machine.proc.pid}/environ").read_text().split("\0") if "=" in item
        )
        assert {k for k in environ if k.startswith("FACEXPLAIN_")} == {MARK}
        assert environ["HOME"] == str(machine.root / "home")
        assert os.readlink(f"/proc/{machine.proc.pid}/cwd") == str(machine.root)
