#!/usr/bin/env python3
"""YOLO-seg NMS (``edgeseg.heads.yolo_seg.nms_per_class``): every pair's IoU at once against a row per kept
box, on the candidate counts a YOLO head can pass it.

A 320 model has 2100 anchors, a 640 model 8400; at the default score threshold (0.25) a scene gives tens to
hundreds of candidates, at a threshold of 0 (a live setting) or from a noisy model every anchor is one. Two
kinds of candidates: ``objects``, 25 objects each seen by many anchors (jittered boxes of one class, which
NMS folds into one; the usual case), and ``noise``, boxes spread at random over the frame, 80 classes (few
overlap: nearly every one is kept, the worst case for rows). Per count and kind: milliseconds (median of
``--repeats``) and peak traced memory of the matrix (``matrix_most`` above the count), the rows
(``matrix_most=0``) and the default (``NMS_MATRIX``), which must keep the same boxes. Up to ``max_det`` 300
kept. The matrix is skipped above ``--matrix-most`` candidates (default 8400: it takes seconds and over a
gigabyte there).

Then the whole decode of such a frame (``YoloSegHead.decode``: NMS, masks upsampled to the frame and
outlined): the outputs of a 320 model (80 classes, 2100 anchors, 32 prototypes of 80x80) drawn at random, a
640x360 frame, a score threshold of 0, boxes of 5-60 or 100-320 model pixels: ms (median of 3), instances,
and those dropped past the masks' budget (``yolo_seg.MASK_FRAMES``), beside the same with no budget.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import tracemalloc

import numpy as np

from edgeseg.geometry import FULL_ROI
from edgeseg.heads import DecodeOptions, yolo_seg
from edgeseg.heads.yolo_seg import NMS_MATRIX, YoloSegHead, nms_per_class
from edgeseg.modelcard import parse_card
from edgeseg.preprocess import Prepared, Preprocessor

MAX_DET = 300


def candidates(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` candidate boxes (xyxy, 640x640 model pixels), their scores and classes."""
    rng = np.random.default_rng(seed)
    if kind == "objects":
        centre = rng.uniform(60, 580, (25, 2))
        size = rng.uniform(20, 120, (25, 2))
        which = rng.integers(0, 25, n)
        xy = centre[which] + rng.normal(0, 4, (n, 2))
        wh = size[which] * rng.uniform(0.85, 1.15, (n, 2))
        classes = which % 5
    else:
        xy = rng.uniform(0, 640, (n, 2))
        wh = rng.uniform(5, 120, (n, 2))
        classes = rng.integers(0, 80, n)
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32), classes


def measure(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, most: int, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        keep = nms_per_class(boxes, scores, classes, 0.7, MAX_DET, matrix_most=most)
        times.append((time.perf_counter() - t0) * 1e3)
    tracemalloc.start()
    nms_per_class(boxes, scores, classes, 0.7, MAX_DET, matrix_most=most)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "ms": round(statistics.median(times), 3),
        "peak_mb": round(peak / 2**20, 2),
        "keep": keep.tolist(),
    }


def decode_noise(large: bool, budget: float) -> dict[str, float]:
    """One frame of random 320 YOLO-seg outputs decoded (see the module docstring), ``MASK_FRAMES`` set
    to ``budget``."""
    card = parse_card(
        {
            "name": "noise-320",
            "task": "yolo-seg",
            "input": {"name": "images", "width": 320, "height": 320, "resize": "letterbox"},
            "output": {"name": "output0", "protos": "output1"},
            "classes": [f"c{k}" for k in range(80)],
        },
        "noise.yaml",
    )
    rng = np.random.default_rng(0)
    det = rng.normal(0, 1, (1, 116, 2100)).astype(np.float32)
    det[0, 0:2] = rng.uniform(0, 320, (2, 2100))
    det[0, 2:4] = rng.uniform(*((100, 320) if large else (5, 60)), (2, 2100))
    det[0, 4:84] = rng.random((80, 2100))
    outputs = {"output0": det, "output1": rng.normal(0, 1, (1, 32, 80, 80)).astype(np.float32)}
    geo = Preprocessor(card.input).geometry((360, 640), FULL_ROI)
    prepared = Prepared(None, geo.to_frame, (360, 640), None, geo.crop)
    saved, yolo_seg.MASK_FRAMES = yolo_seg.MASK_FRAMES, budget
    try:
        times = []
        for _ in range(3):
            head = YoloSegHead(card)
            t0 = time.perf_counter()
            inst = head.decode(outputs, prepared, DecodeOptions(score_threshold=0.0))
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        yolo_seg.MASK_FRAMES = saved
    return {"ms": round(statistics.median(times), 2), "instances": len(inst), "dropped": head.dropped_budget}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--counts", default="30,100,300,1000,2100,8400", help="candidate counts")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--matrix-most", type=int, default=8400, help="largest count the matrix is timed at")
    args = ap.parse_args()
    report: dict[str, dict[str, dict]] = {}
    head = f"{'kind':8} {'candidates':>10} {'kept':>5}  {'matrix ms (MB)':>18} {'rows ms (MB)':>16}"
    print(f"{head} {'default ms':>11}")
    for kind in ("objects", "noise"):
        for n in (int(c) for c in args.counts.split(",")):
            data = candidates(kind, n)
            repeats = args.repeats if n <= 2100 else max(1, args.repeats // 3)
            ways = {"rows": 0, "default": NMS_MATRIX}
            if n <= args.matrix_most:
                ways["matrix"] = n
            got = {way: measure(*data, most, repeats) for way, most in ways.items()}
            if len({tuple(g["keep"]) for g in got.values()}) != 1:
                raise SystemExit(f"{kind} {n}: the ways keep different boxes")
            row = {way: {k: v for k, v in g.items() if k != "keep"} for way, g in got.items()}
            row["kept"] = {"count": len(got["rows"]["keep"])}
            report.setdefault(kind, {})[str(n)] = row
            matrix = (
                f"{row['matrix']['ms']:>9.2f} ({row['matrix']['peak_mb']:>6.1f})"
                if "matrix" in row
                else " " * 18
            )
            print(
                f"{kind:8} {n:>10} {row['kept']['count']:>5}  {matrix} "
                f"{row['rows']['ms']:>8.2f} ({row['rows']['peak_mb']:>5.2f}) {row['default']['ms']:>11.2f}"
            )
    decode: dict[str, dict[str, dict[str, float]]] = {}
    logging.getLogger("edgeseg").setLevel(logging.ERROR)  # (the budget's note, once per head made)
    for large in (False, True):
        boxes = "large" if large else "small"
        decode[boxes] = {
            "budget": decode_noise(large, yolo_seg.MASK_FRAMES),
            "none": decode_noise(large, np.inf),
        }
        got, free = decode[boxes]["budget"], decode[boxes]["none"]
        print(
            f"decode, random 320 outputs, {boxes} boxes, score threshold 0: {got['ms']:.1f} ms, "
            f"{got['instances']} instances, {got['dropped']} dropped past the budget of "
            f"{yolo_seg.MASK_FRAMES:g} frames; without it {free['ms']:.1f} ms, {free['instances']} instances"
        )
    out = {"nms_matrix": NMS_MATRIX, "max_det": MAX_DET, **report, "decode": decode}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
