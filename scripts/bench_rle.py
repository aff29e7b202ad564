"""What encoding a result's masks as COCO RLE strings costs (``edgeseg.rle.encode``, once per result for every
sink that publishes it), this tree against another version's ``edgeseg/rle.py``, on the same masks.

The masks: the demo pipeline's results on pre-rendered synthetic conveyor frames (its model, as
``scripts/bench_pipeline.py`` replays them), and the instances ``semantic_to_instances`` makes of the scene
sets of ``tests/scenes.py`` (scenes of objects, and the hostile maps: noise, blobs, specks, one ragged
component, whose 300 instances' masks are the worst a result holds). Per set, the two are timed in turn,
``--rounds`` times (the order alternated), each round encoding every result of the set once; the strings must
be the same, or the script stops. Reported: the median ms a result of each, and ``new / ref``.
The last line is JSON.

    mkdir -p /tmp/ref && git archive HEAD~1 | tar -x -C /tmp/ref
    .venv/bin/python scripts/bench_rle.py --reference /tmp/ref
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import scenes  # noqa: E402

from edgeseg import rle  # noqa: E402
from edgeseg.instances import Instances  # noqa: E402
from edgeseg.semantic import SemanticParams, semantic_to_instances  # noqa: E402

SETS = ("touching_discs", "multi_class", "hostile_noise", "hostile_blobs", "hostile_tiny", "hostile_ragged")
Args = tuple[list[NDArray[np.bool_]], list[tuple[int, int]], tuple[int, int]]


def encode_args(inst: Instances) -> Args:
    """What ``Instances`` hands ``rle.encode`` for its masks."""
    origins = [(x0, y0) for x0, y0 in inst.mask_box[:, :2].tolist()]
    return list(inst.masks), origins, inst.image_shape


def demo_results(frames: int) -> list[Args]:
    from edgeseg.config import load_config
    from edgeseg.frame import Frame
    from edgeseg.pipeline import ModelStages
    from edgeseg.synthetic import PartsScene

    stages = ModelStages.from_config(load_config(None, []))
    out = []
    for i in range(frames):
        frame = Frame(i, PartsScene(640, 480, seed=1).frame(i).image, time.monotonic_ns(), time.time())
        prepared = stages.preprocess(frame)
        out.append(encode_args(stages.decode(frame, prepared, stages.infer(prepared))))
    stages.close()
    return out


def scene_results(name: str, maps: int) -> list[Args]:
    params = SemanticParams(size_threshold=20, min_score=0.0, rods=False, max_instances=300)
    make = scenes.SCENE_SETS.get(name) or scenes.HOSTILE_SETS[name]
    return [encode_args(semantic_to_instances(make(seed).class_map, params)) for seed in range(maps)]


def reference_encode(path: Path) -> Callable[..., list[str]]:
    spec = importlib.util.spec_from_file_location("reference_rle", path / "edgeseg" / "rle.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    encode: Callable[..., list[str]] = module.encode
    return encode


def timed(encode: Callable[..., list[str]], results: list[Args]) -> float:
    """ms a result, over one pass of ``results``."""
    t0 = time.perf_counter()
    for args in results:
        encode(*args)
    return (time.perf_counter() - t0) / len(results) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="another version's checkout")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--frames", type=int, default=30, help="demo frames (default 30)")
    ap.add_argument("--maps", type=int, default=3, help="maps per scene set (default 3)")
    args = ap.parse_args()
    ref = reference_encode(args.reference)
    sets = {"demo": demo_results(args.frames)} | {n: scene_results(n, args.maps) for n in SETS}
    figures: dict[str, Any] = {}
    print(f"{'set':16s} {'masks':>6s} {'KB':>6s} {'ref ms':>8s} {'new ms':>8s} {'new/ref':>8s}")
    for name, results in sets.items():
        for a in results:
            if rle.encode(*a) != ref(*a):
                sys.exit(f"{name}: the strings differ from the reference's")
        times: dict[str, list[float]] = {"ref": [], "new": []}
        for r in range(args.rounds):
            order = (("ref", ref), ("new", rle.encode)) if r % 2 else (("new", rle.encode), ("ref", ref))
            for kind, encode in order:
                times[kind].append(timed(encode, results))
        ms = {k: statistics.median(v) for k, v in times.items()}
        masks = statistics.mean(len(a[0]) for a in results)
        kb = statistics.mean(sum(map(len, rle.encode(*a))) for a in results) / 1e3
        ratio = ms["new"] / ms["ref"]
        print(f"{name:16s} {masks:6.0f} {kb:6.1f} {ms['ref']:8.3f} {ms['new']:8.3f} {ratio:8.2f}")
        figures[name] = {"masks": round(masks, 1), "kb": round(kb, 1), "ref_ms": round(ms["ref"], 3)}
        figures[name] |= {"new_ms": round(ms["new"], 3), "new_over_ref": round(ratio, 3)}
    print(json.dumps({"bench": "rle", "reference": str(args.reference), "sets": figures}))


if __name__ == "__main__":
    main()
