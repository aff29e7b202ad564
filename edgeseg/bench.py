"""``edgeseg bench``: stage-by-stage timing of one pipeline, as a table and a PNG plot drawn with OpenCV."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edgeseg.annotate import annotate
from edgeseg.errors import InputError, SourceError
from edgeseg.frame import Result, StageTimes
from edgeseg.sinks.base import check_output_path
from edgeseg.sinks.record import result_record

BENCH_SOURCE_TIMEOUT_S = 10.0  # how long bench waits for a live source that does not deliver
STAGES = ("read", "preprocess", "infer", "decode", "annotate", "serialize")
COLORS = ((160, 160, 160), (200, 130, 40), (40, 40, 220), (40, 170, 60), (0, 160, 230), (170, 60, 170))  # BGR


def time_stages(args: argparse.Namespace) -> tuple[NDArray[np.float64], str]:
    """Per-frame milliseconds ``(N, len(STAGES))`` of the configured pipeline on one thread, and its title."""
    from edgeseg.cliconfig import load_cli_config
    from edgeseg.pipeline import ModelStages
    from edgeseg.sources import open_source

    if args.frames < 1 or args.warmup < 0:
        raise InputError(f"--frames must be >= 1 and --warmup >= 0 (got {args.frames}, {args.warmup})")
    config = load_cli_config(args)
    if config.source.reconnect_timeout_s is None:
        # a benchmark is interactive: a camera that does not come back ends it instead of waiting forever
        config = replace(config, source=replace(config.source, reconnect_timeout_s=BENCH_SOURCE_TIMEOUT_S))
    stages = ModelStages.from_config(config)
    names = tuple(stages.model.card.classes)
    rows: list[list[float]] = []
    try:
        source = open_source(config.source)
    except BaseException:
        stages.model.close()
        raise
    try:
        for i in range(args.warmup + args.frames):
            t0 = time.perf_counter_ns()
            frame = source.read()
            if frame is None:
                break
            t1 = time.perf_counter_ns()
            prepared = stages.preprocess(frame)
            t2 = time.perf_counter_ns()
            outputs = stages.infer(prepared)
            t3 = time.perf_counter_ns()
            instances = stages.decode(frame, prepared, outputs)
            t4 = time.perf_counter_ns()
            annotate(frame.image, instances, names)
            t5 = time.perf_counter_ns()
            json.dumps(result_record(Result(frame, instances, StageTimes()), i, "rle", names))
            t6 = time.perf_counter_ns()
            if i >= args.warmup:
                rows.append(
                    [
                        (b - a) / 1e6
                        for a, b in zip((t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True)
                    ]
                )
    finally:
        source.close()
        stages.model.close()
    if not rows:
        raise SourceError(
            f"source {config.source.uri} ended before the {args.warmup} warm-up frames were read"
        )
    return np.asarray(rows), f"{config.name}: {stages.model.card.name}"


def table(ms: NDArray[np.float64]) -> str:
    """The timing table: median, p90, p99 and share of the total per stage."""
    med = np.median(ms, axis=0)
    total = np.sum(ms, axis=1)
    lines = [f"{'stage':<12}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}{'share':>8}"]
    for k, name in enumerate(STAGES):
        p90, p99 = np.percentile(ms[:, k], [90, 99])
        lines.append(f"{name:<12}{med[k]:>11.2f}{p90:>9.2f}{p99:>9.2f}{med[k] / med.sum():>8.0%}")
    t50, t90, t99 = np.percentile(total, [50, 90, 99])
    lines.append(f"{'total':<12}{t50:>11.2f}{t90:>9.2f}{t99:>9.2f}")
    slowest = STAGES[int(np.argmax(med))]
    lines.append(
        f"{len(ms)} frames; one thread: {1000 / t50:.1f} fps; a threaded pipeline approaches "
        f"{1000 / med.max():.1f} fps (its slowest stage, {slowest})"
    )
    return "\n".join(lines)


def plot(ms: NDArray[np.float64], title: str, names: Sequence[str] = STAGES) -> NDArray[np.uint8]:
    """A BGR image: per-frame stacked bars of the stage times (latency breakdown), with axes and a legend."""
    w, h = 1000, 520
    left, right, top, bottom = 70, 180, 40, 50
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    n = len(ms)
    ymax = float(np.percentile(ms.sum(axis=1), 99)) * 1.1 or 1.0
    pw, ph = w - left - right, h - top - bottom

    def y(v: float) -> int:
        return top + ph - round(min(v, ymax) / ymax * ph)

    for k in range(6):  # grid and y labels
        v = ymax * k / 5
        cv2.line(img, (left, y(v)), (left + pw, y(v)), (225, 225, 225), 1)
        cv2.putText(img, f"{v:.0f}", (8, y(v) + 4), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    bar = pw / n
    for i in range(n):
        x0, x1 = left + round(i * bar), max(left + round(i * bar) + 1, left + round((i + 1) * bar) - 1)
        acc = 0.0
        for k in range(ms.shape[1]):
            top_v = acc + ms[i, k]
            cv2.rectangle(img, (x0, y(top_v)), (x1 - 1, y(acc)), COLORS[k % len(COLORS)], -1)
            acc = top_v
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(img, title, (left, 26), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "ms", (8, top - 10), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(
        img, f"frame (1..{n})", (left + pw // 2 - 40, h - 15), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA
    )
    med = np.median(ms, axis=0)
    for k, name in enumerate(names):
        ly = top + 10 + 26 * k
        cv2.rectangle(img, (left + pw + 15, ly), (left + pw + 33, ly + 16), COLORS[k % len(COLORS)], -1)
        cv2.putText(
            img, f"{name} {med[k]:.1f}", (left + pw + 40, ly + 13), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return img


def command(args: argparse.Namespace) -> int:
    out = Path(args.plot)
    if out.suffix.lower() != ".png":
        raise InputError(f"--plot {args.plot}: the plot is a PNG image, use a .png file name")
    check_output_path(out, "--plot")  # before minutes of timing, not after
    ms, title = time_stages(args)
    print(table(ms))
    try:
        written = cv2.imwrite(str(out), plot(ms, title))
    except cv2.error as exc:
        raise InputError(f"--plot {out}: {exc.err or exc}") from None
    if not written:
        raise InputError(f"--plot {out}: cannot write the file")
    print(f"plot: {out}")
    return 0
