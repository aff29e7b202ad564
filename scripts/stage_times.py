"""Per-frame stage times of a pipeline's model stages, for ``bench_demo_model.py``.

It imports nothing from ``edgeseg``: a child process started with another checkout's ``edgeseg`` on its
path times that checkout's stages with the same code (``python stage_times.py IMAGES.npy [OVERRIDE...]``,
run in the checkout's folder: its demo pipeline on the frames saved by the parent). It warms up, prints
``ready``, then for each frame index read from its input prints that frame's times as one JSON list
``[preprocess, infer, decode]`` (ms), so that the parent can interleave them with its own frame by frame.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Times:
    """Milliseconds per frame, by stage, in frame order."""

    preprocess: list[float]
    infer: list[float]
    decode: list[float]

    def add(self, times: tuple[float, float, float]) -> None:
        self.preprocess.append(times[0])
        self.infer.append(times[1])
        self.decode.append(times[2])


def time_frame(stages: Any, frame: Any) -> tuple[float, float, float]:
    """``frame`` through ``stages.preprocess``, ``.infer`` and ``.decode`` in turn: each stage's ms."""
    t0 = time.perf_counter()
    p = stages.preprocess(frame)
    t1 = time.perf_counter()
    out = stages.infer(p)
    t2 = time.perf_counter()
    stages.decode(frame, p, out)
    t3 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3


def time_frames(stages: Any, frames: list[Any]) -> Times:
    """Each frame through the stages (:func:`time_frame`)."""
    t = Times([], [], [])
    for f in frames:
        t.add(time_frame(stages, f))
    return t


def main(argv: list[str]) -> None:
    from pathlib import Path

    import numpy as np

    import edgeseg
    from edgeseg.config import load_config
    from edgeseg.frame import Frame
    from edgeseg.pipeline import ModelStages

    here = Path.cwd().resolve()
    if not Path(edgeseg.__file__).resolve().is_relative_to(here):
        raise SystemExit(f"imported {edgeseg.__file__}, not the edgeseg of {here}: put {here} on PYTHONPATH")
    stages = ModelStages.from_config(load_config("pipelines/demo.yaml", argv[1:]))
    frames = [Frame(i, image, 0, 0.0) for i, image in enumerate(np.load(argv[0]))]
    time_frames(stages, frames[:3])  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(time_frame(stages, frames[int(line)])), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
