"""This process's resident memory, as Linux counts it (``/proc/self/status``); unknown elsewhere.

A device runs for months: its own figure in the status line and the run's summary shows memory that creeps
and what a pipeline needs at its peak, on the device itself. (The service manager's ``Memory:`` is the
cgroup's, which also counts the page cache of the files the service wrote.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Resident:
    """Resident set size now and its peak since the process started, in MB (``VmRSS``, ``VmHWM``)."""

    now_mb: float
    peak_mb: float

    def line(self) -> str:
        """The summary's line."""
        return f"memory: peak {self.peak_mb:.0f} MB resident, {self.now_mb:.0f} MB at the end"


def resident(status: Path = STATUS) -> Resident | None:
    """This process's :class:`Resident` memory, from ``status`` (a ``/proc/PID/status`` file); None where it
    cannot be read or lacks either figure (not Linux, /proc not mounted, a form it does not know)."""
    try:
        text = status.read_text(errors="replace")  # (the Name line is any bytes a process set)
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            try:
                kb[key] = int(value.split()[0])  # "  153344 kB"
            except (ValueError, IndexError):  # (an emulated /proc: a status line never stops a run)
                return None
    if len(kb) < 2:
        return None
    return Resident(kb["VmRSS"] / 1024, kb["VmHWM"] / 1024)


def memory_mb() -> dict[str, float] | None:
    """This process's memory as the MQTT ``stats`` message and the web page give it, ``{"resident": MB,
    "peak": MB}`` (``edgeseg/schemas/stats.json``); None where it is unknown."""
    r = resident()
    return None if r is None else {"resident": round(r.now_mb, 1), "peak": round(r.peak_mb, 1)}
