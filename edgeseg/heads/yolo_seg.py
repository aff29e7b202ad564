"""YOLO-seg head: YOLOv8 / YOLO11 segmentation exports (``nms=False``) decoded in numpy.

Outputs: ``output0`` ``[1, 4 + nc + nm, A]`` rows ``cx, cy, w, h`` (model-input px), ``nc`` class scores
(already sigmoid in the export) and ``nm`` mask coefficients; ``output1`` ``[1, nm, mh, mw]`` prototypes.

Steps: confidence filter on the best class score, class-aware greedy NMS, then for each kept box only:
coefficients x prototypes inside the box's prototype window, bilinear upsampling of that window straight to
the frame pixels inside the box, threshold at logit 0 (sigmoid 0.5).

Parity: boxes, classes and scores are Ultralytics' (``non_max_suppression`` + ``scale_boxes``). Masks
reproduce Ultralytics' ``retina_masks=True`` path (``process_mask_native``: prototypes upsampled by 1, 2
or 4, letterbox padding cropped, bilinear resize to the original image, crop to the box) exactly, as one
separable linear map per axis, but evaluated only inside each box instead of over N full frames.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgeseg.backends import Outputs
from edgeseg.errors import ModelError
from edgeseg.heads import DecodeOptions
from edgeseg.instances import Instances
from edgeseg.logtally import LogTally
from edgeseg.modelcard import ModelCard, check_yolo_seg_outputs
from edgeseg.preprocess import Prepared

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _AxisMap:
    """Crop pixel rows (or columns) -> prototype rows: ``weights`` ``(n_crop, n_proto)`` bilinear taps and,
    per crop pixel, the first (``lo``) and last (``hi``) prototype index with a non-zero tap."""

    weights: NDArray[np.float32]
    lo: NDArray[np.int64]
    hi: NDArray[np.int64]


def interp_matrix(src: NDArray[np.float64], n_in: int) -> NDArray[np.float64]:
    """Bilinear taps ``(len(src), n_in)`` for sample positions ``src`` (input pixel-centre units).

    Same edge rule as PyTorch ``interpolate(mode="bilinear", align_corners=False)``: positions below 0
    clamp to 0, positions past the last sample repeat it.
    """
    s = np.maximum(np.asarray(src, np.float64), 0.0)
    i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1: NDArray[np.float64] = s - i0
    m: NDArray[np.float64] = np.zeros((len(s), n_in), np.float64)
    rows = np.arange(len(s))
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def _resize_src(n_out: int, n_in: int, scale: float | None = None) -> NDArray[np.float64]:
    """Source positions of PyTorch's half-pixel resize from ``n_in`` to ``n_out`` samples."""
    sc = n_in / n_out if scale is None else scale
    return np.asarray((np.arange(n_out) + 0.5) * sc - 0.5, np.float64)


def _axis(weights: NDArray[np.float64]) -> _AxisMap:
    nz = weights != 0
    lo = np.argmax(nz, axis=1)
    hi = weights.shape[1] - 1 - np.argmax(nz[:, ::-1], axis=1)
    return _AxisMap(weights.astype(np.float32), lo.astype(np.int64), hi.astype(np.int64))


def ultralytics_native_axes(crop_hw: tuple[int, int], proto_hw: tuple[int, int]) -> tuple[_AxisMap, _AxisMap]:
    """Ultralytics' ``process_mask_native`` mapping from prototypes to a ``crop_hw`` image, per axis.

    Ultralytics assumes a model input of 4x the prototype size, letterboxed; it upsamples the prototypes by
    ``f`` (1, 2 or 4, so the padding crops on whole pixels), crops the padding (``scale_masks``) and resizes
    bilinearly to the image. Both steps are linear, so each axis is one ``(n_crop, n_proto)`` matrix.
    """
    h, w = crop_hw
    mh, mw = proto_hw
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    fh, fw = f * mh, f * mw
    gain2 = min(fh / h, fw / w)
    ch, cw = max(round(h * gain2), 1), max(round(w * gain2), 1)
    top, left = round((fh - ch) / 2 - 0.1), round((fw - cw) / 2 - 0.1)

    def one(n_out: int, n_proto: int, start: int, n_content: int) -> _AxisMap:
        up = interp_matrix(_resize_src(f * n_proto, n_proto, 1.0 / f), n_proto)  # (f*n_proto, n_proto)
        res = interp_matrix(_resize_src(n_out, n_content), n_content)  # (n_out, n_content)
        return _axis(res @ up[start : start + n_content])

    return one(h, mh, top, ch), one(w, mw, left, cw)


def affine_axes(
    prepared: Prepared, input_hw: tuple[int, int], proto_hw: tuple[int, int]
) -> tuple[_AxisMap, _AxisMap]:
    """Single bilinear step from prototypes to crop pixels through ``prepared.to_frame`` (any resize)."""
    x0, y0, _, _ = prepared.crop_box or (0, 0, 0, 0)
    h, w = prepared.crop_shape
    to_model = prepared.to_frame.inverse()
    ys = (np.arange(h) + 0.5 + y0) * to_model.sy + to_model.ty  # crop pixel centres in model-input px
    xs = (np.arange(w) + 0.5 + x0) * to_model.sx + to_model.tx
    ay = interp_matrix(ys * proto_hw[0] / input_hw[0] - 0.5, proto_hw[0])
    ax = interp_matrix(xs * proto_hw[1] / input_hw[1] - 0.5, proto_hw[1])
    return _axis(ay), _axis(ax)


COLUMN_BLOCK = 32
# A box whose whole product (rows x window columns x box columns) takes at most this many multiply-adds is
# upsampled in one matmul: below it, the blocks' Python costs more than the taps they skip. On 2,000
# YOLOv8n-seg instances of four clips (640x360 to 1920x1080) it took the head's decode 0.78-0.80 of the
# blocks-only time, with the same masks; 1e5 gave 0.79-0.84, one matmul for every box 0.80-0.85.
ONE_PRODUCT_MACS = 300_000


def _upsample_window(
    logits: NDArray[np.float32],
    ay: _AxisMap,
    ax: _AxisMap,
    region: tuple[int, int, int, int],
    window_origin: tuple[int, int],
) -> NDArray[np.float32]:
    """Crop-pixel logits ``(r1 - r0, c1 - c0)`` of ``region`` from a prototype-resolution window.

    Rows first (one small matmul), then columns: a small box in one matmul (``ONE_PRODUCT_MACS``), a larger
    one in blocks of ``COLUMN_BLOCK``, each touching only the few prototype columns its taps reach, so the
    cost grows with box pixels x taps, not box pixels x window.
    """
    r0, r1, c0, c1 = region
    py0, px0 = window_origin
    rows = ay.weights[r0:r1, py0 : py0 + logits.shape[0]] @ logits  # (h, pw)
    if rows.size * (c1 - c0) <= ONE_PRODUCT_MACS:
        return np.asarray(rows @ ax.weights[c0:c1, px0 : px0 + rows.shape[1]].T, np.float32)
    out = np.empty((r1 - r0, c1 - c0), np.float32)
    for b0 in range(c0, c1, COLUMN_BLOCK):
        b1 = min(b0 + COLUMN_BLOCK, c1)
        q0, q1 = int(ax.lo[b0]), int(ax.hi[b1 - 1]) + 1
        out[:, b0 - c0 : b1 - c0] = rows[:, q0 - px0 : q1 - px0] @ ax.weights[b0:b1, q0:q1].T
    return out


# A frame's masks are made (upsampled to the frame, and outlined) for at most this many times the pixels of
# the region the model saw, summed over their boxes in score order: those past it are dropped and counted. A
# scene's boxes sum to a few frames at most (each object's box is in it once); the boxes of a noisy model at a
# score threshold of 0 to a hundred or more (``scripts/bench_nms.py``).
MASK_FRAMES = 8.0
# Up to this many candidates, NMS computes every pair's IoU at once (a matrix of 1 MB); beyond, one row per
# kept box (scripts/bench_nms.py: at 30 candidates 0.1 against 0.6 ms; at 2100, 55 ms and 84 MB against
# 5-12 ms and 0.1 MB)
NMS_MATRIX = 512


def nms_per_class(
    boxes: NDArray[np.float32],
    scores: NDArray[np.float32],
    classes: NDArray[np.int64],
    iou: float,
    max_det: int | None = None,
    matrix_most: int = NMS_MATRIX,
) -> NDArray[np.int64]:
    """Greedy class-aware NMS; indices of kept boxes in descending score order, the first ``max_det``.

    ``boxes`` ``(N, 4)`` xyxy. A box is suppressed by a higher-scored kept box of the same class whose IoU
    with it is ``> iou`` (torchvision's rule). Up to ``matrix_most`` boxes, the IoUs of every pair are one
    vectorized ``(N, N)`` pass; beyond, each kept box's IoUs with the boxes after it are one row, until
    ``max_det`` are kept: memory ``O(N)`` and time ``O(N * kept)``. (The matrix took 1-2 s and 1.3 GB for
    the 8400 candidates of a 640 model at a score threshold of 0, a live setting or a noisy model;
    ``scripts/bench_nms.py``.)
    """
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32)
    c = classes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    n = len(b)
    limit = n if max_det is None else min(n, max_det)
    matrix = _suppressed_by(b, b, area, area, c, c, iou) if n <= matrix_most else None
    alive = np.ones(n, bool)
    keep: list[int] = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) == limit:
            break
        if matrix is not None:
            alive &= ~matrix[i]
        else:
            j = slice(i + 1, None)
            alive[j] &= ~_suppressed_by(
                b[i : i + 1], b[j], area[i : i + 1], area[j], c[i : i + 1], c[j], iou
            )[0]
    return order[np.asarray(keep, np.int64)]


def _suppressed_by(
    a: NDArray[np.float32],
    b: NDArray[np.float32],
    area_a: NDArray[np.float32],
    area_b: NDArray[np.float32],
    class_a: NDArray[np.int64],
    class_b: NDArray[np.int64],
    iou: float,
) -> NDArray[np.bool_]:
    """``(len(a), len(b))``: box ``b[j]`` is of ``a[i]``'s class and overlaps it by an IoU over ``iou``."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ious = inter / (area_a[:, None] + area_b[None, :] - inter)
    over: NDArray[np.bool_] = (ious > iou) & (class_a[:, None] == class_b[None, :])
    return over


class YoloSegHead:
    """Decodes YOLO-seg outputs into :class:`Instances` in full-frame pixels.

    ``dropped_empty`` counts kept detections whose mask came out empty (thin or tiny objects): they are
    dropped, never emitted with an empty mask, and logged at debug level. ``dropped_budget`` counts those
    past a frame's mask budget (:data:`MASK_FRAMES`), logged at most once a minute.
    """

    def __init__(self, card: ModelCard) -> None:
        if card.output.protos is None:
            raise ModelError(f"model {card.name!r}: a yolo-seg card needs output.protos")
        self.card = card
        self.nc = len(card.classes)
        self.dropped_empty = 0
        self.dropped_budget = 0
        self._budget_note = LogTally(
            log,
            card.name.replace("%", "%%") + ": %d detections dropped past the masks' budget (the lowest scores"
            " of frames whose boxes cover the frame many times over: a noisy model, or a score threshold"
            " near 0)",
        )
        self._axes_key: tuple[object, ...] | None = None
        self._axes: tuple[_AxisMap, _AxisMap] | None = None

    def _tensors(self, outputs: Outputs) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        card = self.card
        det_name, proto_name = card.output.name, str(card.output.protos)
        for name in (det_name, proto_name):
            if name not in outputs:
                raise ModelError(f"model {card.name!r}: output {name!r} missing (got {', '.join(outputs)})")
        # float32 whatever the graph gives (no copy when it is): box edges and mask logits worked out in a
        # float16 export's own type come out a quarter of an input pixel off, and flip mask pixels
        protos = np.asarray(outputs[proto_name], np.float32)
        det = np.asarray(outputs[det_name], np.float32)
        check_yolo_seg_outputs(card, det.shape, protos.shape, f"model {card.name!r}")
        # A sum is NaN or infinite where any value is NaN, +inf or -inf (which a float16 graph overflows to
        # as readily): one cheap pass, not a max and a min, catches a broken graph before it turns into "no
        # detections" (a head's pixel coordinates, scores and coefficients sum far from float32's limit)
        for name, t in ((det_name, det), (proto_name, protos)):
            if t.size and not np.isfinite(np.add.reduce(t, axis=None)):
                raise ModelError(f"model {card.name!r}: output {name!r} holds NaN or infinite values")
        return det[0], protos[0]

    def _mask_axes(self, prepared: Prepared, proto_hw: tuple[int, int]) -> tuple[_AxisMap, _AxisMap]:
        spec = self.card.input
        key = (prepared.crop_shape, prepared.crop_box, prepared.to_frame, proto_hw)
        if self._axes is None or key != self._axes_key:
            ultralytics_grid = spec.resize == "letterbox" and (spec.height, spec.width) == (
                4 * proto_hw[0],
                4 * proto_hw[1],
            )
            if ultralytics_grid:
                self._axes = ultralytics_native_axes(prepared.crop_shape, proto_hw)
            else:
                self._axes = affine_axes(prepared, (spec.height, spec.width), proto_hw)
            self._axes_key = key
        return self._axes

    def decode(self, outputs: Outputs, prepared: Prepared, options: DecodeOptions) -> Instances:
        det, protos = self._tensors(outputs)
        nc = self.nc
        defaults = self.card.yolo_seg
        conf_thr = defaults.score_threshold if options.score_threshold is None else options.score_threshold
        iou_thr = defaults.iou_threshold if options.iou_threshold is None else options.iou_threshold
        max_det = defaults.max_det if options.max_det is None else options.max_det
        frame_shape = prepared.frame_shape

        scores = det[4 : 4 + nc]
        best = scores.max(axis=0)
        cand = np.flatnonzero(best > conf_thr)
        if cand.size == 0:
            return Instances.empty(frame_shape)
        conf = best[cand]
        cls = scores[:, cand].argmax(axis=0).astype(np.int64)
        cx, cy, bw, bh = det[0, cand], det[1, cand], det[2, cand], det[3, cand]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        keep = nms_per_class(boxes, conf, cls, iou_thr, max_det)
        if keep.size == 0:
            return Instances.empty(frame_shape)

        # boxes: model-input px -> frame px, clipped to the region the model saw (Ultralytics' clip_boxes)
        x0, y0, x1, y1 = prepared.crop_box or (0, 0, frame_shape[1], frame_shape[0])
        fb = prepared.to_frame.boxes(boxes[keep])
        np.clip(fb[:, 0::2], x0, x1, out=fb[:, 0::2])
        np.clip(fb[:, 1::2], y0, y1, out=fb[:, 1::2])
        fb = fb.astype(np.float32)
        coef = det[4 + nc :, cand[keep]].T  # (k, nm)
        ay, ax = self._mask_axes(prepared, (protos.shape[1], protos.shape[2]))

        crops: list[NDArray[np.bool_]] = []
        origins: list[tuple[int, int]] = []
        rows: list[int] = []
        # crop-relative box edges; Ultralytics' crop_mask keeps pixels with x1 <= c < x2
        cb = fb.astype(np.float64) - np.array([x0, y0, x0, y0], np.float64)
        c0s = np.ceil(cb[:, 0]).astype(np.int64)
        r0s = np.ceil(cb[:, 1]).astype(np.int64)
        c1s = np.ceil(cb[:, 2]).astype(np.int64)
        r1s = np.ceil(cb[:, 3]).astype(np.int64)
        left = MASK_FRAMES * (x1 - x0) * (y1 - y0)
        over = 0
        for i in range(len(keep)):
            c0, r0, c1, r1 = int(c0s[i]), int(r0s[i]), int(c1s[i]), int(r1s[i])
            if c1 <= c0 or r1 <= r0:
                continue
            left -= (r1 - r0) * (c1 - c0)
            if left < 0:
                over = len(keep) - i
                break
            py0, py1 = int(ay.lo[r0]), int(ay.hi[r1 - 1]) + 1
            px0, px1 = int(ax.lo[c0]), int(ax.hi[c1 - 1]) + 1
            window = protos[:, py0:py1, px0:px1]
            # (ph, pw) at prototype resolution (a plain product: np.tensordot's own Python cost more)
            logits = (coef[i] @ window.reshape(len(window), -1)).reshape(window.shape[1:])
            mask = _upsample_window(logits, ay, ax, (r0, r1, c0, c1), (py0, px0)) > 0
            if not mask.any():
                continue
            crops.append(mask)
            origins.append((x0 + c0, y0 + r0))
            rows.append(i)
        self.dropped_budget += over
        self._budget_note.add(over)
        dropped = len(keep) - len(rows) - over
        if dropped:
            self.dropped_empty += dropped
            log.debug("%s: dropped %d detections with empty masks", self.card.name, dropped)
        if not rows:
            return Instances.empty(frame_shape)
        sel = np.asarray(rows, np.int64)
        return Instances.from_crops(
            frame_shape, cls[keep][sel], conf[keep][sel], origins, crops, xyxy=fb[sel]
        )
