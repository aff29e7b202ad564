"""What publishing a result costs before any sink writes it: its JSON record (``edgeseg.sinks.record``, made
once per result for every sink that publishes it: the masks' COCO RLE strings, the instances' dict, the JSON
text), this tree against another checkout, on the same results.

The results: the demo pipeline's on pre-rendered synthetic conveyor frames (its model, as
``scripts/bench_pipeline.py`` replays them), and the instances ``semantic_to_instances`` makes of the scene
sets of ``tests/scenes.py`` (scenes of objects, and the hostile maps: noise, blobs, specks, one ragged
component, whose 300 instances' masks are the worst a result holds), made once by this tree and handed to
both. Each tree runs in a child process of its own (``PYTHONPATH``), ``--rounds`` of each, alternated; a child
times, per set, after one pass untimed, ``rle.encode`` of every result's masks and the whole record of every
result (a fresh copy of its instances, so nothing is cached), and the two trees' records must be the same text
or the script stops.
Reported: the median ms a result of each, ``new / ref`` for both. The last line is JSON.

    mkdir -p /tmp/ref && git archive HEAD~1 | tar -x -C /tmp/ref
    .venv/bin/python scripts/bench_record.py --reference /tmp/ref
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SETS = ("touching_discs", "multi_class", "hostile_noise", "hostile_blobs", "hostile_tiny", "hostile_ragged")
NAMES = ("background", "nut", "washer", "bolt")


def demo_results(frames: int) -> list[Any]:
    from bench_pipeline import conveyor_frames

    from edgeseg.config import load_config
    from edgeseg.frame import Frame
    from edgeseg.pipeline import ModelStages

    stages = ModelStages.from_config(load_config(None, []))
    out = []
    for i, image in enumerate(conveyor_frames(frames)):
        frame = Frame(i, image, time.monotonic_ns(), time.time())
        prepared = stages.preprocess(frame)
        out.append(stages.decode(frame, prepared, stages.infer(prepared)))
    stages.close()
    return out


def scene_results(name: str, maps: int) -> list[Any]:
    import scenes

    from edgeseg.semantic import SemanticParams, semantic_to_instances

    params = SemanticParams(size_threshold=20, min_score=0.0, rods=False, max_instances=300)
    make = scenes.SCENE_SETS.get(name) or scenes.HOSTILE_SETS[name]
    return [semantic_to_instances(make(seed).class_map, params) for seed in range(maps)]


def child(data: Path, repeat: int) -> dict[str, dict[str, Any]]:
    """This process's edgeseg (``PYTHONPATH``) on the pickled sets: per set, median ms a result of the RLE
    strings and of the whole record, and the records' digest."""
    from edgeseg import rle
    from edgeseg.frame import Frame, Result
    from edgeseg.sinks.record import encoded_record

    def fresh(results: list[Any]) -> list[Any]:
        return [dataclasses.replace(inst) for inst in results]  # (no RLE strings cached)

    def records(frames: list[Any], results: list[Any]) -> list[str]:
        return [
            encoded_record(Result(f, inst), "rle", NAMES) for f, inst in zip(frames, results, strict=True)
        ]

    def rle_strings(results: list[Any]) -> None:
        for inst in results:
            origins = [(x0, y0) for x0, y0 in inst.mask_box[:, :2].tolist()]
            rle.encode(inst.masks, origins, inst.image_shape)

    sets: dict[str, list[Any]] = pickle.loads(data.read_bytes())
    out = {}
    for name, results in sets.items():
        image = np.zeros((*results[0].image_shape, 3), np.uint8)
        frames = [Frame(i, image, 0, 1.7e9 + i) for i in range(len(results))]
        # one pass untimed: the first over a set pays what no later one does (the pages of its masks and of
        # what they are encoded into, numpy's first calls), which with --repeat 1 was the whole figure
        rle_strings(fresh(results))
        texts = records(frames, fresh(results))
        rle_ms, record_ms = [], []
        for _ in range(repeat):
            instances = fresh(results)
            t0 = time.perf_counter()
            rle_strings(instances)
            rle_ms.append((time.perf_counter() - t0) / len(instances) * 1e3)
            instances = fresh(results)
            t0 = time.perf_counter()
            records(frames, instances)
            record_ms.append((time.perf_counter() - t0) / len(instances) * 1e3)
        out[name] = {
            "rle_ms": statistics.median(rle_ms),
            "record_ms": statistics.median(record_ms),
            "kb": sum(map(len, texts)) / len(texts) / 1e3,
            "digest": hashlib.sha256("".join(texts).encode()).hexdigest(),
        }
    return out


def run_child(tree: Path, data: Path, repeat: int) -> dict[str, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, __file__, "--child", str(data), "--repeat", str(repeat)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=tree)
    found: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, help="another version's checkout")
    ap.add_argument("--rounds", type=int, default=4, help="child runs of each tree (default 4)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timed passes over the results in a child, after one untimed (default 5)",
    )
    ap.add_argument("--frames", type=int, default=30, help="demo frames (default 30)")
    ap.add_argument("--maps", type=int, default=3, help="maps per scene set (default 3)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        import edgeseg

        if Path(edgeseg.__file__).resolve().parents[1] != Path.cwd().resolve():
            sys.exit(f"bench_record: the child imported {edgeseg.__file__}, not the tree at {Path.cwd()}")
        print(json.dumps(child(args.child, args.repeat)))
        return
    if args.reference is None:
        ap.error("--reference is required")
    if not (args.reference / "edgeseg" / "__init__.py").is_file():
        ap.error(f"--reference {args.reference}: no edgeseg package there")
    logging_quiet()
    sets = {"demo": demo_results(args.frames)} | {n: scene_results(n, args.maps) for n in SETS}
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"ref": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "results.pickle"
        data.write_bytes(pickle.dumps(sets))
        for r in range(args.rounds):
            order = ("ref", "new") if r % 2 else ("new", "ref")
            for kind in order:
                tree = REPO if kind == "new" else args.reference.resolve()
                runs[kind].append(run_child(tree, data, args.repeat))
    figures: dict[str, Any] = {}
    print(f"{'set':16s} {'KB':>6s} |  rle: ref     new new/ref | record: ref     new new/ref")
    for name in sets:
        if runs["new"][0][name]["digest"] != runs["ref"][0][name]["digest"]:
            sys.exit(f"{name}: the records differ from the reference's")
        med = {
            (kind, what): statistics.median(run[name][what] for run in runs[kind])
            for kind in runs
            for what in ("rle_ms", "record_ms")
        }
        rle_ratio = med["new", "rle_ms"] / med["ref", "rle_ms"]
        record_ratio = med["new", "record_ms"] / med["ref", "record_ms"]
        kb = runs["new"][0][name]["kb"]
        print(f"{name:16s} {kb:6.1f} | {med['ref', 'rle_ms']:8.3f} {med['new', 'rle_ms']:7.3f}", end="")
        print(f" {rle_ratio:7.2f} | {med['ref', 'record_ms']:10.3f} {med['new', 'record_ms']:7.3f}", end="")
        print(f" {record_ratio:7.2f}")
        figures[name] = {"kb": round(kb, 1)} | {f"{k}_{w}": round(v, 3) for (k, w), v in med.items()}
        figures[name] |= {
            "rle_new_over_ref": round(rle_ratio, 3),
            "record_new_over_ref": round(record_ratio, 3),
        }
    print(json.dumps({"bench": "record", "reference": str(args.reference), "sets": figures}))


def logging_quiet() -> None:
    """The split's budget warnings on the hostile maps are expected here."""
    import logging

    logging.getLogger("edgeseg").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
