"""The ``edgeseg`` command: ``run``, ``bench``, ``eval``, ``doctor``, ``pipelines``, ``mqtt``, ``selftest``.

Errors that edgeseg raises on purpose (:class:`~edgeseg.errors.EdgesegError`) end the command with one line
``edgeseg: error: ...`` on stderr and exit code 2, or 4 for a failure at run time that a restart may fix
(:class:`~edgeseg.errors.TransientError`). Nothing else in the package prints or exits.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TextIO

from edgeseg import __version__, logtally
from edgeseg.errors import EdgesegError, InputError, StdoutError, TransientError
from edgeseg.journal import (
    CheckedStdout,
    Formatter,
    Handler,
    drop,
    echo,
    journal_lines,
    left_out,
    left_out_why,
    put,
    say,
    summary_left_out,
    to_journal,
)
from edgeseg.malloc import tune_malloc
from edgeseg.procmem import Resident, resident

# numpy, OpenCV and the config's modules are imported where used, not here: an install made before
# edgeseg.launch runs `from edgeseg.cli import entry` as its console script, and entry() holds the signals
# only once this module has loaded (tests/test_cli.py: "old console script")
if TYPE_CHECKING:
    from edgeseg.live import Outcome
    from edgeseg.pipeline import Pipeline
    from edgeseg.sdnotify import Notifier
    from edgeseg.signalhold import Held
    from edgeseg.sinks import SinkReport
    from edgeseg.sources import SourceStats
    from edgeseg.stats import PipelineStats

log = logging.getLogger("edgeseg")

EXIT_OK = 0  # finished: the source ended, --max-frames was reached, or SIGTERM stopped a run cleanly
EXIT_USAGE = 2  # bad usage, configuration or input: one line on stderr
EXIT_LOST = 3  # something accepted was lost (the summary says what and where); wins over 0 and 130
EXIT_TRANSIENT = 4  # failed at run time (a camera gone, a port held), a restart may fix it: one line
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C), during start-up or mid-run
WEB_DEFAULT = "127.0.0.1:8080"
JOURNAL_SUMMARY_S = 60.0  # into the journal, the figures line at most this often: months of lines add up
EXIT_CODES = (
    "exit status: 0 finished (run: also when stopped by SIGTERM); 2 bad usage, configuration or input, or "
    "stdout that takes no more (a full disk); "
    "3 something accepted was lost: results a sink took and could not write, or input frames damaged, "
    "skipped or failed (the summary says what and where; 3 wins over 0 and 130); 4 failed at run time, a "
    "restart may fix it (a live source that gave up, the web page's port in use or address not assigned "
    "yet); 130 interrupted by SIGINT; "
    "doctor PIPELINE: 1 when a need is missing; selftest: 1 when it ends FAIL"
)


def _parser() -> argparse.ArgumentParser:
    from edgeseg.cliconfig import add_pipeline_args

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
    add_pipeline_args(run)
    run.add_argument(
        "--display",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show annotated frames in a window (default: as the pipeline file says)",
    )
    run.add_argument(
        "--tune",
        action="store_true",
        help="tune mode: the display window with a trackbar per live threshold (keys: n next, [ ] step, "
        "s save, r reset) and, for semantic models, what the split sees beside the frame",
    )
    run.add_argument(
        "--web",
        nargs="?",
        const=WEB_DEFAULT,
        metavar="HOST:PORT",
        help=f"serve a page with the live stream, the figures and the sliders (default {WEB_DEFAULT}; any "
        "other address than loopback needs a token: $CREDENTIALS_DIRECTORY/web-token or EDGESEG_WEB_TOKEN)",
    )
    run.add_argument(
        "--output",
        action="append",
        metavar="FILE",
        help="write results: FILE.jsonl as JSON lines, FILE.mp4 / FILE.avi as annotated video "
        "(repeatable, one per kind: --output a.jsonl --output a.mp4)",
    )
    run.add_argument(
        "--max-frames",
        type=int,
        metavar="N",
        help="stop after the source has delivered N frames (a live source's frames dropped while "
        "inference is busy count too)",
    )
    run.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish to an MQTT broker: mqtt://host[:port] or mqtts://host[:port] (sets sinks.mqtt.url)",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the MQTT spool, engine cache and saved tuning live (default: $STATE_DIRECTORY, else "
        "~/.local/state/edgeseg)",
    )

    bench = sub.add_parser(
        "bench",
        help="time each stage and plot the latency breakdown",
        description="Time read, preprocess, inference, decode, annotation and serialization frame by frame "
        "(one thread, so stages do not overlap), print a table and write a PNG plot.",
    )
    add_pipeline_args(bench)
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
    doc.add_argument(
        "pipeline", nargs="?", metavar="PIPELINE", help="pipeline YAML to check (or a bundled name)"
    )
    doc.add_argument(
        "--service",
        metavar="NAME",
        help="also check what the installed service edgeseg@NAME needs (devices, what it writes, "
        "credentials, broker, web page, model, stop timeout, watchdog interval against the model's frame "
        "latency)",
    )
    doc.add_argument("--root", default="/", metavar="DIR", help="where the service is installed (default /)")
    pipes = sub.add_parser(
        "pipelines",
        help="list the bundled pipelines ('edgeseg run NAME' runs one)",
        description="The pipelines shipped in pipelines/, by name, with their first comment line.",
    )
    pipes.add_argument(
        "--copy",
        nargs=2,
        metavar=("NAME", "FILE"),
        help="copy a pipeline (a bundled one's name, or a file) to a new FILE of your own, its relative "
        "paths (the model's, ...) made absolute so that it runs from FILE's folder; tune it and save into it",
    )
    from edgeseg import mqtt_commands, selftest, service

    mqtt_commands.add_parser(sub)
    service.add_parser(sub)
    selftest.add_parser(sub)
    _add_verbose(sub)
    return parser


def _add_verbose(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``-v`` after the subcommand too (``edgeseg run -v``), at every level."""
    for parser in sub.choices.values():
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
        )
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_verbose(action)


# run ------------------------------------------------------------------------------------------------------


class TerminatedError(BaseException):
    """SIGTERM arrived before the pipeline was running: stop cleanly (exit 0, as systemd expects). A
    BaseException, like KeyboardInterrupt, so that no `except Exception` on the way turns it into an error."""


class _Signals:
    """SIGINT, SIGTERM and SIGHUP for one run. During start-up (model load, source open) SIGINT and SIGTERM
    interrupt at once: SIGINT as KeyboardInterrupt, SIGTERM as :class:`TerminatedError`. Once the pipeline
    runs they only record the signal, and the main loop stops the pipeline outside the handler; the first
    one only counts. SIGHUP (reload) is only recorded, from the start: its default action would end the
    process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.reload = False
        self.running = False
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload = True
            return
        if self.received is not None:
            # a repeat (Ctrl-C Ctrl-C, a supervisor's second SIGTERM) of a stop under way: raised again, it
            # would break into the stop's own clean-up (the stages' join, the outputs' close, the summary)
            return
        self.received = signum
        if not self.running:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise TerminatedError

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def status_text(
    stats: PipelineStats, source: SourceStats, total: int | None, memory: Resident | None = None
) -> str:
    """The progress line: frames (of the total), rate, latency, ETA, resident memory; the source's state
    while it is not delivering (``waiting for source (attempt 3, last error: ...)``). Nothing unmeasured is
    shown."""
    done = stats.frames_done
    parts = [f"{done}/{total} frames ({min(done / total, 1):.0%})" if total else f"{done} frames"]
    # the FPS sensor's pause rule: a stream of a frame every 10 s is not "no result for 7 s" between frames
    if stats.paused:
        parts.append(f"no result for {stats.idle_s:.0f} s")
    elif math.isfinite(stats.fps):
        parts.append(f"{stats.fps:.1f} fps")
    if math.isfinite(stats.latency_ms_p50):
        parts.append(f"latency p50 {stats.latency_ms_p50:.0f} ms")
    if total and math.isfinite(stats.fps_mean) and stats.fps_mean > 0 and done < total:
        parts.append(f"ETA {_fmt_duration((total - done) / stats.fps_mean)}")
    if memory is not None:
        parts.append(f"RSS {memory.now_mb:.0f} MB")
    if stats.dropped_total:
        parts.append(f"dropped {stats.dropped_total}")
    bad = sum(stats.bad_frames.values())
    if bad:
        parts.append(f"failed {bad}")
    if source.state not in ("running", "ended", "closed", "new"):
        parts.append(f"source: {source.state}")
    return "  ".join(parts)


class Progress:
    """On a terminal, one status line rewritten in place every 0.25 s; otherwise one line every
    ``interval_s`` (a log file keeps them), and into the journal at most one a minute, at info."""

    def __init__(self, stream: TextIO, total: int | None, interval_s: float) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self.journal = to_journal(stream)
        self.interval_s = max(interval_s, JOURNAL_SUMMARY_S) if self.journal else interval_s
        if self.tty:
            self.interval_s = 0.25
        self._next = time.monotonic() + self.interval_s
        self._shown = False

    def due(self) -> bool:
        """Whether the next line is due (the caller takes the figures only then)."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    def show(self, stats: PipelineStats, source: SourceStats) -> None:
        text = status_text(stats, source, self.total, resident())
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            put(self.stream, f"\r{text[:width]}\x1b[K")
            self._shown = True
        else:
            put(self.stream, (journal_lines(text, logging.INFO) if self.journal else text) + "\n")

    def end(self) -> None:
        """Clear the in-place line before the summary is printed."""
        if self._shown:
            put(self.stream, "\r\x1b[K")


def _startup_line(pipeline: Pipeline, pipeline_file: str) -> str:
    from edgeseg.pipeline import ModelStages
    from edgeseg.sinks import ReportingSink

    assert isinstance(pipeline.stages, ModelStages)
    model = pipeline.stages.model
    outputs = [sink.describe() for name, sink in pipeline.sinks.items() if isinstance(sink, ReportingSink)]
    nice = pipeline.stages.inference_nice
    lowered = f", nice +{nice}" if nice else ""
    return (
        f"running {pipeline_file}: model {model.card.name} ({model.backend.description}{lowered}) "
        f"on {pipeline.source.uri}; writing "
        + ("; ".join(outputs) if outputs else "nothing (no outputs: add --output FILE or --mqtt URL)")
    )


def service_status(pipeline: Pipeline, total: int | None) -> str:
    """The service manager's STATUS= line: the progress figures, then each sink's own state (MQTT link
    and spool)."""
    from edgeseg.sinks import StatusSink

    states = [sink.status() for sink in pipeline.sinks.values() if isinstance(sink, StatusSink)]
    return "; ".join([status_text(pipeline.stats(), pipeline.source.stats, total, resident()), *states])


def reload_line(outcome: Outcome, file: str) -> str:
    """The one line a reload (SIGHUP) logs: what it applied, what it could not, and why."""
    parts = []
    if outcome.applied:
        from edgeseg.yamlfile import one_line  # (values as the file spells them: true, null)

        shown = ", ".join(f"{k}={one_line(v)}" for k, v in outcome.applied.items())
        parts.append(f"applied {shown} (config_version {outcome.version})")
    restart = sorted(k for k, why in outcome.rejected.items() if why.startswith("needs a restart"))
    if restart:
        parts.append(f"not applied, needs a restart: {', '.join(restart)}")
    other = {k: why for k, why in outcome.rejected.items() if k not in restart}
    if other:
        parts.append("refused: " + "; ".join(f"{k}: {why}" for k, why in other.items()))
    return f"reloaded {file}: " + ("; ".join(parts) if parts else "nothing changed")


def _reload(pipeline: Pipeline, file: str) -> None:
    if pipeline.control is None:
        return
    try:
        outcome = pipeline.control.reload()
    except EdgesegError as exc:
        log.error("reload of %s failed, the running settings are unchanged: %s", file, exc)
        return
    line = reload_line(outcome, file)
    if outcome.rejected:
        log.warning("%s", line)
    else:
        say(line)


def _run(args: argparse.Namespace, held: Held | None = None) -> int:
    """``edgeseg run``; ``held``: the signals :mod:`edgeseg.launch` held while the command loaded."""
    from edgeseg.sdnotify import Notifier

    notifier = Notifier.from_env()
    signals = _Signals()
    try:  # (from the handlers on: a stop signal raises under them)
        return _run_with(args, signals, notifier, held)
    except KeyboardInterrupt:  # (said here, under the handlers, not in main(): a repeat is only recorded)
        say("interrupted", logging.WARNING)
        return EXIT_INTERRUPTED
    except TerminatedError:
        notifier.stopping("stopped by SIGTERM before the pipeline started")
        say("stopped by SIGTERM before the pipeline started")
        return EXIT_OK
    finally:
        signals.restore()


def _run_with(args: argparse.Namespace, signals: _Signals, notifier: Notifier, held: Held | None) -> int:
    """:func:`_run` under its signal handlers, which stay until the summary is out: a second Ctrl-C or
    SIGTERM (an impatient user, a supervisor that repeats it) is only recorded, and cannot cut the summary
    short or turn a loss's status 3 into 130 or into death by that signal."""
    from edgeseg.watchdog import ServiceLink, StartupExtender

    starting = StartupExtender(notifier)
    try:
        # the stop signals held until the handlers went in, acted on now as if they came here: a stop before
        # anything started
        for signum in [] if held is None else held.stops():
            signal.raise_signal(signum)
        # imported under the handlers (a SIGTERM while they load is a clean stop, not death by it)
        from edgeseg.cliconfig import load_pipeline, pipeline_path
        from edgeseg.control import ControlSetup, describe_tuning
        from edgeseg.evaluate import AccuracySink
        from edgeseg.pipeline import Pipeline
        from edgeseg.sinks import LosslessSink

        loaded = load_pipeline(args)
        config = loaded.config
        starting.start(config.pipeline.start_timeout_s, "loading the model")
        from edgeseg.sources import parse_uri

        # only a synthetic scene carries ground truth: elsewhere the sink would only time itself
        accuracy = AccuracySink() if parse_uri(config.source.uri).scheme == "synthetic" else None
        setup = ControlSetup(
            base=loaded.base,
            file=loaded.file if args.pipeline is not None else None,  # none named: the bundled demo
            tuning=loaded.tuning.path,
            reloader=lambda: load_pipeline(args).base,
            left_out=loaded.tuning.left_out,
        )
        pipeline = Pipeline.from_config(
            config, extra_sinks={"accuracy": accuracy} if accuracy else None, setup=setup
        )
        starting.phase = lambda: f"opening {pipeline.source.uri}"
        tallies = logtally.totals()
        try:
            pipeline.start()
            signals.running = True
        except (TerminatedError, KeyboardInterrupt):
            # a signal once the source opened, before the main loop takes signals over: the stage threads
            # may run, and are stopped and waited for (the outputs finalized, no thread left inside OpenCV)
            pipeline.stop()
            pipeline.wait()
            raise
        starting.phase = lambda: f"waiting for the first result ({pipeline.source.stats.state})"
        path = pipeline_path(args.pipeline)
        shown = "pipelines/demo.yaml" if path is None else args.pipeline
        if path is not None and not os.path.exists(args.pipeline):
            shown = f"pipelines/{path.name}"  # a bundled pipeline named without its file
        say(_startup_line(pipeline, shown))
        if loaded.tuning.values or loaded.tuning.left_out:
            say(describe_tuning(loaded.tuning))
        total = pipeline.source.frames_total
        if total is not None and config.pipeline.max_frames is not None:
            total = min(total, config.pipeline.max_frames)
        progress = Progress(sys.stderr, total, config.pipeline.stats_interval_s)
        link = ServiceLink(notifier, lambda: service_status(pipeline, total), starting)
        while not pipeline.wait(0.1):
            if signals.received is not None:
                link.stopping(f"stopping ({signal.Signals(signals.received).name})")
                pipeline.stop()
            elif signals.reload:
                signals.reload = False
                link.reloading()
                _reload(pipeline, shown)
                link.reloaded()
            link.tick(pipeline)
            if progress.due():
                progress.show(pipeline.stats(), pipeline.source.stats)
        progress.end()
        # (systemd keeps the last STATUS= of a unit that ended until its next start)
        link.stopping("finished" if pipeline.error is None else f"failed: {pipeline.error}")
    finally:
        starting.stop()
    stats = pipeline.stats()
    if pipeline.error is not None and stats.frames_done == 0 and not stats.frames_read:
        raise pipeline.error
    reports = pipeline.reports()
    source = pipeline.source.stats
    lost = losses(stats, source, dict(zip(pipeline.sinks, reports, strict=True)))
    # a run a failure ended (its error follows the summary, with status 4, 2 or 3) is not "done"
    ended = "done" if pipeline.error is None else "failed"
    how = {int(signal.SIGINT): "interrupted (SIGINT)", int(signal.SIGTERM): "stopped (SIGTERM)"}.get(
        signals.received or 0, ended
    )
    lossless = [name for name, sink in pipeline.sinks.items() if isinstance(sink, LosslessSink)]
    with _unless_stdout_gone():  # (the exit status below still says what was lost)
        for line in summary(stats, source, reports, how, lost, lossless):
            echo(line, logging.WARNING if "LOST" in line else logging.INFO)
        # (what a budget left out is no loss: the run said so as it went)
        for line in logtally.since(tallies):
            echo(f"over the run, {line}")
        if skipped := left_out():
            echo(f"over the run, {left_out_why()}: lines of log and progress left out: {skipped}")
        if pipeline.thread_plan is not None:
            echo(f"inference threads: {pipeline.thread_plan}")
        if accuracy is not None and (acc := accuracy.pq.result()) is not None:
            echo(acc.line())
        if accuracy is not None and (tracking := accuracy.tracking.result()) is not None:
            echo(tracking.line())
        if (memory := resident()) is not None:
            echo(memory.line())
    if unsaid := summary_left_out():
        say(f"nothing was reading stdout: lines of the run's summary left out: {unsaid}", logging.WARNING)
    if lost:
        if pipeline.error is not None:
            say(f"error: {pipeline.error}", logging.ERROR)
        return EXIT_LOST
    if pipeline.error is not None:
        raise pipeline.error
    return EXIT_INTERRUPTED if signals.received == signal.SIGINT else EXIT_OK


def _failed_stages(stats: PipelineStats) -> dict[str, int]:
    """Frames a stage raised on, by stage: lost (a sink's failures are in its report; a stream stage's
    result went on without its work)."""
    from edgeseg.stats import STREAM_PREFIX

    return {k: n for k, n in stats.bad_frames.items() if n and not k.startswith(("sink:", STREAM_PREFIX))}


INPUT_FRAMES = "input frames"  # the kind of loss :func:`losses` counts frames in; the others are "at SINK"


def losses(stats: PipelineStats, source: SourceStats, reports: Mapping[str, SinkReport]) -> dict[str, int]:
    """What the run lost, by kind, for the summary's head: input frames (the source's and those a stage
    failed on) and, by sink, what each took and could not deliver (results, video frames, MQTT messages:
    its own lines say which)."""
    kinds = {INPUT_FRAMES: source.lost + sum(_failed_stages(stats).values())}
    kinds |= {f"at {name}": report.lost for name, report in reports.items()}
    return {kind: n for kind, n in kinds.items() if n}


def summary(
    stats: PipelineStats,
    source: SourceStats,
    reports: Sequence[SinkReport],
    how: str,
    lost: Mapping[str, int],
    lossless: Collection[str] = (),
) -> list[str]:
    """The lines printed at the end of a run: what was done, what was written where, what was lost
    (``lost``: by kind, see :func:`losses`; ``lossless``: the sinks whose queue's drops are losses, each in
    its report, not drops by design)."""
    from edgeseg.stats import STREAM_PREFIX, counted

    # the total alone read as frames ("122 LOST: 92 frames processed") where it added frames and results
    kinds = ", ".join(
        counted(n, "input frame") if kind == INPUT_FRAMES else f"{n} {kind}" for kind, n in lost.items() if n
    )
    outcome = f"{how}, {sum(lost.values())} LOST ({kinds})" if kinds else how
    head = (
        f"{outcome}: {counted(stats.frames_done, 'frame')} processed of {stats.frames_read} read in "
        f"{stats.elapsed_s:.1f} s"
    )
    if math.isfinite(stats.fps_mean):
        head += f" ({stats.fps_mean:.1f} fps)"
    if math.isfinite(stats.latency_ms_p50):
        head += f"; latency p50 {stats.latency_ms_p50:.1f} ms, p99 {stats.latency_ms_p99:.1f} ms"
    lines = [head]
    if stats.stage_ms:
        lines.append("stage medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stats.stage_ms.items()))
    lines += _source_lines(source)
    kept = {f"sink:{name}" for name in lossless}
    dropped = {k: v for k, v in stats.drops.items() if v and k not in kept}
    if dropped or stats.discarded:
        drops = ", ".join(f"{k} {v}" for k, v in dropped.items())
        parts = []
        if dropped:
            parts.append(
                f"dropped while a stage was busy: {sum(dropped.values())} ({drops}) "
                "(not lost: a live source keeps the newest frame)"
            )
        if stats.discarded:
            # (a file's too: not the live source's by-design drops)
            parts.append(
                f"discarded at stop: {stats.discarded} (not lost: read ahead when the run was stopped)"
            )
        lines.append("; ".join(parts))
    skipped = {
        k.removeprefix(STREAM_PREFIX): n for k, n in stats.bad_frames.items() if k.startswith(STREAM_PREFIX)
    }
    if skipped:
        lines.append(
            "results passed on without a stream stage's work: "
            + ", ".join(f"{k} failed on {n}" for k, n in skipped.items())
            + " (not lost; see the log)"
        )
    failed = _failed_stages(stats)
    if failed:
        lines.append(
            "LOST: frames a stage failed on: "
            + ", ".join(f"{k} {n}" for k, n in failed.items())
            + " (see the log)"
        )
    for report in reports:
        lines += report.lines
    return lines


def _source_lines(source: SourceStats) -> list[str]:
    from edgeseg.stats import counted

    lines = []
    if source.missing:
        lines.append(
            f"source: LOST {counted(source.missing, 'frame')}: the file holds "
            f"{source.frames + source.skipped} of the {source.expected} its header announces (truncated or "
            "damaged file)"
        )
    if source.skipped:
        skipped = counted(source.skipped, "frame")
        lines.append(f"source: LOST {skipped} that could not be decoded (skipped; see the log)")
    if source.damaged:
        lines.append(
            f"source: {source.damaged} damaged frames processed as far as they decoded (see the log)"
        )
    if source.held_back:
        lines.append(
            f"source: {source.held_back} frames came without the sensor's result and were passed over "
            "(not lost: the next frame's result follows; see the log)"
        )
    return lines


def _pipelines(args: argparse.Namespace) -> int:
    from edgeseg.cliconfig import bundled_pipelines, pipeline_path

    if args.copy:
        from pathlib import Path

        from edgeseg.atomic import replace_file
        from edgeseg.service import installed_pipeline

        name, target = args.copy
        source = pipeline_path(name)
        assert source is not None
        # a bundled pipeline names the demo model relative to its folder (../models/...): copied as it is,
        # its model was not found
        text = installed_pipeline(source)
        if os.path.lexists(target):
            raise InputError(f"--copy: {target} exists; not overwritten (give a new file name)")
        try:
            replace_file(Path(target), text.encode("utf-8"))
        except OSError as exc:
            raise InputError(f"--copy: cannot write {target} ({exc.strerror or exc})") from None
        say(f"copied {name} to {target}: run it with 'edgeseg run {target}'")
        return EXIT_OK
    for name, path in bundled_pipelines().items():
        about = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") and "yaml-language-server" not in line:
                about = line.lstrip("# ").strip()
                break
        print(f"{name:<24}{about}")
    return EXIT_OK


# entry point ----------------------------------------------------------------------------------------------


def _configure_logging(verbose: bool) -> None:
    if not verbose:
        # OpenCV and FFmpeg write their own warnings to stderr (e.g. "moov atom not found" next to our
        # "cannot decode" error); a user sees edgeseg's one line unless they ask for more with -v
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
        import cv2

        # OpenCV 5 moved setLogLevel into cv2.utils.logging (opencv/opencv#27812); OpenCV 4 (pip's up to
        # 4.12, JetPack's and Debian's python3-opencv) has it as cv2.setLogLevel. 0: LOG_LEVEL_SILENT in both
        getattr(cv2.utils, "logging", cv2).setLogLevel(0)
    handler = Handler(sys.stderr)
    journal = to_journal(sys.stderr)
    handler.setFormatter(Formatter(journal))
    root = logging.getLogger("edgeseg")
    root.handlers[:] = [handler]
    # the journal keeps info (connections, engine builds, reloads) where `journalctl -p` can filter it out
    root.setLevel(logging.DEBUG if verbose else logging.INFO if journal else logging.WARNING)
    root.propagate = False


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """The subcommand's entry point. Only its own module is imported: ``edgeseg run`` on a device then carries
    none of the others' (about 1 MB of resident memory for its whole life: ``subprocess`` alone is 0.9)."""
    match name:
        case "pipelines":
            return _pipelines
        case "bench":
            from edgeseg.bench import command
        case "eval":
            from edgeseg.evaluate import command
        case "doctor":
            from edgeseg.doctor import command
        case "mqtt":
            from edgeseg.mqtt_commands import command
        case "service":
            from edgeseg.service import command
        case "selftest":
            from edgeseg.selftest import command
        case _:
            raise AssertionError(f"no entry point for the subcommand {name!r}")
    return command


def _standard_streams() -> None:
    """Open /dev/null on stdin, stdout or stderr where the command was started with it closed (``2>&-``, a
    supervisor that closes them). Python had left ``sys.stderr`` None: the first line logged raised
    AttributeError, in a run with its stages going (then SIGABRT at the exit, the outputs unfinished); and
    the next file opened (an output) took the free descriptor, into which OpenCV and FFmpeg write their
    messages for stderr."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one, the lower ones open
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    # the process's own streams, for its whole life: no context manager
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115


def _printable_stdout() -> None:
    """Under a UTF-8 locale other than C.UTF-8 Python writes stdout strictly: a file name that is not valid
    UTF-8 (held with surrogate escapes) in a summary or listing line raised UnicodeEncodeError, a traceback
    after the run's work was done. It is shown escaped instead, as stderr already shows it."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None, held: Held | None = None) -> int:
    """Entry point of ``edgeseg`` and ``python -m edgeseg``; returns the exit code. ``held``: the signals
    :mod:`edgeseg.launch` held while the command loaded, handed over here."""
    from edgeseg.threadplan import serial_opencv

    _standard_streams()
    tune_malloc()
    serial_opencv()
    _printable_stdout()
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        with contextlib.redirect_stdout(CheckedStdout(sys.stdout)):
            if args.command == "run":
                # its handlers go over the held ones, and put them back at its end: a stop signal after
                # that, before entry() ignores them, is held too, and cannot replace the run's status
                code = _run(args, held)
            else:
                if held is not None:
                    held.release()
                code = _command(args.command)(args)
            # a listing waits in stdout's buffer until the exit, whose flush would fail past any handler
            sys.stdout.flush()
        return code
    except EdgesegError as exc:
        if isinstance(exc, StdoutError):
            drop(sys.stdout)  # what it still buffers goes nowhere at the exit, rather than failing again
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        say(f"error: {message}", logging.ERROR)
        return EXIT_TRANSIENT if isinstance(exc, TransientError) else EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted", logging.WARNING)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # `edgeseg pipelines | head -1`: the reader has what it wanted, as with --count
        drop(sys.stdout)
        return EXIT_OK


@contextlib.contextmanager
def _unless_stdout_gone() -> Iterator[None]:
    """Stop writing to stdout, and go on, if its reader left (``| head -1``, a closed pipe) or it takes no
    more (a full disk: said on stderr; the exit status stays the run's). A broken pipe elsewhere (a camera's
    or a broker's socket) is raised."""
    try:
        yield
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        drop(sys.stdout)
    except StdoutError as exc:
        drop(sys.stdout)
        say(f"the run's summary was not written: {exc}", logging.WARNING)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reading end is closed (so a BrokenPipeError from elsewhere,
    a camera's or a broker's socket, is not taken for the reader leaving)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no stdout at all, or not a file
        return False


def entry(held: Held | None = None) -> NoReturn:
    """The ``edgeseg`` command (after :func:`edgeseg.launch.entry`): :func:`main`, then the exit. A daemon
    thread still inside a device or codec call (a read left behind after its grace, see
    :meth:`Pipeline.wait`) would abort a normal exit in the C++ runtime's teardown ("terminate called
    without an active exception", SIGABRT) and the exit code would be lost: the process then ends without
    that teardown, once everything has been written. ``held`` None: called as the console script of an
    install made before :mod:`edgeseg.launch` (``edgeseg.cli:entry``, until ``pip install`` runs again),
    whose hold starts here: this module's own import loads nothing heavy."""
    from edgeseg.signalhold import Held

    code = main(held=Held() if held is None else held)
    # the command is over and its status decided: a stop signal now (a repeated Ctrl-C, a supervisor's second
    # SIGTERM) has nothing left to stop, and would only replace that status (3 for a loss) with its own
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    left = [t.name for t in threading.enumerate() if t.daemon and t.is_alive()]
    if left:
        log.debug("exiting with threads still running: %s", ", ".join(left))
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            # a line a full disk refused, still buffered: the exit's own flush would fail on it again, and
            # its status 120 replace the command's
            drop(stream)
    if left:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
