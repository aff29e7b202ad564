"""What per-class scores cost ``semantic_to_instances`` over their class map, side by side in one run.

For each map of ``tests/scenes.py``'s ``SCORE_SETS`` (logits, channel 0 the background: 21 channels of small
blobs, 3 of noise; 480x640), channels first ``(C, H, W)`` and channels last ``(H, W, C)``, alternated call by
call on one OpenCV thread (as the ``edgeseg`` command runs) after one untimed call of each, the median ms of:

- ``scores``: ``semantic_to_instances(logits, background=0, logits=True)``;
- ``class map``: the same on their argmax (the background set to 255): the split alone. ``scores`` less this
  is what reading the scores costs (argmax, winning probability, their checks, each instance's mean);
- ``numpy``: the argmax and the winning softmax probability as numpy gives them, straight
  (``np.argmax``, ``1 / sum(exp(x - max))`` over the channel axis): the plain way, for scale;
- ``CC``: one ``cv2.connectedComponentsWithStats`` pass over the class map's foreground (the floor of issue
  17's bound);
- with ``--reference DIR`` (a copy of another version's ``edgeseg/semantic``), that version's
  ``semantic_to_instances`` on the same logits, and what differs in their instances (``differences`` of
  ``scripts/profile_semantic.py``; ``same_as_reference``: nothing but the scores, each row says by how
  much).

The last line is JSON.

    .venv/bin/python scripts/bench_scores.py [--reference /tmp/before/edgeseg/semantic]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from profile_semantic import bench_arguments, differences  # noqa: E402
from scenes import BACKGROUND, SCORE_SETS  # noqa: E402

from edgeseg.semantic import SemanticParams, semantic_to_instances  # noqa: E402


def numpy_way(logits: NDArray[np.float32], axis: int) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """The argmax and the winning softmax probability, as numpy gives them straight."""
    best = logits.max(axis=axis, keepdims=True)
    return np.argmax(logits, axis=axis), 1 / np.exp(logits - best).sum(axis=axis)


def main() -> None:
    args, module = bench_arguments(__doc__, seeds=2, repeat=9)
    reference = None if module is None else module.semantic_to_instances
    params = SemanticParams()
    print(
        f"{'map':<24} {'layout':>6} | {'scores':>7} {'class map':>9} {'numpy':>7} {'CC':>6} | "
        f"{'scores/CC':>9} {'(scores-map)/CC':>15}"
        + ("" if reference is None else f" | {'ref':>7} {'ref/new':>7} same")
    )
    rows = []
    for name, make in SCORE_SETS.items():
        for seed in range(args.seeds):
            scene = make(seed)
            assert scene.logits is not None
            cm = scene.class_map
            for layout in ("chw", "hwc"):
                last = layout == "hwc"
                logits = np.ascontiguousarray(np.moveaxis(scene.logits, 0, -1)) if last else scene.logits
                ways: dict[str, Callable[[], Any]] = {
                    "scores": lambda x=logits, last=last: semantic_to_instances(
                        x, params, 0, logits=True, channels_last=last
                    ),
                    "class_map": lambda cm=cm: semantic_to_instances(cm, params, BACKGROUND),
                    "numpy": lambda x=logits, last=last: numpy_way(x, -1 if last else 0),
                    "cc": lambda cm=cm: cv2.connectedComponentsWithStats(
                        (cm != BACKGROUND).view(np.uint8), connectivity=8
                    ),
                }
                if reference is not None:
                    ways["reference"] = lambda x=logits, last=last: reference(
                        x, params, 0, logits=True, channels_last=last
                    )
                # untimed first: a way's first call on these logits pays what no later one does (their pages,
                # the allocations of its planes), and with --repeat 1 that was its whole figure
                for way in ways.values():
                    way()
                times: dict[str, list[float]] = {k: [] for k in ways}
                out: dict[str, Any] = {}
                # this tree's scores and the reference's side by side, each first in turn, the rest after
                # them: the reference ran last, after the floor's pass, and this tree's right after it on the
                # same logits, where one timed always after the other reads faster (bench_postprocess: a
                # copy of the same code, 0.92-0.97x)
                pair = [k for k in ("scores", "reference") if k in ways]
                rest = [k for k in ways if k not in pair]
                for r in range(args.repeat):
                    for k in (pair if r % 2 == 0 else pair[::-1]) + rest:
                        t0 = time.perf_counter()
                        out[k] = ways[k]()
                        times[k].append((time.perf_counter() - t0) * 1e3)
                ms = {k: statistics.median(v) for k, v in times.items()}
                row: dict[str, Any] = {
                    "map": f"{name}[{seed}]",
                    "layout": layout,
                    **{f"{k}_ms": round(v, 3) for k, v in ms.items()},
                    "scores_per_cc": round(ms["scores"] / ms["cc"], 2),
                    "reading_per_cc": round((ms["scores"] - ms["class_map"]) / ms["cc"], 2),
                }
                line = (
                    f"{row['map']:<24} {layout:>6} | {ms['scores']:7.2f} {ms['class_map']:9.2f} "
                    f"{ms['numpy']:7.2f} {ms['cc']:6.2f} | {row['scores_per_cc']:9.1f} "
                    f"{row['reading_per_cc']:15.1f}"
                )
                if reference is not None:
                    row["reference_over_new"] = round(ms["reference"] / ms["scores"], 3)
                    # (profile_semantic's comparison: empty where identical, a score entry alone where only
                    # the scores differ, by as much as it says)
                    row["differences"] = differences(out["scores"], out["reference"])
                    row["same_as_reference"] = all(d.startswith("score") for d in row["differences"])
                    line += f" | {ms['reference']:7.2f} {row['reference_over_new']:7.2f}"
                    line += f" {row['same_as_reference']}"
                print(line, flush=True)
                rows.append(row)
    summary: dict[str, Any] = {
        "scores_per_cc_max": max(r["scores_per_cc"] for r in rows),
        "reading_per_cc_max": max(r["reading_per_cc"] for r in rows),
    }
    if reference is not None:
        for layout in ("chw", "hwc"):
            ratios = [r["reference_over_new"] for r in rows if r["layout"] == layout]
            summary[f"reference_over_new_{layout}_median"] = round(statistics.median(ratios), 3)
        summary["same_as_reference"] = all(r["same_as_reference"] for r in rows)
    out = {"bench": "scores", "repeat": args.repeat, "summary": summary, "rows": rows}
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
