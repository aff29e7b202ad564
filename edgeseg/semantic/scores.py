"""A model's per-class scores read into a class map and each pixel's winning-class probability.

The argmax reads every plane once, in bands that stay in a core's cache, and with two or more usable cores
the rows are shared out side by side (:mod:`edgeseg.sidework`). The winning probability of logits (their
softmax's share of the winner) needs every plane again, for the sum of their exps, and the split needs only
the class map: with a helper thread the sum is made there while the split runs (the probabilities' range
check too), and the split reads the probability only once it has its instances. On one core the exps are
summed in the argmax's own pass, while each plane is in cache.

On 21 channels of 480x640 logits of small blobs on two cores (``scripts/bench_postprocess.py
--reference``'s ``hostile_scores_many``, against the argmax and exps in one pass on one thread; two runs), the
split took 0.88-0.90x the time with OpenCV's pool and 0.83x on one OpenCV thread, the same instances; the
sets of class maps 0.97-1.03x (their labelling passes side by side on the same helpers: noise 0.88-0.92x,
tiny specks 0.76-0.78x on one thread, where a pool of threads had been made for each map).
"""

from __future__ import annotations

import functools
import itertools
import math
from concurrent.futures import Future
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg import sidework
from edgeseg.errors import InputError

# logits whose exps are summed as they are in float32 (1.2e-38 to 3.4e38): exp(80) is 5.5e34, exp(-80) 1.8e-35
EXP_MARGIN = 80.0
BAND_PIXELS = 1 << 16  # one thread reads the scores in bands of about this many pixels (see argmax_channels)
# Threads side by side read bands of this many: each OpenCV call takes the GIL again as it returns, and on
# bands of BAND_PIXELS the two threads' calls were short enough that they waited on each other more than
# they gained (at 480x640 a half of the rows is read whole)
SIDE_BAND_PIXELS = 1 << 18


def channels_first(scores: NDArray[np.generic]) -> NDArray[np.float32]:
    """``(H, W, C)`` scores as ``(C, H, W)`` float32, each plane contiguous: OpenCV's transpose of the
    ``(H * W, C)`` matrix, which goes through it block by block, where numpy's copy of the moved axis reads
    at a stride of ``C`` (the split of 21 channels of 480x640 logits given channels last took 0.5-0.6x the
    time with it, ``scripts/bench_scores.py --reference``)."""
    h, w, c = scores.shape
    flat = np.ascontiguousarray(scores, np.float32).reshape(h * w, c)
    return np.asarray(cv2.transpose(flat), np.float32).reshape(c, h, w)


def read_scores(
    scores: NDArray[np.float32], logits: bool
) -> tuple[NDArray[Any], Future[NDArray[np.float32]]]:
    """The class map of contiguous ``(C, H, W)`` scores (their argmax, the first maximum winning on ties),
    and the future of each pixel's winning-class probability (the softmax's share of the winner for
    ``logits``, else the winner's score), whose ``result()`` raises InputError for scores that are no
    probabilities or logits (see :func:`winning_probability`, :func:`checked_probability`)."""
    # (with a helper, the exps are summed there, beside the split; on one core, in the argmax's pass)
    exp_total_now = logits and sidework.helpers() == 0
    cmap, best, exp_total = argmax_channels(scores, exps=exp_total_now)
    if logits:
        return cmap, sidework.on_helper(lambda: winning_probability(scores, best, exp_total))
    return cmap, sidework.on_helper(lambda: checked_probability(scores, best))


def argmax_channels(
    scores: NDArray[np.float32], exps: bool = False
) -> tuple[NDArray[Any], NDArray[np.float32], NDArray[np.float32] | None]:
    """Per-pixel argmax and max over the first axis of ``(C, H, W)`` (contiguous), first maximum winning on
    ties, and with ``exps`` the sum over the channels of ``exp(score)`` (None without), in the same pass:
    each plane is read from memory once, while it is in cache.

    One contiguous pass per channel, by OpenCV (compare, copy under the mask, max): ``np.argmax(axis=0)``
    walks the channels with a stride of ``H * W``, and numpy's assignment under a boolean mask took several
    times OpenCV's copy. The exps summed here, not in a second pass over the channels that subtracts the
    best first, the split of logits took 0.91x the time on the reference demo model's (4 classes, 480x640,
    ``scripts/profile_semantic.py --reference``) and 0.80-0.90x on 21 channels of blobs on one thread.

    A large map goes through the channels band by band, :data:`BAND_PIXELS` at a time: at 480x640 a float
    plane is 1.2 MB, and with the running max, sum and classes beside it each step's arrays left a core's
    cache before the next step read them (the split of 21 channels of 480x640 logits took 0.87-0.94x the
    time on one OpenCV thread, ``scripts/bench_scores.py --reference``); a map of two bands or less, which
    fits, is read whole (at 240x320 bands were slower). With helper threads, the rows are shared out among
    them and the caller, in bands of :data:`SIDE_BAND_PIXELS`.
    """
    c, h, w = scores.shape
    cmap = np.zeros((h, w), np.uint8 if c <= 256 else np.uint16)
    best = np.empty((h, w), np.float32)
    total = np.empty((h, w), np.float32) if exps else None
    parts = min(sidework.helpers() + 1, h) if h * w > 2 * BAND_PIXELS else 1
    if parts == 1:
        _argmax_rows(scores, cmap, best, total, 0, h, BAND_PIXELS)
        return cmap, best, total
    edges = [h * k // parts for k in range(parts + 1)]
    sidework.side_by_side(
        [
            functools.partial(_argmax_rows, scores, cmap, best, total, y0, y1, SIDE_BAND_PIXELS)
            for y0, y1 in itertools.pairwise(edges)
        ]
    )
    return cmap, best, total


def _argmax_rows(
    scores: NDArray[np.float32],
    cmap: NDArray[Any],
    best: NDArray[np.float32],
    total: NDArray[np.float32] | None,
    y0: int,
    y1: int,
    band_pixels: int,
) -> None:
    """:func:`argmax_channels` of rows ``y0:y1``, written into its arrays, in bands of about
    ``band_pixels`` (read whole where they are two bands or less)."""
    c, _, w = scores.shape
    rows = y1 - y0 if (y1 - y0) * w <= 2 * band_pixels else max(1, band_pixels // w)
    plane = np.empty((rows, w), cmap.dtype)
    step = np.empty((rows, w), np.float32)
    for y in range(y0, y1, rows):
        band = slice(y, min(y + rows, y1))
        top, classes = best[band], cmap[band]
        fill, ex = plane[: len(top)], step[: len(top)]
        np.copyto(top, scores[0, band])
        sums = None if total is None else cv2.exp(scores[0, band], dst=total[band])
        for k in range(1, c):
            channel = scores[k, band]
            better = cv2.compare(channel, top, cv2.CMP_GT)
            fill.fill(k)
            cv2.copyTo(fill, better, classes)
            cv2.max(top, channel, dst=top)
            if sums is not None:
                cv2.add(sums, cv2.exp(channel, dst=ex), dst=sums)


def winning_probability(
    logits: NDArray[np.float32], best: NDArray[np.float32], exp_total: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """The softmax probability of each pixel's winning class, ``exp(best) / sum exp(logits)``, from the sum
    of the exps (``exp_total``, made here where None); where the logits are too large (or too small) for that
    sum in float32, ``1 / sum exp(logits - best)`` from the logits again.

    Checks the logits on the way, on one plane rather than all of them: a NaN makes its pixel's sum NaN,
    and so does +infinity (``inf - inf``) and a pixel whose every logit is -infinity. A logit of -infinity
    beside a finite one is a probability of 0, as softmax has it.
    """
    lo, hi = cv2.minMaxLoc(best)[:2]
    if lo > -EXP_MARGIN and hi < EXP_MARGIN - math.log(len(logits)):
        # (every exp and their sum finite, the winner's exp a normal float: its share is exact to a float's
        # rounding, as the subtraction's below)
        prob = _exp_sum(logits) if exp_total is None else exp_total
        cv2.divide(cv2.exp(best), prob, dst=prob)
    else:
        total = np.zeros_like(best)
        step = np.empty_like(best)
        for channel in logits:
            cv2.exp(cv2.subtract(channel, best, dst=step), dst=step)
            cv2.add(total, step, dst=total)
        prob = np.divide(1.0, total, out=total)
    bad = ~np.isfinite(prob)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise InputError(
            f"semantic_to_instances: the per-class scores at pixel (row {y}, column {x}) hold NaN or"
            " +infinity, or no finite value"
        )
    return prob


def _exp_sum(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """The sum over the channels of ``exp(logit)``, a whole plane a call (see :data:`SIDE_BAND_PIXELS`)."""
    total = cv2.exp(logits[0])
    step = np.empty_like(total)
    for channel in logits[1:]:
        cv2.add(total, cv2.exp(channel, dst=step), dst=total)
    return np.asarray(total, np.float32)


def checked_probability(scores: NDArray[np.float32], best: NDArray[np.float32]) -> NDArray[np.float32]:
    """``best``, the winning class's probability, once every score is found in ``[0, 1]``."""
    least, most = float(scores.min()), float(scores.max())  # NaN if any is
    if not (least >= -1e-6 and most <= 1 + 1e-6):
        if math.isnan(least) or math.isnan(most):
            raise InputError("semantic_to_instances: the per-class scores hold NaN")
        raise InputError(
            "semantic_to_instances: probabilities must lie in [0, 1]"
            f" (got {least:.3g}..{most:.3g}); pass logits=True for logits"
        )
    return best
