"""Accuracy over many frames: PQ accumulated per class, and ``edgeseg eval`` (COCO mask AP and PQ)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeseg.cvpath import opencv_name_problem
from edgeseg.errors import InputError, MissingDependencyError
from edgeseg.frame import Frame, Result
from edgeseg.imagesize import image_header
from edgeseg.instances import Instances
from edgeseg.metrics import (
    Pairs,
    TrackingAccumulator,
    above,
    class_counts,
    class_mean_quality,
    in_crowd,
    iou_pairs,
    match_pairs,
)
from edgeseg.sources.files import MAX_PIXELS, unknown_size
from edgeseg.sources.spec import MAX_SIDE
from edgeseg.stats import counted
from edgeseg.validate import describe

# PASCAL VOC class names and their COCO spelling, so VOC-labelled sets evaluate COCO-trained models
VOC_TO_COCO = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}


@dataclass(frozen=True)
class Accuracy:
    """Panoptic quality over all frames seen: class means of PQ/SQ/RQ (as panopticapi), totals of matches."""

    frames: int
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int

    def line(self, unit: str = "frame") -> str:
        """The summary's line; ``unit``: what ``frames`` counts ("image" for a data set)."""
        return (
            f"accuracy vs ground truth over {counted(self.frames, unit)}: PQ {self.pq:.3f} "
            f"(SQ {self.sq:.3f}, RQ {self.rq:.3f}; {self.tp} matched, {self.fp} false, {self.fn} missed)"
        )


class PQAccumulator:
    """Sums matches per class over frames, so PQ is computed on the whole run rather than averaged per frame.

    Thread-safe: it is fed from a sink thread and read from the main thread.
    """

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self._lock = threading.Lock()
        self._frames = 0
        self._per_class: dict[int, list[float]] = {}  # class -> [tp, fp, fn, iou_sum]

    def add(
        self, pred: Instances, truth: Instances, pairs: Pairs | None = None, crowd: Instances | None = None
    ) -> None:
        """One frame. ``pairs``: :func:`edgeseg.metrics.iou_pairs` of the frame at this threshold, where the
        caller has them. ``crowd``: the truth's crowd regions (see :func:`edgeseg.metrics.in_crowd`)."""
        if pairs is None:
            pairs = iou_pairs(pred, truth, self.iou_threshold)
        m = match_pairs(above(pairs, self.iou_threshold), len(pred), len(truth))
        if crowd is not None and len(crowd):
            fp = m.unmatched_pred
            m = replace(m, unmatched_pred=fp[~in_crowd(pred[fp], crowd)])
        counts = class_counts(pred, truth, m)
        with self._lock:
            self._frames += 1
            for c, add in counts.items():
                acc = self._per_class.setdefault(c, [0, 0, 0, 0.0])
                for k in range(4):
                    acc[k] += add[k]

    def result(self) -> Accuracy | None:
        """``None`` before the first frame."""
        with self._lock:
            if not self._frames:
                return None
            pq, sq, rq = class_mean_quality(self._per_class)
            tp, fp, fn = (int(sum(v[k] for v in self._per_class.values())) for k in range(3))
            return Accuracy(self._frames, pq, sq, rq, tp, fp, fn)


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO  # type: ignore[import-untyped]
        from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]
    except ImportError:
        raise MissingDependencyError("edgeseg eval needs pycocotools: pip install edgeseg[bench]") from None
    return COCO, COCOeval


def category_map(categories: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> dict[int, int]:
    """Dataset category id -> model class id, for categories whose (COCO-spelled) names the model knows."""
    by_name = {name.lower(): k for k, name in enumerate(class_names)}
    out: dict[int, int] = {}
    for cat in categories:
        name = str(cat["name"]).lower()
        k = by_name.get(VOC_TO_COCO.get(name, name))
        if k is not None:
            out[int(cat["id"])] = k
    return out


# what eval and pycocotools read of a COCO file's entries (a missing one was a KeyError traceback)
COCO_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "categories": ("id", "name"),
    "annotations": ("id", "image_id", "category_id", "segmentation", "area", "iscrowd"),
}
# the fields of a type eval relies on, as COCO's format has them: an image id of "img0" was a ValueError
# traceback, a file name of 5 a TypeError one, and a width of "640" said the image "is 640x480 but <file>
# gives 640x480"
COCO_TYPES: dict[str, dict[str, type]] = {
    "images": {"id": int, "file_name": str, "width": int, "height": int},
    "categories": {"id": int},
    "annotations": {"image_id": int, "category_id": int},
}
_TYPE_NAMES = {int: "an integer", str: "a string"}


def check_coco(doc: Any, ann_path: Path) -> None:
    """:class:`InputError` in one line when ``doc`` is not a COCO instance segmentation file eval can use."""
    try:
        for key, fields in COCO_FIELDS.items():
            for k, entry in enumerate(doc.get(key, []) if key == "annotations" else doc[key]):
                missing = [f for f in fields if f not in entry]
                if missing:
                    raise InputError(
                        f"{ann_path}: {key}[{k}] has no {missing[0]!r} (eval needs COCO instance masks)"
                    )
                for f, kind in COCO_TYPES[key].items():
                    value = entry[f]
                    whole = isinstance(value, float) and value.is_integer()  # (640.0 was read, and is)
                    if isinstance(value, bool) or not (isinstance(value, kind) or (kind is int and whole)):
                        raise InputError(
                            f"{ann_path}: {key}[{k}].{f} must be {_TYPE_NAMES[kind]}, as in COCO's format, "
                            f"got {describe(value)}"
                        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{ann_path} is not a COCO annotations file: {exc}") from None
    if not doc["images"]:
        # an empty set would report mask AP 0.000 as if the model had missed everything
        raise InputError(f"{ann_path} lists no images")


def check_segmentations(coco: Any, cat_to_class: Mapping[int, int], ann_path: Path) -> None:
    """:class:`InputError` in one line, before any image is read, for the first annotation of the shared
    classes whose segmentation pycocotools cannot read (exports write ``[]`` for a box without a mask): it was
    its traceback (an IndexError, TypeError, ValueError, KeyError or a bare Exception) at that image."""
    # (those of the images listed: eval and COCOeval read no other)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=coco.getImgIds(), catIds=sorted(cat_to_class))):
        try:
            coco.annToRLE(ann)
        except Exception as exc:  # (pycocotools raises all of these for a segmentation it cannot read)
            raise InputError(
                f"{ann_path}: annotation {ann['id']} has a segmentation pycocotools cannot read "
                f"({describe(ann['segmentation'])}): {type(exc).__name__}: {exc}"
            ) from None


def command(args: argparse.Namespace) -> int:
    coco_cls, eval_cls = _pycocotools()
    from edgeseg.cliconfig import load_cli_config
    from edgeseg.pipeline import ModelStages

    ann_path = Path(args.annotations)
    if not ann_path.is_file():
        raise InputError(f"annotations file {ann_path} does not exist")
    try:
        doc = json.loads(ann_path.read_text(encoding="utf-8"))
        images, categories = doc["images"], doc["categories"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{ann_path} is not a COCO annotations file: {exc}") from None
    except RecursionError:  # ([[[[... a few thousand deep)
        raise InputError(f"{ann_path} is not a COCO annotations file: nested too deeply") from None
    check_coco(doc, ann_path)
    image_dir = Path(args.images) if args.images else ann_path.parent
    stages = ModelStages.from_config(load_cli_config(args))
    names = tuple(stages.model.card.classes)
    cat_to_class = category_map(categories, names)
    if not cat_to_class:
        raise InputError(f"none of the categories of {ann_path} is a class of model {stages.model.card.name}")
    class_to_cat = {k: c for c, k in cat_to_class.items()}
    coco = coco_cls()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress chatter: no result, no error
        coco.createIndex()
    check_segmentations(coco, cat_to_class, ann_path)
    detections: list[dict[str, Any]] = []
    pq = PQAccumulator()
    for info in images:
        path = image_dir / info["file_name"]
        problem = opencv_name_problem(path)
        if problem is not None:
            raise InputError(f"{ann_path}: {problem}")
        header = image_header(str(path))
        unknown = unknown_size(str(path)) if header is None else None
        if unknown is not None:
            raise InputError(f"image {path} is {unknown} (listed in {ann_path})")
        if header is not None and header.pixels > MAX_PIXELS:  # a 20000 x 20000 PNG: 1.2 GB decoded
            raise InputError(
                f"image {path} is {header.width}x{header.height} pixels, more than the {MAX_SIDE}x{MAX_SIDE} "
                f"an image is decoded at (listed in {ann_path})"
            )
        read = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if read is None:
            raise InputError(f"cannot read image {path} (listed in {ann_path})")
        img = np.asarray(read, np.uint8)
        listed = (info["width"], info["height"])
        if listed != (img.shape[1], img.shape[0]):
            # the masks are drawn at the listed size: at another, they would miss the objects without a word
            raise InputError(
                f"image {path} is {img.shape[1]}x{img.shape[0]} but {ann_path} gives {listed[0]}x{listed[1]} "
                "for it (resized after labelling?)"
            )
        frame = Frame(int(info["id"]), img, 0, 0.0, source=str(path))
        prepared = stages.preprocess(frame)
        pred = stages.decode(frame, prepared, stages.infer(prepared))
        pred = pred[np.isin(pred.class_id, list(class_to_cat))]
        for item in pred.to_dict("rle")["instances"]:
            detections.append({
                "image_id": int(info["id"]),
                "category_id": class_to_cat[item["class_id"]],
                "segmentation": item["segmentation"],
                "score": item["score"],
            })  # fmt: skip
        # the crowd regions apart: a detection in one is no false positive (as in the AP, and panopticapi)
        truth, crowd = (
            _truth(coco, coco.getAnnIds(imgIds=[info["id"]], iscrowd=flag), cat_to_class, img.shape[:2])
            for flag in (False, True)
        )
        pq.add(pred, truth, crowd=crowd)
    print(f"{len(images)} images, {len(cat_to_class)} shared classes: "
          + ", ".join(sorted(names[k] for k in cat_to_class.values())))  # fmt: skip
    if not coco.getAnnIds(catIds=sorted(cat_to_class), iscrowd=False):
        # nothing to score against: COCOeval's stats are -1 then, which read as a score
        print("mask AP n/a (no annotations of the shared classes)")
    elif detections:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = eval_cls(coco, coco.loadRes(detections), "segm")
            evaluator.params.catIds = sorted(cat_to_class)
            evaluator.evaluate()
            evaluator.accumulate()
        evaluator.summarize()  # its table of APs and ARs: results
        print(
            f"mask AP {evaluator.stats[0]:.3f}  AP50 {evaluator.stats[1]:.3f}  AP75 {evaluator.stats[2]:.3f}"
        )
    else:
        print("mask AP 0.000 (no detections of the shared classes)")
    acc = pq.result()
    if acc is not None:
        print(acc.line("image"))
    stages.model.close()
    return 0


def _truth(coco: Any, ann_ids: list[int], cat_to_class: Mapping[int, int], hw: tuple[int, int]) -> Instances:
    """The annotations ``ann_ids`` of the model's classes, as instances (empty masks left out)."""
    crops, origins, classes = [], [], []
    for ann in coco.loadAnns(ann_ids):
        if ann["category_id"] not in cat_to_class:
            continue
        # each full-frame mask cut to its box at once: all of them held, a crowd of 200 at 1080p took 400 MB
        m = coco.annToMask(ann)
        x, y, bw, bh = cv2.boundingRect(m)
        if bw:
            crops.append(m[y : y + bh, x : x + bw].astype(bool))
            origins.append((x, y))
            classes.append(cat_to_class[ann["category_id"]])
    return Instances.from_crops(hw, classes, np.ones(len(classes)), origins, crops)


class AccuracySink:
    """Accumulates panoptic quality, and tracking quality when a tracker runs, against the frames' ground
    truth (synthetic sources carry it)."""

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self.pq = PQAccumulator(iou_threshold)
        self.tracking = TrackingAccumulator(iou_threshold)

    def send(self, result: Result) -> None:
        truth = result.frame.truth
        if truth is not None:
            # the masks' overlaps, once for both matchings (they were most of this sink's time)
            pairs = iou_pairs(result.instances, truth, self.iou_threshold)
            self.pq.add(result.instances, truth, pairs)
            # tracking quality only where a tracker ran and the truth knows each part's track
            if result.instances.track_id is not None and truth.track_id is not None:
                self.tracking.add(result.instances, truth, pairs)

    def close(self) -> None:
        return None
