#!/usr/bin/env python3
"""The MQTT sink's linger: the device pipeline with the sink taking the results that come within
``sinks.mqtt.linger_s`` (its default) of the first waiting one in one batch (one spool transaction, one wake
of the publisher), against taking each as it comes (a linger of 0), alternated in one process.

The demo pipeline as ``scripts/bench_pipeline.py`` runs it at its default settings (pre-rendered frames,
JSON lines and MQTT to a Mosquitto started on loopback), ``--frames`` a run; the first run lets the thread
planner decide and the pairs run on the plan it kept (``scripts/bench_pipeline.alternated_device_runs``).
Per run: its rate, its CPU a frame (every thread of the process) and the cores it kept busy. The last line is
one JSON object: the medians (without the linger under ``*_reference``), and ``fps_ratio`` and
``cpu_ratio``, the linger's over none's, medians over the pairs. What the linger costs the results' way to
the broker is ``scripts/bench_mqtt.py``'s ``publish_ms``.

    .venv/bin/python scripts/bench_linger.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_pipeline import alternated_device_runs, paired_figures  # noqa: E402

from edgeseg.sinks.mqtt import MqttSinkConfig  # noqa: E402
from edgeseg.sinks.mqtt_sink import MqttSink  # noqa: E402

LINGER_S = MqttSinkConfig().linger_s


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--frames", type=int, default=600, help="frames a run (default 600)")
    ap.add_argument("--pairs", type=int, default=10, help="alternated pairs (default 10)")
    args = ap.parse_args()
    if args.frames < 50 or args.pairs < 1:
        ap.error("--frames must be >= 50 and --pairs >= 1")

    made = MqttSink.__init__

    def linger(seconds: float) -> None:
        def init(sink: MqttSink, *args: Any, **kwargs: Any) -> None:
            made(sink, *args, **kwargs)
            sink.linger_s = seconds  # the sinks of the next run (bench_pipeline.device_sinks makes them)

        MqttSink.__init__ = init  # type: ignore[method-assign]

    runs = alternated_device_runs(
        {"linger": lambda: linger(LINGER_S), "none": lambda: linger(0.0)}, args.frames, args.pairs
    )
    figures = {"bench": "linger", "linger_s": LINGER_S, **paired_figures(runs)}
    print(
        f"linger {LINGER_S} s: {figures['fps']:.1f} fps against {figures['fps_reference']:.1f} without "
        f"(pairs: median {figures['fps_ratio']:.3f}); CPU a frame {figures['cpu_ms_per_frame']:.2f} ms "
        f"against {figures['cpu_ms_per_frame_reference']:.2f} (pairs: median {figures['cpu_ratio']:.3f})"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
