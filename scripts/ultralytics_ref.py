"""Ultralytics' own YOLO-seg pre- and post-processing, as a reference for edgeseg's numpy decoder.

Dev-time only: runs inside `.venv-ref` (scripts/setup_ref_env.sh), never imported by edgeseg (Ultralytics is
AGPL-3.0). Every step calls Ultralytics' functions in the order `SegmentationPredictor` calls them
(ultralytics 8.4.190: `BasePredictor.pre_transform/preprocess`, `DetectionPredictor.postprocess`,
`SegmentationPredictor.construct_result`), so the golden files made from it (scripts/make_yolo_golden.py)
and timings taken with it are Ultralytics' behaviour, not a re-implementation. tests/golden/README.md
writes the call chain out step by step.

Coordinate frames: "input" is the letterboxed model input (pixels of the `input_hw` tensor), "orig" is the
original image. Boxes are xyxy float32 pixels with exclusive x2, y2 (Ultralytics' `crop_mask` keeps
columns `x1 <= c < x2`, which is our convention too).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Ultralytics reads these at import: no network, no auto-install, no settings file in ~/.config.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "edgeseg-ultralytics-config"))

import numpy as np
import torch

# SegmentationPredictor.stream_inference imports torchvision, which makes nms.non_max_suppression use
# torchvision.ops.nms instead of its own TorchNMS loop; import it so the reference takes the same branch.
import torchvision  # noqa: F401
import ultralytics
from ultralytics.data.augment import LetterBox
from ultralytics.utils import nms, ops

ULTRALYTICS_VERSION: str = ultralytics.__version__


@dataclass(frozen=True)
class LetterboxParams:
    """What Ultralytics' `LetterBox.get_params` computed for one image.

    `ratio` is the single scale applied to both axes; `resized_hw` is the size the image was resized to
    (each side `max(round(side * ratio), 1)`, Python's round-half-to-even); the pads are the constant-114
    borders added by `cv2.copyMakeBorder` on each side, so `top + resized_hw[0] + bottom == input_hw[0]`.
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    ratio: float
    resized_hw: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True)
class Det:
    """One instance as Ultralytics reports it, mapped to the original image.

    class_id: COCO-80 index. confidence: max class score (already sigmoid in the ONNX export).
    xyxy: float32 (4,), original-image pixels, clipped to [0, W] x [0, H].
    mask: bool (H, W) at original-image size.
    """

    class_id: int
    confidence: float
    xyxy: np.ndarray
    mask: np.ndarray


def ultralytics_letterbox(
    img_bgr: np.ndarray, new_shape: tuple[int, int] = (320, 320)
) -> tuple[np.ndarray, np.ndarray, LetterboxParams]:
    """Letterbox and normalize one image exactly as `SegmentationPredictor` does for a static ONNX model.

    img_bgr: uint8 (H, W, 3) BGR, as cv2.imread returns it. new_shape: model input (height, width).
    Returns (tensor, letterboxed, params): tensor is float32 (1, 3, h, w) RGB in [0, 1] (what is fed to the
    model), letterboxed is the uint8 (h, w, 3) BGR image before the channel flip and scaling.
    """
    # pre_transform: auto=False because the ONNX model is neither a .pt nor dynamic; no scale_fill.
    letterbox = LetterBox(new_shape, auto=False, scale_fill=False, stride=32)
    labels: dict[str, object] = {"img": img_bgr}
    params = letterbox.get_params(labels)
    letterboxed = letterbox.apply_image(labels, params)["img"]
    # BasePredictor.preprocess: HWC uint8 -> NCHW, BGR -> RGB flip, float32, / 255.
    nchw = torch.from_numpy(letterboxed).unsqueeze(0).permute(0, 3, 1, 2).contiguous()
    tensor = nchw.flip(1).float().div_(255)
    new_w, new_h = params["new_unpad"]
    lb_params = LetterboxParams(
        orig_hw=(int(img_bgr.shape[0]), int(img_bgr.shape[1])),
        input_hw=(int(new_shape[0]), int(new_shape[1])),
        ratio=float(params["ratio"][0]),
        resized_hw=(int(new_h), int(new_w)),
        top=int(params["top"]),
        bottom=int(params["bottom"]),
        left=int(params["left"]),
        right=int(params["right"]),
    )
    return tensor.numpy(), letterboxed, lb_params


def ultralytics_nms(
    output0: np.ndarray, output1: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300
) -> torch.Tensor:
    """`nms.non_max_suppression` with the arguments `DetectionPredictor.postprocess` passes for a seg model.

    output0: float32 (1, 4 + nc + nm, A) rows cx, cy, w, h (input px), nc class scores, nm mask coefficients.
    output1: float32 (1, nm, mh, mw) prototypes (only nm is read here).
    Returns float32 (N, 6 + nm): x1, y1, x2, y2 (input px), confidence, class, coefficients; sorted by
    descending confidence.
    """
    nc = output0.shape[1] - 4 - output1.shape[1]
    return nms.non_max_suppression(
        torch.from_numpy(output0),
        conf,
        iou,
        None,  # classes
        False,  # agnostic_nms
        max_det=max_det,
        nc=nc,
        end2end=False,
        rotated=False,
        return_idxs=False,
    )[0]


def ultralytics_masks(
    pred: torch.Tensor,
    output1: np.ndarray,
    input_hw: tuple[int, int],
    orig_hw: tuple[int, int],
    retina: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`SegmentationPredictor.construct_result` up to (not including) its empty-mask filter.

    pred: (N, 6 + nm) from `ultralytics_nms`; it is modified in place (boxes scaled to orig px), as there.
    Returns (pred, masks): masks uint8 0/1, (N, *input_hw) for the default path (what `Results.masks.data`
    holds) or (N, *orig_hw) for retina.
    """
    protos = torch.from_numpy(output1)[0]
    if retina:
        pred[:, :4] = ops.scale_boxes(input_hw, pred[:, :4], orig_hw)
        masks = ops.process_mask_native(protos, pred[:, 6:], pred[:, :4], orig_hw)
    else:
        masks = ops.process_mask(protos, pred[:, 6:], pred[:, :4], input_hw, upsample=True)
        pred[:, :4] = ops.scale_boxes(input_hw, pred[:, :4], orig_hw)
    return pred, masks


def input_masks_to_orig(masks: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
    """Map default-path masks (N, *input_hw) uint8 to bool (N, *orig_hw) as `Results.plot` does.

    That is `Annotator.masks`: `ops.scale_masks` (crop the letterbox padding, bilinear resize with
    align_corners=False) on the 0/1 masks as float, then `> 0.5`. Retina masks are already at orig size.
    """
    if len(masks) == 0:
        return torch.zeros((0, *orig_hw), dtype=torch.bool)
    return ops.scale_masks(masks[None].float(), orig_hw)[0] > 0.5


def ultralytics_postprocess(
    output0: np.ndarray,
    output1: np.ndarray,
    input_hw: tuple[int, int],
    orig_hw: tuple[int, int],
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    retina: bool = False,
) -> list[Det]:
    """Ultralytics' YOLO-seg post-processing of raw ONNX outputs, mapped to the original image.

    output0: float32 (1, 4 + nc + nm, A); output1: float32 (1, nm, mh, mw). input_hw: model input size;
    orig_hw: original image size. retina=False is Ultralytics' default path (masks at input size, then
    `Results.plot`'s mapping to the frame); retina=True is `retina_masks=True`.
    Returns the instances Ultralytics keeps (those with a non-empty mask at the resolution it produced them),
    in descending confidence.
    """
    pred = ultralytics_nms(output0, output1, conf, iou, max_det)
    if pred.shape[0] == 0:
        return []
    pred, masks = ultralytics_masks(pred, output1, input_hw, orig_hw, retina)
    keep = masks.amax((-2, -1)) > 0
    pred, masks = pred[keep], masks[keep]
    full = masks.bool() if retina else input_masks_to_orig(masks, orig_hw)
    return [
        Det(int(row[5]), float(row[4]), row[:4].numpy().copy(), mask.numpy())
        for row, mask in zip(pred, full, strict=True)
    ]
