#!/usr/bin/env python3
"""edgeseg run vs Ultralytics' sequential predict loop, same model and video, side by side (issue 18).

Model ``yolov8n-seg_int8_320.onnx`` and video ``pedestrians_crossing_640x360.mp4`` (188 frames) from
``../shared/assets`` (``EDGESEG_ASSETS``). Each round runs the three sides below one after the other, as
fresh processes (each goes first in turn):

- edgeseg: ``python -m edgeseg run pipelines/video-file.yaml --source VIDEO --model MODEL --output T.jsonl
  --set sinks.video.path=null --no-display``: the real CLI and threaded pipeline, a video file read at the
  pipeline's pace (no frame dropped), results WRITTEN as JSON lines (polygon masks), no annotated video.
  Its default on x86-64 runs the model's dynamically quantized convolutions as float ones (see
  ``edgeseg/floatconv.py``); the JSON line reports how many of the int8 graph's instances the
  float run matches (same class, box IoU >= 0.5).
- edgeseg-int8: the same with ``--set model.float_convs=false``: the graph exactly as given, so the
  pipeline alone against Ultralytics' loop.
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

``ratio`` = edgeseg fps / Ultralytics fps per round (and the same for edgeseg-int8); the target is the median
ratio >= 1.10. No assertion:
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
# (the tests' and the other benches' variable: assets kept elsewhere were not found here)
ASSETS = Path(os.environ.get("EDGESEG_ASSETS", ROOT.parent / "shared" / "assets"))
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


def run_edgeseg(tmp: Path, timeout: float, float_convs: bool) -> dict[str, float]:
    out = tmp / f"edgeseg-float-convs-{float_convs}.jsonl"
    cmd = [sys.executable, "-m", "edgeseg", "run", "pipelines/video-file.yaml"]
    cmd += ["--source", str(VIDEO), "--model", str(MODEL)]
    cmd += ["--output", str(out), "--set", "sinks.video.path=null", "--no-display"]
    cmd += ["--set", f"model.float_convs={str(float_convs).lower()}"]
    stdout, stderr, wall = run_child("edgeseg run", cmd, dict(os.environ), timeout)
    m = re.search(r"(\d+) frames? processed of (\d+) read in [\d.]+ s \(([\d.]+) fps\)", stdout)
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


def box_iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def agreement(given: Path, floats: Path) -> dict[str, float]:
    """How far the float-conv run's results are from the int8 graph's: each int8 instance (by score) is
    matched to the unmatched float one of its class whose box overlaps it most, at IoU >= 0.5."""
    frames = [
        {
            r["frame"]: r["instances"]
            for r in map(json.loads, p.read_text().splitlines())
            if not r.get("final")
        }
        for p in (given, floats)
    ]
    n_given = n_float = 0
    ious: list[float] = []
    for f, mine in frames[0].items():
        theirs = frames[1].get(f, [])
        n_given, n_float, free = n_given + len(mine), n_float + len(theirs), set(range(len(theirs)))
        for a in sorted(mine, key=lambda a: -a["score"]):
            cands = [(box_iou(a["bbox_xyxy"], theirs[j]["bbox_xyxy"]), j) for j in free
                     if theirs[j]["class_id"] == a["class_id"]]  # fmt: skip
            best, j = max(cands, default=(0.0, -1))
            if best >= 0.5:
                free.discard(j)
                ious.append(best)
    return {
        "int8_instances": n_given, "float_instances": n_float, "matched": len(ious),
        "matched_share": round(len(ious) / max(n_given, 1), 4),
        "matched_box_iou_median": round(statistics.median(ious), 4) if ious else 0.0,
    }  # fmt: skip


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
            fail(f"{what} not found: {path} (assets: EDGESEG_ASSETS; ref env: scripts/setup_ref_env.sh)")

    rows: list[tuple[dict[str, float], dict[str, float], dict[str, float]]] = []
    sides = ["edgeseg", "edgeseg-int8", "ultralytics"]
    with tempfile.TemporaryDirectory(prefix="bench-vs-ul-") as d:
        tmp = Path(d)
        for i in range(args.rounds):
            runs: dict[str, dict[str, float]] = {}
            for side in sides[i % 3 :] + sides[: i % 3]:  # each side goes first in turn
                if side == "ultralytics":
                    runs[side] = run_ultralytics(args.ref_python, tmp, args.timeout)
                else:
                    runs[side] = run_edgeseg(tmp, args.timeout, float_convs=side == "edgeseg")
                print(f"round {i + 1}: {side} {runs[side]['fps']:.2f} fps", file=sys.stderr, flush=True)
            rows.append((runs["edgeseg"], runs["ultralytics"], runs["edgeseg-int8"]))
        agree = agreement(tmp / "edgeseg-float-convs-False.jsonl", tmp / "edgeseg-float-convs-True.jsonl")

    es, ul, _ = rows[0]
    print(f"model {MODEL.name}, video {VIDEO.name}; edgeseg writes JSONL, Ultralytics only iterates")
    print(
        "edgeseg runs the int8 convolutions in float (model.float_convs, its default on x86-64); "
        "edgeseg-int8 runs the graph as given (model.float_convs=false)"
    )
    print(
        f"threads: edgeseg ORT {es['ort_threads']} intra-op; Ultralytics ORT default (one per physical "
        f"core), torch {ul['torch_threads']} (Ultralytics' own default: min(8, cores - 1))"
    )
    print(f"{'round':<6}{'edgeseg fps':>12}{'ultra fps':>11}{'ratio':>8}{'es-int8':>9}{'ratio':>7}"
          f"{'es proc':>9}{'ul proc':>9}{'es mean':>9}{'frames es/jsonl/int8/ul':>25}")  # fmt: skip
    ratios, ratios_int8 = [], []
    for i, (es, ul, e8) in enumerate(rows):
        ratios.append(es["fps"] / ul["fps"])
        ratios_int8.append(e8["fps"] / ul["fps"])
        frames = f"{es['frames']}/{es['jsonl_lines']}/{e8['frames']}/{ul['frames']}"
        print(f"{i + 1:<6}{es['fps']:>12.2f}{ul['fps']:>11.2f}{ratios[-1]:>8.3f}{e8['fps']:>9.2f}"
              f"{ratios_int8[-1]:>7.3f}{es['proc_fps']:>9.2f}{ul['proc_fps']:>9.2f}{es['fps_mean']:>9.2f}"
              f"{frames:>25}")  # fmt: skip
    median, median_int8 = statistics.median(ratios), statistics.median(ratios_int8)
    frames_ok = all(
        es["frames"] == es["jsonl_lines"] == e8["frames"] == ul["frames"] == FRAMES for es, ul, e8 in rows
    )
    print(
        f"median ratio {median:.3f} (target >= {TARGET}), graph as given {median_int8:.3f}; "
        f"frames {'all' if frames_ok else 'NOT all'} {FRAMES}"
    )
    print(
        f"float convolutions vs the int8 graph (last round): {agree['matched']} of {agree['int8_instances']} "
        f"instances matched ({agree['matched_share']:.1%}; same class, box IoU >= 0.5, median "
        f"{agree['matched_box_iou_median']:.3f}); the float run found {agree['float_instances']}"
    )
    print(json.dumps({
        "edgeseg_fps": [round(es["fps"], 3) for es, _, _ in rows],
        "edgeseg_int8_fps": [round(e8["fps"], 3) for _, _, e8 in rows],
        "ultralytics_fps": [round(ul["fps"], 3) for _, ul, _ in rows],
        "ratios": [round(r, 4) for r in ratios], "ratio_median": round(median, 4), "target": TARGET,
        "ratios_int8": [round(r, 4) for r in ratios_int8], "ratio_int8_median": round(median_int8, 4),
        "agreement": agree,
        "edgeseg_proc_fps": [round(es["proc_fps"], 3) for es, _, _ in rows],
        "ultralytics_proc_fps": [round(ul["proc_fps"], 3) for _, ul, _ in rows],
        "edgeseg_fps_mean": [es["fps_mean"] for es, _, _ in rows],
        "frames": FRAMES, "frames_ok": frames_ok,
        "edgeseg_frames": [es["frames"] for es, _, _ in rows],
        "ultralytics_frames": [ul["frames"] for _, ul, _ in rows],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
