"""Inference a few nice steps below the pipeline's other threads (Linux).

Behind a live camera a CPU backend keeps every core busy, and the decode, sink and source threads, each short,
wait for a core behind it: a frame's latency then depends on where the scheduler happens to be in
inference's slices. Run a few nice steps lower, inference yields a core as soon as another stage has work;
the other stages' work has to be done anyway, so the rate should not change. Measured on the demo model on 2
cores, alternated pairs in one process: a live source at twice the pipeline's rate (two sets of 8 pairs),
latency p99 44 and 42 ms against 49 and 51, p99/p50 1.39 and 1.41 against 1.50 and 1.65; from a file with
JSON lines and MQTT (8 pairs), 71.7 fps against 74.5, pairs 0.86-1.09 (median 0.98: the machine's noise; a
cost of a few percent is not ruled out).

A thread inherits its creator's nice value, so the model is loaded on a lowered thread too
(:func:`call_lowered`): onnxruntime's intra-op pool, made with the session, then runs at inference's level.
An unprivileged process may raise a nice value but never lower it again, so a thread is set to the main
thread's value plus the step, and left as it is where it already runs that low or lower: lowering twice is
lowering once. Elsewhere than on Linux a thread has no nice value of its own (``setpriority`` would lower
the whole process), and nothing is done. Where lowering fails (a sandbox that forbids ``setpriority``),
:func:`could_not_lower` says so, so the run does not claim a priority it does not have.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
MAX_NICE = 19
log = logging.getLogger(__name__)
_failed = threading.Event()


def lowers(step: int) -> bool:
    """Whether a step of ``step`` lowers anything here (a positive step, on Linux)."""
    return step > 0 and sys.platform == "linux"


def could_not_lower() -> bool:
    """Whether lowering a thread failed in this process (logged once, at the first failure)."""
    return _failed.is_set()


def thread_nice() -> int | None:
    """The calling thread's nice value; None where threads have none of their own."""
    if sys.platform != "linux":
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_this_thread(step: int) -> None:
    """Run the calling thread ``step`` nice steps below the main thread (at most nice 19). A failure is
    logged once and the thread runs on at its own level."""
    if not lowers(step):
        return
    tid = threading.get_native_id()
    try:
        # PRIO_PROCESS with a thread id: that one thread (Linux); the process id names the main thread
        level = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, os.getpid()) + step)
        if os.getpriority(os.PRIO_PROCESS, tid) < level:
            os.setpriority(os.PRIO_PROCESS, tid, level)
    except OSError as exc:
        if not _failed.is_set():
            _failed.set()
            log.warning("inference runs at the pipeline's priority: cannot lower it (%s)", exc)


def call_lowered(fn: Callable[[], T], step: int) -> T:
    """``fn()`` on a thread of its own lowered by ``step`` (see :func:`lower_this_thread`), so the threads it
    starts stay that low; its result, or its exception raised here."""
    if not lowers(step):
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    done = threading.Event()

    def run() -> None:
        lower_this_thread(step)
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller, whatever it is
            error.append(exc)
        finally:
            done.set()

    helper = threading.Thread(target=run, name="edgeseg-load", daemon=True)
    helper.start()
    # not join(): a signal handler that raises in it (SIGTERM's clean stop, Ctrl-C) makes Python 3.11's join
    # mark the thread ended while it still runs (threading.py, _wait_for_tstate_lock's bpo-45274 branch), and
    # the command, not seeing it, exited through the interpreter's teardown with it inside the backend's C++
    # (SIGABRT, "terminate called without an active exception", or SIGSEGV)
    done.wait()
    if error:
        raise error[0]
    return result[0]
