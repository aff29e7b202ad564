#!/usr/bin/env python3
"""Soak: the product as a device runs it, for a long while, watched from outside.

Run: ``.venv/bin/python scripts/soak.py --minutes 10`` (needs ``mosquitto``). It runs ``edgeseg run`` in a
child process (the demo pipeline unless a pipeline YAML is given) publishing to its own Mosquitto on a free
127.0.0.1 port, with a real paho subscriber (QoS 1, a child process: ``scripts/bench_mqtt.py``'s) and JSON
lines written to a temporary folder; both are stopped and the folder removed at the end, also on errors.

Every ``--sample-s`` seconds it reads the run's resident memory (and of it the anonymous part: the heaps
and arenas, not the mapped libraries and model), open file descriptors and threads from ``/proc``. Printed
at the end:

- ``rss_mb_first`` (the first sample after ``--warm-s``), ``rss_mb_max``, ``rss_mb_last``, and
  ``rss_mb_per_hour``: the least-squares slope of the samples of the run's second half (a cache that fills
  up early does not count; a leak does); ``anon_mb_first``, ``anon_mb_max``, ``anon_mb_last`` the same for
  the anonymous part;
- ``threads_last_changed_s`` and ``rss_mb_per_hour_since``: where the run's thread count last changed (the
  pipeline's planner trying or keeping runs of inference side by side, whose tensors step the memory), the
  slope of the samples from ``--warm-s`` after it, if they span a quarter of the run or more;
- ``fds`` and ``threads``: their least and most over the samples after warm-up (a leak of either shows as a
  range);
- what arrived: the results the run says it finished (its summary), the JSON lines written (one a result,
  and the stream's final record; in every file of a rolling one, ``--set sinks.jsonl.max_bytes=...``), and
  the results the subscriber received: distinct sequence numbers, duplicates, and the gaps in ``0..n-1``;
- the run's exit status and summary.

The run is ``--minutes`` long at the source's pace (``--max-frames`` = minutes x 60 x ``--fps``). The
machine may be shared: the frame rate is reported, not judged. The last line is one JSON object; the soak
exits 1 after it when the run failed (exit status not 0) or a result it finished never arrived over MQTT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_mqtt import DEVICE, Broker, Subscriber  # scripts/ is on sys.path when this file is run as a script

REPO = Path(__file__).resolve().parents[1]


def sample(pid: int) -> tuple[float, float, int, int] | None:
    """Resident MB, its anonymous MB, open descriptors and threads of ``pid``; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    anon = re.search(r"RssAnon:\s+(\d+)", status)
    threads = re.search(r"Threads:\s+(\d+)", status)
    if rss is None or anon is None or threads is None:  # a zombie has no memory lines
        return None
    return int(rss.group(1)) / 1024, int(anon.group(1)) / 1024, fds, int(threads.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("pipeline", nargs="?", default=str(REPO / "pipelines/demo.yaml"), help="(default: demo)")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the run is (default 10)")
    ap.add_argument("--fps", type=float, default=30.0, help="the source's pace, for --max-frames (30)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--warm-s", type=float, default=60.0, help="samples before this are warm-up (60)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to edgeseg run")
    args = ap.parse_args()
    exe = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if exe is None:
        sys.exit("mosquitto not found (apt-get install mosquitto)")
    frames = max(1, round(args.minutes * 60 * args.fps))
    with tempfile.TemporaryDirectory(prefix="edgeseg-soak-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(exe, tmp / "broker")
        broker.start()
        subscriber = Subscriber(broker.port, tmp / "received.txt")
        try:
            if not subscriber.wait(lambda: bool(subscriber.subscribes), 10):
                sys.exit("the subscriber did not subscribe within 10 s")
            command = [
                sys.executable, "-m", "edgeseg", "run", args.pipeline, "--max-frames", str(frames),
                "--output", str(tmp / "results.jsonl"), "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                "--set", f"sinks.mqtt.device_id={DEVICE}", "--state-dir", str(tmp / "state"),
                *(a for kv in args.set for a in ("--set", kv)),
            ]  # fmt: skip
            print(" ".join(command), flush=True)
            # its output goes to a file, not a pipe read at the end: two hours of progress lines filled one,
            # and the run's main thread then waited on its next line
            samples: list[tuple[float, float, float, int, int]] = []
            with (tmp / "run.log").open("w") as log:
                run = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
                t0 = time.monotonic()
                while run.poll() is None:
                    # (a period in first: a sample at once read the child before it became edgeseg, a forked
                    # interpreter of 0.1 MB, 3 descriptors and 1 thread, as the run's first after warm-up)
                    time.sleep(args.sample_s)
                    got = sample(run.pid)
                    if got is not None:
                        samples.append((time.monotonic() - t0, *got))
                        t, rss, anon, fds, threads = samples[-1]
                        print(
                            f"{t:7.0f} s  rss {rss:6.1f} MB (anon {anon:6.1f})  fds {fds}  threads {threads}",
                            flush=True,
                        )
                status = run.wait()
            output = (tmp / "run.log").read_text()
            # what the broker still holds for the subscriber arrives before the count
            done = re.search(r"^done: (\d+) frames? processed", output, re.MULTILINE)
            finished = int(done.group(1)) if done else -1
            subscriber.wait(lambda: _received(subscriber) >= finished, 30)
        finally:
            subscriber.close()
            broker.stop()
        # (with sinks.jsonl.max_bytes the lines are spread over results.jsonl and its full files .1, .2, ...)
        lines = sum(sum(1 for _ in f.open()) for f in tmp.glob("results.jsonl*"))
        seqs = {s for got in subscriber.by_boot.values() for s in got}
    summary = output[output.find("done:") :] if "done:" in output else output[-3000:]
    print(summary.rstrip())
    warm = [s for s in samples if s[0] >= args.warm_s] or samples
    late = [s for s in warm if s[0] >= warm[-1][0] / 2] if warm else []
    slope = _per_hour(late)
    # the samples since the run's thread count last changed, after a warm-up of their own: the pipeline's
    # planner trying or keeping another plan (runs of inference side by side hold tensors of their own)
    # steps the memory, which the second half's slope reads as growth where the plan changed within it
    changed = max((i for i in range(1, len(warm)) if warm[i][4] != warm[i - 1][4]), default=0)
    steady = [s for s in warm if s[0] >= warm[changed][0] + args.warm_s] if changed else []
    steady_slope = _per_hour(steady) if steady and steady[-1][0] - steady[0][0] >= warm[-1][0] / 4 else None
    gaps = finished - len(seqs & set(range(max(finished, 0)))) if finished >= 0 else None
    figures = {
        "bench": "soak",
        "minutes": round(samples[-1][0] / 60, 1) if samples else 0,
        "exit_status": status,
        "frames_done": finished,
        "jsonl_lines": lines,
        "mqtt_results_received": len(seqs),
        "mqtt_duplicates": sum(subscriber.duplicates.values()),
        "mqtt_missing": gaps,
        "rss_mb_first": round(warm[0][1], 1) if warm else None,
        "rss_mb_max": round(max(s[1] for s in warm), 1) if warm else None,
        "rss_mb_last": round(warm[-1][1], 1) if warm else None,
        "rss_mb_median_second_half": round(statistics.median(s[1] for s in late), 1) if late else None,
        "rss_mb_per_hour": None if slope is None else round(slope, 2),
        "threads_last_changed_s": round(warm[changed][0]) if changed else None,
        "rss_mb_per_hour_since": None if steady_slope is None else round(steady_slope, 2),
        "anon_mb_first": round(warm[0][2], 1) if warm else None,
        "anon_mb_max": round(max(s[2] for s in warm), 1) if warm else None,
        "anon_mb_last": round(warm[-1][2], 1) if warm else None,
        "fds": [min(s[3] for s in warm), max(s[3] for s in warm)] if warm else None,
        "threads": [min(s[4] for s in warm), max(s[4] for s in warm)] if warm else None,
    }
    print(
        f"resident memory: {figures['rss_mb_first']} MB after warm-up, at most {figures['rss_mb_max']}, "
        f"{figures['rss_mb_last']} at the end; {figures['rss_mb_per_hour']} MB/hour over the second half; "
        f"anonymous {figures['anon_mb_first']}, at most {figures['anon_mb_max']}, {figures['anon_mb_last']}"
    )
    if changed:
        print(
            f"threads last changed at {figures['threads_last_changed_s']} s (the planner's plan): from "
            f"--warm-s after, {figures['rss_mb_per_hour_since']} MB/hour (None: under a quarter of the run)"
        )
    print(f"descriptors {figures['fds']}, threads {figures['threads']} (least, most after warm-up)")
    print(
        f"results: {finished} done, {lines} JSON lines, {len(seqs)} received over MQTT "
        f"({figures['mqtt_missing']} missing, {figures['mqtt_duplicates']} duplicates)"
    )
    print(json.dumps(figures))
    lost = [f"edgeseg run ended with exit status {status}"] if status else []
    lost += [f"{gaps} results it finished never arrived over MQTT"] if gaps else []
    if lost:
        sys.exit("soak: " + "; ".join(lost))


def _per_hour(samples: list[tuple[float, float, float, int, int]]) -> float | None:
    """The least-squares slope of the samples' resident MB, per hour (None: fewer than three)."""
    if len(samples) < 3:
        return None
    return float(np.polyfit([s[0] for s in samples], [s[1] for s in samples], 1)[0]) * 3600


def _received(subscriber: Subscriber) -> int:
    return sum(len(got) for got in subscriber.by_boot.values())


if __name__ == "__main__":
    main()
