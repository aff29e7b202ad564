#!/usr/bin/env python3
"""The thread planner's choice between frames run side by side and one run on every thread, and what the
choice is worth, on the demo's device pipeline.

The pipeline as ``scripts/bench_pipeline.py`` runs it at its default settings (pre-rendered frames, JSON lines
and MQTT to a Mosquitto started on loopback), in this process:

1. ``--starts`` fresh starts, each ``--frames`` frames, from one run on every thread with a planner that made
   no trial yet, as a device's first seconds: which plan each start kept (``edgeseg/threadplan.py``), and in
   how many of them the planner's trial read the plans under a tenth apart and measured each twice more
   (``measured_twice_more``). With
   ``--reference DIR``, the planner of another checkout's ``edgeseg/threadplan.py`` (the rest is this tree's)
   starts in turn with this tree's;
2. ``--pairs`` alternated pairs of runs with each plan held (no planner changes it): two runs side by side of
   one thread each (``fps``, ``cpu_ms_per_frame``, ``cores_busy``: medians), and one run of every thread
   (``*_reference``). ``fps_ratio``: the first's rate over the second's, median of the pairs; ``cpu_ratio``
   likewise for the CPU a frame.

The last line is one JSON object with the figures.

    mkdir -p /tmp/before && git archive HEAD~1 edgeseg | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_planner.py --reference /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_pipeline import DeviceRun, conveyor_frames, device_run, mosquitto, paired_figures  # noqa: E402

import edgeseg.pipeline  # noqa: E402
from edgeseg.backends.ort import OrtBackend  # noqa: E402
from edgeseg.config import load_config  # noqa: E402
from edgeseg.malloc import tune_malloc  # noqa: E402
from edgeseg.pipeline import ModelStages  # noqa: E402
from edgeseg.threadplan import Plan, ThreadCount, ThreadPlanner, serial_opencv  # noqa: E402

# the loggers the planners' decisions go to: this tree's, and the reference's (its module's name)
REFERENCE_MODULE = "reference_threadplan"
PLANNER_LOGS = ("edgeseg.threadplan", REFERENCE_MODULE)


def reference_planner(checkout: Path) -> Callable[[ThreadCount], Any]:
    """A fresh planner of the checkout's ``edgeseg/threadplan.py`` for a backend, from the plan it runs."""
    path = checkout / "edgeseg" / "threadplan.py"
    spec = importlib.util.spec_from_file_location(REFERENCE_MODULE, path)
    if not path.is_file() or spec is None or spec.loader is None:  # (a spec is made for a missing file too)
        raise SystemExit(f"--reference {checkout}: no edgeseg/threadplan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return lambda knob: module.ThreadPlanner(
        knob.most_threads, module.Plan(knob.runs, knob.threads), runs=True
    )


class Retrials(logging.Handler):
    """Counts the planners' trials that measured each plan twice more (from their logs)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "measuring each twice more" in record.getMessage()

    @classmethod
    def counting(cls) -> Retrials:
        """A count of both planners' trials, from both loggers: the reference's module logs under its own
        name, so this tree's logger alone would never see its trials."""
        retrials = cls()
        for name in PLANNER_LOGS:
            logging.getLogger(name).addHandler(retrials)
            logging.getLogger(name).setLevel(logging.INFO)
        return retrials


class HeldPlan(ThreadPlanner):
    """A planner that never asks for a change: the plan the backend was given is the run's."""

    def inferred(self, ms: float) -> Plan | None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--frames", type=int, default=900, help="frames a run (default 900)")
    ap.add_argument("--starts", type=int, default=6, help="fresh starts of each planner (default 6)")
    ap.add_argument("--pairs", type=int, default=6, help="alternated pairs of the two plans held (default 6)")
    ap.add_argument("--reference", type=Path, help="a checkout whose planner starts in turn with this tree's")
    args = ap.parse_args()
    if args.frames < 600 or args.starts < 0 or args.pairs < 0:
        ap.error(
            "--frames must be >= 600 (a trial takes ~280 frames, ~560 where it measures each plan twice "
            "more), --starts and --pairs >= 0"
        )
    retrials = Retrials.counting()  # (one count: the starts run one at a time, each reads what it added)

    tune_malloc()  # as the edgeseg command does
    serial_opencv()
    stages = ModelStages.from_config(load_config(None, []))
    backend = stages.model.backend
    if not isinstance(backend, OrtBackend) or backend.thread_count is None:
        raise SystemExit("the demo model's backend has no thread count to plan (one usable core?)")
    most = backend.most_threads
    images = conveyor_frames()

    planners: dict[str, Callable[[ThreadCount], Any]] = {
        "this": lambda knob: ThreadPlanner(knob.most_threads, Plan(knob.runs, knob.threads), runs=True)
    }
    if args.reference is not None:
        planners["reference"] = reference_planner(args.reference)

    def run(plan: Plan, planner: Callable[[ThreadCount], Any], tag: str) -> DeviceRun:
        if backend.threads != plan.threads:
            backend.set_threads(plan.threads)
        backend.runs = plan.runs
        edgeseg.pipeline.planner_for = planner  # type: ignore[assignment]  # the next pipeline's
        return device_run(stages, images, args.frames, Path(tmp), tag, port)

    kept: dict[str, list[str]] = {k: [] for k in planners}
    start_fps: dict[str, list[float]] = {k: [] for k in planners}
    twice = dict.fromkeys(planners, 0)  # starts whose trial measured each plan twice more
    held: dict[str, list[DeviceRun]] = {"side_by_side": [], "one_run": []}
    plans = {"side_by_side": Plan(most, 1), "one_run": Plan(1, most)}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        port = stack.enter_context(mosquitto(Path(tmp) / "broker")).port
        for i in range(args.starts):
            for name in planners if i % 2 == 0 else reversed(planners):
                before = retrials.count
                done = run(Plan(1, most), planners[name], f"start-{i}-{name}")
                kept[name].append(str(Plan(backend.runs, backend.threads)))
                twice[name] += retrials.count > before
                start_fps[name].append(done.fps)
                print(f"start {i} {name:9s} {done.fps:6.1f} fps; {done.plan}", flush=True)
        for i in range(args.pairs):
            for name in plans if i % 2 == 0 else reversed(plans):
                done = run(
                    plans[name], lambda knob: HeldPlan(most, Plan(knob.runs, knob.threads)), f"{i}-{name}"
                )
                held[name].append(done)
                print(f"held {name:12s} {done}", flush=True)
    stages.close()

    figures: dict[str, Any] = {"bench": "planner", "cores": most}
    for name in planners:
        counts = Counter(kept[name])
        figures[f"kept_{name}"] = dict(counts)
        figures[f"measured_twice_more_{name}"] = twice[name]
        if start_fps[name]:
            figures[f"start_fps_{name}"] = round(statistics.median(start_fps[name]), 2)
        print(
            f"{name} planner, {args.starts} starts: kept {dict(counts)}; measured twice more: {twice[name]}"
        )
    if args.pairs:
        figures |= paired_figures(held)  # side by side, and one run under *_reference
        print(
            f"held plans: {Plan(most, 1)} {figures['fps']:.1f} fps against {Plan(1, most)} "
            f"{figures['fps_reference']:.1f} (pairs: median {figures['fps_ratio']:.3f}; CPU a frame "
            f"{figures['cpu_ratio']:.3f})"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
