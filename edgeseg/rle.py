"""COCO run-length encoding, bit-compatible with pycocotools.

A COCO RLE runs over the full ``(H, W)`` image in column-major order and starts with a run of zeros. The
compressed string form is pycocotools' ``rleToString``: each count (after the third, as a difference to the
count two places back) in 5-bit groups, least significant first, offset by 48 into printable ASCII.
Masks here are crops placed in the frame, so encoding and decoding never build a full frame.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError


def encode_counts(crop: NDArray[np.bool_], origin: tuple[int, int], image_hw: tuple[int, int]) -> list[int]:
    """Uncompressed COCO counts of a bool ``crop`` whose pixel ``[0, 0]`` is frame pixel ``origin`` (x, y)."""
    h, w = image_hw
    x0, y0 = origin
    ch, cw = crop.shape
    if x0 < 0 or y0 < 0 or x0 + cw > w or y0 + ch > h:
        raise InputError(f"mask crop at {origin} of size {cw}x{ch} does not fit a {w}x{h} image")
    # The crop's columns framed by a zero above and below, in column-major order: every change of value
    # in the image's column-major order is one in there (the pixels between the crop's columns are zeros)
    col = ch + 2
    framed = np.zeros((cw, col), np.int8)
    framed[:, 1:-1] = crop.T
    flat = framed.ravel()
    at = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    # ... at image index (x0 + column) * h + y0 - 1 + row
    change = (x0 + at // col) * h + (y0 - 1) + at % col
    if ch == h and len(change) > 1:
        # a crop as tall as the image: a run of ones going on into the next column ends and starts again
        # at the same index in the frame; in the image it is one run
        twice = change[1:] == change[:-1]
        drop = np.zeros(len(change), bool)
        drop[1:] |= twice
        drop[:-1] |= twice
        change = change[~drop]
    # (a run of ones at the image's end ends at its size: no run of zeros after it)
    change = change[change < h * w]
    bounds = np.concatenate(([0], change, [h * w]))
    runs: list[int] = np.diff(bounds).tolist()
    return runs


def decode_counts(counts: list[int], image_hw: tuple[int, int]) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """Tight bool crop and its origin (x, y) from uncompressed COCO counts; an empty mask gives a 0x0 crop."""
    h, w = image_hw
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or (c < 0).any() or int(c.sum()) != h * w:
        raise InputError(f"RLE counts do not add up to the {w}x{h} image size ({int(c.sum())} != {h * w})")
    ends = np.cumsum(c)
    starts = ends - c
    on_start, on_end = starts[1::2], ends[1::2]
    keep = on_end > on_start
    on_start, on_end = on_start[keep], on_end[keep]
    if on_start.size == 0:
        return np.zeros((0, 0), dtype=bool), (0, 0)
    x0 = int(on_start[0] // h)
    x1 = int((on_end[-1] - 1) // h) + 1
    base = x0 * h
    delta = np.zeros((x1 - x0) * h + 1, dtype=np.int32)
    np.add.at(delta, on_start - base, 1)
    np.add.at(delta, on_end - base, -1)
    flat = np.cumsum(delta[:-1]) > 0
    strip = flat.reshape(x1 - x0, h).T
    rows = np.flatnonzero(strip.any(axis=1))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    return np.ascontiguousarray(strip[y0:y1]), (x0, y0)


def counts_to_string(counts: list[int]) -> str:
    """pycocotools' compressed string form of uncompressed counts."""
    out = bytearray()
    put = out.append
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        if -16 <= x < 16:  # one group (most differences between runs two apart are small)
            put((x & 0x1F) + 48)
            continue
        while True:
            c = x & 0x1F
            x >>= 5
            if x == (-1 if c & 0x10 else 0):
                put(c + 48)
                break
            put(c + 80)  # (c | 0x20) + 48: more groups follow
    return out.decode("ascii")


def string_to_counts(s: str) -> list[int]:
    """Uncompressed counts from pycocotools' compressed string form."""
    data = s.encode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise InputError("RLE string ends in the middle of a count")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise InputError(f"RLE string has an invalid character {chr(data[p])!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts
