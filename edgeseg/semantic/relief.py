"""One component's split: its distance relief (mirrored at the image edge, bores filled), its markers, the
regions they flood and the merging of regions without a neck between them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.geometry import min_area_rect

if TYPE_CHECKING:
    from edgeseg.semantic import SemanticParams

PAD = 2  # zero frame around each component crop, in pixels
Pads = tuple[int, int, int, int]
BORE_ROUNDNESS = 2.5  # largest area of a bore, in discs of its inscribed radius
BOX = np.ones((3, 3), np.uint8)
LOW_PEAK = 3.0  # pixels: lower peaks of parts thinner than this are no seeds (ragged edges, speckle)
POOL = np.ones((2, 2), np.uint8)
CONVEX_DEPTH = 1.0  # deepest concavity, in pixels, that a convex object's digitized outline shows


@dataclass(frozen=True)
class Relief:
    """What the split of one component works on, laid out as its crop padded by ``pads``.

    ``solid`` is the component with its bores filled (the split is made on it, the masks are cut back to
    the component), ``dist`` the distance transform of the opened solid (mirrored where the component meets
    the image edge), ``peak`` its largest value, and ``bores`` the filled bores, or None.
    """

    pads: Pads
    solid: NDArray[np.uint8]
    dist: NDArray[np.float32]
    peak: float
    bores: NDArray[np.bool_] | None
    encloses_bore: bool  # within the image (bores can also appear in the mirror beyond its edge)

    def crop_bores(self) -> NDArray[np.bool_] | None:
        """The bores in the component crop's frame, or None."""
        if self.bores is None:
            return None
        top, bottom, left, right = self.pads
        return self.bores[top : self.bores.shape[0] - bottom, left : self.bores.shape[1] - right]


def prepare(
    tight: NDArray[np.bool_],
    free: NDArray[np.bool_],
    contour: NDArray[np.int32],
    origin: tuple[int, int],
    sides: tuple[int, int, int, int],
    hole_width: int,
    kernel: NDArray[np.uint8],
) -> Relief:
    """Prepare a component's split.

    On ``sides`` (top, bottom, left, right) at the image edge the component is first mirrored: an object cut
    by the frame then gets a distance relief like that of a whole object (beyond-the-image as foreground,
    OpenCV's default, would turn a row of cut objects into one half-plane without necks; as background, it
    would shrink them to slivers). ``free`` marks the crop's pixels of no component; ``hole_width`` bounds
    the width of the component's holes (0: it has none).
    """
    pads = (sides[0] + PAD, sides[1] + PAD, sides[2] + PAD, sides[3] + PAD)
    dist = relief_distance(tight, sides, kernel)
    peak = float(dist.max())
    holes = None
    if hole_width >= peak:  # else no hole is wide enough to be a bore (see find_bores)
        holes = find_holes(tight, free, contour, origin, sides)
    bores = None if holes is None else find_bores(holes, peak)
    solid = tight
    encloses_bore = bores is not None
    if bores is not None and any(sides):
        inner = find_holes(tight, free, contour, origin, (0, 0, 0, 0))
        encloses_bore = inner is not None and find_bores(inner, peak) is not None
    if bores is not None:
        top, _, left, _ = sides
        solid = tight | bores[top : top + tight.shape[0], left : left + tight.shape[1]]
        dist = relief_distance(solid, sides, kernel)
        peak = float(dist.max())
        bores = np.asarray(
            cv2.copyMakeBorder(bores.view(np.uint8), *(PAD,) * 4, cv2.BORDER_CONSTANT, value=0)
        )
        bores = bores.view(bool)
    comp = np.asarray(
        cv2.copyMakeBorder(solid.view(np.uint8), *pads, cv2.BORDER_CONSTANT, value=0),
        np.uint8,
    )
    if bores is not None:
        bores &= comp.view(bool)  # mirrored bores beyond the image edge mark nothing
    return Relief(pads, comp, dist, peak, bores, encloses_bore)


def is_convex(contour: NDArray[np.int32], depth: float = CONVEX_DEPTH) -> bool:
    """The outline has no concavity deeper than ``depth`` pixels (by default a pixel's staircase)."""
    if len(contour) < 4:
        return True
    try:
        defects = cv2.convexityDefects(contour, cv2.convexHull(contour, returnPoints=False))
    except cv2.error:  # OpenCV refuses some self-touching outlines; they are not convex anyway
        return False
    # no defect is None up to OpenCV 5.0, an empty array from 5.1 on
    return defects is None or int(np.asarray(defects).reshape(-1, 4)[:, 3].max(initial=0)) <= depth * 256


def relief_distance(
    comp: NDArray[np.bool_], sides: tuple[int, int, int, int], kernel: NDArray[np.uint8]
) -> NDArray[np.float32]:
    """Distance transform of a component crop, mirrored by ``sides`` where it meets the image edge, framed
    by ``PAD`` zeros and opened (twice, as modlib does) first."""
    mirrored = cv2.copyMakeBorder(comp.view(np.uint8), *sides, cv2.BORDER_REFLECT) if any(sides) else comp
    padded = cv2.copyMakeBorder(mirrored.view(np.uint8), PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
    opened = cv2.morphologyEx(padded, cv2.MORPH_OPEN, kernel, iterations=2)
    return np.asarray(cv2.distanceTransform(opened, cv2.DIST_L2, 3), np.float32)


def find_holes(
    tight: NDArray[np.bool_],
    free: NDArray[np.bool_],
    contour: NDArray[np.int32],
    origin: tuple[int, int],
    sides: tuple[int, int, int, int],
) -> NDArray[np.bool_] | None:
    """The background enclosed by a component (``free`` marks pixels of no other component), or None.

    At the image edge the component is mirrored by ``sides`` (top, bottom, left, right) first, so a washer
    cut by the frame still encloses its bore; the holes are then in the mirrored crop's coordinates.
    """
    if any(sides):
        shape = cv2.copyMakeBorder(tight.view(np.uint8), *sides, cv2.BORDER_REFLECT)
        free = cv2.copyMakeBorder(free.view(np.uint8), *sides, cv2.BORDER_REFLECT).view(bool)
        outlines, _ = cv2.findContours(shape, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        offset = (0, 0)
    else:
        shape, outlines, offset = (
            tight.view(np.uint8),
            (contour,),
            (-origin[0], -origin[1]),
        )
    drawn = np.zeros(shape.shape, np.uint8)
    cv2.drawContours(drawn, list(outlines), -1, 1, thickness=-1, offset=offset)
    holes = drawn.view(bool) & free & (shape == 0)
    return holes if holes.any() else None


def find_bores(holes: NDArray[np.bool_], thickness: float) -> NDArray[np.bool_] | None:
    """The holes of a component that are an object's bore (a washer's or a nut's); None if there are none.

    A ring's distance relief has no single peak, so its seed would break into pieces around the ring; with
    the bore filled it is one disc, and the bore itself marks the object (a ring has one bore). A bore is as
    wide as the ring around it and round, the gap enclosed between touching objects is a thin cusp or, between
    crossing rods, a polygon: a hole counts as a bore when its inscribed radius r reaches half of
    ``thickness``, the component's largest distance to its edge, and its area is at most 2.5 pi r^2 (a disc
    is 1, a hexagon 1.1, a half-covered disc 2, a right isosceles triangle 1.85, an equilateral one 1.65: the
    gap between three rods that cross can pass, which is why a component around a bore is still tried as
    rods when the relief leaves it whole). Filling the gaps too would fuse the objects around them.
    """
    min_radius = 0.5 * thickness
    outlines, _ = cv2.findContours(holes.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    bores = np.zeros(holes.shape, bool)
    for outline in outlines:
        x, y, w, h = cv2.boundingRect(outline)
        # a disc of the minimum radius must fit: narrower holes are ruled out without a distance transform
        if min(w, h) < 2 * min_radius:
            continue
        own = np.zeros((h + 2, w + 2), np.uint8)
        cv2.drawContours(own, [outline], -1, 1, thickness=-1, offset=(1 - x, 1 - y))
        own &= np.asarray(
            cv2.copyMakeBorder(
                holes[y : y + h, x : x + w].view(np.uint8),
                1,
                1,
                1,
                1,
                cv2.BORDER_CONSTANT,
            ),
            np.uint8,
        )
        radius = float(cv2.distanceTransform(own, cv2.DIST_L2, 3).max())
        if radius >= min_radius and np.count_nonzero(own) <= BORE_ROUNDNESS * np.pi * radius**2:
            bores[y : y + h, x : x + w] |= own[1:-1, 1:-1].view(bool)
    return bores if bores.any() else None


def split_component(
    tight: NDArray[np.bool_],
    relief: Relief,
    class_max: float,
    kernel: NDArray[np.uint8],
    p: SemanticParams,
    seeds_out: list[NDArray[np.int32]] | None = None,
) -> list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] | None:
    """Split one component into tight crops ``(x, y, mask, rect)`` in ``tight``'s frame; None if it is one.

    Markers are the bores, the distance peaks (``dist > dist_threshold * top``, eroded) that hold no bore,
    and, with ``per_component``, the lower peaks of smaller objects (see :func:`lower_peaks`); every pixel
    of the solid component goes to its nearest marker (see :func:`flood_regions`), and neighbouring
    regions without a neck between them are merged again. With ``seeds_out``, the markers (``relief``'s
    padded frame, labelled 1..n after merging; all 1 when the component is one) are appended to it, unless
    there are none.
    """
    dist, comp = relief.dist, relief.solid
    top = relief.peak if p.per_component else class_max
    if top <= 0.0:
        return None
    seeds: NDArray[np.uint8] = (dist > p.dist_threshold * top).view(np.uint8)
    if p.erosion_iteration:
        seeds = np.asarray(cv2.erode(seeds, kernel, iterations=p.erosion_iteration), np.uint8)
    seeds &= comp  # seeds of mirrored objects count only where they reach into the component
    if relief.bores is not None:
        n_seeds, seed_lab = cv2.connectedComponents(seeds, connectivity=8, ltype=cv2.CV_32S)
        own_bore = np.zeros(n_seeds, bool)
        own_bore[seed_lab[relief.bores]] = True
        own_bore[0] = True
        seeds = (~np.take(own_bore, np.asarray(seed_lab, np.int32)) | relief.bores).view(np.uint8)
    cut = p.dist_threshold * top
    # The markers' regions are found on a half-resolution grid (see flood_regions); the markers are max-pooled
    # onto it, so none vanishes (two within a pixel of each other fuse: no neck lies between them)
    high = pool2(seeds)
    # (a lower peak is at least low_peak_floor high: under a cut below it there is none to look for, and a
    # component with one marker needs no pooled relief)
    pdist = pool2(dist) if p.per_component and cut >= low_peak_floor(p) else None
    low = None if pdist is None else lower_peaks(pdist, comp, relief.pads, cut, p)
    pooled = high if low is None else np.asarray(high | low.view(np.uint8), np.uint8)
    count, lab_markers = cv2.connectedComponents(pooled, connectivity=8, ltype=cv2.CV_32S)
    markers = np.asarray(lab_markers, np.int32)
    n = int(count) - 1
    if seeds_out is not None and low is not None:  # the view shows the lower peaks' markers too
        seeds = seeds | upsample(low.astype(np.uint16), comp).astype(np.uint8)
    if n <= 1:
        if seeds_out is not None and n == 1:
            seeds_out.append(seeds.astype(np.int32))
        return None
    if pdist is None:
        pdist = pool2(dist)
    near, lower, near_tall = flood_regions(markers, n, None if low is None else high, pdist, cut)
    w = comp.shape[1]
    lab = upsample(near, comp)  # 0 = outside the component, 1..n = the markers' regions
    edge, edge_lab, edge_lo, edge_hi = region_edges(lab)
    on = pooled.view(bool)
    peak = np.zeros(n + 1, np.float32)
    np.maximum.at(peak, near[on], pdist[on])
    bore_region = np.zeros(n + 1, bool)
    if relief.bores is not None:
        bore_region[lab[relief.bores]] = True
    lut, joined = merge_shallow(
        edge_lo, edge_hi, dist.ravel()[edge], peak, bore_region, p.saddle_ratio, lower
    )
    if joined is not None and near_tall is not None and lower is not None:
        # A lower peak that joins a neighbour marks no object of its own: its pixels go where the taller
        # markers alone send them (in a neck between two objects, half to each), and the regions left are
        # merged again, as the borders between them have changed. (np.take and np.copyto: looking a label
        # map up in a table, or copying where a mask is set, take half the time of numpy's indexing)
        moved = np.take(joined, lab)
        np.copyto(lab, upsample(near_tall, comp), where=moved)
        keep = ~joined
        keep[0] = True
        lab = np.take(np.cumsum(keep).astype(np.uint16) - 1, lab)  # regions renumbered 1..n without gaps
        peak, bore_region, lower = peak[keep], bore_region[keep], lower[keep]
        n = len(peak) - 1
        edge, edge_lab, edge_lo, edge_hi = region_edges(lab)
        lut, _ = merge_shallow(
            edge_lo,
            edge_hi,
            dist.ravel()[edge],
            peak,
            bore_region,
            p.saddle_ratio,
            lower,
        )
    if lut is not None:
        n = int(lut.max())
        lab, edge_lab = np.take(lut, lab), lut[edge_lab]
    if n <= 1:
        if seeds_out is not None:
            seeds_out.append(seeds.astype(np.int32))
        return None
    if seeds_out is not None:
        seeds_out.append((lab * seeds).astype(np.int32))
    t, _, left, _ = relief.pads
    out: list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] = []
    for label, x0, y0, x1, y1, outline in region_outlines(edge, edge_lab, w, (left, t)):
        crop = (lab[y0:y1, x0:x1] == label) & tight[y0 - t : y1 - t, x0 - left : x1 - left]
        out.append((x0 - left, y0 - t, crop, min_area_rect(outline)))
    return out


def lower_peaks(
    pdist: NDArray[np.float32],
    comp: NDArray[np.uint8],
    pads: Pads,
    cut: float,
    p: SemanticParams,
) -> NDArray[np.bool_] | None:
    """Markers of objects lower than the threshold ``cut``, on the half-resolution grid (None: none).

    A small object touching a big one peaks under the big one's threshold: its peak, a local maximum of
    the relief ``pdist`` (of the crop ``comp``, pooled) below ``cut``, marks it too (where it only bulges
    from a bigger object's slope, the saddle between them is nearly as high as the peak, and the regions
    merge again). Only a peak whose disc would be kept counts: smaller ones would be split off only to be
    dropped. ``pads`` (top, bottom, left, right) of the crop say where it is mirrored at the image edge:
    mirrored, a strip along the edge (shading, a cut background object) bulges into a peak on the edge at
    every widening, so there a lower peak tells nothing.
    """
    floor = low_peak_floor(p)
    low = (pdist >= floor) & (pdist <= cut) & (pdist >= cv2.dilate(pdist, BOX)) & pool2(comp).view(bool)
    h, w = comp.shape
    top, bottom, left, right = pads
    # the two rows or columns of the component along a mirrored edge, on the half-resolution grid
    if top > PAD:
        low[: (top + 1) // 2 + 1] = False
    if bottom > PAD:
        low[(h - bottom - 2) // 2 :] = False
    if left > PAD:
        low[:, : (left + 1) // 2 + 1] = False
    if right > PAD:
        low[:, (w - right - 2) // 2 :] = False
    return low if low.any() else None


def low_peak_floor(p: SemanticParams) -> float:
    """The least height of a lower peak: a disc that size would be kept, and its part is no ragged edge."""
    return max(LOW_PEAK, math.sqrt(p.size_threshold / math.pi))


def upsample(near: NDArray[np.uint16], comp: NDArray[np.uint8]) -> NDArray[np.uint16]:
    """Half-resolution region labels at full resolution, 0 outside the component ``comp``."""
    h, w = comp.shape
    full = cv2.resize(near, (2 * near.shape[1], 2 * near.shape[0]), interpolation=cv2.INTER_NEAREST)
    lab = np.ascontiguousarray(full[:h, :w], np.uint16)
    lab *= comp
    return lab


def region_edges(
    lab: NDArray[np.uint16],
) -> tuple[NDArray[np.intp], NDArray[np.uint16], NDArray[np.uint16], NDArray[np.uint16]]:
    """The flat indices of every pixel with a neighbour of another label (the outlines of all regions,
    where all the rest happens), with its label and its 3x3 minimum and maximum label."""
    hi = np.asarray(cv2.dilate(lab, BOX), np.uint16)
    lo = np.asarray(cv2.erode(lab, BOX), np.uint16)
    edge = np.flatnonzero(hi != lo)
    return edge, lab.ravel()[edge], lo.ravel()[edge], hi.ravel()[edge]


def region_outlines(
    edge: NDArray[np.intp], edge_lab: NDArray[np.uint16], width: int, origin: tuple[int, int]
) -> list[tuple[int, int, int, int, int, NDArray[np.float32]]]:
    """Label, box ``(x0, y0, x1, y1)`` and outline points of every region, in increasing label order, from
    the flat indices ``edge`` (ascending) of pixels on outlines in an image ``width`` wide and their labels
    ``edge_lab`` (0: outside). The points are pixel centres less ``origin`` ``(x, y)``; the boxes are in
    the image's pixels.

    A region's box and oriented box depend only on its convex hull, so each row's leftmost and rightmost
    outline pixel stand for the region: no per-region scans of the crop, no contour tracing. (After a merge
    some of these pixels lie inside the merged region; being its pixels, they change neither.)
    """
    inside = edge_lab > 0
    ys, xs = np.divmod(edge[inside], width)
    height = int(ys[-1]) + 1
    key = edge_lab[inside].astype(np.intp)
    key *= height
    key += ys
    order = np.argsort(key, kind="stable")  # indices ascend, so x stays sorted within each (region, row)
    key, xs = key[order], xs[order]
    starts = run_starts(key)
    lo = xs[starts]
    hi = np.empty_like(lo)  # each (region, row)'s last pixel: the one before the next one's first
    hi[:-1] = xs[starts[1:] - 1]
    hi[-1] = xs[-1]
    region, row = np.divmod(key[starts], height)
    ends_pts = np.empty((len(starts), 2, 2), np.float32)  # (row, its left and right end, x and y)
    ends_pts[:, 0, 0], ends_pts[:, 1, 0] = lo, hi
    ends_pts[:, :, 0] += 0.5 - origin[0]
    ends_pts[:, :, 1] = (row + (0.5 - origin[1]))[:, None]
    pts = ends_pts.reshape(-1, 2)
    first = run_starts(region)  # each region's first row
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = len(region) - 1
    boxes = zip(
        region[first].tolist(),
        np.minimum.reduceat(lo, first).tolist(),
        row[first].tolist(),
        np.maximum.reduceat(hi, first).tolist(),
        row[last].tolist(),
        first.tolist(),
        last.tolist(),
        strict=True,
    )
    return [(label, x0, y0, x1 + 1, y1 + 1, pts[2 * a : 2 * b + 2]) for label, x0, y0, x1, y1, a, b in boxes]


def run_starts(values: NDArray[Any]) -> NDArray[np.intp]:
    """Where each run of equal ``values`` (not empty) starts."""
    change = np.empty(len(values), bool)
    change[0] = True
    np.not_equal(values[1:], values[:-1], out=change[1:])
    return np.flatnonzero(change)


def pool2(image: NDArray[Any]) -> NDArray[Any]:
    """2x2 max-pooling (odd sizes: the last row or column pooled with zeros)."""
    pooled = cv2.dilate(image, POOL, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return np.ascontiguousarray(pooled[::2, ::2])


def flood_regions(
    markers: NDArray[np.int32],
    n: int,
    high: NDArray[np.uint8] | None,
    dist: NDArray[np.float32],
    cut: float,
) -> tuple[NDArray[np.uint16], NDArray[np.bool_] | None, NDArray[np.uint16] | None]:
    """Label every pixel of the half-resolution grid with its marker's region (``markers``: 1..n); also
    which markers are lower peaks and the regions of the other markers alone (None, None: no lower peak,
    or no other marker).

    Markers cut from the relief at ``cut`` (the ``high`` pixels; all when None) all reach out to their
    object's edge by about ``cut``; a lower peak's marker is one point, which reaches out by its height. So
    a pixel goes to the marker nearest once each is pushed out that far: between two discs, that is the
    line through their crossing points whatever their sizes (plain nearness would give a small disc's neck
    region to the big marker). This runs on the half-resolution grid: it is the costliest step on a large
    cluster, and a grid twice as coarse moves the boundaries between regions by a pixel at most.
    """
    own = markers > 0
    peaks = None
    if high is not None:
        has_high = np.zeros(n + 1, bool)
        has_high[markers[high.view(bool)]] = True
        peaks = own & ~np.take(has_high, markers)
    tall = own if peaks is None else own & ~peaks
    if peaks is None or not peaks.any() or not tall.any():
        return nearest_label(own, markers), None, None
    lower = np.zeros(n + 1, bool)
    lower[markers[peaks]] = True
    reach = np.zeros(n + 1, np.float32)
    np.maximum.at(reach, markers[peaks], dist[peaks])
    d_tall, near_tall = nearest_with_distance(tall, markers)
    d_peak, near_peak = nearest_with_distance(peaks, markers)
    # grid distances are in half-resolution pixels, the relief in full-resolution ones
    nearer_peak = 2.0 * d_peak - reach[near_peak] < 2.0 * d_tall - cut
    near = np.where(nearer_peak, near_peak, near_tall).astype(np.uint16)
    # every marker keeps its own pixels: no region is empty
    np.copyto(near, markers, casting="unsafe", where=own)
    return near, lower, near_tall.astype(np.uint16)


def nearest_label(on: NDArray[np.bool_], markers: NDArray[np.int32]) -> NDArray[np.uint16]:
    """Every pixel labelled with the label in ``markers`` of its nearest ``on`` pixel."""
    return nearest_with_distance(on, markers)[1].astype(np.uint16)


def nearest_with_distance(
    on: NDArray[np.bool_], markers: NDArray[np.int32]
) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Distance to the nearest ``on`` pixel and that pixel's label in ``markers`` (infinite and 0 without
    ``on`` pixels)."""
    if not on.any():
        return np.full(on.shape, np.inf, np.float32), np.zeros(on.shape, np.int32)
    d, near = cv2.distanceTransformWithLabels(
        (~on).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    # OpenCV numbers the on pixels 1, 2, ... in raster order (a label per pixel: labelling their connected
    # regions first, as DIST_LABEL_CCOMP does, cost a fifth more and gave the same markers)
    lut = np.concatenate((np.zeros(1, np.int32), markers[on]))
    return np.asarray(d, np.float32), np.take(lut, np.asarray(near, np.int32))


def merge_shallow(
    lo: NDArray[np.uint16],
    hi: NDArray[np.uint16],
    dist: NDArray[np.float32],
    peak: NDArray[np.float32],
    bore: NDArray[np.bool_],
    saddle_ratio: float,
    lower: NDArray[np.bool_] | None,
) -> tuple[NDArray[np.uint16] | None, NDArray[np.bool_] | None]:
    """Merge neighbouring regions not separated by a neck: a relabelling table (0 -> 0, regions 1..n to
    1..K), or None when nothing merges; and which lower peaks' regions joined a neighbour (None: none).

    Regions 1..n have the largest distances ``peak[1..n]``; ``lo``, ``hi`` and ``dist`` are, on the pixels
    of all the outlines, the 3x3 minimum and maximum label (0 outside the component) and the distance. Two
    regions are one object when the distance on their common border (the saddle) reaches ``saddle_ratio``
    of the smaller of their two peaks: a thin rod's ridge dips a little where its jagged edge comes closer,
    which splits its seed, but that is no neck between two objects. Two regions marked by bores
    (``bore[1..n]``) stay apart: each bore is its own object's. A region of a lower peak (``lower[1..n]``)
    joins at most one neighbour.
    """
    n = len(peak) - 1
    border = lo > 0  # pixels of the component with a neighbour of another region
    if not border.any():
        return None, None
    key = (lo[border].astype(np.int64) - 1) * n + (hi[border].astype(np.int64) - 1)
    order = np.argsort(key, kind="stable")
    key, d = key[order], dist[border][order]
    first = run_starts(key)
    saddle = np.maximum.reduceat(d, first)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs: list[tuple[int, int]] = []
    joins: dict[int, tuple[float, int]] = {}  # a lower peak's region: the saddle and neighbour it joins
    peaks, bores, lowers = peak.tolist(), bore.tolist(), None if lower is None else lower.tolist()
    for k, s in zip(key[first].tolist(), saddle.tolist(), strict=True):
        i, j = divmod(k, n)
        if (bores[i + 1] and bores[j + 1]) or s < saddle_ratio * min(peaks[i + 1], peaks[j + 1]):
            continue
        if lowers is not None and (lowers[i + 1] or lowers[j + 1]):
            # a lower peak's region joins the one neighbour it is most connected to: where it lies in the
            # neck between two objects, it must not join them into one
            a, b = (i, j) if peaks[i + 1] <= peaks[j + 1] else (j, i)
            if a not in joins or s > joins[a][0]:
                joins[a] = (s, b)
        else:
            pairs.append((i, j))
    pairs.extend((a, b) for a, (_, b) in joins.items())
    joined = None
    if joins:
        joined = np.zeros(n + 1, bool)
        joined[[a + 1 for a in joins]] = True
    merged = False
    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
            merged = True
    if not merged:
        return None, None
    roots = [root(i) for i in range(n)]
    rank = {r: k for k, r in enumerate(sorted(set(roots)), 1)}  # (np.unique costs more for a few dozen)
    lut = np.zeros(n + 1, np.uint16)
    lut[1:] = [rank[r] for r in roots]
    return lut, joined
