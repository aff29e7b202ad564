"""Procedural "parts on a conveyor" scenes with exact ground truth: the ``synthetic:parts`` live source.

A camera looks straight down at a belt that carries nuts, washers and bolts from left to right. Every frame
is a pure function of ``(seed, index)``: a part keeps its identity, shape and material while it crosses the
frame, moves ``speed`` pixels per frame and turns slowly, so consecutive indices look like live video and any
index can be rendered on its own (tests, training data, a demo that starts anywhere).

Layout. Parts live at fixed positions in *belt coordinates* ``u`` (screen ``x = u + speed * index``). The
belt is cut into tiles of length ``2 * max_part_radius``; even tiles are drawn above odd ones. Even tiles are
generated on their own, odd tiles against their two even neighbours, so a tile never depends on a chain of
earlier tiles and any frame is cheap to reach. Placement is rejection-sampled: each part stays at least
``_MIN_VISIBLE`` visible at every angle it takes while on screen, and about half the parts are slid into
contact with (or partly under/over) a neighbour, because touching parts are what instance splitting is for.

Ground truth is exact and sharp: ``instance_map`` holds the visible pixels of each part (a part drawn later
occludes earlier ones; the holes of nuts and washers show the belt). Image-only effects (soft shadows, uneven
and drifting light, sensor noise, occasional motion blur along the belt) never touch the labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.instances import Instances

CLASS_NAMES: tuple[str, ...] = ("background", "nut", "washer", "bolt")
_NUT, _WASHER, _BOLT = 1, 2, 3

_BOLT_MAX = 190.0  # longest bolt, in pixels of a 640x480 frame
_MIN_VISIBLE = 0.65  # placement guarantee (checked on polygons; rendered edges differ by a fraction of a px)
_CLASS_P = (0.38, 0.34, 0.28)  # nut, washer, bolt
_MATERIALS: dict[str, tuple[float, float, float]] = {  # BGR albedo
    "steel": (150.0, 152.0, 156.0),
    "zinc": (196.0, 182.0, 160.0),
    "brass": (70.0, 150.0, 192.0),
    "oxide": (52.0, 54.0, 60.0),
}
_MATERIAL_P: dict[int, dict[str, float]] = {
    _NUT: {"steel": 0.5, "zinc": 0.25, "brass": 0.15, "oxide": 0.1},
    _WASHER: {"steel": 0.35, "zinc": 0.5, "brass": 0.15},
    _BOLT: {"steel": 0.5, "zinc": 0.3, "brass": 0.05, "oxide": 0.15},
}
_NOISE_STEPS = 25  # the sensor noise table's int8 steps per unit of its standard deviation
_BELTS = ((58.0, 58.0, 58.0), (60.0, 78.0, 60.0), (82.0, 70.0, 56.0), (88.0, 88.0, 86.0), (40.0, 42.0, 46.0))


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One rendered frame and its exact ground truth.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR.
        class_map: ``(H, W)`` uint8, 0 belt, else ``CLASS_NAMES`` index of the visible part.
        instance_map: ``(H, W)`` int32, 0 none, ``k`` (1..K) the visible pixels of instance ``k``; instances
            are numbered in drawing order (a higher id may occlude a lower one).
        instance_class: ``(K,)`` int32, ``instance_class[k-1]`` is the class of instance ``k``.
        instance_track: ``(K,)`` int64 identity of the physical part, stable across frames of one scene.
        unoccluded_area: ``(K,)`` int64 pixels instance ``k`` would cover inside the frame with nothing on
            top of it (visible fraction = visible pixels / this).
        instance_box: ``(K, 4)`` int32 ``(x0, y0, x1, y1)``, a box inside the frame that holds every pixel of
            instance ``k`` (the patch it was drawn in).
    """

    image: NDArray[np.uint8]
    class_map: NDArray[np.uint8]
    instance_map: NDArray[np.int32]
    instance_class: NDArray[np.int32]
    instance_track: NDArray[np.int64]
    unoccluded_area: NDArray[np.int64]
    instance_box: NDArray[np.int32]

    def instances(self) -> Instances:
        """Ground truth as :class:`~edgeseg.instances.Instances` (score 1, track ids set)."""
        # each instance's pixels from its drawing patch (the demo source does this every frame: finding
        # them in the whole map took half of it)
        lab = self.instance_map
        return Instances.from_crops(
            lab.shape,
            self.instance_class,
            np.ones(len(self.instance_class), np.float32),
            self.instance_box[:, :2],
            [lab[y0:y1, x0:x1] == k for k, (x0, y0, x1, y1) in enumerate(self.instance_box.tolist(), 1)],
            track_id=self.instance_track,
        )

    def between_parts(self, radius: int) -> NDArray[np.bool_]:
        """:func:`between_parts` of this frame's parts: the demo model's contact map is taught it at
        radius 2."""
        return between_parts(self.instance_map, radius)


def between_parts(labels: NDArray[np.integer], radius: int) -> NDArray[np.bool_]:
    """Pixels (of a part or of the background) with two different parts of the label image ``labels`` (0:
    none; at most 65534 parts) within ``radius`` px (a square window): where parts touch or nearly do."""
    lab = labels.astype(np.uint16)
    box = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    hi = cv2.dilate(lab, box)
    lo = cv2.erode(np.where(lab == 0, np.uint16(65535), lab), box)
    out: NDArray[np.bool_] = (lo < hi) & (hi > 0)
    return out


@dataclass(frozen=True)
class _Part:
    track: int
    cls: int
    u: float  # belt coordinate of the centre (px); screen x = u + speed * index
    y: float  # screen row of the centre (px)
    angle0: float  # degrees at screen x = 0, from +x towards +y
    turn: float  # degrees per pixel travelled
    z: float  # drawing order, higher on top
    dims: tuple[float, ...]  # nut/washer: (outer radius, hole radius); bolt: (length, shaft, head w, head l)
    colour: tuple[float, float, float]
    shine: float
    grain: int  # seed of the part's surface texture

    @property
    def ext(self) -> float:
        """Radius of the circle around the centre that holds the whole part."""
        if self.cls == _BOLT:
            return math.hypot(self.dims[0] / 2, self.dims[2] / 2)
        return self.dims[0]

    def angle(self, x: float) -> float:
        return self.angle0 + self.turn * x


@dataclass(frozen=True)
class _Scene:
    width: int
    height: int
    seed: int
    scale: float
    speed: float
    tile: float
    per_tile: float


def _zigzag(k: int) -> int:
    """Map any int to a distinct non-negative int (seed sequences take no negatives)."""
    return 2 * k if k >= 0 else -2 * k - 1


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([_zigzag(k) for k in key])


@lru_cache(maxsize=4096)
def _outline(cls: int, dims: tuple[float, ...]) -> NDArray[np.float64]:
    """``(N, 2)`` outer polygon at angle 0 around the centre, without the hole."""
    if cls == _NUT:
        a = np.deg2rad(np.arange(6) * 60.0)
        return dims[0] * np.stack([np.cos(a), np.sin(a)], 1)
    if cls == _WASHER:
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return dims[0] * np.stack([np.cos(a), np.sin(a)], 1)
    length, d, hw, hl = dims
    x0, xh, x1, c, t = -length / 2, -length / 2 + hl, length / 2, 0.12 * hw, 0.2 * d
    # one half (head corner chamfered, tip chamfered), mirrored across the axis
    pts = [(x0, -hw / 2 + c), (x0 + c, -hw / 2), (xh, -hw / 2), (xh, -d / 2), (x1 - t, -d / 2)]
    pts.append((x1, -d / 2 + t))
    return np.array(pts + [(x, -y) for x, y in reversed(pts)], dtype=np.float64)


def _draw(canvas: NDArray[np.uint8], p: _Part, cx: float, cy: float, angle: float, aa: bool = False) -> None:
    """Fill part ``p`` (centre ``cx, cy`` in canvas pixels, edge convention) with 255, its hole with 0."""
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    pts = np.round((_outline(p.cls, p.dims) @ rot + (cx - 0.5, cy - 0.5)) * 16).astype(np.int32)
    line = cv2.LINE_AA if aa else cv2.LINE_8
    cv2.fillPoly(canvas, [pts], 255, line, shift=4)
    if p.cls != _BOLT:
        centre = (round((cx - 0.5) * 16), round((cy - 0.5) * 16))
        cv2.circle(canvas, centre, round(p.dims[1] * 16), 0, -1, line, shift=4)


def _visible(target: _Part, others: list[_Part], x: float, height: int) -> float:
    """Fraction of ``target`` (centre at screen ``x``) inside the frame rows left visible by ``others``."""
    r = target.ext
    x0, y0, n = math.floor(x - r) - 1, math.floor(target.y - r) - 1, math.ceil(2 * r) + 3
    mask = np.zeros((n, n), np.uint8)
    _draw(mask, target, x - x0, target.y - y0, target.angle(x))
    mask[: max(-y0, 0)] = 0  # the belt moves along x, so what lies above or below the frame stays out
    mask[max(height - y0, 0) :] = 0
    area = cv2.countNonZero(mask)
    occ = np.zeros_like(mask)
    for o in others:
        if o.z > target.z:
            xo = x + o.u - target.u
            _draw(occ, o, xo - x0, o.y - y0, o.angle(xo))
    return 1.0 - cv2.countNonZero(cv2.bitwise_and(mask, occ)) / max(area, 1)


def _overlaps(a: _Part, b: _Part, x: float) -> bool:
    r = a.ext + b.ext
    x0, y0, n = math.floor(x - r) - 1, math.floor(a.y - r) - 1, math.ceil(2 * r) + 3
    ma, mb = np.zeros((n, n), np.uint8), np.zeros((n, n), np.uint8)
    _draw(ma, a, x - x0, a.y - y0, a.angle(x))
    xb = x + b.u - a.u
    _draw(mb, b, xb - x0, b.y - y0, b.angle(xb))
    return cv2.countNonZero(cv2.bitwise_and(ma, mb)) > 0


def _near(a: _Part, b: _Part) -> bool:
    r = a.ext + b.ext
    return abs(a.u - b.u) < r and abs(a.y - b.y) < r


def _fits(cand: _Part, placed: list[_Part], above: list[_Part], width: int, height: int) -> bool:
    """Whether ``cand`` and every placed part it covers stay ``_MIN_VISIBLE`` visible at every angle."""
    near = [o for o in placed + above if _near(cand, o)]
    if not near:
        return True
    for xs in (0.0, width / 2, float(width)):
        if _visible(cand, near, xs, height) < _MIN_VISIBLE:
            return False
        for p in near:
            if p.z < cand.z and p in placed:
                occ = [o for o in placed + above + [cand] if o is not p and _near(p, o)]
                if _visible(p, occ, xs + p.u - cand.u, height) < _MIN_VISIBLE:
                    return False
    return True


def _random_part(rng: np.random.Generator, sc: _Scene, t: int, n: int) -> _Part:
    s = sc.scale
    cls = int(rng.choice([_NUT, _WASHER, _BOLT], p=_CLASS_P))
    if cls == _NUT:
        r = rng.uniform(13, 30) * s
        dims: tuple[float, ...] = (r, r * 0.866 * rng.uniform(0.5, 0.62))
    elif cls == _WASHER:
        r = rng.uniform(14, 34) * s
        dims = (r, r * rng.uniform(0.38, 0.55))
    else:
        d = rng.uniform(8, 15) * s
        length = min(d * rng.uniform(6, 14), _BOLT_MAX * s)
        dims = (length, d, d * rng.uniform(1.5, 1.8), d * rng.uniform(0.6, 0.8))
    names = list(_MATERIAL_P[cls])
    mat = _MATERIALS[str(rng.choice(names, p=list(_MATERIAL_P[cls].values())))]
    tint = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    b, g, r_ = (float(c) for c in np.minimum(np.array(mat) * tint, 255))
    r_ext = dims[0] if cls != _BOLT else math.hypot(dims[0] / 2, dims[2] / 2)
    return _Part(
        track=_zigzag(t) * 256 + n,  # n < 6 * target + 4, far below 256 for any plausible tile
        cls=cls,
        u=(t + rng.random()) * sc.tile,
        y=rng.uniform(-0.3 * r_ext, sc.height + 0.3 * r_ext),
        angle0=rng.uniform(-180, 180),
        turn=rng.uniform(-25, 25) / sc.width,
        z=(t % 2 == 0) + rng.random(),
        dims=dims,
        colour=(b, g, r_),
        shine=float(rng.uniform(0.2, 1.0)),
        grain=int(rng.integers(2**31)),
    )


@lru_cache(maxsize=512)
def _tile(sc: _Scene, t: int) -> tuple[_Part, ...]:
    """The parts whose centres lie in belt tile ``t`` (``u`` in ``[t, t+1) * tile``)."""
    rng = _rng(sc.seed, t, 1)
    above = [] if t % 2 == 0 else list(_tile(sc, t - 1) + _tile(sc, t + 1))
    placed: list[_Part] = []
    target = rng.poisson(sc.per_tile * rng.uniform(0.5, 1.5))
    for n in range(6 * target + 4):
        if len(placed) >= target:
            break
        cand = _random_part(rng, sc, t, n)
        pool = placed + above
        if pool and rng.random() < 0.5:
            q = pool[int(rng.integers(len(pool)))]
            a = rng.uniform(0, 2 * np.pi)
            lo, hi = 0.0, cand.ext + q.ext
            for _ in range(7):  # slide towards q until the outlines meet (mid-screen angles)
                mid = (lo + hi) / 2
                trial = replace(cand, u=q.u + mid * math.cos(a), y=q.y + mid * math.sin(a))
                lo, hi = (mid, hi) if _overlaps(q, trial, sc.width / 2) else (lo, mid)
            # (ext is in frame pixels: below ~1/3 of 640x480 the bound falls under 2, and numpy refuses a
            # range whose high is below its low)
            deep = max(2.0, 0.4 * min(cand.ext, q.ext))
            depth = rng.uniform(-1, 2) if rng.random() < 0.5 else rng.uniform(2, deep)
            d = hi - depth * sc.scale
            cand = replace(cand, u=q.u + d * math.cos(a), y=q.y + d * math.sin(a))
            if not t * sc.tile <= cand.u < (t + 1) * sc.tile:
                continue
        if _fits(cand, placed, above, sc.width, sc.height):
            placed.append(cand)
    return tuple(placed)


def _texture(p: _Part) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The part at angle 0 on a square canvas: premultiplied BGR+alpha ``(S, S, 4)`` and alpha ``(S, S)``."""
    size = 2 * math.ceil(p.ext) + 4
    alpha8 = np.zeros((size, size), np.uint8)
    _draw(alpha8, p, size / 2, size / 2, 0.0, aa=True)
    alpha = (alpha8 / 255).astype(np.float32)
    ly, lx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5 - size / 2
    rng = np.random.default_rng(p.grain)
    phi = rng.uniform(-np.pi, np.pi)  # direction of the brightest reflection
    rho, th = np.hypot(lx, ly), np.arctan2(ly, lx)
    if p.cls == _NUT:
        r, hole = p.dims
        shade = 0.8 + 0.12 * np.cos(th - phi) * rho / r
        chamfer = rho > 0.8 * r
        shade[chamfer] = (0.5 + 0.45 * np.cos(th - phi) ** 2)[chamfer]
        ring = rho < hole + 0.3 * (0.866 * r - hole)
        # the threaded bore: the wall facing the light is lit, the thread crests make fine rings
        bore = 0.55 + 0.12 * np.cos(rho * 2 * np.pi / max(0.08 * r, 1.5)) - 0.15 * np.cos(th - phi)
        shade[ring] = bore[ring]
        spec = np.where(chamfer, np.maximum(np.cos(th - phi), 0) ** 8, 0.0)
    elif p.cls == _WASHER:
        r, hole = p.dims
        shade = 0.72 + 0.22 * np.cos(2 * (th - phi)) + 0.03 * np.cos(rho * 2 * np.pi / 2.5)
        shade *= np.where((r - rho < 1.5) | (rho - hole < 1.2), 0.78, 1.0)
        spec = np.maximum(np.cos(2 * (th - phi)), 0) ** 6
    else:
        length, d, hw, hl = p.dims
        v = ly / (d / 2)
        shade = 0.45 + 0.55 * np.clip(1 - (v + 0.25) ** 2, 0, 1)  # a lit cylinder, darker to its sides
        pitch = max(0.15 * d, 1.6)
        thread = lx > length / 2 - rng.uniform(0.4, 1.0) * (length - hl)
        shade[thread] *= (0.75 + 0.25 * np.cos(2 * np.pi * (lx + 0.25 * pitch * v) / pitch))[thread]
        spec = np.clip(1 - ((v + 0.3) / 0.25) ** 2, 0, 1)
        head = lx < -length / 2 + hl
        w = ly / (hw / 2)
        shade[head] = np.where(np.abs(w) < 0.5, 0.88, np.where(w < 0, 0.62, 0.5))[head]
        spec[head] = 0
    shade = shade * rng.uniform(0.85, 1.1) + cv2.GaussianBlur(rng.normal(0, 0.05, shade.shape), (3, 3), 0)
    bgr = np.asarray(p.colour, np.float32) * shade[..., None] + (255 * p.shine * 0.45) * spec[..., None]
    tex = np.concatenate([bgr * alpha[..., None], alpha[..., None]], axis=2).astype(np.float32)
    return tex, alpha


def _belt(sc: _Scene, period: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """A belt texture ``(H, period, 3)`` uint8 that wraps seamlessly along x."""
    h, s = sc.height, sc.scale

    def blurred(sigma: float, amp: float) -> NDArray[np.float32]:
        # smooth noise is made at 1/f size and enlarged: a wide blur at full size would cost ~100x more
        f = min(2 ** int(math.log2(max(sigma / 3, 1))), 16)
        pad = math.ceil(3 * sigma / f) + 2
        small = rng.normal(0, 1, (-(-h // f), period // f)).astype(np.float32)
        small = np.asarray(cv2.copyMakeBorder(small, 0, 0, pad, pad, cv2.BORDER_WRAP), np.float32)
        small = np.asarray(cv2.GaussianBlur(small, (0, 0), sigma / f), np.float32)
        big = cv2.resize(small, (small.shape[1] * f, small.shape[0] * f), interpolation=cv2.INTER_LINEAR)
        out = big[:h, pad * f : pad * f + period]
        return out * (amp / max(float(out.std()), 1e-6))

    lum = blurred(25 * s, 7) + blurred(2.5 * s, 3) + rng.normal(0, 3.5, (h, period)).astype(np.float32)
    lum += cv2.GaussianBlur(rng.normal(0, 1, (h, 1)).astype(np.float32), (0, 0), 2 * s) * 6  # grooves
    spots = np.zeros((h, period), np.float32)
    for _ in range(period // 120):  # scuffs and dust, stretched along the belt
        cx, cy = int(rng.integers(period)), int(rng.integers(h))
        axes = (int(rng.uniform(8, 40) * s), max(1, int(rng.uniform(1, 4) * s)))
        cv2.ellipse(spots, (cx, cy), axes, 0, 0, 360, float(rng.uniform(-14, 18)), -1, cv2.LINE_AA)
    lum += cv2.GaussianBlur(spots, (0, 0), 1.0)
    seam = int(rng.integers(period))
    lum[:, seam : seam + max(2, round(3 * s))] -= 18  # the splice where the belt was joined
    base = np.array(_BELTS[int(rng.integers(len(_BELTS)))]) * rng.uniform(0.85, 1.15)
    gain = rng.uniform(0.9, 1.1, 3)
    belt = np.empty((h, period, 3), np.uint8)
    for y in range(0, h, 32):  # in strips: the whole belt in float64 at once peaked near 100 MB
        belt[y : y + 32] = np.clip(base + lum[y : y + 32, :, None] * gain, 0, 255)
    return belt


class PartsScene:
    """An endless conveyor of nuts, washers and bolts; ``frame(index)`` is a pure function of (seed, index).

    Parts enter at the left edge and leave at the right; about 8-25 are visible per frame at 640x480 (part
    sizes scale with the frame). Rendering one 640x480 frame takes ~10 ms on one core once the belt tiles
    on screen have been laid out (each new tile costs some tens of milliseconds, once), and its ground
    truth as :class:`~edgeseg.instances.Instances` ~2 ms more: in the demo, the source costs about as much
    as the model.
    """

    def __init__(self, width: int = 640, height: int = 480, seed: int = 0) -> None:
        if width < 64 or height < 48:
            raise InputError(f"PartsScene size must be at least 64x48, got {width}x{height}")
        if seed < 0:
            raise InputError(f"PartsScene seed must be >= 0, got {seed}")
        rng = _rng(seed, 0, 0)
        s = math.sqrt(width * height / (640 * 480))
        tile = 2 * math.hypot(_BOLT_MAX / 2, 14) * s + 8  # twice the largest part radius
        density = rng.uniform(14, 20) * height / (480 * s * s)  # visible parts per 640x480-sized window
        self._sc = _Scene(
            width, height, seed, s, speed=rng.uniform(2.5, 5.0) * s, tile=tile,
            per_tile=density * tile / (width + 90 * s),
        )  # fmt: skip
        self._period = -(-4 * width // 16) * 16  # a multiple of every enlargement factor in _belt
        self._belt = _belt(self._sc, self._period, rng)
        self._textures: dict[_Part, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
        # sensor noise: one table of N(0, 1) draws, a window of it per frame. Kept in int8 steps of
        # 1/_NOISE_STEPS (cut at +-5.08): a quarter of float32's 4.1 MB at 640x480, and a frame's noise
        # differs from the float table's by at most 1/50 of sigma (0.15 grey levels). Drawn by rows,
        # the same numbers as one call, without its 8 MB of float64 at once.
        rows, cols = height + 32, width + 32
        self._noise = np.empty((rows, cols, 3), np.int8)
        for y in range(0, rows, 64):
            block = rng.normal(0, 1, (min(64, rows - y), cols, 3)) * _NOISE_STEPS
            self._noise[y : y + 64] = np.clip(np.rint(block), -127, 127)
        self._noise_sigma = rng.uniform(2.0, 6.0)
        # lighting is smooth, so it is computed on a coarse grid and resized
        yy, xx = np.mgrid[0 : height // 16 + 1, 0 : width // 16 + 1].astype(np.float32)
        self._xn, self._yn = xx / xx.max() - 0.5, yy / yy.max() - 0.5
        self._vignette = 1 - rng.uniform(0.3, 0.8) * (self._xn**2 + self._yn**2)
        self._light = rng.uniform(0, 2 * np.pi, 4), rng.uniform(150, 600, 2)
        a = rng.uniform(0, 2 * np.pi)
        self._shadow = (math.cos(a) * rng.uniform(1.5, 4) * s, math.sin(a) * rng.uniform(1.5, 4) * s)
        self._shadow_sigma, self._shadow_k = rng.uniform(1.5, 3) * s, rng.uniform(0.25, 0.5)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames in pixels."""
        return self._sc.width, self._sc.height

    @property
    def speed(self) -> float:
        """Belt speed in pixels per frame index, towards +x."""
        return self._sc.speed

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame ``index`` (>= 0) of this scene."""
        if index < 0:
            raise InputError(f"PartsScene.frame index must be >= 0, got {index}")
        sc, w, h = self._sc, self._sc.width, self._sc.height
        shift = sc.speed * index
        margin = sc.tile / 2 + 1  # a part reaches at most half a tile from its centre
        t0, t1 = math.floor((-margin - shift) / sc.tile), math.floor((w + margin - shift) / sc.tile)
        parts = sorted((p for t in range(t0, t1 + 1) for p in _tile(sc, t)), key=lambda p: p.z)
        # textures are kept while frames lay their parts out (a part never comes back: the belt brings new
        # tiles ever after); an LRU of 128 held 15 MB of them at 640x480 (this, 4 MB), 41 MB at 1280x720 (6)
        held = self._textures
        self._textures = {p: held[p] for p in parts if p in held}
        start = int(-round(shift)) % self._period
        img = np.empty((h, w, 3), np.float32)
        seen = min(w, self._period - start)  # the belt from start to its end, then again from its start
        img[:, :seen] = self._belt[:, start : start + seen]
        img[:, seen:] = self._belt[:, : w - seen]
        inst = np.zeros((h, w), np.int32)
        cmap = np.zeros((h, w), np.uint8)
        drawn: list[tuple[_Part, int, tuple[int, int, int, int]]] = []
        for p in parts:
            painted = self._paint(img, inst, cmap, p, p.u + shift, len(drawn) + 1)
            if painted is not None:
                drawn.append((p, *painted))
        # a part hidden completely by later ones gets no id; the rest are renumbered 1..K in drawing order
        hidden = [k for k, (_, _, (x0, y0, x1, y1)) in enumerate(drawn, 1) if (inst[y0:y1, x0:x1] != k).all()]
        if hidden:
            keep = np.ones(len(drawn) + 1, np.int32)
            keep[[0, *hidden]] = 0
            inst = (np.cumsum(keep, dtype=np.int32) * keep)[inst]
            drawn = [d for k, d in enumerate(drawn, 1) if k not in hidden]
        cls = np.array([p.cls for p, _, _ in drawn], np.int32)
        return SyntheticFrame(
            image=self._finish(img, index),
            class_map=cmap,
            instance_map=inst,
            instance_class=cls,
            instance_track=np.array([p.track for p, _, _ in drawn], np.int64),
            unoccluded_area=np.array([area for _, area, _ in drawn], np.int64),
            instance_box=np.array([box for _, _, box in drawn], np.int32).reshape(-1, 4),
        )

    def _paint(
        self,
        img: NDArray[np.float32],
        inst: NDArray[np.int32],
        cmap: NDArray[np.uint8],
        p: _Part,
        x: float,
        label: int,
    ) -> tuple[int, tuple[int, int, int, int]] | None:
        """Draw ``p`` centred at screen ``x`` (shadow, then the part) and label its pixels in both maps.

        Returns the part's pixel count inside the frame and the patch box ``(x0, y0, x1, y1)`` it was drawn
        in, or None when no pixel of it is inside the frame.
        """
        h, w = inst.shape
        sdx, sdy = self._shadow
        pad = abs(sdx) + abs(sdy) + 3 * self._shadow_sigma + 1
        reach = p.ext + pad + 1  # over a quarter of the parts laid out lie wholly outside the frame
        if x + reach <= 0 or x - reach >= w or p.y + reach <= 0 or p.y - reach >= h:
            return None
        a = math.radians(p.angle(x))
        c, s = math.cos(a), math.sin(a)
        # the outline's extremes, then the shift: the same floats as the shifted outline's extremes (adding
        # one number keeps the order)
        turned = _outline(p.cls, p.dims) @ np.array([[c, s], [-s, c]])
        (lx, ly), (hx, hy) = turned.min(0).tolist(), turned.max(0).tolist()
        x0, y0 = max(math.floor(lx + x - pad), 0), max(math.floor(ly + p.y - pad), 0)
        x1, y1 = min(math.ceil(hx + x + pad), w), min(math.ceil(hy + p.y + pad), h)
        if x1 <= x0 or y1 <= y0:
            return None
        if p not in self._textures:
            self._textures[p] = _texture(p)
        tex, alpha_tex = self._textures[p]
        half = tex.shape[0] / 2 - 0.5  # texture centre in OpenCV (pixel-centre) coordinates
        m = np.array(
            [[c, -s, x - 0.5 - x0 - (c - s) * half], [s, c, p.y - 0.5 - y0 - (s + c) * half]], np.float64
        )
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(tex, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        mask = warped[..., 3] >= 0.5
        area = int(np.count_nonzero(mask))
        if area == 0:
            return None
        m[:, 2] += (sdx, sdy)
        shadow = cv2.warpAffine(alpha_tex, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        keep = 1 - cv2.GaussianBlur(shadow, (0, 0), self._shadow_sigma) * self._shadow_k
        keep *= 1 - warped[..., 3]
        region = img[y0:y1, x0:x1]
        # in place, by OpenCV on whole pixels: numpy's broadcast over the 3 channels of a strided view took
        # ten times as long, for the same float32 products and sums
        cv2.multiply(region, cv2.merge((keep, keep, keep)), dst=region)
        cv2.add(region, cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR), dst=region)
        inst[y0:y1, x0:x1][mask] = label
        cmap[y0:y1, x0:x1][mask] = p.cls
        return area, (x0, y0, x1, y1)

    def _finish(self, img: NDArray[np.float32], index: int) -> NDArray[np.uint8]:
        """Light drift and flicker, occasional motion blur along the belt, sensor noise; to uint8."""
        rng = _rng(self._sc.seed, index, 2)
        h, w = img.shape[:2]
        ph, period = self._light
        gx = 0.12 * math.sin(2 * math.pi * index / period[0] + ph[0])
        gy = 0.08 * math.sin(2 * math.pi * index / period[1] + ph[1])
        gain = 1 + 0.04 * math.sin(index * 2.1 + ph[2]) + 0.05 * math.sin(2 * math.pi * index / 997 + ph[3])
        light = cv2.resize(self._vignette * (gain + gx * self._xn + gy * self._yn), (w, h))
        for y in range(0, h, 64):  # one plane enlarged, repeated for the 3 channels a strip at a time
            band = light[y : y + 64]
            cv2.multiply(img[y : y + 64], cv2.merge((band, band, band)), dst=img[y : y + 64])
        if rng.random() < 0.1:  # (in place: no second float frame, 3.7 MB at 640x480)
            k = int(rng.integers(3, 10) * self._sc.scale) | 1
            cv2.blur(img, (k, 1), dst=img)
        ox, oy = rng.integers(0, 32, 2)
        sigma = self._noise_sigma * rng.uniform(0.8, 1.2)
        noise = self._noise[oy : oy + h, ox : ox + w]
        out = cv2.addWeighted(img, 1.0, noise, sigma / _NOISE_STEPS, 0.0, dtype=cv2.CV_8U)  # saturates
        return np.asarray(out, np.uint8)
