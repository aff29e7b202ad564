"""A model's contact map: where parts touch, drawn by the model beside its class map.

Unlike a contact class (:mod:`edgeseg.semantic.contact`), a pixel of the map keeps its part's class, so the
class map loses nothing. A component's pixels off the map are its cores: a component with two or more cores
of ``CORE_PIXELS`` or more is split, every pixel going to its nearest core (one labelled distance transform
in its box); with ``rods``, regions that do not touch and lie along one straight line (a rod seen on both
sides of another that crosses it) are one part again. No distance relief, no line transform: on the scenes
of the demo model, with that model fine-tuned to draw the map, this decode took 0.46 of the split's time (an
experiment recorded on the branch exp/contact-map).

The map's split budget (:func:`edgeseg.semantic._split_budget`) pays for the components looked at, the
largest first; what it cannot pay for is kept whole and counted. A model facing what it was not trained on
can draw a contact map of noise: on the hostile blobs of ``scripts/bench_postprocess.py`` with contact maps
of noise or blobs, looking at every component took 59-88 ms a 480x640 map (38-50x one labelling pass, about
twice modlib's time on the same class maps), within the budget 18-28 ms (11-16x; three runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.semantic.components import Budget, Found, Part
from edgeseg.semantic.relief import region_edges
from edgeseg.semantic.rods import label_row_ends

if TYPE_CHECKING:
    from edgeseg.semantic import SemanticParams

# A core smaller than this is a speck the contact map left, no object's (a part's core is its area less a
# band two pixels deep along its contacts)
CORE_PIXELS = 20
# A component with more cores than this is no scene of parts but a noisy contact map: it is kept whole (and
# counted unsplit), as each core costs a pass over the component's box
MAX_CORES = 64
# Rod halves are looked for among at most this many regions (a crossing makes three): the pairs cost grows
# as the square of their number
JOIN_REGIONS = 16
ROD_ELONGATION = 2.0  # a region is a rod's half when its smallest box is at least this many times as long
ROD_ANGLE = 0.17  # sine of the largest angle (~10 degrees) between two halves of one rod
ROD_OFFSET = 2.0  # pixels beyond half the rod's width that a half's centre may lie off the other's axis


def contact_cores(
    components: Found, touching: NDArray[np.bool_], p: SemanticParams
) -> list[NDArray[np.uint8] | None]:
    """Each of ``components``' pixels off the contact map ``touching`` (the map's frame), as a uint8 crop of
    its box, where it may hold two cores: ``2 * size_threshold`` pixels or more, some of them on the map and
    ``2 * CORE_PIXELS`` off it; None where it cannot. These are the components the split looks at, which the
    map's budget pays for."""
    two = 2 * max(p.size_threshold, 1)
    out: list[NDArray[np.uint8] | None] = []
    for x, y, tight, area, *_ in components.comps:
        ch, cw = tight.shape
        out.append(off_contacts(tight, area, touching[y : y + ch, x : x + cw]) if area >= two else None)
    return out


def split_by_cores(
    components: Found,
    cores: list[NDArray[np.uint8] | None],
    class_id: int,
    p: SemanticParams,
    budget: Budget,
) -> list[Part]:
    """The parts of one class's ``components``, each split at the model's contact map where its pixels off
    the map (``cores``, see :func:`contact_cores`) hold two to ``MAX_CORES`` cores (more: kept whole,
    counted in ``budget``), within ``budget``: it pays for the largest components first (a look costs a few
    passes over the component's box), and what it cannot pay for is kept whole and counted. A piece's
    oriented box is left for :func:`edgeseg.semantic.components.with_boxes` (on a map of noise most pieces
    are beyond ``max_instances``)."""
    comps = components.comps
    paid = [False] * len(comps)
    for k in sorted((k for k, c in enumerate(cores) if c is not None), key=lambda k: -comps[k].area):
        box = comps[k].mask.size
        paid[k] = budget.room(box) and budget.take(box)
    parts: list[Part] = []
    for (x, y, tight, area, outline, _, _), core, look in zip(comps, cores, paid, strict=True):
        lab, n = owners(tight, core) if look and core is not None else (None, 0)
        if n > MAX_CORES:
            budget.unsplit += 1
        if lab is None:
            parts.append(Part(class_id, x, y, tight, area, None, outline))
            continue
        if p.rods and 3 <= n <= JOIN_REGIONS:  # (two regions of one connected component always touch)
            lab, n = join_rod_halves(lab, n)
        for k in range(1, n + 1):
            piece = (lab == k).view(np.uint8)
            bx, by, bw, bh = cv2.boundingRect(piece)
            if not bw:
                continue
            crop = piece[by : by + bh, bx : bx + bw].view(bool)
            piece_area = int(np.count_nonzero(crop))
            if piece_area >= max(p.size_threshold, 1):
                parts.append(Part(class_id, x + bx, y + by, crop, piece_area, None))
    return parts


def off_contacts(
    tight: NDArray[np.bool_], area: int, touching: NDArray[np.bool_]
) -> NDArray[np.uint8] | None:
    """A component crop (of ``area`` pixels)'s pixels off the contact map ``touching`` (uint8: 255 there, 0
    elsewhere), or None where they cannot make two cores: no contact pixel in it (four in ten of the demo
    model's components), or too few pixels off the contacts (either way, no labelling pass)."""
    core = np.asarray(cv2.compare(tight.view(np.uint8), touching.view(np.uint8), cv2.CMP_GT), np.uint8)
    left = cv2.countNonZero(core)
    return None if left == area or left < 2 * CORE_PIXELS else core


def owners(tight: NDArray[np.bool_], core: NDArray[np.uint8]) -> tuple[NDArray[np.int32] | None, int]:
    """A component crop's number n of cores of ``CORE_PIXELS`` among its pixels off the contacts (``core``,
    see :func:`off_contacts`) and its pixels labelled 1..n by their nearest core (0 outside it); no labels
    (None) unless n is 2 to ``MAX_CORES``. (With fewer than two regions off the contacts, n is how many
    there are, of any size: no core is counted where there cannot be two.)"""
    count, labels = cv2.connectedComponents(core, connectivity=8, ltype=cv2.CV_32S)
    if count < 3:  # one region off the contacts (two in three of the demo's calls) or none: no two cores
        return None, count - 1
    # (each label's pixels counted by numpy: OpenCV's statistics cost more than that on a component's box)
    lab = np.asarray(labels, np.int32)
    off = np.bincount(lab.ravel(), minlength=count) < CORE_PIXELS
    off[0] = True  # the component's contacts and what lies outside it
    n = count - int(np.count_nonzero(off))
    if not 2 <= n <= MAX_CORES:
        return None, n
    # every pixel takes the label of its nearest core: OpenCV labels the cores (the 8-connected components
    # of the zero pixels) 1..n itself, in the raster order of their first pixels
    _, near = cv2.distanceTransformWithLabels(
        np.take(off, lab).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP
    )
    owner = np.asarray(near, np.int32)
    owner *= tight
    return owner, n


def join_rod_halves(lab: NDArray[np.int32], n: int) -> tuple[NDArray[np.int32], int]:
    """Regions 1..n of ``lab`` with each pair that does not touch but lies along one straight line (two
    elongated regions, nearly parallel, each centre near the other's axis) made one, renumbered 1..m. Each
    region holds ``CORE_PIXELS`` or more, as those of :func:`owners` do (each holds its core)."""
    axes: dict[int, tuple[float, float, float, float, float]] = {}
    # (each row's ends have the same smallest box as all the pixels, for a fraction of the cost; those of
    # every region come from one pass over the box's runs)
    ends = label_row_ends(lab, n)
    for k in range(1, n + 1):
        _, (w, h), _ = cv2.minAreaRect(ends[k])
        if max(w, h) < ROD_ELONGATION * min(w, h):
            continue
        pts = cv2.findNonZero((lab == k).view(np.uint8))
        vx, vy, cx, cy = (float(v) for v in cv2.fitLine(pts, cv2.DIST_L2, 0, 0.01, 0.01).ravel())
        axes[k] = (vx, vy, cx, cy, min(w, h))
    in_line = [
        (i, j)
        for i, a in axes.items()
        for j, b in axes.items()
        if j > i
        and abs(a[0] * b[1] - a[1] * b[0]) <= ROD_ANGLE
        and max(
            abs((b[2] - a[2]) * a[1] - (b[3] - a[3]) * a[0]),
            abs((a[2] - b[2]) * b[1] - (a[3] - b[3]) * b[0]),
        )
        <= 0.5 * max(a[4], b[4]) + ROD_OFFSET
    ]
    if not in_line:  # (half the demo's calls have fewer than two elongated regions: no pass for contacts)
        return lab, n
    _, _, lo, hi = region_edges(lab.astype(np.uint16))
    inner = lo > 0
    touch = set(zip(lo[inner].tolist(), hi[inner].tolist(), strict=True))
    parent = list(range(n + 1))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in in_line:
        if (i, j) not in touch:
            ri, rj = root(i), root(j)
            parent[max(ri, rj)] = min(ri, rj)
    roots = [root(i) for i in range(n + 1)]
    if roots == list(range(n + 1)):
        return lab, n
    kept = sorted(set(roots[1:]))
    lut = np.zeros(n + 1, np.int32)
    lut[1:] = [kept.index(r) + 1 for r in roots[1:]]
    return np.take(lut, lab), len(kept)
