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
  component's own largest distance by default (``per_component=True``), and within a component a small
  object touching a big one keeps its own marker too: the local peak of its relief, below the big one's
  threshold. A pixel goes to the marker nearest once each marker is pushed out by its height, so the
  small object's region ends at the neck, not where the big marker's plain nearness would put it.
- modlib scores every instance 1.0. Given class probabilities or logits, the score here is the mean
  winning-class probability over the instance's pixels.
- modlib's oriented boxes are normalized by different frame sides before the angle is applied (wrong on
  non-square frames). Here they are fitted in pixel space (:func:`edgeseg.geometry.min_area_rect`).

Additions of ours: a component cut by the image edge is mirrored across it before its distance
transform, so cut objects keep markers of their true size; neighbouring seeds whose regions meet at a
distance close to their peaks (``saddle_ratio``) are merged, so a thin rod whose ridge dips is not split; a
round hole as wide as the ring around it is a bore, and marks its ring (overlapping washers have no neck, but
each has its bore); with ``rods``, straight rods that cross or meet in a T are told apart by line fitting.

A model may also draw where parts touch, as a class of its own (``contact``; the boundary class of the
three-class U-Nets of cell segmentation): touching parts are then apart in the map, so each component is one
instance and nothing is split (a labelling pass per class), and the contact pixels join the parts beside them.
Or it may give a contact map beside the class map (``touching``), its pixels keeping their class: a component
is then split only at its cores, the pixels off the map (:mod:`edgeseg.semantic.cores`).

Where the time goes, and why it is bounded: a class's components, with their areas and boxes, come from
its mask's outlines (a scene of objects) or from a labelling pass (noise, speckle, hundreds of small blobs;
the passes of speckled masks side by side on the cores), and a map of many such classes, each spread over
the frame, is labelled in one pass for all of them (:mod:`edgeseg.semantic.labelling`; small blobs of 21
classes, ``scripts/bench_postprocess.py``'s ``hostile_many_classes``: 19.0-19.8x one labelling pass of the
whole map, where a pass per class took 54-69x; modlib is 7.9-8.2x slower); one erosion of the class mask
tells which components keep a pixel after the opening;
only components that could hold two kept objects and keep such a pixel are looked at one by one, inside
their own box (a component left whole costs a crop and an oriented box). Convex components with at most
one hole hold one object and skip the rest (the distance transform of a convex set is concave: one marker;
objects that meet leave a dent, and two rings have two bores); every
pixel of a split component goes to its nearest marker in one labelled distance transform on a
half-resolution grid; boxes and oriented boxes come from the regions' outline pixels only. A map of noise
or speckle has thousands of candidates, so each map's split has a budget (components and box pixels,
largest components first; a smaller budget when a map has more candidates than a scene of objects, such
as random blobs; with ``rods``, the line fits are paid from the same pixels, after the reliefs); what it
cannot look at stays whole and is counted (:attr:`SplitView.unsplit`, and a log line at most once a
minute). At a contact map the same budget pays for the components whose cores are looked at (largest
first; a frame's box pixels, as a look there costs fewer passes), and a piece gets its oriented box only
once it is among the ``max_instances`` kept. A component with more holes than any object has (speckle,
counted its holes from 2x2 patterns, without labelling them) stays whole and is counted too. A map keeps
at most ``max_instances`` instances, of its largest components: the others are never fitted, and a labelled
class crops only those in that cut, once every class is labelled (a map of noise has thousands of
components, each an instance to build, publish and track); what is left out is counted
(:attr:`SplitView.dropped`, the same log line).

Coordinates follow :mod:`edgeseg.geometry`; instances are in the pixel frame of the input map.

:func:`explain_split` shows what the split saw (class map, distance relief, markers) beside its instances, so
a user tuning the parameters sees why two parts merged: one marker spans both, or the neck between them is
deeper than ``dist_threshold``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError
from edgeseg.fields import meta as _m
from edgeseg.geometry import AxisAffine, canonical_obbs
from edgeseg.instances import Instances
from edgeseg.logtally import LogTally
from edgeseg.semantic.components import (
    Budget,
    Found,
    Labelled,
    Part,
    find_components,
    kernel_of,
    largest,
    split_class,
    with_boxes,
)
from edgeseg.semantic.contact import grow_into
from edgeseg.semantic.cores import contact_cores, split_by_cores
from edgeseg.semantic.labelling import classes_of
from edgeseg.semantic.relief import Relief
from edgeseg.semantic.scores import channels_first, read_scores
from edgeseg.validate import FieldError, check_fields

_MAX_CLASS_ID = 65535
# The winning-class probability of every pixel of a map, or None, as a call: the scores' is made on a helper
# thread while the split runs (edgeseg.semantic.scores), and raises there for scores that hold no
# probabilities or logits.
Probability = Callable[[], NDArray[np.float32] | None]
# The split looks at no more components, and boxes of no more frames' pixels, per map: three times the
# components a scene of objects needs (the bench's scenes split at most 11 a map), and a seventh more box
# pixels than the most the bench's scenes take (0.74 of a frame: big touching discs; the demo model's maps
# 0.25, and their line fits ~0.05 more). A split costs a few passes over its box, so the pixels bound a map
# of large ragged blobs (at a whole frame they let those take 20-22x one connected-components pass, at 0.85
# 17-20x; with rods, before the fits were paid from them, 23-33x); a component whose box is most of the
# frame (one class everywhere, one huge ragged blob) is kept whole, and counted.
_SPLIT_COMPONENTS = 32
_SPLIT_FRAMES = 0.85
# At a model's contact map a look costs fewer passes over the box (its cores labelled, one labelled distance
# transform) and needs no margin: the boxes of a whole frame, so that one component across the frame (rods
# that cross) is still split. The demo model's maps take at most 0.27 of a frame, and 18 components (112
# maps of test, validation and hold-out seeds).
_CONTACT_FRAMES = 1.0
# A scene of objects has a few dozen components that may hold two objects (the bench's densest scene 37,
# the demo model's maps at most 26). Hundreds (random blobs, a model that hallucinates) make no scene of
# objects, and splitting some of them tells little: beyond this many, both budgets fall in proportion, so
# such a map costs less than a dense scene rather than as much.
_SCENE_CANDIDATES = 64
# explain_split also draws the relief and markers of components the split does not look at, which costs what
# a look costs: on a map of noise or random blobs (300 components kept) that made the view 5-8x the split
# (130 ms against 17-23 at 480x640). It draws at most this many such components, and boxes of at most this
# many frames' pixels, largest first; a scene of objects has fewer.
_VIEW_COMPONENTS = 64
_VIEW_FRAMES = 1.0
_log = logging.getLogger(__name__)
_SCAN_CLASSES = 24  # below this many ids between a map's smallest and largest, try each one
# the parameters that still apply when a model draws where parts touch (``contact``): nothing is split
CONTACT_PARAMS = ("size_threshold", "min_score", "max_instances")
# the parameters that apply when a model gives a contact map beside its class map (``touching``)
TOUCHING_PARAMS = (*CONTACT_PARAMS, "rods")


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
    - ``max_instances``: at most this many instances per map, the largest; the rest are dropped and
      counted (:attr:`SplitView.dropped`, and the log line about the budget). A map of noise has thousands of
      components, each an instance to build, publish and track: without a bound one bad frame costs as much
      as a hundred good ones. As ``max_det`` of YOLO-seg heads (300).

    With a model that draws where parts touch (``contact`` of :func:`semantic_to_instances`, a card's
    ``contact``), nothing is split: only those in ``CONTACT_PARAMS`` apply (``size_threshold``,
    ``min_score``, ``max_instances``).
    """

    # Bounded: they change live (MQTT, the web page), and OpenCV erodes n times with a k-px square as once
    # with an (n(k-1)+1)-px one, padding the map by as much: 255 x 255 took 10 s a frame, 100000 px a minute,
    # 2**31 fails each frame. 63 x 31 is ~10 ms on a 513 px map, and wider than such maps' objects.
    erosion_kernel: int = field(
        default=3, metadata=_m("Opening/erosion kernel side (px).", ge=1, le=63, live=True)
    )
    erosion_iteration: int = field(default=1, metadata=_m("Marker erosions.", ge=0, le=31, live=True))
    dilate_kernel: int = field(default=3, metadata=_m("modlib's dilation kernel.", ge=1, le=63, live=True))
    dilate_iteration: int = field(default=2, metadata=_m("modlib's dilations.", ge=0, le=31, live=True))
    dist_threshold: float = field(
        default=0.6,
        metadata=_m(
            "Marker threshold, fraction of the peak distance.",
            gt=0,
            le=1,
            live=True,
            step=0.01,
        ),
    )
    size_threshold: int = field(
        default=20,
        metadata=_m("Smaller components/instances are dropped (px).", ge=0, live=True, step=1),
    )
    per_component: bool = field(default=True, metadata=_m("Normalize the distance per component.", live=True))
    saddle_ratio: float = field(
        default=0.8,
        metadata=_m("Seeds meeting this high are one object.", gt=0, le=1, live=True, step=0.01),
    )
    min_score: float = field(
        default=0.0,
        metadata=_m("Instances scoring below are dropped.", ge=0, le=1, live=True, step=0.01),
    )
    rods: bool = field(default=False, metadata=_m("Split crossing straight rods.", live=True))
    max_instances: int = field(
        default=300,
        metadata=_m(
            "Most instances per map, largest first; the rest are dropped and counted.", ge=1, live=True
        ),
    )

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
    confidence: NDArray[np.floating[Any]] | Confidence | None = None,
    contact: int | None = None,
    touching: NDArray[np.generic] | None = None,
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
        confidence: with a class map, the probability of each pixel's class ``(H, W)`` (a network that
            takes the argmax itself can return it beside the map); an instance then scores its mean. A
            :class:`Confidence` is one checked already.
        contact: the class id (or channel) of the pixels where a part touches another, for a model that
            draws them: touching parts are then apart in the map, so each connected component is one
            instance (nothing is split: the parameters of the split are not used), and each contact pixel
            joins a part beside it (:mod:`edgeseg.semantic.contact`). None: the model has no such class.
        touching: ``(H, W)`` bool (or 0/1 integers), a model's contact map: the pixels where a part touches
            another, which keep their class in the map. A component is split only where it holds two or
            more cores off the map, each pixel going to its nearest core (:mod:`edgeseg.semantic.cores`;
            of the parameters, those in ``TOUCHING_PARAMS`` apply). Not with ``contact``.

    Returns:
        Instances in the input's pixel frame, class by class in increasing class id, components in the
        order OpenCV's tracing or labelling gives them (a map labelled in one pass for all its classes
        numbers them otherwise than a pass per class: of components of equal area, which make the
        ``max_instances`` cut can differ). Masks of one component's instances never overlap and cover the
        component.

    Raises:
        InputError: wrong dtype or rank, an empty (0-size) input, scores holding NaN, logits holding
            +infinity or a pixel none of whose logits is finite (-infinity beside a finite logit is a
            probability of 0), probabilities outside ``[0, 1]``, a background index outside the channels,
            a confidence that is not a ``[0, 1]`` map of the class map's shape (or comes with scores), a
            contact class that is the background, or a contact map that is not a 0/1 map of the class
            map's shape (or comes with ``contact``).
    """
    class_map, winning_prob = _class_map(class_map_or_probs, background, logits, channels_last, confidence)
    contact = _contact(contact, background, class_map_or_probs, channels_last)
    parts, budget = _split_map(
        class_map, background, params, contact, touching=_touching(touching, class_map.shape, contact)
    )
    prob = winning_prob()
    if budget.unsplit or budget.dropped:
        _unsplit_note.add(budget.unsplit, budget.dropped, 1)
    return _assemble(parts, prob, params, class_map.shape)


def _split_map(
    class_map: NDArray[Any],
    background: int,
    params: SemanticParams,
    contact: int | None = None,
    trace: _Trace | None = None,
    touching: NDArray[np.bool_] | None = None,
) -> tuple[list[Part], Budget]:
    """Every class's instances (the ``max_instances`` largest, in their order) and the budget, which counts
    the components it left unsplit and the instances dropped (``contact``, ``touching``: the contact class or
    map, see :func:`semantic_to_instances`; ``trace``: also report what the split saw, for
    :func:`explain_split`)."""
    h, w = class_map.shape
    ids = [c for c in _classes(class_map, background) if c != contact]
    # (a model that draws the contacts between parts has split them, or says where to: no relief)
    splits = contact is None and touching is None
    classes = classes_of(class_map, ids, kernel_of(params) if splits else None)
    found: list[Found | Labelled] = []
    sizes: list[list[int]] = []  # each class's component areas
    areas: list[int] = []  # all of them so far
    # the max_instances largest so far: whether a later class's component can make the cut depends on them
    # alone (on a tie, an earlier one ranks first)
    above: list[int] = []
    for _, m8, labels in classes:
        found.append(find_components(m8, params, above, splits=splits, labels=labels))
        sizes.append(found[-1].areas)
        areas.extend(sizes[-1])
        above = sorted([*above, *sizes[-1]], reverse=True)[: params.max_instances]
    # the map's largest components across its classes, before any is fitted or split
    keeps: list[list[bool] | None] = [None] * len(found)
    total = len(areas)
    if total > params.max_instances:
        cut = np.zeros(total, bool)
        cut[largest(areas, params.max_instances)] = True
        ends = np.cumsum([len(a) for a in sizes])
        keeps = [part.tolist() for part in np.split(cut, ends[:-1])]
    chosen = [f.select(keep) for f, keep in zip(found, keeps, strict=True)]
    # the components the split may look at: those that may hold two objects, or two cores of a contact map
    cores = [contact_cores(f, touching, params) for f in chosen] if touching is not None else None
    candidates = (
        sum(sum(f.may) for f in chosen)
        if cores is None
        else sum(c is not None for of_class in cores for c in of_class)
    )
    budget = Budget(
        *_split_budget(candidates, h * w, _SPLIT_FRAMES if cores is None else _CONTACT_FRAMES),
        dropped=max(0, total - params.max_instances) + sum(f.beyond for f in found),
    )
    parts: list[Part] = []
    # (nothing is split by reliefs with a contact class or map: no relief to show; each part is a marker)
    relief_trace = trace if contact is None and touching is None else None
    for k, ((c, _, _), components) in enumerate(zip(classes, chosen, strict=True)):
        if cores is None:
            parts.extend(split_class(class_map, c, params, budget, components, relief_trace))
        else:
            parts.extend(split_by_cores(components, cores[k], c, params, budget))
    if len(parts) > params.max_instances:
        budget.dropped += len(parts) - params.max_instances
        parts = [parts[i] for i in largest([q.area for q in parts], params.max_instances)]
    if trace is not None and relief_trace is None:
        trace.mark(parts)
    if contact is not None:
        parts = grow_into(parts, class_map == contact)
    return parts, budget  # (boxed by _assemble: only the parts it keeps)


def _contact(
    contact: int | None, background: int, data: NDArray[np.generic], channels_last: bool
) -> int | None:
    """The contact class id, checked: any id a class map may hold (with scores, one of their channels), but
    not the background."""
    if contact is None:
        return None
    if (
        isinstance(contact, bool)
        or not isinstance(contact, (int, np.integer))
        or not 0 <= contact <= _MAX_CLASS_ID
    ):
        raise InputError(
            f"semantic_to_instances: contact must be a class id in 0..{_MAX_CLASS_ID}, got {contact!r}"
        )
    if contact == background:
        raise InputError(f"semantic_to_instances: contact class {contact} is the background")
    channels = np.shape(data)[-1 if channels_last else 0] if np.ndim(data) == 3 else None
    if channels is not None and contact >= channels:
        raise InputError(
            f"semantic_to_instances: contact channel {contact} is outside the {channels} channels"
        )
    return int(contact)


def _touching(
    touching: NDArray[np.generic] | None, shape: tuple[int, ...], contact: int | None
) -> NDArray[np.bool_] | None:
    """The contact map, checked: 0/1 (or bool) of the class map's shape, and not beside a contact class."""
    if touching is None:
        return None
    if contact is not None:
        raise InputError("semantic_to_instances: a contact map (touching) and a contact class are exclusive")
    arr = np.asarray(touching)
    if arr.shape != shape or not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(
            f"semantic_to_instances: touching must be a bool or 0/1 map of the class map's shape {shape},"
            f" got {arr.dtype} {arr.shape}"
        )
    if arr.dtype == np.bool_:
        return arr
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > 1:
        raise InputError(f"semantic_to_instances: touching must hold 0 and 1, got values {lo}..{hi}")
    return arr.astype(bool)


def _split_budget(candidates: int, frame_pixels: int, frames: float = _SPLIT_FRAMES) -> tuple[int, int]:
    """How many components the split may look at, and how many pixels of their boxes (``frames`` of the
    map's ``frame_pixels``), in a map with ``candidates`` components that may hold two objects."""
    pixels = int(frames * frame_pixels)
    if candidates <= _SCENE_CANDIDATES:
        return _SPLIT_COMPONENTS, pixels
    return (
        _SPLIT_COMPONENTS * _SCENE_CANDIDATES // candidates,
        pixels * _SCENE_CANDIDATES // candidates,
    )


def _unsplit_tally() -> LogTally:
    """What the split budgets left out, logged at most once a minute."""
    return LogTally(
        _log,
        "semantic split budget: %d components kept whole unsplit and %d instances beyond max_instances "
        "dropped, in %d maps (maps of noise or speckle, or a scene denser than the split budget)",
    )


_unsplit_note = _unsplit_tally()


def _assemble(
    parts: list[Part],
    winning_prob: NDArray[np.float32] | None,
    params: SemanticParams,
    shape: tuple[int, ...],
) -> Instances:
    """The instances of ``parts`` that score at least ``min_score``, each boxed (:func:`with_boxes`)."""
    h, w = int(shape[0]), int(shape[1])
    if not parts:
        return Instances.empty((h, w))
    scores = [1.0] * len(parts)
    if winning_prob is not None:
        # (cv2.mean under a mask: half the time of indexing a crop with it, then numpy's mean)
        scores = [
            cv2.mean(
                winning_prob[p.y : p.y + p.mask.shape[0], p.x : p.x + p.mask.shape[1]], p.mask.view(np.uint8)
            )[0]
            for p in parts
        ]
    keep = [i for i, s in enumerate(scores) if s >= params.min_score]
    if not keep:
        return Instances.empty((h, w))
    kept = with_boxes([parts[i] for i in keep])
    # The crops are tight and their oriented boxes known, so the result is assembled directly rather than
    # through Instances.from_crops, which would trace every mask's outline again.
    boxes = np.array(
        [(q.x, q.y, q.x + q.mask.shape[1], q.y + q.mask.shape[0]) for q in kept],
        np.int32,
    )
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
        unsplit: components (or, with ``rods``, crops not fitted as rods) that might hold several objects
            but were kept whole because the map's split budget was spent (noise, speckle: thousands of ragged
            components); 0 on the bench's scenes of objects, but for a crop or two of the densest with
            ``rods`` (touching discs over three quarters of the frame). :func:`semantic_to_instances` counts
            them too, in a log line at most once a minute.
        dropped: instances beyond ``max_instances`` (the smallest), left out of ``instances``; counted in the
            same log line.
        unshown: components the split did not look at (kept whole without a look, or past its budget) whose
            relief and markers this view leaves out (0 in both), because the view's own budget for them was
            spent: a map of noise has hundreds (see :data:`_VIEW_COMPONENTS`); 0 on a scene of objects.
        to_frame: maps these pixels onto the frame they came from (identity here;
            :meth:`edgeseg.heads.semantic.SemanticHead.explain` sets it for its work grid).
        contact: the class of the pixels where parts touch, for a model that draws them (``contact`` of
            :func:`semantic_to_instances`); None otherwise. Nothing is then split: ``relief`` is 0
            everywhere, and each component of a class is one marker, before its contact pixels join it.
        touching: a model's contact map (``touching`` of :func:`semantic_to_instances`), bool; None
            otherwise. Components are then split at their cores, not by reliefs: ``relief`` is 0
            everywhere, and each instance is one marker.
    """

    class_map: NDArray[np.int32]
    relief: NDArray[np.float32]
    markers: NDArray[np.int32]
    instances: Instances
    threshold: float
    background: int
    to_frame: AxisAffine = field(default_factory=AxisAffine)
    unsplit: int = 0
    dropped: int = 0
    unshown: int = 0
    contact: int | None = None
    touching: NDArray[np.bool_] | None = None

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
    confidence: NDArray[np.floating[Any]] | Confidence | None = None,
    contact: int | None = None,
    touching: NDArray[np.generic] | None = None,
) -> SplitView:
    """The class map, distance relief and markers behind :func:`semantic_to_instances`' result.

    Same arguments and errors as :func:`semantic_to_instances`; see :class:`SplitView`. The instances come
    from the same split that reports the relief and markers, so they are what ``semantic_to_instances``
    returns for the same input.
    """
    class_map, winning_prob = _class_map(class_map_or_probs, background, logits, channels_last, confidence)
    trace = _Trace(
        np.zeros(class_map.shape, np.float32),
        np.zeros(class_map.shape, np.int32),
        Budget(_VIEW_COMPONENTS, int(_VIEW_FRAMES * class_map.size)),
    )
    contact = _contact(contact, background, class_map_or_probs, channels_last)
    touching = _touching(touching, class_map.shape, contact)
    parts, budget = _split_map(class_map, background, params, contact, trace, touching)
    instances = _assemble(parts, winning_prob(), params, class_map.shape)
    return SplitView(
        class_map=class_map.astype(np.int32),
        relief=trace.relief,
        markers=trace.markers,
        instances=instances,
        threshold=params.dist_threshold,
        background=int(background),
        unsplit=budget.unsplit,
        dropped=budget.dropped,
        unshown=trace.budget.unsplit,
        contact=contact,
        touching=touching,
    )


@dataclass
class _Trace:
    """Frame-sized arrays :func:`split_class` fills for :func:`explain_split` (see :class:`SplitView`), and
    the view's own budget for the components the split does not look at (see :data:`_VIEW_COMPONENTS`; its
    ``unsplit`` counts those the view leaves out)."""

    relief: NDArray[np.float32]
    markers: NDArray[np.int32]
    budget: Budget
    count: int = 0  # markers labelled so far

    def afford(self, box_pixels: int) -> bool:
        """Charge the relief and markers of a component of this box that the split does not look at, if the
        view's budget pays for them; else count it left out."""
        return self.budget.room(box_pixels) and self.budget.take(box_pixels)

    def add(
        self,
        x: int,
        y: int,
        tight: NDArray[np.bool_],
        relief: Relief,
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

    def mark(self, parts: list[Part]) -> None:
        """Each of ``parts`` as one marker of its own pixels (a model that draws contacts: no split)."""
        for q in parts:
            self.count += 1
            mh, mw = q.mask.shape
            self.markers[q.y : q.y + mh, q.x : q.x + mw][q.mask] = self.count


def _classes(class_map: NDArray[Any], background: int) -> list[int]:
    """Candidate class ids of a map, background excluded (some may be absent: callers check)."""
    lo, hi = (int(v) for v in cv2.minMaxLoc(class_map, (class_map != background).view(np.uint8))[:2])
    if hi - lo >= _SCAN_CLASSES:  # a histogram pays off only over a wide range of ids
        counts = np.bincount(class_map.ravel(), minlength=hi + 1)
        return [int(c) for c in np.flatnonzero(counts) if c != background]
    return [c for c in range(lo, hi + 1) if c != background]


@dataclass(frozen=True)
class Confidence:
    """A class map's per-pixel confidence, checked once (:meth:`checked`): float32, in ``[0, 1]``. The
    split takes it as it takes an unchecked map, without reading it through again: a model's head checks its
    output itself, to name the output in its error, and a second check read every float of the map twice
    more (a small share of the demo's decode, below what ``scripts/bench_decode.py`` tells apart). Make one
    with :meth:`checked`: the constructor trusts its caller (the head wraps the resampling of a checked map,
    whose linear blends stay in ``[0, 1]``)."""

    values: NDArray[np.float32]

    @classmethod
    def checked(cls, confidence: NDArray[np.floating[Any]], shape: tuple[int, ...]) -> Confidence:
        """``confidence`` as a float map of ``shape``, finite, in ``[0, 1]``; InputError where it is not."""
        conf = np.asarray(confidence)
        if conf.shape != shape or not np.issubdtype(conf.dtype, np.floating):
            raise InputError(
                f"semantic_to_instances: confidence must be a float map of the class map's shape {shape},"
                f" got {conf.dtype} {conf.shape}"
            )
        lo, hi = float(conf.min()), float(conf.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
            raise InputError(f"semantic_to_instances: confidence must be in [0, 1], got values {lo}..{hi}")
        return cls(conf.astype(np.float32, copy=False))


def _confidence(
    confidence: NDArray[np.floating[Any]] | Confidence, shape: tuple[int, ...]
) -> NDArray[np.float32]:
    """The confidence map, checked (unless it is a :class:`Confidence` of the class map's shape): a class
    map's companion of the same shape, finite, in ``[0, 1]``."""
    if isinstance(confidence, Confidence):
        if confidence.values.shape == shape:
            return confidence.values
        confidence = confidence.values  # checked for another map: checked again against this one
    return Confidence.checked(confidence, shape).values


def _class_map(
    data: NDArray[np.generic],
    background: int,
    logits: bool,
    channels_last: bool,
    confidence: NDArray[np.floating[Any]] | Confidence | None = None,
) -> tuple[NDArray[Any], Probability]:
    """Validate the input; return the class map and the call that gives the winning-class probability: of
    the scores, or the confidence given beside a class map (None: a class map alone carries none)."""
    if confidence is not None and np.ndim(data) == 3:
        raise InputError("semantic_to_instances: confidence goes with a class map; scores carry their own")
    class_map, winning_prob = _split_input(data, background, logits, channels_last)
    if confidence is None:
        return class_map, winning_prob
    given = _confidence(confidence, class_map.shape)
    return class_map, lambda: given


def _no_probability() -> None:
    return None


def _split_input(
    data: NDArray[np.generic], background: int, logits: bool, channels_last: bool
) -> tuple[NDArray[Any], Probability]:
    """The class map and, for score inputs, the winning-class probability, after validating the input."""
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
        if arr.dtype in (np.uint8, np.uint16):  # every value is a valid id: no pass over the map
            return arr, _no_probability
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > _MAX_CLASS_ID:
            raise InputError(
                f"semantic_to_instances: class ids must be in 0..{_MAX_CLASS_ID}, got values {lo}..{hi}"
            )
        return arr.astype(np.uint16 if hi > 255 else np.uint8), _no_probability
    if arr.ndim != 3:
        raise InputError(
            f"semantic_to_instances: expected a (H, W) class map or (C, H, W) scores, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"semantic_to_instances: per-class scores must be floating point, got {arr.dtype}")
    n_classes = arr.shape[-1 if channels_last else 0]
    if arr.size == 0:
        raise InputError(f"semantic_to_instances: the scores are empty, shape {arr.shape}")
    if n_classes > _MAX_CLASS_ID + 1:
        raise InputError(f"semantic_to_instances: at most {_MAX_CLASS_ID + 1} classes, got {n_classes}")
    if background >= n_classes:
        raise InputError(
            f"semantic_to_instances: background channel {background} is outside the {n_classes} channels"
            " (with scores, background is the index of the background channel)"
        )
    # (one plane per class, each contiguous: OpenCV takes them without a copy)
    scores = channels_first(arr) if channels_last else np.ascontiguousarray(arr, np.float32)
    class_map, winning_prob = read_scores(scores, logits)
    return class_map, winning_prob.result
