"""``Instances``: the one result type that flows from the decoders to every sink.

N instances are rows of small arrays (supervision's ``Detections`` is the model). Masks are kept compact:
each instance owns a tight bool crop placed at ``mask_box``, never a full frame, so a frame with many small
objects costs memory in proportion to the objects, not to N x H x W. Coordinates follow
:mod:`edgeseg.geometry`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg import rle
from edgeseg.errors import InputError
from edgeseg.geometry import MAX_SIDE, AxisAffine, canonical_obbs, fill_polygon, mask_polygons, mask_rect
from edgeseg.validate import describe

# A document's masks are read into crops of their boxes that add up to at most this many frames: a mask as
# large as the frame is a few bytes of RLE or polygon, so a small document of many held a frame each (400 in
# 3 KB: 120 MB at 640 x 480, 27 GB at 8192 x 8192). Twice what a result has: YOLO's masks are made for at most
# 8 frames of their boxes (edgeseg.heads.yolo_seg.MASK_FRAMES), a semantic map's instances are parts of it.
MAX_READ_FRAMES = 16
MaskFormat = Literal["rle", "polygon", "none"]
MASK_FORMATS: tuple[MaskFormat, ...] = ("rle", "polygon", "none")
Index = int | slice | Sequence[int] | NDArray[np.integer] | NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Instances:
    """N instance-segmentation results in one frame of ``image_shape = (H, W)``.

    Attributes:
        class_id: ``(N,)`` int32.
        score: ``(N,)`` float32 in [0, 1].
        xyxy: ``(N, 4)`` float32 boxes in frame pixels (far edges exclusive).
        obb: ``(N, 5)`` float32 oriented boxes ``(cx, cy, w, h, angle_deg)``.
        area: ``(N,)`` int64 mask pixel counts.
        mask_box: ``(N, 4)`` int32 ``(x0, y0, x1, y1)``: where each mask crop sits in the frame.
        masks: N bool crops, ``masks[i].shape == (y1 - y0, x1 - x0)`` of ``mask_box[i]``.
        polygons: optional N outlines, each a tuple of ``(K, 2)`` float32 polygons, one per part of the mask
            (on pixel corners, see :mod:`edgeseg.geometry`).
        track_id: optional ``(N,)`` int64.
    """

    image_shape: tuple[int, int]
    class_id: NDArray[np.int32]
    score: NDArray[np.float32]
    xyxy: NDArray[np.float32]
    obb: NDArray[np.float32]
    area: NDArray[np.int64]
    mask_box: NDArray[np.int32]
    masks: tuple[NDArray[np.bool_], ...]
    polygons: tuple[tuple[NDArray[np.float32], ...], ...] | None = None
    track_id: NDArray[np.int64] | None = field(default=None)

    def __post_init__(self) -> None:
        n = len(self.class_id)
        shapes = {
            "score": (self.score.shape, (n,)),
            "xyxy": (self.xyxy.shape, (n, 4)),
            "obb": (self.obb.shape, (n, 5)),
            "area": (self.area.shape, (n,)),
            "mask_box": (self.mask_box.shape, (n, 4)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise InputError(f"Instances.{name} has shape {got}, expected {want} for {n} instances")
        if len(self.masks) != n:
            raise InputError(f"Instances has {len(self.masks)} masks for {n} instances")
        if self.polygons is not None and len(self.polygons) != n:
            raise InputError(f"Instances has {len(self.polygons)} polygons for {n} instances")
        if self.track_id is not None and self.track_id.shape != (n,):
            raise InputError(f"Instances.track_id has shape {self.track_id.shape}, expected {(n,)}")

    # construction ---------------------------------------------------------------------------------

    @classmethod
    def empty(cls, image_shape: tuple[int, int]) -> Instances:
        return cls(
            image_shape=(int(image_shape[0]), int(image_shape[1])),
            class_id=np.zeros(0, np.int32),
            score=np.zeros(0, np.float32),
            xyxy=np.zeros((0, 4), np.float32),
            obb=np.zeros((0, 5), np.float32),
            area=np.zeros(0, np.int64),
            mask_box=np.zeros((0, 4), np.int32),
            masks=(),
        )

    @classmethod
    def from_crops(
        cls,
        image_shape: tuple[int, int],
        class_id: NDArray[np.integer] | Sequence[int],
        score: NDArray[np.floating] | Sequence[float],
        origins: NDArray[np.integer] | Sequence[tuple[int, int]],
        masks: Sequence[NDArray[np.bool_]],
        xyxy: NDArray[np.floating] | None = None,
        track_id: NDArray[np.integer] | None = None,
    ) -> Instances:
        """Build from mask crops, each with the frame pixel ``(x, y)`` of its ``[0, 0]``.

        Crops are trimmed to their content and clipped to the frame; box (unless given), oriented box and
        area come from the masks. An empty mask is an error, never a silent empty instance.
        """
        h, w = int(image_shape[0]), int(image_shape[1])
        org = np.asarray(origins, dtype=np.int64).reshape(-1, 2)
        n = len(masks)
        if len(org) != n:
            raise InputError(f"{len(org)} mask origins for {n} masks")
        tight: list[NDArray[np.bool_]] = []
        boxes = np.zeros((n, 4), np.int32)
        rects: list[tuple[float, ...]] = []
        area = np.zeros(n, np.int64)
        for i, m in enumerate(masks):
            m = np.asarray(m)
            if m.ndim != 2 or m.dtype != np.bool_:
                raise InputError(f"mask {i} must be a 2-D bool array, got {m.dtype} with shape {m.shape}")
            ox, oy = int(org[i, 0]), int(org[i, 1])
            # clip the crop to the frame before trimming it
            cx0, cy0 = max(0, -ox), max(0, -oy)
            cx1, cy1 = min(m.shape[1], w - ox), min(m.shape[0], h - oy)
            m = m[cy0:cy1, cx0:cx1] if cx1 > cx0 and cy1 > cy0 else np.zeros((0, 0), bool)
            ox, oy = ox + cx0, oy + cy0
            # the box of the set pixels, in one OpenCV call (a third of the time of numpy's any, twice)
            c0, r0, bw, bh = cv2.boundingRect(m.view(np.uint8)) if m.size else (0, 0, 0, 0)
            if bw == 0:
                raise InputError(f"mask {i} is empty inside the {w}x{h} frame")
            r1, c1 = r0 + bh, c0 + bw
            crop = np.ascontiguousarray(m[r0:r1, c0:c1])
            tight.append(crop)
            boxes[i] = (ox + c0, oy + r0, ox + c1, oy + r1)
            rects.append(mask_rect(crop))
            area[i] = int(np.count_nonzero(crop))
        obbs = canonical_obbs(np.array(rects, np.float64).reshape(-1, 5))
        obbs[:, :2] += boxes[:, :2]  # from the crop's pixels to the frame's
        return cls(
            image_shape=(h, w),
            class_id=np.asarray(class_id, dtype=np.int32).reshape(n),
            score=np.asarray(score, dtype=np.float32).reshape(n),
            xyxy=boxes.astype(np.float32) if xyxy is None else np.asarray(xyxy, np.float32).reshape(n, 4),
            obb=obbs,
            area=area,
            mask_box=boxes,
            masks=tuple(tight),
            track_id=None if track_id is None else np.asarray(track_id, np.int64).reshape(n),
        )

    @classmethod
    def from_label_image(
        cls,
        labels: NDArray[np.integer],
        classes: NDArray[np.integer] | Sequence[int],
        score: NDArray[np.floating] | Sequence[float] | None = None,
    ) -> Instances:
        """Instances from an ``(H, W)`` label image; label ``k`` (1..K) has class ``classes[k-1]``, 0 is none.

        Labels absent from the image are skipped (they would be empty instances).
        """
        lab = np.asarray(labels)
        if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
            raise InputError(f"label image must be a 2-D integer array, got {lab.dtype} {lab.shape}")
        cls_arr = np.asarray(classes, dtype=np.int32).reshape(-1)
        k = len(cls_arr)
        if lab.size and (lab.min() < 0 or lab.max() > k):
            raise InputError(f"label image holds labels outside 0..{k}")
        sc = np.ones(k, np.float32) if score is None else np.asarray(score, np.float32).reshape(k)
        h, w = lab.shape
        # per-label row/column presence, counted over the pixels (a third of the time of setting flags through
        # fancy indexing)
        idx = lab.astype(np.intp)
        rows_hit = np.bincount((idx * h + np.arange(h)[:, None]).ravel(), minlength=(k + 1) * h) > 0
        cols_hit = np.bincount((idx * w + np.arange(w)).ravel(), minlength=(k + 1) * w) > 0
        rows_hit, cols_hit = rows_hit.reshape(k + 1, h), cols_hit.reshape(k + 1, w)
        present = [i for i in range(1, k + 1) if rows_hit[i].any()]
        crops, origins = [], []
        for i in present:
            r = np.flatnonzero(rows_hit[i])
            c = np.flatnonzero(cols_hit[i])
            y0, y1, x0, x1 = int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1
            crops.append(lab[y0:y1, x0:x1] == i)
            origins.append((x0, y0))
        idx = np.asarray(present, dtype=np.int64) - 1
        return cls.from_crops((h, w), cls_arr[idx], sc[idx], np.asarray(origins).reshape(-1, 2), crops)

    # container behaviour --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.class_id)

    def __getitem__(self, key: Index) -> Instances:
        """Select rows by bool mask, index array, slice or a single int (keeps the Instances type)."""
        if isinstance(key, (int, np.integer)):
            idx = np.array([key], dtype=np.int64)
        elif isinstance(key, slice):
            idx = np.arange(len(self))[key]
        else:
            arr = np.asarray(key)
            if arr.dtype == np.bool_:
                if arr.shape != (len(self),):
                    raise InputError(f"bool index has shape {arr.shape}, expected {(len(self),)}")
                idx = np.flatnonzero(arr)
            elif arr.size == 0:
                idx = np.zeros(0, np.int64)
            elif np.issubdtype(arr.dtype, np.integer):
                idx = arr.astype(np.int64).reshape(-1)
            else:
                raise InputError(
                    f"Instances can be indexed by int, slice, bool or int arrays, not {arr.dtype}"
                )
        n = len(self)
        if idx.size and (idx.max() >= n or idx.min() < -n):
            raise InputError(f"index out of range for {n} instances")
        idx = idx % max(n, 1)
        return Instances(
            image_shape=self.image_shape,
            class_id=self.class_id[idx],
            score=self.score[idx],
            xyxy=self.xyxy[idx],
            obb=self.obb[idx],
            area=self.area[idx],
            mask_box=self.mask_box[idx],
            masks=tuple(self.masks[i] for i in idx),
            polygons=None if self.polygons is None else tuple(self.polygons[i] for i in idx),
            track_id=None if self.track_id is None else self.track_id[idx],
        )

    @staticmethod
    def concat(parts: Sequence[Instances]) -> Instances:
        """Join instances of the same frame size; polygons/track ids survive only if every part has them."""
        if not parts:
            raise InputError("Instances.concat needs at least one Instances")
        shape = parts[0].image_shape
        if any(p.image_shape != shape for p in parts):
            raise InputError(
                f"cannot concatenate Instances of different frame sizes: {[p.image_shape for p in parts]}"
            )
        polys = None
        if all(p.polygons is not None for p in parts):
            polys = tuple(poly for p in parts for poly in (p.polygons or ()))
        tracks = None
        if all(p.track_id is not None for p in parts):
            tracks = np.concatenate([p.track_id for p in parts if p.track_id is not None])
        return Instances(
            image_shape=shape,
            class_id=np.concatenate([p.class_id for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            xyxy=np.concatenate([p.xyxy for p in parts]),
            obb=np.concatenate([p.obb for p in parts]),
            area=np.concatenate([p.area for p in parts]),
            mask_box=np.concatenate([p.mask_box for p in parts]),
            masks=tuple(m for p in parts for m in p.masks),
            polygons=polys,
            track_id=tracks,
        )

    # masks ----------------------------------------------------------------------------------------

    def dense_masks(self) -> NDArray[np.bool_]:
        """``(N, H, W)`` bool full-frame masks (for evaluation and interop; costly for large N)."""
        h, w = self.image_shape
        out = np.zeros((len(self), h, w), dtype=bool)
        for i, (m, (x0, y0, x1, y1)) in enumerate(zip(self.masks, self.mask_box, strict=True)):
            out[i, y0:y1, x0:x1] = m
        return out

    def class_map(self, background: int = 0) -> NDArray[np.int32]:
        """``(H, W)`` the class of each pixel's instance, ``background`` where none is (where masks overlap,
        the later instance's): semantic segmentation from instances, for evaluation."""
        out = np.full(self.image_shape, background, np.int32)
        for c, m, (x0, y0, x1, y1) in zip(self.class_id, self.masks, self.mask_box, strict=True):
            out[y0:y1, x0:x1][m] = c
        return out

    def with_polygons(self, tolerance: float = 1.0) -> Instances:
        """A copy carrying simplified outlines (Douglas-Peucker ``tolerance`` in pixels)."""
        polys = tuple(
            mask_polygons(m, (int(b[0]), int(b[1])), tolerance)
            for m, b in zip(self.masks, self.mask_box, strict=True)
        )
        return replace(self, polygons=polys)

    def with_track_ids(self, track_id: NDArray[np.integer]) -> Instances:
        return replace(self, track_id=np.asarray(track_id, np.int64).reshape(len(self)))

    def transform(self, affine: AxisAffine, image_shape: tuple[int, int]) -> Instances:
        """Map into another frame (e.g. model input -> ROI crop -> full frame) of ``image_shape``.

        Masks are resampled (nearest) into the new pixel grid and clipped to it; instances that fall
        outside it entirely are dropped. Oriented boxes are mapped exactly under equal x/y scales and
        refitted to the resampled masks otherwise.
        """
        h, w = int(image_shape[0]), int(image_shape[1])
        crops: list[NDArray[np.bool_]] = []
        origins: list[tuple[int, int]] = []
        keep: list[int] = []
        for i, (m, b) in enumerate(zip(self.masks, self.mask_box, strict=True)):
            fx0, fy0, fx1, fy1 = affine.boxes(b.astype(np.float64))[0]
            x0, y0 = int(np.floor(fx0 + 0.5)), int(np.floor(fy0 + 0.5))
            x1, y1 = max(x0 + 1, int(np.floor(fx1 + 0.5))), max(y0 + 1, int(np.floor(fy1 + 0.5)))
            if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
                continue
            # Each new pixel takes the old pixel under its centre (one on an edge: the one before it, as the
            # box's rounding has it), on the one grid every instance shares: a mask resized within its own
            # box moved the borders between instances (two instances split from one component came to
            # share pixels, and to leave others to neither)
            res = m[_under(y0, y1, affine.sy, affine.ty, int(b[1]), m.shape[0])][
                :, _under(x0, x1, affine.sx, affine.tx, int(b[0]), m.shape[1])
            ]
            vis = res[max(0, -y0) : h - y0, max(0, -x0) : w - x0]
            if not vis.any():
                continue
            keep.append(i)
            crops.append(res)
            origins.append((x0, y0))
        kept = self[np.asarray(keep, dtype=np.int64)]
        boxes = affine.boxes(kept.xyxy).astype(np.float32)
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        out = Instances.from_crops((h, w), kept.class_id, kept.score, origins, crops, boxes, kept.track_id)
        if affine.is_isotropic:
            obb = kept.obb.copy()
            obb[:, :2] = affine.points(obb[:, :2])
            obb[:, 2:4] *= affine.sx
            out = replace(out, obb=obb)
        if kept.polygons is not None:
            polys = tuple(
                tuple(affine.points(p).astype(np.float32) for p in parts) for parts in kept.polygons
            )
            out = replace(out, polygons=polys)
        return out

    # serialization --------------------------------------------------------------------------------

    @cached_property
    def _rle(self) -> tuple[str, ...]:
        """Each mask as a COCO RLE string, encoded once: each sink that publishes a result asks (JSON lines
        and MQTT both, on a device)."""
        origins = [(x0, y0) for x0, y0 in self.mask_box[:, :2].tolist()]
        return tuple(rle.encode(self.masks, origins, self.image_shape))

    def to_dict(self, mask_format: MaskFormat = "rle", polygon_tolerance: float = 1.0) -> dict[str, Any]:
        """A JSON-ready dict; masks as COCO RLE (``{"size": [H, W], "counts": str}``), polygons or none."""
        if mask_format not in ("rle", "polygon", "none"):
            raise InputError(f"mask_format must be 'rle', 'polygon' or 'none', got {mask_format!r}")
        h, w = self.image_shape
        src = self
        if mask_format == "polygon" and self.polygons is None:
            src = self.with_polygons(polygon_tolerance)
        # (each field converted whole: an element at a time was most of what a dict cost)
        classes = np.asarray(self.class_id, np.int64).tolist()
        scores = np.asarray(self.score, np.float64).tolist()
        boxes = np.asarray(self.xyxy, np.float64).tolist()
        obbs = np.asarray(self.obb, np.float64).tolist()
        areas = np.asarray(self.area, np.int64).tolist()
        tracks = None if self.track_id is None else np.asarray(self.track_id, np.int64).tolist()
        items: list[dict[str, Any]] = []
        for i in range(len(self)):
            item: dict[str, Any] = {
                "class_id": classes[i],
                "score": scores[i],
                "bbox_xyxy": boxes[i],
                "obb": obbs[i],
                "area": areas[i],
            }
            if tracks is not None:
                item["track_id"] = tracks[i]
            if mask_format == "rle":
                item["segmentation"] = {"size": [h, w], "counts": self._rle[i]}
            elif mask_format == "polygon":
                assert src.polygons is not None
                item["segmentation"] = [[float(v) for v in p.reshape(-1)] for p in src.polygons[i]]
            items.append(item)
        return {"height": h, "width": w, "instances": items}

    def to_json(self, mask_format: MaskFormat = "rle", polygon_tolerance: float = 1.0) -> str:
        return json.dumps(self.to_dict(mask_format, polygon_tolerance), separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Instances:
        """Inverse of :meth:`to_dict`. RLE masks come back bit-exact; polygon masks are rasterized (several
        polygons, as COCO writes an object in parts: their union)."""
        try:
            h, w = _json_integer(doc["height"], "height"), _json_integer(doc["width"], "width")
            items = list(doc["instances"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"instances JSON needs 'height', 'width' and 'instances': {exc}") from None
        # no frame is larger: a document of a few bytes saying 30000 x 30000 had a polygon filled in 7 GB
        if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
            raise InputError(f"instances JSON frame {w}x{h} must be 1 to {MAX_SIDE} pixels a side")
        if not items:
            return cls.empty((h, w))
        crops, origins, polys = [], [], []
        held = 0  # the crops' pixels
        for i, item in enumerate(items):
            seg = item.get("segmentation") if isinstance(item, dict) else None
            if isinstance(seg, dict):
                size = seg.get("size")
                if not isinstance(size, list | tuple) or list(size) != [h, w]:
                    raise InputError(f"instances[{i}].segmentation.size {describe(size)} != frame [{h}, {w}]")
                counts = seg.get("counts")
                if isinstance(counts, str):
                    counts = rle.string_to_counts(counts)
                elif not isinstance(counts, list):
                    raise InputError(
                        f"instances[{i}].segmentation.counts must be an RLE string or a list of counts, "
                        f"got {describe(counts)}"
                    )
                crop, origin = rle.decode_counts(counts, (h, w))
            elif isinstance(seg, list) and seg:
                # COCO's segmentation is a list of polygons, one per part (pycocotools fills their union),
                # carried on so that the document round-trips
                parts = [_polygon_vertices(coords, i, k) for k, coords in enumerate(seg)]
                polys.append(tuple(p.astype(np.float32) for p in parts))
                crop, origin = _fill_polygons(parts, (h, w))
            else:
                raise InputError(f"instances[{i}] has no segmentation (serialized with mask_format='none'?)")
            if crop.size == 0:
                raise InputError(f"instances[{i}].segmentation is an empty mask")
            held += crop.size
            if held > MAX_READ_FRAMES * h * w:
                raise InputError(
                    f"instances JSON masks' boxes add up to more than {MAX_READ_FRAMES} frames of {w}x{h} by "
                    f"instances[{i}] (of {len(items)}): no result has masks so large"
                )
            crops.append(crop)
            origins.append(origin)

        for i, item in enumerate(items):
            _check_fields(item, f"instances[{i}]")

        def column(key: str, dtype: type, shape: tuple[int, ...] = (), default: Any = None) -> NDArray[Any]:
            try:
                values = [it[key] if default is None else it.get(key, default) for it in items]
                return np.asarray(values, dtype=dtype).reshape((len(items), *shape))
            except (KeyError, TypeError, ValueError, OverflowError) as exc:  # (overflow: past int32/int64)
                raise InputError(f"instances JSON: bad or missing '{key}': {exc}") from None

        # track_id is optional per instance (the schema): one without has no id (-1, as the tracker writes a
        # detection it has not confirmed); a document with one missing lost every other instance's id
        tracks = column("track_id", np.int64, default=-1) if any("track_id" in it for it in items) else None
        base = cls.from_crops(
            (h, w), column("class_id", np.int32), column("score", np.float32), origins, crops
        )
        return replace(
            base,
            xyxy=column("bbox_xyxy", np.float32, (4,)),
            obb=column("obb", np.float32, (5,)),
            area=column("area", np.int64),
            polygons=tuple(polys) if len(polys) == len(items) else None,
            track_id=tracks,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Instances:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"instances JSON is not valid JSON: {exc}") from None
        except RecursionError:  # ([[[[... a few thousand deep)
            raise InputError("instances JSON is not valid JSON: nested too deeply") from None
        if not isinstance(doc, dict):
            raise InputError("instances JSON must be an object")
        return cls.from_dict(doc)


def _is_json_number(value: Any, integer: bool = False) -> bool:
    """Whether ``value`` is what the results schema calls a number (an integer): finite, as JSON has no
    inf or NaN (json reads 1e400 as inf), never a bool (json's true is a Python int), and for an integer
    a whole one (JSON Schema counts 10.0 an integer; 10.9 is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or (math.isfinite(value) and (not integer or value.is_integer()))


def _json_integer(value: Any, name: str) -> int:
    if not _is_json_number(value, integer=True):
        raise InputError(f"instances JSON {name} must be an integer, got {describe(value)}")
    return int(value)


def _check_fields(item: dict[str, Any], name: str) -> None:
    """One instance's fields against the results schema (edgeseg/schemas/results.json), a one-line error
    naming the first that breaks it: numpy would have read a score of 7 or inf, a class_id of -1, 10.9 as
    10 and true as 1. (Missing fields and integers past their dtype are :meth:`Instances.from_dict`'s.)"""
    for key, minimum in (("class_id", 0), ("area", 0), ("track_id", None)):
        value = item.get(key, 0)
        if not _is_json_number(value, integer=True) or (minimum is not None and value < minimum):
            bound = "" if minimum is None else f" >= {minimum}"
            raise InputError(f"{name}.{key} must be an integer{bound}, got {describe(value)}")
    score = item.get("score", 0)
    if not (_is_json_number(score) and 0 <= score <= 1):
        raise InputError(f"{name}.score must be a number 0 to 1, got {describe(score)}")
    for key in ("bbox_xyxy", "obb"):
        values = item.get(key, [])
        if not (isinstance(values, list) and all(_is_json_number(v) for v in values)):
            raise InputError(f"{name}.{key} must be a list of numbers, got {describe(values)}")


def _under(start: int, stop: int, scale: float, shift: float, first: int, n: int) -> NDArray[np.intp]:
    """Along one axis of :meth:`Instances.transform`: for each new pixel ``start .. stop - 1``, the old pixel
    (of ``n``, from ``first``) under its centre, where the mapping ``scale``, ``shift`` takes old pixels to
    new; a centre on the edge between two goes to the first, as ``transform`` rounds a box's ends. (Clipped:
    a box widened to one pixel, or a float's rounding, may reach past the mask.)"""
    under: NDArray[np.intp] = (
        np.ceil((np.arange(start, stop) + 0.5 - shift) / scale).astype(np.intp) - 1 - first
    )
    np.clip(under, 0, n - 1, out=under)
    return under


def _polygon_vertices(coords: Any, i: int, k: int) -> NDArray[np.float64]:
    """``(K, 2)`` vertices of instance ``i``'s polygon ``k`` ``[x0, y0, x1, y1, ...]``, or a one-line error (a
    ragged, odd, textual or infinite list was a numpy traceback). In float64, as pycocotools fills them (in
    float32, 0.7 is a hair under it, and a side through a pixel centre moved); finite in float32 too, as
    :attr:`Instances.polygons` holds them."""
    # numbers only: numpy's cast read "5" as 5 and true as 1
    numbers = isinstance(coords, list) and all(_is_json_number(v) for v in coords)
    try:
        flat = np.asarray(coords if numbers else [0], dtype=np.float64)  # [0]: refused below, as odd
    except OverflowError:  # an integer past float64's range
        flat = np.zeros(1)
    with np.errstate(over="ignore"):
        finite = np.isfinite(flat.astype(np.float32)).all()
    if flat.ndim != 1 or not flat.size or flat.size % 2 or not finite:
        raise InputError(
            f"instances[{i}].segmentation[{k}] must be a polygon [x0, y0, x1, y1, ...] of finite numbers, "
            f"got {describe(coords)}"
        )
    return flat.reshape(-1, 2)


def _fill_polygons(
    parts: list[NDArray[np.float64]], image_hw: tuple[int, int]
) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """The union of the polygons' fills (:func:`edgeseg.geometry.fill_polygon`) as a tight crop and its
    origin. A polygon that fills no pixel (one or two vertices, or a path with no inside) is the pixels its
    outline passes through: earlier versions, whose outlines ran through the edge pixels' centres, wrote a
    lone pixel or a 1 px thin part so, and such a polygon made the whole document unreadable.

    Each part is added to one crop of the frame's pixels that any part may cover (as each part is filled, so
    memory is the frame's: every part's own crop held until their union cost a frame per part)."""
    h, w = image_hw
    # a part's pixels, filled or under its outline, lie in the pixels of its vertices' box (clipped)
    lo = np.clip(np.floor(np.min([p.min(axis=0) for p in parts], axis=0)), 0, [w, h]).astype(int)
    hi = np.clip(np.floor(np.max([p.max(axis=0) for p in parts], axis=0)) + 1, 0, [w, h]).astype(int)
    (x0, y0), (x1, y1) = lo.tolist(), hi.tolist()
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), bool), (0, 0)
    union = np.zeros((y1 - y0, x1 - x0), bool)
    for c, (ox, oy) in (_polygon_pixels(p, image_hw) for p in parts):
        union[oy - y0 : oy - y0 + c.shape[0], ox - x0 : ox - x0 + c.shape[1]] |= c
    c0, r0, cw, ch = cv2.boundingRect(union.view(np.uint8))
    if cw == 0:
        return np.zeros((0, 0), bool), (0, 0)
    return union[r0 : r0 + ch, c0 : c0 + cw].copy(), (x0 + c0, y0 + r0)


def _polygon_pixels(
    poly: NDArray[np.float64], image_hw: tuple[int, int]
) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """:func:`edgeseg.geometry.fill_polygon`, or where that fills nothing the pixels under the outline (see
    :func:`_fill_polygons`), as a tight crop and its origin."""
    crop, origin = fill_polygon(poly, image_hw)
    if crop.any():
        return crop, origin
    h, w = image_hw
    # (far outside the frame a vertex only needs to stay outside it: OpenCV clips the lines)
    pts = np.clip(np.floor(poly), -(1 << 20), 1 << 20).astype(np.int32)
    x0, y0 = max(0, int(pts[:, 0].min())), max(0, int(pts[:, 1].min()))
    x1, y1 = min(w, int(pts[:, 0].max()) + 1), min(h, int(pts[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), bool), (0, 0)
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(canvas, [pts - np.array([x0, y0], np.int32)], True, 1)
    return canvas.view(bool), (x0, y0)
