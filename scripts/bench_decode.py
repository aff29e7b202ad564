#!/usr/bin/env python3
"""The demo pipeline's stages, this tree against another checkout, in alternated child processes on the same
frames: for a change to the decode whose gain is a few percent, which one process timing both could not
tell from the order it ran them in.

Each child runs ``scripts/stage_times.py`` in its checkout (its demo pipeline on the frames this script saves
once, each frame preprocessed, run and decoded in turn, as ``bench_demo_model.py`` times them; the
``edgeseg`` command's setting of OpenCV's threads and of the allocator are left as the checkout's
``stage_times`` leaves them, the same for both). ``--rounds`` rounds, the two in turn, the order flipped every
round. Printed: each stage's median ms a frame for each tree, and this tree's over the other's, the median
over the rounds of each round's ratio. The last line is one JSON object with the figures.

    mkdir -p /tmp/before && git archive HEAD~1 | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_decode.py --reference /tmp/before
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from bench_demo_model import REPO, time_checkout
from stage_times import Times

from edgeseg.synthetic import PartsScene

STAGES = ("preprocess", "infer", "decode")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="the other checkout (its edgeseg package)")
    ap.add_argument("--rounds", type=int, default=6, help="alternated rounds (default 6)")
    ap.add_argument("--frames", type=int, default=40, help="frames a round (default 40)")
    ap.add_argument("--threads", type=int, help="inference threads (default: the pipeline's choice)")
    args = ap.parse_args()
    reference = args.reference.resolve()
    if not (reference / "edgeseg" / "__init__.py").is_file():
        ap.error(f"--reference {reference}: no edgeseg package there")
    # bench_demo_model's frames: a busy stretch of the conveyor, every 7th frame
    scene = PartsScene(640, 480, seed=5)
    trees = {"this": REPO, "reference": reference}
    rounds: dict[str, list[Times]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images.npy"
        np.save(images, np.stack([scene.frame(7 * i).image for i in range(args.frames)]))
        for r in range(args.rounds):
            for k in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                rounds[k].append(time_checkout(trees[k], images, args.threads))

    def median_ms(k: str, stage: str) -> float:
        return statistics.median(statistics.median(getattr(t, stage)) for t in rounds[k])

    def ratios(stage: str) -> list[float]:
        return [
            statistics.median(getattr(a, stage)) / statistics.median(getattr(b, stage))
            for a, b in zip(rounds["this"], rounds["reference"], strict=True)
        ]

    print(f"{'ms a frame (median)':<22}{'this':>8}{'reference':>11}{'this/ref':>10}   rounds")
    for stage in STAGES:
        each = ratios(stage)
        print(
            f"{stage:<22}{median_ms('this', stage):>8.2f}{median_ms('reference', stage):>11.2f}"
            f"{statistics.median(each):>10.3f}   {', '.join(f'{v:.3f}' for v in each)}"
        )
    figures: dict[str, object] = {"reference": str(reference), "rounds": args.rounds, "frames": args.frames}
    for stage in STAGES:
        figures[f"{stage}_ms"] = round(median_ms("this", stage), 3)
        figures[f"reference_{stage}_ms"] = round(median_ms("reference", stage), 3)
        figures[f"{stage}_ratio"] = round(statistics.median(ratios(stage)), 3)
        figures[f"{stage}_ratio_rounds"] = [round(v, 3) for v in ratios(stage)]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
