"""``facexplain client ...``: the API from the command line (a client of ``facexplain api``).

Thin shims over :class:`~explainer_service.api.client.FacexplainClient`: ``explain`` sends a pair
with the same options as ``facexplain explain``, follows the job with a progress bar and writes the
same three files (summary.json, maps.npz, figure.png) with ``PairResult.write``; ``verify``,
``result JOB --out DIR``, ``jobs``, ``cancel JOB``, ``delete JOB``. Errors the server answers come
back as the library's errors, so the exit codes are the CLI's (bad input 2 with one line naming
it, a server that does not answer 75).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, CancelledError, InputError
from ..methods.registry import METHOD_NAMES
from ..settings import get_settings
from .common import check_input_files, check_out_dir, positive_int, terminal_progress

__all__ = ["register_client"]


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    settings = get_settings()
    p.add_argument("--server", default=f"127.0.0.1:{settings.api_port}", metavar="HOST:PORT",
                   help=f"the API server (default 127.0.0.1:{settings.api_port}, FACEXPLAIN_API_PORT)")
    p.add_argument("--token-file", default=None, help="bearer token file (default: FACEXPLAIN_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="CA certificate (PEM) to trust: connect with TLS")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one call may take (default 60)")


def register_client(sub: Any) -> None:
    p = sub.add_parser("client", help="use a facexplain API server (facexplain api / up)",
                       description="Talk to a facexplain API server: explain, verify, results and jobs.")
    csub = p.add_subparsers(dest="client_command", required=True)

    ex = csub.add_parser("explain", help="explain a pair on the server; writes the files of facexplain explain",
                         description="Send images A and B to the server, follow the job, and write "
                         "summary.json, maps.npz and figure.png into --out (as facexplain explain does).")
    ex.add_argument("image_a", help="image A (a photo, or an aligned crop)")
    ex.add_argument("image_b", help="image B")
    ex.add_argument("--out", required=True, help="output folder (summary.json, maps.npz, figure.png)")
    ex.add_argument("--model", default="", help="face model (default: the server's default)")
    ex.add_argument("--method", default="corrrise", choices=METHOD_NAMES, help="explanation method (default corrrise)")
    ex.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a parameter of the method (repeatable; see facexplain methods)")
    ex.add_argument("--budget", type=positive_int, default=None, help="perturbations per face of a sampling method")
    ex.add_argument("--seed", type=int, default=None, help="seed of the random perturbations (default 0)")
    corr = ex.add_argument_group("CorrRISE options (--method corrrise)")
    corr.add_argument("--masks", type=positive_int, default=None, help="number of masks N (default 500)")
    corr.add_argument("--patches", type=positive_int, default=None, help="patches per mask (default 10)")
    corr.add_argument("--patch-size", type=positive_int, default=None, help="patch side in chip pixels")
    corr.add_argument("--values", default=None, choices=["uniform", "binary"], help="patch values")
    corr.add_argument("--per-pixel", action="store_true", help="random value per pixel instead of per patch")
    corr.add_argument("--inside", action="store_true", help="keep patches fully inside the chip")
    corr.add_argument("--correlation", default=None, choices=["pearson", "spearman"], help="per-pixel correlation")
    ex.add_argument("--force", action="store_true", help="recompute even when the server has this result")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_connection_args(ex)
    ex.set_defaults(func=_cmd_explain)

    ve = csub.add_parser("verify", help="verify a pair now: score, threshold, decision")
    ve.add_argument("image_a")
    ve.add_argument("image_b")
    ve.add_argument("--model", default="", help="face model (default: the server's default)")
    _add_connection_args(ve)
    ve.set_defaults(func=_cmd_verify)

    re_ = csub.add_parser("result", help="write a finished job's files (summary.json, maps.npz, figure.png)")
    re_.add_argument("job", help="job id")
    re_.add_argument("--out", required=True, help="output folder")
    _add_connection_args(re_)
    re_.set_defaults(func=_cmd_result)

    jo = csub.add_parser("jobs", help="list the server's jobs, newest first")
    jo.add_argument("--state", default=None, choices=["queued", "running", "done", "failed", "cancelled"])
    jo.add_argument("--limit", type=positive_int, default=100, help="at most this many (default 100)")
    _add_connection_args(jo)
    jo.set_defaults(func=_cmd_jobs)

    ca = csub.add_parser("cancel", help="ask a job to stop")
    ca.add_argument("job", help="job id")
    _add_connection_args(ca)
    ca.set_defaults(func=_cmd_cancel)

    de = csub.add_parser("delete", help="remove a job and all its data (images, maps) now")
    de.add_argument("job", help="job id")
    _add_connection_args(de)
    de.set_defaults(func=_cmd_delete)


def _client(args: argparse.Namespace) -> Any:
    from ..api.client import FacexplainClient
    from ..api.server import read_token

    token = read_token(args.token_file) if args.token_file else get_settings().token
    ca = None
    if args.tls_ca:
        try:
            ca = Path(args.tls_ca).expanduser().read_bytes()
        except OSError as e:
            raise InputError(f"--tls-ca {args.tls_ca}: cannot be read ({e.strerror or e})") from None
    if not args.timeout > 0:
        raise InputError(f"--timeout must be > 0, got {args.timeout}")
    return FacexplainClient(args.server, token=token, timeout=args.timeout, tls_ca=ca)


def _write(result: Any, out: Path) -> int:
    paths = result.write(out)
    thr = "none" if result.threshold is None else f"{result.threshold:.4f}"
    print(f"score {result.score:.4f}  threshold {thr}  decision {result.decision}")
    print(f"wrote {paths['summary']}, {paths['maps']}, {paths['figure']} ({result.timing.total_s:.1f} s)")
    return EXIT_OK


def _read_image(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e})") from None


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import method_params

    check_input_files([args.image_a, args.image_b])
    params = method_params(args)
    out = check_out_dir(args.out)
    data_a, data_b = _read_image(args.image_a), _read_image(args.image_b)
    with _client(args) as client:
        submitted = client.explain(
            data_a, data_b, model=args.model, method=args.method, params=params, force=args.force,
            names=(args.image_a, args.image_b),
        )
        job = submitted.job
        print(f"job {job.id}{' (stored result)' if submitted.reused else ''}", flush=True)
        if not job.final:
            with terminal_progress(args, args.method) as progress:
                job = client.wait(job.id, progress=progress)
        if job.state == "failed":
            raise job.error.exception() if job.error is not None else InputError(f"job {job.id} failed")
        if job.state == "cancelled":
            raise CancelledError(f"job {job.id} was cancelled")
        return _write(client.get_result(job.id), out)


def _cmd_verify(args: argparse.Namespace) -> int:
    check_input_files([args.image_a, args.image_b])
    with _client(args) as client:
        v = client.verify(_read_image(args.image_a), _read_image(args.image_b), model=args.model,
                          names=(args.image_a, args.image_b))
    thr = "none" if v.threshold is None else f"{v.threshold:.4f}"
    print(f"score {v.score:.4f}  threshold {thr}  decision {v.decision}  model {v.model}")
    return EXIT_OK


def _cmd_result(args: argparse.Namespace) -> int:
    out = check_out_dir(args.out)
    with _client(args) as client:
        return _write(client.get_result(args.job), out)


def _cmd_jobs(args: argparse.Namespace) -> int:
    import time

    with _client(args) as client:
        jobs = client.list_jobs(state=args.state, limit=args.limit)
    print(f"{'id':<64}  {'kind':<7}  {'state':<9}  {'progress':<15}  {'model':<16}  {'methods':<12}  created")
    for j in jobs:
        created = "-" if j.created_at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at))
        print(f"{j.id:<64}  {j.kind:<7}  {j.state:<9}  {f'{j.done}/{j.total} {j.unit}':<15}  {j.model:<16}  "
              f"{','.join(j.methods):<12}  {created}")
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel(args.job)
    note = " (cancel requested: it stops between batches)" if not job.final else ""
    print(f"job {job.id}: {job.state}{note}")
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete(args.job)
    print(f"job {args.job}: deleted (every key of it removed)")
    return EXIT_OK
