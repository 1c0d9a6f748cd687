"""facexplain commands as process groups: a ready line is found (from an offset: a restarted
process appends to its log), an exit before it is an error with the log, and stopping a group
ends its children too."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from explainer_service.errors import BackendError
from explainer_service.processes import start_command, stop_groups, wait_for_line


def test_a_ready_line_is_found_and_an_early_exit_is_an_error_with_the_log(tmp_path):
    log = tmp_path / "methods.log"
    proc = start_command(["methods"], log)
    assert "corrrise" in wait_for_line(log, proc, "corrrise", timeout=60, what="facexplain methods")
    proc.wait(30)
    size = log.stat().st_size
    again = start_command(["methods"], log)  # appends; the old lines are not looked at
    with pytest.raises(BackendError, match=r"facexplain methods exited \(0\) before it was ready"):
        wait_for_line(log, again, "corrrise", timeout=60, what="facexplain methods", after=size * 10)
    assert log.stat().st_size > size


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies do not count)."""
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def test_stopping_a_group_ends_its_children(tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print('up', flush=True); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == b"up"
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('up', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE, start_new_session=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == b"up"
    t0 = time.monotonic()
    stop_groups([parent, stubborn], grace_s=1.0)
    assert parent.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 15
    deadline = time.monotonic() + 10
    while _group_alive(parent.pid):  # the child got the SIGTERM too (a zombie until reaped)
        assert time.monotonic() < deadline, "a member of the stopped group is still running"
        time.sleep(0.05)
    parent.stdout.close()
    stubborn.stdout.close()
