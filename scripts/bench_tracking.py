"""Tracking: edgeseg's tracker vs `trackers`' ByteTrack and Ultralytics' BYTETracker on identical detections.

Sequences (each tracker gets a fresh instance per sequence):

- ``conveyor``: the demo model's detections on synthetic conveyor seeds 300-309, frames 0-149 (30 fps scene
  time), cached under ``--cache`` (keyed by the model's and the package's bytes) so reruns skip the model;
  truth is the scene's exact track ids.
- ``crossing``: generated scenes of thin rods passing each other (their boxes overlap, their masks do not)
  and hiding behind an occluder band; detections are the truth with jitter, low scores and misses.

Each is taken every 1st, 3rd and 6th frame (30, 10 and 5 fps). Every tracker gets the frames' capture times:
edgeseg uses them; `trackers` takes them as ``timestamp`` with ``frame_rate`` set to the rate; Ultralytics
counts frames only (``track_buffer`` 30 frames at every rate, as its users run it). The peers keep their
defaults otherwise. Scores per tracker, rate and set: IDF1, ID switches, MOTA (edgeseg.metrics: per-frame
class-aware mask IoU > 0.5; a peer's boxes are mapped back to the detections they came from, so all are
scored on the same masks). edgeseg splits a detection that merged two of its tracks and joins the pieces of
one (``split_merged``, ``join_fragments``, its defaults), so it is also scored with both off, on exactly the
detections every peer gets. Then the cost per
frame at 50 masked objects on 640x480 frames, trackers called in turn on each frame, medians: edgeseg's
(masks) next to `trackers`' and Ultralytics' (boxes only, their cheapest input).

``--sets hostile`` (no peer needed: ``.venv/bin/python scripts/bench_tracking.py --sets hostile``): edgeseg's
tracker on maps no model should draw, each the instances ``semantic_to_instances`` makes of it, the map moved
2 px a frame: the hostile class maps of ``tests/scenes.py`` and nested rings of one class (every box over
every other, each track compared with every detection). Per map, ms an update (median and worst, after the
first), against the split's own ms on the same maps; mask comparisons the update's budget left out
(``edgeseg.tracker.LOOK_FRAMES``). Then on real scenes, the conveyor's (the demo model, seeds 300-302) and a
street's (YOLOv8n-seg on ``pedestrians_crossing_640x360.mp4``, its 188 frames, where ``../shared/assets``
holds them): how much of the budget an update uses (frames of pixels) and its ms. With ``--reference DIR``
(another version's ``edgeseg/tracker.py`` under DIR, e.g. ``git archive HEAD | tar -x -C DIR``), that
version is timed on the same instances, the two in turn on each frame (on a hostile map, right after the
split of that frame), and their track ids compared.
The last line is one JSON object.

Setup (dev-time only: neither peer is ever a dependency of edgeseg; Ultralytics is AGPL and needs torch):

    python3.11 -m venv .venv-track
    .venv-track/bin/pip install trackers lap motmetrics onnxruntime pyyaml paho-mqtt polars psutil pillow \
        requests matplotlib torch==2.14.1
    .venv-track/bin/pip install --no-deps ultralytics==8.4.190 ultralytics-thop torchvision==0.29.1
    .venv-track/bin/pip install --no-deps -e .

Run: ``.venv-track/bin/python scripts/bench_tracking.py`` (``--sets crossing`` skips the model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from edgeseg.instances import Instances
from edgeseg.metrics import TrackingAccumulator, TrackingScore
from edgeseg.tracker import Tracker, TrackerConfig

SCENE_FPS = 30.0
STEPS = {30: 1, 10: 3, 5: 6}
Sequence = list[tuple[Instances, Instances]]  # (detections, truth) per frame
Track = Callable[[Instances, int], Instances]  # detections, capture ns -> detections with track ids


# --- sequences -------------------------------------------------------------------------------------------


def conveyor(seeds: range, frames: int, cache: Path) -> dict[int, Sequence]:
    """The demo model's detections and the truth for each seed, from the cache when it has them."""
    import edgeseg
    from edgeseg.config import load_config
    from edgeseg.frame import Frame
    from edgeseg.synthetic import PartsScene

    config = load_config(None)
    model = Path(config.model.path)
    # the model's bytes and every source file of the package (the scene, preprocessing, the decode,
    # Instances): a change to any of them must not reuse detections made before it
    key = hashlib.sha256(f"{frames}".encode())
    for file in [model, *sorted(Path(edgeseg.__file__).parent.rglob("*.py"))]:
        key.update(file.read_bytes())
    out: dict[int, Sequence] = {}
    stages = None
    for seed in seeds:
        file = cache / f"conveyor-{seed}-{key.hexdigest()[:12]}.pkl"
        if file.exists():
            out[seed] = pickle.loads(file.read_bytes())
            continue
        if stages is None:
            from edgeseg.pipeline import ModelStages

            stages = ModelStages.from_config(config)
        scene = PartsScene(640, 480, seed=seed)
        seq: Sequence = []
        for i in range(frames):
            rendered = scene.frame(i)
            frame = Frame(index=i, image=rendered.image, t_capture_ns=0, wall_time=0.0)
            prepared = stages.preprocess(frame)
            seq.append((stages.decode(frame, prepared, stages.infer(prepared)), rendered.instances()))
        cache.mkdir(parents=True, exist_ok=True)
        file.write_bytes(pickle.dumps(seq))
        out[seed] = seq
        print(f"conveyor seed {seed}: detections cached in {file}", file=sys.stderr)
    return out


def _rod(w: int, h: int, cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    pts = cv2.boxPoints(((cx, cy), (length, width), angle))
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def crossing(seed: int, frames: int = 150, n: int = 8, w: int = 640, h: int = 480) -> Sequence:
    """Rods at +-45 degrees passing each other at 60-200 px/s, bouncing off the edges, unseen while their
    centre is behind a vertical occluder band; detections: truth jittered by 1 px, 10 % at a low score,
    4 % missed."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform([80, 60], [w - 80, h - 60], (n, 2))
    speed = rng.uniform(60, 200, n) / SCENE_FPS
    heading = rng.uniform(0, 2 * np.pi, n)
    vel = np.stack([np.cos(heading), np.sin(heading)], 1) * speed[:, None]
    shape = np.stack([rng.uniform(80, 140, n), rng.uniform(6, 10, n), rng.choice([-45.0, 45.0], n)], 1)
    cls = rng.integers(0, 2, n)
    band = (290, 350)
    seq: Sequence = []
    for _ in range(frames):
        pos += vel
        for k in range(2):
            out = (pos[:, k] < 40) | (pos[:, k] > (w, h)[k] - 40)
            vel[out, k] *= -1
        visible = [i for i in range(n) if not band[0] <= pos[i, 0] <= band[1]]
        masks = [_rod(w, h, *pos[i], *shape[i]) for i in visible]
        truth = _from_full(masks, cls[visible], np.ones(len(visible)), np.asarray(visible, np.int64) + 1)
        seen = [k for k in range(len(visible)) if rng.random() > 0.04]
        jit = rng.integers(-1, 2, (len(seen), 2))
        det_masks = [_rod(w, h, *(pos[visible[k]] + jit[m]), *shape[visible[k]]) for m, k in enumerate(seen)]
        seen = [k for m, k in enumerate(seen) if det_masks[m].any()]
        det_masks = [m for m in det_masks if m.any()]
        score = np.where(rng.random(len(seen)) < 0.1, rng.uniform(0.15, 0.45), rng.uniform(0.6, 0.95))
        seq.append((_from_full(det_masks, cls[visible][seen], score, None), truth))
    return seq


def _from_full(masks: list[np.ndarray], cls: Any, score: Any, track: Any) -> Instances:
    if not masks:
        empty = Instances.empty((480, 640))
        return empty if track is None else empty.with_track_ids(np.zeros(0, np.int64))
    crops, origins = [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        crops.append(m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        origins.append((int(xs.min()), int(ys.min())))
    return Instances.from_crops((480, 640), cls, score, origins, crops, track_id=track)


def objects50(frames: int, seed: int = 0) -> list[Instances]:
    """50 ellipses (15-30 px) drifting on a 640x480 frame: the cost benchmark's input."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(10) * 62 + 40, np.arange(5) * 90 + 50)
    base = np.stack([gx.ravel(), gy.ravel()], 1).astype(float)
    vel = rng.uniform(-1.5, 1.5, (50, 2))
    axes = rng.uniform(8, 15, (50, 2))
    out = []
    for f in range(frames):
        crops, origins = [], []
        for i in range(50):
            cx, cy = base[i] + vel[i] * 20 * np.sin(f / 20)  # drifting back and forth, never out of frame
            a, b = axes[i]
            size = (int(2 * a) + 3, int(2 * b) + 3)
            crop = np.zeros((size[1], size[0]), np.uint8)
            cv2.ellipse(crop, (size[0] // 2, size[1] // 2), (int(a), int(b)), 0, 0, 360, 1, -1)
            crops.append(crop.astype(bool))
            origins.append((int(cx) - size[0] // 2, int(cy) - size[1] // 2))
        out.append(Instances.from_crops((480, 640), np.zeros(50), rng.uniform(0.6, 0.95, 50), origins, crops))
    return out


# --- trackers --------------------------------------------------------------------------------------------


def rings(shift: int, h: int = 480, w: int = 640) -> np.ndarray:
    """A class map of nested square rings, one pixel wide and one apart, of classes 0 and 1 in turn (255
    between), around the frame's centre moved ``shift`` px right: every ring's box holds every smaller one."""
    yy, xx = np.mgrid[:h, :w]
    r = np.maximum(abs(yy - h // 2), abs(xx - w // 2 - shift))
    return np.where(r % 2 == 0, (r // 2) % 2, 255).astype(np.uint8)


def hostile_maps(frames: int) -> dict[str, list[np.ndarray]]:
    """Each hostile class map of tests/scenes.py (seed 0), and the rings, moved 2 px right a frame."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from scenes import HOSTILE_SETS

    out = {
        name: [np.roll(make(0).class_map, 2 * i, axis=1) for i in range(frames)]
        for name, make in HOSTILE_SETS.items()
    }
    out["nested_rings"] = [rings(2 * i) for i in range(frames)]
    return out


def tracker_module(reference: Path | None) -> Any:
    """edgeseg.tracker, or the one under ``reference`` (another version's checkout)."""
    if reference is None:
        import edgeseg.tracker

        return edgeseg.tracker
    import importlib.util

    path = reference / "edgeseg" / "tracker.py"
    if not path.is_file():
        raise SystemExit(f"--reference {reference}: no edgeseg/tracker.py")
    spec = importlib.util.spec_from_file_location("reference_tracker", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def video_detections(frames: int) -> list[Instances]:
    """YOLOv8n-seg's detections (int8, 320) on the first ``frames`` of the pedestrians clip of
    ``../shared/assets`` (``EDGESEG_ASSETS``), through the video-file pipeline's stages; none without them."""
    import os

    from edgeseg.config import load_config
    from edgeseg.frame import Frame
    from edgeseg.pipeline import ModelStages

    assets = Path(os.environ.get("EDGESEG_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
    model, clip = (
        assets / "models/yolov8n-seg_int8_320.onnx",
        assets / "video/pedestrians_crossing_640x360.mp4",
    )
    if not (model.is_file() and clip.is_file()):
        print(f"video: {model} or {clip} missing; skipped")
        return []
    repo = Path(__file__).resolve().parents[1]
    stages = ModelStages.from_config(
        load_config(str(repo / "pipelines/video-file.yaml"), [f"model.path={json.dumps(str(model))}"])
    )
    cap = cv2.VideoCapture(str(clip))
    out: list[Instances] = []
    while len(out) < frames:
        ok, image = cap.read()
        if not ok:
            break
        frame = Frame(index=len(out), image=image, t_capture_ns=0, wall_time=0.0)
        prepared = stages.preprocess(frame)
        out.append(stages.decode(frame, prepared, stages.infer(prepared)))
    cap.release()
    return out


def in_turn(name: str, seqs: list[list[Instances]], versions: dict[str, Any]) -> dict[str, Any]:
    """Each version's tracker on ``seqs`` of a real scene, the versions in turn on each frame: the budget an
    update uses, its ms, and (with a reference) in how many frames the track ids are the same."""
    used, same, total = [], 0, 0
    update_ms: dict[str, list[float]] = {v: [] for v in versions}
    for seq in seqs:
        trackers = {v: module.Tracker(module.TrackerConfig()) for v, module in versions.items()}
        for i, det in enumerate(seq):
            out = {}
            for v, tr in list(trackers.items())[:: 1 if i % 2 else -1]:  # (in turn, first one then the other)
                t0 = time.perf_counter()
                out[v] = tr.update(det, round(i * 1e9 / SCENE_FPS), i)
                update_ms[v].append((time.perf_counter() - t0) * 1e3)
            h, w = det.image_shape
            used.append(trackers["edgeseg"].looked / (h * w))
            total += 1
            same += len({tuple(o.track_id.tolist()) for o in out.values()}) == 1
    report: dict[str, Any] = {
        "budget_used": {"median": round(statistics.median(used), 3), "max": round(max(used), 3)},
        "ms": {v: round(statistics.median(ms), 3) for v, ms in update_ms.items()},
    }
    print(
        f"{name}: an update's mask comparisons used {statistics.median(used):.3f} of a frame's pixels"
        f" (median), {max(used):.3f} at most, of a budget of {versions['edgeseg'].LOOK_FRAMES:g};"
        " ms an update (median): " + ", ".join(f"{v} {m}" for v, m in report["ms"].items())
    )
    if len(versions) > 1:
        report["same_ids"] = f"{same}/{total}"
        print(f"{name}: the same track ids as the reference in {same} of {total} frames")
    return report


def worst_case(
    frames: int, scenes: dict[str, list[list[Instances]]], reference: Path | None
) -> dict[str, Any]:
    """The ``hostile`` figures (see the module docstring); ``scenes``: real scenes' detections, each run by
    every version in turn."""
    import logging

    from edgeseg.semantic import SemanticParams, semantic_to_instances

    logging.getLogger("edgeseg").setLevel(logging.ERROR)  # (the budgets' notes)
    versions = {"edgeseg": tracker_module(None)}
    if reference is not None:
        versions["reference"] = tracker_module(reference)
    report: dict[str, Any] = {}
    print(
        f"{'map':22} {'objects':>7} {'split ms':>9}"
        + "".join(f" {v + ' ms (worst)':>24}" for v in versions)
        + f" {'left out':>9}"
    )
    for name, maps in hostile_maps(frames).items():
        trackers = {v: module.Tracker(module.TrackerConfig()) for v, module in versions.items()}
        split_ms: list[float] = []
        ms: dict[str, list[float]] = {v: [] for v in versions}
        objects = 0
        # each frame split, then given to every version in turn, the first one then the other going first:
        # timed one after the other, a load that came and went while one ran weighed on that one alone
        for i, m in enumerate(maps):
            t0 = time.perf_counter()
            det = semantic_to_instances(m, SemanticParams(), 255)
            split_ms.append((time.perf_counter() - t0) * 1e3)
            if i == 0:
                objects = len(det)
            for v, tracker in list(trackers.items())[:: 1 if i % 2 else -1]:
                t0 = time.perf_counter()
                tracker.update(det, round(i * 1e9 / SCENE_FPS), i)
                ms[v].append((time.perf_counter() - t0) * 1e3)
        row: dict[str, Any] = {"objects": objects, "split_ms": round(statistics.median(split_ms), 2)}
        for v, times in ms.items():
            row[f"{v}_ms"] = round(statistics.median(times[1:]), 2)
            row[f"{v}_worst_ms"] = round(max(times[1:]), 2)
            row[f"{v}_over_split"] = round(statistics.median(times[1:]) / row["split_ms"], 2)
        row["left_out"] = trackers["edgeseg"].unlooked
        report[name] = row
        cells = "".join(f" {row[v + '_ms']:>12.1f} ({row[v + '_worst_ms']:>7.1f})   " for v in versions)
        print(f"{name:22} {row['objects']:>7} {row['split_ms']:>9.1f}{cells} {row['left_out']:>9}")
    for name, seqs in scenes.items():
        report[name] = in_turn(name, seqs, versions)
    return report


def edgeseg_tracker(fps: int, config: TrackerConfig | None = None) -> Track:
    tracker = Tracker(config)
    index = iter(range(10**9))
    return lambda det, t_ns: tracker.update(det, t_ns, next(index))


def edgeseg_as_given(fps: int) -> Track:
    """edgeseg with ``split_merged`` and ``join_fragments`` off: every tracker scored on exactly the
    detections it was given."""
    return edgeseg_tracker(fps, TrackerConfig(split_merged=False, join_fragments=False))


def trackers_bytetrack(fps: int) -> Track:
    import supervision as sv
    from trackers import ByteTrackTracker

    tracker = ByteTrackTracker(frame_rate=float(fps))

    def track(det: Instances, t_ns: int) -> Instances:
        d = sv.Detections(
            xyxy=det.xyxy.astype(np.float32),
            confidence=det.score,
            class_id=det.class_id,
            data={"row": np.arange(len(det))},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = tracker.update(d, timestamp=t_ns / 1e9)
        ids = np.full(len(det), -1, np.int64)
        if len(out):
            ids[np.asarray(out.data["row"], np.int64)] = out.tracker_id
        return det.with_track_ids(ids)

    return track


class _UltralyticsBoxes:
    """The ``Boxes``-like input BYTETracker reads: ``conf``, ``cls``, ``xywh``, bool indexing."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, key: Any) -> _UltralyticsBoxes:
        return _UltralyticsBoxes(self.xyxy[key], self.conf[key], self.cls[key])


def ultralytics_bytetrack(fps: int) -> Track:
    import yaml
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import ROOT

    cfg = yaml.safe_load((ROOT / "cfg/trackers/bytetrack.yaml").read_text())
    tracker = BYTETracker(SimpleNamespace(**cfg))

    def track(det: Instances, t_ns: int) -> Instances:
        boxes = _UltralyticsBoxes(det.xyxy.astype(np.float32), det.score, det.class_id.astype(np.float32))
        out = tracker.update(boxes)
        ids = np.full(len(det), -1, np.int64)
        if len(out):
            ids[out[:, -1].astype(np.int64)] = out[:, 4].astype(np.int64)
        return det.with_track_ids(ids)

    return track


TRACKERS: dict[str, Callable[[int], Track]] = {
    "edgeseg": edgeseg_tracker,
    "edgeseg (detections as given)": edgeseg_as_given,
    "trackers.ByteTrack": trackers_bytetrack,
    "ultralytics.BYTETracker": ultralytics_bytetrack,
}


def available() -> dict[str, Callable[[int], Track]]:
    out = {}
    for name, make in TRACKERS.items():
        try:
            make(30)
        except ImportError as exc:
            print(f"{name}: not installed ({exc}); skipped (see the setup in this script's docstring)")
            continue
        out[name] = make
    return out


# --- runs ------------------------------------------------------------------------------------------------


def score(make: Callable[[int], Track], sequences: Iterator[Sequence], fps: int) -> TrackingScore:
    """One accumulator over all sequences; ids offset per sequence so no two sequences share one."""
    acc = TrackingAccumulator()
    for s, seq in enumerate(sequences):
        track = make(fps)
        offset = (s + 1) * 10**6
        for i in range(0, len(seq), STEPS[fps]):
            det, truth = seq[i]
            pred = track(det, round(i * 1e9 / SCENE_FPS))
            assert pred.track_id is not None
            assert truth.track_id is not None
            pid = np.where(pred.track_id >= 0, pred.track_id + offset, -1)
            acc.add(pred.with_track_ids(pid), truth.with_track_ids(truth.track_id + offset))
    result = acc.result()
    assert result is not None
    return result


def cost(trackers: dict[str, Callable[[int], Track]], frames: int) -> dict[str, float]:
    """Median ms per update at 50 objects, each frame given to every tracker in turn (rotating order)."""
    data = objects50(frames)
    made = {name: make(30) for name, make in trackers.items()}
    times: dict[str, list[float]] = {name: [] for name in made}
    names = list(made)
    for f, det in enumerate(data):
        for k in range(len(names)):
            name = names[(f + k) % len(names)]
            t0 = time.perf_counter()
            made[name](det, round(f * 1e9 / SCENE_FPS))
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts[10:]) for name, ts in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sets", default="conveyor,crossing", help="comma-separated: conveyor, crossing, hostile"
    )
    ap.add_argument("--hostile-frames", type=int, default=12, help="frames per hostile map (default 12)")
    ap.add_argument("--reference", type=Path, help="with hostile: another version's checkout, timed beside")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--crossing-seeds", type=int, default=10)
    ap.add_argument("--cost-frames", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeseg-bench-tracking")
    args = ap.parse_args()
    if args.cost_frames <= 10 or args.hostile_frames < 2:  # (medians of the updates after these)
        ap.error(
            "--cost-frames must be > 10 (the first 10 warm up) and --hostile-frames >= 2 (the first too)"
        )
    import edgeseg

    print(f"edgeseg from {Path(edgeseg.__file__).parent}")
    chosen = args.sets.split(",")
    if chosen == ["hostile"]:  # (the worst case alone: no peer, no scoring)
        scenes = {
            "conveyor": [
                [d for d, _ in seq] for seq in conveyor(range(300, 303), args.frames, args.cache).values()
            ]
        }
        if video := video_detections(args.frames * 2):
            scenes["video"] = [video]
        print(json.dumps({"hostile": worst_case(args.hostile_frames, scenes, args.reference)}))
        return 0
    trackers = available()
    sets: dict[str, list[Sequence]] = {}
    if "conveyor" in chosen:
        sets["conveyor"] = list(conveyor(range(300, 310), args.frames, args.cache).values())
    if "crossing" in chosen:
        sets["crossing"] = [crossing(1000 + s, args.frames) for s in range(args.crossing_seeds)]
    report: dict[str, Any] = {"scores": {}, "cost_ms": {}}
    print(f"{'set':9} {'fps':>3}  {'tracker':27} {'IDF1':>6} {'IDsw':>5} {'MOTA':>6}")
    for set_name, seqs in sets.items():
        for fps in STEPS:
            for name, make in trackers.items():
                r = score(make, iter(seqs), fps)
                print(f"{set_name:9} {fps:>3}  {name:27} {r.idf1:6.3f} {r.id_switches:5d} {r.mota:6.3f}")
                report["scores"].setdefault(set_name, {}).setdefault(str(fps), {})[name] = {
                    "idf1": round(r.idf1, 4),
                    "id_switches": r.id_switches,
                    "mota": round(r.mota, 4),
                }
    if "hostile" in chosen:
        conveyors = [[d for d, _ in seq] for seq in sets.get("conveyor", [])]
        report["hostile"] = worst_case(
            args.hostile_frames, {"conveyor": conveyors} if conveyors else {}, args.reference
        )
    report["cost_ms"] = {k: round(v, 3) for k, v in cost(trackers, args.cost_frames).items()}
    for name, ms in report["cost_ms"].items():
        print(f"cost per frame, 50 objects 640x480: {name:27} {ms:7.3f} ms (median)")
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
