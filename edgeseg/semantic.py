"""Semantic segmentation -> instances: connected components, then a marker flood to split touching objects.

This is the Sony AI Camera (IMX500) instance flow: the network gives a class map (or per-class scores), and
instances come from post-processing. :class:`SemanticParams` takes modlib's parameter names with modlib's
meaning, so values tuned for ``modlib.models.results.Segments.to_instance_segments`` carry over, and the
algorithm fixes what modlib 1.5 gets wrong:

- modlib's class mask is 0/1, so its ``unknown == 255`` band is never set and watershed floods nothing: each
  instance is only its eroded marker core. Here every pixel of the component goes to its nearest marker
  (the flood a watershed makes on a flat image, without its ridge pixels), so the instance masks partition
  the component exactly: no foreground pixel is lost.
- modlib runs the chain on the full frame per class and recomputes every mask with a full-frame comparison
  per label. Here each connected component is processed inside its own padded bounding box, and a component
  that cannot hold two objects (convex, fewer than two markers, or too small for two ``size_threshold``
  objects) skips the flood entirely.
- modlib normalizes the distance transform per class, so a small object in a frame with a big one of the
  same class loses its marker (and, in modlib, disappears). Here the threshold is relative to each
  component's own largest distance by default (``per_component=True``).
- modlib scores every instance 1.0. Given class probabilities or logits, the score here is the mean
  winning-class probability over the instance's pixels.
- modlib's oriented boxes are normalized by different frame sides before the angle is applied (wrong on
  non-square frames). Here they are fitted in pixel space (:func:`edgeseg.geometry.min_area_rect`).

Additions of ours: a component cut by the image edge is mirrored across it before its distance
transform, so cut objects keep markers of their true size; neighbouring seeds whose regions meet at a
distance close to their peaks (``saddle_ratio``) are merged, so a thin rod whose ridge dips is not split; a
round hole as wide as the ring around it is a bore, and marks its ring (overlapping washers have no neck, but
each has its bore); with ``rods``, straight rods that cross or meet in a T are told apart by line fitting.

Where the time goes, and why it is small: convex components without holes hold one object and skip all
of it (the distance transform of a convex set is concave: one marker); component masks are drawn from
the outline hierarchy, so there is no labelling pass over the frame; every pixel of a split component goes
to its nearest marker in one labelled distance transform on a half-resolution grid; boxes and oriented boxes
come from the regions' outline pixels only.

Coordinates follow :mod:`edgeseg.geometry`; instances are in the pixel frame of the input map.

:func:`explain_split` shows what the split saw (class map, distance relief, markers) beside its instances, so
a user tuning the parameters sees why two parts merged: one marker spans both, or the neck between them is
deeper than ``dist_threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.fields import meta as _m
from edgeseg.geometry import AxisAffine, canonical_obbs, min_area_rect
from edgeseg.instances import Instances
from edgeseg.validate import FieldError, check_fields

_PAD = 2  # zero frame around each component crop, in pixels
_EDGE_PAD = 48  # how far a component cut by the image edge is mirrored beyond it, in pixels
_Pads = tuple[int, int, int, int]
_MAX_CLASS_ID = 65535


@dataclass(frozen=True)
class SemanticParams:
    """Parameters of :func:`semantic_to_instances` (modlib's names and meaning, plus ours).

    modlib's (``Segments.to_instance_segments``; modlib has no defaults, these are ours):

    - ``erosion_kernel``: side of the square structuring element of the opening (2 iterations, as in modlib)
      applied to a component before its distance transform, and of the marker erosion. ``>= 1``.
    - ``erosion_iteration``: how many times the thresholded markers are eroded (0 = not at all). ``>= 0``.
    - ``dilate_kernel``, ``dilate_iteration``: in modlib, the opened mask dilated by these bounds the
      watershed flood ("sure background" lies outside it). Here the flood is bounded by the component
      itself, which is tighter: an instance never takes pixels outside its class region, so these two only
      keep modlib configurations valid and are checked like modlib's (kernel ``>= 1``, iterations ``>= 0``).
    - ``dist_threshold``: markers are the pixels whose distance to the component edge exceeds this fraction
      of the largest distance (per component or per class, see ``per_component``). In ``(0, 1]``.
    - ``size_threshold``: components and instances with fewer pixels are dropped. ``>= 0``.

    Ours:

    - ``per_component``: normalize the distance per connected component (default), so small objects keep
      their markers beside big ones; ``False`` normalizes per class, as modlib does.
    - ``saddle_ratio``: two neighbouring seeds are one object when the distance where their regions meet
      is at least this fraction of the smaller seed's peak distance: a neck between two objects dips well
      below the peaks, the jagged ridge of one thin rod does not. In ``(0, 1]``.
    - ``min_score``: instances scoring below this are dropped (scores exist only for probability inputs;
      class-map instances score 1.0). In ``[0, 1]``.
    - ``rods``: the objects are straight rods (bolts, pins, pencils) that may cross or meet in a T. A
      crossing has no neck, so no distance relief splits it; with ``rods``, a component without bores that
      straight bands of its own width explain is split into them, each pixel going to its nearest band (a
      rod seen on both sides of another that crosses it stays one instance, a bolt keeps its head); other
      components are split as usual. Off by default: other shapes (people, animals) are no rods.
    """

    erosion_kernel: int = field(default=3, metadata=_m("Opening/erosion kernel side (px).", ge=1, live=True))
    erosion_iteration: int = field(default=1, metadata=_m("Marker erosions.", ge=0, live=True))
    dilate_kernel: int = field(default=3, metadata=_m("modlib's dilation kernel.", ge=1, live=True))
    dilate_iteration: int = field(default=2, metadata=_m("modlib's dilations.", ge=0, live=True))
    dist_threshold: float = field(
        default=0.6,
        metadata=_m("Marker threshold, fraction of the peak distance.", gt=0, le=1, live=True, step=0.01),
    )
    size_threshold: int = field(
        default=20, metadata=_m("Smaller components/instances are dropped (px).", ge=0, live=True, step=1)
    )
    per_component: bool = field(default=True, metadata=_m("Normalize the distance per component.", live=True))
    saddle_ratio: float = field(
        default=0.8, metadata=_m("Seeds meeting this high are one object.", gt=0, le=1, live=True, step=0.01)
    )
    min_score: float = field(
        default=0.0, metadata=_m("Instances scoring below are dropped.", ge=0, le=1, live=True, step=0.01)
    )
    rods: bool = field(default=False, metadata=_m("Split crossing straight rods.", live=True))

    def __post_init__(self) -> None:
        # built in code (a bench's grid search), not only from a checked YAML section
        try:
            check_fields(self)
        except FieldError as e:
            raise e.under("SemanticParams.") from None


def semantic_to_instances(
    class_map_or_probs: NDArray[np.generic],
    params: SemanticParams = SemanticParams(),
    background: int = 255,
    *,
    logits: bool = False,
    channels_last: bool = False,
) -> Instances:
    """Split a semantic segmentation into instances.

    Args:
        class_map_or_probs: either
            - a class map ``(H, W)`` of any integer dtype, class ids ``0..65535``, ``background`` marking
              pixels of no class (modlib's convention is 255); every instance then scores 1.0, because a
              class map carries no confidence; or
            - per-class scores ``(C, H, W)`` float (``(H, W, C)`` with ``channels_last=True``), probabilities
              in ``[0, 1]`` or, with ``logits=True``, raw logits (softmax over C is applied). The class map
              is the per-pixel argmax, ``background`` is the index of the background channel, and an
              instance's score is the mean winning-class probability over its pixels.
        params: see :class:`SemanticParams`.
        background: background class id (class map) or channel index (scores).
        logits: the scores are logits, not probabilities. Said explicitly rather than guessed, because a
            confident probability map and a small-valued logit map can look alike.
        channels_last: the scores are ``(H, W, C)``.

    Returns:
        Instances in the input's pixel frame, class by class in increasing class id, components in
        OpenCV's scan order. Masks of one component's instances never overlap and cover the component.

    Raises:
        InputError: wrong dtype or rank, an empty (0-size) input, non-finite scores, probabilities outside
            ``[0, 1]``, or a background index outside the channels.
    """
    class_map, winning_prob = _class_map(class_map_or_probs, background, logits, channels_last)
    parts = _split_map(class_map, background, params)
    return _assemble(parts, winning_prob, params, class_map.shape)


def _split_map(
    class_map: NDArray[Any], background: int, params: SemanticParams, trace: _Trace | None = None
) -> list[_Part]:
    """Every class's instances (``trace``: also report what the split saw, for :func:`explain_split`)."""
    parts: list[_Part] = []
    for c in _classes(class_map, background):
        mask = class_map == c
        if mask.any():
            parts.extend(_split_class(mask, c, params, trace))
    return parts


def _assemble(
    parts: list[_Part],
    winning_prob: NDArray[np.float32] | None,
    params: SemanticParams,
    shape: tuple[int, ...],
) -> Instances:
    """The instances of ``parts`` that score at least ``min_score``."""
    h, w = int(shape[0]), int(shape[1])
    if not parts:
        return Instances.empty((h, w))
    scores = [1.0] * len(parts)
    if winning_prob is not None:
        scores = [
            float(winning_prob[p.y : p.y + p.mask.shape[0], p.x : p.x + p.mask.shape[1]][p.mask].mean())
            for p in parts
        ]
    keep = [i for i, s in enumerate(scores) if s >= params.min_score]
    if not keep:
        return Instances.empty((h, w))
    kept = [parts[i] for i in keep]
    # The crops are tight and their oriented boxes known, so the result is assembled directly rather than
    # through Instances.from_crops, which would trace every mask's outline again.
    boxes = np.array([(q.x, q.y, q.x + q.mask.shape[1], q.y + q.mask.shape[0]) for q in kept], np.int32)
    return Instances(
        image_shape=(h, w),
        class_id=np.array([q.class_id for q in kept], np.int32),
        score=np.array([scores[i] for i in keep], np.float32),
        xyxy=boxes.astype(np.float32),
        obb=canonical_obbs(np.array([q.rect for q in kept], np.float64)),
        area=np.array([q.area for q in kept], np.int64),
        mask_box=boxes,
        masks=tuple(q.mask for q in kept),
    )


@dataclass(frozen=True, eq=False)
class SplitView:
    """What :func:`semantic_to_instances` saw when it split a map, in the input's pixel frame.

    Attributes:
        class_map: ``(H, W)`` int32 class ids (the per-pixel argmax for scores); ``background`` marks pixels
            of no class.
        relief: ``(H, W)`` float32 in ``[0, 1]``: each component's distance relief (distance transform of its
            opened solid, bores filled, mirrored at the image edge) divided by the peak the markers are
            thresholded against: the component's own (``per_component``) or its class's. 0 outside the
            components (and where the opening removed a thin part). A component's maximum is 1 unless its
            peak lies in the mirror beyond the image edge; with per-class peaks, only the class's biggest
            component reaches 1 (components too small to hold two objects do not set the class's peak: theirs
            is clipped to 1).
        markers: ``(H, W)`` int32, 0 none, ``1..M`` the markers the flood starts from, after neighbouring
            seeds were merged (``saddle_ratio``): the pixels above ``threshold`` (eroded) and the bores, one
            label per final marker. A component that is not split (convex, too small to hold two kept
            objects, or a single marker) shows its seeds as one marker, computed the same way. A component
            that ``rods`` line fitting split shows its seeds labelled by the rod that holds them (the lines,
            not the markers, made that split). Markers of parts below ``size_threshold`` are kept, so ``M``
            can exceed the number of instances.
        instances: what :func:`semantic_to_instances` returns for the same input and parameters.
        threshold: the ``dist_threshold`` the markers were cut at (a level of ``relief``).
        background: the background class id (class map) or channel (scores).
        to_frame: maps these pixels onto the frame they came from (identity here;
            :meth:`edgeseg.heads.semantic.SemanticHead.explain` sets it for its work grid).
    """

    class_map: NDArray[np.int32]
    relief: NDArray[np.float32]
    markers: NDArray[np.int32]
    instances: Instances
    threshold: float
    background: int
    to_frame: AxisAffine = field(default_factory=AxisAffine)

    @property
    def n_markers(self) -> int:
        return int(self.markers.max(initial=0))


def explain_split(
    class_map_or_probs: NDArray[np.generic],
    params: SemanticParams = SemanticParams(),
    background: int = 255,
    *,
    logits: bool = False,
    channels_last: bool = False,
) -> SplitView:
    """The class map, distance relief and markers behind :func:`semantic_to_instances`' result.

    Same arguments and errors as :func:`semantic_to_instances`; see :class:`SplitView`. The instances come
    from the same split that reports the relief and markers, so they are what ``semantic_to_instances``
    returns for the same input.
    """
    class_map, winning_prob = _class_map(class_map_or_probs, background, logits, channels_last)
    trace = _Trace(np.zeros(class_map.shape, np.float32), np.zeros(class_map.shape, np.int32))
    parts = _split_map(class_map, background, params, trace)
    instances = _assemble(parts, winning_prob, params, class_map.shape)
    return SplitView(
        class_map=class_map.astype(np.int32),
        relief=trace.relief,
        markers=trace.markers,
        instances=instances,
        threshold=params.dist_threshold,
        background=int(background),
    )


@dataclass
class _Trace:
    """Frame-sized arrays :func:`_split_class` fills for :func:`explain_split` (see :class:`SplitView`)."""

    relief: NDArray[np.float32]
    markers: NDArray[np.int32]
    count: int = 0  # markers labelled so far

    def add(
        self,
        x: int,
        y: int,
        tight: NDArray[np.bool_],
        relief: _Relief,
        top: float,
        seeds: NDArray[np.int32] | None,
        pieces: list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] | None,
        by_rods: bool,
    ) -> None:
        """One component at frame pixel ``(x, y)``: its relief normalized by ``top``, its labelled ``seeds``
        (``relief``'s padded frame) relabelled by the rods ``pieces`` (``tight``'s frame) when ``by_rods``,
        as one marker when ``pieces`` is None (not split)."""
        ch, cw = tight.shape
        t, _, left, _ = relief.pads
        if top > 0:
            norm = np.minimum(relief.dist[t : t + ch, left : left + cw] / top, 1.0)
            self.relief[y : y + ch, x : x + cw][tight] = norm[tight]
        if seeds is None:
            return
        lab = seeds[t : t + ch, left : left + cw]
        if by_rods and pieces is not None:
            on = lab > 0
            lab = np.zeros_like(lab)
            for k, (dx, dy, piece, _) in enumerate(pieces, 1):
                ph, pw = piece.shape
                lab[dy : dy + ph, dx : dx + pw][piece & on[dy : dy + ph, dx : dx + pw]] = k
        elif pieces is None:
            lab = (lab > 0).astype(np.int32)
        values = np.unique(lab[lab > 0])
        if not len(values):
            return
        lut = np.zeros(int(values[-1]) + 1, np.int32)
        lut[values] = np.arange(self.count + 1, self.count + 1 + len(values), dtype=np.int32)
        on = lab > 0
        self.markers[y : y + ch, x : x + cw][on] = lut[lab[on]]
        self.count += len(values)


def _classes(class_map: NDArray[Any], background: int) -> list[int]:
    """Candidate class ids of a map, background excluded (some may be absent: callers check)."""
    lo, hi = (int(v) for v in cv2.minMaxLoc(class_map, (class_map != background).view(np.uint8))[:2])
    if hi - lo >= _SCAN_CLASSES:  # a histogram pays off only over a wide range of ids
        counts = np.bincount(class_map.ravel(), minlength=hi + 1)
        return [int(c) for c in np.flatnonzero(counts) if c != background]
    return [c for c in range(lo, hi + 1) if c != background]


_SCAN_CLASSES = 24  # below this many ids between a map's smallest and largest, try each one


@dataclass(frozen=True)
class _Part:
    """One instance: a tight bool crop with its ``[0, 0]`` at frame pixel ``(x, y)``, its area and its
    minimum-area rectangle as OpenCV gives it (turned into oriented boxes all at once at the end)."""

    class_id: int
    x: int
    y: int
    mask: NDArray[np.bool_]
    area: int
    rect: tuple[float, ...]


def _class_map(
    data: NDArray[np.generic], background: int, logits: bool, channels_last: bool
) -> tuple[NDArray[Any], NDArray[np.float32] | None]:
    """Validate the input; return the class map and, for score inputs, the winning-class probability."""
    arr = np.asarray(data)
    if isinstance(background, bool) or not isinstance(background, (int, np.integer)) or background < 0:
        raise InputError(f"semantic_to_instances: background must be an integer >= 0, got {background!r}")
    background = int(background)
    if arr.ndim == 2:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(
                f"semantic_to_instances: a (H, W) class map must have an integer dtype, got {arr.dtype}"
                " (pass per-class scores as (C, H, W))"
            )
        if arr.size == 0:
            raise InputError(f"semantic_to_instances: the class map is empty, shape {arr.shape}")
        if background > _MAX_CLASS_ID:
            raise InputError(f"semantic_to_instances: background must be <= {_MAX_CLASS_ID}: {background}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > _MAX_CLASS_ID:
            raise InputError(
                f"semantic_to_instances: class ids must be in 0..{_MAX_CLASS_ID}, got values {lo}..{hi}"
            )
        cmap = arr if arr.dtype in (np.uint8, np.uint16) else arr.astype(np.uint16 if hi > 255 else np.uint8)
        return np.asarray(cmap), None
    if arr.ndim != 3:
        raise InputError(
            f"semantic_to_instances: expected a (H, W) class map or (C, H, W) scores, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"semantic_to_instances: per-class scores must be floating point, got {arr.dtype}")
    scores = np.moveaxis(arr, -1, 0) if channels_last else arr
    n_classes = scores.shape[0]
    if scores.size == 0:
        raise InputError(f"semantic_to_instances: the scores are empty, shape {arr.shape}")
    if n_classes > _MAX_CLASS_ID + 1:
        raise InputError(f"semantic_to_instances: at most {_MAX_CLASS_ID + 1} classes, got {n_classes}")
    if background >= n_classes:
        raise InputError(
            f"semantic_to_instances: background channel {background} is outside the {n_classes} channels"
            " (with scores, background is the index of the background channel)"
        )
    scores = scores.astype(np.float32, copy=False)
    if not np.isfinite(scores).all():
        raise InputError("semantic_to_instances: the per-class scores hold NaN or infinity")
    cmap, best = _argmax_channels(scores)
    if logits:
        # the winning class's softmax probability, without materializing the whole softmax
        total = np.zeros_like(best)
        for channel in scores:
            total += np.exp(channel - best)
        prob = 1.0 / total
    else:
        if float(scores.min()) < -1e-6 or float(scores.max()) > 1 + 1e-6:
            raise InputError(
                "semantic_to_instances: probabilities must lie in [0, 1]"
                f" (got {float(scores.min()):.3g}..{float(scores.max()):.3g}); pass logits=True for logits"
            )
        prob = best
    return cmap, prob


def _argmax_channels(scores: NDArray[np.float32]) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """Per-pixel argmax and max over the first axis of ``(C, H, W)``, first maximum winning on ties.

    One contiguous pass per channel: several times faster than ``np.argmax(axis=0)``, which walks the
    channels with a stride of ``H * W``.
    """
    cmap = np.zeros(scores.shape[1:], np.uint8 if len(scores) <= 256 else np.uint16)
    best = scores[0].copy()
    for c in range(1, len(scores)):
        better = scores[c] > best
        cmap[better] = c
        np.maximum(best, scores[c], out=best)
    return cmap, best


@dataclass(frozen=True)
class _Relief:
    """What the split of one component works on, laid out as its crop padded by ``pads``.

    ``solid`` is the component with its bores filled (the split is made on it, the masks are cut back to
    the component), ``dist`` the distance transform of the opened solid (mirrored where the component meets
    the image edge) and ``bores`` the filled bores, or None.
    """

    pads: _Pads
    solid: NDArray[np.uint8]
    dist: NDArray[np.float32]
    bores: NDArray[np.bool_] | None
    encloses_bore: bool  # within the image (bores can also appear in the mirror beyond its edge)


def _split_class(
    mask: NDArray[np.bool_], class_id: int, p: SemanticParams, trace: _Trace | None = None
) -> list[_Part]:
    """Instances of one class: its connected components, each split where it holds several objects.

    With ``trace``, each component's relief and markers are also drawn into it (see :func:`explain_split`).
    """
    h, w = mask.shape
    m8 = mask.view(np.uint8)
    # The outlines of the components and of their holes, two levels: drawing a component's outline filled,
    # then its holes' emptied (their outlines, the component's own pixels, drawn again) gives its exact
    # mask in its box, with no labelling pass over the whole frame.
    contours, hierarchy = cv2.findContours(m8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    kernel = np.ones((p.erosion_kernel, p.erosion_kernel), np.uint8)
    comps: list[tuple[int, int, NDArray[np.bool_], int, NDArray[np.int32], _Relief | None]] = []
    shown: list[_Relief] = []  # with trace: every component's relief, also where the split skips it
    links = hierarchy[0].tolist() if hierarchy is not None else []
    for outline, (_, _, first_hole, parent) in zip(contours, links, strict=True):
        if parent != -1:
            continue
        contour: NDArray[np.int32] = np.asarray(outline, np.int32)
        x, y, cw, ch = cv2.boundingRect(contour)
        if cw * ch < p.size_threshold:
            continue
        drawn = np.zeros((ch, cw), np.uint8)
        cv2.drawContours(drawn, [contour], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
        hole_width = 0  # the widest hole's narrower side, in pixels (a bore's diameter is at most that)
        k = first_hole
        while k != -1:
            cv2.drawContours(drawn, contours, k, 0, thickness=cv2.FILLED, offset=(-x, -y))
            cv2.drawContours(drawn, contours, k, 1, thickness=1, offset=(-x, -y))
            _, _, hw, hh = cv2.boundingRect(contours[k])
            hole_width = max(hole_width, min(hw, hh))
            k = links[k][0]
        crop = mask[y : y + ch, x : x + cw]
        tight: NDArray[np.bool_] = drawn.view(bool) & crop
        area = int(np.count_nonzero(tight))
        if area < p.size_threshold:
            continue
        relief = None
        if area >= 2 * max(p.size_threshold, 1):  # else it cannot hold two objects that would be kept
            edge = min(ch, cw, _EDGE_PAD)
            sides = (edge * (y == 0), edge * (y + ch == h), edge * (x == 0), edge * (x + cw == w))
            # a mirrored component can enclose holes of its own: their width is unknown
            hole_width = _EDGE_PAD * 4 if any(sides) else hole_width
            relief = _relief(tight, ~crop, contour, (x, y), sides, hole_width, kernel, p.per_component)
        if trace is not None:
            if relief is None:
                edge = min(ch, cw, _EDGE_PAD)
                sides = (edge * (y == 0), edge * (y + ch == h), edge * (x == 0), edge * (x + cw == w))
                hole_width = _EDGE_PAD * 4 if any(sides) else hole_width
            view = relief or _relief(tight, ~crop, contour, (x, y), sides, hole_width, kernel, False)
            assert view is not None  # may_skip is off
            shown.append(view)
        comps.append((x, y, tight, area, contour, relief))
    class_max = max((float(r.dist.max()) for *_, r in comps if r is not None), default=0.0)
    parts: list[_Part] = []
    for k, (x, y, tight, area, contour, relief) in enumerate(comps):
        pieces = None
        seeds: list[NDArray[np.int32]] | None = None if trace is None else []
        by_rods = False
        if relief is not None:
            if p.rods and not relief.encloses_bore:  # a ring's bore is no gap between rods
                pieces = _piece_rods(_whole(x, y, tight, contour))
                pieces = pieces if len(pieces) > 1 else None
                by_rods = pieces is not None
            if pieces is None:
                pieces = _split(tight, relief, class_max, kernel, p, seeds)
                if p.rods:  # the relief's parts may still be rods that cross
                    split = pieces
                    pieces = [r for q in pieces or [_whole(x, y, tight, contour)] for r in _piece_rods(q)]
                    by_rods = len(pieces) != len(split or [None])
                    pieces = pieces if split is not None or by_rods else None
        if trace is not None and seeds is not None:
            view = shown[k]
            own = float(view.dist.max())
            top = own if p.per_component or (relief is None and class_max <= 0) else class_max
            if not seeds:  # the split did not look at its markers: find them the same way, for the view
                _split(tight, view, top, kernel, p, seeds)
            trace.add(x, y, tight, view, top, seeds[0] if seeds else None, pieces, by_rods)
        for dx, dy, piece, rect in pieces or [_whole(x, y, tight, contour)]:  # rect: in the crop's frame
            piece_area = area if piece is tight else int(np.count_nonzero(piece))
            if piece_area >= p.size_threshold:
                parts.append(
                    _Part(class_id, x + dx, y + dy, piece, piece_area, (rect[0] + x, rect[1] + y, *rect[2:]))
                )
    return parts


def _rods(mask: NDArray[np.bool_]) -> list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] | None:
    """A component made of two or more straight rods, one crop ``(x, y, mask, rect)`` per rod in ``mask``'s
    frame; None when it is not that.

    The rods' half-width r is read from the distance transform (across a band its values spread evenly
    over ``[0, r]``); the centre band (distance >= r/2) is explained by straight lines, strongest first
    (Hough), each taking the centre pixels within r of it, while a line runs at least four widths. Every
    pixel goes to its nearest line; if more than a tenth lie farther than a rod's head reaches from all of
    them, something else is there, and the component is left to the distance relief.
    """
    min_len = 16.0 * _ROD_MIN_HALF_WIDTH
    if math.hypot(*mask.shape) < min_len:
        return None
    m8 = np.asarray(cv2.copyMakeBorder(mask.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0))
    dist = np.asarray(cv2.distanceTransform(m8, cv2.DIST_L2, 3), np.float32)[1:-1, 1:-1]
    half = float(np.percentile(dist[mask], 75)) / 0.75
    min_len = 8.0 * half
    if half < _ROD_MIN_HALF_WIDTH or math.hypot(*mask.shape) < min_len:
        return None
    band = (dist >= 0.5 * half).view(np.uint8).copy()
    segments: list[tuple[float, float, float, float]] = []
    while len(segments) < _MAX_RODS:
        lines = cv2.HoughLines(band, 1, np.pi / 180, int(min_len))
        if lines is None:
            break
        rho, theta = (float(v) for v in lines[0, 0])
        c, s = math.cos(theta), math.sin(theta)
        by, bx = np.nonzero(band)
        on = np.abs(bx * c + by * s - rho) <= half
        along = by[on] * c - bx[on] * s
        extent = float(along.max() - along.min()) if len(along) else 0.0
        if extent < min_len or len(along) < 0.6 * extent * half:  # short, or no solid band (ring tangents)
            break
        t0, t1 = float(along.min()), float(along.max())
        segments.append((rho * c - t0 * s, rho * s + t0 * c, rho * c - t1 * s, rho * s + t1 * c))
        band[by[on], bx[on]] = 0
    if len(segments) < 2:  # one rod (a bolt with its head, say) is for the distance relief to judge
        return None
    ys, xs = np.nonzero(mask)
    px, py = xs.astype(np.float32), ys.astype(np.float32)
    d = np.stack([_segment_distance(px, py, *q) for q in segments])
    if float(np.mean(d.min(axis=0) <= 2.5 * half + 1.0)) < 0.9:
        return None
    nearest = d.argmin(axis=0)
    out = []
    for k in range(len(segments)):
        sel = nearest == k
        if not sel.any():
            continue
        qx, qy = xs[sel], ys[sel]
        x0, y0 = int(qx.min()), int(qy.min())
        rod = np.zeros((int(qy.max()) - y0 + 1, int(qx.max()) - x0 + 1), bool)
        rod[qy - y0, qx - x0] = True
        out.append((x0, y0, rod, min_area_rect(np.stack([qx, qy], axis=1) + 0.5)))
    return out if len(out) > 1 else None  # a line can win no pixel from its neighbours


def _whole(
    x: int, y: int, tight: NDArray[np.bool_], contour: NDArray[np.int32]
) -> tuple[int, int, NDArray[np.bool_], tuple[float, ...]]:
    """A component as one crop of its own frame; its oriented box comes from its outer contour."""
    return (0, 0, tight, min_area_rect(contour.reshape(-1, 2) - (x, y) + 0.5))


def _piece_rods(
    piece: tuple[int, int, NDArray[np.bool_], tuple[float, ...]],
) -> list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]]:
    """The rods of one crop ``(x, y, mask, rect)`` as crops in the same frame, or the crop itself.

    Straight rods that cross or meet fill less than half of their oriented box; one rod, or anything
    fuller, is left as it is.
    """
    x, y, mask, rect = piece
    if np.count_nonzero(mask) >= 0.5 * rect[2] * rect[3]:
        return [piece]
    rods = _rods(mask)
    if rods is None:
        return [piece]
    return [(x + rx, y + ry, m, (r[0] + x, r[1] + y, *r[2:])) for rx, ry, m, r in rods]


def _segment_distance(
    px: NDArray[np.float32], py: NDArray[np.float32], x0: float, y0: float, x1: float, y1: float
) -> NDArray[np.float32]:
    """Distance of points to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.asarray(np.hypot(px - x0 - t * dx, py - y0 - t * dy), np.float32)


_ROD_MIN_HALF_WIDTH = 1.5  # pixels: thinner bands are no rods a distance transform can measure
_MAX_RODS = 6
_BORE_ROUNDNESS = 2.5  # largest area of a bore, in discs of its inscribed radius


def _relief(
    tight: NDArray[np.bool_],
    free: NDArray[np.bool_],
    contour: NDArray[np.int32],
    origin: tuple[int, int],
    sides: tuple[int, int, int, int],
    hole_width: int,
    kernel: NDArray[np.uint8],
    may_skip: bool,
) -> _Relief | None:
    """Prepare a component's split; None when it is convex without holes and ``may_skip``.

    (The distance transform of a convex set is concave, so its markers are one connected region: it holds
    one object, and skipping it is most of the saving on scenes of separate objects. Not with distances
    normalized per class, where every component's distance counts.)

    On ``sides`` (top, bottom, left, right) at the image edge the component is first mirrored: an object cut
    by the frame then gets a distance relief like that of a whole object (beyond-the-image as foreground,
    OpenCV's default, would turn a row of cut objects into one half-plane without necks; as background, it
    would shrink them to slivers). ``free`` marks the crop's pixels of no component; ``hole_width`` bounds
    the width of the component's holes (0: it has none).
    """
    if may_skip and not hole_width and _convex(contour):
        return None
    pads = (sides[0] + _PAD, sides[1] + _PAD, sides[2] + _PAD, sides[3] + _PAD)
    dist = _distance(tight, sides, kernel)
    holes = None
    if hole_width >= float(dist.max()):  # else no hole is wide enough to be a bore (see _bores)
        holes = _holes(tight, free, contour, origin, sides)
    bores = None if holes is None else _bores(holes, float(dist.max()))
    solid = tight
    encloses_bore = bores is not None
    if bores is not None and any(sides):
        inner = _holes(tight, free, contour, origin, (0, 0, 0, 0))
        encloses_bore = inner is not None and _bores(inner, float(dist.max())) is not None
    if bores is not None:
        top, _, left, _ = sides
        solid = tight | bores[top : top + tight.shape[0], left : left + tight.shape[1]]
        dist = _distance(solid, sides, kernel)
        bores = np.asarray(
            cv2.copyMakeBorder(bores.view(np.uint8), *(_PAD,) * 4, cv2.BORDER_CONSTANT, value=0)
        )
        bores = bores.view(bool)
    comp = np.asarray(cv2.copyMakeBorder(solid.view(np.uint8), *pads, cv2.BORDER_CONSTANT, value=0), np.uint8)
    if bores is not None:
        bores &= comp.view(bool)  # mirrored bores beyond the image edge mark nothing
    return _Relief(pads, comp, dist, bores, encloses_bore)


def _convex(contour: NDArray[np.int32]) -> bool:
    """The outline has no concavity deeper than a pixel's staircase."""
    if len(contour) < 4:
        return True
    try:
        defects = cv2.convexityDefects(contour, cv2.convexHull(contour, returnPoints=False))
    except cv2.error:  # OpenCV refuses some self-touching outlines; they are not convex anyway
        return False
    return defects is None or int(np.asarray(defects).reshape(-1, 4)[:, 3].max()) <= _CONVEX_DEPTH * 256


def _distance(
    comp: NDArray[np.bool_], sides: tuple[int, int, int, int], kernel: NDArray[np.uint8]
) -> NDArray[np.float32]:
    """Distance transform of a component crop, mirrored by ``sides`` where it meets the image edge, framed
    by ``_PAD`` zeros and opened (twice, as modlib does) first."""
    mirrored = cv2.copyMakeBorder(comp.view(np.uint8), *sides, cv2.BORDER_REFLECT)
    padded = cv2.copyMakeBorder(mirrored, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=0)
    opened = cv2.morphologyEx(padded, cv2.MORPH_OPEN, kernel, iterations=2)
    return np.asarray(cv2.distanceTransform(opened, cv2.DIST_L2, 3), np.float32)


def _holes(
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
        shape, outlines, offset = tight.view(np.uint8), (contour,), (-origin[0], -origin[1])
    drawn = np.zeros(shape.shape, np.uint8)
    cv2.drawContours(drawn, list(outlines), -1, 1, thickness=-1, offset=offset)
    holes = drawn.view(bool) & free & (shape == 0)
    return holes if holes.any() else None


def _bores(holes: NDArray[np.bool_], thickness: float) -> NDArray[np.bool_] | None:
    """The holes of a component that are an object's bore (a washer's or a nut's); None if there are none.

    A ring's distance relief has no single peak, so its seed would break into pieces around the ring; with
    the bore filled it is one disc, and the bore itself marks the object (a ring has one bore). A bore is as
    wide as the ring around it and round, the gap enclosed between touching objects is a thin cusp or, between
    crossing rods, a polygon: a hole counts as a bore when its inscribed radius r reaches half of
    ``thickness``, the component's largest distance to its edge, and its area is at most 2.5 pi r^2 (a disc
    is 1, a hexagon 1.1, a half-covered disc 2, a triangle 5). Filling the gaps too would fuse the objects
    around them.
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
            cv2.copyMakeBorder(holes[y : y + h, x : x + w].view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT),
            np.uint8,
        )
        radius = float(cv2.distanceTransform(own, cv2.DIST_L2, 3).max())
        if radius >= min_radius and np.count_nonzero(own) <= _BORE_ROUNDNESS * np.pi * radius**2:
            bores[y : y + h, x : x + w] |= own[1:-1, 1:-1].view(bool)
    return bores if bores.any() else None


def _split(
    tight: NDArray[np.bool_],
    relief: _Relief,
    class_max: float,
    kernel: NDArray[np.uint8],
    p: SemanticParams,
    seeds_out: list[NDArray[np.int32]] | None = None,
) -> list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] | None:
    """Split one component into tight crops ``(x, y, mask, rect)`` in ``tight``'s frame; None if it is one.

    Markers are the bores and the distance peaks (``dist > dist_threshold * top``, eroded) that hold no bore;
    every pixel of the solid component goes to its nearest marker, and neighbouring regions without a neck
    between them are merged again. With ``seeds_out``, the markers (``relief``'s padded frame, labelled
    1..n after merging; all 1 when the component is one) are appended to it, unless there are none.
    """
    dist, comp = relief.dist, relief.solid
    top = float(dist.max()) if p.per_component else class_max
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
        seeds = (~own_bore[seed_lab] | relief.bores).view(np.uint8)
    # The markers' regions are found on a half-resolution grid (see _nearest_marker); the markers are
    # max-pooled onto it, so none vanishes (two within a pixel of each other fuse: no neck lies between them)
    pooled = _pool(seeds)
    count, _ = cv2.connectedComponents(pooled, connectivity=8, ltype=cv2.CV_32S)
    n = int(count) - 1
    if n <= 1:
        if seeds_out is not None and n == 1:
            seeds_out.append(seeds.astype(np.int32))
        return None
    near = _nearest_marker(pooled)
    h, w = comp.shape
    full = cv2.resize(near, (2 * near.shape[1], 2 * near.shape[0]), interpolation=cv2.INTER_NEAREST)
    lab = np.ascontiguousarray(full[:h, :w], np.uint16)
    lab *= comp  # 0 = outside the component, 1..n = the markers' regions
    hi = np.asarray(cv2.dilate(lab, _BOX), np.uint16)
    lo = np.asarray(cv2.erode(lab, _BOX), np.uint16)
    # every pixel with a neighbour of another label: the outlines of all regions, where all the rest happens
    edge = np.flatnonzero(hi != lo)
    edge_lab, edge_lo, edge_hi = lab.ravel()[edge], lo.ravel()[edge], hi.ravel()[edge]
    on = pooled.view(bool)
    peak = np.zeros(n + 1, np.float32)
    np.maximum.at(peak, near[on], _pool(dist)[on])
    bore_region = np.zeros(n + 1, bool)
    if relief.bores is not None:
        bore_region[lab[relief.bores]] = True
    lut = _merge_shallow(edge_lo, edge_hi, dist.ravel()[edge], peak, bore_region, p.saddle_ratio)
    if lut is not None:
        n = int(lut.max())
        if n <= 1:
            if seeds_out is not None:
                seeds_out.append(seeds.astype(np.int32))
            return None
        lab, edge_lab = lut[lab], lut[edge_lab]
    if seeds_out is not None:
        seeds_out.append((lab * seeds).astype(np.int32))
    t, _, left, _ = relief.pads
    out: list[tuple[int, int, NDArray[np.bool_], tuple[float, ...]]] = []
    for i, (x0, y0, x1, y1, outline) in enumerate(_outlines(edge, edge_lab, w, n)):
        crop = (lab[y0:y1, x0:x1] == i + 1) & tight[y0 - t : y1 - t, x0 - left : x1 - left]
        out.append((x0 - left, y0 - t, crop, min_area_rect(outline - (left, t))))
    return out


def _outlines(
    edge: NDArray[np.intp], edge_lab: NDArray[np.uint16], width: int, n: int
) -> list[tuple[int, int, int, int, NDArray[np.float32]]]:
    """Box ``(x0, y0, x1, y1)`` and outline points of regions 1..n, from the flat indices ``edge`` (ascending)
    of pixels on outlines in an image ``width`` wide and their labels ``edge_lab`` (0: outside).

    A region's box and oriented box depend only on its convex hull, so each row's leftmost and rightmost
    outline pixel stand for the region: no per-region scans of the crop, no contour tracing. (After a merge
    some of these pixels lie inside the merged region; being its pixels, they change neither.)
    """
    inside = edge_lab > 0
    ys, xs = np.divmod(edge[inside], width)
    height = int(ys.max()) + 1
    key = (edge_lab[inside].astype(np.int64) - 1) * height + ys
    order = np.argsort(key, kind="stable")  # indices ascend, so x stays sorted within each (region, row)
    key, xs = key[order], xs[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    ends = np.concatenate((starts[1:], [len(key)])) - 1
    region, row = np.divmod(key[starts], height)
    ends_pts = (
        np.concatenate([np.stack([xs[starts], row], axis=1), np.stack([xs[ends], row], axis=1)], axis=1)
        .reshape(-1, 2)
        .astype(np.float32)
        + 0.5
    )
    bounds = np.searchsorted(region, np.arange(n + 1))
    out = []
    for i in range(n):
        a, b = bounds[i], bounds[i + 1]
        if a == b:
            continue
        pts = ends_pts[2 * a : 2 * b]
        x0, x1 = int(xs[starts[a:b]].min()), int(xs[ends[a:b]].max()) + 1
        out.append((x0, int(row[a]), x1, int(row[b - 1]) + 1, pts))
    return out


def _pool(image: NDArray[Any]) -> NDArray[Any]:
    """2x2 max-pooling (odd sizes: the last row or column pooled with zeros)."""
    pooled = cv2.dilate(image, _POOL, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return np.ascontiguousarray(pooled[::2, ::2])


def _nearest_marker(markers: NDArray[np.uint8]) -> NDArray[np.uint16]:
    """Label every pixel with its nearest marker region (8-connected regions of ``markers``, labelled 1..n).

    This runs on the half-resolution grid: it is the costliest step on a large cluster, and a grid twice
    as coarse moves the boundaries between regions by a pixel at most.
    """
    _, near = cv2.distanceTransformWithLabels(1 - markers, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP)
    return np.asarray(near, np.uint16)


_BOX = np.ones((3, 3), np.uint8)
_POOL = np.ones((2, 2), np.uint8)
_CONVEX_DEPTH = 1.0  # deepest concavity, in pixels, that a convex object's digitized outline shows


def _merge_shallow(
    lo: NDArray[np.uint16],
    hi: NDArray[np.uint16],
    dist: NDArray[np.float32],
    peak: NDArray[np.float32],
    bore: NDArray[np.bool_],
    saddle_ratio: float,
) -> NDArray[np.uint16] | None:
    """Merge neighbouring regions not separated by a neck: a relabelling table (0 -> 0, regions 1..n to
    1..K), or None when nothing merges.

    Regions 1..n have the largest distances ``peak[1..n]``; ``lo``, ``hi`` and ``dist`` are, on the pixels
    of all the outlines, the 3x3 minimum and maximum label (0 outside the component) and the distance. Two
    regions are one object when the distance on their common border (the saddle) reaches ``saddle_ratio``
    of the smaller of their two peaks: a thin rod's ridge dips a little where its jagged edge comes closer,
    which splits its seed, but that is no neck between two objects. Two regions marked by bores
    (``bore[1..n]``) stay apart: each bore is its own object's.
    """
    n = len(peak) - 1
    border = lo > 0  # pixels of the component with a neighbour of another region
    if not border.any():
        return None
    key = (lo[border].astype(np.int64) - 1) * n + (hi[border].astype(np.int64) - 1)
    order = np.argsort(key, kind="stable")
    key, d = key[order], dist[border][order]
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    saddle = np.maximum.reduceat(d, first)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = False
    for k, s in zip(key[first].tolist(), saddle.tolist(), strict=True):
        i, j = divmod(k, n)
        if bore[i + 1] and bore[j + 1]:
            continue
        if s >= saddle_ratio * min(peak[i + 1], peak[j + 1]):
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
                merged = True
    if not merged:
        return None
    roots = np.array([root(i) for i in range(n)])
    _, new = np.unique(roots, return_inverse=True)
    lut = np.zeros(n + 1, np.uint16)
    lut[1:] = new + 1
    return lut
