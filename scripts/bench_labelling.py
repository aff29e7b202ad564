"""How ``semantic_to_instances`` labels a map's classes: a pass each, or one pass for all (the choice of
:func:`edgeseg.semantic.labelling.classes_of`), against both choices forced, on maps of 3 to 21 classes.

Each map is the argmax of ``classes`` random fields blurred by ``sigma`` (smooth random blobs; ``sigma`` 0:
uniform noise), 480x640 (``--shape``), no background. For each, the script prints the class masks' outlines
(components and holes, counted by ``cv2.findContours``) beside the estimate the choice reads from every
seventh row, and the median ms of ``semantic_to_instances`` three ways, alternated call by call on one OpenCV
thread (as the ``edgeseg`` command runs): as it chooses, with a pass per class mask (traced where it is not
speckled nor estimated to have more outlines than tracing pays for), and with one pass for all.
``chosen / best`` is the choice's time over the better of the two forced ones: 1.0 where it chose right,
above where it did not.
The last line is JSON.

``--algorithms`` times OpenCV's labelling algorithms instead, on the class masks :func:`labelling.label`
labels (noise of 3 classes, one ragged component, thousands of 5x5 specks on a grid, blobs of 8 classes):
the default and Grana's (``cv2.CCL_GRANA``), with statistics, alternated call by call, on one OpenCV thread
and with its pool; it checks that both give the same labels and statistics, and says which of the two
``label`` takes for each mask (from the mask's :class:`labelling.Sample`). ``grana / default`` under 1:
Grana's is faster.

    .venv/bin/python scripts/bench_labelling.py
    .venv/bin/python scripts/bench_labelling.py --algorithms
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.semantic import SemanticParams, labelling, semantic_to_instances

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import hostile_tiny

MAPS = [(s, c) for s in (3, 4, 6, 10, 16) for c in (3, 8, 21)] + [(0, c) for c in (3, 8, 21)]


def class_map(sigma: float, classes: int, seed: int, shape: tuple[int, int]) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    if sigma == 0:
        return rng.integers(0, classes, shape).astype(np.uint8)
    fields = [cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma) for _ in range(classes)]
    blobs: NDArray[np.uint8] = np.argmax(np.stack(fields), axis=0).astype(np.uint8)
    return blobs


def algorithms(repeat: int, shape: tuple[int, int]) -> None:
    """The ``--algorithms`` comparison (see the module)."""
    rng = np.random.default_rng(0)
    kinds = {
        "noise": class_map(0, 3, 0, shape),
        "ragged": np.where(rng.random(shape) < 0.7, 0, 1).astype(np.uint8),
        "specks": hostile_tiny(0, *shape).class_map,
        "blobs": class_map(3, 8, 1, shape),
    }
    algos = {"default": cv2.CCL_DEFAULT, "grana": cv2.CCL_GRANA}
    print(
        f"{'masks':>7} {'speckled':>8} {'label takes':>11} | {'threads':>7} {'default ms':>10}"
        f" {'grana ms':>8} {'grana/default':>13}"
    )
    rows = []
    for kind, cm in kinds.items():
        seen = labelling.sample(cm, [0])
        mask = (cm == 0).view(np.uint8)
        out = [cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, a) for a in algos.values()]
        same = all(np.array_equal(a, b) for a, b in zip(out[0][:3], out[1][:3], strict=True))
        takes = "default" if seen.speckled[0] else "grana"
        for threads in (1, cv2.getNumberOfCPUs()):
            cv2.setNumThreads(threads)
            times: dict[str, list[float]] = {a: [] for a in algos}
            for _ in range(repeat + 1):  # the first round warms up
                for name, algo in algos.items():
                    t0 = time.perf_counter()
                    cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, algo)
                    times[name].append(time.perf_counter() - t0)
            ms = {a: statistics.median(t[1:]) * 1e3 for a, t in times.items()}
            ratio = ms["grana"] / ms["default"]
            print(
                f"{kind:>7} {'yes' if seen.speckled[0] else 'no':>8} {takes:>11} | {threads:7d}"
                f" {ms['default']:10.2f} {ms['grana']:8.2f} {ratio:13.2f}"
            )
            rows.append(
                {
                    "masks": kind,
                    "speckled": seen.speckled[0],
                    "label_takes": takes,
                    "threads": threads,
                    "same_output": same,
                    **{f"{a}_ms": round(v, 3) for a, v in ms.items()},
                    "grana_over_default": round(ratio, 3),
                }
            )
    print(json.dumps({"bench": "labelling_algorithms", "shape": list(shape), "rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per map and way")
    ap.add_argument("--shape", default="480x640", help="the maps' HxW (default 480x640)")
    ap.add_argument("--algorithms", action="store_true", help="time OpenCV's labelling algorithms instead")
    args = ap.parse_args()
    h, w = (int(v) for v in args.shape.split("x"))
    if args.algorithms:
        algorithms(4 * args.repeat, (h, w))
        return
    cv2.setNumThreads(1)
    logging.disable(logging.WARNING)  # (the split budget's note on maps of noise)
    params = SemanticParams()
    grid_passes = labelling.GRID_PASSES
    ways = {"chosen": grid_passes, "apart": float("inf"), "one_pass": 0.0}
    print(
        f"{'sigma':>5} {'classes':>7} {'outlines':>8} {'estimate':>8} {'one pass?':>9} | "
        f"{'chosen ms':>9} {'apart ms':>8} {'one pass ms':>11} {'chosen/best':>11}"
    )
    rows = []
    for sigma, classes in MAPS:
        cm = class_map(sigma, classes, seed=sigma * 100 + classes, shape=(h, w))
        seen = labelling.sample(cm, list(range(classes)))
        outlines = sum(
            len(cv2.findContours((cm == c).view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[0])
            for c in range(classes)
        )
        estimate = sum(seen.outlines.values())
        labelling.GRID_PASSES = grid_passes
        picked = labelling.classes_of(cm, list(range(classes)), None)[0].mask is None
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.repeat + 1):  # the first round warms up
            for way, passes in ways.items():
                labelling.GRID_PASSES = passes
                t0 = time.perf_counter()
                semantic_to_instances(cm, params)
                times[way].append(time.perf_counter() - t0)
        ms = {way: statistics.median(t[1:]) * 1e3 for way, t in times.items()}
        ratio = ms["chosen"] / min(ms["apart"], ms["one_pass"])
        print(
            f"{sigma:5d} {classes:7d} {outlines:8d} {estimate:8.0f} {'yes' if picked else 'no':>9} | "
            f"{ms['chosen']:9.2f} {ms['apart']:8.2f} {ms['one_pass']:11.2f} {ratio:11.2f}"
        )
        rows.append(
            {
                "sigma": sigma,
                "classes": classes,
                "outlines": outlines,
                "estimate": round(estimate),
                "one_pass": picked,
                **{f"{w}_ms": round(v, 3) for w, v in ms.items()},
                "chosen_over_best": round(ratio, 3),
            }
        )
    labelling.GRID_PASSES = grid_passes
    worst = max(r["chosen_over_best"] for r in rows)
    print(f"worst chosen / best: {worst:.2f}")
    print(json.dumps({"bench": "labelling", "shape": [h, w], "worst_chosen_over_best": worst, "maps": rows}))


if __name__ == "__main__":
    main()
