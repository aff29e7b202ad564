"""Per-frame stage times of a pipeline's model stages, for ``bench_demo_model.py``.

It imports nothing from ``edgeseg``: a child process started with another checkout's ``edgeseg`` on its
path times that checkout's stages with the same code (``python stage_times.py IMAGES.npy [OVERRIDE...]``,
run in the checkout's folder: its demo pipeline, the frames saved by the parent, one JSON line of the
times).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Times:
    """Milliseconds per frame, by stage, in frame order."""

    preprocess: list[float]
    infer: list[float]
    decode: list[float]


def time_frames(stages: Any, frames: list[Any]) -> Times:
    """Each frame through ``stages.preprocess``, ``.infer`` and ``.decode`` in turn, each stage timed."""
    t = Times([], [], [])
    for f in frames:
        t0 = time.perf_counter()
        p = stages.preprocess(f)
        t1 = time.perf_counter()
        out = stages.infer(p)
        t2 = time.perf_counter()
        stages.decode(f, p, out)
        t3 = time.perf_counter()
        t.preprocess.append((t1 - t0) * 1e3)
        t.infer.append((t2 - t1) * 1e3)
        t.decode.append((t3 - t2) * 1e3)
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
    print(json.dumps(asdict(time_frames(stages, frames))))


if __name__ == "__main__":
    main(sys.argv[1:])
