"""Time ``semantic_to_instances`` on the demo's class maps and check its output against a reference tree.

The maps are the demo scenes' (``edgeseg.synthetic.PartsScene(640, 480, seed=s).frame(f)``): (a) their
ground-truth class maps and (b) the reference model's argmax (``models/reference/demo-parts-v1.onnx``),
split with the demo card's parameters (``models/demo-parts.yaml``) by distance reliefs, and (b') its logits
themselves (``scores``: the split takes the argmax and the winning class's probability); (c) the demo model's
own class map, split where its contact map says, with its confidence (the demo pipeline's decode, as
``edgeseg.semantic.cores`` does it). With ``--reference DIR`` (a copy of
``edgeseg/semantic`` from another version, say ``/tmp/semantic_orig/semantic``) both are timed alternately
in the same process, call by call (after one untimed call of each), the median ms per frame and their ratio
printed, and every instance compared (class, box, area, mask, oriented box).
``--profile`` prints cProfile's top entries instead.
``--photos`` takes (b), (b') and (c) of the shared assets' real photos instead (``bus.jpg``, ``zidane.jpg``
and the others, stretched to 640x480): scenes the models were not trained for, their maps full of small parts
that score low; ``--video CLIP`` takes them of a clip's frames (every 6th of its first 120), such as the
street of ``pedestrians_crossing_640x360.mp4``, (c) on the frame's own grid as the demo pipeline's head
resamples the maps. ``--serial``: OpenCV on one thread, as the ``edgeseg`` command runs it (without it,
OpenCV's pool shares out the labelling passes).

    .venv/bin/python scripts/profile_semantic.py --reference /tmp/semantic_orig/semantic
    .venv/bin/python scripts/profile_semantic.py --photos --reference /tmp/semantic_orig/semantic
    .venv/bin/python scripts/profile_semantic.py --serial --reference /tmp/semantic_orig/semantic \
        --video ../shared/assets/video/pedestrians_crossing_640x360.mp4
    .venv/bin/python scripts/profile_semantic.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import logging
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.instances import Instances
from edgeseg.modelcard import find_card
from edgeseg.semantic import SemanticParams, semantic_to_instances
from edgeseg.synthetic import PartsScene
from edgeseg.threadplan import serial_opencv

REPO = Path(__file__).resolve().parents[1]
Split = Callable[..., Instances]
# a class map and what the split takes beside it (the demo model's confidence and contact maps)
Call = tuple[NDArray[np.generic], dict[str, Any]]


def demo_maps(seeds: list[int], frames: list[int]) -> dict[str, list[Call]]:
    """Ground-truth and reference-model class maps of the demo scenes, the reference model's logits, and the
    demo model's own outputs."""
    images = []
    truth: list[Call] = []
    for s in seeds:
        scene = PartsScene(640, 480, seed=s)
        for f in frames:
            frame = scene.frame(f)
            truth.append((np.asarray(frame.class_map, np.uint8), {}))
            images.append(frame.image)
    return {"truth": truth, **model_maps(images)}


def photo_maps() -> dict[str, list[Call]]:
    """The models' outputs on the real photos of the shared assets (``$EDGESEG_ASSETS/images``, default
    ``../shared/assets``), each stretched to 640x480: scenes the demo models were not trained for."""
    assets = Path(os.environ.get("EDGESEG_ASSETS", REPO.parent / "shared" / "assets")) / "images"
    paths = sorted(assets.glob("*.jpg")) + sorted(assets.glob("*.png"))
    if not paths:
        raise SystemExit(f"profile_semantic: no photos in {assets} (set EDGESEG_ASSETS)")
    return model_maps([cv2.resize(cv2.imread(str(p)), (640, 480)) for p in paths])


def video_maps(path: Path) -> dict[str, list[Call]]:
    """The models' outputs on every 6th of the first 120 frames of the clip at ``path``: the reference
    model's of the frames stretched to 640x480, and the demo pipeline's split inputs as its head makes them
    (the demo model's maps resampled onto the frame's own grid, 640x360 for a 16:9 clip)."""
    from edgeseg.config import load_config
    from edgeseg.frame import Frame
    from edgeseg.pipeline import ModelStages

    stages = ModelStages.from_config(load_config(None, []))
    cap = cv2.VideoCapture(str(path))
    images, contact = [], []
    for i in range(120):
        ok, image = cap.read()
        if not ok:
            break
        if i % 6:
            continue
        images.append(cv2.resize(image, (640, 480)))
        frame = Frame(i, image, time.monotonic_ns(), time.time())
        prepared = stages.preprocess(frame)
        # (the head's own resampling: the split's inputs exactly as the pipeline's decode makes them)
        classes, confidence, touching, _ = stages.model.head._work(stages.infer(prepared), prepared)
        # (the confidence as an array: a reference tree's split takes no Confidence of this one)
        values = None if confidence is None else confidence.values
        contact.append((classes, {"confidence": values, "touching": touching}))
    cap.release()
    stages.close()
    if not images:
        raise SystemExit(f"profile_semantic: no frame read from {path}")
    return {**model_maps(images, demo=False), "contact": contact}


def model_maps(images: list[NDArray[np.uint8]], demo: bool = True) -> dict[str, list[Call]]:
    """The reference model's class maps and logits, and (with ``demo``) the demo model's own outputs, of
    640x480 BGR ``images``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(REPO / "models/reference/demo-parts-v1.onnx"))
    own = onnxruntime.InferenceSession(str(REPO / "models/demo-parts.onnx")) if demo else None
    model: list[Call] = []
    scores: list[Call] = []
    contact: list[Call] = []
    for bgr in images:
        planes = bgr[:, :, ::-1].transpose(2, 0, 1)[None]
        image = (planes / 255).astype(np.float32)
        logits = session.run(["logits"], {"image": image})[0][0]
        model.append((logits.argmax(0).astype(np.uint8), {}))
        scores.append((logits, {"logits": True}))
        if own is not None:
            classes, confidence, touching = (
                t.reshape(480, 640) for t in own.run(None, {"image": np.ascontiguousarray(planes)})
            )
            contact.append((classes, {"confidence": confidence, "touching": touching}))
    maps = {"model": model, "scores": scores}
    return maps if own is None else {**maps, "contact": contact}


def bench_arguments(doc: str, seeds: int, repeat: int) -> tuple[argparse.Namespace, ModuleType | None]:
    """The arguments of a bench of the split over the bench's maps (``--seeds``, ``--repeat``,
    ``--reference DIR``) and the reference package they name (None without); OpenCV on one thread, as the
    ``edgeseg`` command runs it, and the split budget's log note off (maps of noise say it every call)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=seeds, help="maps per set")
    ap.add_argument("--repeat", type=int, default=repeat, help="timed calls per map and way")
    ap.add_argument("--reference", type=Path, help="a copy of another version's edgeseg/semantic")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    logging.disable(logging.WARNING)
    return args, load_reference_module(args.reference) if args.reference else None


def load_reference(path: Path) -> Split:
    """``semantic_to_instances`` of a copy of the ``edgeseg.semantic`` package at ``path``."""
    split: Split = load_reference_module(path).semantic_to_instances
    assert split is not semantic_to_instances
    return split


def load_reference_module(path: Path) -> ModuleType:
    """A copy of the ``edgeseg.semantic`` package at ``path``.

    The copy imports its modules as ``edgeseg.semantic.*``, so it is loaded under that name, its modules
    are set aside, and this tree's are put back.
    """
    if not (path / "__init__.py").is_file():
        raise SystemExit(f"--reference {path}: no __init__.py (give .../edgeseg/semantic)")
    ours = {k: v for k, v in sys.modules.items() if k.startswith("edgeseg.semantic")}
    for k in ours:
        del sys.modules[k]
    spec = importlib.util.spec_from_file_location(
        "edgeseg.semantic", path / "__init__.py", submodule_search_locations=[str(path)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        for k in [k for k in sys.modules if k.startswith("edgeseg.semantic")]:
            del sys.modules[k]
        sys.modules.update(ours)
    return module


def differences(a: Instances, b: Instances) -> list[str]:
    """What differs between two results (empty: identical)."""
    if len(a) != len(b):
        return [f"{len(a)} vs {len(b)} instances"]
    out = []
    for name in ("class_id", "xyxy", "area", "mask_box", "obb"):
        if not np.array_equal(getattr(a, name), getattr(b, name)):
            out.append(name)
    if any(not np.array_equal(m, n) for m, n in zip(a.masks, b.masks, strict=True)):
        out.append("masks")
    if out and _listed(a) == _listed(b):
        return ["the order only"]
    if not out and not np.array_equal(a.score, b.score):  # same instances, scores rounded otherwise
        out.append(f"score (by {float(np.abs(a.score - b.score).max()):.1e} at most)")
    return out


def _listed(inst: Instances) -> list[tuple[object, ...]]:
    """Every instance of ``inst`` as plain values, sorted: the same for two results that differ in order."""
    rows = zip(
        inst.class_id.tolist(),
        inst.xyxy.tolist(),
        inst.area.tolist(),
        inst.mask_box.tolist(),
        inst.obb.tolist(),
        inst.score.tolist(),
        (m.tobytes() for m in inst.masks),
        strict=True,
    )
    return sorted((c, *xyxy, area, *box, *obb, score, mask) for c, xyxy, area, box, obb, score, mask in rows)


def timed(split: Split, call: Call, params: SemanticParams) -> tuple[float, Instances]:
    t0 = time.perf_counter()
    result = split(call[0], params, 0, **call[1])
    return (time.perf_counter() - t0) * 1e3, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="scene seeds 0..N-1")
    ap.add_argument("--frames", default="250", help="comma-separated frame indices")
    ap.add_argument("--repeat", type=int, default=9, help="timed calls per map and implementation")
    ap.add_argument("--reference", type=Path, help="a copy of edgeseg/semantic to compare with")
    ap.add_argument("--profile", action="store_true", help="print cProfile's top entries")
    ap.add_argument("--photos", action="store_true", help="the shared assets' photos instead of demo scenes")
    ap.add_argument("--video", type=Path, help="a clip's frames instead of demo scenes")
    ap.add_argument("--serial", action="store_true", help="OpenCV on one thread, as the edgeseg command runs")
    args = ap.parse_args()
    if args.serial:
        serial_opencv()
    params = find_card(str(REPO / "models/demo-parts.yaml")).semantic
    if args.video is not None:
        maps = video_maps(args.video)
    elif args.photos:
        maps = photo_maps()
    else:
        maps = demo_maps(list(range(args.seeds)), [int(f) for f in args.frames.split(",")])
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.repeat):
            for calls in maps.values():
                for cmap, extra in calls:
                    semantic_to_instances(cmap, params, 0, **extra)
        prof.disable()
        for key in ("cumulative", "tottime"):
            pstats.Stats(prof).sort_stats(key).print_stats(25)
        return
    reference = load_reference(args.reference) if args.reference else None
    figures: dict[str, dict[str, float | int]] = {}
    splits: dict[str, Split] = {"new": semantic_to_instances}
    if reference is not None:
        splits["reference"] = reference
    for name, calls in maps.items():
        new_ms: list[float] = []
        old_ms: list[float] = []
        diffs = 0
        for i, call in enumerate(calls):
            # untimed first: a map's first call pays what no later one does, and this tree's, first, paid it
            # alone (at --repeat 1, its whole figure)
            for split in splits.values():
                timed(split, call, params)
            times: dict[str, list[float]] = {k: [] for k in splits}
            for _ in range(args.repeat):  # alternating, call by call: the same load on both
                out = {}
                for k, split in splits.items():
                    t, out[k] = timed(split, call, params)
                    times[k].append(t)
                if reference is not None and (found := differences(out["new"], out["reference"])):
                    diffs += 1
                    print(f"  {name} map {i}: differs in {', '.join(found)}")
            new_ms.append(statistics.median(times["new"]))
            if reference is not None:
                old_ms.append(statistics.median(times["reference"]))
        line = f"{name:7s} {len(calls)} maps: new {statistics.median(new_ms):6.2f} ms"
        figures[name] = {"maps": len(calls), "new_ms": round(statistics.median(new_ms), 3)}
        if old_ms:
            ratio = statistics.median(o / n for o, n in zip(old_ms, new_ms, strict=True))
            line += f"  reference {statistics.median(old_ms):6.2f} ms  speed-up x{ratio:.2f}"
            line += f"  identical: {'yes' if not diffs else f'NO ({diffs} calls differ)'}"
            figures[name]["reference_ms"] = round(statistics.median(old_ms), 3)
            figures[name]["speedup"] = round(ratio, 3)
            figures[name]["calls_differing"] = diffs
        print(line)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
