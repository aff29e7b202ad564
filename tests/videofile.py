"""Reading back the video files the tests write."""

from __future__ import annotations

from pathlib import Path

import cv2


def frame_count(path: Path) -> int:
    """The frames OpenCV decodes from ``path``, one by one (not the container's own count)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
