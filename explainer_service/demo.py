"""``make demo``: explain a real face pair that setup makes offline from a package's photo.

Image A is scikit-image's bundled ``astronaut`` photo (NASA astronaut Eileen Collins, a US
government work in the public domain, shipped inside the scikit-image wheel). Image B is a copy
with yellow sunglasses drawn over the eyes, like the occlusions of the paper's Fig. 4: CorrRISE
marks the eye region as dissimilar (strongly in A, whose eyes B hides; mostly negative on B's occluder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["make_demo_pair", "main"]

#: A bright colour: multiplicative masks turn it toward black, so masking the occluder changes the
#: image (a black occluder would be left unchanged by every mask and could not be scored).
SUNGLASSES = (255, 200, 0)


def make_demo_pair(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``astronaut.png`` and ``astronaut_sunglasses.png`` into ``out_dir``; return their paths."""
    from PIL import Image, ImageDraw
    from skimage import data

    from .alignment import Aligner
    from .spec import DLIB_CHIP

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    photo = np.ascontiguousarray(data.astronaut()[..., :3])
    face = Aligner().align(photo, DLIB_CHIP, name="skimage astronaut")
    pts = face.landmarks  # dlib 5 points: two corners of each eye, base of the nose
    if pts is None:
        raise RuntimeError("the demo photo's face has no landmarks")  # detected faces always have them
    eye1 = pts[0:2].mean(axis=0)
    eye2 = pts[2:4].mean(axis=0)
    eye_dist = float(np.linalg.norm(eye1 - eye2))
    r = 0.42 * eye_dist
    occluded = Image.fromarray(photo)
    draw = ImageDraw.Draw(occluded)
    for cx, cy in (eye1, eye2):
        draw.ellipse([cx - r, cy - 0.75 * r, cx + r, cy + 0.75 * r], fill=SUNGLASSES)
    draw.line([tuple(eye1), tuple(eye2)], fill=SUNGLASSES, width=max(2, int(0.08 * eye_dist)))
    path_a = out / "astronaut.png"
    path_b = out / "astronaut_sunglasses.png"
    Image.fromarray(photo).save(path_a)
    occluded.save(path_b)
    return path_a, path_b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainer_service.demo")
    parser.add_argument("--out", default="demo-out")
    parser.add_argument("--masks", default="500")
    args = parser.parse_args(argv)
    from .cli import main as cli_main

    inputs = Path(args.out) / "inputs"
    a, b = make_demo_pair(inputs)
    print(f"demo pair: {a} and {b} (scikit-image 'astronaut', public domain; B with drawn sunglasses)")
    return cli_main(["explain", str(a), str(b), "--out", args.out, "--masks", args.masks])


if __name__ == "__main__":
    sys.exit(main())
