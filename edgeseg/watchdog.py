"""Whether a running pipeline makes progress, and what a service manager is told about it.

systemd restarts a ``Type=notify`` service whose ``WATCHDOG=1`` pings stop. A ping sent by a timer proves only
that the process is alive; a detector that stalls while its process stays up is the classic edge failure. So
pings here are fed by progress: every stage marks the call it is inside (:class:`Activity`), and
:meth:`edgeseg.pipeline.Pipeline.health` is healthy only while

* no read, inference, decode or sink call has been in flight longer than the limit (a hung inference, a read
  blocked in a driver, a sink stuck on a dead disk), and every stage thread is alive, and
* results keep coming out, or the source is between connection attempts that each complete in bounded time
  (an unplugged camera: the service stays up, saying "waiting for source", instead of restarting in a loop and
  re-uploading the IMX500 firmware at every start).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from edgeseg.sdnotify import Notifier

if TYPE_CHECKING:
    from edgeseg.pipeline import Pipeline

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0  # STATUS= refresh without a watchdog (with one: every half interval)
EXTEND_STEP_S = 10.0  # during start-up, ask for more time this often ...
EXTEND_BY_S = 30.0  # ... this much each time


class Activity:
    """When the call a stage is inside began (monotonic seconds), ``None`` while it waits for work.

    Used as ``with activity: call()``; one writer (the stage's thread), any number of readers.
    """

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None

    def __enter__(self) -> None:
        self.since = time.monotonic()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.since = None

    def busy_for(self, now: float) -> float:
        """Seconds the call in flight has taken so far; 0 when none is."""
        since = self.since
        return 0.0 if since is None else max(0.0, now - since)


@dataclass(frozen=True)
class Health:
    """The pipeline's state for the watchdog: ``ok`` feeds it; ``why`` says why not, or what it waits for."""

    ok: bool
    why: str = ""


class ServiceLink:
    """What the CLI tells the service manager about one run: READY after the first result (or once the
    source is known to be waiting for its device), WATCHDOG pings while :class:`Health` is ok, STATUS with
    the figures, RELOADING/READY around a reload and STOPPING at the end. Without ``$NOTIFY_SOCKET`` it
    does nothing.

    ``status`` gives the figures line (the CLI's progress line, with the sinks' states); ``starting``, the
    start-up's extender, is stopped once the service is ready, or once it stalls before that: a stage hung
    on the first frame is then ended by ``TimeoutStartSec=`` instead of being given start-up time for as
    long as ``pipeline.start_timeout_s`` allows.
    """

    def __init__(
        self, notifier: Notifier, status: Callable[[], str], starting: StartupExtender | None = None
    ) -> None:
        self.notifier = notifier
        self._status = status
        self._starting = starting
        self.ready = False
        self._stalled = False
        self._stopping = False
        self._next = 0.0
        period = notifier.watchdog_s / 2 if notifier.watchdog_s else STATUS_INTERVAL_S
        self._period = min(period, STATUS_INTERVAL_S)

    @property
    def limit_s(self) -> float:
        """The longest a call may take before it counts as stalled: the watchdog interval."""
        return self.notifier.watchdog_s or math.inf

    def tick(self, pipeline: Pipeline) -> None:
        """Called often by the CLI's loop; talks to the manager when something is due."""
        if not self.notifier.enabled:
            return
        now = time.monotonic()
        if (self.ready or self._stalled) and now < self._next:
            return
        health = pipeline.health(self.limit_s)
        if not self.ready:
            if pipeline.stats().frames_done or (health.ok and health.why):
                if self._starting is not None:  # first: one of its "starting: ..." after READY would show
                    self._starting.stop()
                self.ready = True
                self.notifier.ready(self._line(health))
                self._next = now + self._period
                return
            if health.ok:
                return
        self._next = now + self._period
        if health.ok:
            if self._stalled:
                log.warning("the pipeline makes progress again: watchdog pings resume")
                self._stalled = False
            self.notifier.watchdog(self._line(health))
            return
        if not self._stalled:
            self._stalled = True
            if self.ready:
                log.error(
                    "the pipeline has stalled (%s): watchdog pings stop, so the service manager restarts it",
                    health.why,
                )
            else:
                log.error(
                    "the pipeline has stalled before its first result (%s): no more start-up time is asked "
                    "of the service manager, so TimeoutStartSec= ends it",
                    health.why,
                )
                if self._starting is not None:
                    self._starting.stop()
        self.notifier.status(f"stalled: {health.why}")

    def _line(self, health: Health) -> str:
        text = self._status()
        return f"{health.why}; {text}" if health.why and health.why not in text else text

    def reloading(self) -> None:
        if self.ready:  # a SIGHUP during start-up is applied before READY: nothing to bracket
            self.notifier.reloading()

    def reloaded(self) -> None:
        if self.ready:
            self.notifier.send({"READY": 1, "STATUS": self._status()})

    def stopping(self, why: str) -> None:
        """``STOPPING=1`` once, with the first reason given (a signal, or the source's end)."""
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping(why)


class StartupExtender:
    """While the process starts (model load, TensorRT engine build, IMX500 firmware upload, first result),
    asks the manager for more start-up time in steps, each saying what it waits for, up to ``limit_s`` in
    all: beyond that a start-up counts as hung and ``TimeoutStartSec=`` ends it.

    ``phase`` is read at each step (a callable, because the source's own state line, e.g. the firmware
    upload's percentage, is the best description once the source is open).
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.phase: Callable[[], str] = lambda: "starting"
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, limit_s: float, phase: str) -> None:
        self.phase = lambda: phase
        if self.notifier.enabled and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(limit_s,), name="edgeseg-startup", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop asking (idempotent: the CLI's loop calls it each turn once the service is ready)."""
        self._done.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _run(self, limit_s: float) -> None:
        started = time.monotonic()
        while not self._done.is_set():
            spent = time.monotonic() - started
            left = limit_s - spent
            if left <= 0:
                log.error(
                    "start-up has taken %.0f s, over pipeline.start_timeout_s (%g s): no more time asked of "
                    "the service manager",
                    spent,
                    limit_s,
                )
                return
            self.notifier.extend_timeout(min(EXTEND_BY_S, left), f"starting: {self.phase()}")
            self._done.wait(EXTEND_STEP_S)
