"""A model's contact class: the pixels where a part touches another, drawn by the model itself.

Touching parts are then apart in the class map, so each component is one part (no distance relief, no line
fit: a labelling pass), and the contact pixels go back to the parts beside them.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.semantic.components import Part

# A contact pixel this many steps (3x3) or fewer from a part's own pixels joins the part: a band two pixels
# deep on each side of a contact (as the demo model was taught to draw its contact map) is crossed with one to
# spare. Pixels no part reaches (a blob of contact alone) join none: there is no part to give them to.
GROW_STEPS = 3
_STEP = np.ones((3, 3), np.uint8)


def grow_into(parts: list[Part], contact: NDArray[np.bool_]) -> list[Part]:
    """``parts`` (in a frame of ``contact``'s shape) with each contact pixel given to a part nearest it, one
    3x3 step at a time (of two as near, the later part). Parts that gain no pixel are returned as they are;
    those that gain have no rectangle yet (:func:`~edgeseg.semantic.components.with_boxes`)."""
    if not parts:
        return parts
    box = cv2.boundingRect(contact.view(np.uint8))
    if not box[2]:
        return parts
    # only the contact pixels' box, widened by the reach, is looked at: parts elsewhere cannot gain
    h, w = contact.shape
    x0, y0 = max(0, box[0] - GROW_STEPS), max(0, box[1] - GROW_STEPS)
    x1, y1 = min(w, box[0] + box[2] + GROW_STEPS), min(h, box[1] + box[3] + GROW_STEPS)
    # part k + 1, in the narrowest type that holds them (8 bits dilate 3x faster than 16, 16 than float32,
    # which is exact up to 2**24 parts)
    kind = np.uint8 if len(parts) < 2**8 else np.uint16 if len(parts) < 2**16 else np.float32
    labels = np.zeros((y1 - y0, x1 - x0), kind)
    for k, q in enumerate(parts, 1):
        mh, mw = q.mask.shape
        qx0, qy0, qx1, qy1 = max(q.x, x0), max(q.y, y0), min(q.x + mw, x1), min(q.y + mh, y1)
        if qx0 < qx1 and qy0 < qy1:
            own = q.mask[qy0 - q.y : qy1 - q.y, qx0 - q.x : qx1 - q.x]
            labels[qy0 - y0 : qy1 - y0, qx0 - x0 : qx1 - x0][own] = k
    todo = contact[y0:y1, x0:x1].copy()
    for _ in range(GROW_STEPS):
        # 0 where no part is a step away yet (OpenCV's copy under a mask: numpy's where= took 20x as long
        # on a mask of noise)
        cv2.copyTo(cv2.dilate(labels, _STEP), todo.view(np.uint8), labels)
        todo &= labels == 0
        if not todo.any():
            break
    taken = contact[y0:y1, x0:x1] & ~todo
    counts = np.bincount(labels[taken].astype(np.intp), minlength=len(parts) + 1)[1:]  # pixels each gains
    gained = np.flatnonzero(counts)
    out = list(parts)
    for k in gained.tolist():
        q = parts[k]
        mh, mw = q.mask.shape
        # the part's box, widened by the reach, in the labels' frame
        bx0, by0 = max(q.x - GROW_STEPS, x0) - x0, max(q.y - GROW_STEPS, y0) - y0
        bx1, by1 = min(q.x + mw + GROW_STEPS, x1) - x0, min(q.y + mh + GROW_STEPS, y1) - y0
        mine = labels[by0:by1, bx0:bx1] == k + 1
        mx, my, tw, th = cv2.boundingRect(mine.view(np.uint8))
        tight = mine[my : my + th, mx : mx + tw]
        fx, fy = bx0 + x0 + mx, by0 + y0 + my
        # (a part partly outside the labels' box keeps its own pixels there: paste them back)
        inside = x0 <= q.x and y0 <= q.y and q.x + mw <= x1 and q.y + mh <= y1
        ux, uy, both = (fx, fy, np.ascontiguousarray(tight)) if inside else _union(q, tight, fx, fy)
        out[k] = Part(q.class_id, ux, uy, both, q.area + int(counts[k]), None)
    return out


def _union(q: Part, extra: NDArray[np.bool_], x: int, y: int) -> tuple[int, int, NDArray[np.bool_]]:
    """The pixels of part ``q`` and of ``extra`` (a crop at frame pixel ``(x, y)``), as a tight crop."""
    mh, mw = q.mask.shape
    eh, ew = extra.shape
    ux0, uy0 = min(q.x, x), min(q.y, y)
    ux1, uy1 = max(q.x + mw, x + ew), max(q.y + mh, y + eh)
    both = np.zeros((uy1 - uy0, ux1 - ux0), bool)
    both[q.y - uy0 : q.y - uy0 + mh, q.x - ux0 : q.x - ux0 + mw] = q.mask
    both[y - uy0 : y - uy0 + eh, x - ux0 : x - ux0 + ew] |= extra
    return ux0, uy0, both
