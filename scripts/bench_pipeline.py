#!/usr/bin/env python3
"""Pipeline benchmark (issue 4 acceptance), measured side by side in one run.

1. inference-only FPS of the model vs the full threaded pipeline's FPS (all stages, jsonl + video sinks) on
   the same frames from an offline source: ``fps_ratio`` (target >= 0.9);
2. capture-to-result latency p50/p99 with a live source at twice the pipeline's rate, over the median
   single-frame processing time (preprocess + infer + decode): ``latency_p99_over_median`` (target <= 2);
3. resident memory growth over ``--frames`` frames of a live run, after warm-up: ``rss_growth_mb`` (< 10).

Frames are pre-rendered synthetic conveyor scenes replayed by a source that costs no CPU, as a camera's
sensor and ISP cost the host none; the synthetic:parts source renders on the host's cores and would take
them from the pipeline on a 2-core machine. ``--threads`` sets the model's intra-op threads: on 2 cores,
1 leaves the other core to the rest of the pipeline.

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgeseg.config import load_config
from edgeseg.frame import Frame
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.sinks import SinkContext
from edgeseg.sinks.jsonl import JsonlSink
from edgeseg.sinks.video import VideoSink
from edgeseg.sources import SourceStats
from edgeseg.synthetic import PartsScene


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ReplaySource:
    """Replays pre-rendered images, so producing a frame costs no CPU: like a camera, whose sensor and ISP
    are not on the host's cores.

    Offline (``fps`` None) it delivers ``n`` frames as fast as they are taken; live (``fps`` set) it delivers
    one every ``1/fps`` seconds whatever the pipeline does, stamped with its delivery time.
    """

    def __init__(self, images: list[np.ndarray], n: int, fps: float | None = None) -> None:
        self.uri = "replay:"
        self.images, self.n, self.i = images, n, 0
        self.live = fps is not None
        self.period = 0.0 if fps is None else 1.0 / fps
        self.next_t = 0.0
        self.closed = threading.Event()

    @property
    def frames_total(self) -> int | None:
        return None if self.live else self.n

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self.i)

    def open(self) -> None:
        self.next_t = time.monotonic()

    def read(self) -> Frame | None:
        if self.i >= self.n or self.closed.is_set():
            return None
        if self.live:
            self.next_t += self.period
            if self.closed.wait(max(0.0, self.next_t - time.monotonic())):
                return None
        img = self.images[self.i % len(self.images)]
        self.i += 1
        return Frame(self.i - 1, img, time.monotonic_ns(), time.time())

    def close(self) -> None:
        self.closed.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", nargs="?", help="pipeline YAML (default: demo)")
    ap.add_argument("--model", help="model file (overrides model.path)")
    ap.add_argument("--frames", type=int, default=20_000, help="frames for the memory run (default 20000)")
    ap.add_argument("--timing-frames", type=int, default=200, help="frames for the FPS and latency runs")
    ap.add_argument("--rounds", type=int, default=3, help="alternating inference-only/pipeline rounds")
    ap.add_argument("--threads", type=int, help="inference threads (overrides model.threads)")
    ap.add_argument("--memory-fps", type=float, default=200.0, help="camera rate of the memory run")
    args = ap.parse_args()
    overrides = [f"model.path={json.dumps(str(Path(args.model).resolve()))}"] if args.model else []
    if args.threads is not None:
        overrides.append(f"model.threads={args.threads}")
    config = load_config(args.pipeline, overrides)
    stages = ModelStages.from_config(config)
    names = tuple(stages.model.card.classes)
    scene = PartsScene(640, 480, seed=1)
    images = [scene.frame(i).image for i in range(50)]
    n = args.timing_frames

    # 1. inference only vs the whole pipeline, same frames, alternated over rounds (the machine is shared:
    #    each round's ratio compares neighbours in time, and the medians are reported)
    frames = [Frame(i, images[i % 50], 0, 0.0) for i in range(n)]
    prepared = [stages.preprocess(f) for f in frames[:50]]
    for p in prepared[:5]:
        stages.infer(p)
    single = []
    for f in frames[:50]:
        s0 = time.perf_counter()
        p = stages.preprocess(f)
        stages.decode(f, p, stages.infer(p))
        single.append((time.perf_counter() - s0) * 1000)
    median_single_ms = statistics.median(single)
    infer_runs, pipeline_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for i in range(n):
                stages.infer(prepared[i % 50])
            infer_runs.append(n / (time.perf_counter() - t0))
            ctx = SinkContext(class_names=names)
            sinks = {
                "jsonl": JsonlSink(Path(tmp) / "r.jsonl", "rle", names),
                "video": VideoSink(Path(tmp) / "r.mp4", 25, ctx=ctx),
            }
            pipe = Pipeline(ReplaySource(images, n), stages, sinks)
            t0 = time.perf_counter()
            full = pipe.run()
            pipeline_runs.append(full.frames_done / (time.perf_counter() - t0))
    fps_infer = statistics.median(infer_runs)
    fps_pipeline = statistics.median(pipeline_runs)
    ratio = statistics.median(p / i for p, i in zip(pipeline_runs, infer_runs, strict=True))

    # 2. latency with a live source faster than the pipeline: a camera at twice the pipeline's rate
    camera_fps = 2 * fps_pipeline
    lat = Pipeline(ReplaySource(images, n * 2, fps=camera_fps), stages).run()

    # 3. memory over a long live run, after warm-up
    mem = Pipeline(ReplaySource(images, args.frames, fps=args.memory_fps), stages)
    mem.start()
    warm = min(500, args.frames // 10)
    while mem.stats().frames_read < warm and not mem.wait(0.05):
        pass
    rss0 = rss_mb()
    mem.wait()
    rss1 = rss_mb()
    mstats = mem.stats()

    lat_ratio = lat.latency_ms_p99 / median_single_ms
    print(f"{'inference only':<32}{fps_infer:8.1f} fps")
    print(f"{'full pipeline (jsonl + video)':<32}{fps_pipeline:8.1f} fps   ratio {ratio:.2f} (target >= 0.9)")
    print(f"{'single-frame processing':<32}{median_single_ms:8.1f} ms (median)")
    print(
        f"{'live latency p50 / p99':<32}{lat.latency_ms_p50:8.1f} / {lat.latency_ms_p99:.1f} ms   "
        f"p99/median {lat_ratio:.2f} (target <= 2); dropped {lat.dropped_total} of {lat.frames_read}"
    )
    print(
        f"{'RSS over run':<32}{rss0:8.1f} -> {rss1:.1f} MB over {mstats.frames_read - warm} frames "
        f"after {warm} warm-up (target growth < 10 MB)"
    )
    print(json.dumps({
        "fps_infer": round(fps_infer, 2), "fps_pipeline": round(fps_pipeline, 2),
        "fps_ratio": round(ratio, 3),
        "median_single_ms": round(median_single_ms, 2), "latency_p50_ms": round(lat.latency_ms_p50, 2),
        "latency_p99_ms": round(lat.latency_ms_p99, 2), "latency_p99_over_median": round(lat_ratio, 3),
        "rss_growth_mb": round(rss1 - rss0, 2), "memory_frames": mstats.frames_read,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
