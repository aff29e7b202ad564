"""``edgeseg bench``: stage-by-stage timing of one pipeline, as a table and a PNG plot drawn with OpenCV, and
the frame rate that pipeline reaches on its threads on this machine."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.annotate import annotate
from edgeseg.cvpath import opencv_name_problem
from edgeseg.errors import InputError, SourceError
from edgeseg.frame import Result, StageTimes
from edgeseg.sinks.base import check_output_path
from edgeseg.sinks.record import result_record

if TYPE_CHECKING:
    from edgeseg.config import PipelineConfig, SinksConfig

BENCH_SOURCE_TIMEOUT_S = 10.0  # how long bench waits for a live source that does not deliver
THREADED_S = 8.0  # how long bench runs the real threaded pipeline to measure its rate
STAGES = ("read", "preprocess", "infer", "decode", "annotate", "serialize")
# the clock of each stage's CPU time: 1 the thread's; 2 the process's for infer, whose work onnxruntime
# spreads over its intra-op threads (which also count the time those threads spin waiting for work)
CPU_CLOCK = (1, 1, 2, 1, 1, 1)
COLORS = ((160, 160, 160), (200, 130, 40), (40, 40, 220), (40, 170, 60), (0, 160, 230), (170, 60, 170))  # BGR


@dataclass(frozen=True)
class Timing:
    """Per-frame milliseconds ``(N, len(STAGES))`` of one pipeline's stages on one thread, and its source."""

    wall_ms: NDArray[np.float64]
    cpu_ms: NDArray[np.float64]
    title: str
    live: bool  # the source goes on reading while the pipeline is busy (frames it cannot take are dropped)
    pace_fps: float | None  # the source delivers at most this many frames a second (None: no pace)


def _clocks() -> tuple[int, int, int]:
    return time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()


def bench_config(args: argparse.Namespace) -> PipelineConfig:
    """The configuration the flags describe; a live source that stops delivering is given up after a while."""
    from edgeseg.cliconfig import load_cli_config

    if args.frames < 1 or args.warmup < 0:
        raise InputError(f"--frames must be >= 1 and --warmup >= 0 (got {args.frames}, {args.warmup})")
    config = load_cli_config(args)
    if config.source.reconnect_timeout_s is None:
        # a benchmark is interactive: a camera that does not come back ends it instead of waiting forever
        config = replace(config, source=replace(config.source, reconnect_timeout_s=BENCH_SOURCE_TIMEOUT_S))
    return config


def time_stages(config: PipelineConfig, frames: int, warmup: int) -> Timing:
    """Wall and CPU time of each stage of the configured pipeline, frame by frame on one thread."""
    from edgeseg.pipeline import ModelStages
    from edgeseg.sources import open_source, option_fps, parse_uri

    stages = ModelStages.from_config(config)
    names = tuple(stages.model.card.classes)
    wall: list[NDArray[np.float64]] = []
    cpu: list[NDArray[np.float64]] = []
    try:
        source = open_source(config.source)
    except BaseException:
        stages.model.close()
        raise
    try:
        for i in range(warmup + frames):
            marks = [_clocks()]
            frame = source.read()
            if frame is None:
                break
            marks.append(_clocks())
            prepared = stages.preprocess(frame)
            marks.append(_clocks())
            outputs = stages.infer(prepared)
            marks.append(_clocks())
            instances = stages.decode(frame, prepared, outputs)
            marks.append(_clocks())
            annotate(frame.image, instances, names)
            marks.append(_clocks())
            json.dumps(result_record(Result(frame, instances, StageTimes()), i, "rle", names))
            marks.append(_clocks())
            if i >= warmup:
                ms = np.diff(np.asarray(marks, np.float64), axis=0) / 1e6  # (stage, clock)
                wall.append(ms[:, 0])
                cpu.append(ms[np.arange(len(STAGES)), CPU_CLOCK])
    finally:
        source.close()
        stages.model.close()
    if not wall:
        raise SourceError(f"source {config.source.uri} ended before the {warmup} warm-up frames were read")
    return Timing(
        np.asarray(wall),
        np.asarray(cpu),
        f"{config.name}: {stages.model.card.name}",
        bool(getattr(source, "live", False)),
        option_fps(parse_uri(config.source.uri), config.source.fps),
    )


@dataclass(frozen=True)
class ThreadedRun:
    """What the real pipeline did on its threads: frames done per second (``nan`` under two), frames done,
    what its planner last decided about inference's thread count (None: nothing to decide, or not yet; see
    :mod:`edgeseg.threadplan`), the outputs it wrote (names of sinks) and those it left out."""

    fps: float
    frames: int
    thread_plan: str | None
    written: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()


def bench_outputs(sinks: SinksConfig, folder: Path) -> tuple[SinksConfig, tuple[str, ...]]:
    """The outputs of the bench's threaded run: the configured JSON lines and video, written into ``folder``
    instead (encoding them is work the pipeline does for every frame, so its rate counts it: on 2 cores the
    bundled video-file pipeline ran 16-23% below a prediction made without them), and no other; and the
    names of the configured outputs it leaves out: a window or a web page, which no one would see, and MQTT,
    which would publish the bench's results to the fleet."""
    from edgeseg.config import SinksConfig
    from edgeseg.sinks.display import DisplaySinkConfig
    from edgeseg.sinks.jsonl import JsonlSinkConfig
    from edgeseg.sinks.mqtt import MqttSinkConfig
    from edgeseg.sinks.video import VideoSinkConfig
    from edgeseg.sinks.web import WebSinkConfig

    kept: dict[str, object] = {}
    left_out: list[str] = []
    for name, section in sinks.sections.items():
        if isinstance(section, JsonlSinkConfig | VideoSinkConfig):
            if section.path is not None:
                kept[name] = replace(section, path=folder / f"{name}-{Path(section.path).name}")
        elif (
            (isinstance(section, DisplaySinkConfig) and section.enabled)
            or (isinstance(section, MqttSinkConfig) and section.url is not None)
            or (isinstance(section, WebSinkConfig) and section.listen is not None)
        ):
            left_out.append(name)
    return SinksConfig(kept), tuple(left_out)


def threaded_run(config: PipelineConfig, seconds: float) -> ThreadedRun:
    """The real pipeline on its threads for ``seconds``: its model and stream stages, its JSON lines and
    video written into a temporary folder (:func:`bench_outputs`), and as ``edgeseg run`` the accuracy sink
    of a synthetic source; nothing shown or published."""
    from edgeseg.evaluate import AccuracySink
    from edgeseg.pipeline import Pipeline
    from edgeseg.sources import parse_uri

    synthetic = parse_uri(config.source.uri).scheme == "synthetic"
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as folder:
        sinks, left_out = bench_outputs(config.sinks, Path(folder))
        pipeline = Pipeline.from_config(
            replace(config, sinks=sinks), extra_sinks={"accuracy": AccuracySink()} if synthetic else None
        )
        written = tuple(name for name in pipeline.sinks if name != "accuracy")
        pipeline.start()
        pipeline.wait(seconds)
        pipeline.stop()
        pipeline.wait()
    if pipeline.error is not None:
        raise pipeline.error
    stats = pipeline.stats()
    return ThreadedRun(stats.fps, stats.frames_done, pipeline.thread_plan, written, left_out)


def rate_bounds(
    wall_ms: NDArray[np.float64], cpu_ms: NDArray[np.float64], cores: int, live: bool, pace_fps: float | None
) -> dict[str, float]:
    """The frames per second each limit of a threaded pipeline allows, by what the limit is, from the median
    stage times ``(len(STAGES),)``: the source's pace, the slowest stage, and the CPU the stages need per
    frame from ``cores`` cores. A live source reads on while the stages are busy (the frames they cannot
    take are dropped): its reads' CPU time is spent at its own rate, not per frame done."""
    slowest = int(np.argmax(wall_ms))
    bounds = {f"slowest stage {STAGES[slowest]} {wall_ms[slowest]:.1f} ms": 1000 / float(wall_ms[slowest])}
    if pace_fps is not None:
        bounds[f"source pace {pace_fps:g} fps"] = pace_fps
    if live:
        reads_per_s = min(pace_fps or np.inf, 1000 / float(wall_ms[0]))
        source_ms_per_s, per_frame = reads_per_s * float(cpu_ms[0]), float(cpu_ms[1:].sum())
        cpu = (
            f"{cores} cores: {cores * 1000} ms CPU/s less {source_ms_per_s:.0f} for the source's reads, "
            f"over {per_frame:.1f} ms CPU per frame"
        )
    else:
        source_ms_per_s, per_frame = 0.0, float(cpu_ms.sum())
        cpu = f"{cores} cores: {cores * 1000} ms CPU/s over {per_frame:.1f} ms CPU per frame"
    bounds[cpu] = max(cores * 1000 - source_ms_per_s, 0.0) / per_frame
    return bounds


def table(ms: NDArray[np.float64]) -> str:
    """The timing table: median, p90, p99 and share of the total per stage."""
    med = np.median(ms, axis=0)
    total = np.sum(ms, axis=1)
    lines = [f"{'stage':<12}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}{'share':>8}"]
    for k, name in enumerate(STAGES):
        p90, p99 = np.percentile(ms[:, k], [90, 99])
        lines.append(f"{name:<12}{med[k]:>11.2f}{p90:>9.2f}{p99:>9.2f}{med[k] / med.sum():>8.0%}")
    t50, t90, t99 = np.percentile(total, [50, 90, 99])
    lines.append(f"{'total':<12}{t50:>11.2f}{t90:>9.2f}{t99:>9.2f}")
    lines.append(f"{len(ms)} frames; one thread: {1000 / t50:.1f} fps")
    return "\n".join(lines)


def prediction(timing: Timing, run: ThreadedRun) -> str:
    """The lines after the table: the model's bounds, and the predicted rate of the threaded pipeline (the
    measured one; the model's where the measurement got fewer than two frames), with the thread count that
    run chose for inference."""
    from edgeseg.threadplan import usable_cores

    cores = usable_cores()  # the cores onnxruntime's thread plan counts too
    bounds = rate_bounds(
        np.median(timing.wall_ms, axis=0),
        np.median(timing.cpu_ms, axis=0),
        cores,
        timing.live,
        timing.pace_fps,
    )
    model = min(bounds.values())
    lines = [
        f"model: {model:.1f} fps, the least of: " + "; ".join(f"{k}: {v:.1f} fps" for k, v in bounds.items())
    ]
    outputs = (
        f"writing its {' and '.join(run.written)} output{'s' if len(run.written) > 1 else ''} to a temporary "
        "folder"
        if run.written
        else "without outputs"
    )
    if np.isfinite(run.fps):
        lines.append(
            f"predicted pipeline rate: {run.fps:.1f} fps (frames done per second, measured: the "
            f"pipeline ran {THREADED_S:g} s on its threads {outputs}, {run.frames} frames done)"
        )
    else:
        lines.append(
            f"predicted pipeline rate: {model:.1f} fps (frames done per second, the model's: the pipeline "
            f"ran {THREADED_S:g} s on its threads {outputs} and did {run.frames} frames, too few to measure)"
        )
    if run.left_out:
        lines.append(
            f"not in that rate: the {', '.join(run.left_out)} output{'s' if len(run.left_out) > 1 else ''}, "
            "which a bench does not run (a window, a web page or MQTT publishing takes CPU too: with them "
            "the pipeline's rate is lower)"
        )
    if run.thread_plan is not None:
        lines.append(f"inference threads in that run: {run.thread_plan}")
    return "\n".join(lines)


def plot(ms: NDArray[np.float64], title: str, names: Sequence[str] = STAGES) -> NDArray[np.uint8]:
    """A BGR image: per-frame stacked bars of the stage times (latency breakdown), with axes and a legend."""
    w, h = 1000, 520
    left, right, top, bottom = 70, 180, 40, 50
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    n = len(ms)
    ymax = float(np.percentile(ms.sum(axis=1), 99)) * 1.1 or 1.0
    pw, ph = w - left - right, h - top - bottom

    def y(v: float) -> int:
        return top + ph - round(min(v, ymax) / ymax * ph)

    for k in range(6):  # grid and y labels
        v = ymax * k / 5
        cv2.line(img, (left, y(v)), (left + pw, y(v)), (225, 225, 225), 1)
        cv2.putText(img, f"{v:.0f}", (8, y(v) + 4), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    bar = pw / n
    for i in range(n):
        x0, x1 = left + round(i * bar), max(left + round(i * bar) + 1, left + round((i + 1) * bar) - 1)
        acc = 0.0
        for k in range(ms.shape[1]):
            top_v = acc + ms[i, k]
            cv2.rectangle(img, (x0, y(top_v)), (x1 - 1, y(acc)), COLORS[k % len(COLORS)], -1)
            acc = top_v
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(img, title, (left, 26), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "ms", (8, top - 10), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(
        img, f"frame (1..{n})", (left + pw // 2 - 40, h - 15), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA
    )
    med = np.median(ms, axis=0)
    for k, name in enumerate(names):
        ly = top + 10 + 26 * k
        cv2.rectangle(img, (left + pw + 15, ly), (left + pw + 33, ly + 16), COLORS[k % len(COLORS)], -1)
        cv2.putText(
            img, f"{name} {med[k]:.1f}", (left + pw + 40, ly + 13), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return img


def command(args: argparse.Namespace) -> int:
    out = Path(args.plot)
    if out.suffix.lower() != ".png":
        raise InputError(f"--plot {args.plot}: the plot is a PNG image, use a .png file name")
    check_output_path(out, "--plot")  # before minutes of timing, not after
    problem = opencv_name_problem(out)
    if problem is not None:
        raise InputError(f"--plot: {problem}")
    config = bench_config(args)
    timing = time_stages(config, args.frames, args.warmup)
    print(table(timing.wall_ms), flush=True)
    print(prediction(timing, threaded_run(config, THREADED_S)))
    try:
        written = cv2.imwrite(str(out), plot(timing.wall_ms, timing.title))
    except cv2.error as exc:
        raise InputError(f"--plot {out}: {exc.err or exc}") from None
    if not written:
        raise InputError(f"--plot {out}: cannot write the file")
    print(f"plot: {out}")
    return 0
