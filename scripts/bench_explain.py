"""The split's side view (``explain_split``, the strip of the tune window) against the split itself
(``semantic_to_instances``), on the post-processing bench's maps (``tests/scenes.py``: scenes of objects and
the hostile sets), 480x640, one OpenCV thread (as the ``edgeseg`` command runs).

The view also draws the reliefs and markers of components the split does not look at; on a map of noise
those are hundreds, so it has a budget of its own (``edgeseg.semantic._VIEW_COMPONENTS``) and counts what it
leaves out (``unshown``). Each map is timed ``--repeat`` times, the split and the view alternated call by
call (and, with ``--reference DIR``, a copy of another version's ``edgeseg/semantic`` package, its view in
turn with them, the two views each first in turn); printed per set: the median ms of each (median over maps
of the per-map median), view / split, the components left out of the view, and whether the view's instances
are the split's (the script exits 1 where they are not). The last line is JSON.

    .venv/bin/python scripts/bench_explain.py
    mkdir -p /tmp/before && git archive HEAD~1 edgeseg | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_explain.py --reference /tmp/before/edgeseg/semantic
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from profile_semantic import bench_arguments  # noqa: E402
from scenes import HOSTILE_SETS, SCENE_SETS  # noqa: E402

from edgeseg.semantic import SemanticParams, explain_split, semantic_to_instances  # noqa: E402


def timed(call: Callable[[], Any]) -> float:
    t = time.perf_counter()
    call()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    args, module = bench_arguments(__doc__, seeds=3, repeat=7)
    reference = None if module is None else module.explain_split
    params = SemanticParams()
    print(f"{'set':22s} {'split ms':>9s} {'view ms':>9s} {'view/split':>10s} {'unshown':>8s}", end="")
    print(f" {'ref view':>9s} {'ref/split':>9s}" if reference else "")
    rows, same = [], True
    for name, make in {**SCENE_SETS, **HOSTILE_SETS}.items():
        per_map: dict[str, list[float]] = {"split": [], "view": [], "reference": []}
        unshown = []
        for seed in range(args.seeds):
            cm = make(seed).class_map
            ways: dict[str, Callable[[], Any]] = {
                "split": functools.partial(semantic_to_instances, cm, params),
                "view": functools.partial(explain_split, cm, params),
            }
            if reference is not None:
                ways["reference"] = functools.partial(reference, cm, params)
            for way in ways.values():  # untimed: the first call of a map allocates
                way()
            times: dict[str, list[float]] = {k: [] for k in ways}
            # the two views side by side after the split, each first in turn: the reference's ran always
            # right after this tree's on the same map, where one timed always after the other reads faster
            # (bench_postprocess: a copy of the same code, 0.92-0.97x)
            views = [k for k in ("view", "reference") if k in ways]
            for r in range(args.repeat):
                for k in ["split", *(views if r % 2 == 0 else views[::-1])]:
                    times[k].append(timed(ways[k]))
            split, view = semantic_to_instances(cm, params), explain_split(cm, params)
            same = same and view.instances.to_dict() == split.to_dict()
            unshown.append(view.unshown)
            for k, ts in times.items():
                per_map[k].append(statistics.median(ts))
        row: dict[str, Any] = {
            "set": name,
            "split_ms": round(statistics.median(per_map["split"]), 2),
            "view_ms": round(statistics.median(per_map["view"]), 2),
            "unshown": int(statistics.median(unshown)),
        }
        row["view_over_split"] = round(row["view_ms"] / row["split_ms"], 2)
        line = f"{name:22s} {row['split_ms']:9.2f} {row['view_ms']:9.2f} {row['view_over_split']:10.2f}"
        line += f" {row['unshown']:8d}"
        if reference is not None:
            row["reference_view_ms"] = round(statistics.median(per_map["reference"]), 2)
            row["reference_view_over_split"] = round(row["reference_view_ms"] / row["split_ms"], 2)
            line += f" {row['reference_view_ms']:9.2f} {row['reference_view_over_split']:9.2f}"
        print(line)
        rows.append(row)
    print("the view's instances are the split's" if same else "THE VIEW'S INSTANCES DIFFER FROM THE SPLIT'S")
    worst = max(r["view_over_split"] for r in rows)
    print(json.dumps({"bench": "explain", "sets": rows, "worst_view_over_split": worst, "same": same}))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
