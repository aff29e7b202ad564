"""The connect / read / reconnect-with-backoff loop shared by live sources (cameras and streams).

A subclass says how to connect, grab one image and disconnect; this class owns the rest: the first connect
may fail (the camera is plugged in later, the stream comes up later) and a dropped device is reconnected
after ``initial_s, 2·initial_s, …, max_s`` seconds, forever, until ``close()``. Waits are interruptible, and
a device call in flight is never torn down from under the reading thread.
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

from edgeseg.frame import Frame
from edgeseg.geometry import FULL_ROI, Roi
from edgeseg.sources import SourceStats, backoff_delays

log = logging.getLogger("edgeseg.sources")


@dataclass(frozen=True, eq=False)
class Grab:
    """One image from a device and what came with it (see :class:`~edgeseg.frame.Frame` for the fields)."""

    image: NDArray[np.uint8]
    t_capture_ns: int
    wall_time: float
    roi: Roi = FULL_ROI
    tensors: Mapping[str, NDArray[np.float32]] | None = None
    tensor_roi: Roi | None = None


class LiveSource(ABC):
    """Base of live sources: ``read()`` returns the next grabbed frame, reconnecting as long as it takes."""

    live = True
    frames_total: int | None = None

    def __init__(self, uri: str, reconnect_initial_s: float = 0.5, reconnect_max_s: float = 10.0) -> None:
        self.uri = uri
        self._initial_s = reconnect_initial_s
        self._max_s = reconnect_max_s
        self._stop = threading.Event()
        self._io = threading.Lock()  # held while a device call is in flight
        self._connected = False
        self._attempts = 0
        self._delays: Iterator[float] = backoff_delays(reconnect_initial_s, reconnect_max_s)
        self._frames = 0
        self._state = "new"

    # --- what subclasses provide -------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> bool:
        """Open the device; False (after logging why) when it is not there yet."""

    @abstractmethod
    def _grab(self) -> Grab | None:
        """One image, or None when the device dropped (it will be disconnected and reconnected)."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Release the device; called with no device call in flight."""

    def _running_state(self) -> str:
        """The state line while frames flow (a subclass may report more, e.g. a firmware upload)."""
        return "running"

    # --- the Source protocol -----------------------------------------------------------------------------
    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self._frames, reconnects=max(self._attempts - 1, 0), state=self._state)

    def open(self) -> None:
        """Try the first connection now; a failure is not fatal (``read()`` keeps trying with backoff)."""
        with self._io:
            if not self._stop.is_set():
                self._try_connect()

    def read(self) -> Frame | None:
        while not self._stop.is_set():
            with self._io:
                if self._stop.is_set():
                    break
                if not self._connected and not self._try_connect():
                    grab = None
                elif (grab := self._grab()) is None:
                    log.warning("%s: stream dropped after %d frame(s); reconnecting", self.uri, self._frames)
                    self._disconnect()
                    self._connected = False
            if grab is not None:
                self._delays = backoff_delays(self._initial_s, self._max_s)
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
                return frame
            if not self._connected:
                delay = next(self._delays)
                self._state = f"reconnecting in {delay:.1f} s (attempt {self._attempts + 1})"
                log.info("%s: %s", self.uri, self._state)
                self._stop.wait(delay)
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

    def _release_when_free(self) -> None:
        with self._io:
            self._release()

    def _release(self) -> None:
        if self._connected:
            self._connected = False
            self._disconnect()

    def _try_connect(self) -> bool:
        self._attempts += 1
        self._state = "connecting"
        started = time.monotonic()
        self._connected = self._connect()
        if self._connected:
            log.info(
                "%s: connected in %.1f s (attempt %d)", self.uri, time.monotonic() - started, self._attempts
            )
            self._state = self._running_state()
        return self._connected
