"""Per class: its connected components, found by tracing or labelling, each kept whole or split (within
the map's budget)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.semantic.labelling import MAX_TRACED, Labels, label
from edgeseg.semantic.relief import Relief, is_convex, prepare, split_component
from edgeseg.semantic.rods import FIT_COST, piece_rods, whole_crop

if TYPE_CHECKING:
    from edgeseg.semantic import SemanticParams, _Trace

EDGE_PAD = 48  # how far a component cut by the image edge is mirrored beyond it, in pixels
MAX_HOLES = 64  # a component with more holes is speckle: none of them is searched for a bore
FEW_PIXELS = 256
# Around one bore, an outline whose concavities are at most this deep (px) holds one object. On 104 demo-model
# maps (the 40 of scripts/bench_demo_model.py, the 64 validation scenes) the washers and nuts that split have
# dents of 8.8 px or more; of the ragged lone ones the split looked at (deeper than 3 px), 72% are under 5 px.
RING_DENT = 5.0


class Part(NamedTuple):
    """One instance: a tight bool crop with its ``[0, 0]`` at frame pixel ``(x, y)``, its area and its
    minimum-area rectangle as OpenCV gives it (turned into oriented boxes all at once at the end; None
    until :func:`with_boxes`, which finds it only for the parts kept, from ``outline`` where the split
    traced one: the part's outer outline in frame pixels). A named tuple, not a frozen dataclass: a noise
    map makes thousands, and their construction showed."""

    class_id: int
    x: int
    y: int
    mask: NDArray[np.bool_]
    area: int
    rect: tuple[float, ...] | None
    outline: NDArray[np.int32] | None = None


def split_class(
    class_map: NDArray[Any],
    class_id: int,
    p: SemanticParams,
    budget: Budget,
    components: Found,
    trace: _Trace | None = None,
) -> list[Part]:
    """Instances of one class of ``class_map``: its ``components`` (see :func:`find_components`), each split
    where it holds several objects.

    Only the components that may hold two objects are looked at one by one, within ``budget``. With
    ``trace``, each component's relief and markers are also drawn into it (see
    :func:`edgeseg.semantic.explain_split`): those the split looked at, and the others (largest first,
    after the candidates) while the trace's own budget pays for their reliefs.
    """
    h, w = class_map.shape
    kernel = kernel_of(p)
    found, may_split = components.comps, components.may
    # A component kept whole is done at once; the others wait for the class's largest distance. They are
    # prepared largest first, so that what the budget cannot pay for is the smallest.
    comps: list[
        Part
        | tuple[
            int,
            int,
            NDArray[np.bool_],
            int,
            NDArray[np.int32],
            Relief | None,
            NDArray[np.int32] | None,
            list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] | None,
        ]
        | None
    ] = [None] * len(found)
    # with trace: the relief of every component the split looked at, and of those it skips while the view's
    # own budget pays for them
    shown: dict[int, Relief] = {}
    for k in sorted(range(len(found)), key=lambda k: (not may_split[k], -found[k].area)):
        x, y, tight, area, outline, hole_width, holes = found[k]
        # once the budget is spent, what is left is kept whole without a look (a look costs too)
        spent = may_split[k] and not budget.room(tight.size)
        aside = not may_split[k] or spent  # the split will not look at it; the view may, on its own budget
        if aside and (trace is None or not trace.afford(tight.size)):
            comps[k] = Part(class_id, x, y, tight, area, None, outline)
            continue
        contour, hole_width, holes = (
            outline_and_holes(tight, x, y, area) if outline is None else (outline, hole_width, holes)
        )
        ch, cw = tight.shape
        edge = min(ch, cw, EDGE_PAD)
        sides = (
            edge * (y == 0),
            edge * (y + ch == h),
            edge * (x == 0),
            edge * (x + cw == w),
        )
        # a mirrored component can enclose holes of its own: their width is unknown (unless it is speckle)
        if hole_width >= 0 and mirror_encloses(tight, sides, holes):
            hole_width = EDGE_PAD * 4
        hole_width = max(0, hole_width)
        relief = None
        # (the distance transform of a convex set is concave, so its markers are one connected region: it
        # holds one object, and skipping it is most of the saving on scenes of separate objects; so does a
        # convex outline around one hole, a lone washer or nut: objects that meet leave a dent, and a second
        # ring brings a second bore; not at the image edge where the mirror may enclose holes, nor with
        # distances normalized per class, where every component's distance counts. Around a bore, notches
        # up to RING_DENT deep count as convex: a model's outline of a washer is ragged by a few pixels, and
        # a part touching a ring leaves a dent about as deep as the part's radius)
        one = p.per_component and (
            (not hole_width and is_convex(contour))
            or (holes == 1 and not any(sides) and is_convex(contour, RING_DENT))
        )
        # (a component with more holes than any object has is speckle: its relief is a froth of tiny peaks
        # that marks no object, and the outlines of its holes would make the split cost a few passes over
        # each of thousands of them)
        look = may_split[k] and not spent and not one
        # (without a hole, nor one its mirror may enclose, there is no bore to tell it from rods: with rods
        # it is tried as rods first, if the budget pays for the fit, and one that rods explain needs no
        # relief; [] when they do not)
        rods = None
        rods_first = p.rods and p.per_component and not (holes or hole_width)
        if look and rods_first and budget.pixels >= FIT_COST * area:
            tried = piece_rods(whole_crop(x, y, tight, contour), afford=budget.afford)
            rods = tried if len(tried) > 1 else []
            if rods:
                budget.take(0)  # a component looked at, as one a relief is taken for
        if look and not rods and budget.room(tight.size) and budget.take(tight.size, holes > MAX_HOLES):
            relief = prepare(
                tight, off_class(class_map, class_id, x, y, tight), contour, (x, y), sides, hole_width, kernel
            )
        if trace is not None and (relief is not None or aside or trace.afford(tight.size)):
            shown[k] = relief or prepare(
                tight, off_class(class_map, class_id, x, y, tight), contour, (x, y), sides, hole_width, kernel
            )
        comps[k] = (x, y, tight, area, contour, relief, outline, rods)
    reliefs = [c[5] for c in comps if c is not None and not isinstance(c, Part)]
    class_max = max((r.peak for r in reliefs if r is not None), default=0.0)
    parts: list[Part] = []
    for k, comp in enumerate(comps):
        assert comp is not None  # every component was prepared above
        if isinstance(comp, Part):
            parts.append(comp)
            continue
        x, y, tight, area, contour, relief, outline, rods = comp
        pieces = None
        seeds: list[NDArray[np.int32]] | None = [] if k in shown else None
        by_rods = False
        if rods:
            pieces, by_rods = rods, True
        elif relief is not None:
            tried_whole = p.rods and not relief.encloses_bore  # a ring's bore is no gap between rods
            if tried_whole and rods is None:
                pieces = piece_rods(whole_crop(x, y, tight, contour), afford=budget.afford)
                pieces = pieces if len(pieces) > 1 else None
                by_rods = pieces is not None
            if pieces is None:
                pieces = split_component(tight, relief, class_max, kernel, p, seeds)
                # the relief's parts may still be rods that cross, unless they are rings; unsplit, a
                # component around a bore is tried whole after all (between three rods, a gap can look round)
                if p.rods and (pieces is not None or not tried_whole):
                    split_by_relief = pieces
                    rings = relief.crop_bores() if pieces is not None and relief.encloses_bore else None
                    pieces = [
                        r
                        for q in split_by_relief or [whole_crop(x, y, tight, contour)]
                        for r in piece_rods(q, rings, budget.afford)
                    ]
                    by_rods = len(pieces) != len(split_by_relief or [None])
                    pieces = pieces if split_by_relief is not None or by_rods else None
        if trace is not None and seeds is not None:  # (seeds: only for a component the view shows)
            view = shown[k]
            own = view.peak
            top = own if p.per_component or (relief is None and class_max <= 0) else class_max
            if not seeds:  # the split did not look at its markers: find them the same way, for the view
                split_component(tight, view, top, kernel, p, seeds)
            trace.add(x, y, tight, view, top, seeds[0] if seeds else None, pieces, by_rods)
        if pieces is None:  # as when the split does not look at it, to the last bit of its oriented box
            parts.append(Part(class_id, x, y, tight, area, None, contour if area > FEW_PIXELS else outline))
            continue
        for dx, dy, piece, rect in pieces:  # rect: in the crop's frame
            piece_area = int(np.count_nonzero(piece))
            if piece_area >= max(p.size_threshold, 1):  # (a region of only bore has no pixel)
                parts.append(
                    Part(
                        class_id,
                        x + dx,
                        y + dy,
                        piece,
                        piece_area,
                        (rect[0] + x, rect[1] + y, *rect[2:]),
                    )
                )
    return parts


@dataclass
class Budget:
    """How much of a map the split may still look at, and how many components it had to leave whole.

    The split of one component costs a few passes over its box plus a fixed overhead; a map of noise has
    thousands of candidates, so without a bound one frame could take seconds.
    """

    components: int
    pixels: int
    unsplit: int = 0
    dropped: int = 0  # instances beyond max_instances

    def room(self, box_pixels: int) -> bool:
        """Whether a component of this box could still be split; else count it unsplit."""
        if self.components <= 0 or box_pixels > self.pixels:
            self.unsplit += 1
            return False
        return True

    def afford(self, cost: int) -> bool:
        """Charge a fit of straight rods ``cost`` pixels, if those left pay for it; else count its crop
        unsplit (it stays as it is). It takes no component: it looks at one a relief was taken for."""
        if cost > self.pixels:
            self.unsplit += 1
            return False
        self.pixels -= cost
        return True

    def take(self, box_pixels: int, speckle: bool = False) -> bool:
        """Charge a component of this box that :meth:`room` let through; a ``speckle`` one is never split,
        only counted unsplit."""
        if speckle:
            self.unsplit += 1
            return False
        self.components -= 1
        self.pixels -= box_pixels
        return True


class Comp(NamedTuple):
    """A connected component: a tight bool crop with its ``[0, 0]`` at frame pixel ``(x, y)``, its area,
    and, where tracing the class found them, its outer outline (frame pixels), the narrower side of its
    widest hole's box and its number of holes (see :func:`outline_and_holes`)."""

    x: int
    y: int
    mask: NDArray[np.bool_]
    area: int
    outline: NDArray[np.int32] | None
    hole_width: int
    holes: int


class Found(NamedTuple):
    """A class mask's components of at least ``size_threshold`` pixels, in scan order, and whether each may
    hold two objects; a labelled mask keeps only its ``max_instances`` largest, and ``beyond`` counts the
    others, never cropped."""

    comps: list[Comp]
    may: list[bool]
    beyond: int = 0

    @property
    def areas(self) -> list[int]:
        return [c.area for c in self.comps]

    def select(self, keep: list[bool] | None) -> Found:
        """The components ``keep`` marks (None: all), in their order."""
        if keep is None:
            return self
        return Found(
            [c for c, wanted in zip(self.comps, keep, strict=True) if wanted],
            [m for m, wanted in zip(self.may, keep, strict=True) if wanted],
            self.beyond,
        )


class Labelled(NamedTuple):
    """A labelled class mask's components that may be among the map's ``max_instances`` largest, not yet
    cropped (:meth:`select` crops those that are: on a map of noise, each class can hold the map's whole cut
    until the later classes are labelled), as :class:`Found` has them otherwise: ``labels`` the mask's label
    image, ``ids`` their labels, ``boxes`` their ``(x, y, width, height)``."""

    labels: NDArray[np.int32]
    ids: list[int]
    boxes: list[tuple[int, int, int, int]]
    areas: list[int]
    may: list[bool]
    beyond: int

    def select(self, keep: list[bool] | None) -> Found:
        """The components ``keep`` marks (None: all), cropped, in their order."""
        chosen = range(len(self.ids)) if keep is None else [i for i, wanted in enumerate(keep) if wanted]
        comps = []
        for i in chosen:
            x, y, cw, ch = self.boxes[i]
            comps.append(
                Comp(x, y, self.labels[y : y + ch, x : x + cw] == self.ids[i], self.areas[i], None, 0, 0)
            )
        return Found(comps, [self.may[i] for i in chosen], self.beyond)


def off_class(
    class_map: NDArray[Any], class_id: int, x: int, y: int, tight: NDArray[np.bool_]
) -> NDArray[np.bool_]:
    """The pixels of a component crop's box (at ``(x, y)``, the shape of ``tight``) that are not of its
    class."""
    ch, cw = tight.shape
    off: NDArray[np.bool_] = class_map[y : y + ch, x : x + cw] != class_id
    return off


def kernel_of(p: SemanticParams) -> NDArray[np.uint8]:
    return np.ones((p.erosion_kernel, p.erosion_kernel), np.uint8)


def find_components(
    m8: NDArray[np.uint8] | None,
    p: SemanticParams,
    before: list[int] | None = None,
    splits: bool = True,
    labels: Labels | None = None,
) -> Found | Labelled:
    """A class mask's components of at least ``size_threshold`` pixels, and whether each may hold two
    objects: it has room for two kept ones, and the opening leaves it a pixel (one the opening erases is
    thin or ragged: speckle, noise; its relief is flat, with no marker). ``before``: the areas of the map's
    largest components found so far, in other classes (a labelled mask does not crop what cannot be among
    the map's ``max_instances`` largest). ``splits`` False: none may (a model that draws the contacts
    between parts has split them), and no opening is made.

    Outlines are traced when the mask's borders and outlines are few (a scene of objects: tracing is
    several times cheaper than labelling, and the outlines are needed anyway); a mask of speckle, noise or
    thousands of small components is labelled instead, and only the components that may be split are
    traced later. The opening of a mask is the union of its components'
    openings (a box that fits in the mask lies in one component), so one erosion of the whole mask tells
    which components keep a pixel; beyond the image edge the mask counts as set, which keeps at least what
    the split's mirroring keeps. ``labels``: the mask's labelling where it is labelled rather than traced
    (see :func:`edgeseg.semantic.labelling.classes_of`), None where it is traced; ``m8`` None: the labelling
    is the whole map's, which says which components keep a pixel.
    """
    if m8 is None:
        if labels is None:
            raise ValueError("find_components: a class without its mask must come labelled")
        return by_labelling(labels, None, p, before or [])
    core = np.asarray(cv2.erode(m8, kernel_of(p), iterations=2), np.uint8) if splits else None
    if labels is not None:
        return by_labelling(labels, core, p, before or [])
    traced = by_tracing(m8, core, p)
    return by_labelling(label(m8, speckled=False), core, p, before or []) if traced is None else traced


def by_labelling(
    labelled: Labels,
    core: NDArray[np.uint8] | None,
    p: SemanticParams,
    before: list[int],
) -> Labelled:
    """:func:`find_components` from a class mask's labelling (outlines are left for later: most components
    never need one). Only the components that can be among the map's ``max_instances`` largest (beside
    ``before``) are kept, uncropped: a map of noise has thousands. (``core``: the opened mask, None when no
    component may be split or the labelling says which keep a pixel.)"""
    labels, stats, ids, cored = labelled
    area = stats[:, cv2.CC_STAT_AREA]
    has_core = np.zeros(len(area), bool)
    if cored is not None:
        has_core = cored
    elif core is not None:
        has_core = np.bincount(labels[core.view(bool)], minlength=len(area)) > 0
    if ids is None:
        ids = np.arange(1, len(area))  # label 0 is the background
    kept = ids[area[ids] >= p.size_threshold]
    n = len(kept)
    if len(before) + n > p.max_instances:
        # only those among the max_instances largest so far, ties to the earlier, as the map's cut decides
        # them (on a map of equal specks every later class crops none; a bound on the area kept them all)
        top = largest(np.concatenate([np.asarray(before, np.int64), area[kept]]), p.max_instances)
        kept = kept[top[top >= len(before)] - len(before)]
    beyond = n - len(kept)
    may = ((area[kept] >= 2 * max(p.size_threshold, 1)) & has_core[kept]).tolist()
    boxes = [(x, y, cw, ch) for x, y, cw, ch in stats[kept, :4].tolist()]
    return Labelled(labels, kept.tolist(), boxes, area[kept].tolist(), may, beyond)


def largest(areas: list[int] | NDArray[np.integer], n: int) -> NDArray[np.intp]:
    """The indices of the ``n`` largest of ``areas``, in increasing order (ties: the earlier ones)."""
    if len(areas) <= n:
        return np.arange(len(areas))
    return np.sort(np.argsort(-np.asarray(areas, np.int64), kind="stable")[:n])


def by_tracing(m8: NDArray[np.uint8], core: NDArray[np.uint8] | None, p: SemanticParams) -> Found | None:
    """:func:`find_components` from the outlines of the components and of their holes (two levels) of a 0/1
    mask: drawing a component's outline filled, then its holes' emptied (their outlines, the component's own
    pixels, drawn again) gives its exact mask in its box; where no other component's box meets that box, the
    mask's pixels there are that mask, copied. None when there are more outlines than labelling costs."""
    contours, hierarchy = cv2.findContours(m8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) > MAX_TRACED:
        return None
    links = hierarchy[0].tolist() if hierarchy is not None else []
    two = 2 * max(p.size_threshold, 1)
    comps, may = [], []
    outer = [k for k, link in enumerate(links) if link[3] == -1]
    boxes = [cv2.boundingRect(contours[k]) for k in outer]
    alone = _alone(boxes)
    for k_outer, (x, y, cw, ch), apart in zip(outer, boxes, alone, strict=True):
        if cw * ch < p.size_threshold:
            continue
        contour: NDArray[np.int32] = np.asarray(contours[k_outer], np.int32)
        own = []
        k = links[k_outer][2]
        while k != -1:
            own.append(contours[k])
            k = links[k][0]
        hole_width, holes = 0, len(own)
        if own:
            hole_width = max(min(cv2.boundingRect(hole)[2:]) for hole in own)
        if apart:
            # no other component's box meets this one's, so the mask's pixels there are the component's: a
            # copy of them, instead of its outline drawn filled and its holes emptied
            tight: NDArray[np.bool_] = m8[y : y + ch, x : x + cw].copy().view(bool)
        else:
            drawn = np.zeros((ch, cw), np.uint8)
            cv2.drawContours(drawn, [contour], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
            # (without holes, the filled outline is the component: the pixels the trace ran around)
            tight = drawn.view(bool)
            if own:
                # only this component's holes, not the whole list with an index: OpenCV converts every
                # outline of the list on each call, which made this quadratic in the number of outlines. (An
                # outline pixel is the component's, so emptying all holes before drawing their outlines back
                # is the same as doing it hole by hole.)
                cv2.drawContours(drawn, own, -1, 0, thickness=cv2.FILLED, offset=(-x, -y))
                cv2.drawContours(drawn, own, -1, 1, thickness=1, offset=(-x, -y))
                tight = tight & m8[y : y + ch, x : x + cw].view(bool)
        area = int(np.count_nonzero(tight))
        if area < p.size_threshold:
            continue
        comps.append(Comp(x, y, tight, area, contour, hole_width if holes <= MAX_HOLES else -1, holes))
        # (the core's largest value under the component: one OpenCV call, a third of numpy's & and any)
        may.append(
            core is not None
            and area >= two
            and cv2.minMaxLoc(core[y : y + ch, x : x + cw], tight.view(np.uint8))[1] > 0
        )
    return Found(comps, may)


def _alone(boxes: Sequence[Sequence[int]]) -> list[bool]:
    """For each box ``(x, y, w, h)``, whether it meets none of the others."""
    if len(boxes) < 2:
        return [True] * len(boxes)
    b = np.asarray(boxes, np.int64)
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + b[:, 2], y0 + b[:, 3]
    meet = (x0[:, None] < x1[None, :]) & (x0[None, :] < x1[:, None])
    meet &= (y0[:, None] < y1[None, :]) & (y0[None, :] < y1[:, None])
    alone: list[bool] = (meet.sum(axis=1) == 1).tolist()  # (each box meets itself)
    return alone


def mirror_encloses(tight: NDArray[np.bool_], sides: tuple[int, int, int, int], holes: int) -> bool:
    """Whether a component crop mirrored by ``sides`` (top, bottom, left, right) at the image edge may enclose
    background that it does not (a ``holes``-free crop that meets one side along one run of pixels cannot:
    the mirror's new holes would have to reach that side between two runs; a washer cut across its bore
    meets the edge twice)."""
    if not any(sides):
        return False
    if holes or sum(1 for s in sides if s) > 1:
        return True
    top, bottom, left, _ = sides
    line = tight[0] if top else tight[-1] if bottom else tight[:, 0] if left else tight[:, -1]
    return int(line[0]) + int(np.count_nonzero(line[1:] & ~line[:-1])) > 1


def with_boxes(parts: list[Part]) -> list[Part]:
    """``parts``, each with its minimum-area rectangle: those that have none get it from their outline
    (traced now where the split traced none), or, parts of few pixels without one, from their pixels
    (:func:`few_pixel_rects`, many at once).

    The split leaves whole components' boxes to this, after the ``max_instances`` cut and the
    ``min_score`` filter: on a scene the model was not trained for, most parts score under the demo card's
    ``min_score``; on the demo model's maps of the shared assets' photos, boxing only the parts kept took
    the split 0.85x the time (``scripts/profile_semantic.py --photos --reference``)."""
    few = [i for i, q in enumerate(parts) if q.rect is None and q.outline is None and q.area <= FEW_PIXELS]
    found = dict(zip(few, few_pixel_rects([parts[i].mask for i in few]), strict=True))
    boxed = []
    for i, q in enumerate(parts):
        if q.rect is None:
            if i in found:
                (cx, cy), (rw, rh), angle = found[i]
                cx, cy = cx + q.x, cy + q.y
            else:
                outline = outer_points(q.mask, q.x, q.y) if q.outline is None else q.outline
                (cx, cy), (rw, rh), angle = cv2.minAreaRect(outline)
            # OpenCV's rectangle is for pixel centres: widened to cover whole pixels, as
            # edgeseg.geometry.min_area_rect gives it
            q = Part(q.class_id, q.x, q.y, q.mask, q.area, (cx + 0.5, cy + 0.5, rw + 1.0, rh + 1.0, angle))
        boxed.append(q)
    return boxed


Rect = tuple[Sequence[float], Sequence[float], float]  # as cv2.minAreaRect gives it
# Fewer crops are boxed one by one: the batch's own numpy calls (~20 us) cost more than their passes
BATCH_FROM = 16
# A crop of more pixels is boxed on its own: the batch's work and memory go by the crops' pixels, and a
# part of few pixels can have a large box (a diagonal line)
BATCH_CROP = 4 * FEW_PIXELS
# Crops boxed together at most: the batch's arrays (9 bytes a crop pixel) stay under 5 MB however many parts
# a map keeps (max_instances has no upper bound)
BATCH_MOST = 512


def few_pixel_rects(masks: list[NDArray[np.bool_]]) -> list[Rect]:
    """OpenCV's minimum-area rectangle of each crop's pixels, in the crop's pixel coordinates.

    Most parts of a noisy map are small (a map's ``max_instances`` specks), and each crop's own pass
    (``cv2.findNonZero``, the rectangle of every pixel, whose hull sorts them all) took a quarter of the
    split of 21 classes of small blobs at 480x640. :func:`_rects_at_once` finds those of the crops of up to
    :data:`BATCH_CROP` pixels together, where there are :data:`BATCH_FROM` or more: the split of those
    blobs took 0.87x the time, of noise 0.92x, the same boxes (``scripts/bench_postprocess.py
    --reference``'s ``hostile_many_classes``, ``hostile_noise``; the sets of objects 0.99-1.01x)."""
    batch = [i for i, m in enumerate(masks) if m.size <= BATCH_CROP]
    found: dict[int, Rect] = {}
    if len(batch) >= BATCH_FROM:
        for start in range(0, len(batch), BATCH_MOST):
            chunk = batch[start : start + BATCH_MOST]
            found.update(zip(chunk, _rects_at_once([masks[i] for i in chunk]), strict=True))
    return [
        found[i] if i in found else cv2.minAreaRect(cv2.findNonZero(m.view(np.uint8)))
        for i, m in enumerate(masks)
    ]


def _rects_at_once(masks: list[NDArray[np.bool_]]) -> list[Rect]:
    """:func:`few_pixel_rects` of every crop at once, from the first and last pixel of each of its rows,
    which have the same convex hull as all its pixels (OpenCV's rectangle depends on the hull alone: the same
    rectangles to the bit, ``tests/test_semantic.py``). The crops are read as one flat run."""
    heights = np.array([m.shape[0] for m in masks], np.intp)
    widths = np.array([m.shape[1] for m in masks], np.intp)
    on = np.flatnonzero(np.concatenate([m.ravel() for m in masks]))
    row_width = np.repeat(widths, heights)
    row_start = np.zeros(len(row_width), np.intp)
    np.cumsum(row_width[:-1], out=row_start[1:])
    row = np.repeat(np.arange(len(row_width), dtype=np.intp), row_width)[on]
    first = np.empty(len(on), bool)
    first[:1] = True
    np.not_equal(row[1:], row[:-1], out=first[1:])
    starts = np.flatnonzero(first)  # each row's first pixel; the one before the next row's its last
    ends = np.append(starts[1:], len(on)) - 1
    rows = row[starts]
    owner = np.repeat(np.arange(len(masks), dtype=np.intp), heights)[rows]
    top = np.zeros(len(masks), np.intp)
    np.cumsum(heights[:-1], out=top[1:])
    ends_of = np.empty((len(rows), 2, 2), np.int32)
    ends_of[:, 0, 0] = on[starts] - row_start[rows]
    ends_of[:, 1, 0] = on[ends] - row_start[rows]
    ends_of[:, :, 1] = (rows - top[owner])[:, None]
    points = ends_of.reshape(-1, 2)
    bounds = np.zeros(len(masks) + 1, np.intp)
    np.cumsum(2 * np.bincount(owner, minlength=len(masks)), out=bounds[1:])
    return [cv2.minAreaRect(points[a:b]) for a, b in itertools.pairwise(bounds.tolist())]


def outer_points(tight: NDArray[np.bool_], x: int, y: int) -> NDArray[np.int32]:
    """The points of every outer outline of a crop at frame pixel ``(x, y)``, in frame pixels: those of one
    component, or of the parts of a split's piece, which can lie apart (each pixel goes to its nearest core
    or marker, across a bay of the background), all of which its oriented box covers."""
    outlines, _ = cv2.findContours(
        tight.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y)
    )
    return np.asarray(outlines[0] if len(outlines) == 1 else np.concatenate(outlines), np.int32)


def outer_outline(tight: NDArray[np.bool_], x: int, y: int) -> NDArray[np.int32]:
    """The outer outline of a component crop at frame pixel ``(x, y)``, in frame pixels."""
    outlines, _ = cv2.findContours(
        tight.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y)
    )
    return np.asarray(max(outlines, key=len), np.int32)


def outline_and_holes(
    tight: NDArray[np.bool_], x: int, y: int, area: int
) -> tuple[NDArray[np.int32], int, int]:
    """The outer outline (frame pixels) of a component crop at ``(x, y)`` of ``area`` pixels, the
    narrower side of its widest hole's box (a bore's diameter is at most that; 0: no hole; -1: so many
    that they are speckle, not bores) and its number of holes."""
    contour = outer_outline(tight, x, y)
    filled = np.zeros(tight.shape, np.uint8)
    cv2.drawContours(filled, [contour], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
    if cv2.countNonZero(filled) == area:  # most components: no hole, and no labelling pass needed
        return contour, 0, 0
    count = hole_count(tight)
    if count > MAX_HOLES:  # speckle: labelling its thousands of holes would cost several labelling passes
        return contour, -1, count
    # the holes are the background regions (4-connected, as the component is 8-connected) off the border
    around = cv2.copyMakeBorder((~tight).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    stats = cv2.connectedComponentsWithStats(around, connectivity=4, ltype=cv2.CV_32S)[2]
    holes = stats[2:]  # label 1 is the region around the component: the first pixel scanned is on the border
    if len(holes) > MAX_HOLES:
        return contour, -1, len(holes)
    width = int(np.minimum(holes[:, cv2.CC_STAT_WIDTH], holes[:, cv2.CC_STAT_HEIGHT]).max(initial=0))
    return contour, width, len(holes)


# 2x2 patterns of an image, numbered a + 2b + 4c + 8d (a b / c d): the weight of each in 4 x Euler number
# of the 8-connected foreground (Gray's bit quads: one pixel set +1, three set -1, the two diagonals -2)
_QUAD_WEIGHT = np.array([0, 1, 1, 0, 1, 0, -2, -1, 1, -2, 0, -1, 0, -1, -1, 0], np.int64)


def hole_count(tight: NDArray[np.bool_]) -> int:
    """The number of holes (4-connected background regions enclosed) of a crop holding one 8-connected
    component: one minus its Euler number, from counts of 2x2 patterns, in a few passes over the crop
    whatever the number of holes (labelling them costs much more when they are thousands)."""
    q = cv2.copyMakeBorder(tight.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    code = q[:-1, :-1] + 2 * q[:-1, 1:] + 4 * q[1:, :-1] + 8 * q[1:, 1:]
    return 1 - int(np.bincount(code.ravel(), minlength=16) @ _QUAD_WEIGHT) // 4
