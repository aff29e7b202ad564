"""Work one call shares out to the process's other cores: helper threads for OpenCV and numpy calls, which
let go of the GIL while they run.

A post-processing step that is one long chain of such calls (the argmax of a model's score planes, a class
mask labelled per class) runs on one core while the others idle: on the AI Camera's host, post-processing
is all the host does. The helpers are made once, one fewer than the usable cores (the calling thread is the
other), and live as long as the process: a pool made per call cost its threads' start each time.

Only calls of tens of microseconds or more gain: each call back into Python takes the GIL, and two threads
that take it thousands of times a map wait on each other for longer than they save (so the argmax reads
larger bands side by side than it does alone: :data:`edgeseg.semantic.scores.SIDE_BAND_PIXELS`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from edgeseg.threadplan import usable_cores

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child has the pool's object but none of its threads: it makes its own


def helpers() -> int:
    """How many helper threads share the work of a call: one fewer than the usable cores."""
    return usable_cores() - 1


def _helper_pool() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max(1, helpers()), thread_name_prefix="edgeseg-side")
            _pool_pid = os.getpid()
        return _pool


def on_helper(call: Callable[[], T]) -> Future[T]:
    """``call`` started on a helper thread while the caller goes on; with one usable core, run here at once.
    Either way its result (or its error) comes from the future's ``result()``."""
    if helpers() > 0:
        return _helper_pool().submit(call)
    done: Future[T] = Future()
    try:
        done.set_result(call())
    except Exception as err:  # (handed to the caller through the future, as a helper's is)
        done.set_exception(err)
    return done


def side_by_side(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Each of ``calls``' results, in order, the calls run on the calling thread and the helpers at once,
    each thread taking the next call not yet taken. Returns once every call taken has ended; the first error
    is raised then, and calls not yet taken are not made."""
    results: dict[int, T] = {}
    queue = iter(range(len(calls)))
    taking = threading.Lock()
    failed = threading.Event()

    def drain() -> None:
        while not failed.is_set():
            with taking:
                i = next(queue, None)
            if i is None:
                return
            try:
                results[i] = calls[i]()
            except BaseException:
                failed.set()
                raise

    n = min(helpers(), len(calls) - 1)
    started = [_helper_pool().submit(drain) for _ in range(n)] if n > 0 else []
    try:
        drain()
    finally:
        # A helper still busy with other work (a job of on_helper) has not started its share: the caller made
        # those calls itself, and waits only for the calls under way, which may write into its arrays.
        for future in started:
            if not future.cancel():
                future.exception()
    for future in started:
        if not future.cancelled():
            future.result()
    return [results[i] for i in range(len(calls))]
