#!/usr/bin/env python3
"""Live-control benchmark (the issue's "frame rate holds" figures), measured side by side in one run.

Run: ``.venv/bin/python scripts/bench_control.py`` (about 2.5 minutes on a 2-core machine with the
defaults; ``--no-mqtt`` about 1.5). Options: ``--window S`` (seconds measured per block, default 8),
``--repeat N`` (rounds, default 3), ``--updates N`` (updates or requests per burst, default 1000),
``--no-mqtt`` (skip part 2). Nothing is asserted: the figures are printed, with the issue's target (a ratio
>= 0.95) next to each ratio, and never fail the run. Everything started (pipelines, threads, the broker) is
stopped at the end, also on errors or Ctrl-C.

The pipeline is the demo one (``pipelines/demo.yaml``, the demo model) with the source
``synthetic:parts?seed=3``: not paced, so it behaves as a file source (queues block, every frame is
processed, as fast as the pipeline goes; the scene is rendered on this machine's cores). A block starts a
fresh pipeline, lets it run ``WARMUP_S``, then counts the results that reach a counting sink over the
window; its FPS is that count over the window's length.

1. Direct updates, three conditions alternated in blocks (idle, burst, invalid, then invalid, burst, idle,
   ...) so drift hits all alike; the model is loaded once and every block builds a fresh
   :class:`~edgeseg.pipeline.Pipeline` with its own :class:`~edgeseg.control.Control`:

   - ``idle``: no updates;
   - ``burst``: at the window's start another thread calls ``pipe.update()`` ``--updates`` times (1000) as
     fast as it can, each a valid change of ``postprocess.semantic.size_threshold`` and ``source.roi``
     (every one a new ``config_version``);
   - ``invalid``: the same with every other update invalid (out of range, not a number, a key that needs a
     restart, an unknown key), all of which must be rejected.

   ``ratio_update_burst`` / ``ratio_invalid_burst`` are the median FPS of the condition over the median
   idle FPS (the median of the per-round ratios is printed too). A burst is usually shorter than the
   window, so the FPS over the burst itself (results completed between its first and its last update) is
   reported as well (``*_during``): that is the frame rate while updates are really coming in. The
   ``config_version`` of the results shows the updates landed: ``config_versions_seen`` is how many
   distinct versions the results of a burst block carried (median over the blocks).

2. MQTT fuzz (skipped, with a note, when ``mosquitto`` is not installed): a Mosquitto on a free loopback
   port, the pipeline built by :meth:`Pipeline.from_config` with the ``mqtt`` sink on (device ``bench``,
   a fresh state directory per block), alternating ``idle`` and ``fuzz`` blocks. In a fuzz block a paho
   client publishes ``--updates`` random requests at QoS 1 to ``edgeseg/bench/config/set`` and
   ``edgeseg/bench/config/<key>/set`` (random bytes, random JSON objects of real and unknown keys with
   random values, malformed JSON, bare words, a 60 KB payload and one over the 64 KiB limit) and counts
   the replies on ``edgeseg/bench/config/result``: every request gets one (``fuzz_replies`` /
   ``fuzz_requests``). Before each window (both conditions) a probe request on a topic of its own waits
   for its reply, so the sink's subscriptions are in place. ``ratio_mqtt_fuzz`` is median fuzz FPS over
   median idle FPS; ``*_during`` is the FPS from the first request to the last reply.

Each block also prints how many cores other processes of the machine kept busy meanwhile (``/proc/stat``
minus this process and the broker): a block that shared the CPU shows there. The refusals the invalid and
fuzz requests cause are counted from the outcomes and replies; their log warnings are silenced.

The last line of the output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from bench_mqtt import (  # scripts/ is on sys.path when run as a script
    Broker,
    busy_cpu_s,
    median,
    own_cpu_s,
    r3,
)
from paho.mqtt.enums import CallbackAPIVersion

from edgeseg.config import PipelineConfig, load_config
from edgeseg.control import Control
from edgeseg.frame import Result
from edgeseg.modelcard import ModelCard
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.sources import make_source

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "demo.yaml"
SOURCE = "source.uri=synthetic:parts?seed=3"
DEVICE = "bench"
BASE_TOPIC = f"edgeseg/{DEVICE}/config"
RESULT_TOPIC = f"{BASE_TOPIC}/result"
PROBE_TOPIC = f"{BASE_TOPIC}/bench.probe/set"  # an unknown key: refused, answered, changes nothing
TARGET_RATIO = 0.95
WARMUP_S = 1.0  # each block runs this long before its window starts
REPLY_TIMEOUT_S = 30.0  # after the window, the longest wait for the fuzz block's last replies
PROBE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 40.0  # the mqtt sink may take its lossless drain time (30 s) at worst
NOISY_CORES = 0.25  # other processes' load during a block above which the FPS figures get a warning
DIRECT = ("idle", "burst", "invalid")
MQTT_CONDITIONS = ("idle", "fuzz")
LABELS = {
    "idle": "no updates",
    "burst": "valid update burst",
    "invalid": "half invalid burst",
    "fuzz": "MQTT fuzz",
}
INVALID_UPDATES: tuple[dict[str, Any], ...] = (
    {"postprocess.semantic.size_threshold": -5},
    {"postprocess.semantic.size_threshold": "abc"},
    {"source.roi": "abc"},
    {"source.roi": [0.5, 0.0, 0.9, 1.0]},  # outside the frame
    {"model.path": "other.onnx"},  # needs a restart
    {"x.y": 1},  # unknown
)
FUZZ_KEYS = (
    "postprocess.semantic.dist_threshold",
    "postprocess.semantic.size_threshold",
    "postprocess.score_threshold",
    "source.roi",
    "model.path",
    "pipeline.queue_size",
    "x.y",
)


# counting -----------------------------------------------------------------------------------------------


class CountSink:
    """A sink that notes when each result came out and the ``config_version`` it was processed with."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.versions: list[int] = []
        self._lock = threading.Lock()

    def send(self, result: Result) -> None:
        now = time.monotonic()
        with self._lock:
            self.times.append(now)
            self.versions.append(result.config_version)

    def close(self) -> None:
        pass

    def count(self) -> int:
        with self._lock:
            return len(self.times)

    def between(self, t0: float, t1: float) -> int:
        with self._lock:
            return sum(1 for t in self.times if t0 <= t <= t1)

    def distinct_versions(self) -> int:
        with self._lock:
            return len(set(self.versions))


@dataclass
class Interference:
    """What the interfering thread did: requests sent, how long from the first to the end, outcomes."""

    requests: int = 0
    t_start: float = 0.0
    t_end: float = 0.0
    applied: int = 0  # direct: updates with an applied key
    rejected: int = 0  # direct: updates with a rejected key
    wrongly_applied: int = 0  # direct: invalid updates that applied something
    replies: int = 0  # mqtt: replies on config/result
    error: BaseException | None = None

    @property
    def seconds(self) -> float:
        return self.t_end - self.t_start if self.t_end > self.t_start else float("nan")


@dataclass
class Block:
    condition: str
    fps: float
    frames: int
    others_cores: float
    versions_seen: int
    final_version: int
    interference: Interference | None = None
    fps_during: float = float("nan")


# Waiting polls ``pipe.wait(0)`` (which never joins a thread) between short sleeps: a Ctrl-C that lands in
# ``Thread.join`` can leave that thread marked as stopped while it still runs (CPython 3.11), and the
# pipeline's own wait would then return with the inference thread still inside the model.
POLL_S = 0.05


def ended(pipe: Pipeline) -> bool:
    return pipe.wait(0)


def wait_running(pipe: Pipeline, seconds: float, what: str = "early") -> None:
    """Let ``pipe`` run ``seconds``; raise if it ends (fails) meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        if ended(pipe):
            raise RuntimeError(f"the pipeline ended {what}: {pipe.error or 'its source ran out'}")
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(POLL_S, left))


def measure_window(
    pipe: Pipeline,
    sink: CountSink,
    window: float,
    pids: Callable[[], Sequence[int]],
    start_interference: Callable[[], None] | None = None,
) -> tuple[float, float, float, float]:
    """Warm up, then count results over ``window`` seconds (the interference starts with the window).
    Returns the window's start and end (monotonic), its FPS, and the cores other processes kept busy."""
    wait_running(pipe, WARMUP_S)
    if sink.count() == 0:
        wait_running(pipe, 5.0)  # a slow first frame: give it a little longer before measuring
        if sink.count() == 0:
            raise RuntimeError("no result within the warm-up")
    busy0, own0 = busy_cpu_s(), own_cpu_s(pids())
    t0 = time.monotonic()
    if start_interference is not None:
        start_interference()
    wait_running(pipe, max(0.0, t0 + window - time.monotonic()))
    t1 = time.monotonic()
    others = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s(pids()) - own0)) / (t1 - t0)
    return t0, t1, sink.between(t0, t1) / (t1 - t0), others


def fps_over(sink: CountSink, info: Interference) -> float:
    dt = info.seconds
    return sink.between(info.t_start, info.t_end) / dt if dt > 0 else float("nan")


def shut(pipe: Pipeline) -> None:
    """Stop ``pipe`` and wait for its threads; a Ctrl-C meanwhile is held back until they are done (a
    process that exits while a stage is inside the model or OpenCV can abort)."""
    interrupted = False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while True:
        try:
            pipe.stop()
            while not ended(pipe) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            break
        except KeyboardInterrupt:
            interrupted = True
    if not ended(pipe):
        print("  note: the pipeline did not stop within the timeout", flush=True)
    if interrupted:
        raise KeyboardInterrupt


# 1. direct updates --------------------------------------------------------------------------------------


def valid_update(i: int) -> dict[str, Any]:
    """A valid change that differs from the one before (so every update is a new version)."""
    return {
        # (a key the demo model takes: it splits where its contact map says, so dist_threshold is refused)
        "postprocess.semantic.size_threshold": 30 + i % 21,
        "source.roi": [round((i % 11) / 100, 2), 0.0, 0.9, 1.0],
    }


def update_burst(pipe: Pipeline, n: int, invalid: bool, info: Interference, stop: threading.Event) -> None:
    try:
        info.t_start = time.monotonic()
        for i in range(n):
            if stop.is_set():
                break
            bad = invalid and i % 2 == 1
            changes = INVALID_UPDATES[(i // 2) % len(INVALID_UPDATES)] if bad else valid_update(i)
            outcome = pipe.update(changes, "bench")
            info.requests += 1
            info.applied += bool(outcome.applied)
            info.rejected += bool(outcome.rejected)
            info.wrongly_applied += bool(bad and outcome.applied)
        info.t_end = time.monotonic()
    except BaseException as exc:  # reported by the block
        info.error = exc


def direct_block(
    config: PipelineConfig, stages: ModelStages, card: ModelCard, condition: str, window: float, n: int
) -> Block:
    sink = CountSink()
    control = Control(config, card)
    pipe = Pipeline(
        make_source(config.source),
        stages,
        {"count": sink},
        queue_size=config.pipeline.queue_size,
        control=control,
    )
    stop = threading.Event()
    info = Interference() if condition != "idle" else None
    thread: threading.Thread | None = None

    def start_burst() -> None:
        nonlocal thread
        assert info is not None
        thread = threading.Thread(
            target=update_burst, args=(pipe, n, condition == "invalid", info, stop), name="bench-burst"
        )
        thread.start()

    try:
        pipe.start()
        _, _, fps, others = measure_window(pipe, sink, window, lambda: (), start_burst if info else None)
        if thread is not None:
            while thread.is_alive():  # a burst longer than the window: the frames go on meanwhile
                wait_running(pipe, POLL_S, "during the burst")
    finally:
        stop.set()
        shut(pipe)
        if thread is not None:
            thread.join(10)
    if pipe.error is not None:
        raise RuntimeError(f"the pipeline failed: {pipe.error}")
    if info is not None and info.error is not None:
        raise RuntimeError(f"the update thread failed: {info.error!r}") from info.error
    block = Block(
        condition, fps, sink.count(), others, sink.distinct_versions(), control.current().version, info
    )
    if info is not None:
        block.fps_during = fps_over(sink, info)
    return block


def describe(k: int, b: Block) -> str:
    line = (
        f"  round {k + 1}  {LABELS[b.condition]:<20}{b.fps:7.2f} fps   other processes "
        f"{b.others_cores:4.2f} cores   versions seen {b.versions_seen}"
    )
    i = b.interference
    if i is None:
        return line
    line += f"   {i.requests} requests in {i.seconds:.2f} s ({i.requests / i.seconds:.0f}/s)"
    line += f", {b.fps_during:.2f} fps during them"
    if b.condition == "fuzz":
        line += f", {i.replies} replies"
    else:
        line += f", {i.applied} applied, {i.rejected} rejected"
        if i.wrongly_applied:
            line += f" ({i.wrongly_applied} INVALID APPLIED)"
    return line


# 2. mqtt fuzz -------------------------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.uniform(-1.0, 2.0)
    if kind == 1:
        return rng.randrange(-10, 1000)
    if kind == 2:
        return rng.choice(["abc", "", "null", "0.5", "1e999", "onnx", "é"])
    if kind == 3:
        return None
    if kind == 4:
        return rng.random() < 0.5
    if kind == 5:
        return round(rng.uniform(0.05, 1.0), 3)  # often a valid dist_threshold / score_threshold
    if kind == 6:
        return [round(rng.uniform(-0.2, 1.2), 2) for _ in range(rng.randrange(6))]
    if kind == 7:
        return {rng.choice(FUZZ_KEYS).rpartition(".")[2]: random_value(rng, depth + 1)}
    return [random_value(rng, depth + 1)]


def fuzz_requests(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """``n`` (topic, payload) requests, all on topics the pipeline answers."""
    out: list[tuple[str, bytes]] = [
        (f"{BASE_TOPIC}/set", json.dumps({"x.y": "a" * 60_000}).encode()),  # 60 KB: read and refused
        (f"{BASE_TOPIC}/set", b"{" + b"0" * 70_000),  # over the 64 KiB limit: refused unread
    ]
    while len(out) < n:
        key_topic = rng.random() < 0.4
        topic = f"{BASE_TOPIC}/{rng.choice(FUZZ_KEYS)}/set" if key_topic else f"{BASE_TOPIC}/set"
        kind = rng.randrange(4)
        if kind == 0:
            payload = rng.randbytes(rng.randrange(0, 200))
        elif kind == 1:
            doc = {rng.choice(FUZZ_KEYS): random_value(rng) for _ in range(rng.randrange(1, 4))}
            payload = json.dumps(doc).encode()
        elif kind == 2:
            text = json.dumps({rng.choice(FUZZ_KEYS): random_value(rng)})
            payload = text[: rng.randrange(len(text))].encode()  # cut short: malformed
        else:
            word = random_value(rng) if key_topic else rng.choice(["abc", "[1, 2", "{'a': 1}", "null"])
            payload = (word if isinstance(word, str) else json.dumps(word)).encode()
        out.append((topic, payload))
    rng.shuffle(out)
    return out[:n]


class FuzzClient:
    """A paho client that publishes requests and counts the replies on ``config/result`` (by request topic,
    so the probe's replies are told apart)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-fuzz-{id(self):x}")
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.replies = 0
        self.probe_replies = 0
        self.last_reply = 0.0
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the fuzz client did not subscribe within 10 s")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(RESULT_TOPIC, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            request = json.loads(msg.payload).get("request")
        except (ValueError, AttributeError):
            request = None
        with self._lock:
            if request == PROBE_TOPIC:
                self.probe_replies += 1
            else:
                self.replies += 1
                self.last_reply = time.monotonic()

    def reset(self) -> None:
        with self._lock:
            self.replies = self.probe_replies = 0
            self.last_reply = 0.0

    def counts(self) -> tuple[int, int, float]:
        with self._lock:
            return self.replies, self.probe_replies, self.last_reply

    def probe(self, pipe: Pipeline) -> None:
        """Until the pipeline answers: its sink is connected and subscribed."""
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            self.client.publish(PROBE_TOPIC, b"1", qos=1)
            wait_running(pipe, 0.25, "before it answered")
            if self.counts()[1]:
                return
        raise RuntimeError(f"no reply on {RESULT_TOPIC} within {PROBE_TIMEOUT_S:.0f} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def fuzz(client: FuzzClient, requests: Sequence[tuple[str, bytes]], info: Interference) -> None:
    try:
        info.t_start = time.monotonic()
        for topic, payload in requests:
            client.client.publish(topic, payload, qos=1)
            info.requests += 1
    except BaseException as exc:
        info.error = exc


def mqtt_block(
    port: int,
    broker: Broker,
    client: FuzzClient,
    state: Path,
    condition: str,
    window: float,
    n: int,
    seed: int,
) -> Block:
    overrides = [
        SOURCE,
        f"sinks.mqtt.url=mqtt://127.0.0.1:{port}",
        f"sinks.mqtt.device_id={DEVICE}",
        f"pipeline.state_dir={json.dumps(str(state))}",
    ]
    config = load_config(PIPELINE, overrides, env={})
    sink = CountSink()
    info = Interference() if condition == "fuzz" else None
    requests = fuzz_requests(random.Random(seed), n) if info is not None else []
    thread: threading.Thread | None = None

    def start_fuzz() -> None:
        nonlocal thread
        assert info is not None
        thread = threading.Thread(target=fuzz, args=(client, requests, info), name="bench-fuzz")
        thread.start()

    def pids() -> list[int]:
        return [broker.proc.pid] if broker.proc is not None else []

    pipe: Pipeline | None = None
    try:
        pipe = Pipeline.from_config(config, extra_sinks={"count": sink})
        pipe.start()
        client.probe(pipe)
        client.reset()
        _, _, fps, others = measure_window(pipe, sink, window, pids, start_fuzz if info else None)
        if info is not None and thread is not None:
            deadline = time.monotonic() + REPLY_TIMEOUT_S
            while thread.is_alive() and time.monotonic() < deadline:
                wait_running(pipe, POLL_S, "while the requests went out")
            while client.counts()[0] < info.requests and time.monotonic() < deadline:
                wait_running(pipe, POLL_S, "while replying")
            info.replies, _, info.t_end = client.counts()
    finally:
        if pipe is not None:
            shut(pipe)
        if thread is not None:
            thread.join(10)
    if pipe.error is not None:
        raise RuntimeError(f"the pipeline failed: {pipe.error}")
    if info is not None and info.error is not None:
        raise RuntimeError(f"the fuzz thread failed: {info.error!r}") from info.error
    assert pipe.control is not None
    block = Block(
        condition, fps, sink.count(), others, sink.distinct_versions(), pipe.control.current().version, info
    )
    if info is not None:
        block.fps_during = fps_over(sink, info)
    return block


# main ---------------------------------------------------------------------------------------------------


def alternate(conditions: Sequence[str], k: int) -> Sequence[str]:
    return conditions if k % 2 == 0 else conditions[::-1]


def ratio_line(name: str, value: float, paired: float, w: int) -> str:
    verdict = "holds" if value >= TARGET_RATIO else "below target"
    return (
        f"{name:<{w}}{value:.3f}  (target >= {TARGET_RATIO}, not enforced: {verdict}; "
        f"median of per-round ratios {paired:.3f})"
    )


def medians(blocks: Mapping[str, list[Block]]) -> dict[str, float]:
    return {c: median([b.fps for b in bs]) for c, bs in blocks.items()}


def paired(blocks: Mapping[str, list[Block]], cond: str, base: str = "idle") -> float:
    return median([b.fps / a.fps for b, a in zip(blocks[cond], blocks[base], strict=True) if a.fps > 0])


def interference_median(blocks: Sequence[Block], what: Callable[[Interference], float]) -> float:
    return median([what(b.interference) for b in blocks if b.interference is not None])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--window", type=float, default=8.0, help="seconds measured per block (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the conditions (default 3)")
    ap.add_argument("--updates", type=int, default=1000, help="updates or requests per burst (default 1000)")
    ap.add_argument("--no-mqtt", action="store_true", help="skip the MQTT fuzz part")
    args = ap.parse_args()
    if args.window <= 0 or args.repeat < 1 or args.updates < 2:
        ap.error("--window > 0, --repeat >= 1 and --updates >= 2 please")
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    # the bench sends invalid requests on purpose: their refusals are counted here, not logged
    for name in ("edgeseg.control", "edgeseg.mqtt.remote"):
        logging.getLogger(name).setLevel(logging.ERROR)
    run_t0 = time.perf_counter()

    config = load_config(PIPELINE, [SOURCE], env={})
    stages = ModelStages.from_config(config)
    card = stages.model.card
    print(
        f"live-control benchmark: model {card.name} ({card.task}), source {config.source.uri}, window "
        f"{args.window:g} s after {WARMUP_S:g} s warm-up, {args.repeat} rounds, {args.updates} updates per "
        "burst",
        flush=True,
    )

    # 1. direct updates
    print("1. direct updates (pipe.update from another thread)", flush=True)
    direct: dict[str, list[Block]] = {c: [] for c in DIRECT}
    try:
        for k in range(args.repeat):
            for condition in alternate(DIRECT, k):
                b = direct_block(config, stages, card, condition, args.window, args.updates)
                direct[condition].append(b)
                print(describe(k, b), flush=True)
    finally:
        stages.close()

    # 2. mqtt fuzz
    fuzzed: dict[str, list[Block]] = {c: [] for c in MQTT_CONDITIONS}
    exe = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    mqtt_note = ""
    if args.no_mqtt:
        mqtt_note = "skipped (--no-mqtt)"
    elif exe is None:
        mqtt_note = "skipped: mosquitto is not installed (apt-get install mosquitto)"
    if mqtt_note:
        print(f"2. MQTT fuzz {mqtt_note}", flush=True)
    else:
        assert exe is not None
        with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp_name:
            tmp = Path(tmp_name)
            broker = Broker(exe, tmp / "broker")
            client: FuzzClient | None = None
            try:
                broker.start()
                client = FuzzClient(broker.port)
                print(f"2. MQTT fuzz (mosquitto on 127.0.0.1:{broker.port})", flush=True)
                blocks_run = 0
                for k in range(args.repeat):
                    for condition in alternate(MQTT_CONDITIONS, k):
                        blocks_run += 1
                        b = mqtt_block(
                            broker.port,
                            broker,
                            client,
                            tmp / f"state-{blocks_run}",
                            condition,
                            args.window,
                            args.updates,
                            seed=k,
                        )
                        fuzzed[condition].append(b)
                        print(describe(k, b), flush=True)
            finally:
                if client is not None:
                    client.close()
                broker.stop()

    # figures
    fps = medians(direct)
    ratio_burst, ratio_invalid = fps["burst"] / fps["idle"], fps["invalid"] / fps["idle"]
    during_burst = median([b.fps_during for b in direct["burst"]])
    during_invalid = median([b.fps_during for b in direct["invalid"]])
    updates_per_s = interference_median(direct["burst"], lambda i: i.requests / i.seconds)
    invalid_per_s = interference_median(direct["invalid"], lambda i: i.requests / i.seconds)
    burst_s = interference_median(direct["burst"], lambda i: i.seconds)
    invalid_s = interference_median(direct["invalid"], lambda i: i.seconds)
    versions_seen = round(median([b.versions_seen for b in direct["burst"]]))
    wrongly_applied = sum(b.interference.wrongly_applied for b in direct["invalid"] if b.interference)
    invalid_rejected = sum(b.interference.rejected for b in direct["invalid"] if b.interference)
    invalid_sent = sum(b.interference.requests // 2 for b in direct["invalid"] if b.interference)
    all_blocks = [b for bs in (*direct.values(), *fuzzed.values()) for b in bs]
    busiest = max(b.others_cores for b in all_blocks)
    w = 34
    print()
    print(f"{'pipeline FPS (median of rounds)':<{w}}" + ", ".join(f"{c} {fps[c]:.2f}" for c in DIRECT))
    print(ratio_line("ratio_update_burst", ratio_burst, paired(direct, "burst"), w))
    print(
        f"{'':<{w}}during the burst itself: {during_burst:.2f} fps, ratio {during_burst / fps['idle']:.3f} "
        f"({burst_s:.2f} s per burst, {updates_per_s:.0f} updates/s)"
    )
    print(ratio_line("ratio_invalid_burst", ratio_invalid, paired(direct, "invalid"), w))
    print(
        f"{'':<{w}}during the burst itself: {during_invalid:.2f} fps, ratio "
        f"{during_invalid / fps['idle']:.3f} ({invalid_s:.2f} s per burst, {invalid_per_s:.0f} updates/s); "
        f"{invalid_rejected} of {invalid_sent} invalid updates rejected, {wrongly_applied} applied"
    )
    print(
        f"{'config versions seen by results':<{w}}{versions_seen:.0f} per burst block (median; the control "
        f"ended at version {median([b.final_version for b in direct['burst']]):.0f})"
    )
    doc: dict[str, Any] = {
        "bench": "control",
        "fps_idle": r3(fps["idle"]),
        "fps_update_burst": r3(fps["burst"]),
        "ratio_update_burst": r3(ratio_burst),
        "ratio_update_burst_paired_median": r3(paired(direct, "burst")),
        "fps_update_burst_during": r3(during_burst),
        "ratio_update_burst_during": r3(during_burst / fps["idle"]),
        "update_burst_s": r3(burst_s),
        "updates_per_s": r3(updates_per_s),
        "fps_invalid_burst": r3(fps["invalid"]),
        "ratio_invalid_burst": r3(ratio_invalid),
        "ratio_invalid_burst_paired_median": r3(paired(direct, "invalid")),
        "fps_invalid_burst_during": r3(during_invalid),
        "ratio_invalid_burst_during": r3(during_invalid / fps["idle"]),
        "invalid_updates_per_s": r3(invalid_per_s),
        "invalid_updates_sent": invalid_sent,
        "invalid_updates_applied": wrongly_applied,
        "config_versions_seen": versions_seen,
        "fps_rounds": {c: [r3(b.fps) for b in bs] for c, bs in direct.items()},
    }
    if fuzzed["idle"]:
        mfps = medians(fuzzed)
        ratio_fuzz = mfps["fuzz"] / mfps["idle"]
        during_fuzz = median([b.fps_during for b in fuzzed["fuzz"]])
        requests = sum(b.interference.requests for b in fuzzed["fuzz"] if b.interference)
        replies = sum(b.interference.replies for b in fuzzed["fuzz"] if b.interference)
        fuzz_s = interference_median(fuzzed["fuzz"], lambda i: i.seconds)
        print(
            f"{'MQTT pipeline FPS (median)':<{w}}idle {mfps['idle']:.2f}, fuzz {mfps['fuzz']:.2f} "
            "(mqtt sink on in both)"
        )
        print(ratio_line("ratio_mqtt_fuzz", ratio_fuzz, paired(fuzzed, "fuzz"), w))
        print(
            f"{'':<{w}}from the first request to the last reply: {during_fuzz:.2f} fps, ratio "
            f"{during_fuzz / mfps['idle']:.3f} ({fuzz_s:.2f} s per fuzz block)"
        )
        print(
            f"{'fuzz replies / requests':<{w}}{replies} / {requests}"
            + ("" if replies == requests else "  (NOT every request was answered)")
        )
        print(
            f"{'config versions seen (fuzz)':<{w}}"
            f"{median([b.versions_seen for b in fuzzed['fuzz']]):.0f} per fuzz block (median)"
        )
        doc.update({
            "fps_mqtt_idle": r3(mfps["idle"]),
            "fps_mqtt_fuzz": r3(mfps["fuzz"]),
            "ratio_mqtt_fuzz": r3(ratio_fuzz),
            "ratio_mqtt_fuzz_paired_median": r3(paired(fuzzed, "fuzz")),
            "fps_mqtt_fuzz_during": r3(during_fuzz),
            "ratio_mqtt_fuzz_during": r3(during_fuzz / mfps["idle"]),
            "fuzz_s": r3(fuzz_s),
            "fuzz_replies": replies,
            "fuzz_requests": requests,
            "mqtt_config_versions_seen": round(median([b.versions_seen for b in fuzzed["fuzz"]])),
            "fps_mqtt_rounds": {c: [r3(b.fps) for b in bs] for c, bs in fuzzed.items()},
        })  # fmt: skip
    else:
        print(f"{'MQTT fuzz':<{w}}{mqtt_note}")
        doc["mqtt"] = mqtt_note
    run_s = time.perf_counter() - run_t0
    print(f"{'run time':<{w}}{run_s:.0f} s")
    if busiest > NOISY_CORES:
        print(
            f"WARNING: other processes kept up to {busiest:.2f} cores busy during some blocks (see above): "
            "the FPS ratios are unreliable; rerun on a quieter machine or with more --repeat"
        )
    doc.update({
        "target_ratio": TARGET_RATIO,
        "other_load_cores_max": r3(busiest),
        "window_s": args.window,
        "repeat": args.repeat,
        "updates": args.updates,
        "run_s": round(run_s, 1),
    })  # fmt: skip
    print(json.dumps(doc))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted (everything started was stopped)")
