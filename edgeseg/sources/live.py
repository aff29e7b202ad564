"""The connect / read / reconnect-with-backoff loop shared by live sources (cameras and streams).

A subclass says how to connect, grab one image and disconnect; this class owns the rest: the first connect
may fail (the camera is plugged in later, the stream comes up later) and a dropped device is reconnected
after ``initial_s, 2·initial_s, …, max_s`` seconds until a frame comes, ``close()`` is called, or
``give_up_after_s`` pass without a frame (then ``read()`` raises :class:`~edgeseg.errors.SourceGoneError`).
Waits are interruptible, and a device call in flight is never torn down from under the reading thread.

Every failure is logged at WARNING with its reason and the next attempt, throttled so that a camera unplugged
for months does not flood the journal: attempts 1-3, then 10, 20, …, 90, then 100, 200, … (each line says
which attempt is reported next), and any attempt that fails for a reason not reported yet in this outage.
A stream that drops soon after each connect (it flaps) is one outage too: the backoff starts again only after
a connection that held for :data:`STABLE_S`, and its drops are reported 1-3, 10, 20, … as attempts are.
``stats.state`` always has the current line.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import SourceGoneError
from edgeseg.frame import Frame
from edgeseg.geometry import FULL_ROI, Roi
from edgeseg.sources import SourceStats, backoff_delays
from edgeseg.watchdog import Activity

log = logging.getLogger("edgeseg.sources")

STABLE_S = 10.0  # a connection that delivered this long resets the backoff (the MQTT publisher's rule)


@dataclass(frozen=True, eq=False)
class Grab:
    """One image from a device and what came with it (see :class:`~edgeseg.frame.Frame` for the fields)."""

    image: NDArray[np.uint8]
    t_capture_ns: int
    wall_time: float
    roi: Roi = FULL_ROI
    tensors: Mapping[str, NDArray[np.float32]] | None = None
    tensor_roi: Roi | None = None


def reported_attempt(attempt: int) -> bool:
    """Whether a failed attempt is logged at WARNING: 1-3, then 10, 20, …, 90, 100, 200, …"""
    return attempt <= 3 or (attempt >= 10 and attempt % 10 ** (len(str(attempt)) - 1) == 0)


def _next_reported(attempt: int) -> int:
    return next(k for k in range(attempt + 1, 10 * attempt + 10) if reported_attempt(k))


class LiveSource(ABC):
    """Base of live sources: ``read()`` returns the next grabbed frame, reconnecting as long as allowed."""

    live = True
    frames_total: int | None = None

    def __init__(
        self,
        uri: str,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        give_up_after_s: float | None = None,
    ) -> None:
        self.uri = uri
        self._initial_s = reconnect_initial_s
        self._max_s = reconnect_max_s
        self._give_up_after_s = give_up_after_s
        self._stop = threading.Event()
        self._io = threading.Lock()  # held while a device call is in flight
        self._connected = False
        self._attempts = 0  # connection attempts in all
        self._tries = 0  # connection attempts since the last frame
        self._delays: Iterator[float] = backoff_delays(reconnect_initial_s, reconnect_max_s)
        self._frames = 0
        self._held_back = 0  # grabs held back once the device was ready (stats.held_back)
        self._connection_frames = 0  # frames since the current connection came up
        self._connected_at = 0.0  # when the current connection came up (monotonic s)
        # drops in a row of connections that delivered (one that held for STABLE_S starts the count again)
        self._drops = 0
        self._last_frame = time.monotonic()  # or open() when no frame came yet
        self._failure: str | None = None  # why the last attempt or read failed, not waited out yet
        self._last_error: str | None = None
        self._reported: set[str] = set()  # reasons logged at WARNING since the last frame
        # A reason the subclass has already announced once (e.g. "waiting for /dev/video3 to appear"):
        # retries that fail for it again are logged at DEBUG only.
        self._announced: str | None = None
        self._state = "new"
        # the device call in flight (connect, grab, disconnect), for the watchdog: waiting between attempts
        # is this class's own bounded choice, a device call that never returns is a stall
        self.activity = Activity()

    # --- what subclasses provide -------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> str | None:
        """Open the device: None when connected, else why not in a few words (``"cannot open X"``)."""

    @abstractmethod
    def _grab(self) -> Grab | str | None:
        """One image, or why not in a few words (None: no reason known) when the device dropped: it will be
        disconnected and reconnected, and the reason is reported as the drop is (throttled, not each time)."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Release the device; called with no device call in flight."""

    def _preparing(self) -> bool:
        """Whether the connected device is still getting ready and delivers nothing usable yet (a subclass
        may say so, e.g. during a firmware upload): the source counts as waiting, not stuck."""
        return False

    def _nominal_fps(self) -> float | None:
        """The device's frame rate, where it says (``stats.fps``: an output video's rate)."""
        return None

    def _running_state(self) -> str:
        """The state line while frames flow (a subclass may report more, e.g. a firmware upload)."""
        return "running"

    def _holds_back(self, grab: Grab) -> bool:
        """Whether a grab is not delivered although the device works (a subclass may say so, e.g. images
        that come without the results of a network still being uploaded): ``read()`` grabs the next one, and
        counts it in ``stats.held_back`` unless the device is still :meth:`_preparing`."""
        return False

    # --- the Source protocol -----------------------------------------------------------------------------
    @property
    def stats(self) -> SourceStats:
        return SourceStats(
            frames=self._frames,
            reconnects=max(self._attempts - 1, 0),
            attempt=self._tries,
            last_error=self._last_error,
            state=self._state,
            fps=self._nominal_fps(),
            waiting=self._tries > 0 or self._preparing(),
            held_back=self._held_back,
        )

    def open(self) -> None:
        """Try the first connection now; a failure is not fatal (``read()`` keeps trying with backoff)."""
        self._last_frame = time.monotonic()
        with self._io:
            if not self._stop.is_set():
                self._try_connect()

    def read(self) -> Frame | None:
        while not self._stop.is_set():
            if self._failure is not None:
                self._back_off(self._failure)
                self._failure = None
                continue
            with self._io:
                if self._stop.is_set():
                    break
                grab = self._next_grab()
            if grab is not None and not self._holds_back(grab):
                return self._deliver(grab)
            if grab is not None:
                self._last_frame = time.monotonic()  # the device delivers: not silent, even if held back
                self._state = self._running_state()
                self._held_back += 0 if self._preparing() else 1
        # close() may have handed the release to a thread of its own: return only once the device is
        # released, so no thread is left inside the device's library when the process exits (that aborts it)
        self._release_when_free()
        self._state = "closed"  # also when a failure in flight wrote its line after close() wrote this
        return None

    def close(self) -> None:
        """Stop; releases the device now, or right after the device call in flight returns."""
        self._stop.set()
        self._state = "closed"
        # A reader blocked in a device call holds the lock: it sees the stop flag afterwards and the last
        # holder releases the device, so the device is never released under a call in progress.
        if self._io.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._io.release()
        else:
            threading.Thread(target=self._release_when_free, name="edgeseg-source-close", daemon=True).start()

    # --- the loop ----------------------------------------------------------------------------------------
    def _next_grab(self) -> Grab | None:
        """Connect when needed and grab one image; on failure record why (device lock held)."""
        if not self._connected and not self._try_connect():
            return None
        with self.activity:
            grab = self._grab()
        if not isinstance(grab, Grab):
            self._connected = False
            with self.activity:
                self._disconnect()
            n = self._connection_frames
            if n and time.monotonic() - self._connected_at >= STABLE_S:
                self._drops = 1
                self._delays = backoff_delays(self._initial_s, self._max_s)
            elif n:
                self._drops += 1
            dropped = f"stream dropped after {n} frame(s)" if n else "connected, but no frame came"
            self._failed(f"{dropped}: {grab}" if grab else dropped)
            return None
        return grab

    def _try_connect(self) -> bool:
        self._attempts += 1
        self._tries += 1
        self._state = self._line("connecting")
        started = time.monotonic()
        with self.activity:
            reason = self._connect()
        if reason is not None:
            self._failed(reason)
            return False
        self._connected = True
        self._connection_frames = 0
        self._connected_at = time.monotonic()
        log.info("%s: connected in %.1f s (attempt %d)", self.uri, time.monotonic() - started, self._tries)
        self._state = self._running_state()
        return True

    def _failed(self, reason: str) -> None:
        self._failure = self._last_error = reason
        self._state = self._line("waiting for source")

    def _line(self, doing: str) -> str:
        """A state line: ``connecting (attempt 3, last error: cannot open /dev/video0)``."""
        details = [f"attempt {self._tries}"] if self._tries > 1 or (self._tries and self._last_error) else []
        if self._last_error:
            details.append(f"last error: {self._last_error}")
        return f"{doing} ({', '.join(details)})" if details else doing

    def _back_off(self, reason: str) -> None:
        """Wait before the next attempt, or raise SourceGoneError when the source has been silent too long."""
        silent_s = time.monotonic() - self._last_frame
        limit = self._give_up_after_s
        k = self._tries
        if limit is not None and silent_s >= limit:
            self._state = f"gave up after {silent_s:.0f} s without a frame (last error: {reason})"
            # none tried: the read that found the stream dropped waited out the limit by itself (a limit
            # below the read's own timeout)
            tried = f"{k} connection attempt(s) failed" if k else "no reconnection attempted"
            raise SourceGoneError(
                f"source {self.uri!r}: no frame for {silent_s:.1f} s, {tried}, "
                f"last error: {reason} (giving up after source.reconnect_timeout_s = {limit:g} s)"
            )
        delay = next(self._delays)
        if limit is not None:
            delay = min(delay, limit - silent_s)
        if reason == self._announced:
            level, message = logging.DEBUG, f"{reason}; next attempt in {delay:.3g} s (attempt {k})"
        elif not k:
            # a drop after frames came: unthrottled, a stream that flaps would log this line, and frames
            # flowing again, once a drop for as long as it flaps
            d = self._drops
            level = logging.WARNING if reported_attempt(d) else logging.DEBUG
            message = f"{reason}; reconnecting in {delay:.3g} s"
            if d >= 3:
                message += f" (drop {d} in a row; drops are reported again at {_next_reported(d)})"
        else:
            new = reason not in self._reported
            level = logging.WARNING if new or reported_attempt(k) else logging.DEBUG
            message = f"attempt {k} failed: {reason}; next attempt in {delay:.3g} s"
            if k >= 3:
                message += f" (attempts are reported again at {_next_reported(k)})"
        log.log(level, "source %r: %s", self.uri, message)
        if level == logging.WARNING:
            self._reported.add(reason)
        self._stop.wait(delay)

    def _deliver(self, grab: Grab) -> Frame:
        now = time.monotonic()
        if self._reported:
            log.warning(
                "source %r: frames flow again after a %.1f s gap (connected at attempt %d)",
                self.uri,
                now - self._last_frame,
                self._tries,
            )
            self._reported.clear()
        self._last_frame = now
        self._tries = 0
        self._state = self._running_state()
        frame = Frame(
            index=self._frames,
            image=grab.image,
            t_capture_ns=grab.t_capture_ns,
            wall_time=grab.wall_time,
            roi=grab.roi,
            tensors=grab.tensors,
            tensor_roi=grab.tensor_roi,
            source=self.uri,
        )
        self._frames += 1
        self._connection_frames += 1
        return frame

    def _release_when_free(self) -> None:
        with self._io:
            self._release()

    def _release(self) -> None:
        if self._connected:
            self._connected = False
            self._disconnect()
