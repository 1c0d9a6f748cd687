"""``facexplain client ...``: the API from the command line (a client of ``facexplain api``).

Thin shims over :class:`~explainer_service.api.client.FacexplainClient`: ``explain`` sends a pair
with the same options as ``facexplain explain``, follows the job with a progress bar and writes the
same three files (summary.json, maps.npz, figure.png) with ``PairResult.write``; ``audit`` submits
a dataset spec on the server or the pairs of a local CSV (``img1,img2,same``; the images are sent)
and, with ``--wait``, follows it and prints the summary (dropped pairs and worst pairs included);
``verify``, ``result JOB --out DIR`` (an explanation's three files, or an audit's summary.json,
pairs.csv and kept results: ``audit_files``), ``jobs``, ``cancel JOB``, ``delete JOB``.
``--detector NAME`` on explain, audit and verify names the server's face detector (the server
checks it: an unknown one is its INVALID_ARGUMENT naming the choices). Errors the server answers come
back as the library's errors, so the exit codes are the CLI's (bad input 2 with one line naming
it, a server that does not answer 75).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, CancelledError, DeadlineExceededError, InputError
from ..methods.registry import METHOD_NAMES
from ..settings import get_settings
from .common import check_input_files, check_out_dir, positive_int, terminal_progress
from .explain import add_uncertainty_args, uncertainty_options

__all__ = ["register_client"]


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    settings = get_settings()
    p.add_argument("--server", default=settings.client_server, metavar="HOST:PORT",
                   help=f"the API server (default: FACEXPLAIN_SERVER, else 127.0.0.1:{settings.api_port})")
    p.add_argument("--token-file", default=None, help="bearer token file (default: FACEXPLAIN_TOKEN)")
    p.add_argument("--tls-ca", default=str(settings.tls_ca) if settings.tls_ca else None,
                   help="CA certificate (PEM) to trust: connect with TLS (default: FACEXPLAIN_TLS_CA)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one call may take (default 60)")


def _add_detector_arg(p: argparse.ArgumentParser) -> None:
    from ..alignment import DETECTORS

    p.add_argument("--detector", default="", metavar="NAME",
                   help=f"face detector the server aligns photos with ({', '.join(DETECTORS)}; default: the "
                   "server's, auto: HOG, then MTCNN when HOG finds no face); pre-aligned 112x112 crops are not detected")


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
    corr.add_argument("--until-agreement", type=float, default=None, metavar="R",
                      help="early stopping: the server draws 64-mask steps until the split-half agreement "
                      "predicted for both maps reaches R in (0, 1), or --max-masks are spent")
    corr.add_argument("--max-masks", type=positive_int, default=None, metavar="M",
                      help="with --until-agreement: the most masks to draw (at least 64)")
    add_uncertainty_args(corr)
    _add_detector_arg(ex)
    ex.add_argument("--force", action="store_true", help="recompute even when the server has this result")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_connection_args(ex)
    ex.add_argument("--wait-timeout", type=float, default=3600.0,
                    help="seconds to wait for the job to finish (default 3600; the job goes on after)")
    ex.set_defaults(func=_cmd_explain)

    au = csub.add_parser("audit", help="audit a pair set on the server: accuracy, Deletion/Insertion, worst pairs",
                         description="Submit an audit (prints the job id): a dataset on the server (--dataset SPEC, "
                         "under a root it allows) or the pairs of a local CSV (--pairs FILE.csv, header img1,img2,same; "
                         "relative paths from the CSV's folder; the images are sent). With --wait: progress, then the "
                         "summary (accuracy, each method's Deletion/Insertion with 95 % intervals, the worst pairs, the pairs dropped "
                         "with their error); facexplain client result JOB --out DIR writes it as files.")
    src = au.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", default=None, metavar="SPEC", help="a dataset on the server, e.g. lfw-aligned:lfw")
    src.add_argument("--pairs", dest="pairs_csv", default=None, metavar="FILE.csv", help="pairs on this machine (img1,img2,same)")
    au.add_argument("--model", default="", help="face model (default: the server's default)")
    au.add_argument("--methods", default="", help=f"comma-separated methods to explain each pair ({', '.join(METHOD_NAMES)}); "
                    "default none: verification only")
    au.add_argument("--metrics", default="", help="comma-separated metrics per pair and method: deletion,insertion")
    au.add_argument("--steps", type=positive_int, default=None, help="points of each Deletion/Insertion curve (default 11)")
    au.add_argument("--limit", type=positive_int, default=None, help="audit this many pairs only")
    au.add_argument("--keep-maps", action="store_true",
                    help="keep each pair's results (maps, chips) on the server: client result JOB --out DIR writes them")
    add_uncertainty_args(au.add_argument_group("the kept maps' uncertainty (with --keep-maps)"))
    _add_detector_arg(au)
    au.add_argument("--force", action="store_true", help="recompute even when the server has this audit")
    au.add_argument("--wait", action="store_true", help="follow the audit and print its summary")
    au.add_argument("--no-progress", action="store_true", help="no progress bar (with --wait)")
    _add_connection_args(au)
    au.add_argument("--wait-timeout", type=float, default=3600.0,
                    help="with --wait: seconds to wait for the audit to finish (default 3600; it goes on after)")
    au.set_defaults(func=_cmd_audit)

    ve = csub.add_parser("verify", help="verify a pair now: score, threshold, decision")
    ve.add_argument("image_a")
    ve.add_argument("image_b")
    ve.add_argument("--model", default="", help="face model (default: the server's default)")
    _add_detector_arg(ve)
    _add_connection_args(ve)
    ve.set_defaults(func=_cmd_verify)

    re_ = csub.add_parser(
        "result", help="write a finished job's files (an explanation's, or an audit's)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a finished job's result into --out.\n\n"
        "An explanation: summary.json, maps.npz, figure.png (as facexplain explain).\n"
        "An audit:\n"
        "  summary.json   accuracy, confusion counts, each method's Deletion/Insertion mean with its 95 %\n"
        "                 interval (Table 1) and its mean curve (accuracy per fraction of pixels), the\n"
        "                 worst pairs and the dropped pairs, with the job's id, model and methods\n"
        "  pairs.csv      one line per pair: index, name, same, score, decision, correct, error, then per\n"
        "                 method M: M.deletion, M.insertion (AUC, when scored) and M.explain_s\n"
        "  pairs/<index>/<method>/{summary.json,maps.npz,figure.png}\n"
        "                 when the audit kept maps (client audit --keep-maps): each pair's result per\n"
        "                 method, the three files of facexplain explain\n"
        "Every row is read, page after page.")
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


def _reused_note(reused: bool, final: bool, what: str) -> str:
    if not reused:
        return ""
    return f" (stored {what})" if final else " (already submitted: following it)"


def _wait_done(client: Any, args: argparse.Namespace, job: Any, label: str) -> Any:
    """Follow ``job`` to its end (at most ``--wait-timeout`` seconds) with a progress bar; the
    final record of a job that succeeded, else its error."""
    if not job.final:
        if not args.wait_timeout > 0:
            raise InputError(f"--wait-timeout must be > 0, got {args.wait_timeout}")
        try:
            with terminal_progress(args, label) as progress:
                job = client.wait(job.id, progress=progress, timeout=args.wait_timeout)
        except DeadlineExceededError:
            raise DeadlineExceededError(
                f"job {job.id} did not finish within --wait-timeout {args.wait_timeout:g} s (is a worker running?); "
                f"it goes on: facexplain client result {job.id} --out DIR"
            ) from None
        if not job.final:
            raise DeadlineExceededError(f"job {job.id} did not finish within --wait-timeout {args.wait_timeout:g} s")
    if job.state == "failed":
        raise job.error.exception() if job.error is not None else InputError(f"job {job.id} failed")
    if job.state == "cancelled":
        raise CancelledError(f"job {job.id} was cancelled")
    return job


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
    from .explain import method_params, until_options

    check_input_files([args.image_a, args.image_b])
    params = method_params(args)
    until = until_options(args, params, local_limit=False)  # the server's limit applies
    options = uncertainty_options(args)
    out = check_out_dir(args.out)
    data_a, data_b = _read_image(args.image_a), _read_image(args.image_b)
    with _client(args) as client:
        submitted = client.explain(
            data_a, data_b, model=args.model, method=args.method, params=params, force=args.force,
            names=(args.image_a, args.image_b),
            until_agreement=0.0 if until is None else until[0], max_masks=0 if until is None else until[1],
            fdr_q=0.0 if options is None else options.q, ci_level=0.0 if options is None else options.level,
            detector=args.detector,
        )
        job = submitted.job
        print(f"job {job.id}{_reused_note(submitted.reused, job.final, 'result')}", flush=True)
        job = _wait_done(client, args, job, args.method)
        return _write(client.get_result(job.id), out)


def _cmd_verify(args: argparse.Namespace) -> int:
    check_input_files([args.image_a, args.image_b])
    with _client(args) as client:
        v = client.verify(_read_image(args.image_a), _read_image(args.image_b), model=args.model,
                          names=(args.image_a, args.image_b), detector=args.detector)
    thr = "none" if v.threshold is None else f"{v.threshold:.4f}"
    print(f"score {v.score:.4f}  threshold {thr}  decision {v.decision}  model {v.model}")
    for label, face in (("a", v.face_a), ("b", v.face_b)):
        print(f"face {label}: {_face_line(face)}")
    return EXIT_OK


def _face_line(face: Any) -> str:
    """How one face was aligned, in a few words: the detector, its confidence and pose when given."""
    if face.method != "detected":
        return str(face.method)
    parts = [f"detected by {face.detector or '?'}"]
    if face.confidence is not None:
        parts.append(f"confidence {face.confidence:.3f}")
    if face.pose:
        parts.append(" ".join(f"{k} {v:.0f} deg" for k, v in sorted(face.pose.items())))
    return ", ".join(parts)


def _cmd_result(args: argparse.Namespace) -> int:
    out = check_out_dir(args.out)
    with _client(args) as client:
        job = client.get_job(args.job)
        if job.kind == "audit":
            return _write_audit(client, job, out)
        return _write(client.get_result(args.job), out)


#: Rows per page while kept results come with them (about 0.3 MB per pair and method), and without.
_MAPS_PAGE = 8
_ROWS_PAGE = 500


def _audit_rows(client: Any, job_id: str) -> Any:
    """Every row of an audit, with its kept results while the pages carry some: once a page has a
    pair explained but no result (the audit kept no maps), the rest come in large pages without."""
    token, maps = "", True
    while True:
        page = client.audit_result(job_id, page_token=token, page_size=_MAPS_PAGE if maps else _ROWS_PAGE, maps=maps)
        yield from page.rows
        explained = [m for r in page.rows if r["error"] is None for m in r["methods"]]
        if maps and explained and not any("result" in m for m in explained):
            maps = False
        token = page.next_page_token
        if not token:
            return


def _write_audit(client: Any, job: Any, out: Path) -> int:
    from ..api.status import JobNotFinishedError
    from ..audit_files import write_audit

    if job.state != "done":
        if job.error is not None:
            raise JobNotFinishedError(f"job {job.id} {job.state}: {job.error.code}: {job.error.message}")
        raise JobNotFinishedError(f"job {job.id} is {job.state} ({job.done}/{job.total} pairs): no result yet")
    first = client.audit_result(job.id, page_size=1)
    if first.summary is None:
        raise JobNotFinishedError(f"job {job.id} succeeded but has no summary")
    files = write_audit(out, first.summary, _audit_rows(client, job.id), job_id=job.id, model=job.model,
                        methods=list(job.methods), total=first.total_rows)
    print_audit_summary(first.summary)
    kept = f", {len(files.result_folders)} result folder(s) under {out / 'pairs'}" if files.result_folders else ""
    print(f"wrote {files.summary}, {files.pairs} ({files.rows} pairs){kept}")
    return EXIT_OK


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
        removed = client.delete(args.job)
    print(f"job {args.job}: deleted ({removed} store key(s) removed)")
    return EXIT_OK


#: The metrics an audit scores (the server's ``worker.audit.AUDIT_METRICS``; the client imports no worker).
AUDIT_METRICS = ("deletion", "insertion")
_TRUE = {"1", "true", "yes", "same"}
_FALSE = {"0", "false", "no", "different"}


def read_pairs_csv(path: str) -> list[tuple[bytes, bytes, bool, str]]:
    """The pairs of a CSV with header ``img1,img2,same`` (relative image paths from the CSV's
    folder; ``same`` 1/0, true/false, yes/no) with their images read: InputError naming the file
    and line of anything wrong."""
    import csv

    check_input_files([path])
    base = Path(path).expanduser().parent
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--pairs {path}: cannot be read as text ({e})") from None
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or ()]
    if fields[:3] != ["img1", "img2", "same"]:
        raise InputError(f"--pairs {path}: the header must be img1,img2,same, got {','.join(fields) or 'nothing'}")
    pairs = []
    for line, rec in enumerate(reader, start=2):
        values = [(rec.get(k) or "").strip() for k in ("img1", "img2", "same")]
        if not all(values):
            raise InputError(f"--pairs {path} line {line}: img1, img2 and same are all needed")
        same = values[2].lower()
        if same not in _TRUE | _FALSE:
            raise InputError(f"--pairs {path} line {line}: same must be 1/0, true/false or yes/no, got {values[2]!r}")
        files = [str(p if p.is_absolute() else base / p) for p in (Path(values[0]).expanduser(), Path(values[1]).expanduser())]
        check_input_files(files)
        pairs.append((_read_image(files[0]), _read_image(files[1]), same in _TRUE,
                      f"{Path(values[0]).name}|{Path(values[1]).name}"))
    if not pairs:
        raise InputError(f"--pairs {path}: no pairs")
    return pairs


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise InputError(f"--{what}: a name given twice ({text})")
    return names


def _ci(value: dict[str, Any] | None) -> str:
    if value is None:
        return "-"
    if value["ci_low"] is None:
        return f"{value['mean']:.4f} (n={value['n']})"
    return f"{value['mean']:.4f} [{value['ci_low']:.4f}, {value['ci_high']:.4f}] (n={value['n']})"


#: Dropped pairs printed by ``print_audit_summary`` (pairs.csv has them all).
_DROPPED_SHOWN = 20


def print_audit_summary(summary: dict[str, Any]) -> None:
    """The audit's summary as a few lines: accuracy and counts, each method's Deletion (lower is
    better) and Insertion (higher is better) with its 95 % interval, then the worst pairs and the
    pairs dropped (with their reason and error) and their count per reason."""
    thr = "none" if summary["threshold"] is None else f"{summary['threshold']:.4f}"
    ok = summary["pairs"] - summary["pairs_failed"]
    print(f"pairs {summary['pairs']} ({summary['pairs_failed']} failed)  threshold {thr}  "
          f"accuracy {summary['accuracy']:.4f} over {ok}")
    print(f"true matches {summary['true_matches']}  false matches {summary['false_matches']}  "
          f"false non-matches {summary['false_non_matches']}  true non-matches {summary['true_non_matches']}")
    setting = [f"detector {summary['detector']}"] if summary.get("detector") else []
    if summary.get("uncertainty"):
        setting.append(f"kept maps' uncertainty: fdr_q {summary['uncertainty']['fdr_q']:g}  "
                       f"ci_level {summary['uncertainty']['ci_level']:g}")
    if setting:
        print("  ".join(setting))
    if summary["methods"]:
        print(f"{'method':<12}  {'deletion (lower better)':<42}  {'insertion (higher better)':<42}  pairs/s")
        for m in summary["methods"]:
            print(f"{m['method']:<12}  {_ci(m['deletion']):<42}  {_ci(m['insertion']):<42}  "
                  f"{m['explain_pairs_per_s']:.2f}")
    if summary["worst"]:
        print("worst pairs (false matches and false non-matches first, farthest from the threshold first):")
        for r in summary["worst"]:
            score = "-" if r["score"] is None else f"{r['score']:.4f}"
            verdict = "ok" if r["correct"] else "WRONG"
            truth = "same" if r["same"] else "different"
            print(f"  #{r['index']:<5} {verdict:<5}  score {score}  {r['decision']:<9}  truth {truth:<9}  {r['name']}")
    dropped = summary.get("dropped") or []
    if dropped:
        print(f"dropped pairs ({len(dropped)}, not in the accuracy or the means):")
        for d in dropped[:_DROPPED_SHOWN]:
            reason = f"{d['reason']}: " if d.get("reason") else ""
            print(f"  #{d['index']:<5} {d['name']}: {reason}{d['error']['status']}: {d['error']['message']}")
        if len(dropped) > _DROPPED_SHOWN:
            print(f"  ... and {len(dropped) - _DROPPED_SHOWN} more (facexplain client result JOB --out DIR: pairs.csv)")
    reasons = summary.get("dropped_reasons")
    if reasons:  # every reason, 0 included: none hidden
        print("dropped per reason: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))


def _cmd_audit(args: argparse.Namespace) -> int:
    methods = _names(args.methods, "methods")
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise InputError(f"--methods: unknown method(s) {', '.join(unknown)} (known: {', '.join(METHOD_NAMES)})")
    metrics = _names(args.metrics, "metrics")
    bad = [m for m in metrics if m not in AUDIT_METRICS]
    if bad:
        raise InputError(f"--metrics: unknown metric(s) {', '.join(bad)} (known: {', '.join(AUDIT_METRICS)})")
    if metrics and not methods:
        raise InputError("--metrics score the maps of --methods: name at least one method")
    options = uncertainty_options(args)
    if options is not None and not args.keep_maps:
        raise InputError("--fdr-q/--ci-level state the uncertainty of kept maps: add --keep-maps")
    pairs = read_pairs_csv(args.pairs_csv) if args.pairs_csv else None
    with _client(args) as client:
        submitted = client.submit_audit(
            pairs=pairs, dataset=args.dataset or "", model=args.model, methods=methods, metrics=metrics,
            steps=args.steps or 0, limit=args.limit or 0, keep_maps=args.keep_maps, force=args.force,
            detector=args.detector, fdr_q=0.0 if options is None else options.q,
            ci_level=0.0 if options is None else options.level,
        )
        job = submitted.job
        print(f"job {job.id}{_reused_note(submitted.reused, job.final, 'audit')}", flush=True)
        if not args.wait:
            return EXIT_OK
        job = _wait_done(client, args, job, "audit")
        page = client.audit_result(job.id, page_size=1)
        if page.summary is None:
            raise InputError(f"job {job.id} finished without a summary")
        print_audit_summary(page.summary)
    return EXIT_OK
