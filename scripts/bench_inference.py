#!/usr/bin/env python3
"""Inference-stage benchmark: preprocess, inference and decode time per model, and our YOLO-seg decode
against Ultralytics' post-processing of the same raw tensors, side by side in one run.

Usage (the Ultralytics comparison needs the reference venv, see scripts/setup_ref_env.sh):

    .venv-ref/bin/pip install -e . --no-deps      # once
    .venv-ref/bin/python scripts/bench_inference.py [--repeats 30] [--threads 2]

Without Ultralytics (e.g. .venv/bin/python) the comparison columns are left out. All figures are medians of
``--repeats`` runs in milliseconds, measured here in one process; the last line is one JSON object.
The Ultralytics side is ``ultralytics_postprocess`` from scripts/ultralytics_ref.py (NMS + masks, both mask
paths); ours is ``Model.decode`` (NMS + masks on Ultralytics' retina path + building ``Instances`` with
oriented boxes), so ours does strictly more per instance.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeseg.frame import Frame
from edgeseg.model import InferenceOptions, Model

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("EDGESEG_ASSETS", REPO.parent / "shared" / "assets"))
YOLO_MODELS = ["yolov8n-seg_int8_320.onnx", "yolov8n-seg_int8_320_dequant_fp32.onnx"]
SEMANTIC_MODELS = [
    "mediapipe_selfie_segmentation_256x256.onnx",
    "sinet_portrait_320.onnx",
    "deeplabv3p_mnv2_dm05_portrait_513.onnx",
]
YOLO_IMAGES = [
    "images/bus.jpg",
    "images/zidane.jpg",
    "datasets/coco128-seg/images/train2017/000000000196.jpg",
    "datasets/coco128-seg/images/train2017/000000000315.jpg",
]


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    return in_turn_ms({"": fn}, repeats)[""]


def in_turn_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Each function's median ms, timed in turn (one call of each per round): the machine's load at one
    moment then weighs on all of them, not on whichever ran during it."""
    for fn in fns.values():
        fn()  # first call pays caches and allocations
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def load_reference() -> Any:
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import ultralytics_ref
    except ImportError as exc:
        print(f"(Ultralytics reference not importable here: {exc}; comparison skipped)")
        return None
    return ultralytics_ref


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def bench_model(path: Path, image: str, repeats: int, options: InferenceOptions) -> dict[str, Any]:
    model = Model.load(path, options)
    frame = Frame(0, cv2.imread(str(ASSETS / image)), 0, 0.0)
    prepared = model.preprocess(frame)
    outputs = model.infer(prepared)
    inst = model.decode(outputs, prepared)
    row = {
        "model": path.name,
        "image": Path(image).name,
        "frame": f"{frame.shape[1]}x{frame.shape[0]}",
        "preprocess_ms": median_ms(lambda: model.preprocess(frame), repeats),
        "infer_ms": median_ms(lambda: model.infer(prepared), repeats),
        "decode_ms": median_ms(lambda: model.decode(outputs, prepared), repeats),
        "instances": len(inst),
    }
    model.close()
    return row


def bench_yolo_decode(
    ref: Any, path: Path, image: str, repeats: int, options: InferenceOptions
) -> dict[str, Any]:
    model = Model.load(path, options)
    frame = Frame(0, cv2.imread(str(ASSETS / image)), 0, 0.0)
    prepared = model.preprocess(frame)
    outputs = model.infer(prepared)
    o0, o1 = outputs["output0"], outputs["output1"]
    input_hw = (model.card.input.height, model.card.input.width)
    ours = model.decode(outputs, prepared)
    row: dict[str, Any] = {
        "model": path.name,
        "image": Path(image).name,
        "instances": len(ours),
    }
    timed: dict[str, Callable[[], Any]] = {"ours_ms": lambda: model.decode(outputs, prepared)}
    if ref is not None:
        theirs = ref.ultralytics_postprocess(o0, o1, input_hw, frame.shape, retina=True)
        dense = ours.dense_masks()
        same = len(theirs) == len(ours) and all(
            d.class_id == int(ours.class_id[i]) and mask_iou(d.mask, dense[i]) >= 0.98
            for i, d in enumerate(theirs)
        )
        row["equal_output"] = bool(same)
        timed["ultralytics_retina_ms"] = lambda: ref.ultralytics_postprocess(
            o0, o1, input_hw, frame.shape, retina=True
        )
        timed["ultralytics_default_ms"] = lambda: ref.ultralytics_postprocess(
            o0, o1, input_hw, frame.shape, retina=False
        )
    row.update(in_turn_ms(timed, repeats))
    if ref is not None:
        row["ratio_vs_retina"] = row["ours_ms"] / row["ultralytics_retina_ms"]
        row["ratio_vs_default"] = row["ours_ms"] / row["ultralytics_default_ms"]
    model.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    args = parser.parse_args()
    # every file it times, before any timing: an assets folder without one of them ended the run in a
    # traceback at the first model (ModelError) or image (cv2.imread's None) it lacked, after timing those
    # before it
    needed = [f"models/{m}" for m in (*YOLO_MODELS, *SEMANTIC_MODELS)] + YOLO_IMAGES
    if missing := [name for name in needed if not (ASSETS / name).is_file()]:
        sys.exit(f"bench_inference: {ASSETS} lacks {', '.join(missing)} (set EDGESEG_ASSETS)")
    options = InferenceOptions(threads=args.threads)
    ref = load_reference()
    if ref is not None and args.threads:
        ref.torch.set_num_threads(args.threads)

    stage_rows = [
        bench_model(ASSETS / "models" / m, "images/bus.jpg", args.repeats, options) for m in YOLO_MODELS
    ]
    stage_rows += [
        bench_model(ASSETS / "models" / m, "images/zidane.jpg", args.repeats, options)
        for m in SEMANTIC_MODELS
    ]
    demo = REPO / "models" / "demo-parts.onnx"
    if demo.is_file():
        stage_rows.append(bench_model(demo, "images/bus.jpg", args.repeats, options))

    print(f"\nper-stage medians over {args.repeats} runs (ms), threads={args.threads or 'default'}")
    print(f"{'model':44s} {'image':11s} {'frame':>9s} {'prep':>7s} {'infer':>7s} {'decode':>7s} {'inst':>5s}")
    for r in stage_rows:
        print(
            f"{r['model']:44s} {r['image']:11s} {r['frame']:>9s} {r['preprocess_ms']:7.2f} "
            f"{r['infer_ms']:7.2f} {r['decode_ms']:7.2f} {r['instances']:5d}"
        )

    decode_rows = [
        bench_yolo_decode(ref, ASSETS / "models" / m, image, args.repeats, options)
        for m in YOLO_MODELS
        for image in YOLO_IMAGES
    ]
    print("\nYOLO-seg decode of the same raw tensors (ms, medians)")
    head = f"{'model':40s} {'image':22s} {'inst':>4s} {'ours':>7s}"
    if ref is not None:
        head += f" {'ul-retina':>9s} {'ul-default':>10s} {'ours/ret':>8s} {'ours/def':>8s} {'equal':>5s}"
    print(head)
    for r in decode_rows:
        line = f"{r['model']:40s} {r['image']:22s} {r['instances']:4d} {r['ours_ms']:7.2f}"
        if ref is not None:
            line += (
                f" {r['ultralytics_retina_ms']:9.2f} {r['ultralytics_default_ms']:10.2f}"
                f" {r['ratio_vs_retina']:8.2f} {r['ratio_vs_default']:8.2f} {r['equal_output']!s:>5s}"
            )
        print(line)
    summary: dict[str, Any] = {"repeats": args.repeats, "threads": args.threads, "stages": stage_rows}
    summary["yolo_decode"] = decode_rows
    if ref is not None:
        summary["median_ratio_vs_retina"] = statistics.median(r["ratio_vs_retina"] for r in decode_rows)
        summary["median_ratio_vs_default"] = statistics.median(r["ratio_vs_default"] for r in decode_rows)
        summary["all_equal_output"] = all(r["equal_output"] for r in decode_rows)
        summary["ultralytics"] = ref.ULTRALYTICS_VERSION
        print(
            f"\nmedian ours/Ultralytics: {summary['median_ratio_vs_retina']:.2f}x retina path (same output), "
            f"{summary['median_ratio_vs_default']:.2f}x default path; target <= 0.5x"
        )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
