"""COCO run-length encoding, bit-compatible with pycocotools.

A COCO RLE runs over the full ``(H, W)`` image in column-major order and starts with a run of zeros. The
compressed string form is pycocotools' ``rleToString``: each count (after the third, as a difference to the
count two places back) in 5-bit groups, least significant first, offset by 48 into printable ASCII.
Masks here are crops placed in the frame, so encoding and decoding never build a full frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import InputError

# the characters of one count at most: 13 of 5 bits fill pycocotools' 64-bit C long (an image's counts take 7)
MAX_COUNT_CHARS = 13


def decode_counts(counts: list[Any], image_hw: tuple[int, int]) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """Tight bool crop and its origin (x, y) from uncompressed COCO counts; an empty mask gives a 0x0 crop."""
    h, w = image_hw
    # whole numbers only (as JSON writes them): numpy's cast read 2.7 as 2, "5" as 5 and true as 1
    whole = isinstance(counts, list) and all(
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
        for v in counts
    )
    try:
        c = np.asarray(counts, dtype=np.int64)
        is_flat = whole and c.ndim == 1
    except (TypeError, ValueError, OverflowError):  # ragged lists, strings, None, infinities
        is_flat = False
    if not is_flat:
        raise InputError(f"RLE counts must be a flat list of integers, got {str(counts)[:40]}")
    if (c < 0).any():
        at = int(np.flatnonzero(c < 0)[0])
        raise InputError(f"RLE counts hold a negative count {int(c[at])} at {at}")
    # (counts near 2**63 summed in int64 wrap round, and some then added up to the image's size)
    if (c > h * w).any():
        at = int(np.flatnonzero(c > h * w)[0])
        raise InputError(f"RLE counts hold a count {int(c[at])} at {at} past the {w}x{h} image's size")
    if int(c.sum()) != h * w:
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
    # runs never overlap, so the sum is 0 or 1: counted in int8, in place (in int32 summed to int64 it was 12
    # bytes a pixel of the strip, a mask as large as the frame 12 frames)
    delta = np.zeros((x1 - x0) * h + 1, dtype=np.int8)
    np.add.at(delta, on_start - base, 1)
    np.add.at(delta, on_end - base, -1)
    flat = np.cumsum(delta[:-1], out=delta[:-1]).view(np.bool_)
    strip = flat.reshape(x1 - x0, h).T
    rows = np.flatnonzero(strip.any(axis=1))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    return np.ascontiguousarray(strip[y0:y1]), (x0, y0)


def encode(
    crops: Sequence[NDArray[np.bool_]], origins: Sequence[tuple[int, int]], image_hw: tuple[int, int]
) -> list[str]:
    """pycocotools' compressed strings of bool ``crops``, each with its pixel ``[0, 0]`` at frame pixel
    ``origins[i]`` (x, y), in an image of ``image_hw``.

    All of them in one pass of numpy (a result's masks are a few dozen, each string ~200 characters: one
    Python loop per character or numpy's fixed cost per mask was most of what publishing a result cost).
    """
    h, w = image_hw
    n = len(crops)
    if len(origins) != n:
        raise InputError(f"{len(origins)} origins for {n} mask crops")
    if n == 0:
        return []
    # Each crop's columns framed by a zero above and below, in column-major order, one after the other:
    # every change of value in the image's column-major order is one in there (pixels between the crop's
    # columns are zeros), and a crop's frame starts and ends with a zero, so no change spans two crops.
    shapes = [crop.shape for crop in crops]
    dims = np.array([(x0, y0, ch, cw) for (ch, cw), (x0, y0) in zip(shapes, origins, strict=True)], np.int64)
    x0s, y0s, chs, cws = dims.T
    outside = np.flatnonzero((dims[:, :2] < 0).any(axis=1) | (x0s + cws > w) | (y0s + chs > h))
    if len(outside):
        i = int(outside[0])
        origin = (int(x0s[i]), int(y0s[i]))
        raise InputError(f"mask crop at {origin} of size {cws[i]}x{chs[i]} does not fit a {w}x{h} image")
    col = chs + 2  # a column's length, framed
    size = col * cws
    start = np.cumsum(size) - size  # each crop's start in the concatenation
    joined = np.zeros(int(start[-1] + size[-1]), np.int8)
    for crop, (ch, cw), at, n_at in zip(crops, shapes, start.tolist(), size.tolist(), strict=True):
        joined[at : at + n_at].reshape(cw, ch + 2)[:, 1:-1] = crop.T
    pos = np.flatnonzero(joined[1:] != joined[:-1]) + 1
    owner = np.searchsorted(start, pos, side="right") - 1
    local = pos - start[owner]
    c = col[owner]
    # the change at (column, row) of its crop's frame is at image index (x0 + column) * h + y0 - 1 + row,
    # and local = column * c + row: the column from a float division (exact: local < 2**53), not two integer
    # ones, the slowest step on masks of noise
    column = (local / c).astype(np.int64)
    change = (x0s * h + y0s - 1)[owner] + local + column * (h - c)
    # a crop as tall as the image: a run of ones going on into the next column ends and starts again at one
    # index of the image, where it is one run; and a run at the image's end leaves no run of zeros after it
    twice = (change[1:] == change[:-1]) & (owner[1:] == owner[:-1])
    keep = change < h * w
    keep[1:] &= ~twice
    keep[:-1] &= ~twice
    change, owner = change[keep], owner[keep]
    # the counts of crop k: its changes' differences, from 0 and up to the image's size
    per = np.bincount(owner, minlength=n) + 1
    ends = np.cumsum(per)
    starts = ends - per
    bound = np.full(int(ends[-1]), h * w, np.int64)
    bound[np.arange(len(change)) + owner] = change
    counts = bound - np.concatenate(([0], bound[:-1]))
    counts[starts] = bound[starts]
    # the string: each count after a crop's third as a difference to the one two places back, in the fewest
    # 5-bit groups that hold it as a signed number, least significant first, 0x20 on all but the last, + 48
    x = counts.copy()
    x[2:] -= counts[:-2]
    for k in range(3):  # (a crop's first three counts are its own)
        head = starts[per > k] + k
        x[head] = counts[head]
    groups = np.ones(len(x), np.int64)
    wider: list[NDArray[np.bool_]] = []  # wider[g]: the values that take more than g + 1 groups
    limit = 16
    while (wide := (x >= limit) | (x < -limit)).any():
        groups += wide
        wider.append(wide)
        limit <<= 5
    first = np.cumsum(groups) - groups  # each value's first character
    code = np.empty(int(first[-1] + groups[-1]), np.uint8)
    # a value's g-th character: its bits 5g to 5g + 4, 0x20 where another follows, + 48 (set group by group:
    # most values take one, and expanding every value to its characters was the slowest step)
    for g in range(len(wider) + 1):
        some = slice(None) if g == 0 else np.flatnonzero(wider[g - 1])
        char = ((x[some] >> (5 * g)) & 0x1F).astype(np.uint8)
        if g < len(wider):
            char |= wider[g][some].view(np.uint8) << 5
        char += 48
        code[first[some] + g] = char
    text = code.tobytes().decode("ascii")
    cut = np.concatenate(([0], (first + groups)[ends - 1])).tolist()
    return [text[a:b] for a, b in itertools.pairwise(cut)]


def string_to_counts(s: str) -> list[int]:
    """Uncompressed counts from pycocotools' compressed string form."""
    if not s.isascii():  # (str.encode's UnicodeEncodeError was a traceback)
        at = next(k for k, ch in enumerate(s) if not ch.isascii())
        raise InputError(f"RLE string has an invalid character {s[at]!r} at {at}")
    data = s.encode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more, at = 0, 0, True, p
        while more:
            if p >= len(data):
                raise InputError(f"RLE string ends in the middle of a count at {p}")
            # (each character widened one ever longer int: a count of 1 MB took a minute)
            if k == MAX_COUNT_CHARS:
                raise InputError(f"RLE string has a count of more than {MAX_COUNT_CHARS} characters at {at}")
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
