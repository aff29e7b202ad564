"""Semantic head: a per-pixel class output -> instances via :func:`edgeseg.semantic.semantic_to_instances`.

Accepted outputs (the card's ``output.kind`` and ``output.layout``):

- ``logits`` / ``probabilities``: ``[1, C, h, w]`` (nchw) or ``[1, h, w, C]`` (nhwc), ``C`` = classes;
- ``sigmoid``: one foreground probability, ``[1, 1, h, w]``, ``[1, h, w, 1]`` or ``[1, h, w]``;
- ``class_map``: argmax class ids (IMX500 DeepLab style), ``[1, h, w]``, ``[h, w]`` or ``[1, 1, h, w]``.

The map covers the model input (any stride). The part of it that shows the frame region (letterbox
padding dropped) is resampled once onto a grid of the map's own resolution (bilinear for scores, nearest for
class ids), split into instances there, and the instances are mapped into frame pixels. Scores are the mean
winning-class probability of each instance (1.0 for class maps, which carry no confidence).

:meth:`SemanticHead.explain` shows what the split saw on that work grid
(:func:`edgeseg.semantic.explain_split`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.backends import Outputs
from edgeseg.errors import InputError, ModelError
from edgeseg.geometry import AxisAffine
from edgeseg.heads import DecodeOptions
from edgeseg.instances import Instances
from edgeseg.modelcard import ModelCard
from edgeseg.preprocess import Prepared
from edgeseg.semantic import Confidence, SplitView, explain_split, semantic_to_instances
from edgeseg.semantic.scores import channels_first

_Split = TypeVar("_Split", Instances, SplitView)


class SemanticHead:
    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.nc = len(card.classes)
        self._logits = card.output.kind == "logits"

    def _fail(self, msg: str, tensor: str | None = None) -> ModelError:
        return ModelError(f"model {self.card.name!r}: output {tensor or self.card.output.name!r} {msg}")

    def maps(self, outputs: Outputs) -> NDArray[np.generic]:
        """The output as ``(C, h, w)`` float32 scores, or an ``(h, w)`` uint8/uint16 class map."""
        out = self.card.output
        t = self._tensor(outputs, out.name)
        if np.issubdtype(t.dtype, np.floating) and not np.isfinite(t.max()):  # max() propagates NaN
            raise self._fail("holds NaN or infinite values")
        if out.kind in ("logits", "probabilities"):
            want = f"[1, {self.nc}, h, w]" if out.layout == "nchw" else f"[1, h, w, {self.nc}]"
            ch_axis = 1 if out.layout == "nchw" else 3
            if t.ndim != 4 or t.shape[0] != 1 or t.shape[ch_axis] != self.nc:
                raise self._fail(f"has shape {list(t.shape)}, expected {want} for {self.nc} classes")
            return np.asarray(t[0], np.float32) if out.layout == "nchw" else channels_first(t[0])
        squeezed = self._plane(t, out.name)
        if out.kind == "sigmoid":
            p = np.asarray(squeezed, np.float32)
            fg = 1 - self.card.background
            probs = np.empty((2, *p.shape), np.float32)
            probs[fg] = p
            np.subtract(1.0, p, out=probs[self.card.background])
            return probs
        ids = np.asarray(squeezed)
        if (not np.issubdtype(ids.dtype, np.unsignedinteger) and ids.min() < 0) or ids.max() >= self.nc:
            raise self._fail(f"holds class ids outside 0..{self.nc - 1}")
        # cv2.warpAffine takes uint8 and uint16, and the split wants an integer map
        return ids.astype(np.uint8 if self.nc <= 256 else np.uint16, copy=False)

    def confidence(self, outputs: Outputs, shape: tuple[int, ...]) -> Confidence | None:
        """A class map's per-pixel probability (the card's ``output.confidence``), ``(h, w)`` float32."""
        name = self.card.output.confidence
        if name is None:
            return None
        conf = np.asarray(self._companion(outputs, name, shape), np.float32)
        try:
            return Confidence.checked(conf, shape)
        except InputError:
            raise self._fail("holds values outside [0, 1]", name) from None

    def touching(self, outputs: Outputs, shape: tuple[int, ...]) -> NDArray[np.uint8] | None:
        """A class map's contact map (the card's ``output.contact``), ``(h, w)`` uint8 0/1 (a bool view of
        it is what the split takes)."""
        name = self.card.output.contact
        if name is None:
            return None
        t = self._companion(outputs, name, shape)
        if t.dtype != np.bool_ and not np.issubdtype(t.dtype, np.integer):
            raise self._fail(f"must hold 0/1 integers, got {t.dtype}", name)
        if (not np.issubdtype(t.dtype, np.unsignedinteger) and int(t.min()) < 0) or int(t.max()) > 1:
            raise self._fail("holds values other than 0 and 1", name)
        return np.asarray(t, np.uint8)  # (cv2.warpAffine takes uint8, not bool)

    def _companion(self, outputs: Outputs, name: str, shape: tuple[int, ...]) -> NDArray[np.generic]:
        """The one-map tensor ``name`` that goes with the class map, checked to have its ``shape``."""
        t = self._plane(self._tensor(outputs, name), name)
        if t.shape != shape:
            raise self._fail(f"has shape {list(t.shape)}, the class map {list(shape)}", name)
        return t

    def _tensor(self, outputs: Outputs, name: str) -> NDArray[np.generic]:
        if name not in outputs:
            raise self._fail(f"missing (the model returned {', '.join(outputs) or 'nothing'})", name)
        t = np.asarray(outputs[name])
        if t.size == 0:
            raise self._fail(f"is empty (shape {t.shape})", name)
        return t

    def _plane(self, t: NDArray[np.generic], name: str) -> NDArray[np.generic]:
        """A one-map tensor (``[h, w]``, ``[1, h, w]``, ``[1, 1, h, w]``, ``[1, h, w, 1]``) as ``(h, w)``."""
        hw = t.shape[-3:-1] if self.card.output.layout == "nhwc" and t.ndim == 4 else t.shape[-2:]
        if t.ndim not in (2, 3, 4) or t.size != math.prod(hw):
            raise self._fail(f"has shape {list(t.shape)}, expected one map [1, h, w] or [1, 1, h, w]", name)
        return t.reshape(hw)

    def decode(self, outputs: Outputs, prepared: Prepared, options: DecodeOptions) -> Instances:
        inst, to_frame = self._split(semantic_to_instances, outputs, prepared, options)
        return on_frame(inst, to_frame, prepared)

    def explain(self, outputs: Outputs, prepared: Prepared, options: DecodeOptions) -> SplitView:
        """What the split saw, on the work grid :meth:`decode` splits on; the view's ``to_frame`` maps that
        grid's pixels onto the frame (its instances are in work pixels, not yet mapped)."""
        view, to_frame = self._split(explain_split, outputs, prepared, options)
        return replace(view, to_frame=to_frame)

    def _split(
        self,
        how: Callable[..., _Split],
        outputs: Outputs,
        prepared: Prepared,
        options: DecodeOptions,
    ) -> tuple[_Split, AxisAffine]:
        """``how`` (:func:`semantic_to_instances` or :func:`explain_split`, which take the same arguments) on
        the work grid, with the card's classes and the parameters in effect, and the mapping from the work
        grid's pixels onto the frame."""
        work, confidence, touching, to_frame = self._work(outputs, prepared)
        out = how(
            work,
            options.semantic or self.card.semantic,
            self.card.background,
            logits=self._logits,
            confidence=confidence,
            contact=self.card.contact,
            touching=touching,
        )
        return out, to_frame

    def _work(
        self, outputs: Outputs, prepared: Prepared
    ) -> tuple[NDArray[np.generic], Confidence | None, NDArray[np.bool_] | None, AxisAffine]:
        """The output resampled onto the work grid (the frame region at the map's resolution), as
        ``(C, h, w)`` float32 scores or an ``(h, w)`` integer class map (with its confidence and contact
        maps, if the model gives them), and the mapping from work pixels to frame pixels."""
        maps = self.maps(outputs)
        is_map = maps.ndim == 2
        confidence = self.confidence(outputs, maps.shape) if is_map else None
        touching = self.touching(outputs, maps.shape) if is_map else None
        touching_bool = None if touching is None else touching.view(bool)  # checked 0/1: no pass to convert
        spec = self.card.input
        oh, ow = maps.shape[-2:]
        ch, cw = prepared.crop_shape
        x0, y0, _, _ = prepared.crop_box or (0, 0, cw, ch)
        # The frame region the model saw, in output-map px (continuous coords; excludes letterbox padding)
        to_model = AxisAffine(1.0, 1.0, float(x0), float(y0)).then(prepared.to_frame.inverse())
        to_out = to_model.then(AxisAffine(ow / spec.width, oh / spec.height))
        u0, v0 = to_out.tx, to_out.ty
        u1, v1 = cw * to_out.sx + u0, ch * to_out.sy + v0
        # Instances are found at the map's own resolution (never upsampled first: the watershed cost grows
        # with pixels, not information) and only their masks are mapped onto the frame afterwards.
        # Rounded up: a grid coarser than the region samples the map more than a pixel apart, and nearest
        # sampling would skip a whole row or column of it (an object one output pixel wide would vanish).
        # (The tolerance keeps a float error over a whole count from adding a pixel.)
        ww = max(1, min(cw, math.ceil(u1 - u0 - 1e-6)))
        wh = max(1, min(ch, math.ceil(v1 - v0 - 1e-6)))
        sx, sy = (u1 - u0) / ww, (v1 - v0) / wh
        to_frame = AxisAffine(cw / ww, ch / wh, float(x0), float(y0))
        if (wh, ww) == (oh, ow) and abs(u0) < 1e-6 and abs(v0) < 1e-6 and abs(sx - 1) + abs(sy - 1) < 1e-9:
            return maps, confidence, touching_bool, to_frame
        # work px -> output px, sampled at pixel indices (hence the half-pixel shifts)
        m = np.array([[sx, 0.0, u0 + 0.5 * sx - 0.5], [0.0, sy, v0 + 0.5 * sy - 0.5]])

        def warp(plane: NDArray[Any], interpolation: int) -> NDArray[Any]:
            flags = interpolation | cv2.WARP_INVERSE_MAP
            return np.asarray(
                cv2.warpAffine(plane, m, (ww, wh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
            )

        if is_map:
            # (a linear blend of values in [0, 1] stays in it: still checked)
            conf = (
                None
                if confidence is None
                else Confidence(np.asarray(warp(confidence.values, cv2.INTER_LINEAR), np.float32))
            )
            touch = None if touching is None else warp(touching, cv2.INTER_NEAREST).view(bool)
            return warp(maps, cv2.INTER_NEAREST), conf, touch, to_frame
        return np.stack([warp(c, cv2.INTER_LINEAR) for c in maps]), None, None, to_frame


def on_frame(inst: Instances, to_frame: AxisAffine, prepared: Prepared) -> Instances:
    """Instances of a split's work grid (``to_frame``: its pixels onto the frame's) in the prepared frame's
    pixels, as :meth:`SemanticHead.decode` gives them."""
    ch, cw = prepared.crop_shape
    if to_frame == AxisAffine() and (ch, cw) == prepared.frame_shape:
        return inst
    return inst.transform(to_frame, prepared.frame_shape)
