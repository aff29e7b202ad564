"""glibc's malloc, set for a pipeline whose threads allocate and free frame-sized blocks. Elsewhere (musl,
macOS) these change nothing."""

from __future__ import annotations

import contextlib
import ctypes

_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # glibc malloc.h
_TOP_PAD = 32 << 20


def tune_malloc() -> None:
    """Set malloc for a pipeline (the ``edgeseg`` command does at start; an embedding program may).

    Frames, maps and masks (hundreds of KB each) are allocated and freed every frame by several threads, and
    a frame is freed by another thread than the one that made it. Two settings:

    - a fixed mmap threshold (256 KB): glibc would otherwise raise it and serve such blocks from per-thread
      heaps that keep their peak (measured on the demo: 19 MB more peak RSS);
    - 32 MB of free space kept at the top of each heap: without it, a heap gives back its top as soon as
      a frame's blocks are freed, and the next frame's come fresh from the kernel, page by page. Measured
      on the demo (`edgeseg run --max-frames 300`, 2-core AMD EPYC): ~6,900 page faults a frame, 34 ms of
      kernel time a frame and 17 fps, against ~150, 8 ms and 22-26 fps, for 11 MB more peak RSS (166 ->
      178 MB)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        libc.mallopt(_M_TOP_PAD, _TOP_PAD)


def release_free_memory() -> None:
    """Give the kernel back the free pages of every heap (``malloc_trim``): after a large structure made on
    one thread is freed, when its successor will be made on another, whose heap those pages would not serve
    (they would stay resident, kept by the top pad above)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
