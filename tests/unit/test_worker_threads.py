"""Worker processes share the cores: each process's local model gets cores // processes
onnxruntime threads (not one per core in every process), and the knob reaches onnxruntime."""

from __future__ import annotations

import pytest

from explainer_service import cli
from explainer_service.errors import InputError
from explainer_service.worker import ModelPool
from explainer_service.worker.app import configure_app, model_threads, process_context, worker_config


@pytest.mark.parametrize(("processes", "cores", "want"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 8, 4), (3, 8, 2), (1, 1, 1)])
def test_cores_are_divided_among_the_processes(processes, cores, want):
    assert model_threads(processes, cores) == want


def test_the_default_counts_the_cores_this_process_may_use():
    import os

    assert model_threads(1) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_process_counts_are_refused(bad):
    with pytest.raises(InputError, match="worker processes must be an integer >= 1"):
        model_threads(bad, 2)


def test_the_app_hands_its_threads_to_each_process_model_pool():
    app = configure_app("redis://127.0.0.1:1/0", engine="local", threads=1)
    assert worker_config(app).threads == 1
    assert process_context(app).models.threads == 1
    assert worker_config(configure_app("redis://127.0.0.1:1/0", engine="local")).threads is None


@pytest.mark.parametrize("bad", [0, -2, True])
def test_the_app_refuses_bad_thread_counts(bad):
    with pytest.raises(InputError, match="model threads must be an integer >= 1"):
        configure_app("redis://127.0.0.1:1/0", engine="local", threads=bad)


def test_the_worker_command_refuses_negative_threads_in_one_line(capsys):
    assert cli.main(["worker", "--redis", "redis://127.0.0.1:1/0", "--engine", "local", "--threads", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--threads must be >= 0" in err and "\n" not in err


@pytest.mark.parametrize("threads", [1, 2])
def test_a_local_model_of_the_pool_runs_with_the_threads_asked(threads):
    pool = ModelPool(engine="local", threads=threads)
    try:
        from explainer_service.settings import get_settings

        model = pool.get(get_settings().default_model)
        session = model._session  # type: ignore[attr-defined]
        assert session.get_session_options().intra_op_num_threads == threads
    finally:
        pool.close()
