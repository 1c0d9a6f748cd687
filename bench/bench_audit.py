"""Benchmark of audits (issue 9, section 6): pairs/s of an audit through the service with 1 and 2
workers vs ``facexplain evaluate`` on the same pairs and methods, and the batch sizes Triton forms.

One run:

1. picks ``--pairs`` matched LFW pairs spread over ``../shared/data/lfw-dev`` and writes them as a
   CSV dataset (``csv:FILE``, images through a link to the LFW folder) in a temporary folder;
2. **local engine** (onnxruntime in each process): for K in ``--workers`` starts a redis-server
   (``EmbeddedRedis``), ``facexplain api --engine local --dataset-root ...`` and one
   ``facexplain worker --engine local --concurrency K [--threads T]`` as real processes (``K:T``
   in ``--workers``; without T the worker's default, cores // K), warms them up with a
   small audit, then alternates ``--repeats`` times

   - (a) what ``facexplain evaluate --dataset csv:FILE --methods corrrise --budget N --pairs P``
     does, through its library entry points in this process (``prepare_pairs`` without a chip
     cache, then ``evaluate_methods``), and
   - (b) the audit of the same dataset spec through the API (``SubmitAudit`` force + WatchJob),
     CorrRISE with the same seed and budget, Deletion and Insertion with the same steps;

   plus, once per K, a score-only audit (no method, no metric) vs an in-process loop that aligns,
   embeds and scores each pair. Ratios audit/evaluate of the medians are taken in the same run.
   The per-pair scores, decisions and Deletion/Insertion AUCs of every audit are compared with
   the in-process ones (and the audits with each other).
3. **Triton** (``--triton``): an ``EmbeddedTriton`` (the project's embedded configs) serves the
   workers (``--engine triton --triton HOST:PORT``) and the in-process evaluation; the model's
   inference statistics (``get_inference_statistics``: executions per batch size, inference vs
   execution counts) are read before and after each run, and their difference is the batches
   that run formed. The dynamic batching settings of the embedded (live) and GPU configs are
   reported beside them.

Every process is stopped at the end, even on failure. Prints JSON, then markdown tables.

Usage: .venv/bin/python bench/bench_audit.py [--pairs 20] [--masks 100] [--workers 1,2,2:0]
       [--repeats 2] [--triton] [--triton-pairs 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.alignment import Aligner  # noqa: E402
from explainer_service.api.client import FacexplainClient  # noqa: E402
from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.evaluation import MethodResult, evaluate_methods  # noqa: E402
from explainer_service.explanation import decide  # noqa: E402
from explainer_service.metrics import default_steps  # noqa: E402
from explainer_service.models.base import FaceModel, cosine_to  # noqa: E402
from explainer_service.pipeline import align_image, embed_chips, load_face_model, open_face_model  # noqa: E402
from explainer_service.processes import api_address, start_command, stop_groups  # noqa: E402
from explainer_service.settings import get_settings  # noqa: E402
from explainer_service.store import EmbeddedRedis  # noqa: E402

LFW = ROOT.parent / "shared" / "data" / "lfw-dev"
START_TIMEOUT_S = 180.0
JOB_TIMEOUT_S = 1800.0
SEED = 0
METRICS = ("deletion", "insertion")


def load() -> str:
    """The load averages (1, 5, 15 min) of the machine now."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- the pairs -----------------------------------------------------------------------------------


def write_dataset(folder: Path, pairs: int) -> Path:
    """A CSV of ``pairs`` matched LFW pairs spread evenly over the set (images through a link to
    the LFW images folder); its path."""
    lfw = read_dataset(f"lfw:{LFW}")
    matched = [p for p in lfw.pairs if p.same]
    idx = np.unique(np.linspace(0, len(matched) - 1, pairs).round().astype(int))
    images = (LFW / "images").resolve()
    (folder / "img").symlink_to(images, target_is_directory=True)
    lines = ["img1,img2,same"]
    for i in idx:
        a, b = Path(str(matched[i].a)).resolve(), Path(str(matched[i].b)).resolve()
        lines.append(f"img/{a.relative_to(images)},img/{b.relative_to(images)},1")
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- processes -----------------------------------------------------------------------------------








@contextmanager
def stack(workdir: Path, roots: list[Path], workers: int, triton: str | None,
          threads: int | None = None) -> Iterator[str]:
    """redis-server, the API and one worker of ``workers`` processes (local engine, or Triton at
    ``triton``; ``--threads threads`` when given, else the worker's default); yields the API
    address."""
    with EmbeddedRedis(workdir / "redis", startup_timeout=60) as redis:
        env = {k: v for k, v in os.environ.items() if k != "FACEXPLAIN_TRITON_URL"}
        env["FACEXPLAIN_REDIS_URL"] = redis.url
        engine = ["--engine", "triton", "--triton", triton] if triton else ["--engine", "local"]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            extra = [] if threads is None else ["--threads", str(threads)]
            procs.append(start_command(["worker", "--redis", redis.url, *engine, "--concurrency", str(workers),
                                        *extra, "--loglevel", "warning"], workdir / "worker.log", env=env))
            api = ["api", "--redis", redis.url, "--engine", "local", "--port", "0"]
            for root in roots:
                api += ["--dataset-root", str(root)]
            procs.append(start_command(api, workdir / "api.log", env=env))
            yield api_address(workdir / "api.log", procs[-1], timeout=START_TIMEOUT_S)
        finally:
            stop_groups(reversed(procs), grace_s=30)


# -- the measured paths ----------------------------------------------------------------------------


def evaluate(spec: str, pairs: int, model: FaceModel, masks: int, steps: int) -> tuple[float, dict[str, Any]]:
    """What ``facexplain evaluate --methods corrrise --budget masks`` computes (no chip cache):
    seconds, and the per-pair scores, decisions and AUCs (the scores are computed after the clock
    stops: evaluate does not report them)."""
    t0 = time.perf_counter()
    prepared = prepare_pairs(read_dataset(spec), model, pairs=pairs, seed=SEED, cache=None)
    results = evaluate_methods(prepared.chips_a, prepared.chips_b, model, ["corrrise"], steps=default_steps(steps),
                               substrate="zeros", seed=SEED, budget=masks)
    seconds = time.perf_counter() - t0
    if prepared.skipped:
        raise RuntimeError(f"evaluate skipped pairs {prepared.skipped}: the comparison needs every pair")
    emb_a = embed_chips(list(prepared.chips_a), model)
    emb_b = embed_chips(list(prepared.chips_b), model)
    scores = [float(cosine_to(emb_a[i : i + 1], emb_b[i])[0]) for i in range(len(emb_a))]
    return seconds, _reference(scores, results[0], model)


def _reference(scores: list[float], result: MethodResult, model: FaceModel) -> dict[str, Any]:
    return {
        "scores": scores,
        "decisions": [decide(s, model.spec.threshold) for s in scores],
        "deletion": [float(v) for v in result.deletion.per_pair_auc()],
        "insertion": [float(v) for v in result.insertion.per_pair_auc()],
        "deletion_mean": float(result.deletion.auc),
        "insertion_mean": float(result.insertion.auc),
    }


def verify_loop(spec: str, model: FaceModel) -> tuple[float, list[float]]:
    """In-process counterpart of a score-only audit: align both images of each pair, embed, score."""
    dataset = read_dataset(spec)
    aligner = Aligner()
    t0 = time.perf_counter()
    scores = []
    for p in dataset.pairs:
        a = align_image(Path(str(p.a)), model.spec.chip, aligner=aligner).chip
        b = align_image(Path(str(p.b)), model.spec.chip, aligner=aligner).chip
        emb = embed_chips([a, b], model)
        scores.append(float(cosine_to(emb[:1], emb[1])[0]))
    return time.perf_counter() - t0, scores


def audit(client: FacexplainClient, spec: str, masks: int, steps: int, *, methods: bool = True,
          limit: int = 0) -> tuple[float, dict[str, Any]]:
    """One audit through the API (force: computed anew): client-side seconds from SubmitAudit to
    the job's end, the worker-side span, and the per-pair results."""
    chosen = [("corrrise", {"seed": SEED, "budget": masks})] if methods else []
    t0 = time.perf_counter()
    sub = client.submit_audit(dataset=spec, methods=chosen, metrics=METRICS if methods else (), steps=steps,
                              limit=limit, force=True)
    job = client.wait(sub.job.id, timeout=JOB_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if job.state != "done":
        raise RuntimeError(f"audit {job.id} ended {job.state}: {job.error}")
    rows = sorted(client.audit_rows(job.id), key=lambda r: r["index"])
    failed = [r for r in rows if r["error"] is not None]
    if failed:
        raise RuntimeError(f"audit {job.id}: pairs failed: {failed}")
    summary = client.audit_result(job.id).summary or {}
    out: dict[str, Any] = {
        "scores": [float(r["score"]) for r in rows],
        "decisions": [r["decision"] for r in rows],
        "worker_s": (job.finished_at or 0.0) - (job.started_at or 0.0),
        "queued_s": (job.started_at or 0.0) - (job.created_at or 0.0),
    }
    if methods:
        for mode in METRICS:
            out[mode] = [float(r["methods"][0][mode]["auc"]) for r in rows]
            out[f"{mode}_mean"] = float(summary["methods"][0][mode]["mean"])
        out["explain_s_per_pair"] = statistics.mean(float(r["methods"][0]["explain_s"]) for r in rows)
    return seconds, out


def differences(got: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """Largest differences of ``got`` from ``want`` (scores, AUCs, means) and decisions that differ."""
    out: dict[str, Any] = {
        "max_score_diff": float(np.max(np.abs(np.subtract(got["scores"], want["scores"])))),
        "decisions_differ": sum(a != b for a, b in zip(got["decisions"], want["decisions"], strict=True)),
    }
    for key in ("deletion", "insertion"):
        if key in got and key in want:
            out[f"max_{key}_auc_diff"] = float(np.max(np.abs(np.subtract(got[key], want[key]))))
            out[f"{key}_mean_diff"] = abs(got[f"{key}_mean"] - want[f"{key}_mean"])
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


# -- Triton statistics -------------------------------------------------------------------------------


def triton_stats(url: str, model: str) -> dict[str, Any]:
    """The model's cumulative counters: inferences, executions, and executions per batch size."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in stats.get("batch_stats", [])}
    return {"inferences": int(stats.get("inference_count", 0)), "executions": int(stats.get("execution_count", 0)),
            "batches": batches, "queue_ns": int(stats["inference_stats"].get("queue", {}).get("ns", 0)),
            "requests": int(stats["inference_stats"].get("success", {}).get("count", 0))}


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What happened between two :func:`triton_stats` snapshots, with the batch size distribution."""
    batches = {k: v - before["batches"].get(k, 0) for k, v in after["batches"].items()}
    batches = {k: v for k, v in sorted(batches.items()) if v > 0}
    executions = after["executions"] - before["executions"]
    inferences = after["inferences"] - before["inferences"]
    requests = after["requests"] - before["requests"]
    sizes = np.repeat(list(batches), list(batches.values())) if batches else np.zeros(1)
    return {
        "requests": requests,
        "inferences": inferences,
        "executions": executions,
        "images_per_execution": inferences / executions if executions else 0.0,
        "requests_per_execution": requests / executions if executions else 0.0,
        "batch_size_median": float(np.median(sizes)),
        "batch_size_p90": float(np.percentile(sizes, 90)),
        "batch_size_max": int(sizes.max()),
        "queue_ms_per_request": (after["queue_ns"] - before["queue_ns"]) / 1e6 / requests if requests else 0.0,
        "executions_by_batch_size": {str(k): v for k, v in batches.items()},
    }


def batching_settings(url: str, model: str) -> dict[str, Any]:
    """The live model's ``max_batch_size``, ``dynamic_batching`` and instance groups."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        config = client.get_model_config(model, as_json=True)["config"]
    return {"max_batch_size": config.get("max_batch_size"), "dynamic_batching": config.get("dynamic_batching"),
            "instance_group": [{"count": g.get("count"), "kind": g.get("kind")} for g in config.get("instance_group", [])]}


def gpu_config_text(model: str) -> str | None:
    """The GPU ``config.pbtxt`` kept in the model repository, when there is one."""
    path = get_settings().model_repository / model / "config.pbtxt"
    return path.read_text() if path.is_file() else None


# -- the runs --------------------------------------------------------------------------------------------


def run_local(workdir: Path, spec: str, roots: list[Path], pairs: int, masks: int, steps: int,
              workers: list[tuple[int, int | None]], repeats: int) -> dict[str, Any]:
    model = load_face_model()
    evaluate(spec, 2, model, masks, steps)  # warm-up (model session, detector)
    out: dict[str, Any] = {"by_workers": {}}
    references: list[dict[str, Any]] = []
    for k, threads in workers:
        label = _label(k, threads)
        folder = workdir / f"local-{label.replace(' ', '-')}"
        folder.mkdir()
        entry: dict[str, Any] = {"workers": k, "threads": threads, "evaluate_s": [], "audit_s": [], "checks": []}
        with stack(folder, roots, k, None, threads) as address, FacexplainClient(address, timeout=120) as client:
            audit(client, spec, masks, steps, limit=2 * k)  # warm-up: every worker process opens its model
            for i in range(repeats):  # evaluate first, then audit first, ... (drifting load hits both)
                if i % 2:
                    t_audit, got = audit(client, spec, masks, steps)
                t, want = evaluate(spec, pairs, model, masks, steps)
                if not i % 2:
                    t_audit, got = audit(client, spec, masks, steps)
                entry["evaluate_s"].append(t)
                references.append(want)
                entry["audit_s"].append(t_audit)
                entry["checks"].append(differences(got, want))
                entry.setdefault("audit_rows", got)
                entry["worker_s"] = got["worker_s"]
                entry["explain_s_per_pair"] = got["explain_s_per_pair"]
            t_loop, loop_scores = verify_loop(spec, model)
            t_score, score_only = audit(client, spec, masks, steps, methods=False)
            entry["score_only"] = {
                "in_process_s": t_loop, "audit_s": t_score,
                "ratio": t_loop / t_score,
                "max_score_diff": float(np.max(np.abs(np.subtract(score_only["scores"], loop_scores)))),
            }
        entry["evaluate_median_s"] = _median(entry["evaluate_s"])
        entry["audit_median_s"] = _median(entry["audit_s"])
        entry["evaluate_pairs_per_s"] = pairs / entry["evaluate_median_s"]
        entry["audit_pairs_per_s"] = pairs / entry["audit_median_s"]
        entry["ratio"] = entry["audit_pairs_per_s"] / entry["evaluate_pairs_per_s"]
        out["by_workers"][label] = entry
    rows = [e.pop("audit_rows") for e in out["by_workers"].values()]
    out["audits_identical"] = all(
        r["scores"] == rows[0]["scores"] and r["deletion"] == rows[0]["deletion"]
        and r["insertion"] == rows[0]["insertion"] and r["decisions"] == rows[0]["decisions"] for r in rows
    )
    out["evaluate_runs_identical"] = all(
        r["deletion"] == references[0]["deletion"] and r["insertion"] == references[0]["insertion"] for r in references
    )
    return out


def run_triton(workdir: Path, spec: str, roots: list[Path], pairs: int, masks: int, steps: int,
               workers: list[tuple[int, int | None]], repeats: int) -> dict[str, Any]:
    """Evaluate in-process and audits with each worker count against one embedded Triton,
    ``repeats`` times each (medians); Triton's statistics summed over the repeats of each."""
    from explainer_service.models.store import triton_name
    from explainer_service.serving.embedded import EmbeddedTriton

    name = triton_name(get_settings().default_model)
    out: dict[str, Any] = {"model": name, "by_workers": {}}
    with EmbeddedTriton() as server:
        out["embedded_config"] = batching_settings(server.url, name)
        out["gpu_config"] = gpu_config_text(name)
        with open_face_model(engine="triton", triton_url=server.url) as model:
            evaluate(spec, 2, model, masks, steps)  # warm-up
            before = triton_stats(server.url, name)
            times = []
            for _ in range(repeats):
                t, want = evaluate(spec, pairs, model, masks, steps)
                times.append(t)
            delta = stats_delta(before, triton_stats(server.url, name))
            t = _median(times)
            out["evaluate"] = {"seconds": times, "pairs_per_s": pairs / t, "triton": delta}
        for k in sorted({k for k, _ in workers}):  # threads do not matter: Triton runs the model
            folder = workdir / f"triton-{k}"
            folder.mkdir()
            with stack(folder, roots, k, server.url) as address, FacexplainClient(address, timeout=120) as client:
                audit(client, spec, masks, steps, limit=2 * k)  # warm-up
                before = triton_stats(server.url, name)
                times = []
                for _ in range(repeats):
                    t, got = audit(client, spec, masks, steps)
                    times.append(t)
                delta = stats_delta(before, triton_stats(server.url, name))
            t = _median(times)
            out["by_workers"][str(k)] = {"seconds": times, "pairs_per_s": pairs / t, "ratio": (pairs / t) / out["evaluate"]["pairs_per_s"],
                                         "checks": differences(got, want), "triton": delta}
    return out


def _label(workers: int, threads: int | None) -> str:
    return str(workers) if threads is None else f"{workers} threads {threads}"


def parse_workers(text: str) -> list[tuple[int, int | None]]:
    """``"1,2,2:0"`` -> [(1, None), (2, None), (2, 0)]: worker processes, and ``--threads`` when given."""
    out: list[tuple[int, int | None]] = []
    for item in (v.strip() for v in text.split(",")):
        if item:
            k, _, t = item.partition(":")
            out.append((int(k), int(t) if t else None))
    return out


def run(pairs: int, masks: int, steps: int, workers: list[tuple[int, int | None]], repeats: int, triton: bool,
        triton_pairs: int) -> dict[str, Any]:
    """Write the dataset in a temporary folder, measure, stop everything and remove the folder."""
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        workdir = Path(tmp)
        data = workdir / "data"
        data.mkdir()
        csv = write_dataset(data, pairs)
        spec = f"csv:{csv}"
        roots = [data, LFW.resolve()]
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "pairs": pairs, "masks": masks, "steps": steps, "repeats": repeats,
            "load_before": load(),
        }
        result["local"] = run_local(workdir, spec, roots, pairs, masks, steps, workers, repeats)
        result["load_after_local"] = load()
        if triton:
            tspec = spec
            if triton_pairs < pairs:
                tdata = workdir / "tdata"
                tdata.mkdir()
                tspec = f"csv:{write_dataset(tdata, triton_pairs)}"
                roots = [*roots, tdata]
            result["triton_pairs"] = min(triton_pairs, pairs)
            result["triton"] = run_triton(workdir, tspec, roots, min(triton_pairs, pairs), masks, steps, workers,
                                          repeats)
            result["load_after"] = load()
        return result


def tables(r: dict[str, Any]) -> str:
    """The figures of ``r`` as markdown tables."""
    lines = [
        f"Pairs: {r['pairs']} matched LFW pairs; CorrRISE N={r['masks']} seed {SEED}, Deletion + Insertion, "
        f"{r['steps']} steps; median of {r['repeats']}.",
        "",
        "| engine | workers | evaluate pairs/s | audit pairs/s | **audit / evaluate** | score-only audit / in-process | max diff score / AUC | decisions differ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, e in r["local"]["by_workers"].items():
        worst = {key: max(c[key] for c in e["checks"]) for key in e["checks"][0]}
        lines.append(
            f"| local | {k} | {e['evaluate_pairs_per_s']:.3f} | {e['audit_pairs_per_s']:.3f} | **{e['ratio']:.2f}** "
            f"| {e['score_only']['ratio']:.2f} | {worst['max_score_diff']:.1e} / "
            f"{max(worst['max_deletion_auc_diff'], worst['max_insertion_auc_diff']):.1e} | {worst['decisions_differ']} |"
        )
    t = r.get("triton")
    if t:
        for k, e in t["by_workers"].items():
            c = e["checks"]
            lines.append(
                f"| triton | {k} | {t['evaluate']['pairs_per_s']:.3f} | {e['pairs_per_s']:.3f} | **{e['ratio']:.2f}** | - "
                f"| {c['max_score_diff']:.1e} / {max(c['max_deletion_auc_diff'], c['max_insertion_auc_diff']):.1e} "
                f"| {c['decisions_differ']} |"
            )
        lines += [
            "",
            f"Triton batches of `{t['model']}` ({r['triton_pairs']} pairs, summed over {r['repeats']} repeats):",
            "",
            "| run | requests | images | executions | images / execution | requests / execution | batch size median / p90 / max | executions by batch size |",
            "|---|---|---|---|---|---|---|---|",
        ]
        runs = [("evaluate (in-process client)", t["evaluate"]["triton"])] + [
            (f"audit, {k} worker(s)", e["triton"]) for k, e in t["by_workers"].items()
        ]
        for label, d in runs:
            by = ", ".join(f"{s}: {n}" for s, n in d["executions_by_batch_size"].items())
            lines.append(
                f"| {label} | {d['requests']} | {d['inferences']} | {d['executions']} | {d['images_per_execution']:.1f} "
                f"| {d['requests_per_execution']:.2f} | {d['batch_size_median']:.0f} / {d['batch_size_p90']:.0f} / "
                f"{d['batch_size_max']} | {by} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--masks", type=int, default=100, help="CorrRISE budget (masks per face)")
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--workers", default="1,2,2:0",
                        help="worker processes to measure, comma-separated; K:T also passes --threads T "
                        "(2:0: two processes with onnxruntime's default threads each)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--triton", action="store_true", help="also measure against an embedded Triton")
    parser.add_argument("--triton-pairs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    # SIGTERM unwinds like an exception, so that the processes started here are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not LFW.is_dir():
        raise SystemExit(f"bench_audit needs the LFW mirror at {LFW}")
    workers = parse_workers(args.workers)
    result = run(args.pairs, args.masks, args.steps, workers, args.repeats, args.triton, args.triton_pairs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print()
    print(tables(result))


if __name__ == "__main__":
    main()
