#!/usr/bin/env python3
"""Is ``edgeseg bench``'s predicted pipeline rate what ``edgeseg run`` then measures? (issue 18, target 4)

Run: ``.venv/bin/python scripts/bench_prediction.py`` (about 2 minutes a round on a 2-core machine). Each
round runs ``edgeseg bench`` on the pipeline, then at once ``edgeseg run`` on the same pipeline, and prints
bench's predicted rate (its ``predicted pipeline rate:`` line), run's measured rate (the ``(N fps)`` of its
summary: frames processed per second over the run) and their error. Options: ``--pipeline`` (default
``pipelines/demo.yaml``), ``--rounds N`` (default 2), ``--frames N`` / ``--warmup N`` (bench's, default 60 and
5), ``--max-frames N`` (run's, default 300). Both run in a temporary folder, where the outputs a pipeline
names with relative paths go (the bundled video-file pipeline writes an annotated video and JSON lines). The
last line is JSON with the figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_PCT = 15
PREDICTED = re.compile(r"^predicted pipeline rate: ([0-9.]+) fps", re.MULTILINE)
# run's summary: "done: 81 frames processed of 150 read in 18.1 s (4.5 fps); latency ..."
MEASURED = re.compile(r"frames? processed of \d+ read in [0-9.]+ s \(([0-9.]+) fps\)")


def edgeseg(*args: str, cwd: Path) -> str:
    """stdout and stderr of one ``edgeseg`` command run in ``cwd`` (where a pipeline's relative output paths
    then lead); exits with its output when it fails."""
    # (this interpreter's edgeseg, not a .venv's beside the script: another venv, or a checkout without one)
    done = subprocess.run([sys.executable, "-m", "edgeseg", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"edgeseg {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def figure(pattern: re.Pattern[str], output: str, what: str) -> float:
    found = pattern.search(output)
    if found is None:
        sys.exit(f"no {what} in:\n{output}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="pipelines/demo.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-frames", type=int, default=300)
    args = parser.parse_args()
    predicted: list[float] = []
    measured: list[float] = []
    # (a pipeline file named by its path, from here; a bundled one by its name)
    pipeline = str(Path(args.pipeline).resolve()) if Path(args.pipeline).is_file() else args.pipeline
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            bench = edgeseg(
                "bench", pipeline, "--frames", str(args.frames),
                "--warmup", str(args.warmup), "--plot", str(Path(tmp) / "bench.png"), cwd=Path(tmp),
            )  # fmt: skip
            run = edgeseg("run", pipeline, "--max-frames", str(args.max_frames), cwd=Path(tmp))
            predicted.append(figure(PREDICTED, bench, "predicted pipeline rate"))
            measured.append(figure(MEASURED, run, "measured rate"))
            print(
                f"round {k + 1}: predicted {predicted[-1]:.1f} fps, measured {measured[-1]:.1f} fps, "
                f"ratio {predicted[-1] / measured[-1]:.2f}",
                flush=True,
            )
    error = [round(100 * (p - m) / m, 1) for p, m in zip(predicted, measured, strict=True)]
    print(
        json.dumps(
            {
                "predicted_fps": predicted,
                "measured_fps": measured,
                "error_pct": error,
                "target_pct": TARGET_PCT,
            }
        )
    )


if __name__ == "__main__":
    main()
