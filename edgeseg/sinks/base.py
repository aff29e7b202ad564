"""The sink extension point: a tiny Protocol, and what the pipeline tells every sink when building it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from edgeseg.annotate import annotate, hud_lines
from edgeseg.errors import ConfigError
from edgeseg.frame import Result
from edgeseg.live import Controls
from edgeseg.stats import PipelineStats

NAME_MAX = 255  # bytes in one file name (limits.h; ext4, btrfs, xfs, tmpfs, vfat's long names)


class Sink(Protocol):
    """Receives every result of a pipeline, on a thread of its own.

    ``send`` may raise for one result (the pipeline counts that result as lost, names the sink in the
    summary and goes on); ``close`` is called once at the end, also after failures, and must finalize
    whatever the sink writes.
    """

    def send(self, result: Result) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ReportingSink(Protocol):
    """A sink that says what it writes where (the run's start-up line) and what it wrote (the summary)."""

    def send(self, result: Result) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """What goes where, e.g. ``out.jsonl (JSON lines)``."""

    def report(self) -> SinkReport:
        """Summary lines after ``close()``, and results it took but could not write (``lost``)."""


@runtime_checkable
class LosslessSink(Protocol):
    """A sink that must not lose a result it was handed (MQTT, through its on-disk spool).

    The pipeline gives it a queue that never drops oldest (a full queue makes the producer wait, and only a
    sink stuck for :data:`edgeseg.pipeline.LOSSLESS_PUT_TIMEOUT_S` loses results, counted), hands it every
    result waiting at once (``send_batch``, so it can write them in one transaction; with a ``linger_s``
    attribute, also those that come within that many seconds of the first), lets it drain its
    queue at stop, and prints its ``report()`` at the end of the run (whose ``lost`` makes the run fail).
    """

    def send(self, result: Result) -> None: ...

    def send_batch(self, results: Sequence[Result]) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...

    def report(self) -> SinkReport: ...


@runtime_checkable
class StatusSink(Protocol):
    """A sink with a live state worth a service manager's status line (the MQTT link and its spool)."""

    def send(self, result: Result) -> None: ...

    def close(self) -> None: ...

    def status(self) -> str:
        """A few words, e.g. ``mqtt connected, spool 0``; cheap (called every few seconds)."""


@runtime_checkable
class HealthSink(Protocol):
    """A sink that delivers from a thread of its own (the MQTT publisher), which the pipeline's health, and
    so the service's watchdog, must cover too: results a sink spools but can no longer send are a stall."""

    def send(self, result: Result) -> None: ...

    def close(self) -> None: ...

    def failure(self) -> str | None:
        """Why the sink can no longer deliver (its thread has ended), or None; cheap."""


@dataclass(frozen=True)
class SinkReport:
    """A lossless sink's account of the run: summary lines, and how many results it accepted and will
    never deliver (the run then exits with status 3)."""

    lines: tuple[str, ...]
    lost: int = 0


def _no_stats() -> PipelineStats:
    return PipelineStats()


def _no_fps() -> float | None:
    return None


def _no_stop() -> None:
    return None


def _no_state() -> str:
    return ""


@dataclass(frozen=True)
class SinkContext:
    """What a sink may know of the pipeline it belongs to.

    Attributes:
        class_names: the model's class names, indexed by class id.
        stats: a live snapshot of the pipeline's figures (for HUDs and status messages).
        request_stop: asks the pipeline to stop (the display window's ``q`` key).
        source_fps: the source's frame rate once it is open, if it knows one.
        model_path: the model file, for sinks that describe it (MQTT ``info``).
        model_name: the model card's name.
        never_instances: the class ids no instance has (a semantic model's background and contact
            classes): not counted.
        source_uri: the source's URI.
        source_state: the source's state line now (``"running"``, ``"connecting (attempt 3, last error:
            ...)"``; see :class:`edgeseg.sources.SourceStats`), ``""`` when unknown.
        state_dir: where a sink keeps state across restarts (the MQTT spool); see :mod:`edgeseg.statedir`.
        control: the pipeline's live settings, for sinks that change them (MQTT ``config/*``); ``None``
            when the pipeline has none.
        zones, lines: the pipeline's zones (polygons) and counting lines (segments) by name, normalized
            frame coordinates: their counts are published, the annotator draws them.
    """

    class_names: tuple[str, ...] = ()
    stats: Callable[[], PipelineStats] = field(default=_no_stats)
    request_stop: Callable[[], None] = field(default=_no_stop)
    source_fps: Callable[[], float | None] = field(default=_no_fps)
    model_path: Path | None = None
    model_name: str = ""
    never_instances: frozenset[int] = frozenset()
    source_uri: str = ""
    source_state: Callable[[], str] = field(default=_no_state)
    state_dir: Path | None = None
    control: Controls | None = None
    zones: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    lines: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)

    def render(self, result: Result, extra: Sequence[str] = ()) -> NDArray[np.uint8]:
        """The result drawn on a copy of its frame, with the pipeline's live figures (and ``extra`` lines)
        as a HUD."""
        stats = self.stats()
        return annotate(
            result.frame.image,
            result.instances,
            self.class_names,
            hud=[
                *hud_lines(stats.fps, stats.latency_ms_p50, stats.latency_ms_p99, stats.dropped_total),
                *extra,
            ],
            truth=result.frame.truth,
            zones=self.zones,
            lines=self.lines,
        )


SinkFactory = Callable[[Any, SinkContext], Sink | None]
"""Builds a sink from its config section (``sinks.<name>``); ``None`` when the section leaves it off."""


@dataclass(frozen=True)
class SinkSpec:
    """What a sink module declares about itself: its name (the ``sinks.<name>`` section), the frozen
    dataclass of that section (validated and documented by :mod:`edgeseg.config`) and its factory."""

    name: str
    config: type[Any]
    create: SinkFactory
    doc: str


def check_output_path(path: Path, key: str) -> Path:
    """``path`` if a file can be created there, else a :class:`ConfigError` naming the config ``key``.

    The check creates (and removes) a file beside ``path`` for real: permission bits say nothing about
    ``/proc``, a read-only mount or a full disk, and root passes every ``os.access`` test.
    """
    path = Path(path)
    try:
        exists = path.exists()  # (False in a missing folder: said below)
    except OSError as exc:  # a name longer than the file system takes: "File name too long", a traceback
        raise ConfigError(f"{key}: cannot create {path}: {exc.strerror or exc}") from None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        if os.path.exists(parent):  # (a file named where the folder should be)
            raise ConfigError(f"{key}: {parent} is not a folder (for {path})")
        raise ConfigError(f"{key}: folder {parent} does not exist (for {path})")
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a folder, expected a file name")
    if exists and not os.access(path, os.W_OK):
        raise ConfigError(f"{key}: {path} is not writable")
    try:
        probe = probe_path(path)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create {path}: {exc.strerror or exc}") from None
    except UnicodeEncodeError:
        # a name this locale's file names cannot hold (ü under LANG=C without UTF-8 mode)
        raise ConfigError(
            f"{key}: cannot create {path}: the name cannot be written in this locale's "
            f"{sys.getfilesystemencoding()} file names (set LANG=C.UTF-8)"
        ) from None
    return path


def probe_path(path: Path) -> Path:
    """A scratch file beside ``path`` with the same suffix (writers pick their container by suffix) and its
    characters (a name the file system or the locale refuses is refused for the probe too). Its stem is cut
    where the probe's name would pass the NAME_MAX bytes a file name may have, so that a name of nearly
    that many is not refused for its probe's. Raises UnicodeEncodeError as creating the file would."""
    tag = f".edgeseg-probe-{os.getpid()}{path.suffix}"
    stem = path.stem
    while stem and len(os.fsencode(f".{stem}{tag}")) > NAME_MAX:
        stem = stem[:-1]
    return path.with_name(f".{stem}{tag}")
