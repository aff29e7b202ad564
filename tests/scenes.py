"""Synthetic semantic scenes with known instance ground truth, shared by the tests and the benchmark.

Every scene is painted from analytic shapes: each shape has a signed field ``g(p)`` (pixels, ``< 0``
inside); a pixel belongs to the shape with the smallest field among those containing it. Where two discs
overlap, that puts the boundary on the line through the circles' crossing points, the natural split.
Class maps use modlib's convention: ``uint8``, background 255.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg import Instances
from edgeseg.synthetic import between_parts

BACKGROUND = 255
CONTACT_CLASS = 3  # the contact class of the scenes that draw one (their parts are of classes 0..2)
Field = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]


@dataclass
class Scene:
    """A class map, its instance label image (0 = none, k = instance k) and the class of each instance;
    ``touching``: a contact map drawn beside the class map (where parts touch, as the demo model draws
    it), for the split at a contact map (``semantic_to_instances(..., touching=...)``); ``contact``: the
    class id of the contact pixels drawn in the class map itself (``semantic_to_instances(...,
    contact=...)``), their truth the parts they belong to; ``logits``: per-class logits ``(C, H, W)``, channel
    0 the background, whose argmax is the class map (``semantic_to_instances(logits, background=0,
    logits=True)``)."""

    name: str
    class_map: NDArray[np.uint8]
    labels: NDArray[np.int32]
    classes: list[int] = field(default_factory=list)
    touching: NDArray[np.bool_] | None = None
    contact: int | None = None
    logits: NDArray[np.float32] | None = None

    def truth(self) -> Instances:
        return Instances.from_label_image(self.labels, np.asarray(self.classes, np.int32))


class _Painter:
    def __init__(self, name: str, h: int, w: int) -> None:
        self.scene = Scene(name, np.full((h, w), BACKGROUND, np.uint8), np.zeros((h, w), np.int32))
        self.best = np.full((h, w), np.inf)

    def add(self, class_id: int, bbox: tuple[float, float, float, float], g: Field) -> None:
        h, w = self.best.shape
        x0, y0 = max(0, int(math.floor(bbox[0]))), max(0, int(math.floor(bbox[1])))
        x1, y1 = min(w, int(math.ceil(bbox[2])) + 1), min(h, int(math.ceil(bbox[3])) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        val = g(xs, ys)
        best = self.best[y0:y1, x0:x1]
        take = (val < 0) & (val < best)
        if not take.any():
            return
        self.scene.classes.append(class_id)
        k = len(self.scene.classes)
        best[take] = val[take]
        self.scene.labels[y0:y1, x0:x1][take] = k
        self.scene.class_map[y0:y1, x0:x1][take] = class_id

    def disc(self, class_id: int, cx: float, cy: float, r: float) -> None:
        self.add(class_id, (cx - r, cy - r, cx + r, cy + r), lambda x, y: np.hypot(x - cx, y - cy) - r)

    def ellipse(self, class_id: int, cx: float, cy: float, a: float, b: float, angle_deg: float) -> None:
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))

        def g(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
            u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
            out: NDArray[np.float64] = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * b
            return out

        self.add(class_id, (cx - a, cy - a, cx + a, cy + a), g)

    def rod(self, class_id: int, cx: float, cy: float, length: float, width: float, angle_deg: float) -> None:
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        half = length / 2 + width

        def g(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
            u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
            out: NDArray[np.float64] = np.maximum(np.abs(u) - length / 2, np.abs(v) - width / 2)
            return out

        self.add(class_id, (cx - half, cy - half, cx + half, cy + half), g)

    def done(self) -> Scene:
        # drop labels that other shapes painted over entirely; renumber 1..K
        present = np.unique(self.scene.labels)
        present = present[present > 0]
        remap = np.zeros(len(self.scene.classes) + 1, np.int32)
        remap[present] = np.arange(1, len(present) + 1)
        self.scene.labels = remap[self.scene.labels]
        self.scene.classes = [self.scene.classes[k - 1] for k in present]
        return self.scene


def touching_discs(seed: int = 0, h: int = 480, w: int = 640, r: float = 30.0, keep: float = 0.45) -> Scene:
    """Discs on a jittered grid whose neighbours overlap by ~10% of their diameter; ``keep`` of them drawn.

    At 480x640 with the defaults this gives 30-40 discs, most of them touching others in clusters.
    """
    rng = np.random.default_rng(seed)
    p = _Painter(f"touching_discs[{seed}]", h, w)
    step = 2 * r * 0.9
    for cy in np.arange(r + 4, h - r, step):
        for cx in np.arange(r + 4, w - r, step):
            if rng.random() < keep:
                j = rng.uniform(-2, 2, 2)
                p.disc(0, cx + j[0], cy + j[1], r * rng.uniform(0.95, 1.05))
    return p.done()


def ellipses(seed: int = 0, h: int = 480, w: int = 640, n: int = 18) -> Scene:
    """Randomly oriented ellipses (axis ratio up to 3:1), placed so that some pairs overlap slightly."""
    rng = np.random.default_rng(seed)
    p = _Painter(f"ellipses[{seed}]", h, w)
    placed: list[tuple[float, float, float]] = []
    tries = 0
    while len(placed) < n and tries < 5000:
        tries += 1
        a, b = rng.uniform(28, 45), rng.uniform(15, 22)
        cx, cy = rng.uniform(a, w - a), rng.uniform(a, h - a)
        # a minor-axis reach keeps overlaps shallow: neighbours touch but rarely cover each other's cores
        if all(math.hypot(cx - x, cy - y) > 1.1 * (b + bb) + 0.5 * abs(a - b) for x, y, bb in placed):
            placed.append((cx, cy, b))
            p.ellipse(0, cx, cy, a, b, rng.uniform(-90, 90))
    return p.done()


def rods(seed: int = 0, h: int = 480, w: int = 640, n: int = 14) -> Scene:
    """Long thin rods (80-160 x 9-12 px) at random angles, apart from each other: none may be over-split."""
    rng = np.random.default_rng(seed)
    p = _Painter(f"rods[{seed}]", h, w)
    placed: list[tuple[float, float, float]] = []
    tries = 0
    while len(placed) < n and tries < 5000:
        tries += 1
        length = rng.uniform(80, 160)
        cx, cy = rng.uniform(length / 2, w - length / 2), rng.uniform(length / 2, h - length / 2)
        if all(math.hypot(cx - x, cy - y) > (length + ll) / 2 + 6 for x, y, ll in placed):
            placed.append((cx, cy, length))
            p.rod(0, cx, cy, length, rng.uniform(9, 12), rng.uniform(-90, 90))
    return p.done()


def multi_class(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Touching discs of three classes (ids 0, 1, 2): class borders and same-class contacts both occur."""
    rng = np.random.default_rng(seed)
    p = _Painter(f"multi_class[{seed}]", h, w)
    r = 28.0
    step = 2 * r * 0.9
    for cy in np.arange(r + 4, h - r, step):
        for cx in np.arange(r + 4, w - r, step):
            if rng.random() < 0.5:
                p.disc(int(rng.integers(0, 3)), cx, cy, r * rng.uniform(0.9, 1.1))
    return p.done()


def small_beside_large(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Big discs (r 60-75) and, in the same frame and class, touching pairs of small discs (r 9-13).

    Normalizing the distance per class (modlib) puts the marker threshold above the small discs' largest
    distance, so they lose their markers; per-component normalization keeps them.
    """
    rng = np.random.default_rng(seed)
    p = _Painter(f"small_beside_large[{seed}]", h, w)
    for cx, cy in ((110, 120), (330, 130), (540, 340)):
        p.disc(0, cx + rng.uniform(-5, 5), cy + rng.uniform(-5, 5), rng.uniform(60, 75))
    for cx, cy in ((80, 300), (200, 420), (300, 290), (420, 420), (470, 80), (600, 120), (250, 230)):
        r1, r2 = rng.uniform(9, 13), rng.uniform(9, 13)
        t = rng.uniform(0, math.pi)
        d = 0.9 * (r1 + r2) / 2
        p.disc(0, cx - d * math.cos(t), cy - d * math.sin(t), r1)
        p.disc(0, cx + d * math.cos(t), cy + d * math.sin(t), r2)
    return p.done()


def edge_cut(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Discs cut by the frame edges (centres within a quarter radius of an edge), touching neighbours."""
    rng = np.random.default_rng(seed)
    p = _Painter(f"edge_cut[{seed}]", h, w)
    r = 32.0
    for x in np.arange(40, w - 20, 2 * r * 0.92):
        p.disc(0, x, rng.uniform(-0.25, 0.25) * r, r)
        p.disc(0, x + r, h + rng.uniform(-0.25, 0.25) * r, r)
    for y in np.arange(120, h - 100, 2 * r * 0.92):
        p.disc(0, rng.uniform(-0.25, 0.25) * r, y, r)
        p.disc(0, w + rng.uniform(-0.25, 0.25) * r, y, r)
    return p.done()


def small_touching_large(seed: int = 0, h: int = 480, w: int = 640, n: int = 10) -> Scene:
    """Large discs (r 18-45), each touched by one to three small discs (r 7-13) of the same class.

    The small discs overlap their large neighbour by a quarter of their radius: the neck between them is
    narrow, but a small disc's own distance peak is far below the large one's.
    """
    rng = np.random.default_rng(seed)
    p = _Painter(f"small_touching_large[{seed}]", h, w)
    placed: list[tuple[float, float, float]] = []
    tries = 0
    while len(placed) < n and tries < 5000:
        tries += 1
        big = rng.uniform(18, 45)
        cx, cy = rng.uniform(big + 30, w - big - 30), rng.uniform(big + 30, h - big - 30)
        if any(math.hypot(cx - x, cy - y) < big + rr + 34 for x, y, rr in placed):
            continue
        placed.append((cx, cy, big))
        p.disc(0, cx, cy, big)
        start = rng.uniform(0, 2 * math.pi)
        for k in range(int(rng.integers(1, 4))):
            r = rng.uniform(7, 13)
            t = start + k * 2 * math.pi / 3 + rng.uniform(-0.3, 0.3)
            d = big + 0.75 * r
            p.disc(0, cx + d * math.cos(t), cy + d * math.sin(t), r)
    return p.done()


def _components(name: str, class_map: NDArray[np.uint8]) -> Scene:
    """A scene whose truth is the plain 8-connected components of each class (hostile maps hold no objects
    to split: the figures that count on them are time and the partition)."""
    labels = np.zeros(class_map.shape, np.int32)
    classes: list[int] = []
    for c in np.unique(class_map):
        if c == BACKGROUND:
            continue
        n, lab = cv2.connectedComponents((class_map == c).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        on = lab > 0
        labels[on] = lab[on] + len(classes)
        classes.extend([int(c)] * (n - 1))
    return Scene(name, class_map, labels, classes)


def hostile_noise(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Uniform noise of three classes: every pixel a random class, tens of thousands of ragged components."""
    rng = np.random.default_rng(seed)
    return _components(f"hostile_noise[{seed}]", rng.integers(0, 3, (h, w)).astype(np.uint8))


def hostile_blobs(seed: int = 0, h: int = 480, w: int = 640, sigma: float = 6) -> Scene:
    """Smooth random blobs of three classes (the argmax of noise blurred by ``sigma``), no background."""
    rng = np.random.default_rng(seed)
    fields = [cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma) for _ in range(3)]
    name = "hostile_blobs" if sigma == 6 else "hostile_big_blobs"
    return _components(f"{name}[{seed}]", np.argmax(np.stack(fields), axis=0).astype(np.uint8))


def hostile_big_blobs(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Fewer, larger random blobs: a few dozen ragged components, each one the split looks at (fewer than
    the hundreds that shrink the split's budget)."""
    return hostile_blobs(seed, h, w, sigma=20)


def hostile_many_classes(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Small random blobs of 21 classes (a VOC model's count; the argmax of noise blurred by 3 px), no
    background: every class spread over the whole frame, each its own labelling pass."""
    rng = np.random.default_rng(seed)
    fields = [cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3) for _ in range(21)]
    return _components(f"hostile_many_classes[{seed}]", np.argmax(np.stack(fields), axis=0).astype(np.uint8))


def hostile_tiny(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Thousands of tiny components: 5x5 squares (above the default size threshold) on a jittered grid,
    of random classes."""
    rng = np.random.default_rng(seed)
    cm = np.full((h, w), BACKGROUND, np.uint8)
    for y in range(1, h - 7, 8):
        for x in range(1, w - 7, 8):
            jy, jx = rng.integers(0, 3, 2)
            cm[y + jy : y + jy + 5, x + jx : x + jx + 5] = rng.integers(0, 3)
    return _components(f"hostile_tiny[{seed}]", cm)


def hostile_ragged(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """One huge ragged component of one class: 70% of the pixels, at random, thousands of holes."""
    rng = np.random.default_rng(seed)
    cm = np.where(rng.random((h, w)) < 0.7, 0, BACKGROUND).astype(np.uint8)
    return _components(f"hostile_ragged[{seed}]", cm)


def hostile_uniform(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Every pixel of one class (a camera facing a wall the model calls a table)."""
    return _components(f"hostile_uniform[{seed}]", np.full((h, w), seed % 3, np.uint8))


def argmax_class_map(scores: NDArray[np.floating]) -> NDArray[np.uint8]:
    """The class map of per-class scores ``(C, H, W)``, channel 0 the background: their argmax, the
    background set to :data:`BACKGROUND` (what a modlib user makes of a model's scores)."""
    winner = np.argmax(scores, axis=0)
    return np.where(winner == 0, BACKGROUND, winner).astype(np.uint8)


def _scores_scene(name: str, logits: NDArray[np.float32]) -> Scene:
    """A scene given as logits (channel 0 the background), its truth the components of their argmax."""
    sc = _components(name, argmax_class_map(logits))
    sc.logits = logits
    return sc


def hostile_scores_many(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """The logits of a VOC model (21 channels, the first the background) facing a scene it was not trained
    for: blurred noise (3 px) spread about +-10, every class in small blobs over the whole frame."""
    rng = np.random.default_rng(seed)
    fields = [cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3) for _ in range(21)]
    return _scores_scene(f"hostile_scores_many[{seed}]", (np.stack(fields) - 0.5) * 300)


def hostile_scores_noise(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """Logits of three channels (the first the background) drawn at random for every pixel: a noisy model's
    scores, its argmax noise of two classes on the background."""
    logits = np.random.default_rng(seed).normal(0, 4, (3, h, w)).astype(np.float32)
    return _scores_scene(f"hostile_scores_noise[{seed}]", logits)


def contact_discs(seed: int = 0) -> Scene:
    """:func:`touching_discs` with the contact map drawn where the discs touch: what a model that draws
    contacts gives on a scene of parts."""
    sc = touching_discs(seed)
    sc.name, sc.touching = f"contact_discs[{seed}]", between_parts(sc.labels, 2)
    return sc


def _smooth_half(rng: np.random.Generator, h: int, w: int, sigma: float) -> NDArray[np.bool_]:
    """About half the pixels, in smooth random blobs of width ~``sigma``."""
    field = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
    out: NDArray[np.bool_] = field > np.median(field)
    return out


def hostile_contact_noise(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """:func:`hostile_blobs` with a contact map of noise (every pixel a contact at random, half of them)."""
    sc = hostile_blobs(seed, h, w)
    sc.name = f"hostile_contact_noise[{seed}]"
    sc.touching = np.random.default_rng(seed + 1000).random((h, w)) < 0.5
    return sc


def hostile_contact_blobs(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """:func:`hostile_blobs` with a contact map of smooth blobs as wide as the class blobs: components cut
    into dozens of cores each."""
    sc = hostile_blobs(seed, h, w)
    sc.name = f"hostile_contact_blobs[{seed}]"
    sc.touching = _smooth_half(np.random.default_rng(seed + 1000), h, w, 3)
    return sc


def hostile_contact_specks(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """:func:`hostile_big_blobs` with specks of contact (5% of the pixels): large components whose cores
    are one region each, pierced by hundreds of holes."""
    sc = hostile_big_blobs(seed, h, w)
    sc.name = f"hostile_contact_specks[{seed}]"
    sc.touching = np.random.default_rng(seed + 1000).random((h, w)) < 0.05
    return sc


def contact_class_discs(seed: int = 0) -> Scene:
    """:func:`touching_discs` with the discs' pixels where they touch (two different discs within 2 px)
    drawn as a contact class: what a model that draws one gives on a scene of parts."""
    sc = touching_discs(seed)
    sc.name, sc.contact = f"contact_class_discs[{seed}]", CONTACT_CLASS
    sc.class_map[between_parts(sc.labels, 2) & (sc.labels > 0)] = CONTACT_CLASS
    return sc


def hostile_contact_class(seed: int = 0, h: int = 480, w: int = 640) -> Scene:
    """:func:`hostile_noise` with a quarter of its pixels, at random, of the contact class: the
    worst case measured for a contact class (more or fewer contact pixels, or a background, cost less)."""
    sc = hostile_noise(seed, h, w)
    sc.name, sc.contact = f"hostile_contact_class[{seed}]", CONTACT_CLASS
    sc.class_map[np.random.default_rng(seed + 1000).random((h, w)) < 0.25] = CONTACT_CLASS
    return sc


SCENE_SETS: dict[str, Callable[[int], Scene]] = {
    "touching_discs": touching_discs,
    "ellipses": ellipses,
    "rods": rods,
    "multi_class": multi_class,
    "small_beside_large": small_beside_large,
    "edge_cut": edge_cut,
    "small_touching_large": small_touching_large,
}

# Maps no model should produce but a camera facing noise can: they bound the worst case, not the accuracy.
HOSTILE_SETS: dict[str, Callable[[int], Scene]] = {
    "hostile_noise": hostile_noise,
    "hostile_blobs": hostile_blobs,
    "hostile_big_blobs": hostile_big_blobs,
    "hostile_many_classes": hostile_many_classes,
    "hostile_tiny": hostile_tiny,
    "hostile_ragged": hostile_ragged,
    "hostile_uniform": hostile_uniform,
}


# The split at a model's contact map (edgeseg.semantic.cores) and the parts of a model's contact class
# (edgeseg.semantic.contact): on parts, and on maps no model should draw.
CONTACT_SETS: dict[str, Callable[[int], Scene]] = {
    "contact_discs": contact_discs,
    "hostile_contact_noise": hostile_contact_noise,
    "hostile_contact_blobs": hostile_contact_blobs,
    "hostile_contact_specks": hostile_contact_specks,
    "contact_class_discs": contact_class_discs,
    "hostile_contact_class": hostile_contact_class,
}

# Per-class logits instead of a class map: the argmax and the winning probability read every channel.
SCORE_SETS: dict[str, Callable[[int], Scene]] = {
    "hostile_scores_many": hostile_scores_many,
    "hostile_scores_noise": hostile_scores_noise,
}


def scene_set(name: str, seeds: range = range(3)) -> Iterator[Scene]:
    """The scenes of one named set, one per seed."""
    for seed in seeds:
        yield SCENE_SETS[name](seed)
