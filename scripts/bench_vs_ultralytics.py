#!/usr/bin/env python3
"""edgeseg run vs Ultralytics' sequential predict loop, same model and video, side by side (issue 18).

Model ``yolov8n-seg_int8_320.onnx`` and video ``pedestrians_crossing_640x360.mp4`` (188 frames) from
``../shared/assets``. Each round runs both, one after the other, as fresh processes (the order swaps every
round):

- edgeseg: ``.venv/bin/edgeseg run pipelines/video-file.yaml --source VIDEO --model MODEL --output T.jsonl
  --set sinks.video.path=null --no-display``: the real CLI and threaded pipeline, a video file read at the
  pipeline's pace (no frame dropped), results WRITTEN as JSON lines (polygon masks), no annotated video.
- Ultralytics: ``YOLO(MODEL, task="segment").predict(source=VIDEO, stream=True, imgsz=320, device="cpu")``
  in the reference env, a loop that only counts the results (nothing written, no masks serialized).

Neither side is pinned: edgeseg's ONNX Runtime takes one intra-op thread per usable core, Ultralytics'
keeps ONNX Runtime's default (one per physical core) and its own torch default (min(8, cores - 1)).

Figures per side and round:

- ``fps`` (the compared one): steady throughput from the first result to the last, ``(n - 1) / (t_last -
  t_first)``, so model loading, imports and the first frame are out on both sides. Ultralytics: timed in
  its loop. edgeseg: each JSONL record's done time = ``wall_time`` (capture) + ``timings_ms.latency``.
- ``proc_fps``: frames / wall time of the whole process (interpreter start, imports, model load included).
- edgeseg's own summary ``fps_mean`` (source open to end; model load out, first frame in) is shown too.

``ratio`` = edgeseg fps / Ultralytics fps per round; the target is the median ratio >= 1.10. No assertion:
the last stdout line is one JSON object with the figures.

Reference env (dev time only; Ultralytics is AGPL and never an edgeseg dependency): ``.venv-track`` (see
``scripts/bench_tracking.py``) or ``scripts/setup_ref_env.sh`` (makes ``.venv-ref``).

Run: ``.venv/bin/python scripts/bench_vs_ultralytics.py [--rounds 3] [--ref-python .venv-ref/bin/python]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolov8n-seg_int8_320.onnx"
VIDEO = ASSETS / "video" / "pedestrians_crossing_640x360.mp4"
FRAMES = 188
TARGET = 1.10

# Run by the reference python: argv = model, video; prints one JSON line.
ULTRALYTICS_CHILD = """
import json, sys, time
import torch
from ultralytics import YOLO
model = YOLO(sys.argv[1], task="segment")
n, t_first, t_last = 0, 0.0, 0.0
for _ in model.predict(source=sys.argv[2], stream=True, imgsz=320, device="cpu", verbose=False):
    t_last = time.perf_counter()
    t_first = t_first or t_last
    n += 1
fps = (n - 1) / (t_last - t_first) if n > 1 else 0.0
print(json.dumps({"frames": n, "fps": fps, "torch_threads": torch.get_num_threads()}))
"""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run_child(name: str, cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, str, float]:
    """Runs ``cmd`` from the repo root; returns its stdout, stderr and wall time, or exits on a failure."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        fail(f"{name} timed out after {timeout:.0f} s: " + " | ".join(err.strip().splitlines()[-5:]))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        fail(f"{name} exited {p.returncode}: " + " | ".join(p.stderr.strip().splitlines()[-5:]))
    return p.stdout, p.stderr, wall


def run_edgeseg(tmp: Path, timeout: float) -> dict[str, float]:
    out = tmp / "edgeseg.jsonl"
    exe = str(ROOT / ".venv" / "bin" / "edgeseg")
    cmd = [exe, "run", "pipelines/video-file.yaml", "--source", str(VIDEO), "--model", str(MODEL)]
    cmd += ["--output", str(out), "--set", "sinks.video.path=null", "--no-display"]
    stdout, stderr, wall = run_child("edgeseg run", cmd, dict(os.environ), timeout)
    m = re.search(r"(\d+) frames processed of (\d+) read in [\d.]+ s \(([\d.]+) fps\)", stdout)
    if m is None:
        fail(f"edgeseg run: no summary line in its output: {stdout.strip()[-300:]!r}")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    done = sorted(r["wall_time"] + r["timings_ms"]["latency"] / 1e3 for r in records if not r.get("final"))
    threads = re.search(r"(\d+) threads", stderr)
    return {
        "frames": int(m.group(1)),
        "jsonl_lines": len(done),
        "fps": (len(done) - 1) / (done[-1] - done[0]),
        "proc_fps": int(m.group(1)) / wall,
        "fps_mean": float(m.group(3)),
        "ort_threads": int(threads.group(1)) if threads else -1,
    }


def run_ultralytics(python: str, tmp: Path, timeout: float) -> dict[str, float]:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False", YOLO_VERBOSE="False")
    env["YOLO_CONFIG_DIR"] = str(tmp / "yolo-config")
    cmd = [python, "-c", ULTRALYTICS_CHILD, str(MODEL), str(VIDEO)]
    stdout, stderr, wall = run_child("ultralytics predict", cmd, env, timeout)
    for line in stderr.strip().splitlines()[-3:]:
        print(f"ultralytics stderr: {line}", file=sys.stderr)
    try:
        res = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        fail(f"ultralytics predict: no JSON result in its output: {stdout.strip()[-300:]!r}")
    return {**res, "proc_fps": res["frames"] / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    default_ref = ROOT / ".venv-track" / "bin" / "python"
    if not default_ref.exists():
        default_ref = ROOT / ".venv-ref" / "bin" / "python"
    ap.add_argument("--ref-python", default=str(default_ref), help=f"Ultralytics env (default {default_ref})")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per child process (default 300)")
    args = ap.parse_args()
    for path, what in ((MODEL, "model"), (VIDEO, "video"), (Path(args.ref_python), "reference python")):
        if not path.exists():
            fail(f"{what} not found: {path} (assets: ../shared/assets; ref env: scripts/setup_ref_env.sh)")

    rows: list[tuple[dict[str, float], dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-ul-") as d:
        tmp = Path(d)
        for i in range(args.rounds):
            runs: dict[str, dict[str, float]] = {}
            for side in ("edgeseg", "ultralytics") if i % 2 == 0 else ("ultralytics", "edgeseg"):
                if side == "edgeseg":
                    runs[side] = run_edgeseg(tmp, args.timeout)
                else:
                    runs[side] = run_ultralytics(args.ref_python, tmp, args.timeout)
                print(f"round {i + 1}: {side} {runs[side]['fps']:.2f} fps", file=sys.stderr, flush=True)
            rows.append((runs["edgeseg"], runs["ultralytics"]))

    es, ul = rows[0]
    print(f"model {MODEL.name}, video {VIDEO.name}; edgeseg writes JSONL, Ultralytics only iterates")
    print(
        f"threads: edgeseg ORT {es['ort_threads']} intra-op; Ultralytics ORT default (one per physical "
        f"core), torch {ul['torch_threads']} (Ultralytics' own default: min(8, cores - 1))"
    )
    print(f"{'round':<6}{'edgeseg fps':>12}{'ultra fps':>11}{'ratio':>8}{'es proc':>9}{'ul proc':>9}"
          f"{'es mean':>9}{'frames es/jsonl/ul':>20}")  # fmt: skip
    ratios = []
    for i, (es, ul) in enumerate(rows):
        ratios.append(es["fps"] / ul["fps"])
        frames = f"{es['frames']}/{es['jsonl_lines']}/{ul['frames']}"
        print(f"{i + 1:<6}{es['fps']:>12.2f}{ul['fps']:>11.2f}{ratios[-1]:>8.3f}{es['proc_fps']:>9.2f}"
              f"{ul['proc_fps']:>9.2f}{es['fps_mean']:>9.2f}{frames:>20}")  # fmt: skip
    median = statistics.median(ratios)
    frames_ok = all(es["frames"] == es["jsonl_lines"] == ul["frames"] == FRAMES for es, ul in rows)
    print(
        f"median ratio {median:.3f} (target >= {TARGET}); frames {'all' if frames_ok else 'NOT all'} {FRAMES}"
    )
    print(json.dumps({
        "edgeseg_fps": [round(es["fps"], 3) for es, _ in rows],
        "ultralytics_fps": [round(ul["fps"], 3) for _, ul in rows],
        "ratios": [round(r, 4) for r in ratios], "ratio_median": round(median, 4), "target": TARGET,
        "edgeseg_proc_fps": [round(es["proc_fps"], 3) for es, _ in rows],
        "ultralytics_proc_fps": [round(ul["proc_fps"], 3) for _, ul in rows],
        "edgeseg_fps_mean": [es["fps_mean"] for es, _ in rows],
        "frames": FRAMES, "frames_ok": frames_ok,
        "edgeseg_frames": [es["frames"] for es, _ in rows],
        "ultralytics_frames": [ul["frames"] for _, ul in rows],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
