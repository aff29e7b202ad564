"""Write tests/golden/yolov8n_seg_320_ultralytics.json: Ultralytics' own YOLO-seg results on real images.

Dev-time only; runs inside `.venv-ref` (scripts/setup_ref_env.sh):

    .venv-ref/bin/python scripts/make_yolo_golden.py

For each model x image it letterboxes with Ultralytics' `LetterBox`, runs onnxruntime (CPU EP, default
session options, as Ultralytics' AutoBackend does), post-processes with scripts/ultralytics_ref.py on both
mask paths, and checks that the result is identical to an end-to-end `YOLO(model).predict(...)` on the
same image (so the reference really is what Ultralytics does). tests/golden/README.md describes the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
import pycocotools.mask as mask_util
import torch
import ultralytics_ref as ref
from ultralytics import YOLO

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "golden" / "yolov8n_seg_320_ultralytics.json"
MODELS = ("models/yolov8n-seg_int8_320.onnx", "models/yolov8n-seg_int8_320_dequant_fp32.onnx")
# bus/zidane: the standard smoke images (vertical and horizontal padding). The coco128-seg images are
# crowded scenes that also hit the letterbox edge cases: 000000000127 (481x640) resizes to 240.5 rows,
# rounded half-to-even down to 240; 000000000315 (427x640) to 213.5, rounded up to 214 (and retina
# pre-upsamples x4); 000000000071 (426x640) and 000000000384 (640x446) have odd padding (53/54, 48/49).
IMAGES = (
    "images/bus.jpg",
    "images/zidane.jpg",
    "datasets/coco128-seg/images/train2017/000000000196.jpg",
    "datasets/coco128-seg/images/train2017/000000000127.jpg",
    "datasets/coco128-seg/images/train2017/000000000315.jpg",
    "datasets/coco128-seg/images/train2017/000000000071.jpg",
    "datasets/coco128-seg/images/train2017/000000000384.jpg",
)
CONF, IOU, MAX_DET = 0.25, 0.7, 300


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def f32(x: float) -> float:
    """Shortest decimal that reads back as the same float32, to keep the JSON small yet exact."""
    return float(str(np.float32(float(x))))


def rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a bool (H, W) mask, counts as str (pycocotools' compressed form)."""
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def tensor_stats(t: np.ndarray) -> dict[str, Any]:
    """Summary of a raw model output: enough to notice a different model or runtime, not to compare bits."""
    t64 = t.astype(np.float64)
    return {
        "shape": list(t.shape),
        "dtype": str(t.dtype),
        "min": f32(t64.min()),
        "max": f32(t64.max()),
        "mean": f32(t64.mean()),
        "std": f32(t64.std()),
    }


def check_against_ultralytics(
    yolo: YOLO,
    img: np.ndarray,
    input_hw: tuple[int, int],
    kept_rows: dict[bool, torch.Tensor],
    kept_masks: dict[bool, torch.Tensor],
    where: str,
) -> None:
    """Fail unless end-to-end `YOLO.predict` gives bit-identical boxes and masks on both paths."""
    for retina in (False, True):
        result = yolo.predict(
            img, imgsz=list(input_hw), conf=CONF, iou=IOU, max_det=MAX_DET, retina_masks=retina, device="cpu"
        )[0]
        boxes = result.boxes.data if result.boxes is not None else torch.zeros((0, 6))
        masks = result.masks.data if result.masks is not None else torch.zeros((0, 1, 1), dtype=torch.uint8)
        path = "retina" if retina else "default"
        if not torch.equal(boxes, kept_rows[retina][:, :6]):
            sys.exit(f"{where} [{path}]: boxes differ from YOLO.predict")
        if len(boxes) and not torch.equal(masks.to(torch.uint8), kept_masks[retina]):
            sys.exit(f"{where} [{path}]: masks differ from YOLO.predict")


def golden_case(
    session: ort.InferenceSession, yolo: YOLO, assets: Path, model_rel: str, image_rel: str
) -> dict[str, Any]:
    img = cv2.imread(str(assets / image_rel), cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"cannot read image {assets / image_rel}")
    in_shape = session.get_inputs()[0].shape
    input_hw = (int(in_shape[2]), int(in_shape[3]))
    tensor, letterboxed, lb = ref.ultralytics_letterbox(img, input_hw)
    output0, output1 = session.run(["output0", "output1"], {session.get_inputs()[0].name: tensor})
    orig_hw = lb.orig_hw

    nms_rows = ref.ultralytics_nms(output0, output1, CONF, IOU, MAX_DET)
    shapes = (input_hw, orig_hw)
    rows_default, masks_input = ref.ultralytics_masks(nms_rows.clone(), output1, *shapes, retina=False)
    rows_retina, masks_retina = ref.ultralytics_masks(nms_rows.clone(), output1, *shapes, retina=True)
    if not torch.equal(rows_default, rows_retina):
        sys.exit(f"{model_rel} {image_rel}: the two mask paths scaled the boxes differently")
    kept_default = masks_input.amax((-2, -1)) > 0
    kept_retina = masks_retina.amax((-2, -1)) > 0
    # scale_masks treats each mask on its own, so mapping all N equals mapping the kept ones.
    masks_default = ref.input_masks_to_orig(masks_input, orig_hw)

    where = f"{model_rel} {image_rel}"
    check_against_ultralytics(
        yolo,
        img,
        input_hw,
        {False: rows_default[kept_default], True: rows_retina[kept_retina]},
        {False: masks_input[kept_default], True: masks_retina[kept_retina]},
        where,
    )
    paths = ((False, kept_default, masks_default), (True, kept_retina, masks_retina.bool()))
    for retina, kept, full in paths:
        dets = ref.ultralytics_postprocess(output0, output1, input_hw, orig_hw, CONF, IOU, MAX_DET, retina)
        if len(dets) != int(kept.sum()) or not all(
            np.array_equal(d.mask, m.numpy()) for d, m in zip(dets, full[kept], strict=True)
        ):
            sys.exit(f"{where}: ultralytics_postprocess(retina={retina}) disagrees with its parts")

    detections = []
    for i in range(len(nms_rows)):
        m_default, m_retina = masks_default[i].numpy(), masks_retina[i].bool().numpy()
        detections.append(
            {
                "class_id": int(nms_rows[i, 5]),
                "confidence": f32(nms_rows[i, 4]),
                "xyxy": [f32(v) for v in rows_default[i, :4]],
                "xyxy_input": [f32(v) for v in nms_rows[i, :4]],
                "kept_default": bool(kept_default[i]),
                "kept_retina": bool(kept_retina[i]),
                "mask_default_input": rle(masks_input[i].bool().numpy()),
                "mask_default": rle(m_default),
                "mask_retina": rle(m_retina),
                "mask_iou_default_vs_retina": round(mask_iou(m_default, m_retina), 4),
            }
        )
    return {
        "model": model_rel,
        "image": image_rel,
        "image_sha256": sha256_file(assets / image_rel),
        "orig_hw": list(orig_hw),
        "input_shape": [int(v) for v in tensor.shape],
        "letterbox": {
            "ratio": lb.ratio,
            "resized_hw": list(lb.resized_hw),
            "pad_top": lb.top,
            "pad_bottom": lb.bottom,
            "pad_left": lb.left,
            "pad_right": lb.right,
        },
        "letterboxed_bgr_sha256": hashlib.sha256(np.ascontiguousarray(letterboxed).tobytes()).hexdigest(),
        "input_tensor_sha256": hashlib.sha256(tensor.tobytes()).hexdigest(),
        "outputs": {"output0": tensor_stats(output0), "output1": tensor_stats(output1)},
        "n_nms": len(detections),
        "n_kept_default": int(kept_default.sum()),
        "n_kept_retina": int(kept_retina.sum()),
        "detections": detections,
    }


def iou_summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    ious = [
        d["mask_iou_default_vs_retina"]
        for c in cases
        for d in c["detections"]
        if d["kept_default"] and d["kept_retina"]
    ]
    return {
        "n": len(ious),
        "median": round(statistics.median(ious), 4),
        "mean": round(statistics.fmean(ious), 4),
        "min": round(min(ious), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--assets",
        type=Path,
        default=Path(os.environ.get("EDGESEG_ASSETS", REPO.parent / "shared" / "assets")),
        help="shared assets folder (default: $EDGESEG_ASSETS or <repo>/../shared/assets)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"golden JSON (default: {DEFAULT_OUT})")
    args = parser.parse_args()
    assets = args.assets.resolve()

    cases: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    for model_rel in MODELS:
        model_path = assets / model_rel
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        yolo = YOLO(str(model_path), task="segment")
        model_cases = [golden_case(session, yolo, assets, model_rel, image_rel) for image_rel in IMAGES]
        models[model_rel] = {
            "sha256": sha256_file(model_path),
            "mask_iou_default_vs_retina": iou_summary(model_cases),
        }
        cases += model_cases
        for c in model_cases:
            print(
                f"{model_rel} {c['image']}: {c['n_nms']} after NMS, kept {c['n_kept_default']} default / "
                f"{c['n_kept_retina']} retina"
            )

    golden = {
        "description": "Ultralytics' own YOLO-seg post-processing of onnxruntime CPU outputs; see README.md",
        "generator": "scripts/make_yolo_golden.py (scripts/ultralytics_ref.py)",
        "versions": {
            "ultralytics": ref.ULTRALYTICS_VERSION,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "opencv": cv2.__version__,
        },
        "params": {"conf": CONF, "iou": IOU, "max_det": MAX_DET, "agnostic_nms": False, "classes": None},
        "models": models,
        "mask_iou_default_vs_retina": iou_summary(cases),
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    print(f"mask IoU default vs retina (kept in both): {golden['mask_iou_default_vs_retina']}")
    for model_rel, info in models.items():
        print(f"  {model_rel}: {info['mask_iou_default_vs_retina']}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
