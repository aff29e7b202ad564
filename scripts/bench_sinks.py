#!/usr/bin/env python3
"""What publishing a result costs a device: the CPU a result of the sinks a device runs (JSON lines, and MQTT
to a broker with its publisher thread; with ``--video``, the annotated video as well), this tree against
another checkout, in alternated child processes.

Each child (``--rounds`` of each, alternated) makes ``--results`` results of the demo pipeline (its own
stages, on pre-rendered synthetic frames, as ``scripts/bench_pipeline.py`` replays them), then hands each
result to every sink at ``--rate`` results a second, each sink on a thread of its own as the pipeline runs
them (the MQTT sink taking the results that come within its ``linger_s`` in one batch), the MQTT sink
publishing to a Mosquitto on loopback that this script starts, and waits until the broker has acknowledged
every result. Measured per result: each sink thread's CPU (``thread_time``) and the
MQTT publisher thread's (its ``/proc`` schedstat, in nanoseconds). The results are made before the
sinks start, so nothing else runs meanwhile; the broker's own CPU is not counted. The sink threads share the
cores, so each one's figure also moves with the others' work: against the same reference, the unchanged
JSON lines and MQTT threads read 0.97-1.0 of its figures alone and 0.75-0.88 beside a video sink whose own
CPU had fallen to 0.77. The last line is one JSON object: the medians over rounds, ``cpu_ratio``, this
tree's total over the reference's, and ``cpu_ratio_by_thread``, each thread's (medians over the alternated
pairs).

    mkdir -p /tmp/before && git archive HEAD~1 | tar -x -C /tmp/before
    .venv/bin/python scripts/bench_sinks.py --reference /tmp/before

A child runs this tree's scripts on the other checkout's ``edgeseg``, which must build the sinks as
``bench_pipeline.device_sinks`` does (``JsonlSink``, ``MqttSink`` and their settings as they are now) and
have the pipeline's sink queue (``StageQueue.get_batch``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
THREADS = ("jsonl", "mqtt", "publisher")
VIDEO = "video"  # with --video: the annotated video sink's thread (drawing each result and encoding it)


def schedstat_ms(native_id: int) -> float:
    """CPU milliseconds a thread of this process has run (the kernel's count, in nanoseconds)."""
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e6


def child(port: int, n: int, rate: float, workdir: Path, video: bool) -> dict[str, float]:
    """One round in this process, with the ``edgeseg`` on its path: CPU ms a result by thread."""
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_pipeline import Collector, ReplaySource, conveyor_frames, device_sinks

    from edgeseg.config import load_config
    from edgeseg.malloc import tune_malloc
    from edgeseg.pipeline import LOSSLESS_QUEUE_SIZE, ModelStages, Pipeline, StageQueue
    from edgeseg.sinks import LosslessSink
    from edgeseg.sinks.base import SinkContext
    from edgeseg.sinks.video import VideoSink
    from edgeseg.stats import StatsRecorder

    tune_malloc()
    stages = ModelStages.from_config(load_config(None, []))
    images = conveyor_frames()
    keep = Collector()
    Pipeline(ReplaySource(images, n), stages, {"keep": keep}).run()
    stages.close()
    names = tuple(stages.model.card.classes)
    sinks = device_sinks(names, workdir, "child", port)
    if video:
        ctx = SinkContext(class_names=names, state_dir=workdir / "state-video")
        sinks[VIDEO] = VideoSink(workdir / "r.mp4", 25, ctx=ctx)
    mqtt = sinks["mqtt"]
    publisher = next(t for t in threading.enumerate() if t.name == "edgeseg-mqtt")
    assert publisher.native_id is not None
    cpu: dict[str, float] = {}

    def feed(name: str, q: StageQueue[Any]) -> None:
        # as the pipeline's sink loop (Pipeline._sink_loop) feeds it: a lossless sink (MQTT) takes the results
        # that came within its linger_s in one batch, one spool transaction for them all
        sink = sinks[name]
        send_batch = sink.send_batch if isinstance(sink, LosslessSink) else None
        limit = 1 if send_batch is None else LOSSLESS_QUEUE_SIZE
        linger_s = 0.0 if send_batch is None else float(getattr(sink, "linger_s", 0.0))
        c0 = time.thread_time()
        while batch := q.get_batch(limit, linger_s):
            if send_batch is not None:
                send_batch(batch)
            else:
                sink.send(batch[0])
        cpu[name] = (time.thread_time() - c0) * 1e3

    stats = StatsRecorder()
    queues = {name: StageQueue[Any](name, len(keep.results), False, stats) for name in sinks}
    threads = [threading.Thread(target=feed, args=(name, q)) for name, q in queues.items()]
    p0 = schedstat_ms(publisher.native_id)
    for t in threads:
        t.start()
    start = time.monotonic()
    for k, result in enumerate(keep.results):
        time.sleep(max(0.0, start + k / rate - time.monotonic()))
        for q in queues.values():
            q.put(result)
    for q in queues.values():
        q.close()
    for t in threads:
        t.join()
    spool = mqtt.spool  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while spool.stats().depth and time.monotonic() < deadline:
        time.sleep(0.02)
    cpu["publisher"] = schedstat_ms(publisher.native_id) - p0
    left = spool.stats().depth
    for sink in sinks.values():
        sink.close()
    if left:
        raise SystemExit(f"{left} results were still in the spool after 30 s")
    return {name: ms / len(keep.results) for name, ms in cpu.items()}


def run_child(tree: Path, port: int, n: int, rate: float, workdir: Path, video: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, __file__, "--child", str(port), "--results", str(n), "--rate", str(rate)]
    args += ["--video"] if video else []
    done = subprocess.run(
        [*args, "--workdir", str(workdir)], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"child in {tree} failed:\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--reference", type=Path, help="a checkout with an edgeseg package")
    ap.add_argument("--results", type=int, default=300, help="results a round (default 300)")
    ap.add_argument("--rounds", type=int, default=4, help="alternated rounds of each (default 4)")
    ap.add_argument("--rate", type=float, default=60.0, help="results a second (default 60)")
    ap.add_argument("--video", action="store_true", help="the annotated video sink as well")
    ap.add_argument("--child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.results, args.rate, args.workdir, args.video)))
        return
    if args.reference is None or not (args.reference / "edgeseg" / "__init__.py").is_file():
        ap.error("--reference must be a checkout with an edgeseg package")
    if args.results < 50 or args.rounds < 1 or args.rate <= 0:
        ap.error("--results must be >= 50, --rounds >= 1 and --rate > 0")
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_pipeline import mosquitto

    trees = {"this": REPO, "reference": args.reference.resolve()}
    threads = (*THREADS, VIDEO) if args.video else THREADS
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        broker = stack.enter_context(mosquitto(Path(tmp) / "broker"))
        for r in range(args.rounds):
            for kind in ("reference", "this") if r % 2 == 0 else ("this", "reference"):
                workdir = Path(tmp) / f"{kind}-{r}"
                workdir.mkdir()
                got = run_child(trees[kind], broker.port, args.results, args.rate, workdir, args.video)
                rounds[kind].append(got)
                each = ", ".join(f"{k} {got[k]:.3f}" for k in threads)
                print(f"{kind:9s} CPU ms a result: {each}; total {sum(got.values()):.3f}", flush=True)
    medians = {
        kind: {k: round(statistics.median(g[k] for g in got), 3) for k in threads}
        for kind, got in rounds.items()
    }
    totals = {kind: [sum(g.values()) for g in got] for kind, got in rounds.items()}
    ratio = statistics.median(a / b for a, b in zip(totals["this"], totals["reference"], strict=True))
    pairs = list(zip(rounds["this"], rounds["reference"], strict=True))
    by_thread = {k: round(statistics.median(a[k] / b[k] for a, b in pairs), 3) for k in threads}
    for kind in trees:
        each = ", ".join(f"{k} {v:.3f}" for k, v in medians[kind].items())
        print(f"{kind:9s} median CPU ms a result: {each}; total {statistics.median(totals[kind]):.3f}")
    each = ", ".join(f"{k} {v:.3f}" for k, v in by_thread.items())
    print(f"this tree over the reference: {ratio:.3f}; {each} (medians over {args.rounds} alternated pairs)")
    print(
        json.dumps(
            {
                "bench": "sinks",
                "reference": str(args.reference),
                "results": args.results,
                "rate": args.rate,
                "video": args.video,
                "cpu_ms_per_result": medians["this"],
                "cpu_ms_per_result_reference": medians["reference"],
                "cpu_ms_total": round(statistics.median(totals["this"]), 3),
                "cpu_ms_total_reference": round(statistics.median(totals["reference"]), 3),
                "cpu_ratio": round(ratio, 3),
                "cpu_ratio_by_thread": by_thread,
            }
        )
    )


if __name__ == "__main__":
    main()
