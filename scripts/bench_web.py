#!/usr/bin/env python3
"""Web page benchmark: the pipeline's frame rate with nobody watching vs three viewers of the live page.

Run: ``.venv/bin/python scripts/bench_web.py`` (about 2 minutes with the defaults on a 2-core machine).
Options: ``--window S`` (seconds measured per block, default 8), ``--repeat N`` (rounds, default 3),
``--viewers N`` (default 3), ``--stream-fps F`` (``sinks.web.stream_fps``, default 5: the sink's default),
``--no-browser`` (HTTP stream clients only). Nothing is asserted: the ratios
are printed with the issue's target (>= 0.95) next to them and never fail the run. Everything started
(pipelines, browsers, client processes) is stopped at the end, also on errors or Ctrl-C.

The pipeline is the demo one (``pipelines/demo.yaml``, the demo model) with the source
``synthetic:parts?seed=3``: not paced, so it runs as fast as it can (every frame processed) and any cost the
viewers put on it shows as a lower frame rate. The web sink is on (``sinks.web.listen`` on a free loopback
port, default ``stream_fps`` 5, quality 80). Conditions, alternated in blocks (idle, browsers, http, then
http, browsers, idle, ...) so drift hits all alike; each block starts a fresh pipeline, lets it run
``WARMUP_S``, connects the viewers and waits until each has received frames, then counts the results that
reach a counting sink over the window:

- ``idle``: nobody watches (the sink encodes nothing);
- ``browsers``: ``--viewers`` headless Chromium instances (Debian's ``chromium`` driven by Selenium through
  ``chromedriver``) show the page: the MJPEG ``<img>`` and the figures polled every second. Skipped, saying
  so, when Chromium, its driver or Selenium is missing;
- ``http``: ``--viewers`` plain HTTP clients (separate Python processes) read ``/stream`` as fast as it comes
  and throw it away: the sink's own cost (one encoding per frame, shared, and the socket writes) without a
  browser rendering anything.

The browsers and clients run on this machine, so they also take CPU the pipeline would have had; each block
prints how many cores the other processes (the viewers among them) kept busy (``/proc/stat`` minus this
process), the median time of the sink's encodings (``ms/encode``: drawing, scaling and JPEG of one frame
for the viewers) and its median time per result (``ms/result``, the ``sink:web`` stage: at ``stream_fps`` 5
most results encode nothing and cost next to nothing, so this is not the encoding's cost). On a device, the
viewers are somewhere else. The ratio is the condition's median FPS over the idle median (the median of the
per-round ratios is printed too).

The last line of the output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_control import CountSink  # scripts/ is on sys.path when run as a script
from bench_mqtt import busy_cpu_s, median, own_cpu_s, r3

from edgeseg.config import load_config
from edgeseg.frame import Result
from edgeseg.pipeline import Pipeline
from edgeseg.sinks.webserver import WebSink

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from browser import headless_chromium  # noqa: E402  (the browser the web page's tests drive)

PIPELINE = REPO / "pipelines" / "demo.yaml"
SOURCE = "source.uri=synthetic:parts?seed=3"
TARGET_RATIO = 0.95
WARMUP_S = 1.0
CONNECT_TIMEOUT_S = 30.0
POLL_S = 0.05
LABELS = {"idle": "0 viewers", "browsers": "headless Chromium", "http": "HTTP stream clients"}
HTTP_CLIENT = (
    "import sys, urllib.request\nr = urllib.request.urlopen(sys.argv[1])\nwhile r.read1(1 << 16):\n    pass\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# viewers ------------------------------------------------------------------------------------------------


class Browsers:
    """``n`` headless Chromium instances, started once; each block points them at its page."""

    def __init__(self, n: int) -> None:
        chrome = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        assert chrome is not None
        assert driver is not None
        self.drivers: list[Any] = []
        self._browsers = contextlib.ExitStack()
        try:
            for _ in range(n):
                self.drivers.append(self._browsers.enter_context(headless_chromium(chrome, driver)))
        except BaseException:
            self.close()
            raise

    def watch(self, url: str) -> None:
        for d in self.drivers:
            d.get(url)

    def leave(self) -> None:
        for d in self.drivers:
            d.get("about:blank")

    def close(self) -> None:
        self.drivers.clear()
        try:
            self._browsers.close()
        except Exception as exc:
            print(f"  note: a browser did not quit: {exc}", flush=True)


class HttpClients:
    """``n`` processes reading ``/stream`` as fast as it comes."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def watch(self, url: str) -> None:
        self.procs = [
            subprocess.Popen([sys.executable, "-c", HTTP_CLIENT, url + "stream"], stderr=subprocess.DEVNULL)
            for _ in range(self.n)
        ]

    def leave(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def close(self) -> None:
        self.leave()


# blocks -------------------------------------------------------------------------------------------------


@dataclass
class Block:
    condition: str
    fps: float
    others_cores: float
    viewers: int
    window_s: float  # the window measured
    encoded: int  # frames the sink encoded during the window
    sent: int  # frames written to viewers during the window, all together
    encode_ms: float  # median time of the web sink's sends that encoded a frame (nan: none did)
    sink_ms: float  # median time of the web sink per result: mostly sends over stream_fps, encoding nothing


class EncodeTimes:
    """The times of the web sink's sends that encoded a frame (the others return at once: over
    ``stream_fps``, or nobody watching), each with when it ended."""

    def __init__(self, web: WebSink) -> None:
        self.times: list[tuple[float, float]] = []  # (end, ms)
        self._web = web
        self._send = web.send
        web.send = self.send  # type: ignore[method-assign]  # (the pipeline looks it up at every result)

    def send(self, result: Result) -> None:
        encoded = self._web.frames_encoded
        t0 = time.monotonic()
        self._send(result)
        t1 = time.monotonic()
        if self._web.frames_encoded != encoded:
            self.times.append((t1, (t1 - t0) * 1000))

    def median_between(self, t0: float, t1: float) -> float:
        return median([m for end, m in self.times if t0 <= end <= t1])  # (nan for none)


def wait_running(pipe: Pipeline, seconds: float, until: Callable[[], bool] | None = None) -> bool:
    """Let ``pipe`` run ``seconds`` (or until ``until()``); raise if it ends meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        if pipe.wait(0):
            raise RuntimeError(f"the pipeline ended early: {pipe.error or 'its source ran out'}")
        if until is not None and until():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL_S, left))


def block(
    condition: str, viewers: Browsers | HttpClients | None, n: int, window: float, stream_fps: float
) -> Block:
    port = free_port()
    overrides = [SOURCE, f"sinks.web.listen=127.0.0.1:{port}", f"sinks.web.stream_fps={stream_fps:g}"]
    config = load_config(PIPELINE, overrides, env={})
    sink = CountSink()
    pipe = Pipeline.from_config(config, extra_sinks={"count": sink})
    web = pipe.sinks["web"]
    assert isinstance(web, WebSink)
    encodes = EncodeTimes(web)
    watching = False
    try:
        pipe.start()
        wait_running(pipe, WARMUP_S)
        if viewers is not None:
            viewers.watch(web.url)
            watching = True
            sent0 = web.frames_sent
            ok = wait_running(
                pipe, CONNECT_TIMEOUT_S, lambda: web.viewers >= n and web.frames_sent >= sent0 + 2 * n
            )
            if not ok:
                raise RuntimeError(f"{n} viewers did not connect within {CONNECT_TIMEOUT_S:g} s")
        else:
            wait_running(pipe, 1.0)  # about as long as the viewers take to connect
        busy0, own0, enc0, sent0 = busy_cpu_s(), own_cpu_s(()), web.frames_encoded, web.frames_sent
        t0 = time.monotonic()
        wait_running(pipe, window)
        t1 = time.monotonic()
        others = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s(()) - own0)) / (t1 - t0)
        stats = pipe.stats()
        b = Block(
            condition,
            sink.between(t0, t1) / (t1 - t0),
            others,
            web.viewers,
            t1 - t0,
            web.frames_encoded - enc0,
            web.frames_sent - sent0,
            encodes.median_between(t0, t1),
            stats.stage_ms.get("sink:web", float("nan")),
        )
    finally:
        if watching and viewers is not None:
            viewers.leave()
        pipe.stop()
        if not pipe.wait(40):
            print("  note: the pipeline did not stop within 40 s", flush=True)
    if pipe.error is not None:
        raise RuntimeError(f"the pipeline failed: {pipe.error}")
    return b


def describe(k: int, b: Block) -> str:
    return (
        f"  round {k + 1}  {LABELS[b.condition]:<21}{b.fps:7.2f} fps   viewers {b.viewers}   "
        f"encoded {b.encoded:4d}  sent {b.sent:5d}   {b.encode_ms:6.2f} ms/encode  "
        f"{b.sink_ms:6.2f} ms/result   other processes {b.others_cores:4.2f} cores"
    )


def encoded_per_s(bs: list[Block]) -> float:
    return median([b.encoded / b.window_s for b in bs])


def browser_note() -> str:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing and shutil.which("chromium-browser") and missing == ["chromium"]:
        missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    return (
        f"skipped: {', '.join(missing)} missing (apt-get install chromium chromium-driver)" if missing else ""
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--window", type=float, default=8.0, help="seconds measured per block (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the conditions (default 3)")
    ap.add_argument("--viewers", type=int, default=3, help="viewers in the watched conditions (default 3)")
    ap.add_argument("--stream-fps", type=float, default=5.0, help="sinks.web.stream_fps (default 5)")
    ap.add_argument("--no-browser", action="store_true", help="HTTP stream clients only")
    args = ap.parse_args()
    if args.window <= 0 or args.repeat < 1 or args.viewers < 1 or args.stream_fps <= 0:
        ap.error("--window > 0, --repeat >= 1, --viewers >= 1 and --stream-fps > 0 please")
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    run_t0 = time.perf_counter()

    note = "skipped (--no-browser)" if args.no_browser else browser_note()
    conditions = ("idle", "http") if note else ("idle", "browsers", "http")
    print(
        f"web page benchmark: {PIPELINE.name}, {SOURCE.split('=', 1)[1]} (unpaced), web sink at stream_fps "
        f"{args.stream_fps:g}; window {args.window:g} s after {WARMUP_S:g} s warm-up, {args.repeat} rounds, "
        f"{args.viewers} viewers",
        flush=True,
    )
    if note:
        print(
            f"headless Chromium viewers {note}; measuring {args.viewers} HTTP stream clients only", flush=True
        )

    blocks: dict[str, list[Block]] = {c: [] for c in conditions}
    browsers: Browsers | None = None
    clients = HttpClients(args.viewers)
    try:
        if "browsers" in conditions:
            browsers = Browsers(args.viewers)
        for k in range(args.repeat):
            for condition in conditions if k % 2 == 0 else conditions[::-1]:
                viewers = {"idle": None, "browsers": browsers, "http": clients}[condition]
                b = block(condition, viewers, args.viewers, args.window, args.stream_fps)
                blocks[condition].append(b)
                print(describe(k, b), flush=True)
    finally:
        clients.close()
        if browsers is not None:
            browsers.close()

    fps = {c: median([b.fps for b in bs]) for c, bs in blocks.items()}

    def paired(cond: str) -> float:
        return median([b.fps / a.fps for b, a in zip(blocks[cond], blocks["idle"], strict=True) if a.fps > 0])

    w = 34
    print()
    print(f"{'condition':<{w}}{'FPS (median)':>13}{'ratio':>8}{'paired':>8}{'encoded/s':>11}"
          f"{'ms/encode':>11}{'ms/result':>11}{'others':>8}")  # fmt: skip
    for c, bs in blocks.items():
        ratio = fps[c] / fps["idle"] if fps["idle"] > 0 else float("nan")
        print(
            f"{LABELS[c] + (f' x{args.viewers}' if c != 'idle' else ''):<{w}}{fps[c]:13.2f}{ratio:8.3f}"
            f"{paired(c):8.3f}{encoded_per_s(bs):11.2f}{median([b.encode_ms for b in bs]):11.2f}"
            f"{median([b.sink_ms for b in bs]):11.2f}{median([b.others_cores for b in bs]):8.2f}"
        )
    doc: dict[str, Any] = {"bench": "web", "fps_idle": r3(fps["idle"])}
    headline = "browsers" if "browsers" in blocks else "http"
    for c in conditions[1:]:
        ratio = fps[c] / fps["idle"] if fps["idle"] > 0 else float("nan")
        verdict = "holds" if ratio >= TARGET_RATIO else "below target"
        print(
            f"{'ratio ' + LABELS[c]:<{w}}{ratio:.3f}  (target >= {TARGET_RATIO}, not enforced: {verdict}; "
            f"median of per-round ratios {paired(c):.3f})"
        )
        doc.update({
            f"fps_{c}": r3(fps[c]),
            f"ratio_{c}": r3(ratio),
            f"ratio_{c}_paired_median": r3(paired(c)),
            f"encoded_per_s_{c}": r3(encoded_per_s(blocks[c])),
            f"encode_ms_{c}": r3(median([b.encode_ms for b in blocks[c]])),
            f"sink_web_ms_per_result_{c}": r3(median([b.sink_ms for b in blocks[c]])),
            f"other_cores_{c}": r3(median([b.others_cores for b in blocks[c]])),
        })  # fmt: skip
    run_s = time.perf_counter() - run_t0
    print(f"{'run time':<{w}}{run_s:.0f} s")
    doc.update({
        "ratio": doc.get(f"ratio_{headline}"),
        "ratio_of": LABELS[headline],
        "browsers": note or "headless chromium",
        "target_ratio": TARGET_RATIO,
        "viewers": args.viewers,
        "stream_fps": args.stream_fps,
        "window_s": args.window,
        "repeat": args.repeat,
        "cores": os.cpu_count(),
        "fps_rounds": {c: [r3(b.fps) for b in bs] for c, bs in blocks.items()},
        "run_s": round(run_s, 1),
    })  # fmt: skip
    print(json.dumps(doc))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (everything started was stopped)")
