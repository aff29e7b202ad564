"""The ``edgeseg`` command: ``run``, ``bench``, ``eval`` and ``doctor``.

Errors that edgeseg raises on purpose (:class:`~edgeseg.errors.EdgesegError`) end the command with one line
``edgeseg: error: ...`` on stderr and exit code 2. Nothing else in the package prints or exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from edgeseg import __version__
from edgeseg.errors import EdgesegError, InputError
from edgeseg.frame import Result
from edgeseg.stats import PipelineStats

if TYPE_CHECKING:
    from edgeseg.config import PipelineConfig

log = logging.getLogger("edgeseg")

VIDEO_SUFFIXES = (".mp4", ".avi")
EXIT_USAGE = 2  # bad usage, configuration or input: one line on stderr
EXIT_LOST = 3  # the run ended, but results a sink had accepted were lost (the summary says which and where)
EXIT_CODES = (
    "exit status: 0 finished; 2 bad usage, configuration or input; 3 results that a sink had accepted were "
    "lost (see the summary); 130 interrupted during start-up; doctor PIPELINE: 1 when a need is missing"
)


# arguments ------------------------------------------------------------------------------------------------


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pipeline",
        nargs="?",
        metavar="PIPELINE",
        help="pipeline YAML file (default: the demo pipeline, pipelines/demo.yaml)",
    )
    p.add_argument("--source", metavar="URI", help="frame source: synthetic:parts, a video or image folder, "
                   "v4l2:N, rtsp://..., gst:<pipeline>, picamera2: (overrides source.uri)")  # fmt: skip
    p.add_argument(
        "--model", metavar="PATH", help="model file (.onnx with a card beside it; overrides model.path)"
    )
    p.add_argument("--roi", metavar="L,T,W,H", help="normalized region of interest, e.g. 0.25,0,0.5,1")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any config key, e.g. --set postprocess.score_threshold=0.4 (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeseg",
        description="Real-time instance segmentation on edge devices: camera to published results.",
        epilog=f"Run 'edgeseg COMMAND --help' for the options of one command. {EXIT_CODES}.",
    )
    parser.add_argument("--version", action="version", version=f"edgeseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run a pipeline (default: the demo scene with live accuracy)",
        description="Run a pipeline until its source ends, --max-frames is reached, or SIGINT/SIGTERM.",
    )
    _add_pipeline_args(run)
    run.add_argument(
        "--display",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show annotated frames in a window (default: as the pipeline file says)",
    )
    run.add_argument(
        "--output",
        metavar="FILE",
        help="write results: FILE.jsonl as JSON lines, FILE.mp4 / FILE.avi as annotated video",
    )
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames from the source")
    run.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish to an MQTT broker: mqtt://host[:port] or mqtts://host[:port] (sets sinks.mqtt.url)",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the MQTT spool and engine cache live (default: $STATE_DIRECTORY, else "
        "~/.local/state/edgeseg)",
    )

    bench = sub.add_parser(
        "bench",
        help="time each stage and plot the latency breakdown",
        description="Time read, preprocess, inference, decode, annotation and serialization frame by frame "
        "(one thread, so stages do not overlap), print a table and write a PNG plot.",
    )
    _add_pipeline_args(bench)
    bench.add_argument("--frames", type=int, default=200, metavar="N", help="frames to time (default 200)")
    bench.add_argument(
        "--warmup", type=int, default=10, metavar="N", help="untimed frames first (default 10)"
    )
    bench.add_argument("--plot", default="bench.png", metavar="FILE", help="PNG to write (default bench.png)")

    ev = sub.add_parser(
        "eval",
        help="COCO mask AP and panoptic quality on images with COCO-format ground truth",
        description="Evaluate the pipeline's model on the images listed in a COCO annotations file. "
        "Classes are matched by name (VOC names such as 'aeroplane' map to their COCO names). "
        "Needs pycocotools: pip install edgeseg[bench].",
    )
    ev.add_argument("annotations", metavar="ANNOTATIONS", help="COCO-format annotations JSON")
    ev.add_argument(
        "--images", metavar="DIR", help="folder the file names are relative to (default: the JSON's)"
    )
    ev.add_argument("--pipeline", dest="pipeline", metavar="PIPELINE", help="pipeline YAML (default: demo)")
    ev.add_argument("--model", metavar="PATH", help="model file (overrides model.path)")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override any config key (repeatable)")  # fmt: skip

    doc = sub.add_parser(
        "doctor",
        help="what this machine has (backends, cameras, displays, extras) and what a pipeline needs",
        description="List inference backends, cameras, displays and optional extras, and how to add what is "
        "missing. With a pipeline file, also check what that pipeline needs (its broker answers, ...).",
    )
    doc.add_argument("pipeline", nargs="?", metavar="PIPELINE", help="pipeline YAML to check")
    from edgeseg.mqtt import tools as mqtt_tools

    mqtt_tools.add_parser(sub)
    return parser


def _quoted(value: str) -> str:
    # JSON strings are valid YAML scalars, so paths and URIs with ':' or '#' survive --set parsing
    return json.dumps(value)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The ``key.path=value`` overrides the flags stand for, before the user's own ``--set``s."""
    out: list[str] = []
    if getattr(args, "source", None):
        out.append(f"source.uri={_quoted(args.source)}")
    if getattr(args, "model", None):
        out.append(f"model.path={_quoted(str(Path(args.model).resolve()))}")
    if getattr(args, "roi", None):
        try:
            roi = [float(v) for v in args.roi.split(",")]
        except ValueError:
            roi = []
        if len(roi) != 4:
            raise InputError(f"--roi: expected four numbers left,top,width,height (got {args.roi!r})")
        out.append(f"source.roi={json.dumps(roi)}")
    if getattr(args, "display", None) is not None:
        out.append(f"sinks.display.enabled={'true' if args.display else 'false'}")
    if getattr(args, "output", None):
        path = Path(args.output)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            out.append(f"sinks.jsonl.path={_quoted(str(path.resolve()))}")
        elif suffix in VIDEO_SUFFIXES:
            out.append(f"sinks.video.path={_quoted(str(path.resolve()))}")
        else:
            raise InputError(f"--output: use a .jsonl, .mp4 or .avi file name (got {args.output!r})")
    if getattr(args, "mqtt", None):
        from edgeseg.mqtt.broker import parse_broker_url

        parse_broker_url(args.mqtt, "--mqtt")
        out.append(f"sinks.mqtt.url={_quoted(args.mqtt)}")
    if getattr(args, "state_dir", None):
        out.append(f"pipeline.state_dir={_quoted(str(Path(args.state_dir).resolve()))}")
    if getattr(args, "max_frames", None) is not None:
        if args.max_frames < 1:
            raise InputError(f"--max-frames: must be >= 1 (got {args.max_frames})")
        out.append(f"pipeline.max_frames={args.max_frames}")
    return [*out, *args.overrides]


def load_cli_config(args: argparse.Namespace) -> PipelineConfig:
    from edgeseg.config import load_config

    overrides = _overrides(args)
    config = load_config(args.pipeline, overrides)
    from edgeseg.sinks.display import DisplaySinkConfig, display_problem

    if config.sinks.section(DisplaySinkConfig).enabled and getattr(args, "display", None) is None:
        problem = display_problem()
        if problem is not None:
            log.warning("display turned off: %s", problem)
            config = load_config(args.pipeline, [*overrides, "sinks.display.enabled=false"])
    return config


# run ------------------------------------------------------------------------------------------------------


class AccuracySink:
    """Accumulates panoptic quality against the frames' ground truth (synthetic sources carry it)."""

    def __init__(self) -> None:
        from edgeseg.evaluate import PQAccumulator

        self.pq = PQAccumulator()

    def send(self, result: Result) -> None:
        if result.frame.truth is not None:
            self.pq.add(result.instances, result.frame.truth)

    def close(self) -> None:
        return None


class _Progress:
    """A progress bar with ETA on a terminal, else a stats line every ``interval_s``."""

    def __init__(self, stream: TextIO, total: int | None, interval_s: float) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self.interval_s = interval_s if not self.tty else 0.25
        self._next = time.monotonic() + self.interval_s

    def update(self, stats: PipelineStats, final: bool = False) -> None:
        now = time.monotonic()
        if now < self._next and not final:
            return
        self._next = now + self.interval_s
        if self.tty and self.total:
            done = stats.frames_done
            frac = min(1.0, done / self.total)
            eta = (self.total - done) / stats.fps_mean if stats.fps_mean > 0 else float("nan")
            bar = "#" * int(frac * 30)
            eta_s = f"{eta:4.0f}s" if eta == eta else "   ?s"
            self.stream.write(f"\r[{bar:<30}] {done}/{self.total} {stats.fps:5.1f} fps  ETA {eta_s} ")
            if final:
                self.stream.write("\n")
        elif not final:
            self.stream.write(stats.line() + "\n")
        self.stream.flush()


def _run(args: argparse.Namespace) -> int:
    from edgeseg.pipeline import Pipeline

    config = load_cli_config(args)
    accuracy = AccuracySink()
    pipeline = Pipeline.from_config(config, extra_sinks={"accuracy": accuracy})
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # only a flag here: the main loop below does the work, outside the signal handler

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = _Progress(sys.stderr, pipeline.source.frames_total, config.pipeline.stats_interval_s)
    try:
        pipeline.start()
        while not pipeline.wait(0.1):
            if stop.is_set():
                pipeline.stop()
            progress.update(pipeline.stats())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    stats = pipeline.stats()
    progress.update(stats, final=True)
    if pipeline.error is not None and stats.frames_done == 0:
        raise pipeline.error
    reports = pipeline.reports()
    lost = sum(r.lost for r in reports)
    _print_summary(stats, accuracy, stopped=stop.is_set(), lost=lost)
    for report in reports:
        for line in report.lines:
            print(line)
    if pipeline.error is not None:
        raise pipeline.error
    return EXIT_LOST if lost else 0


def _print_summary(stats: PipelineStats, accuracy: AccuracySink, stopped: bool, lost: int = 0) -> None:
    how = "stopped by signal" if stopped else "done"
    if lost:
        how = f"{how}, {lost} results LOST"
    print(
        f"{how}: {stats.frames_done} frames processed of {stats.frames_read} read in {stats.elapsed_s:.1f} s "
        f"({stats.fps_mean:.1f} fps); latency p50 {stats.latency_ms_p50:.1f} ms, "
        f"p99 {stats.latency_ms_p99:.1f} ms"
    )
    if stats.stage_ms:
        print("stage medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stats.stage_ms.items()))
    drops = ", ".join(f"{k} {v}" for k, v in stats.drops.items() if v)
    print(f"dropped: {stats.dropped_total}" + (f" ({drops})" if drops else "") +
          (f"; discarded at stop: {stats.discarded}" if stats.discarded else ""))  # fmt: skip
    if stats.bad_frames:
        print("bad frames: " + ", ".join(f"{k} {v}" for k, v in stats.bad_frames.items()))
    acc = accuracy.pq.result()
    if acc is not None:
        print(acc.line())


# entry point ----------------------------------------------------------------------------------------------


def _configure_logging(verbose: bool) -> None:
    if not verbose:
        # OpenCV and FFmpeg write their own warnings to stderr (e.g. "moov atom not found" next to our
        # "cannot decode" error); a user sees edgeseg's one line unless they ask for more with -v
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edgeseg: %(levelname)s: %(message)s"))
    root = logging.getLogger("edgeseg")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edgeseg`` and ``python -m edgeseg``; returns the exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    from edgeseg import bench, doctor, evaluate
    from edgeseg.mqtt import tools as mqtt_tools

    commands = {
        "run": _run,
        "bench": bench.command,
        "eval": evaluate.command,
        "doctor": doctor.command,
        "mqtt": mqtt_tools.command,
    }
    try:
        return commands[args.command](args)
    except EdgesegError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"edgeseg: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
