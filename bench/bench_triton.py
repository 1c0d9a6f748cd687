"""Benchmark of serving (issue: serving): the embedded Triton vs in-process onnxruntime.

1. images/s of the default model at batch sizes 1..256, one client: in-process, Triton over gRPC,
   Triton with system shared memory;
2. images/s with 1..8 concurrent clients at one batch size;
3. dynamic batching: many concurrent batch-1 requests, with and without dynamic batching
   (and a few queue delays);
4. CorrRISE N=500 latency per pair: in-process, Triton (client masks, shared memory), Triton with
   server-side masks (``corrrise_scores``).

All numbers come from one run on one machine. Usage:
    .venv/bin/python bench/bench_triton.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.alignment import Aligner  # noqa: E402
from explainer_service.methods.corrrise import CorrRISE, CorrRISEConfig  # noqa: E402
from explainer_service.models.registry import get_spec  # noqa: E402
from explainer_service.pipeline import load_face_model  # noqa: E402
from explainer_service.serving.client import TritonFaceModel  # noqa: E402
from explainer_service.serving.embedded import EmbeddedTriton  # noqa: E402
from explainer_service.serving.repository import BatchingConfig  # noqa: E402

SPEC = get_spec("dlib-resnet-v1")


def rate(fn, images: int, min_s: float) -> float:
    """images/s of ``fn`` (which embeds ``images`` images), repeated for at least ``min_s`` s."""
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return n * images / dt


def concurrent_rate(make_fn, clients: int, images: int, min_s: float) -> float:
    """images/s of ``clients`` threads each calling its own ``make_fn()`` in a loop."""
    fns = [make_fn() for _ in range(clients)]
    for f in fns:
        f()
    counts = [0] * clients
    stop = threading.Event()

    def loop(i: int) -> None:
        while not stop.is_set():
            fns[i]()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(min_s)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) * images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter timings (smoke run)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    min_s = 0.5 if args.quick else 2.0
    batches = [1, 8, 32, 128] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    rng = np.random.default_rng(0)
    pool = rng.uniform(0, 255, (256, 3, 150, 150)).astype(np.float32)
    local = load_face_model(batch_size=256)
    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "min_seconds_per_point": min_s,
    }

    # 1 + 2 with the default batching config
    with EmbeddedTriton() as srv:
        tri = TritonFaceModel(srv.url, SPEC, batch_size=256, max_in_flight=1, server_masks=False)
        shm = TritonFaceModel(srv.url, SPEC, batch_size=256, max_in_flight=1, shared_memory=True, server_masks=False)
        rows = []
        for b in batches:
            x = pool[:b]
            r_local = rate(lambda x=x: local.embed(x), b, min_s)
            r_grpc = rate(lambda x=x: tri.embed(x), b, min_s)
            r_shm = rate(lambda x=x: shm.embed(x), b, min_s)
            rows.append({"batch": b, "local": round(r_local, 1), "triton": round(r_grpc, 1),
                         "triton_shm": round(r_shm, 1), "triton/local": round(r_grpc / r_local, 3),
                         "triton_shm/local": round(r_shm / r_local, 3)})
            print(rows[-1], flush=True)
        result["batch_sweep"] = rows
        tri.close()
        shm.close()

        conc = []
        b = 32
        x = pool[:b]
        for clients in ([1, 2, 4, 8] if not args.quick else [1, 4]):
            r_local = concurrent_rate(lambda: (lambda: local.embed(x)), clients, b, min_s)

            opened: list = []

            def make_tri(opened: list = opened):
                m = TritonFaceModel(srv.url, SPEC, batch_size=256, max_in_flight=1, shared_memory=True)
                opened.append(m)
                return lambda: m.embed(x)

            r_tri = concurrent_rate(make_tri, clients, b, min_s)
            for m in opened:
                m.close()
            conc.append({"clients": clients, "batch": b, "local": round(r_local, 1),
                         "triton_shm": round(r_tri, 1), "triton_shm/local": round(r_tri / r_local, 3)})
            print(conc[-1], flush=True)
        result["concurrency"] = conc

        # 4. CorrRISE latency, client-side vs server-side masks
        al = Aligner()
        lfw = ROOT.parent / "shared" / "data" / "lfw-dev" / "images" / "Abel_Pacheco"
        a = al.align_file(lfw / "Abel_Pacheco_0001.jpg", SPEC.chip).chip
        bchip = al.align_file(lfw / "Abel_Pacheco_0004.jpg", SPEC.chip).chip
        lat = {}
        variants = {  # the shipped defaults: masks per call chosen by each model (16 / 16 / 16 / 64)
            "local": load_face_model(batch_size=32),
            "triton_client_masks_grpc": TritonFaceModel(srv.url, SPEC, batch_size=16, server_masks=False),
            "triton_client_masks_shm": TritonFaceModel(
                srv.url, SPEC, batch_size=16, shared_memory=True, server_masks=False
            ),
            "triton_server_masks": TritonFaceModel(srv.url, SPEC, batch_size=16, server_masks=True),
        }
        for name, model in variants.items():
            engine = CorrRISE(model, CorrRISEConfig())
            engine.attribute(a, bchip)
            times = []
            for _ in range(1 if args.quick else 3):
                t0 = time.perf_counter()
                engine.attribute(a, bchip)
                times.append(time.perf_counter() - t0)
            lat[name] = round(float(np.median(times)), 3)
            print(name, lat[name], flush=True)
            if hasattr(model, "close"):
                model.close()
        result["corrrise_n500_latency_s"] = lat
        result["wire_bytes_per_pair"] = {
            "client_masks": int(2 * 500 * 3 * 150 * 150 * 4),
            "server_masks": int(2 * -(-500 // 128) * (3 * 150 * 150 * 4 + 128 * 4 + 300) + 2 * 500 * 8),
        }

    # 3. dynamic batching: 8 clients sending batch-1 requests
    dyn = []
    settings = [("off", BatchingConfig(dynamic=False))] + [
        (f"on, delay {d} us", BatchingConfig(max_queue_delay_us=d))
        for d in ([0, 500, 1000, 2000, 4000] if not args.quick else [2000])
    ]
    x1 = pool[:1]
    for label, cfg in settings:
        with EmbeddedTriton(batching=cfg) as srv:
            opened = []

            def make(opened: list = opened):
                m = TritonFaceModel(srv.url, SPEC, batch_size=1, max_in_flight=1, shared_memory=True)
                opened.append(m)
                return lambda: m.embed(x1)

            r = concurrent_rate(make, 8, 1, min_s)
            for m in opened:
                m.close()
            dyn.append({"dynamic_batching": label, "clients": 8, "request_batch": 1, "images_per_s": round(r, 1)})
            print(dyn[-1], flush=True)
    off = dyn[0]["images_per_s"]
    for row in dyn:
        row["gain_vs_off"] = round(row["images_per_s"] / off, 3)
    result["dynamic_batching"] = dyn

    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
