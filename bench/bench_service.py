"""Benchmark of the service (issue 9, section 6): what the API costs over the library.

1. Service overhead: an N-mask CorrRISE explanation of the demo pair through the API
   (``FacexplainClient.explain(force=True)`` + ``wait`` + ``get_result``, maps included) vs
   in-process ``pipeline.explain_pair``, both on the local engine (onnxruntime in the worker vs in
   this process). Repetitions alternate API and in-process so that a change of load on the machine
   hits both. Goal: API / in-process <= 1.15. Beside wall time, the CPU seconds of every process
   of each path (the stack's processes and this one), which a loaded machine changes far less.
2. Cache hit: the same request again without ``force``, answered from the store: client-side
   latency of ``explain`` (reused) and of ``explain`` + ``get_result`` (the maps too). Goal < 50 ms.
3. Verify latency (median / p95).

The stack runs as real processes: a redis-server (``EmbeddedRedis``), one ``facexplain worker
--engine local --concurrency 1`` and ``facexplain api --engine local``; all stopped at the end, even
on failure. Prints JSON, then a markdown table.

Usage: .venv/bin/python bench/bench_service.py [--masks 500] [--repeats 3] [--cache-calls 50]
       [--verify-calls 50] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.alignment import Aligner  # noqa: E402
from explainer_service.api.client import FacexplainClient  # noqa: E402
from explainer_service.demo import make_demo_pair  # noqa: E402
from explainer_service.methods import build  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE  # noqa: E402
from explainer_service.pipeline import align_image, explain_pair, load_face_model  # noqa: E402
from explainer_service.processes import api_address, start_command, stop_groups  # noqa: E402
from explainer_service.settings import get_settings  # noqa: E402
from explainer_service.store import EmbeddedRedis  # noqa: E402
from explainer_service.worker.plan import plan_shards  # noqa: E402

START_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 600.0


def load() -> str:
    """The load averages (1, 5, 15 min) of the machine now."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"








@contextmanager
def stack(workdir: Path) -> Iterator[str]:
    """redis-server, one worker and the API as processes of their own; yields the API address."""
    with EmbeddedRedis(workdir / "redis", startup_timeout=60) as redis:
        env = {k: v for k, v in os.environ.items() if k != "FACEXPLAIN_TRITON_URL"}
        env["FACEXPLAIN_REDIS_URL"] = redis.url
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(start_command(["worker", "--redis", redis.url, "--engine", "local", "--concurrency", "1"],
                                       workdir / "worker.log", env=env))
            procs.append(start_command(["api", "--redis", redis.url, "--engine", "local", "--port", "0"],
                                       workdir / "api.log", env=env))
            yield api_address(workdir / "api.log", procs[-1], timeout=START_TIMEOUT_S)
        finally:
            stop_groups(reversed(procs))


def cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and every process it started
    (redis-server, the worker and its pool, the API): the work of a path, which the load of a
    shared machine changes far less than its wall time."""
    import psutil

    total = time.process_time()
    for proc in psutil.Process().children(recursive=True):
        try:
            times = proc.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def summary(values: list[float]) -> dict[str, float]:
    """Median, p95, min and max of ``values`` (seconds)."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return {"median": statistics.median(ordered), "p95": p95, "min": ordered[0], "max": ordered[-1],
            "n": len(ordered)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(masks: int, repeats: int, cache_calls: int, verify_calls: int) -> dict[str, Any]:
    """Start the stack in a temporary folder, measure, stop it and remove the folder."""
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        return _measure(Path(tmp), masks, repeats, cache_calls, verify_calls)


def _measure(workdir: Path, masks: int, repeats: int, cache_calls: int, verify_calls: int) -> dict[str, Any]:
    pa, pb = make_demo_pair(workdir / "demo")
    a, b = pa.read_bytes(), pb.read_bytes()
    params = {"n_masks": masks, "seed": 0}
    model = load_face_model()
    load_before = load()
    with stack(workdir) as address, FacexplainClient(address, timeout=60) as client:

        phases: list[dict[str, float]] = []

        def through_api() -> Any:
            t0 = time.perf_counter()
            sub = client.explain(a, b, params=params, force=True)
            t1 = time.perf_counter()
            job = client.wait(sub.job.id, timeout=JOB_TIMEOUT_S)
            t2 = time.perf_counter()
            if job.state != "done":
                raise RuntimeError(f"job {job.id} ended {job.state}: {job.error}")
            result = client.get_result(sub.job.id)
            t3 = time.perf_counter()
            now = time.time()
            phases.append({
                "explain_call": t1 - t0,
                "queued": (job.started_at or 0.0) - (job.created_at or 0.0),
                "worker": (job.finished_at or 0.0) - (job.started_at or 0.0),
                "finished_to_client": now - (t3 - t2) - (job.finished_at or 0.0),
                "get_result": t3 - t2,
                # the alignment time the result reports: the API's at Explain when the worker used
                # the faces stored with the job, the worker's own when it aligned again
                "align_in_result": result.timing.align_s,
            })
            return result

        def in_process() -> Any:
            return explain_pair(a, b, model, "corrrise", params, engine="local")

        chip_a = align_image(a, model.spec.chip, aligner=Aligner(), name="image_a").chip
        chip_b = align_image(b, model.spec.chip, aligner=Aligner(), name="image_b").chip
        shards = plan_shards(masks, get_settings().shard_masks)

        def in_process_shards() -> Any:
            """The worker's plan without the service: the same mask shards run one after the
            other, merged, finished (chips aligned beforehand)."""
            method = build("corrrise", model, **params)
            if not isinstance(method, CorrRISE):
                raise TypeError(f"corrrise built a {type(method).__name__}")
            merged = method.run_shard(chip_a, chip_b, *shards[0])
            for lo, hi in shards[1:]:
                merged = merged.merge(method.run_shard(chip_a, chip_b, lo, hi))
            return method.finish(merged)

        def in_process_whole() -> Any:
            """One attribute call over all masks (chips aligned beforehand)."""
            return build("corrrise", model, **params).attribute(chip_a, chip_b)

        # warm-up of both sides (model sessions, aligner, the worker's first task)
        through_api()
        in_process()
        api_s, local_s, shards_s, whole_s = [], [], [], []
        api_cpu, local_cpu = [], []
        loads: list[float] = []
        for _ in range(repeats):
            c0 = cpu_s()
            t, got = timed(through_api)
            api_cpu.append(cpu_s() - c0)
            api_s.append(t)
            c0 = cpu_s()
            t, want = timed(in_process)
            local_cpu.append(cpu_s() - c0)
            local_s.append(t)
            shards_s.append(timed(in_process_shards)[0])
            whole_s.append(timed(in_process_whole)[0])
            loads.append(os.getloadavg()[0])
        phases = phases[1:]  # the warm-up's
        max_diff = max(float(np.abs(got.s_a - want.s_a).max()), float(np.abs(got.s_b - want.s_b).max()))

        reused_s, reused_result_s = [], []
        job_id = client.explain(a, b, params=params).job.id
        for _ in range(cache_calls):
            t, sub = timed(lambda: client.explain(a, b, params=params))
            if not sub.reused:
                raise RuntimeError("the repeated request was not answered from the store")
            if sub.job.id != job_id:
                raise RuntimeError("the repeated request got another job id")
            reused_s.append(t)
            t, _ = timed(lambda: client.get_result(job_id))
            reused_result_s.append(t + reused_s[-1])

        client.verify(a, b)  # warm-up
        verify_s = [timed(lambda: client.verify(a, b))[0] for _ in range(verify_calls)]
    load_after = load()
    api, local = summary(api_s), summary(local_s)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": load_before,
        "load_after": load_after,
        "masks": masks,
        "repeats": repeats,
        "api_s": api,
        "in_process_s": local,
        "ratio_median": api["median"] / local["median"],
        "ratio_min": api["min"] / local["min"],
        # each API repetition over the in-process one right after it: less sensitive to the
        # load of a shared machine drifting during the run than the ratio of the medians
        "ratio_paired_median": statistics.median(a / b for a, b in zip(api_s, local_s, strict=True)),
        "load_1min_max_during": max(loads),
        "api_cpu_s": summary(api_cpu),
        "in_process_cpu_s": summary(local_cpu),
        "cpu_ratio_paired_median": statistics.median(a / b for a, b in zip(api_cpu, local_cpu, strict=True)),
        "max_abs_map_diff": max_diff,
        "api_phases_median_s": {k: statistics.median(p[k] for p in phases) for k in phases[0]},
        "in_process_align_s": want.timing.align_s,
        "in_process_explain_s": want.timing.explain_s,
        "shards": len(shards),
        "in_process_shards_s": summary(shards_s),
        "in_process_whole_s": summary(whole_s),
        "cache_hit_explain_s": summary(reused_s),
        "cache_hit_explain_and_result_s": summary(reused_result_s),
        "verify_s": summary(verify_s),
    }


def table(r: dict[str, Any]) -> str:
    """The figures of ``r`` as a markdown table."""
    ms = 1000.0
    api, local = r["api_s"], r["in_process_s"]
    hit, hit_result, verify = r["cache_hit_explain_s"], r["cache_hit_explain_and_result_s"], r["verify_s"]
    rows = [
        "| what | figure |",
        "|---|---|",
        f"| in-process `explain_pair`, N={r['masks']}, median (min-max) of {r['repeats']} "
        f"| {local['median']:.3f} s ({local['min']:.3f}-{local['max']:.3f}) |",
        f"| through the API (Explain force + WatchJob + GetResult), median (min-max) "
        f"| {api['median']:.3f} s ({api['min']:.3f}-{api['max']:.3f}) |",
        f"| **API / in-process** (goal <= 1.15): median; min/min; median of paired repetitions "
        f"| **{r['ratio_median']:.3f}**; {r['ratio_min']:.3f}; {r['ratio_paired_median']:.3f} |",
        f"| CPU seconds, all processes: API path / in-process, medians; median of paired ratios "
        f"| {r['api_cpu_s']['median']:.2f} / {r['in_process_cpu_s']['median']:.2f} s; {r['cpu_ratio_paired_median']:.3f} |",
        f"| max abs difference of the maps, API vs in-process | {r['max_abs_map_diff']:.1e} |",
        f"| in-process: aligning both images / explaining | {r['in_process_align_s']:.3f} / "
        f"{r['in_process_explain_s']:.3f} s |",
        f"| in-process, chips aligned beforehand: one attribute call / the worker's {r['shards']} shards "
        f"run in turn and merged, median | {r['in_process_whole_s']['median']:.3f} / "
        f"{r['in_process_shards_s']['median']:.3f} s |",
        "| API, median of each phase: " + ", ".join(f"{k} {v:.3f}" for k, v in r["api_phases_median_s"].items())
        + " | s |",
        f"| **cache hit**: Explain again, answered from the store, median / p95 of {hit['n']} (goal < 50 ms) "
        f"| **{hit['median'] * ms:.1f} / {hit['p95'] * ms:.1f} ms** |",
        f"| cache hit + GetResult (maps and chips), median / p95 "
        f"| {hit_result['median'] * ms:.1f} / {hit_result['p95'] * ms:.1f} ms |",
        f"| Verify, median / p95 of {verify['n']} | {verify['median'] * ms:.1f} / {verify['p95'] * ms:.1f} ms |",
        f"| load average (1/5/15 min) before / after; highest 1-min load between repetitions "
        f"| {r['load_before']} / {r['load_after']}; {r['load_1min_max_during']:.2f} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--masks", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-calls", type=int, default=50)
    parser.add_argument("--verify-calls", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = run(args.masks, args.repeats, args.cache_calls, args.verify_calls)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print()
    print(table(result))


if __name__ == "__main__":
    main()
