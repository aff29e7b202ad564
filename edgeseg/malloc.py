"""glibc's malloc, set for a pipeline whose threads allocate and free frame-sized blocks. Elsewhere (musl,
macOS) these change nothing."""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Callable

_M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -2, -3, -8  # glibc malloc.h
_TOP_PAD = 32 << 20


def tune_malloc() -> None:
    """Set malloc for a pipeline (the ``edgeseg`` command does at start; an embedding program may).

    Frames, maps and masks (hundreds of KB each) are allocated and freed every frame by several threads, and
    a frame is freed by another thread than the one that made it. Three settings, made before the pipeline
    starts its threads:

    - a fixed mmap threshold (256 KB): glibc would otherwise raise it and serve such blocks from per-thread
      heaps that keep their peak (measured on the demo: 19 MB more peak RSS);
    - 32 MB of free space kept at the top of the heap: without it, the heap gives back its top as soon as
      a frame's blocks are freed, and the next frame's come fresh from the kernel, page by page. Measured
      on the demo (`edgeseg run --max-frames 300`, 2-core AMD EPYC): ~6,900 page faults a frame, 34 ms of
      kernel time a frame and 17 fps, against ~150, 8 ms and 22-26 fps, for 11 MB more peak RSS (166 ->
      178 MB);
    - one heap for all threads: glibc gives each new thread its own (up to 8 per core, made for servers of
      many threads), and each keeps the pages its transients once touched, beside the free space of the
      others. Measured with `edgeseg run --max-frames 300`, alternated (2-core AMD EPYC): the demo's peak
      RSS 166.3 -> 161.5 MB, the video-file pipeline's (YOLOv8n-seg, JSON lines and video sinks) 201.8 ->
      182.7 MB, at the same rate; the unpaced pipeline bench ran at 52.5 and 54.8 fps against 53.0 and 53.1.
      The pipeline's threads allocate mostly while they hold the GIL, so they seldom wait for the heap's
      lock."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        libc.mallopt(_M_TOP_PAD, _TOP_PAD)
        libc.mallopt(_M_ARENA_MAX, 1)


def release_free_memory() -> None:
    """Give the kernel back the free pages of every heap (``malloc_trim``): after a large structure is freed,
    before its successor is made, whose blocks need not fall where the freed ones were (the top pad above
    would keep those pages resident beside the new ones)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


TRIM_EVERY_S = 60.0


class Trim:
    """:func:`release_free_memory` at most once every ``every_s`` seconds, for a pipeline to call after each
    frame. Between trims, the blocks freed into the heap (its top pad, see :func:`tune_malloc`, and the holes
    between live blocks) stay resident, and a long run's memory creeps although nothing leaks. On the demo
    with JSON lines and MQTT to a broker (2-core AMD EPYC) it crept from 166 to 183 MB over 11 minutes
    (``scripts/soak.py``); trimmed once a minute in the same pipeline, it was back at 157-168 MB after each
    trim, and over a soak's second half it held 175 MB against 182. A trim took 1-2 ms; the pages it gives
    back cost a few thousand page faults when the heap grows again."""

    def __init__(self, every_s: float = TRIM_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._every, self._clock = every_s, clock
        self._next = clock() + every_s

    def __call__(self) -> bool:
        """Trim if the time has come; whether it did."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._every
        release_free_memory()
        return True
