"""Synthetic occluders for the occlusion scenario: a seeded generator that occludes aligned faces.

Webface-OCC (CASIA-WebFace with synthetic occluders) covers faces with masks, glasses, hands and
objects; this module produces the same kinds of occluder for any pair set, so that an explanation
method can be scored on whether it finds the occluded region (the occluder mask is the ground
truth of "what changed").

- :class:`Occluder` (``kind``, ``seed``) draws one occluder per image. Shapes are placed from the
  ArcFace five-point template of a 112x112 crop (scaled to the image size) with a small seeded
  jitter, so the input must be aligned to that template (``aligned112`` folders, insightface .bin).
  The draw depends only on ``(seed, index)``: the same call always gives the same pixels, in any
  order, and ``kind="random"`` at an index gives exactly what the drawn kind gives there.
- Colours are bright and textured, never black: a multiplicative perturbation mask (RISE, CorrRISE)
  cannot change black pixels, so a black occluder would be invisible to those methods.
- The occluder is pasted with a hard edge: the occluded image differs from the original only
  inside the returned mask.
- Occluded pair sets (``datasets.occluded``) apply an Occluder to one image of every pair.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .alignment.geometry import ARCFACE_TEMPLATE_112
from .errors import InputError
from .images import image_from_array

__all__ = [
    "OCCLUDER_KINDS",
    "ARCFACE_TEMPLATE_112",
    "Occluder",
]

#: The concrete occluder kinds; ``"random"`` picks one of them per image.
OCCLUDER_KINDS = ("mask", "glasses", "hand", "object")


_JITTER_PX = 3.0  # template pixels of seeded shift
_JITTER_SCALE = 0.08  # relative seeded size change
_CENTER = np.array([56.0, 72.0])  # scaling centre of the jitter (template pixels)

_MASK_COLOURS = [
    (118, 186, 232),
    (232, 238, 244),
    (150, 222, 196),
    (244, 170, 204),
    (190, 170, 236),
    (250, 250, 210),
]
_SKIN = [(241, 194, 167), (224, 172, 140), (198, 140, 102), (170, 112, 80), (141, 94, 66), (255, 214, 186)]
_LENS = [
    ((60, 140, 255), (200, 80, 255)),
    ((255, 200, 40), (255, 110, 40)),
    ((40, 220, 180), (40, 140, 255)),
    ((255, 90, 150), (255, 60, 60)),
    ((150, 255, 90), (40, 200, 220)),
]
_FRAME = [(255, 255, 255), (255, 60, 60), (255, 215, 0), (0, 200, 255), (255, 120, 220)]


@dataclass(frozen=True)
class Occluder:
    """A seeded generator of synthetic occluders on ArcFace-aligned faces.

    Args:
        kind: ``"mask"`` (surgical mask over nose, mouth and chin), ``"glasses"`` (sunglasses over
            both eyes), ``"hand"`` (skin-coloured palm with fingers over an eye, the nose or the
            mouth), ``"object"`` (a phone-like rectangle or cup-like ellipse over a face part) or
            ``"random"`` (one of these per image).
        seed: non-negative integer; with the image index it fixes the draw.
    """

    kind: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in OCCLUDER_KINDS + ("random",):
            raise InputError(
                f"occluder kind must be one of {', '.join(OCCLUDER_KINDS + ('random',))}, got {self.kind!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"occluder seed must be a non-negative integer, got {self.seed!r}")

    def _rng(self, index: int) -> tuple[np.random.Generator, str]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"occluder index must be a non-negative integer, got {index!r}")
        pick = np.random.default_rng([int(self.seed), int(index)])
        kind = OCCLUDER_KINDS[int(pick.integers(len(OCCLUDER_KINDS)))] if self.kind == "random" else self.kind
        # one stream per kind: kinds are drawn independently, and "random" equals the kind it drew
        return np.random.default_rng([int(self.seed), int(index), 1 + OCCLUDER_KINDS.index(kind)]), kind

    def kind_for(self, index: int) -> str:
        """The concrete kind drawn for image ``index`` (``self.kind`` unless it is ``"random"``)."""
        return self._rng(index)[1]

    def occlude(self, image: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Occlude one aligned face.

        Args:
            image: ``(H, W, 3)`` uint8 RGB aligned to the ArcFace template (112x112, or any size:
                the template is scaled to ``W/112`` and ``H/112``). Other dtypes/shapes accepted by
                :func:`~explainer_service.images.image_from_array` are converted.
            index: the image's index in its dataset (non-negative); with ``seed`` it fixes the draw.

        Returns:
            ``(occluded, mask)``: a new ``(H, W, 3)`` uint8 image and the ``(H, W)`` bool occluder
            mask; ``occluded`` equals ``image`` outside ``mask``.
        """
        img = image_from_array(image, "image to occlude")
        rng, kind = self._rng(index)
        h, w = img.shape[:2]
        geo = _Geometry(h, w, rng)
        layer = np.zeros((h, w, 3), np.float64)
        mask = np.zeros((h, w), bool)
        _DRAW[kind](geo, rng, layer, mask)
        out = img.copy()
        out[mask] = np.clip(np.rint(layer[mask]), 0, 255).astype(np.uint8)
        return out, mask


class _Geometry:
    """Template coordinates (112x112 units, jittered) -> pixel coordinates of one image."""

    def __init__(self, h: int, w: int, rng: np.random.Generator) -> None:
        self.h, self.w = h, w
        self.sx, self.sy = w / 112.0, h / 112.0
        self.shift = rng.uniform(-_JITTER_PX, _JITTER_PX, 2)
        self.scale = 1.0 + rng.uniform(-_JITTER_SCALE, _JITTER_SCALE)
        pts = self.to_template_jittered(ARCFACE_TEMPLATE_112)
        self.left_eye, self.right_eye, self.nose, self.mouth_l, self.mouth_r = pts
        self.mouth = (self.mouth_l + self.mouth_r) / 2
        ty, tx = np.mgrid[0:h, 0:w].astype(np.float64)
        self.tx, self.ty = (tx + 0.5) / self.sx, (ty + 0.5) / self.sy  # pixel centres in template units

    def to_template_jittered(self, pts: np.ndarray) -> np.ndarray:
        out: np.ndarray = (np.asarray(pts, np.float64) - _CENTER) * self.scale + _CENTER + self.shift
        return out

    def px(self, pts: np.ndarray) -> list[tuple[float, float]]:
        """Template points (N, 2) -> pixel polygon vertices."""
        p = np.asarray(pts, np.float64).reshape(-1, 2)
        return [(float(x * self.sx), float(y * self.sy)) for x, y in p]

    def polygon(self, pts: np.ndarray) -> np.ndarray:
        m = Image.new("L", (self.w, self.h), 0)
        ImageDraw.Draw(m).polygon(self.px(pts), fill=1, outline=1)
        return np.asarray(m, bool)

    def line(self, a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
        m = Image.new("L", (self.w, self.h), 0)
        ImageDraw.Draw(m).line(
            self.px(np.array([a, b])), fill=1, width=max(1, int(round(width * min(self.sx, self.sy))))
        )
        return np.asarray(m, bool)

    def ellipse(self, c: np.ndarray, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
        """Filled (rotated) ellipse, radii in template units, scaled by the jitter scale."""
        rx, ry = rx * self.scale, ry * self.scale
        ca, sa = np.cos(angle), np.sin(angle)
        dx, dy = self.tx - c[0], self.ty - c[1]
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        inside: np.ndarray = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        return inside


def _paint(layer: np.ndarray, mask: np.ndarray, part: np.ndarray, colour: np.ndarray) -> None:
    """Paint ``colour`` ((3,) or (H, W, 3)) into ``layer`` where ``part``; add ``part`` to ``mask``."""
    colour = np.broadcast_to(np.asarray(colour, np.float64), layer.shape)
    layer[part] = colour[part]
    mask |= part


def _jitter_colour(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 18) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3), 60, 255)


def _noise(rng: np.random.Generator, geo: _Geometry, amount: float) -> np.ndarray:
    return rng.uniform(-amount, amount, (geo.h, geo.w, 1))


def _draw_mask(geo: _Geometry, rng: np.random.Generator, layer: np.ndarray, mask: np.ndarray) -> None:
    """A surgical mask: a hexagon from the nose bridge to under the chin, with pleats and ear loops."""
    le, re_, n, ml, mr = geo.left_eye, geo.right_eye, geo.nose, geo.mouth_l, geo.mouth_r
    s = geo.scale
    top = n[1] - rng.uniform(8, 12) * s
    pts = np.array(
        [
            [le[0] - 17 * s, n[1] - 3 * s],
            [n[0], top],
            [re_[0] + 17 * s, n[1] - 3 * s],
            [mr[0] + 12 * s, mr[1] + 13 * s],
            [(ml[0] + mr[0]) / 2, ml[1] + 21 * s],
            [ml[0] - 12 * s, ml[1] + 13 * s],
        ]
    )
    base = _jitter_colour(rng, _MASK_COLOURS[int(rng.integers(len(_MASK_COLOURS)))], 12)
    period = rng.uniform(7, 10) * s
    shade = 0.9 + 0.1 * np.cos(2 * np.pi * (geo.ty - top) / period)[..., None]
    body = geo.polygon(pts)
    _paint(layer, mask, body, np.clip(base * shade + _noise(rng, geo, 5), 0, 255))
    loop = _jitter_colour(rng, (250, 250, 250), 5)
    for corner, ear in (
        (pts[0], [le[0] - 30 * s, le[1] + 2 * s]),
        (pts[5], [ml[0] - 27 * s, ml[1] - 6 * s]),
        (pts[2], [re_[0] + 30 * s, re_[1] + 2 * s]),
        (pts[3], [mr[0] + 27 * s, mr[1] - 6 * s]),
    ):
        _paint(layer, mask, geo.line(corner, np.array(ear), 1.6) & ~body, loop)


def _draw_glasses(geo: _Geometry, rng: np.random.Generator, layer: np.ndarray, mask: np.ndarray) -> None:
    """Sunglasses: two tinted, graded lenses in a bright frame, a bridge and the temples."""
    le, re_ = geo.left_eye, geo.right_eye
    s = geo.scale
    rx, ry = rng.uniform(12, 14.5), rng.uniform(8.5, 11)
    c1, c2 = (np.asarray(c, np.float64) for c in _LENS[int(rng.integers(len(_LENS)))])
    frame = _jitter_colour(rng, _FRAME[int(rng.integers(len(_FRAME)))], 10)
    fw = 1.6
    for eye in (le, re_):
        outer = geo.ellipse(eye, rx + fw, ry + fw)
        lens = geo.ellipse(eye, rx, ry)
        t = np.clip((geo.ty - (eye[1] - ry * s)) / (2 * ry * s), 0, 1)[..., None]
        grad = c1 * (1 - t) + c2 * t
        # a specular streak across the upper part of each lens
        streak = (np.abs((geo.tx - eye[0]) + (geo.ty - eye[1]) + 4 * s) < 1.8 * s)[..., None]
        _paint(layer, mask, lens, np.where(streak, 0.5 * grad + 127.5, grad))
        _paint(layer, mask, outer & ~lens, frame)
    y = (le[1] + re_[1]) / 2 - 3 * s
    _paint(layer, mask, geo.line(np.array([le[0] + rx * s, y]), np.array([re_[0] - rx * s, y]), 2.2), frame)
    for eye, side in ((le, -1), (re_, 1)):
        a = np.array([eye[0] + side * (rx + fw) * s, eye[1] - 3 * s])
        _paint(layer, mask, geo.line(a, a + np.array([side * 14 * s, -2 * s]), 2.0), frame)


def _draw_hand(geo: _Geometry, rng: np.random.Generator, layer: np.ndarray, mask: np.ndarray) -> None:
    """A hand: a palm ellipse over an eye, the nose or the mouth, four fingers and a thumb."""
    s = geo.scale
    anchors = [geo.left_eye, geo.right_eye, geo.nose, geo.mouth, geo.mouth + np.array([0, 10 * s])]
    anchor = anchors[int(rng.integers(len(anchors)))] + rng.uniform(-4, 4, 2)
    # fingers point away from the side the hand comes from: up-ish, or across the face
    angle = rng.uniform(-np.pi, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)])
    nrm = np.array([-d[1], d[0]])
    prx, pry = rng.uniform(14, 16), rng.uniform(14, 16.5)
    palm = anchor - d * 6 * s
    skin = _jitter_colour(rng, _SKIN[int(rng.integers(len(_SKIN)))], 10)
    along = ((geo.tx - palm[0]) * d[0] + (geo.ty - palm[1]) * d[1]) / (40 * s)
    shade = np.clip(1.0 - 0.12 * along, 0.85, 1.1)[..., None]
    colour = np.clip(skin * shade + _noise(rng, geo, 4), 0, 255)
    parts = geo.ellipse(palm, prx, pry, angle)
    flen = rng.uniform(10, 12.5)
    for k, off in enumerate((-1.5, -0.5, 0.5, 1.5)):
        length = flen * (0.8 if k in (0, 3) else 1.0)
        base = palm + d * (prx - 4) * s + nrm * off * 6.4 * s
        parts = parts | geo.ellipse(base + d * length * s, length + 1, 3.0, angle)
    side = 1 if rng.random() < 0.5 else -1
    thumb_dir = angle + side * 1.1
    tb = palm + nrm * side * (pry - 2) * s
    parts = parts | geo.ellipse(
        tb + np.array([np.cos(thumb_dir), np.sin(thumb_dir)]) * 6 * s, 8, 3.0, thumb_dir
    )
    _paint(layer, mask, parts, colour)
    # knuckle creases: slightly darker, never dark
    crease = parts & (np.abs(along * 40 * s - (prx - 2) * s) < 0.7 * s)
    layer[crease] *= 0.85


def _draw_object(geo: _Geometry, rng: np.random.Generator, layer: np.ndarray, mask: np.ndarray) -> None:
    """A held object: a phone-like rotated rectangle with a screen, or a striped cup-like ellipse."""
    s = geo.scale
    anchors = [geo.left_eye, geo.right_eye, geo.nose, geo.mouth]
    c = anchors[int(rng.integers(len(anchors)))] + rng.uniform(-6, 6, 2)
    hue = rng.random()
    body = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.0))) * 255
    accent = (
        np.array(colorsys.hsv_to_rgb((hue + rng.uniform(0.3, 0.7)) % 1.0, rng.uniform(0.5, 0.9), 1.0)) * 255
    )
    angle = rng.uniform(-0.5, 0.5)
    ca, sa = np.cos(angle), np.sin(angle)
    u = ((geo.tx - c[0]) * ca + (geo.ty - c[1]) * sa) / s
    v = (-(geo.tx - c[0]) * sa + (geo.ty - c[1]) * ca) / s
    if rng.random() < 0.5:  # phone
        hw, hh = rng.uniform(10, 14), rng.uniform(16, 22)
        part = (np.abs(u) <= hw) & (np.abs(v) <= hh)
        screen = (np.abs(u) <= hw - 2) & (np.abs(v) <= hh - 4)
        colour = np.where(screen[..., None], accent * (0.85 + 0.15 * np.sin(v / 2.5))[..., None], body)
    else:  # cup / ball
        rx, ry = rng.uniform(13, 17), rng.uniform(13, 19)
        part = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        stripes = (np.floor((v + ry) / rng.uniform(3.5, 5.5)) % 2 == 0)[..., None]
        colour = np.where(stripes, body, accent)
    _paint(layer, mask, part, np.clip(colour + _noise(rng, geo, 4), 0, 255))


_DRAW = {"mask": _draw_mask, "glasses": _draw_glasses, "hand": _draw_hand, "object": _draw_object}
