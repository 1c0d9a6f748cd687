"""Verification accuracy from raw photos vs from the pre-aligned aligned112 chips (issue 12).

For each model and dataset, the same pairs are scored twice with the project's scorer
(:func:`explainer_service.calibration.score_pairs`, every distinct image aligned and embedded once):

- **raw**: the raw photos (``lfw:`` reads ``images/``, 250x250 deep-funneled; ``cfp-fp:`` the
  original CFP crops), each detected and aligned by ``Aligner(detector=...)`` (default ``auto``:
  HOG, then MTCNN when HOG finds nothing);
- **aligned112**: the shared ArcFace-aligned chips of the same photos (``lfw-aligned:``,
  ``cfp-fp-aligned:``), taken as aligned crops (``pre_aligned="arcface"``, what
  ``facexplain models calibrate --images aligned112`` does; the dlib chip of a crop is cut from
  dlib's 5 landmarks found inside the box the template implies).

Accuracy is the k-fold protocol of :func:`explainer_service.verification.kfold_accuracy` (threshold
chosen on the other folds, tested on the held-out one; mean over folds): LFW uses the 5
identity-disjoint folds of ``../shared/data/lfw-dev`` (3,000 pairs); CFP-FP split 01 (700 pairs,
one protocol fold) is cut into 10 folds of 35 same + 35 different pairs by position in the
protocol's lists (pair ``k`` of each list goes to fold ``k mod 10``). A pair whose raw photo has no
face found is dropped (counted); the accuracy is also given on the pairs both runs scored.

    nice -n 5 .venv/bin/python bench/bench_raw_vs_aligned.py [--models dlib-resnet-v1,PATH.onnx:PRESET]
        [--datasets lfw,cfp-fp] [--detector auto] [--pairs K] [--json FILE]

A model is a repository name or an ONNX file with its ``--preset`` after a colon
(``../shared/models/mobilefacenet-arcface-ms1m.onnx:imagenet``); an ONNX file is imported into a
temporary repository, not the checkout's. ``--pairs K`` takes K pairs evenly spaced over the list
(so over the folds); default all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer_service.alignment import AlignedFace, Aligner, FaceDetection  # noqa: E402
from explainer_service.calibration import PairScores, score_pairs  # noqa: E402
from explainer_service.datasets import Pair, read_dataset  # noqa: E402
from explainer_service.errors import FaceNotFoundError  # noqa: E402
from explainer_service.models.base import FaceModel  # noqa: E402
from explainer_service.spec import ChipSpec  # noqa: E402
from explainer_service.verification import kfold_accuracy  # noqa: E402

SHARED = ROOT.parent / "shared"
DATASETS = {"lfw": SHARED / "data" / "lfw-dev", "cfp-fp": SHARED / "data" / "cfp-dev"}
DEFAULT_MODELS = f"dlib-resnet-v1,{SHARED / 'models' / 'mobilefacenet-arcface-ms1m.onnx'}:imagenet"
#: CFP-FP split 01 is one protocol fold; it is cut into this many folds for the k-fold accuracy.
CFP_FOLDS = 10


class CountingAligner(Aligner):
    """An :class:`Aligner` that counts which detector found each face, and keeps each image's
    detection by name so a second model's chips (another chip kind) reuse it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.found_by: Counter[str] = Counter()
        self._detections: dict[str, FaceDetection | FaceNotFoundError] = {}

    def detect(self, image: np.ndarray, name: str = "<array>") -> FaceDetection:
        if name not in self._detections:
            try:
                self._detections[name] = super().detect(image, name)
            except FaceNotFoundError as e:
                self._detections[name] = e
        found = self._detections[name]
        if isinstance(found, FaceNotFoundError):
            raise found
        return found

    def align(self, image: np.ndarray, spec: ChipSpec, name: str = "<array>") -> AlignedFace:
        face = super().align(image, spec, name)
        self.found_by[face.detector or "pre-aligned"] += 1
        return face


def open_model(text: str, tmp: Path) -> tuple[str, FaceModel]:
    """A model by repository name, or an ONNX file (``PATH:PRESET``) imported into ``tmp``."""
    from explainer_service.pipeline import load_face_model

    head, _, tail = text.rpartition(":")
    path, preset = (head, tail) if head.endswith(".onnx") else (text, "")
    if not path.endswith(".onnx"):
        return text, load_face_model(text, threads=1)
    from explainer_service.models.importer import import_model
    from explainer_service.models.onnx_local import OnnxFaceModel
    from explainer_service.models.store import onnx_path, read_record

    name = Path(path).stem.replace(".", "-")
    import_model(path, name=name, family="onnx", preset=preset or None, repository=tmp)
    record = read_record(name, tmp)
    if record is None:
        raise SystemExit(f"{path}: import wrote no record")
    return name, OnnxFaceModel(onnx_path(name, tmp), record.spec(), threads=1)


def folds_for(kind: str, pairs: list[Pair]) -> np.ndarray:
    """The folds the accuracy uses: the dataset's own (LFW), or CFP's split cut into 10."""
    if kind != "cfp-fp":
        return np.array([p.fold for p in pairs], int)
    out, seen = [], {True: 0, False: 0}
    for p in pairs:
        out.append(seen[p.same] % CFP_FOLDS)
        seen[p.same] += 1
    return np.array(out, int)


def spaced(pairs: list[Pair], k: int | None) -> list[Pair]:
    if k is None or k >= len(pairs):
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, k).round().astype(int)]


def kept_mask(pairs: list[Pair], scored: PairScores) -> np.ndarray:
    """Which pairs ``score_pairs`` kept (both images aligned), in the pairs' order."""
    return np.array([str(p.a) not in scored.failures and str(p.b) not in scored.failures for p in pairs], bool)


def run_one(model: FaceModel, kind: str, images: str, aligner: CountingAligner, k: int | None) -> dict[str, Any]:
    spec = f"{kind}:{DATASETS[kind]}" if images == "raw" else f"{kind}-aligned:{DATASETS[kind]}"
    pairs = spaced(list(read_dataset(spec).pairs), k)
    aligner.found_by = Counter()
    t0 = time.perf_counter()
    scored = score_pairs(pairs, model, aligner=aligner)
    seconds = time.perf_counter() - t0
    mask = kept_mask(pairs, scored)
    folds = folds_for(kind, pairs)
    result = kfold_accuracy(scored.scores, scored.same, folds[mask])
    return {
        "spec": spec,
        "pairs": len(pairs),
        "scored": int(mask.sum()),
        "dropped": int((~mask).sum()),
        "failed_images": sorted(name.replace(str(SHARED) + "/", "") for name in scored.failures),
        "found_by": dict(aligner.found_by),
        "accuracy": result.mean,
        "std": result.std,
        "folds": len(result.accuracies),
        "seconds": seconds,
        "_scores": scored.scores,
        "_same": scored.same,
        "_folds": folds[mask],
        "_mask": mask,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--datasets", default="lfw,cfp-fp")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--pairs", type=int, default=None, help="pairs per dataset, evenly spaced (default all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    meta = {"command": " ".join(sys.argv), "load_start": os.getloadavg(), "cpus": os.cpu_count()}
    rows: list[dict[str, Any]] = []
    aligners = {  # one per dataset and kind of image, shared by the models (detections are kept)
        (kind, images): CountingAligner(detector=args.detector, pre_aligned="never" if images == "raw" else "arcface")
        for kind in args.datasets.split(",") for images in ("aligned112", "raw")
    }
    with tempfile.TemporaryDirectory(prefix="facexplain-bench-") as tmp:
        for model_text in args.models.split(","):
            name, model = open_model(model_text.strip(), Path(tmp))
            for kind in args.datasets.split(","):
                runs = {images: run_one(model, kind, images, aligners[kind, images], args.pairs)
                        for images in ("aligned112", "raw")}
                both = runs["raw"]["_mask"] & runs["aligned112"]["_mask"]
                row: dict[str, Any] = {"model": name, "dataset": kind, "detector": args.detector}
                for images, r in runs.items():
                    sub = both[r["_mask"]]  # the kept pairs that the other run kept too
                    common = kfold_accuracy(r["_scores"][sub], r["_same"][sub], r["_folds"][sub])
                    r["accuracy_common"] = common.mean
                    row[images] = {key: v for key, v in r.items() if not key.startswith("_")}
                row["common_pairs"] = int(both.sum())
                row["raw_minus_aligned"] = runs["raw"]["accuracy"] - runs["aligned112"]["accuracy"]
                rows.append(row)
                print(f"{name} {kind}: aligned112 {100 * runs['aligned112']['accuracy']:.2f} % "
                      f"({runs['aligned112']['scored']} pairs, {runs['aligned112']['seconds']:.0f} s), raw "
                      f"{100 * runs['raw']['accuracy']:.2f} % ({runs['raw']['scored']} pairs, "
                      f"{runs['raw']['dropped']} dropped, {runs['raw']['seconds']:.0f} s, found by "
                      f"{runs['raw']['found_by']}); load {os.getloadavg()[0]:.1f}", flush=True)
                if args.json:  # after each row, so a long run leaves what it measured
                    args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    meta["load_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print("| model | dataset | pairs | aligned112 | raw | raw - aligned | raw dropped | on common pairs |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        a, r = row["aligned112"], row["raw"]
        print(f"| {row['model']} | {row['dataset']} | {a['pairs']} | {100 * a['accuracy']:.2f} +- "
              f"{100 * a['std']:.2f} | {100 * r['accuracy']:.2f} +- {100 * r['std']:.2f} | "
              f"{100 * row['raw_minus_aligned']:+.2f} | {r['dropped']} | {100 * a['accuracy_common']:.2f} vs "
              f"{100 * r['accuracy_common']:.2f} ({row['common_pairs']}) |")


if __name__ == "__main__":
    main()
