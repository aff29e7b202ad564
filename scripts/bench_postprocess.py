"""Semantic -> instance post-processing: Sony modlib 1.5 vs edgeseg, side by side on the same class maps.

For every scene set (synthetic class maps with known instance ground truth, built by ``tests/scenes.py``),
each map goes through modlib's ``Segments(mask).to_instance_segments(args)`` and edgeseg's
``semantic_to_instances(mask, params)`` with the same parameter values, alternately, ``--repeat`` times: each
time a block of ``--block`` calls of one, then of the other. The first call of a block is a warm-up and is
not kept (it runs right after the other implementation, whose large allocations leave the allocator and
the caches cold: on 480x640 maps that costs edgeseg ~20%); ``--block 1`` keeps every call of a strict
call-by-call alternation instead.
A third block times the floor: one ``cv2.connectedComponentsWithStats`` pass (8-connected) over the map's
foreground (``class_map != 255``, the comparison included). A call that takes longer than ``--slow``
seconds ends its block and is kept (at that scale a cold cache is noise), and a map's repeats stop once
``--budget`` seconds were spent on it, so the hostile maps, where the old code took tens of seconds a
call, keep a run to minutes.
Reported per set: the median time of each (median over maps of the per-map median), the ratios
modlib / edgeseg and edgeseg / connected components, the instance counts, and panoptic quality (PQ) and
matched mask IoU of each against the ground truth (modlib's output converted to ``Instances`` outside the
timed region). The ``hostile_*`` sets (noise, random blobs small and large, small blobs of 21 classes,
thousands of tiny components, one huge ragged component, one class everywhere) bound the worst case; their
truth is the plain connected components, so their PQ says only how much the split cut them up
(``hostile_many_classes``: all 21 classes labelled in one pass, ``edgeseg.semantic.labelling``, where a pass
per class took 54-69x one pass of the map). modlib's PQ is 0 on every set, and
that is modlib's output, not a conversion error: its ``Segments.get_mask`` gives 0/1 masks
(``modlib/models/results.py``: ``(self.mask == id).astype(np.uint8)``), so in ``to_instance_segments`` the
watershed's unknown band (``markers[unknown == 255] = 0``) is never set, every pixel keeps a label, the
watershed grows nothing, and each instance is its eroded marker (a disc of ~3000 pixels comes out as ~400).
A fourth block times edgeseg again on one OpenCV thread, as the ``edgeseg`` command runs it
(``edgeseg.threadplan.serial_opencv``: the pipeline's own threads keep the cores busy), the others keeping
OpenCV's pool (as modlib runs by default): ``edgeseg_serial_ms`` and ``speedup_serial`` (modlib / that); the
floor's pass is timed on one thread too, beside it: ``edgeseg_per_cc_serial``, the split over the floor both
as the ``edgeseg`` command runs them. The pool shares out each labelling pass, so maps that are mostly
labelling (noise, tiny specks, one ragged component) take longer on one thread, at about half the CPU
(``scripts/bench_opencv_pool.py``), unless the split runs them side by side (without OpenCV's pool it
labels a map's classes on threads of its own, ``edgeseg.semantic.labelling.classes_of``).
The ``contact_*`` and ``hostile_contact_*`` sets give edgeseg a contact map beside the class map (the split
at a model's contact map, ``edgeseg.semantic.cores``, as the demo model's pipeline decodes): touching discs
with their contacts drawn, and hostile blobs (small, then large) with contact maps of noise, of blobs and of
specks. ``contact_class_discs`` and ``hostile_contact_class`` draw the contacts in the class map itself, as a
class of their own (a model's contact class, ``edgeseg.semantic.contact``: each component one part, the
contact pixels given back to the parts beside them): the discs' pixels where two touch, and noise of three
classes with a quarter of its pixels of the contact class. modlib, which takes no contact map, gets the
same class maps (a contact class as a class of its own); the JSON line summarizes these sets apart
(``contact_summary``), so the class maps' figures stay comparable run to run.
The ``hostile_scores_*`` sets give edgeseg logits instead of a class map (``logits=True``, channel 0 the
background): 21 channels of small blobs (a VOC model facing a scene it was not trained for) and 3 channels
of noise. edgeseg takes their argmax and the winning probability itself; modlib, which takes no scores, is
timed on the class map its user makes of them (``np.argmax`` over the channels, the background set to 255,
timed with it), and the connected-components pass is that class map's. Summarized apart too
(``scores_summary``): reading 21 float planes is work no labelling pass of the class map does.
Each set also gets modlib / connected components (``modlib_per_cc``): where it is under 10, being 10x
faster than modlib means taking less time than the labelling pass alone, below any split that labels
the map.
The allocator is set the same for both, whatever the order of the sets: every implementation first runs
once on every map of every set, untimed, and glibc's malloc is pinned (mmap threshold 32 MB, trim
threshold 1 GB), so a block freed goes back to the heap and serves the next call. With glibc's defaults,
modlib's full-frame arrays came fresh from the kernel, page by page, on some sets and not on others,
depending on what the process had run before: touching_discs timed first, 14,000 page faults and
80-106 ms a call; timed right after edge_cut, 459 faults and 41-53 ms; after the untimed pass over every
set, touching_discs, multi_class and edge_cut paid 10,000-16,500 faults a call (67-123 ms, against none
and 34-62 ms pinned, in the same sitting). Until this pinning, the sets timed first were measured at about
half modlib's speed. ``--glibc-defaults`` leaves malloc as glibc sets it (after the same untimed pass).
Each set's ``page_faults_per_call`` (edgeseg, modlib: the median over the kept calls) shows what a call
still pays.
The last line is one JSON object with every figure; its ``summary`` holds, over the class-map sets, the
median of edgeseg / connected components, the smallest modlib / edgeseg (``speedup_min``; on one OpenCV
thread, ``speedup_serial_min``) and largest edgeseg / connected components (both on one thread as well:
``edgeseg_per_cc_serial_median``, ``_max``), and the sets under 10x
modlib, apart (``under_10x``) from those where 10x modlib is below one labelling pass
(``under_10x_below_floor``).

Setup (once, from the repository root; modlib 1.5 pins old numpy/opencv, so it goes in without its deps,
and it needs nothing else to import ``modlib.models.results``):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -e .
    .venv-bench/bin/pip install --no-deps modlib==1.5.0

Run:

    .venv-bench/bin/python scripts/bench_postprocess.py            # 3 maps per set, 15 repeats of blocks of 3
    .venv-bench/bin/python scripts/bench_postprocess.py --seeds 5 --repeat 31
    .venv-bench/bin/python scripts/bench_postprocess.py --sets hostile_noise,hostile_ragged
    .venv-bench/bin/python scripts/bench_postprocess.py --rods     # edgeseg with rods: true (line fits)

To compare with another version in the same run, give a copy of its ``edgeseg/semantic`` package: its
``semantic_to_instances`` is timed in blocks of the same alternation (so a machine that gets busier
half-way through slows both alike), with OpenCV's pool and on one OpenCV thread, and each set gains its time,
its PQ and the ratios reference / edgeseg, with the pool and on one thread (``ref1/es1``: where a change
shows only on one thread, as the ``edgeseg`` command runs). The two take turns at coming first after
modlib's block: timed always after edgeseg's, a copy of the same code read 0.92-0.97x edgeseg's time with
the pool on five sets; taking turns, 0.97-1.01x:

    git archive HEAD~1 edgeseg | tar -x -C /tmp/before
    .venv-bench/bin/python scripts/bench_postprocess.py --reference /tmp/before/edgeseg/semantic

(To run the whole bench on another tree instead, put it first on the path:
``PYTHONPATH=/tmp/edgeseg-before .venv-bench/bin/python scripts/bench_postprocess.py``; the first line
printed names the ``edgeseg`` that was imported.)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
sys.path.insert(0, str(REPO / "tests"))

from profile_semantic import Split, load_reference  # noqa: E402
from scenes import (  # noqa: E402
    BACKGROUND,
    CONTACT_SETS,
    HOSTILE_SETS,
    SCENE_SETS,
    SCORE_SETS,
    Scene,
    argmax_class_map,
)

import edgeseg  # noqa: E402
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


def time_once(fn: Any, *args: Any) -> tuple[float, int, Any]:
    """Wall time and minor page faults of one call, and its result."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t0
    return dt, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, out


def components_pass(cm: np.ndarray) -> Any:
    """The floor: one labelling pass with statistics over the map's foreground."""
    return cv2.connectedComponentsWithStats((cm != BACKGROUND).view(np.uint8), connectivity=8)


def timed_block(
    fn: Any, cm: np.ndarray, block: int, slow: float, kept: list[float], faults: list[int], *extra: Any
) -> Any:
    """``block`` calls of ``fn``, the first a warm-up unless ``block == 1`` or it is slow; the last result.
    The kept calls' times go to ``kept``, their page faults to ``faults``."""
    out = None
    for k in range(block):
        dt, flt, out = time_once(fn, cm, *extra)
        if k or block == 1 or dt > slow:
            kept.append(dt)
            faults.append(flt)
        if dt > slow:
            break
    return out


@contextlib.contextmanager
def one_opencv_thread() -> Iterator[None]:
    """OpenCV's calls on the calling thread, without its pool, while entered (the edgeseg command's
    setting); the pool's size as it was afterwards."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def modlib_call(segments_cls: Any, params: SemanticParams) -> Any:
    """modlib's ``Segments(mask).to_instance_segments(args)`` with edgeseg's parameter values."""
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

    return run_modlib


def pin_allocator() -> None:
    """glibc's malloc set to serve every block of a 480x640 map from its heap and to keep the heap's free
    pages (mmap threshold 32 MB, trim threshold 1 GB): no call then pays page faults for memory that an
    earlier call freed, whatever ran before (see the docstring)."""
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def edgeseg_input(sc: Scene) -> tuple[np.ndarray, dict[str, Any]]:
    """What edgeseg gets for a scene: its logits where it has them (with their background channel), else its
    class map; and the contact map or class beside it."""
    given: dict[str, Any] = {"touching": sc.touching, "contact": sc.contact}
    if sc.logits is not None:
        return sc.logits, {**given, "background": 0, "logits": True}
    return sc.class_map, given


def warm_up(
    sets: dict[str, list[Scene]], params: SemanticParams, run_modlib: Any, reference: Split | None
) -> None:
    """One call of each implementation on every map of every set, before any is timed: the heap grows to
    what the largest of them needs here, so no timed call pays for the heap's first pages (see the
    docstring)."""
    for scenes in sets.values():
        for sc in scenes:
            data, given = edgeseg_input(sc)
            run_modlib(data if sc.logits is None else argmax_class_map(data))
            semantic_to_instances(data, params, **given)
            components_pass(sc.class_map)
            if reference is not None:
                reference(data, params, **{"background": BACKGROUND, **given})


def bench_set(
    name: str,
    scenes: list[Scene],
    params: SemanticParams,
    opts: argparse.Namespace,
    run_modlib: Any,
    reference: Split | None = None,
) -> dict[str, Any]:
    f_mod: list[int] = []
    f_ours: list[int] = []
    t_mod, t_ours, t_cc, pq_mod, pq_ours, iou_mod, iou_ours, n_truth, n_mod, n_ours = ([] for _ in range(10))
    t_serial: list[float] = []
    t_cc_serial: list[float] = []
    t_ref: list[float] = []
    t_ref_serial: list[float] = []
    pq_ref: list[float] = []
    for sc in scenes:
        cm = sc.class_map
        tm: list[float] = []
        to: list[float] = []
        tc: list[float] = []
        ts: list[float] = []
        tcs: list[float] = []
        tr: list[float] = []
        trs: list[float] = []
        res_mod = res_ours = res_ref = None
        # (a contact map or class goes to the split beside the class map; modlib takes neither: it gets the
        # class map, a contact class one class more; nor scores: its time includes the argmax its user makes)
        data, given = edgeseg_input(sc)
        modlib = run_modlib if sc.logits is None else lambda logits: run_modlib(argmax_class_map(logits))
        ours = functools.partial(semantic_to_instances, params=params, **given)
        theirs = functools.partial(reference or semantic_to_instances, params=params, **given)
        start = time.perf_counter()
        turns = [(ours, to, ts, f_ours)] + ([(theirs, tr, trs, [])] if reference is not None else [])
        for k in range(opts.repeat):
            # a block of calls each; with blocks of 2 or more, the first call of a block (right after the
            # other implementation's, whose large allocations leave the allocator and caches cold) is not kept
            res_mod = timed_block(modlib, data, opts.block, opts.slow, tm, f_mod)
            # edgeseg and the reference take turns right after modlib: the same code timed second, after
            # edgeseg's own blocks, read 0.92-0.97x the time of the first with OpenCV's pool
            for turn, (split, pooled, serial, faults) in enumerate(turns[::-1] if k % 2 else turns):
                res = timed_block(split, data, opts.block, opts.slow, pooled, faults)
                res_ours, res_ref = (res, res_ref) if split is ours else (res_ours, res)
                if turn == 0:
                    timed_block(components_pass, cm, opts.block, opts.slow, tc, [])
                with one_opencv_thread():
                    timed_block(split, data, opts.block, opts.slow, serial, [])
                    if turn == 0:
                        timed_block(components_pass, cm, opts.block, opts.slow, tcs, [])
            if time.perf_counter() - start > opts.budget:
                break
        truth = sc.truth()
        inst_mod = modlib_to_instances(res_mod, cm.shape)
        q_mod, q_ours = panoptic_quality(inst_mod, truth), panoptic_quality(res_ours, truth)
        t_mod.append(float(np.median(tm)))
        t_ours.append(float(np.median(to)))
        t_cc.append(float(np.median(tc)))
        t_serial.append(float(np.median(ts)))
        t_cc_serial.append(float(np.median(tcs)))
        if reference is not None:
            t_ref.append(float(np.median(tr)))
            t_ref_serial.append(float(np.median(trs)))
            pq_ref.append(panoptic_quality(res_ref, truth).pq)
        pq_mod.append(q_mod.pq)
        pq_ours.append(q_ours.pq)
        iou_mod.append(q_mod.mean_matched_iou)
        iou_ours.append(q_ours.mean_matched_iou)
        n_truth.append(len(truth))
        n_mod.append(len(inst_mod))
        n_ours.append(len(res_ours))
    ms_mod, ms_ours = float(np.median(t_mod)) * 1e3, float(np.median(t_ours)) * 1e3
    ms_cc = float(np.median(t_cc)) * 1e3
    # ratios per map, then their median: the maps of a set differ in size of work
    per_cc = float(np.median(np.asarray(t_ours) / np.asarray(t_cc)))
    before = {}
    if reference is not None:
        before = {
            "reference_ms": round(float(np.median(t_ref)) * 1e3, 3),
            "reference_per_cc": round(float(np.median(np.asarray(t_ref) / np.asarray(t_cc))), 2),
            "reference_speedup": round(float(np.median(np.asarray(t_mod) / np.asarray(t_ref))), 2),
            "reference_over_edgeseg": round(float(np.median(np.asarray(t_ref) / np.asarray(t_ours))), 2),
            "reference_serial_ms": round(float(np.median(t_ref_serial)) * 1e3, 3),
            "reference_over_edgeseg_serial": round(
                float(np.median(np.asarray(t_ref_serial) / np.asarray(t_serial))), 2
            ),
            "reference_pq": round(float(np.mean(pq_ref)), 4),
        }
    return {
        "set": name,
        "shape": list(scenes[0].class_map.shape),
        "maps": len(scenes),
        "objects_mean": float(np.mean(n_truth)),
        "modlib_ms": round(ms_mod, 3),
        "edgeseg_ms": round(ms_ours, 3),
        "cc_ms": round(ms_cc, 3),
        "speedup": round(float(np.median(np.asarray(t_mod) / np.asarray(t_ours))), 2),
        "edgeseg_serial_ms": round(float(np.median(t_serial)) * 1e3, 3),
        "speedup_serial": round(float(np.median(np.asarray(t_mod) / np.asarray(t_serial))), 2),
        "cc_serial_ms": round(float(np.median(t_cc_serial)) * 1e3, 3),
        "edgeseg_per_cc_serial": round(float(np.median(np.asarray(t_serial) / np.asarray(t_cc_serial))), 2),
        "edgeseg_per_cc": round(per_cc, 2),
        "modlib_per_cc": round(float(np.median(np.asarray(t_mod) / np.asarray(t_cc))), 2),
        "calls_kept": [len(to), len(tm)],
        "page_faults_per_call": [int(np.median(f_ours)), int(np.median(f_mod))],
        "modlib_instances_mean": float(np.mean(n_mod)),
        "edgeseg_instances_mean": float(np.mean(n_ours)),
        "modlib_pq": round(float(np.mean(pq_mod)), 4),
        "edgeseg_pq": round(float(np.mean(pq_ours)), 4),
        "modlib_matched_iou": round(float(np.mean(iou_mod)), 4),
        "edgeseg_matched_iou": round(float(np.mean(iou_ours)), 4),
        **before,
    }


def summarize(rows: list[dict[str, Any]], reference: bool) -> dict[str, Any] | None:
    """The median over ``rows`` (sets) of edgeseg / connected components, the smallest modlib / edgeseg
    (with OpenCV's pool and on one thread) and largest edgeseg / connected components, and the sets under
    10x modlib (apart those where 10x modlib is below one labelling pass); None without rows."""
    if not rows:
        return None
    out: dict[str, Any] = {
        "edgeseg_per_cc_median": round(float(np.median([r["edgeseg_per_cc"] for r in rows])), 2),
        "edgeseg_per_cc_max": max(r["edgeseg_per_cc"] for r in rows),
        "edgeseg_per_cc_serial_median": round(
            float(np.median([r["edgeseg_per_cc_serial"] for r in rows])), 2
        ),
        "edgeseg_per_cc_serial_max": max(r["edgeseg_per_cc_serial"] for r in rows),
        "speedup_min": min(r["speedup"] for r in rows),
        "speedup_serial_min": min(r["speedup_serial"] for r in rows),
        "under_10x": [r["set"] for r in rows if r["speedup"] < 10 and r["modlib_per_cc"] >= 10],
        "under_10x_below_floor": [r["set"] for r in rows if r["speedup"] < 10 and r["modlib_per_cc"] < 10],
    }
    if reference:
        out["reference_per_cc_median"] = round(float(np.median([r["reference_per_cc"] for r in rows])), 2)
        out["reference_per_cc_max"] = max(r["reference_per_cc"] for r in rows)
        out["reference_speedup_min"] = min(r["reference_speedup"] for r in rows)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="maps per scene set")
    ap.add_argument("--repeat", type=int, default=15, help="timed blocks per map and implementation")
    ap.add_argument("--block", type=int, default=3, help="calls per block, the first a warm-up (1: keep all)")
    ap.add_argument("--dist-threshold", type=float, default=SemanticParams().dist_threshold)
    ap.add_argument("--rods", action="store_true", help="edgeseg fits crossing rods too (modlib has none)")
    ap.add_argument("--budget", type=float, default=4.0, help="seconds per map after which repeats stop")
    ap.add_argument("--slow", type=float, default=0.25, help="a call this long (s) ends its block, kept")
    ap.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave malloc as glibc sets it (modlib's times then depend on what the process ran before)",
    )
    ap.add_argument("--sets", default="", help="comma-separated set names (default: all, hostile included)")
    ap.add_argument(
        "--reference", type=Path, help="a copy of another version's edgeseg/semantic, timed alongside"
    )
    opts = ap.parse_args(argv)
    try:
        from modlib.models.results import Segments
    except ImportError as exc:
        print(f"modlib is not importable ({exc}); see this script's docstring for the setup", file=sys.stderr)
        return 2
    params = SemanticParams(dist_threshold=opts.dist_threshold, rods=opts.rods)
    reference = None
    if opts.reference is not None:
        if not (opts.reference / "__init__.py").is_file():
            print(
                f"--reference {opts.reference}: no __init__.py (give .../edgeseg/semantic)", file=sys.stderr
            )
            return 2
        reference = load_reference(opts.reference)
    every = {**SCENE_SETS, **HOSTILE_SETS, **CONTACT_SETS, **SCORE_SETS}
    names = [n for n in opts.sets.split(",") if n] or list(every)
    unknown = [n for n in names if n not in every]
    if unknown:
        print(f"unknown sets {unknown}; known: {sorted(every)}", file=sys.stderr)
        return 2
    sets = {name: [every[name](seed) for seed in range(opts.seeds)] for name in names}
    run_modlib = modlib_call(Segments, params)
    if not opts.glibc_defaults:
        pin_allocator()
    warm_up(sets, params, run_modlib, reference)
    rows = []
    head = (
        f"{'set':<20} {'HxW':>8} {'obj':>6} | {'modlib ms':>9} {'edgeseg ms':>10} {'CC ms':>6} "
        f"{'mod/es':>7} {'es/CC':>6} {'mod/CC':>6} | {'es1 ms':>7} {'mod/es1':>7} {'es1/CC1':>7} | "
        f"{'n mod':>6} {'n ours':>6} | "
        f"{'PQ mod':>6} {'PQ ours':>7} | "
        f"{'IoU mod':>7} {'IoU ours':>8}"
        + (
            ""
            if reference is None
            else f" | {'ref ms':>8} {'ref/es':>6} {'ref/CC':>6} {'ref1/es1':>8} {'PQ ref':>6}"
        )
    )
    print(f"edgeseg: {Path(edgeseg.__file__).parent}")
    print(f"malloc: {'glibc defaults' if opts.glibc_defaults else 'pinned'} (see the docstring)")
    print(f"params: {params}")
    if opts.reference is not None:
        print(f"reference: {opts.reference}")
    print(head)
    print("-" * len(head))
    for name, scenes in sets.items():
        r = bench_set(name, scenes, params, opts, run_modlib, reference)
        rows.append(r)
        ref_cols = ""
        if reference is not None:
            ref_cols = (
                f" | {r['reference_ms']:>8.2f} {r['reference_over_edgeseg']:>6.2f}"
                f" {r['reference_per_cc']:>6.1f} {r['reference_over_edgeseg_serial']:>8.2f}"
                f" {r['reference_pq']:>6.3f}"
            )
        print(
            f"{name:<20} {r['shape'][0]:>4}x{r['shape'][1]:<4} {r['objects_mean']:>6.0f} | "
            f"{r['modlib_ms']:>9.2f} {r['edgeseg_ms']:>10.2f} {r['cc_ms']:>6.2f} "
            f"{r['speedup']:>7.1f} {r['edgeseg_per_cc']:>6.1f} {r['modlib_per_cc']:>6.1f} | "
            f"{r['edgeseg_serial_ms']:>7.2f} {r['speedup_serial']:>7.2f}"
            f" {r['edgeseg_per_cc_serial']:>7.1f} | "
            f"{r['modlib_instances_mean']:>6.1f} {r['edgeseg_instances_mean']:>6.1f} | "
            f"{r['modlib_pq']:>6.3f} {r['edgeseg_pq']:>7.3f} | "
            f"{r['modlib_matched_iou']:>7.3f} {r['edgeseg_matched_iou']:>8.3f}{ref_cols}",
            flush=True,
        )
    summary = {
        "bench": "postprocess",
        "edgeseg": str(Path(edgeseg.__file__).parent),
        "repeat": opts.repeat,
        "block": opts.block,
        "allocator": "glibc defaults" if opts.glibc_defaults else "pinned",
        "reference": None if opts.reference is None else str(opts.reference),
        "summary": summarize(
            [r for r in rows if r["set"] not in CONTACT_SETS and r["set"] not in SCORE_SETS],
            reference is not None,
        ),
        # the split at a contact map, and of scores, apart: their sets would move the class maps' medians
        "contact_summary": summarize([r for r in rows if r["set"] in CONTACT_SETS], reference is not None),
        "scores_summary": summarize([r for r in rows if r["set"] in SCORE_SETS], reference is not None),
        "sets": rows,
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
