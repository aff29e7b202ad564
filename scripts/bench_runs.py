#!/usr/bin/env python3
"""Frames side by side: this tree's turn-taking of the inference runs (``edgeseg.pipeline._Runs``) against
another checkout's, alternated in one process on the demo pipeline.

The demo pipeline as ``scripts/bench_pipeline.py`` runs it at its default settings (pre-rendered frames,
JSON lines and MQTT to a Mosquitto started on loopback; ``--no-mqtt``: JSON lines only), ``--frames`` a run.
The first run lets the thread planner decide, as a device's first seconds do; the pairs then run on the plan
it kept, the two turn-takings alternated over ``--pairs`` (everything else is this tree's). The comparison
means something only where the plan is two or more runs at once, which each run's line shows. Per run: its
rate and how many of the cores the process kept busy (its CPU time over the wall time). The last line is one
JSON object: the medians, and ``fps_ratio``, the median over pairs of this tree's rate over the other's.

    mkdir -p /tmp/before && git archive HEAD~1 edgeseg | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_runs.py --reference /tmp/before
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_pipeline import alternated_device_runs, paired_figures  # noqa: E402

import edgeseg.pipeline  # noqa: E402


def reference_runs(checkout: Path) -> type:
    """The ``_Runs`` class of the checkout's ``edgeseg/pipeline.py`` (its other names come from this tree)."""
    path = checkout / "edgeseg" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("reference_pipeline", path)
    if not path.is_file() or spec is None or spec.loader is None:  # (a spec is made for a missing file too)
        raise SystemExit(f"--reference {checkout}: no edgeseg/pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    runs: type = module._Runs
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="a checkout with an edgeseg package")
    ap.add_argument("--frames", type=int, default=400, help="frames a run (default 400)")
    ap.add_argument("--pairs", type=int, default=8, help="alternated pairs (default 8)")
    ap.add_argument("--no-mqtt", action="store_true", help="the pipeline without its MQTT sink")
    args = ap.parse_args()
    if args.frames < 50 or args.pairs < 1:
        ap.error("--frames must be >= 50 and --pairs >= 1")
    turns = {"this": edgeseg.pipeline._Runs, "reference": reference_runs(args.reference)}

    def use(kind: str) -> None:
        edgeseg.pipeline._Runs = turns[kind]  # type: ignore[misc]

    runs = alternated_device_runs(
        {kind: lambda kind=kind: use(kind) for kind in turns}, args.frames, args.pairs, not args.no_mqtt
    )
    figures = {"bench": "runs", "reference": str(args.reference), "mqtt": not args.no_mqtt}
    figures |= paired_figures(runs)
    print(
        f"this tree {figures['fps']:.1f} fps against {figures['fps_reference']:.1f} (pairs: median "
        f"{figures['fps_ratio']:.3f}); cores busy {figures['cores_busy']:.2f} against "
        f"{figures['cores_busy_reference']:.2f}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
