"""systemd's notify protocol: datagrams of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` (sd_notify(3)).

A few lines over a Unix datagram socket, as the protocol is specified, instead of a libsystemd binding: the
address is a file path, or an abstract socket when it starts with ``@`` (the ``@`` stands for the leading
NUL byte). Sending never raises: a manager that went away must not take the pipeline down with it, so a
failed send is logged once and the notifier goes quiet.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# systemd reads a notification into a buffer of PIPE_BUF bytes and ignores one that does not fit, all of it
# (WATCHDOG=1 too): NOTIFY_BUFFER_MAX in src/core/manager.c, "Received notify message exceeded maximum size"
MAX_DATAGRAM = 4096


class Notifier:
    """Talks to the service manager; without ``$NOTIFY_SOCKET`` every method does nothing."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock: socket.socket | None = None
        self._broken = False
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The manager this process runs under. ``WATCHDOG_USEC`` only counts when ``WATCHDOG_PID`` is
        unset or names this process (sd_watchdog_enabled(3)): a child must not feed its parent's watchdog."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if (not pid or pid == str(os.getpid())) and env.get("WATCHDOG_USEC", "").isdigit():
            watchdog = int(env["WATCHDOG_USEC"]) or None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None and not self._broken

    def send(self, fields: Mapping[str, str | int]) -> bool:
        """One datagram with ``fields`` (``{"READY": 1, "STATUS": "..."}``); ``True`` when it was sent."""
        if self._sock is None or self._broken or self.address is None:
            return False
        lines = [f"{k}={_one_line(str(v))}".encode("utf-8", "replace") for k, v in fields.items()]
        data = b"\n".join(lines)
        if len(data) > MAX_DATAGRAM and "STATUS" in fields:
            # STATUS is the one free text: shortened (on a character boundary) so the rest still counts
            status = next(i for i, k in enumerate(fields) if k == "STATUS")
            cut = MAX_DATAGRAM - (len(data) - len(lines[status]))
            lines[status] = lines[status][:cut].decode("utf-8", "ignore").encode("utf-8")
            data = b"\n".join(lines)
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(data, target)
        except OSError as exc:
            self._broken = True
            log.warning(
                "cannot notify the service manager at %s (%s): status and watchdog stop", self.address, exc
            )
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send({"READY": 1, "STATUS": status, "MAINPID": os.getpid()})

    def reloading(self) -> bool:
        # MONOTONIC_USEC: what systemd >= 253 wants with RELOADING=1 (Type=notify-reload); 252 ignores it
        return self.send(
            {"RELOADING": 1, "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}
        )

    def stopping(self, status: str) -> bool:
        return self.send({"STOPPING": 1, "STATUS": status})

    def status(self, status: str) -> bool:
        return self.send({"STATUS": status})

    def watchdog(self, status: str) -> bool:
        return self.send({"WATCHDOG": 1, "STATUS": status})

    def extend_timeout(self, seconds: float, status: str) -> bool:
        """Ask for ``seconds`` more of start-up (or stop) time from now: ``EXTEND_TIMEOUT_USEC``."""
        return self.send({"EXTEND_TIMEOUT_USEC": int(seconds * 1e6), "STATUS": status})

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value: str) -> str:
    # systemd splits a datagram at "\n" and "\r" alike, so either would start a new KEY=VALUE assignment
    # inside a value; and it ignores a whole datagram with a NUL byte in it (src/core/manager.c)
    return value.replace("\n", " ").replace("\r", " ").replace("\0", " ")
