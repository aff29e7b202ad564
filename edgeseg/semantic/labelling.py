"""The labelling passes of a map's class masks: a pass per mask, or one pass for every class at once.

A class mask with many outlines (noise, speckle, hundreds of small blobs) is labelled rather than traced,
and each such mask is a labelling pass over the whole frame. A map of many classes each spread over the
frame (the 21 of a VOC model facing a scene it was not trained for) then costs as many passes. OpenCV labels
only binary images, so one pass labels all the classes on a grid twice the map's size each way: a map pixel
``(y, x)`` is grid pixel ``(2y, 2x)``, and the grid pixel between two neighbours is set where they are of one
class. The grid's components, at even coordinates, are the map's 4-connected class components; two of one
class that touch only at a corner are joined afterwards by a union of their labels. (No binary image can
draw that join: a 2x2 block whose two diagonals hold two classes joins both, and any two set pixels that
touch are one component.) The grid costs about six passes over the map, so it pays only where the masks
would cost more on their own (:func:`classes_of` estimates that from every seventh row of the map).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg import sidework

# A class mask is labelled rather than traced when more than this fraction of the pixels in every
# SAMPLE_STEP-th row differ from their left neighbour (scenes of objects: ~2%; noise: ~40%)
SPECKLE_BORDERS = 0.08
# (7: a pattern repeating every 2, 4 or 8 rows, such as a grid of specks, is seen at every phase; every
# 4th row sees the specks of a grid of 8 on half of its rows, every 8th on none or all)
SAMPLE_STEP = 7
MAX_TRACED = 256  # a class mask with more outlines (components and holes) is labelled
# A mask whose outlines are estimated at more than this many is labelled without tracing it first (the
# estimate is within 0.5-2.5x of the count on the post-processing bench's maps; a wrong guess costs time only)
SURE_LABELLED = 2 * MAX_TRACED
# One pass for all classes when the masks that are not speckled would cost more than this many passes each
# on its own: a labelled one LABELLED_PASSES (its pass, its opening and the count of what the opening keeps),
# a traced one a pass per OUTLINES_A_PASS outlines estimated at 480x640 (each traced outline is a crop drawn;
# a labelling crops only those among the map's max_instances largest; a pass costs in proportion to the
# map's pixels, but no less than at 480x640: on smaller maps the calls' own costs weigh, and a pass per class
# was as fast as the grid or faster there, scripts/bench_labelling.py --shape 120x160). The grid costs about
# six passes, and opens every class at once. A speckled mask does not count: on noise the grid holds tens
# of thousands of components and corner joins, and costs more than a pass per class (whose passes run side
# by side on two cores). scripts/bench_labelling.py times the choice against both ways.
GRID_PASSES = 10.0
# A map of at least this many pixels is labelled in bands side by side on the helper threads (see label_map)
SIDE_PIXELS = 1 << 16
LABELLED_PASSES = 1.5
OUTLINES_A_PASS = 160


class Labels(NamedTuple):
    """A class mask's labelling: the label image (shared by every class of a one-pass map), each label's
    statistics in OpenCV's layout (``cv2.CC_STAT_*`` columns), the class's labels (None: every label but 0)
    and which of its labels keep a pixel after the opening (None: not known here)."""

    image: NDArray[np.int32]
    stats: NDArray[np.int32]
    ids: NDArray[np.intp] | None = None
    cored: NDArray[np.bool_] | None = None


class Sample(NamedTuple):
    """What every SAMPLE_STEP-th row of a class map says of the classes it shows (keyed by class id):
    whether a class's mask is speckled (noise, speckle, thousands of small components: more than
    SPECKLE_BORDERS of the sampled pixels are where the mask changes along a row), and about how many
    outlines it has (k components of height h cross h / SAMPLE_STEP sampled rows each, a run a row, and
    cover about k h^2 pixels, so k = SAMPLE_STEP runs^2 / pixels)."""

    speckled: dict[int, bool]
    outlines: dict[int, float]


def sample(class_map: NDArray[Any], class_ids: list[int]) -> Sample:
    """:class:`Sample` of those of ``class_ids`` that every SAMPLE_STEP-th row of ``class_map`` shows."""
    rows = np.ascontiguousarray(class_map[::SAMPLE_STEP])
    flat = rows.ravel()
    at, lengths = row_runs(rows)
    run_classes = flat[at]
    # each run's class as its index in class_ids (len(class_ids): another class), so that the counts are as
    # long as class_ids whatever the ids (a 16-bit map's may reach 65535)
    ids = np.asarray(class_ids, np.int64)
    k = len(ids)
    index = np.full(int(run_classes.max()) + 1, k, np.intp)
    ids = ids[ids < len(index)]
    index[ids] = np.arange(len(ids))
    runs_of = index[run_classes]
    runs = np.bincount(runs_of, minlength=k + 1)
    pixels = np.bincount(runs_of, weights=lengths, minlength=k + 1)
    # a run is two borders of its class's mask, less the ends of the rows
    first = np.bincount(index[rows[:, 0]], minlength=k + 1)
    borders = 2 * runs - first - np.bincount(index[rows[:, -1]], minlength=k + 1)
    shown = np.flatnonzero(runs[: len(ids)])
    keys = ids[shown].tolist()
    speckled = (borders[shown] > SPECKLE_BORDERS * rows.size).tolist()
    outlines = (SAMPLE_STEP * runs[shown].astype(np.float64) ** 2 / pixels[shown]).tolist()
    return Sample(dict(zip(keys, speckled, strict=True)), dict(zip(keys, outlines, strict=True)))


def row_runs(image: NDArray[Any]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The runs of equal values along the rows of a contiguous 2-D ``image``: where each starts in its
    flattening and how long it is (a run ends at its row's end)."""
    flat = image.ravel()
    start = np.empty(flat.size, bool)
    start[0] = True
    np.not_equal(flat[1:], flat[:-1], out=start[1:])
    start[:: image.shape[1]] = True
    first = np.flatnonzero(start)
    length = np.empty_like(first)
    np.subtract(first[1:], first[:-1], out=length[:-1])
    length[-1] = flat.size - first[-1]
    return first, length


def label(m8: NDArray[np.uint8], speckled: bool = True) -> Labels:
    """A 0/1 mask's 8-connected components, with their statistics; ``speckled``: the mask is noise or
    speckle (:class:`Sample`), not many components of a few pixels or more.

    Every algorithm OpenCV has gives the same labels and statistics; their speeds differ. On one OpenCV
    thread (the ``edgeseg`` command's setting) its default took about twice the time of Grana's block-based
    one on masks of many small components (1.41 against 0.68 ms on 480x640 of 5x5 specks, 1.51 against 0.79
    on blobs), and Grana's 0.99-1.04x the default's on noise and on one ragged component; with OpenCV's
    pool, 0.99-1.04x on all four (``scripts/bench_labelling.py --algorithms``)."""
    algorithm = cv2.CCL_DEFAULT if speckled else cv2.CCL_GRANA
    _, lab, st, _ = cv2.connectedComponentsWithStatsWithAlgorithm(m8, 8, cv2.CV_32S, algorithm)
    return Labels(np.asarray(lab, np.int32), np.asarray(st, np.int32))


class ClassMask(NamedTuple):
    """A class present in the map: its id, its mask (None where the map's one pass labelled it: no mask is
    made) and its labelling (None: it is traced)."""

    class_id: int
    mask: NDArray[np.uint8] | None
    labels: Labels | None


def classes_of(
    class_map: NDArray[Any], class_ids: list[int], kernel: NDArray[np.uint8] | None
) -> list[ClassMask]:
    """Those of ``class_ids`` present in ``class_map``, each with its mask and, where it is labelled rather
    than traced (speckled, or with more outlines than tracing pays for), its labelling. Where the masks
    would cost more passes on their own than :data:`GRID_PASSES`, one pass labels every class (see the
    module; no mask is made), with which of their components keep a pixel after an opening by ``kernel``
    (twice, as :func:`edgeseg.semantic.components.find_components` opens; None: no opening); otherwise each
    labelled mask takes a pass of its own, side by side on the process's helper threads
    (:mod:`edgeseg.sidework`) where OpenCV runs its calls without its pool.

    On a map of noise these passes are most of the split's time (4-5 ms each at 480x640, one per class), and
    the edgeseg command runs OpenCV's calls without its pool (:func:`edgeseg.threadplan.serial_opencv`), so
    nothing else would spread them over the cores. OpenCV lets go of the GIL while it labels. On the
    post-processing bench's noise maps (three classes on two cores: two passes' time instead of three), on one
    OpenCV thread, modlib (with OpenCV's pool) over edgeseg went from 0.98 and 0.99 to 1.05 and 1.13 in
    alternated runs of ``scripts/bench_postprocess.py``. With OpenCV's pool, which shares out each pass
    already, passes side by side only crowded the cores (1.05 and 1.06 against 1.16 and 1.08): they run in
    turn."""
    seen = sample(class_map, class_ids)
    speckled = seen.speckled
    chosen = {c for c, noisy in speckled.items() if noisy or seen.outlines[c] > SURE_LABELLED}
    # what the masks that are not speckled would cost on their own, in labelling passes
    per_pass = OUTLINES_A_PASS * max(1.0, class_map.size / (480 * 640))
    cost = sum(
        LABELLED_PASSES if c in chosen else seen.outlines[c] / per_pass
        for c, noisy in speckled.items()
        if not noisy
    )
    every = label_map(class_map, kernel) if cost >= GRID_PASSES else None
    out = []
    for c in class_ids:
        if every is not None and c in speckled:  # (the one pass labels every class the sample shows)
            out.append(ClassMask(c, None, every[c]))
        elif (mask := class_map == c).any():
            out.append(ClassMask(c, mask.view(np.uint8), None))
    if every is not None:
        return out
    apart = [k for k, found in enumerate(out) if found.class_id in chosen]
    masks = [m for k in apart if (m := out[k].mask) is not None]
    noisy = [speckled[out[k].class_id] for k in apart]
    calls = [functools.partial(label, m, s) for m, s in zip(masks, noisy, strict=True)]
    labelled = sidework.side_by_side(calls) if _side_helpers() else [call() for call in calls]
    for k, labels in zip(apart, labelled, strict=True):
        out[k] = out[k]._replace(labels=labels)
    return out


class MapLabels:
    """Every class of a map labelled in one pass (see the module): :meth:`__getitem__` gives a class's
    :class:`Labels`."""

    def __init__(
        self,
        image: NDArray[np.int32],
        stats: NDArray[np.int32],
        classes: NDArray[Any],
        cored: NDArray[np.bool_] | None,
    ) -> None:
        self.image, self.stats, self.cored = image, stats, cored
        # (label 0 and those a union took in hold no pixel, and no class)
        held = np.flatnonzero(stats[:, cv2.CC_STAT_AREA])
        self._order = held[np.argsort(classes[held], kind="stable")]
        self._sorted = classes[self._order]

    def __getitem__(self, c: int) -> Labels:
        lo, hi = np.searchsorted(self._sorted, [c, c + 1])
        return Labels(self.image, self.stats, self._order[lo:hi], self.cored)


def label_map(class_map: NDArray[Any], kernel: NDArray[np.uint8] | None = None) -> MapLabels:
    """Every class component of ``class_map`` (8-connected, as :func:`label` finds in each class's mask), in
    one labelling pass of the map's grid (see the module); with ``kernel``, which keep a pixel after the
    class masks' opening (an erosion by ``kernel`` twice; beyond the image edge a mask counts as set).

    The components' boxes, areas and classes come from the label image's runs along its rows (a few per
    component), not from OpenCV's statistics of the grid, which cost as much as its labelling (four times
    the map's pixels, the bridges included), nor from a count over every pixel: the split of 21 classes of
    small blobs at 480x640 took 0.87-0.88x the time (``scripts/bench_postprocess.py --reference``'s
    ``hostile_many_classes``, three runs), the same labels, boxes and areas.

    Where OpenCV runs its calls without its pool (which shares out the labelling itself), a large map's
    bands of rows are labelled side by side on the helper threads (:mod:`edgeseg.sidework`), each on a grid of
    its own, and joined where they meet: on two cores the split of 21 classes of small blobs at 480x640 took
    0.89-0.91x the time on one OpenCV thread (``scripts/bench_postprocess.py --reference``'s
    ``hostile_many_classes``, two runs); the same labels, numbered otherwise but in the same order (of their
    first pixels)."""
    h, w = class_map.shape
    bands = min(_side_helpers() + 1, h) if class_map.size >= SIDE_PIXELS else 1
    edges = [h * k // bands for k in range(bands + 1)]
    pieces = sidework.side_by_side(
        [functools.partial(_grid_labels, class_map[y0:y1]) for y0, y1 in itertools.pairwise(edges)]
    )
    at = np.empty((h, w), np.int32)
    n = 1  # (label 0 is no pixel's: every pixel of the map is set on its grid)
    for (y0, y1), (count, labels) in zip(itertools.pairwise(edges), pieces, strict=True):
        np.add(labels, n - 1, out=at[y0:y1])
        n += count - 1
    u, v = corner_joins(class_map, at, edges[1:-1])
    image = at if not len(u) else np.take(union(n, u, v), at)
    flat = image.ravel()
    first, length = row_runs(image)
    run_label = flat[first]
    y = first // w
    x0 = first - y * w
    # a label's top is its first run's row, its bottom its last's (the runs are in raster order; of
    # repeated indices numpy assigns the last)
    top = np.full(n, h, np.intp)
    top[run_label[::-1]] = y[::-1]
    bottom = np.zeros(n, np.intp)
    bottom[run_label] = y
    left = np.full(n, w, np.intp)
    np.minimum.at(left, run_label, x0)
    right = np.zeros(n, np.intp)
    np.maximum.at(right, run_label, x0 + length - 1)
    stats = np.empty((n, 5), np.int32)
    stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP] = left, top
    stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT] = right - left + 1, bottom - top + 1
    stats[:, cv2.CC_STAT_AREA] = np.bincount(run_label, weights=length, minlength=n)
    classes = np.zeros(n, class_map.dtype)
    classes[run_label] = class_map.ravel()[first]
    cored = None
    if kernel is not None:
        # a pixel whose neighbourhood holds one class is kept by that class's opening
        core = cv2.erode(class_map, kernel, iterations=2) == cv2.dilate(class_map, kernel, iterations=2)
        cored = np.bincount(flat[core.ravel()], minlength=n) > 0
    return MapLabels(image, stats, classes, cored)


def _side_helpers() -> int:
    """The helper threads labelling passes share: none where OpenCV runs its own pool, which shares out each
    pass itself (passes side by side then only crowded the cores)."""
    return sidework.helpers() if cv2.getNumThreads() == 1 else 0


def _grid_labels(class_map: NDArray[Any]) -> tuple[int, NDArray[np.int32]]:
    """The number of labels of ``class_map``'s grid (see the module) and the labels of the map's pixels."""
    h, w = class_map.shape
    grid = np.zeros((2 * h - 1, 2 * w - 1), np.uint8)
    grid[::2, ::2] = 1
    np.equal(class_map[:, :-1], class_map[:, 1:], out=grid[::2, 1::2].view(bool))
    np.equal(class_map[:-1], class_map[1:], out=grid[1::2, ::2].view(bool))
    n, labels = cv2.connectedComponents(grid, connectivity=8, ltype=cv2.CV_32S)
    return n, np.asarray(labels, np.int32)[::2, ::2]


def corner_joins(
    class_map: NDArray[Any], at: NDArray[np.int32], seams: Sequence[int] = ()
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """The pairs of labels (of ``at``, the labels of the map's pixels on its grid) that two pixels of one
    class touching only at a corner join: a 2x2 block's diagonal pair whose other two pixels are both of
    other classes (where either is of theirs, the block's sides join them on the grid already). With
    ``seams``, the rows where a band of rows labelled on a grid of its own begins: also each pixel there and
    the one above it where they are of one class (the diagonals across come with the corners: where a side
    joins them, it is one of those or on a grid).

    The blocks are found by OpenCV's comparisons of the map's uint8 values, and the labels read at those
    few only, rather than numpy comparing the int32 labels of every diagonal pair."""
    none = np.zeros(0, np.int32)
    us, vs = [none], [none]
    tl, tr, bl, br = class_map[:-1, :-1], class_map[:-1, 1:], class_map[1:, :-1], class_map[1:, 1:]
    for a, b, c, d, (dxa, dxb) in ((tl, br, tr, bl, (0, 1)), (tr, bl, tl, br, (1, 0))):
        if a.size == 0:  # (a map of one row or column has no 2x2 block)
            break
        alone = cv2.bitwise_and(cv2.compare(a, c, cv2.CMP_NE), cv2.compare(a, d, cv2.CMP_NE))
        found = cv2.findNonZero(cv2.bitwise_and(cv2.compare(a, b, cv2.CMP_EQ), alone))
        if found is not None:
            x, y = np.asarray(found, np.intp).reshape(-1, 2).T
            us.append(at[y, x + dxa])
            vs.append(at[y + 1, x + dxb])
    for row in seams:
        (cols,) = np.nonzero(class_map[row - 1] == class_map[row])
        us.append(at[row - 1, cols])
        vs.append(at[row, cols])
    u, v = np.concatenate(us), np.concatenate(vs)
    apart = u != v  # (joined on the grid by a longer way)
    return u[apart], v[apart]


def union(n: int, u: NDArray[np.int32], v: NDArray[np.int32]) -> NDArray[np.int32]:
    """Each of labels ``0..n-1``'s root once the pairs ``(u, v)`` are joined: the least label of its set."""
    parent = np.arange(n, dtype=np.int32)
    while True:
        pu, pv = parent[u], parent[v]
        apart = pu != pv
        if not apart.any():
            return parent
        u, v, pu, pv = u[apart], v[apart], pu[apart], pv[apart]
        # each root points to a smaller one: no cycle, and the least of a set ends as its root
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
