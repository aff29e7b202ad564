#!/usr/bin/env python3
"""Post-processing with OpenCV's calls on one thread (what the ``edgeseg`` command sets, see
:func:`edgeseg.threadplan.serial_opencv`) against OpenCV's pool, alternated in one process.

Two workloads, each call back to back (where the pool's threads spin the most), each timed by its wall time
and by the process's CPU time (the pool's threads included):

1. the demo model's ``Model.decode`` on its own outputs for frames of two synthetic conveyor scenes, the
   outputs copied afresh before each call as onnxruntime writes them;
2. ``semantic_to_instances`` on the maps of ``scripts/bench_postprocess.py``'s sets (scene and hostile);
3. the demo pipeline as ``scripts/bench_pipeline.py`` runs it at its default settings (pre-rendered frames,
   JSON lines and MQTT to a Mosquitto started on loopback), ``--pipeline-frames`` a run: its rate, and the
   process's CPU a frame (``--no-mqtt``: JSON lines only; ``--pipeline-frames 0``: skip it).

``--pool`` is the pool's size (default: the usable cores, as OpenCV makes it). Per workload: ``wall_ratio``
and ``cpu_ratio``, one thread over the pool, for the pipeline ``fps_ratio`` and ``cpu_ratio`` (medians of
the pairs over ``--rounds``). The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_pipeline import conveyor_frames, device_run, mosquitto  # noqa: E402
from scenes import HOSTILE_SETS, SCENE_SETS  # noqa: E402

from edgeseg.config import load_config  # noqa: E402
from edgeseg.frame import Frame  # noqa: E402
from edgeseg.malloc import tune_malloc  # noqa: E402
from edgeseg.model import Model  # noqa: E402
from edgeseg.pipeline import ModelStages  # noqa: E402
from edgeseg.semantic import SemanticParams, semantic_to_instances  # noqa: E402
from edgeseg.synthetic import PartsScene  # noqa: E402
from edgeseg.threadplan import usable_cores  # noqa: E402


def timed(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """Median wall ms of ``calls`` (after one warm-up pass) and the process's CPU ms per call."""
    for call in calls:
        call()
    wall = []
    c0 = time.process_time()
    for call in calls:
        t0 = time.perf_counter()
        call()
        wall.append(time.perf_counter() - t0)
    return statistics.median(wall) * 1e3, (time.process_time() - c0) / len(calls) * 1e3


def demo_decodes(model: Model) -> list[Callable[[], object]]:
    calls: list[Callable[[], object]] = []
    for seed in (3, 5):
        scene = PartsScene(seed=seed)
        for i in range(0, 400, 10):
            prepared = model.preprocess(Frame(i, scene.frame(i).image, 0, 0.0))
            outputs = {k: np.array(v) for k, v in model.infer(prepared).items()}
            calls.append(lambda o=outputs, p=prepared: model.decode({k: v.copy() for k, v in o.items()}, p))
    return calls


def pipeline_pairs(frames: int, rounds: int, pool: int, mqtt: bool) -> dict[str, float]:
    """The demo pipeline's rate and CPU a frame, one OpenCV thread against the pool, alternated pairs."""
    stages = ModelStages.from_config(load_config(None, []))
    images = conveyor_frames()
    runs: dict[int, list[tuple[float, float]]] = {1: [], pool: []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        broker = stack.enter_context(mosquitto(Path(tmp) / "broker")) if mqtt else None

        def run(tag: str) -> tuple[float, float]:
            done = device_run(stages, images, frames, Path(tmp), tag, None if broker is None else broker.port)
            return done.fps, done.cpu_ms_per_frame

        run("plan")  # the thread planner decides on the first run; the pairs run on its plan
        for r in range(rounds):
            for threads in (1, pool) if r % 2 == 0 else (pool, 1):
                cv2.setNumThreads(threads)
                runs[threads].append(run(f"{r}-{threads}"))
    stages.close()
    pairs = list(zip(runs[1], runs[pool], strict=True))
    return {
        "fps": round(statistics.median(x[0] for x in runs[1]), 2),
        "fps_pool": round(statistics.median(x[0] for x in runs[pool]), 2),
        "cpu_ms": round(statistics.median(x[1] for x in runs[1]), 2),
        "cpu_ms_pool": round(statistics.median(x[1] for x in runs[pool]), 2),
        "fps_ratio": round(statistics.median(a[0] / b[0] for a, b in pairs), 3),
        "cpu_ratio": round(statistics.median(a[1] / b[1] for a, b in pairs), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--pool", type=int, default=usable_cores(), help="OpenCV's pool size to compare with")
    ap.add_argument("--rounds", type=int, default=6, help="alternated rounds (default 6)")
    ap.add_argument("--pipeline-frames", type=int, default=400, help="frames a pipeline run (0: none)")
    ap.add_argument("--no-mqtt", action="store_true", help="the pipeline without its MQTT sink")
    args = ap.parse_args()
    if args.pool < 2 or args.rounds < 1 or args.pipeline_frames < 0:
        ap.error("--pool must be >= 2, --rounds >= 1 and --pipeline-frames >= 0")
    tune_malloc()  # as the edgeseg command does
    logging.disable(logging.WARNING)  # the split's budget line on the hostile maps
    model = Model.load(REPO / "models/demo-parts.onnx")
    params = SemanticParams()
    work = {"demo_decode": demo_decodes(model)}
    for name, make in {**SCENE_SETS, **HOSTILE_SETS}.items():
        maps = [make(seed).class_map for seed in range(3)]
        work[name] = [lambda m=m: semantic_to_instances(m, params) for m in maps]
    figures = {}
    print(
        f"{'workload':22s} {'wall 1':>7s} {'pool':>7s} {'CPU 1':>7s} {'pool':>7s}   wall 1/pool  CPU 1/pool"
    )
    for name, calls in work.items():
        runs: dict[int, list[tuple[float, float]]] = {1: [], args.pool: []}
        for r in range(args.rounds):
            for threads in (1, args.pool) if r % 2 == 0 else (args.pool, 1):
                cv2.setNumThreads(threads)
                runs[threads].append(timed(calls))
        pairs = list(zip(runs[1], runs[args.pool], strict=True))
        w1, c1 = (statistics.median(x[i] for x in runs[1]) for i in (0, 1))
        wp, cp = (statistics.median(x[i] for x in runs[args.pool]) for i in (0, 1))
        figures[name] = {
            "wall_ms": round(w1, 3),
            "wall_ms_pool": round(wp, 3),
            "cpu_ms": round(c1, 3),
            "cpu_ms_pool": round(cp, 3),
            "wall_ratio": round(statistics.median(a[0] / b[0] for a, b in pairs), 3),
            "cpu_ratio": round(statistics.median(a[1] / b[1] for a, b in pairs), 3),
        }
        f = figures[name]
        print(
            f"{name:22s} {w1:7.2f} {wp:7.2f} {c1:7.2f} {cp:7.2f}   "
            f"{f['wall_ratio']:11.2f}  {f['cpu_ratio']:10.2f}",
            flush=True,
        )
    model.close()
    summary: dict[str, object] = {"bench": "opencv_pool", "pool": args.pool, "rounds": args.rounds}
    summary["workloads"] = figures
    if args.pipeline_frames:
        pipe = pipeline_pairs(args.pipeline_frames, args.rounds, args.pool, not args.no_mqtt)
        print(
            f"demo pipeline ({'JSON lines' if args.no_mqtt else 'JSON lines + MQTT'}): "
            f"{pipe['fps']:.1f} fps on one thread, {pipe['fps_pool']:.1f} with the pool (pairs: "
            f"{pipe['fps_ratio']:.2f}); CPU {pipe['cpu_ms']:.2f} against {pipe['cpu_ms_pool']:.2f} ms "
            f"a frame ({pipe['cpu_ratio']:.2f})"
        )
        summary["pipeline"] = pipe
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
