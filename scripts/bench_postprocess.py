"""Semantic -> instance post-processing: Sony modlib 1.5 vs edgeseg, side by side on the same class maps.

For every scene set (synthetic class maps with known instance ground truth, built by ``tests/scenes.py``),
each map goes through modlib's ``Segments(mask).to_instance_segments(args)`` and edgeseg's
``semantic_to_instances(mask, params)`` with the same parameter values, alternately, ``--repeat`` times: each
time a block of ``--block`` calls of one, then of the other. The first call of a block is a warm-up and is
not kept (it runs right after the other implementation, whose large allocations leave the allocator and
the caches cold: on 480x640 maps that costs edgeseg ~20%); ``--block 1`` keeps every call of a strict
call-by-call alternation instead.
Reported per set: the median time of each (median over maps of the per-map median), the ratio
modlib / edgeseg, the instance counts, and panoptic quality (PQ) and matched mask IoU of each against the
ground truth (modlib's output converted to ``Instances`` outside the timed region). The last line is one
JSON object with every figure.

Setup (once, from the repository root; modlib 1.5 pins old numpy/opencv, so it goes in without its deps,
and it needs nothing else to import ``modlib.models.results``):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e .
    .venv-bench/bin/pip install --no-deps modlib==1.5.0

Run:

    .venv-bench/bin/python scripts/bench_postprocess.py            # 3 maps per set, 15 repeats of blocks of 3
    .venv-bench/bin/python scripts/bench_postprocess.py --seeds 5 --repeat 31
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scenes import SCENE_SETS, Scene  # noqa: E402

from edgeseg import Instances, SemanticParams, semantic_to_instances  # noqa: E402
from edgeseg.metrics import panoptic_quality  # noqa: E402


def modlib_to_instances(result: Any, shape: tuple[int, int]) -> Instances:
    """modlib ``InstanceSegments`` (dense masks) -> ``Instances`` (score 1.0, as modlib gives)."""
    dense = np.asarray(result.mask)
    if dense.size == 0 or len(result.class_id) == 0:
        return Instances.empty(shape)
    dense = dense.reshape(-1, *shape).astype(bool)
    keep = dense.reshape(len(dense), -1).any(axis=1)
    masks = [m for m, k in zip(dense, keep, strict=True) if k]
    return Instances.from_crops(
        shape,
        np.asarray(result.class_id)[keep],
        np.ones(len(masks), np.float32),
        [(0, 0)] * len(masks),
        masks,
    )


def time_once(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bench_set(
    name: str, scenes: list[Scene], params: SemanticParams, repeat: int, block: int, segments_cls: Any
) -> dict[str, Any]:
    args = SimpleNamespace(
        erosion_kernel=params.erosion_kernel,
        erosion_iteration=params.erosion_iteration,
        dilate_kernel=params.dilate_kernel,
        dilate_iteration=params.dilate_iteration,
        dist_threshold=params.dist_threshold,
        size_threshold=params.size_threshold,
        config_mode=False,
    )

    def run_modlib(cm: np.ndarray) -> Any:
        return segments_cls(cm).to_instance_segments(args)

    t_mod, t_ours, pq_mod, pq_ours, iou_mod, iou_ours, n_truth, n_mod, n_ours = ([] for _ in range(9))
    for sc in scenes:
        cm = sc.class_map
        tm, to = [], []
        res_mod = res_ours = None
        for _ in range(repeat):
            # a block of calls each; with blocks of 2 or more, the first call of a block (right after the
            # other implementation's, whose large allocations leave the allocator and caches cold) is not kept
            for k in range(block):
                dt, res_mod = time_once(run_modlib, cm)
                if k or block == 1:
                    tm.append(dt)
            for k in range(block):
                dt, res_ours = time_once(semantic_to_instances, cm, params)
                if k or block == 1:
                    to.append(dt)
        truth = sc.truth()
        inst_mod = modlib_to_instances(res_mod, cm.shape)
        q_mod, q_ours = panoptic_quality(inst_mod, truth), panoptic_quality(res_ours, truth)
        t_mod.append(float(np.median(tm)))
        t_ours.append(float(np.median(to)))
        pq_mod.append(q_mod.pq)
        pq_ours.append(q_ours.pq)
        iou_mod.append(q_mod.mean_matched_iou)
        iou_ours.append(q_ours.mean_matched_iou)
        n_truth.append(len(truth))
        n_mod.append(len(inst_mod))
        n_ours.append(len(res_ours))
    ms_mod, ms_ours = float(np.median(t_mod)) * 1e3, float(np.median(t_ours)) * 1e3
    return {
        "set": name,
        "shape": list(scenes[0].class_map.shape),
        "maps": len(scenes),
        "objects_mean": float(np.mean(n_truth)),
        "modlib_ms": round(ms_mod, 3),
        "edgeseg_ms": round(ms_ours, 3),
        "speedup": round(ms_mod / ms_ours, 2),
        "modlib_instances_mean": float(np.mean(n_mod)),
        "edgeseg_instances_mean": float(np.mean(n_ours)),
        "modlib_pq": round(float(np.mean(pq_mod)), 4),
        "edgeseg_pq": round(float(np.mean(pq_ours)), 4),
        "modlib_matched_iou": round(float(np.mean(iou_mod)), 4),
        "edgeseg_matched_iou": round(float(np.mean(iou_ours)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="maps per scene set")
    ap.add_argument("--repeat", type=int, default=15, help="timed blocks per map and implementation")
    ap.add_argument("--block", type=int, default=3, help="calls per block, the first a warm-up (1: keep all)")
    ap.add_argument("--dist-threshold", type=float, default=SemanticParams().dist_threshold)
    opts = ap.parse_args(argv)
    try:
        from modlib.models.results import Segments
    except ImportError as exc:
        print(f"modlib is not importable ({exc}); see this script's docstring for the setup", file=sys.stderr)
        return 2
    params = SemanticParams(dist_threshold=opts.dist_threshold)
    rows = []
    head = (
        f"{'set':<20} {'HxW':>8} {'obj':>5} | {'modlib ms':>9} {'edgeseg ms':>10} {'x':>6} | "
        f"{'n mod':>6} {'n ours':>6} | {'PQ mod':>6} {'PQ ours':>7} | {'IoU mod':>7} {'IoU ours':>8}"
    )
    print(f"params: {params}")
    print(head)
    print("-" * len(head))
    for name, build in SCENE_SETS.items():
        scenes = [build(seed) for seed in range(opts.seeds)]
        r = bench_set(name, scenes, params, opts.repeat, opts.block, Segments)
        rows.append(r)
        print(
            f"{name:<20} {r['shape'][0]:>4}x{r['shape'][1]:<4} {r['objects_mean']:>5.1f} | "
            f"{r['modlib_ms']:>9.2f} {r['edgeseg_ms']:>10.2f} {r['speedup']:>6.1f} | "
            f"{r['modlib_instances_mean']:>6.1f} {r['edgeseg_instances_mean']:>6.1f} | "
            f"{r['modlib_pq']:>6.3f} {r['edgeseg_pq']:>7.3f} | "
            f"{r['modlib_matched_iou']:>7.3f} {r['edgeseg_matched_iou']:>8.3f}",
            flush=True,
        )
    summary = {"bench": "postprocess", "repeat": opts.repeat, "block": opts.block, "sets": rows}
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
