"""``facexplain worker``: a Celery worker of the explain queue, on its own or beside others (on
this machine or any other that reaches the same Redis and a Triton server)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import add_triton_arg, positive_int


def register_worker(sub: Any) -> None:
    from ..settings import get_settings

    p = sub.add_parser(
        "worker",
        help="run a worker that computes queued explanations (Ctrl-C or SIGTERM: finish the task, then stop)",
    )
    p.add_argument("--redis", metavar="URL", default=None,
                   help=f"the job store and queue (default: FACEXPLAIN_REDIS_URL, else {get_settings().redis_url})")
    p.add_argument("--engine", default="auto", choices=["auto", "local", "triton"],
                   help="where the models run: triton (the server of --triton/FACEXPLAIN_TRITON_URL), local "
                   "(in-process onnxruntime in each worker process); auto: triton when an address is given, else local")
    add_triton_arg(p)
    p.add_argument("--concurrency", type=positive_int, default=1,
                   help="worker processes, each running one task at a time (default 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime threads per worker process with the local engine (default: the cores "
                   "divided among the --concurrency processes, at least 1; 0: onnxruntime's own default, "
                   "one per core in every process)")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level of the worker's log on stderr (default info)")
    p.set_defaults(func=_cmd_worker)


def _cmd_worker(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..settings import get_settings
    from ..store import RedisJobStore
    from ..worker import QUEUE, make_app
    from ..worker.app import model_threads
    from .common import triton_url

    url = args.redis or get_settings().redis_url
    triton = triton_url(args) if args.engine != "local" else None
    if args.threads is not None and args.threads < 0:
        raise InputError(f"--threads must be >= 0 (0: onnxruntime's default), got {args.threads}")
    threads = model_threads(args.concurrency) if args.threads is None else (args.threads or None)
    app = make_app(url, engine=args.engine, triton_url=triton, threads=threads)
    with RedisJobStore(url) as store:  # a clear error now rather than Celery's reconnect loop
        store.ping()
    app.worker_main([
        "worker",
        f"--concurrency={args.concurrency}",
        "--pool=prefork",
        f"--hostname=facexplain-{os.getpid()}@%h",
        f"--queues={QUEUE}",
        "--without-gossip",
        "--without-mingle",
        f"--loglevel={args.loglevel.upper()}",
    ])
    return 0
