"""Keeping native libraries' own stderr lines (FFmpeg, libjpeg) away from the user unless ``-v`` asks.

Python's logging is silenced by level, but C code writes straight to file descriptor 2. Around a native call
that is known to print what edgeseg reports in its own words (trying an encoder, decoding a damaged image),
fd 2 is pointed at ``/dev/null``. Only short calls on one thread at a time get this: lines another thread
writes meanwhile would be lost, so it is used where no other thread logs (start-up) or for calls of a few ms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration (not when edgeseg logs at debug level, i.e. ``-v``)."""
    if logging.getLogger("edgeseg").isEnabledFor(logging.DEBUG):
        yield
        return
    with _lock:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
