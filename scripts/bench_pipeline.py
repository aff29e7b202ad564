#!/usr/bin/env python3
"""Pipeline benchmark (issues 4 and 18), measured side by side in one run.

1. the full threaded pipeline at the DEFAULT configuration (thread counts, frames run side by side and
   onnxruntime's spinning chosen by the pipeline) with the sinks a device runs (JSON lines and MQTT), against
   the best inference-only FPS of the same model at ANY intra-op thread count (1..cores, each its own
   session, spinning as onnxruntime defaults): ``fps_ratio`` (target >= 0.9); and, stricter, against
   inference alone with a run of one thread per core at once on one session (``fps_ratio_side_by_side``),
   the most a pipeline that runs frames side by side could reach; beside it the pipeline with JSON lines only
   (``fps_ratio_jsonl``) and with the video sink on as well (``fps_ratio_video``). The MQTT sink publishes
   every result (QoS 1, through its spool) to a Mosquitto this script starts on a free loopback port and
   stops at the end; nothing subscribes, as a device's fleet broker runs elsewhere (``--no-mqtt``: leave it
   out, for a machine without ``mosquitto``);
2. capture-to-result latency p50/p99 with a live source at twice the pipeline's rate:
   ``latency_p99_over_p50`` (target <= 1.5), and p99 over the median single-frame processing time
   (preprocess + infer + decode, one thread); over about a full window of the run's statistics (its
   last 512 results, as a device's ``stats`` report them), for which the camera delivers at least 1024
   frames (it drops about half);
3. resident memory growth over ``--frames`` frames of a live run, after warm-up: ``rss_growth_mb`` (< 10);
4. where the CPU goes in the default pipeline runs of 1: CPU milliseconds a frame by thread (Python threads
   by name: the pipeline's stages and sinks, the MQTT publisher; onnxruntime's and OpenCV's pools as
   ``native``), read from ``/proc/self/task`` while they run, and the process's own CPU a frame
   (``time.process_time``, which misses nothing: the threads' samples miss what a thread spends after its
   last one), and what that implies: ``fps_ceiling``, the rate with every core busy all the time at that
   CPU a frame, and ``fps_ceiling_ratio``, that over the best inference-only rate. Where it is under 0.9,
   no scheduling of these stages reaches ``fps_ratio`` 0.9 on this machine without cutting the CPU a frame
   itself. The Mosquitto this script starts takes CPU of its own for every message, on the same cores,
   where a device's fleet broker runs on another machine: ``broker_cpu_ms_per_frame`` (from
   ``/proc/PID/stat``), and ``fps_ceiling_with_broker_ratio``, the ceiling with it counted;
5. the first pipeline run, outside the rounds (``--timing-frames`` frames, at least 700): the one in which
   the planner decides (and tries) inference's threads, so its rate includes the trial (``fps_ratio_first``).
   The rounds' pipelines start from the plan it kept and make no trial of their own (the planner's cooldown
   holds for the later pipelines on the same model: ``later_trials`` counts any), as a device runs once its
   first seconds are over.

Frames are pre-rendered synthetic conveyor scenes replayed by a source that costs no CPU, as a camera's
sensor and ISP cost the host none; the synthetic:parts source renders on the host's cores and would take
them from the pipeline on a 2-core machine. ``--video`` replays a clip's first 50 frames instead, decoded
before the run, for a model of real scenes: issue 18's second target compares the pipeline with Ultralytics
on ``yolov8n-seg_int8_320.onnx`` and ``pedestrians_crossing_640x360.mp4``, and this gives that model's
``fps_ratio`` (``pipelines/video-file.yaml --model ... --video ...``). ``--threads`` overrides the
pipeline's thread choice (and with it the planner of ``edgeseg/threadplan.py``, whose first decision is
printed: a pipeline that shares the model with an earlier one starts from the plan that one left).

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.config import load_config
from edgeseg.errors import EdgesegError
from edgeseg.frame import Frame, Result
from edgeseg.malloc import tune_malloc
from edgeseg.mqtt.broker import Credentials
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.procmem import resident
from edgeseg.sinks import Sink, SinkContext
from edgeseg.sinks.jsonl import JsonlSink
from edgeseg.sinks.mqtt import MqttSinkConfig
from edgeseg.sinks.mqtt_sink import MqttSink
from edgeseg.sinks.video import VideoSink
from edgeseg.sources import SourceStats, open_source
from edgeseg.stats import WINDOW
from edgeseg.synthetic import PartsScene
from edgeseg.threadplan import serial_opencv, usable_cores


class ThreadCpu:
    """CPU time of this process's threads while it is entered, by thread name: a Python thread by its own
    name, any other (a pool of a native library) as ``native``. Threads are sampled every ``period`` s from
    ``/proc/self/task``, so a thread's last ``period`` before it ends may be missed."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._started = False  # once entered, a thread seen for the first time started from zero
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    @staticmethod
    def stat_ticks(path: str) -> int:
        """utime + stime, in clock ticks, of a ``/proc/.../stat`` file."""
        stat = Path(path).read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])

    @staticmethod
    def _ticks() -> dict[int, int]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                out[int(tid)] = ThreadCpu.stat_ticks(f"/proc/self/task/{tid}/stat")
        return out

    def _sample(self) -> None:
        self._names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None})
        now = self._ticks()
        for tid, ticks in now.items():
            self._first.setdefault(tid, 0 if self._started else ticks)
        self._last.update(now)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> ThreadCpu:
        self._sample()
        self._started = True
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self._sample()

    @staticmethod
    def process_ms(pid: int) -> float:
        """CPU milliseconds process ``pid`` has used so far (all its threads)."""
        return ThreadCpu.stat_ticks(f"/proc/{pid}/stat") * 1000 / os.sysconf("SC_CLK_TCK")

    def ms_by_name(self) -> dict[str, float]:
        """CPU milliseconds while entered, by thread name (this sampler left out)."""
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for tid, ticks in self._last.items():
            name = self._names.get(tid, "native")
            if name == self._sampler.name:
                continue
            out[name] = out.get(name, 0.0) + (ticks - self._first.get(tid, ticks)) * tick_ms
        return out


# the first pipeline's frames at least: a trial of runs side by side takes the planner's first four windows,
# eight where it measures each plan twice more (edgeseg/threadplan.py: 4 or 8 x (10 + 60) frames)
FIRST_RUN_FRAMES = 700
# results the latency run's percentiles are taken over (about: a live run drops what it cannot take), the
# window a device's own statistics keep: a p99 of the 200 results of --timing-frames was its 2nd-3rd worst
LATENCY_RESULTS = WINDOW


def rss_mb() -> float:
    memory = resident()
    return float("nan") if memory is None else memory.now_mb


class ReplaySource:
    """Replays pre-rendered images, so producing a frame costs no CPU: like a camera, whose sensor and ISP
    are not on the host's cores.

    Offline (``fps`` None) it delivers ``n`` frames as fast as they are taken; live (``fps`` set) it delivers
    one every ``1/fps`` seconds whatever the pipeline does, stamped with its delivery time.
    """

    def __init__(self, images: list[np.ndarray], n: int, fps: float | None = None) -> None:
        self.uri = "replay:"
        self.images, self.n, self.i = images, n, 0
        self.live = fps is not None
        self.period = 0.0 if fps is None else 1.0 / fps
        self.next_t = 0.0
        self.closed = threading.Event()

    @property
    def frames_total(self) -> int | None:
        return None if self.live else self.n

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self.i)

    def open(self) -> None:
        self.next_t = time.monotonic()

    def read(self) -> Frame | None:
        if self.i >= self.n or self.closed.is_set():
            return None
        if self.live:
            self.next_t += self.period
            if self.closed.wait(max(0.0, self.next_t - time.monotonic())):
                return None
        img = self.images[self.i % len(self.images)]
        self.i += 1
        return Frame(self.i - 1, img, time.monotonic_ns(), time.time())

    def close(self) -> None:
        self.closed.set()


class Collector:
    """A sink that keeps the results (real results for a bench to publish)."""

    def __init__(self) -> None:
        self.results: list[Result] = []

    def send(self, result: Result) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


def conveyor_frames(count: int = 50) -> list[np.ndarray]:
    """The first ``count`` frames of the synthetic conveyor (seed 1), the frames the device benches replay,
    rendered by one scene: a scene made for each frame (~0.2 s of setting up its belt) cost every bench's
    start, and every child of ``bench_sinks``, ten seconds of 50 frames."""
    scene = PartsScene(640, 480, seed=1)
    return [scene.frame(i).image for i in range(count)]


def video_frames(path: str, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of the video at ``path`` (all of them if it has fewer), decoded once by the
    pipeline's own file source."""
    source = open_source(path)
    images = []
    try:
        while len(images) < count and (frame := source.read()) is not None:
            images.append(frame.image)
    finally:
        source.close()
    if not images:
        raise SystemExit(f"--video {path}: no frame could be decoded")
    return images


def infer_side_by_side(stages: ModelStages, prepared: list[Any], n: int, runs: int) -> float:
    """Frames per second of ``n`` inferences of ``prepared`` (in turn) by ``runs`` threads at once, each
    taking the next frame, on the one session of ``stages``."""
    for p in prepared[:3]:
        stages.infer(p)
    turn = iter(range(n))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(turn, None)
            if i is None:
                return
            stages.infer(prepared[i % len(prepared)])

    threads = [threading.Thread(target=work) for _ in range(runs)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)


def device_sinks(names: tuple[str, ...], workdir: Path, tag: str, broker_port: int | None) -> dict[str, Sink]:
    """The sinks a device runs: JSON lines (RLE masks) and, with ``broker_port``, MQTT to the broker on that
    loopback port (every result, QoS 1, through a spool in ``workdir/state-TAG``; no discovery)."""
    sinks: dict[str, Sink] = {"jsonl": JsonlSink(workdir / "r.jsonl", "rle", names)}
    if broker_port is not None:
        ctx = SinkContext(class_names=names, state_dir=workdir / f"state-{tag}")
        cfg = MqttSinkConfig(url=f"mqtt://127.0.0.1:{broker_port}", device_id="bench", discovery=False)
        sinks["mqtt"] = MqttSink(cfg, ctx, Credentials())
    return sinks


@dataclass(frozen=True)
class DeviceRun:
    fps: float
    cpu_ms_per_frame: float  # the process's, every thread included
    plan: str  # what the thread planner decided, or "not planned"

    @property
    def cores_busy(self) -> float:
        return self.cpu_ms_per_frame * self.fps / 1000

    def __str__(self) -> str:
        cpu = f"CPU {self.cpu_ms_per_frame:5.2f} ms a frame"
        return f"{self.fps:6.1f} fps, {cpu}, cores busy {self.cores_busy:.2f}"


def device_run(
    stages: ModelStages,
    images: list[np.ndarray],
    frames: int,
    workdir: Path,
    tag: str,
    broker_port: int | None,
) -> DeviceRun:
    """One pipeline run of ``frames`` replayed ``images`` with the sinks a device runs (see
    :func:`device_sinks`)."""
    names = tuple(stages.model.card.classes)
    pipe = Pipeline(ReplaySource(images, frames), stages, device_sinks(names, workdir, tag, broker_port))
    c0, t0 = time.process_time(), time.perf_counter()
    done = pipe.run().frames_done
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return DeviceRun(done / wall, cpu / done * 1e3, pipe.thread_plan or "not planned")


def alternated_device_runs(
    setups: dict[str, Callable[[], None]], frames: int, pairs: int, mqtt: bool = True
) -> dict[str, list[DeviceRun]]:
    """Device runs of the demo pipeline (pre-rendered frames, JSON lines and, with ``mqtt``, MQTT to a
    Mosquitto started on loopback) in this process, ``frames`` a run: first one with the first of the two
    ``setups`` (each a function that puts its variant in place), in which the thread planner decides, as a
    device's first seconds do; then ``pairs`` of the two alternated, on the plan it kept. Each run's line is
    printed; returns the pairs' runs by setup."""
    tune_malloc()  # as the edgeseg command does
    serial_opencv()
    first, second = setups
    stages = ModelStages.from_config(load_config(None, []))
    images = conveyor_frames()
    runs: dict[str, list[DeviceRun]] = {first: [], second: []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        port = stack.enter_context(mosquitto(Path(tmp) / "broker")).port if mqtt else None

        def run(kind: str, tag: str) -> DeviceRun:
            setups[kind]()
            return device_run(stages, images, frames, Path(tmp), tag, port)

        print(f"first run (the planner decides): {run(first, 'plan').plan}", flush=True)
        for r in range(pairs):
            for kind in (second, first) if r % 2 == 0 else (first, second):
                done = run(kind, f"{r}-{kind}")
                runs[kind].append(done)
                print(f"{kind:9s} {done}; {done.plan.split(':')[0]}", flush=True)
    stages.close()
    return runs


def paired_figures(runs: dict[str, list[DeviceRun]]) -> dict[str, Any]:
    """The medians of :func:`alternated_device_runs`' runs (the second setup's under ``*_reference``), and
    the first's over the second's, median over the pairs (and each pair's rate ratio)."""
    this, reference = runs.values()
    pairs = list(zip(this, reference, strict=True))
    out: dict[str, Any] = {}
    for key in ("fps", "cores_busy", "cpu_ms_per_frame"):
        out[key] = round(statistics.median(getattr(d, key) for d in this), 3)
        out[f"{key}_reference"] = round(statistics.median(getattr(d, key) for d in reference), 3)
    out["fps_ratio"] = round(statistics.median(a.fps / b.fps for a, b in pairs), 3)
    out["cpu_ratio"] = round(statistics.median(a.cpu_ms_per_frame / b.cpu_ms_per_frame for a, b in pairs), 3)
    out["fps_ratio_pairs"] = [round(a.fps / b.fps, 3) for a, b in pairs]
    return out


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[Any]:
    """A Mosquitto on a free loopback port for the run (``bench_mqtt.Broker``), stopped at the end."""
    from bench_mqtt import Broker  # (bench_mqtt imports this module, so not at the top)

    exe = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if exe is None:
        raise SystemExit("mosquitto not found (apt-get install mosquitto), or run with --no-mqtt")
    broker = Broker(exe, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", nargs="?", help="pipeline YAML (default: demo)")
    ap.add_argument("--model", help="model file (overrides model.path)")
    ap.add_argument("--frames", type=int, default=20_000, help="frames for the memory run (default 20000)")
    ap.add_argument(
        "--timing-frames", type=int, default=200, help="frames for the FPS runs (latency: >= 1024)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating inference-only/pipeline rounds")
    ap.add_argument("--threads", type=int, help="inference threads (overrides model.threads)")
    ap.add_argument("--memory-fps", type=float, default=200.0, help="camera rate of the memory run")
    ap.add_argument("--no-mqtt", action="store_true", help="no MQTT sink (no Mosquitto needed)")
    ap.add_argument(
        "--video", help="replay the first 50 frames of this video (default: synthetic conveyor scenes)"
    )
    args = ap.parse_args()
    tune_malloc()  # as the edgeseg command does: the pipeline measured is the one a user runs
    serial_opencv()
    overrides = [f"model.path={json.dumps(str(Path(args.model).resolve()))}"] if args.model else []
    if args.threads is not None:
        overrides.append(f"model.threads={args.threads}")
    config = load_config(args.pipeline, overrides)
    stages = ModelStages.from_config(config)
    names = tuple(stages.model.card.classes)
    images = video_frames(args.video, 50) if args.video else conveyor_frames()
    n_images = len(images)
    n = args.timing_frames

    # 1. inference only (every thread count) vs the whole pipeline, same frames, alternated over rounds
    #    (the machine is shared: each round's ratio compares neighbours in time; medians are reported)
    frames = [Frame(i, images[i % n_images], 0, 0.0) for i in range(n)]
    prepared = [stages.preprocess(f) for f in frames[:n_images]]
    single = []
    for f in frames[:n_images]:
        s0 = time.perf_counter()
        p = stages.preprocess(f)
        stages.decode(f, p, stages.infer(p))
        single.append((time.perf_counter() - s0) * 1000)
    median_single_ms = statistics.median(single)
    cores = usable_cores()
    alone = {
        k: ModelStages.from_config(
            load_config(args.pipeline, [*overrides, f"model.threads={k}", "model.spin=true"])
        )
        for k in range(1, cores + 1)
    }
    infer_runs: dict[int, list[float]] = {k: [] for k in alone}
    side_by_side: list[float] = []  # inference only, a run of one thread per core at once
    runs: dict[str, list[float]] = {"device": [], "jsonl": [], "video": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        broker = None if args.no_mqtt else stack.enter_context(mosquitto(Path(tmp) / "broker"))

        cpu_runs: list[dict[str, float]] = []  # CPU ms a frame by thread, each default (device) run
        broker_runs: list[float] = []  # the Mosquitto process's CPU ms a frame, each default run
        process_runs: list[float] = []  # this process's CPU ms a frame (every thread), each default run
        plans: list[str] = []  # what the pipelines' planners decided about inference's threads

        def pipeline_fps(kind: str, measured: bool = True, frames: int = n) -> float:
            port = None if kind == "jsonl" or broker is None else broker.port
            sinks = device_sinks(names, Path(tmp), kind, port)
            if kind == "video":
                ctx = SinkContext(class_names=names, state_dir=Path(tmp) / f"state-{kind}")
                sinks["video"] = VideoSink(Path(tmp) / "r.mp4", 25, ctx=ctx)
            pipe = Pipeline(ReplaySource(images, frames), stages, sinks)
            broker_pid = None if port is None or broker is None or broker.proc is None else broker.proc.pid
            b0 = 0.0 if broker_pid is None else ThreadCpu.process_ms(broker_pid)
            with ThreadCpu() as cpu:
                t0, c0 = time.perf_counter(), time.process_time()
                full = pipe.run()
                fps = full.frames_done / (time.perf_counter() - t0)
                process_ms = (time.process_time() - c0) * 1e3
            if kind == "device" and measured:
                cpu_runs.append({k: v / full.frames_done for k, v in cpu.ms_by_name().items()})
                process_runs.append(process_ms / full.frames_done)
                if broker_pid is not None:
                    broker_runs.append((ThreadCpu.process_ms(broker_pid) - b0) / full.frames_done)
            if pipe.thread_plan is not None:
                plans.append(pipe.thread_plan)
            return fps

        # The planner decides on the first pipeline over its first ~140 frames (a window on every thread, a
        # trial, a window on the trial's plan; ~280 for runs side by side: two windows of each, ~560 where
        # they read within a tenth of each other and each is measured twice more) and later
        # pipelines on the same backend start from that plan, as a device does after its first seconds. So
        # the first run is its own, with every sink, outside the rounds: in the rounds every kind runs on
        # the plan kept, and none pays the trial for the others.
        first_fps = pipeline_fps("device", measured=False, frames=max(n, FIRST_RUN_FRAMES))

        def inference_alone(r: int) -> None:
            for k, st in alone.items():
                for p in prepared[:3]:
                    st.infer(p)
                t0 = time.perf_counter()
                for i in range(n):
                    st.infer(prepared[i % n_images])
                infer_runs[k].append(n / (time.perf_counter() - t0))
            side_by_side.append(infer_side_by_side(alone[1], prepared, n, cores))

        def pipelines(r: int) -> None:
            for kind in runs if r % 2 == 0 else reversed(runs):
                runs[kind].append(pipeline_fps(kind))

        # inference alone first in one round, the pipelines first in the next: always first, inference alone
        # met the machine as each round found it and the pipelines as inference alone left it
        for r in range(args.rounds):
            for step in (inference_alone, pipelines) if r % 2 == 0 else (pipelines, inference_alone):
                step(r)
    for st in alone.values():
        st.model.close()
    best_k = max(infer_runs, key=lambda k: statistics.median(infer_runs[k]))
    fps_infer = statistics.median(infer_runs[best_k])
    best_per_round = [max(infer_runs[k][r] for k in infer_runs) for r in range(args.rounds)]
    fps = {kind: statistics.median(v) for kind, v in runs.items()}
    fps_side = statistics.median(side_by_side)
    ratio_side = statistics.median(p / i for p, i in zip(runs["device"], side_by_side, strict=True))
    ratios = {
        kind: statistics.median(p / i for p, i in zip(v, best_per_round, strict=True))
        for kind, v in runs.items()
    }
    fps_pipeline = fps["device"]

    names_seen = sorted(
        {k for run in cpu_runs for k in run},
        key=lambda k: -statistics.median(run.get(k, 0.0) for run in cpu_runs),
    )
    cpu_ms = {k: statistics.median(run.get(k, 0.0) for run in cpu_runs) for k in names_seen}
    # (the threads' sampled times miss what a thread spends after its last sample; the process's own
    # counter misses nothing, so the ceiling comes from it)
    cpu_threads = statistics.median(sum(run.values()) for run in cpu_runs)
    cpu_total = statistics.median(process_runs)
    fps_ceiling = cores * 1000 / cpu_total
    broker_ms = statistics.median(broker_runs) if broker_runs else 0.0
    fps_ceiling_broker = cores * 1000 / (cpu_total + broker_ms)

    # 2. latency with a live source faster than the pipeline: a camera at twice the pipeline's rate, for
    # enough frames that about a full window of the run's statistics is published (it drops half of them)
    camera_fps = 2 * fps_pipeline
    lat = Pipeline(ReplaySource(images, max(n, LATENCY_RESULTS) * 2, fps=camera_fps), stages).run()

    # 3. memory over a long live run, after warm-up
    mem = Pipeline(ReplaySource(images, args.frames, fps=args.memory_fps), stages)
    mem.start()
    warm = min(500, args.frames // 10)
    while mem.stats().frames_read < warm and not mem.wait(0.05):
        pass
    rss0 = rss_mb()
    mem.wait()
    rss1 = rss_mb()
    mstats = mem.stats()

    lat_ratio = lat.latency_ms_p99 / median_single_ms
    lat_spread = lat.latency_ms_p99 / lat.latency_ms_p50
    threads = ", ".join(f"{k}: {statistics.median(v):.1f}" for k, v in infer_runs.items())
    print(f"{'inference only, by threads':<32}{threads} fps; best {fps_infer:.1f} ({best_k} threads)")
    print(
        f"{'inference only, side by side':<32}{fps_side:8.1f} fps ({cores} runs of 1 thread at once); "
        f"default pipeline over it {ratio_side:.2f}"
    )
    device = "jsonl" if args.no_mqtt else "jsonl + mqtt"
    labels = {"device": f"default ({device})", "jsonl": "jsonl only", "video": f"{device} + video"}
    for kind, label in labels.items():
        target = " (target >= 0.9)" if kind == "device" else ""
        print(f"{'pipeline, ' + label:<32}{fps[kind]:8.1f} fps   ratio {ratios[kind]:.2f}{target}")
    by_thread = ", ".join(f"{k} {v:.1f}" for k, v in cpu_ms.items() if v >= 0.05)
    print(
        f"{'CPU a frame, default pipeline':<32}{cpu_total:8.1f} ms (the process); by thread, sampled: "
        f"{cpu_threads:.1f} ms: {by_thread}"
    )
    print(
        f"{'ceiling at that CPU a frame':<32}{fps_ceiling:8.1f} fps on {cores} cores   "
        f"ratio {fps_ceiling / fps_infer:.2f} (the most fps_ratio reaches at this CPU a frame)"
    )
    if broker_runs:
        print(
            f"{'+ the Mosquitto on this machine':<32}{broker_ms:8.1f} ms a frame (a device's fleet broker "
            f"runs elsewhere): ceiling with it {fps_ceiling_broker:.1f} fps, "
            f"ratio {fps_ceiling_broker / fps_infer:.2f}"
        )
    plan = plans[0] if plans else "not planned (model.threads set, or one core)"
    # (a later pipeline on the same stages waits out the first one's cooldown: edgeseg.threadplan.planner_for)
    later_trials = sum("(kept), against" in p for p in plans[1:])
    print(f"{'inference threads':<32}{plan}; trials in the rounds' runs: {later_trials}")
    ratio_first = first_fps / best_per_round[0]
    print(
        f"{'first run, planner deciding':<32}{first_fps:8.1f} fps   ratio {ratio_first:.2f} "
        f"(default sinks, before the rounds; over round 1's best inference alone)"
    )
    print(f"{'single-frame processing':<32}{median_single_ms:8.1f} ms (median)")
    print(
        f"{'live latency p50 / p99':<32}{lat.latency_ms_p50:8.1f} / {lat.latency_ms_p99:.1f} ms   "
        f"p99/p50 {lat_spread:.2f} (target <= 1.5), p99/single {lat_ratio:.2f}; "
        f"dropped {lat.dropped_total} of {lat.frames_read}"
    )
    print(
        f"{'RSS over run':<32}{rss0:8.1f} -> {rss1:.1f} MB over {mstats.frames_read - warm} frames "
        f"after {warm} warm-up (target growth < 10 MB)"
    )
    by_threads = {k: round(statistics.median(v), 2) for k, v in infer_runs.items()}
    print(json.dumps({
        "cores": cores, "fps_infer_by_threads": by_threads, "fps_infer_best": round(fps_infer, 2),
        "fps_infer_side_by_side": round(fps_side, 2), "fps_ratio_side_by_side": round(ratio_side, 3),
        "mqtt": not args.no_mqtt, "threads": getattr(stages.model.backend, "threads", None),
        "runs": getattr(stages.model.backend, "runs", None), "later_trials": later_trials,
        "fps_pipeline": round(fps_pipeline, 2), "fps_ratio": round(ratios["device"], 3),
        "rounds_fps_infer_best": [round(v, 2) for v in best_per_round],
        "rounds_fps_pipeline": [round(v, 2) for v in runs["device"]],
        "fps_pipeline_first": round(first_fps, 2), "fps_ratio_first": round(ratio_first, 3),
        "fps_pipeline_jsonl": round(fps["jsonl"], 2), "fps_ratio_jsonl": round(ratios["jsonl"], 3),
        "fps_pipeline_video": round(fps["video"], 2), "fps_ratio_video": round(ratios["video"], 3),
        "cpu_ms_per_frame": round(cpu_total, 2), "cpu_ms_per_frame_threads_sampled": round(cpu_threads, 2),
        "cpu_ms_per_frame_by_thread": {k: round(v, 2) for k, v in cpu_ms.items()},
        "fps_ceiling": round(fps_ceiling, 2), "fps_ceiling_ratio": round(fps_ceiling / fps_infer, 3),
        "broker_cpu_ms_per_frame": round(broker_ms, 2),
        "fps_ceiling_with_broker_ratio": round(fps_ceiling_broker / fps_infer, 3),
        "median_single_ms": round(median_single_ms, 2), "latency_p50_ms": round(lat.latency_ms_p50, 2),
        "latency_p99_ms": round(lat.latency_ms_p99, 2), "latency_p99_over_p50": round(lat_spread, 3),
        "latency_p99_over_single": round(lat_ratio, 3),
        "rss_growth_mb": round(rss1 - rss0, 2), "memory_frames": mstats.frames_read,
    }))  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except EdgesegError as exc:  # a pipeline, model or video it cannot use: one line, as the edgeseg command
        raise SystemExit(f"bench_pipeline: {exc}") from None
