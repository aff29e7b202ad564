"""File names OpenCV can open.

Python holds a file name that is not valid UTF-8 (an SD card's Latin-1 ``caf\\xe9.jpg``, a name typed under a
C locale) with surrogate escapes; OpenCV's bindings cannot convert such a ``str`` and the process dies of
SIGSEGV inside ``cv2.imread``, ``cv2.VideoCapture`` or ``cv2.VideoWriter`` (opencv-python 4.x/5.x), before
any output is finalized. Such a name is refused first, in one line.
"""

from __future__ import annotations

import os
from pathlib import Path


def opencv_name_problem(path: str | Path) -> str | None:
    """Why OpenCV cannot take ``path`` as a file name, naming it readably; ``None`` when it can."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        shown = raw.decode("utf-8", "backslashreplace")
        if shown == raw.decode("utf-8", "replace"):
            # valid UTF-8 on disk, undecodable only under an ASCII locale without Python's UTF-8 mode
            return f"the file name {shown} cannot reach OpenCV under an ASCII locale (set LANG=C.UTF-8)"
        return f"the file name {shown} is not valid UTF-8, which OpenCV cannot open (rename it)"
    return None
