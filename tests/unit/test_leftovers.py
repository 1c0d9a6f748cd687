"""Owner-tagged shared memory and run folders: only those of dead owners are cleaned; SIGTERM unwinds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from explainer_service.serving import leftovers
from explainer_service.serving.leftovers import (
    SHM_PREFIX,
    clean_stale,
    make_run_dir,
    new_tag,
    pid_alive,
    remove_shm,
    shm_names,
    unwind_on_sigterm,
)


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_tags_and_folders_carry_the_owner_pid(tmp_path):
    assert new_tag().startswith(f"{os.getpid()}_")
    assert new_tag() != new_tag()
    run = make_run_dir(tmp_path / "run")
    assert run.is_dir() and run.name.startswith(f"triton-{os.getpid()}-")


def test_pid_alive():
    assert pid_alive(os.getpid()) and pid_alive(1)
    assert not pid_alive(0) and not pid_alive(-5)


def test_only_dead_owners_leftovers_are_removed(tmp_path, dead_pid):
    shm = tmp_path / "shm"
    shm.mkdir()
    names = {
        "dead": f"{SHM_PREFIX}{dead_pid}_abc_in0",
        "dead_py": f"{SHM_PREFIX}{dead_pid}_abc_py_1234",
        "mine": f"{SHM_PREFIX}{os.getpid()}_abc_in0",
        "init": f"{SHM_PREFIX}1_abc_in0",
        "foreign": "triton_python_backend_shm_region_x",
        "no_pid": f"{SHM_PREFIX}x_in0",
    }
    for n in names.values():
        (shm / n).write_bytes(b"x")
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / f"triton-{dead_pid}-abc123").mkdir()
    (runtime / f"triton-{dead_pid}-abc123" / "tritonserver.log").write_text("x")
    (runtime / f"triton-{os.getpid()}-abc123").mkdir()
    (runtime / f"other-{dead_pid}-abc123").mkdir()
    (runtime / "last-failed-start.log").write_text("x")

    removed = clean_stale(runtime, shm_dir=shm)

    assert sorted(os.listdir(shm)) == sorted(v for k, v in names.items() if not k.startswith("dead"))
    assert sorted(p.name for p in runtime.iterdir()) == sorted(
        [f"triton-{os.getpid()}-abc123", f"other-{dead_pid}-abc123", "last-failed-start.log"]
    )
    assert len(removed) == 3
    assert clean_stale(None, shm_dir=shm) == []  # nothing more; no runtime folder is fine
    assert clean_stale(tmp_path / "missing", shm_dir=tmp_path / "no-shm") == []


def test_remove_shm_by_prefix(tmp_path):
    for n in ("facexplain_1_a_py_x", "facexplain_1_a_py_y", "facexplain_1_b_py_x"):
        (tmp_path / n).write_bytes(b"")
    assert remove_shm("facexplain_1_a_py_", tmp_path) == ["facexplain_1_a_py_x", "facexplain_1_a_py_y"]
    assert shm_names("facexplain_", tmp_path) == ["facexplain_1_b_py_x"]


@pytest.fixture
def fresh_guard(monkeypatch):
    """SIGTERM at its default action and an unheld guard for the test, whatever servers other tests
    keep running for the whole session (a session-wide redis-server holds the real guard)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    monkeypatch.setattr(leftovers, "_GUARD", leftovers._SigtermGuard())
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_unwinds_while_held_and_only_then(fresh_guard):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    release = unwind_on_sigterm()
    inner = unwind_on_sigterm()  # nested holders share the handler
    try:
        with pytest.raises(SystemExit) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 1.0)  # let the handler run
        assert info.value.code == 143
    finally:
        inner()
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # still held by the outer one
        release()
        release()  # twice is harmless
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_program_that_handles_sigterm_keeps_its_handler(fresh_guard):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        release = unwind_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is mine
        release()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_is_left_alone_outside_the_main_thread(fresh_guard):
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(unwind_on_sigterm()))
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    out[0]()
    assert leftovers._GUARD._users == 0
