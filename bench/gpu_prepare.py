"""Prepare what the GPU evaluation (bench/gpu_eval.py) needs on a bare CUDA machine.

The GPU machine has no dlib (no aligner) and no ../shared, so the aligned chips of each Table-1
scenario are cut here, exactly as `facexplain evaluate` cuts them, and saved with dlib's network
file into one folder that travels with the working tree (`.devcarry/`, git-ignored).

Usage: .venv/bin/python bench/gpu_prepare.py [--lfw-pairs 200] [--cfp-pairs 150] [--out .devcarry]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from chips_io import save_chips  # noqa: E402

from explainer_service.datasets import read_dataset  # noqa: E402
from explainer_service.datasets.prepare import prepare_pairs  # noqa: E402
from explainer_service.models.convert import dlib_source_path  # noqa: E402
from explainer_service.models.registry import DLIB_RESNET_V1  # noqa: E402


class _SpecOnly:
    """prepare_pairs only needs the model's chip spec."""

    spec = DLIB_RESNET_V1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw-pairs", type=int, default=200)
    ap.add_argument("--cfp-pairs", type=int, default=150)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / ".devcarry"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.shared) / "data"
    lfw = read_dataset(f"lfw-aligned:{data / 'lfw-dev'}")
    cfp = read_dataset(f"cfp-fp-aligned:{data / 'cfp-dev'}")
    model = _SpecOnly()
    p_lfw = prepare_pairs(lfw, model, pairs=args.lfw_pairs)
    p_occ = prepare_pairs(lfw, model, pairs=args.lfw_pairs, occlude=True)
    p_cfp = prepare_pairs(cfp, model, pairs=args.cfp_pairs)
    # the occluded scenario uses the same pairs with B occluded: carry A once
    if [n[0] for n in p_occ.names] != [n[0] for n in p_lfw.names] or not np.array_equal(p_occ.chips_a, p_lfw.chips_a):
        raise SystemExit("occluded and clean LFW scenarios chose different pairs")
    arrays = {
        "lfw_a": p_lfw.chips_a, "lfw_b": p_lfw.chips_b, "lfwocc_b": p_occ.chips_b,
        "cfpfp_a": p_cfp.chips_a, "cfpfp_b": p_cfp.chips_b,
    }
    save_chips(out, arrays)
    shutil.copyfile(dlib_source_path(), out / "dlib_face_recognition_resnet_model_v1.dat")
    for name, p in (("lfw", p_lfw), ("lfw-occluded", p_occ), ("cfp-fp", p_cfp)):
        print(f"{name}: {p.summary()}")
    print(f"wrote {out}: " + ", ".join(f"{f.name} {f.stat().st_size / 2**20:.1f} MiB" for f in sorted(out.iterdir())))


if __name__ == "__main__":
    main()
