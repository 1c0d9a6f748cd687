"""The stack record and process handling of ``facexplain up`` without servers: options checked,
the record round-trips, a pid is ours only with its start time, a part's whole process group is
stopped (SIGKILL after the grace when it ignores SIGTERM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from explainer_service.errors import BackendError, InputError
from explainer_service.stack import Part, Stack, StackConfig, part_alive, read_stack, stop_part, stop_stack


@pytest.mark.parametrize(
    "kw",
    [{"workers": 0}, {"workers": 65}, {"api_port": -1}, {"api_port": 70000}, {"engine": "gpu"},
     {"engine": "local", "triton_url": "127.0.0.1:8001"}],
)
def test_bad_options_are_input_errors(tmp_path: Path, kw: dict[str, object]) -> None:
    with pytest.raises(InputError):
        StackConfig(state=tmp_path, **kw)  # type: ignore[arg-type]


def test_the_record_round_trips_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert read_stack(tmp_path) is None
    stack = Stack(state=tmp_path, redis_url="redis://127.0.0.1:1/0", api_address="127.0.0.1:2", engine="local",
                  parts=[Part(name="api", kind="api", pid=123, started=456, port=2, address="127.0.0.1:2")])
    stack.save()
    assert read_stack(tmp_path) == stack
    (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(BackendError, match="stack.json"):
        read_stack(tmp_path)


def _sleeper(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def _part(proc: subprocess.Popen[bytes]) -> Part:
    started = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return Part(name="x", kind="worker", pid=proc.pid, started=started)


def test_a_pid_is_ours_only_with_its_start_time_and_stop_ends_the_group(tmp_path: Path) -> None:
    # a parent and a child in one process group; the parent ignores SIGTERM, so SIGKILL ends it
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = _sleeper(script)
    try:
        part = _part(proc)
        assert part_alive(part)
        assert not part_alive(Part(name="x", kind="worker", pid=proc.pid, started=part.started + 1))
        assert stop_part(part, grace=1.0)
        proc.wait(5)
        assert not part_alive(part)
        assert not stop_part(part, grace=1.0)  # nothing left to stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_down_stops_the_recorded_parts_and_removes_the_record(tmp_path: Path) -> None:
    proc = _sleeper("import time; time.sleep(60)")
    try:
        Stack(state=tmp_path, redis_url="redis://127.0.0.1:1/0", api_address="", engine="local",
              parts=[_part(proc)]).save()
        assert stop_stack(tmp_path, grace=5) == ["x"]
        assert proc.wait(5) is not None and read_stack(tmp_path) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
