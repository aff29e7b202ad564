"""edgeseg.malloc: glibc's settings for a pipeline, checked in a child process (they are process-wide)."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeseg import malloc

REPO = Path(__file__).resolve().parents[1]

# Four threads that each allocate and free blocks the size of a pipeline's maps and masks (under the mmap
# threshold, so they come from a heap), then glibc's own account of its heaps (malloc_info's XML).
PROBE = """
import ctypes, sys, threading
from edgeseg.malloc import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
libc = ctypes.CDLL(None)
def work():
    for _ in range(200):
        blocks = [libc.malloc(100_000) for _ in range(8)]
        for b in blocks:
            libc.free(ctypes.c_void_p(b))
libc.malloc.restype = ctypes.c_void_p
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
buf, size = ctypes.c_char_p(), ctypes.c_size_t()
libc.open_memstream.restype = ctypes.c_void_p
stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(buf.value.decode())
"""


def heaps(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return len(re.findall(r'<heap nr="\d+">', done.stdout))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_pipeline_threads_share_one_heap_instead_of_one_each() -> None:
    # each heap keeps the pages its thread's transients once touched: one per thread cost the demo ~5 MB
    # and the video-file pipeline ~19 MB of peak RSS (edgeseg/malloc.py)
    assert heaps("default") > 1  # the probe does make glibc give its threads heaps of their own
    assert heaps("tuned") == 1


def test_a_long_run_gives_free_heap_pages_back_once_a_minute_not_on_every_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[float] = []
    now = [100.0]
    monkeypatch.setattr(malloc, "release_free_memory", lambda: calls.append(now[0]))
    trim = malloc.Trim(clock=lambda: now[0])
    for _ in range(200):  # frames every 0.5 s for 100 s
        now[0] += 0.5
        trim()
    assert calls == [160.0]  # the first a minute after the start
    now[0] = 220.0
    assert trim()
    assert not trim()
    assert calls == [160.0, 220.0]
