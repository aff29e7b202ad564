#!/usr/bin/env python3
"""The demo model against the one it replaced (issue 18, target 1 and 3), measured side by side in one run.

Both models run through the pipeline's own stages (``ModelStages``: the card's preprocessing, the
configured onnxruntime session, the semantic head), on the same frames:

1. preprocess, inference and decode time per frame, median over ``--rounds`` alternating rounds:
   ``infer_ratio`` (target <= 0.25) and ``decode_ratio`` (target <= 0.3), new over reference;
2. accuracy at frame resolution against the generator's exact ground truth: PQ (target >= 0.82) and mIoU
   (target >= 0.92) on the test scenes (seeds 0..9, frame 250, as tests/test_demo_model.py) and the
   hold-out scenes (seeds 200..229, frame 400, never used in training or tuning);
3. peak RSS of ``edgeseg run --max-frames 300`` (the demo pipeline, paced at 30 fps) with each model, in
   alternating child processes (median of ``--rss-rounds``): ``rss_ratio`` (target <= 0.5). This weighs the
   models alone: both runs have today's code. With ``--before DIR``, a checkout of the product as it was
   when issue 18 was filed (``mkdir DIR && git archive 65a21f9 | tar -x -C DIR``: its code, its own demo
   pipeline and model, which is the reference model) runs the same command between the other two, and
   ``rss_ratio_before`` is today's run over that one: the memory the product as a whole gave back. The same
   runs give each one's stage medians inside the running pipeline (``edgeseg run``'s summary):
   ``pipeline_decode_ms``;
4. with ``--before``, that checkout's own stages also time the same frames, alone, in a child process
   between the rounds of 1: ``decode_ratio_before`` and ``infer_ratio_before``, today's demo over the
   product as it was when the issue was filed (its argmax on the CPU and its split included).

The reference is ``models/reference/demo-parts-v1.onnx``, the demo model before this issue. Threads: the
pipeline's own choice (``model.threads: 0``) unless ``--threads`` is given. The last line is one JSON
object with the figures.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from stage_times import Times, time_frames  # noqa: E402

from edgeseg.config import load_config  # noqa: E402
from edgeseg.evaluate import PQAccumulator  # noqa: E402
from edgeseg.frame import Frame  # noqa: E402
from edgeseg.heads.semantic import SemanticHead  # noqa: E402
from edgeseg.pipeline import ModelStages  # noqa: E402
from edgeseg.synthetic import PartsScene, SyntheticFrame  # noqa: E402

MODELS = {"reference": REPO / "models/reference/demo-parts-v1.onnx", "new": REPO / "models/demo-parts.onnx"}
TEST = (tuple(range(10)), 250)
HOLDOUT = (tuple(range(200, 230)), 400)
CLASSES = 4


def stages_for(model: Path, threads: int | None) -> ModelStages:
    overrides = [f"model.path={json.dumps(str(model))}"]
    if threads is not None:
        overrides.append(f"model.threads={threads}")
    return ModelStages.from_config(load_config(str(REPO / "pipelines/demo.yaml"), overrides))


def accuracy(stages: ModelStages, scenes: list[SyntheticFrame]) -> tuple[float, float]:
    """PQ of the pipeline's instances and mIoU of the model's class map, summed over the scenes."""
    acc = PQAccumulator()
    conf = np.zeros(CLASSES * CLASSES, np.int64)
    head = stages.model.head
    assert isinstance(head, SemanticHead)
    for i, s in enumerate(scenes):
        f = Frame(i, s.image, 0, 0.0)
        p = stages.preprocess(f)
        outputs = stages.infer(p)
        acc.add(stages.decode(f, p, outputs), s.instances())
        maps = head.maps(outputs)  # the model's own resolution is the frame's (640x480) for both models
        ids = maps if maps.ndim == 2 else maps.argmax(0)
        conf += np.bincount(s.class_map.ravel() * CLASSES + ids.ravel(), minlength=conf.size)
    c = conf.reshape(CLASSES, CLASSES)
    iou = np.diag(c) / (c.sum(0) + c.sum(1) - np.diag(c))
    res = acc.result()
    return (0.0 if res is None else res.pq), float(iou.mean())


# A child starts with its parent's peak RSS (Linux carries it over fork and exec), so the run is started by a
# small launcher whose own children's peak is then the run's alone; it passes the run's summary on.
LAUNCHER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
if done.returncode:
    sys.exit(f"exit {done.returncode}: {done.stderr[-500:]}")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(done.stdout)
"""


@dataclass
class Run:
    """One child ``edgeseg run``: its peak RSS and the stage medians of its summary (ms, by stage)."""

    peak_rss_mb: float
    stage_ms: dict[str, float]


# The checkout before issue 18 was written for OpenCV up to 5.0, whose HoughLines returns None where it finds
# no line; 5.1 returns an empty array, and that code then fails on its first rod-shaped component (today's
# edgeseg/semantic/rods.py takes either). Its children get 5.0's return back from this sitecustomize.
OPENCV_50_HOUGH = """
import cv2
_hough_lines = cv2.HoughLines
def _none_when_empty(*args, **kwargs):
    lines = _hough_lines(*args, **kwargs)
    return None if lines is not None and len(lines) == 0 else lines
cv2.HoughLines = _none_when_empty
"""


@functools.cache
def opencv50_shim() -> Path:
    """A folder holding that sitecustomize, removed when this script ends."""
    shim = Path(tempfile.mkdtemp(prefix="opencv50-"))
    atexit.register(shutil.rmtree, shim, ignore_errors=True)
    (shim / "sitecustomize.py").write_text(OPENCV_50_HOUGH)
    return shim


def child_env(tree: Path) -> dict[str, str]:
    """The environment of a child that runs the ``edgeseg`` package of the checkout ``tree``."""
    path = [str(tree)] if tree == REPO else [str(tree), str(opencv50_shim())]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def demo_run(model: Path | None, tree: Path = REPO) -> Run:
    """A child ``edgeseg run --max-frames 300`` on the demo pipeline with ``model`` (None: the pipeline's
    own), the ``edgeseg`` package of the checkout ``tree``."""
    run = [sys.executable, "-m", "edgeseg", "run", "--max-frames", "300"]
    run += [] if model is None else ["--set", f"model.path={model}"]
    env = child_env(tree)  # (-m finds the package in the working folder first)
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *run], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(run)}: {done.stderr.strip()}")
    rss, _, summary = done.stdout.partition("\n")
    medians = re.search(r"^stage medians: (.*)$", summary, re.MULTILINE)
    if medians is None:
        raise SystemExit(f"{' '.join(run)}: no 'stage medians' line in its summary:\n{summary}")
    stage_ms = {k: float(v) for k, v in re.findall(r"([\w:]+) ([\d.]+) ms", medians.group(1))}
    return Run(int(rss) / 1024, stage_ms)


def median_run(runs: list[Run]) -> Run:
    """The median peak RSS of ``runs``, and the median of each stage's medians."""
    stages = set.intersection(*(set(r.stage_ms) for r in runs))
    return Run(
        statistics.median(r.peak_rss_mb for r in runs),
        {k: statistics.median(r.stage_ms[k] for r in runs) for k in stages},
    )


def time_checkout(tree: Path, images: Path, threads: int | None) -> Times:
    """The stages of the checkout ``tree``'s demo pipeline on the frames in ``images``, in a child."""
    overrides = [] if threads is None else [f"model.threads={threads}"]
    env = child_env(tree)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/stage_times.py"), str(images), *overrides],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"timing the stages of {tree}: {done.stderr.strip()[-800:]}")
    times = json.loads(done.stdout.strip().splitlines()[-1])
    return Times(times["preprocess"], times["infer"], times["decode"])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (default 3)")
    ap.add_argument("--frames", type=int, default=40, help="frames per timing round (default 40)")
    ap.add_argument("--threads", type=int, help="inference threads (default: the pipeline's choice)")
    ap.add_argument("--no-rss", action="store_true", help="skip the edgeseg run child processes")
    ap.add_argument(
        "--rss-rounds", type=int, default=3, help="alternating edgeseg run rounds, medians (default 3)"
    )
    ap.add_argument(
        "--before", type=Path, help="a checkout of the product before issue 18: its stages and peak RSS"
    )
    args = ap.parse_args()
    if args.rss_rounds < 1:
        ap.error("--rss-rounds must be >= 1")
    if args.before is not None and (args.no_rss or not (args.before / "edgeseg" / "__init__.py").is_file()):
        ap.error(f"--before {args.before}: needs the RSS runs and a checkout with an edgeseg package")

    stages = {k: stages_for(p, args.threads) for k, p in MODELS.items()}
    scene = PartsScene(640, 480, seed=5)
    frames = [Frame(i, scene.frame(7 * i).image, 0, 0.0) for i in range(args.frames)]
    for s in stages.values():
        time_frames(s, frames[:3])  # warm-up
    rounds: dict[str, list[Times]] = {k: [] for k in [*stages, *(["before"] if args.before else [])]}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images.npy"
        np.save(images, np.stack([f.image for f in frames]))
        for r in range(args.rounds):
            for k in list(rounds) if r % 2 == 0 else list(rounds)[::-1]:
                if k == "before":
                    rounds[k].append(time_checkout(args.before.resolve(), images, args.threads))
                else:
                    rounds[k].append(time_frames(stages[k], frames))

    def med(k: str, stage: str) -> float:
        return statistics.median(statistics.median(getattr(t, stage)) for t in rounds[k])

    def ratio(stage: str, over: str = "reference") -> float:
        per_round = [
            statistics.median(getattr(n, stage)) / statistics.median(getattr(o, stage))
            for n, o in zip(rounds["new"], rounds[over], strict=True)
        ]
        return statistics.median(per_round)

    before = "before" in rounds
    print(
        f"{'ms per frame (median)':<24}{'reference':>10}{'new':>10}{'new/ref':>9}"
        + (f"{'before':>10}{'new/before':>11}" if before else "")
        + "  target"
    )
    targets = {"preprocess": "", "infer": "<= 0.25", "decode": "<= 0.30"}
    for stage, target in targets.items():
        ref, new = med("reference", stage), med("new", stage)
        then = f"{med('before', stage):>10.2f}{ratio(stage, 'before'):>11.3f}" if before else ""
        print(f"{stage:<24}{ref:>10.2f}{new:>10.2f}{ratio(stage):>9.3f}{then}  {target}")

    sets = {"test": TEST, "holdout": HOLDOUT}
    quality: dict[str, dict[str, tuple[float, float]]] = {k: {} for k in stages}
    for name, (seeds, index) in sets.items():
        scenes = [PartsScene(640, 480, seed=s).frame(index) for s in seeds]
        for k in stages:
            quality[k][name] = accuracy(stages[k], scenes)
    for k in stages:
        figures = "   ".join(f"{n}: PQ {pq:.4f}, mIoU {miou:.4f}" for n, (pq, miou) in quality[k].items())
        print(f"{k:<10} {figures}")
    print("targets    PQ >= 0.82 and mIoU >= 0.92 on both sets")

    runs: dict[str, Run] = {}
    rss: dict[str, float] = {}
    if not args.no_rss:
        for s in stages.values():
            s.model.close()
        jobs: dict[str, tuple[Path | None, Path]] = {"reference": (MODELS["reference"], REPO)}
        if args.before is not None:  # between the other two
            jobs["before"] = (None, args.before.resolve())
        jobs["new"] = (MODELS["new"], REPO)
        each: dict[str, list[Run]] = {k: [] for k in jobs}
        for r in range(args.rss_rounds):  # one run's peak moves by a few MB from run to run
            for k in list(jobs) if r % 2 == 0 else list(jobs)[::-1]:
                each[k].append(demo_run(*jobs[k]))
        runs = {k: median_run(v) for k, v in each.items()}
        rss = {k: r.peak_rss_mb for k, r in runs.items()}
        spread = ", ".join(
            f"{k} {min(r.peak_rss_mb for r in v):.0f}-{max(r.peak_rss_mb for r in v):.0f}"
            for k, v in each.items()
        )
        print(
            f"peak RSS of edgeseg run --max-frames 300 (median of {args.rss_rounds}): reference "
            f"{rss['reference']:.0f} MB, new {rss['new']:.0f} MB, ratio {rss['new'] / rss['reference']:.2f}"
            f" (target <= 0.5); range {spread} MB"
        )
        if "before" in rss:
            print(
                f"  the product before ({args.before}): {rss['before']:.0f} MB, "
                f"new / before {rss['new'] / rss['before']:.2f}"
            )
        inside = ", ".join(
            f"{k} {r.stage_ms.get('infer', float('nan')):.1f} / {r.stage_ms.get('decode', float('nan')):.1f}"
            for k, r in runs.items()
        )
        print(f"  inside those runs, infer / decode stage medians (ms): {inside}")
    print(
        json.dumps(
            {
                **{f"{k}_{s}_ms": round(med(k, s), 2) for k in rounds for s in targets},
                **{f"{s}_ratio": round(ratio(s), 3) for s in targets},
                **({f"{s}_ratio_before": round(ratio(s, "before"), 3) for s in targets} if before else {}),
                **{f"{k}_{n}_pq": round(q[n][0], 4) for k, q in quality.items() for n in sets},
                **{f"{k}_{n}_miou": round(q[n][1], 4) for k, q in quality.items() for n in sets},
                **{f"{k}_peak_rss_mb": round(v, 1) for k, v in rss.items()},
                **{
                    f"{k}_pipeline_{s}_ms": r.stage_ms.get(s)
                    for k, r in runs.items()
                    for s in ("infer", "decode")
                },
                **({"rss_ratio": round(rss["new"] / rss["reference"], 3)} if rss else {}),
                **({"rss_ratio_before": round(rss["new"] / rss["before"], 3)} if "before" in rss else {}),
            }
        )
    )


if __name__ == "__main__":
    main()
