#!/usr/bin/env python3
"""MQTT sink benchmark (the MQTT issue's acceptance figures), measured side by side in one run.

Run: ``.venv/bin/python scripts/bench_mqtt.py`` (about 3 minutes on a 2-core machine with the defaults).
It starts its own Mosquitto on a free 127.0.0.1 port and a paho subscriber in a child process, and stops both
at the end, also on errors or Ctrl-C. Needs ``mosquitto`` (``/usr/sbin/mosquitto`` or on ``PATH``).

1. ``fps_ratio_broker_up`` (target >= 0.97): pipeline FPS with the ``mqtt`` sink on, the broker up and a
   real paho subscriber (QoS 1, ``edgeseg/bench/#``) receiving every result, over the FPS of the same
   pipeline with no sink at all;
2. ``fps_ratio_broker_down`` (target >= 0.97): the same with nothing listening on the sink's port, so every
   result goes to the spool and stays there;
3. ``spool_write_msgs_per_s``: :meth:`Spool.append` throughput with real results payloads, one message per
   append (``batch_1``) and eight per append (``batch_8``, what the sink does when results queue up);
4. ``replay_msgs_per_s``: after an outage: ``--replay-n`` real results go through the sink into the spool
   while the broker is down, the broker is started, and the rate is N over the time from the publisher's
   connect until the subscriber has received all N and the broker has acknowledged all N (spool empty);
5. ``publish_ms_p50`` / ``publish_ms_p99``: result produced -> subscriber received, over the broker-up
   rounds. A results payload carries ``wall_time`` (capture, Unix seconds) and ``timings_ms.latency``
   (capture -> result, from the pipeline's monotonic stamps); the subscriber stamps ``time.time()`` on
   receipt, so ``publish_ms = (receipt - wall_time) * 1000 - latency`` covers the sink's queue, the spool
   append, the publisher thread and the broker. ``capture_to_receive_ms_*`` is the whole way from capture
   (pipeline latency included), ``puback_ms_*`` the publisher's own publish -> PUBACK figures
   (``MqttSink.publisher.stats()``, median over the broker-up rounds). Mosquitto runs with its defaults,
   ``set_tcp_nodelay false`` among them; ``--broker-nodelay`` turns Nagle's algorithm off on the broker's
   sockets, which on loopback takes the PUBACK p99 from about 50 ms (a PUBACK held back until the client's
   delayed ACK) to a few ms.

How FPS is measured. Frames are 50 pre-rendered synthetic conveyor scenes replayed by ``ReplaySource`` from
``scripts/bench_pipeline.py`` (an offline source: every frame is processed, as fast as the pipeline goes; it
costs no CPU, like a camera). Each round runs ``--frames`` frames through a fresh :class:`Pipeline` with
the demo model (loaded once). The round's FPS is ``PipelineStats.fps_mean`` (``frames_done / elapsed_s``)
from a snapshot taken as soon as the last result is out, polled every 20 ms: it counts from the pipeline's
start to the last result and leaves out the sinks' ``close()``, where the MQTT sink flushes its spool
(``flush_timeout_s``: 10 s with the broker up, 0 with it down). The snapshot ``pipeline.run()`` returns is
taken after ``close()`` and would charge that flush to the frame rate, which is why it is not used.
The machine is shared and noisy, so the three conditions run in alternating rounds (off, up, down, then
down, up, off, ...) after a warm-up run, and the figures are medians over rounds; the ratios are ratios of
the medians (the median of the per-round ratios is printed too). Each round also prints how many cores
other processes of the machine kept busy meanwhile (``/proc/stat`` minus this process, the broker and the
subscriber, steal included): rounds that had to share the CPU show there. Each broker-up round waits
until the subscriber has every result before the next round starts, so no round pays for another's
traffic.
Every round gets a fresh state directory (its own spool); the device id is ``bench``.

The broker and the subscriber run on this machine's cores too (the subscriber in its own process, so it
does not take the pipeline's GIL): on a device whose broker is elsewhere the sink costs less than here.
``--threads`` sets the model's intra-op threads (default 1: on 2 cores that leaves the other core to the
rest of the pipeline, as in ``bench_pipeline.py``).

The last line of the output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from bench_pipeline import Collector, ReplaySource  # scripts/ is on sys.path when run as a script
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgeseg.config import load_config
from edgeseg.errors import EdgesegError
from edgeseg.frame import Result
from edgeseg.mqtt.broker import Credentials
from edgeseg.mqtt.spool import Spool
from edgeseg.mqtt.topics import Topics, results_payload
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.sinks import SinkContext
from edgeseg.sinks.mqtt import MqttSinkConfig
from edgeseg.sinks.mqtt_sink import MqttSink
from edgeseg.sinks.record import encoded_record
from edgeseg.stats import PipelineStats
from edgeseg.synthetic import PartsScene

DEVICE = "bench"
TOPICS = Topics("edgeseg", DEVICE)
SUBSCRIPTION = f"edgeseg/{DEVICE}/#"
CONDITIONS = ("off", "up", "down")
LABELS = {"off": "mqtt sink off", "up": "sink on, broker up", "down": "sink on, broker down"}
TARGET_FPS_RATIO = 0.97
NOISY_CORES = 0.25  # other processes' load during a round above which the FPS figures get a warning
POLL_S = 0.02  # how often a round looks for its last result
FLUSH_UP_S = 10.0  # flush_timeout_s of the broker-up rounds: the spool is delivered before the next round
RECEIVE_TIMEOUT_S = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SPOOL_BATCH = 8


# the subscriber (a child process) -----------------------------------------------------------------------


def subscriber_main(port: int, out: Path) -> None:
    """A paho subscriber (QoS 1, persistent session, so QoS 1 messages published while it reconnects after a
    broker restart are queued for it): one line per event in ``out``, until its stdin closes.

    ``C <t>`` connected, ``S <t>`` subscribed, ``R <t> <boot_id> <seq> <wall_time> <latency_ms> <replay>``
    a results message received at ``t`` (``time.time()``).
    """
    log = out.open("a", buffering=1, encoding="utf-8")
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            log.write(line + "\n")

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        write(f"C {time.time():.6f}")
        client.subscribe(SUBSCRIPTION, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        write(f"S {time.time():.6f}")

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if not msg.topic.endswith("/results"):
            return
        doc = json.loads(msg.payload)
        latency = doc["timings_ms"].get("latency")
        write(
            f"R {now:.6f} {doc['boot_id']} {doc['seq']} {doc['wall_time']!r} "
            f"{'nan' if latency is None else latency!r} {int(bool(doc['replay']))}"
        )

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-sub-{os.getpid()}",
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=False,
    )
    client.reconnect_delay_set(0.02, 0.2)  # type: ignore[arg-type]  # typed int, works with seconds as float
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        sys.stdin.read()  # the parent closes our stdin (or dies) when it is done
    finally:
        client.disconnect()
        client.loop_stop()
        log.close()


@dataclass(frozen=True)
class Receipt:
    received: float
    wall_time: float
    latency_ms: float
    replay: bool


class Subscriber:
    """Starts :func:`subscriber_main` in a child process and reads what it records."""

    def __init__(self, port: int, out: Path) -> None:
        self.out = out
        out.touch()
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--subscriber", str(port), str(out)],
            stdin=subprocess.PIPE,
        )
        self.by_boot: dict[str, dict[int, Receipt]] = {}
        self.duplicates: dict[str, int] = {}
        self.connects: list[float] = []
        self.subscribes: list[float] = []
        self._offset = 0
        self._rest = b""

    def poll(self) -> None:
        """Take in the lines written since the last call."""
        with self.out.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            kind, *rest = line.decode().split()
            if kind == "C":
                self.connects.append(float(rest[0]))
            elif kind == "S":
                self.subscribes.append(float(rest[0]))
            elif kind == "R":
                got = self.by_boot.setdefault(rest[1], {})
                seq = int(rest[2])
                if seq in got:
                    self.duplicates[rest[1]] = self.duplicates.get(rest[1], 0) + 1
                else:
                    got[seq] = Receipt(float(rest[0]), float(rest[3]), float(rest[4]), rest[5] == "1")

    def received(self, boot_id: str) -> dict[int, Receipt]:
        self.poll()
        return self.by_boot.get(boot_id, {})

    def wait(self, predicate: Callable[[], bool], timeout: float, every: float = 0.01) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the subscriber exited with status {self.proc.returncode}")
            time.sleep(every)

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# the broker ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nothing_listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


class Broker:
    """One Mosquitto process on a loopback port; ``stop()`` then ``start()`` is an outage. Persistence is on,
    so the subscriber's session (and QoS 1 messages queued for it) survive the restart, as in production."""

    def __init__(self, exe: str, workdir: Path, nodelay: bool = False) -> None:
        self.exe = exe
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {workdir}/",
            "max_queued_messages 0",  # no silent drops of QoS 1 messages queued for a slow subscriber
        ]
        if nodelay:
            lines.append("set_tcp_nodelay true")
        if os.geteuid() == 0:
            lines.append("user root")  # else Mosquitto drops to 'mosquitto', who cannot write workdir
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    status = self.proc.returncode
                    raise RuntimeError(f"mosquitto exited with status {status}:\n{tail}") from None
                if time.monotonic() >= deadline:
                    raise RuntimeError("mosquitto did not start listening within 10 s") from None
                time.sleep(0.005)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # a clean stop: Mosquitto writes its persistence file
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# pipeline rounds ----------------------------------------------------------------------------------------


@dataclass
class Bench:
    """What every round needs."""

    stages: ModelStages
    names: tuple[str, ...]
    model_path: Path | None
    model_name: str
    images: list[np.ndarray]
    tmp: Path
    port_up: int
    port_down: int
    subscriber: Subscriber
    broker: Broker
    rounds_run: int = 0

    def helper_pids(self) -> list[int]:
        procs = (self.broker.proc, self.subscriber.proc)
        return [p.pid for p in procs if p is not None]

    def sink(self, url_port: int, flush_timeout_s: float, box: list[Pipeline], **config: Any) -> MqttSink:
        self.rounds_run += 1
        ctx = SinkContext(
            class_names=self.names,
            stats=lambda: box[0].stats() if box else PipelineStats(),
            model_path=self.model_path,
            model_name=self.model_name,
            source_uri="replay:",
            state_dir=self.tmp / f"state-{self.rounds_run}",
        )
        cfg = MqttSinkConfig(
            url=f"mqtt://127.0.0.1:{url_port}",
            device_id=DEVICE,
            discovery=False,
            flush_timeout_s=flush_timeout_s,
            **config,
        )
        return MqttSink(cfg, ctx, Credentials())


@dataclass
class Round:
    condition: str
    fps: float
    frames: int
    close_s: float  # from the last result to the end of run() (the sinks' close, the MQTT flush)
    others_cores: float  # CPU other processes of the machine used meanwhile, in cores
    received: int = 0
    duplicates: int = 0
    publish_ms: list[float] = field(default_factory=list)
    capture_ms: list[float] = field(default_factory=list)
    puback_ms_p50: float = float("nan")
    puback_ms_p99: float = float("nan")
    acked: int = 0
    spooled: int = 0
    lost: int = 0


def busy_cpu_s() -> float:
    """CPU seconds every process on the machine has used (all cores, steal included), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_s(pids: Sequence[int]) -> float:
    """CPU seconds this process and ``pids`` (the broker, the subscriber) have used."""
    t = os.times()
    total = t.user + t.system
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        total += (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
    return total


def measure(pipe: Pipeline, n: int, pids: Sequence[int]) -> tuple[PipelineStats, float, float]:
    """Run ``pipe``: the stats snapshot as of its last result, the seconds it took after that, and how many
    cores other processes kept busy until the last result (the noise this round had to share the CPU with)."""
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(pids), time.perf_counter()
    pipe.start()
    while True:
        finished = pipe.wait(POLL_S)
        at_last = pipe.stats()
        if finished or at_last.frames_done >= n:
            break
    t_last = time.perf_counter()
    others = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s(pids) - own0)) / (t_last - t0)
    pipe.wait()
    return at_last, time.perf_counter() - t_last, others


def run_round(bench: Bench, condition: str, n: int) -> Round:
    box: list[Pipeline] = []
    sink: MqttSink | None = None
    if condition == "up":
        sink = bench.sink(bench.port_up, FLUSH_UP_S, box)
    elif condition == "down":
        sink = bench.sink(bench.port_down, 0.0, box)
    pipe = Pipeline(ReplaySource(bench.images, n), bench.stages, {"mqtt": sink} if sink is not None else {})
    box.append(pipe)
    stats, close_s, others = measure(pipe, n, bench.helper_pids())
    r = Round(condition, stats.fps_mean, stats.frames_done, close_s, others)
    if sink is None:
        return r
    link = sink.publisher.stats()
    r.acked = link.delivery.acked
    r.puback_ms_p50, r.puback_ms_p99 = link.delivery.publish_ms_p50, link.delivery.publish_ms_p99
    r.spooled = sink.spool.stats().depth
    r.lost = sink.report().lost
    if condition == "up":
        sub = bench.subscriber
        sub.wait(lambda: len(sub.received(sink.boot_id)) >= stats.frames_done, RECEIVE_TIMEOUT_S)
        got = sub.received(sink.boot_id)
        r.received = len(got)
        r.duplicates = sub.duplicates.get(sink.boot_id, 0)
        for m in got.values():
            r.capture_ms.append((m.received - m.wall_time) * 1000.0)
            r.publish_ms.append((m.received - m.wall_time) * 1000.0 - m.latency_ms)
    return r


# spool and replay ---------------------------------------------------------------------------------------


def bench_spool(payloads: Sequence[bytes], n: int, rounds: int, tmp: Path) -> dict[int, list[float]]:
    """Messages per second through :meth:`Spool.append`, one message and ``SPOOL_BATCH`` messages per
    append, alternating, each measurement on a fresh spool file with the sink's default limits."""
    defaults = MqttSinkConfig()
    messages = [(TOPICS.results, payloads[i % len(payloads)]) for i in range(n)]
    out: dict[int, list[float]] = {1: [], SPOOL_BATCH: []}
    for r in range(rounds):
        for batch in (1, SPOOL_BATCH) if r % 2 == 0 else (SPOOL_BATCH, 1):
            folder = tmp / f"spool-bench-{r}-{batch}"
            spool = Spool(folder / "spool.sqlite3", defaults.spool_max_bytes, defaults.spool_max_age_s)
            chunks = [messages[i : i + batch] for i in range(0, n, batch)]
            t0 = time.perf_counter()
            stored = sum(spool.append(c) for c in chunks)
            dt = time.perf_counter() - t0
            spool.close()
            shutil.rmtree(folder)
            if stored != n:
                raise RuntimeError(f"the spool stored {stored} of {n} messages")
            out[batch].append(n / dt)
    return out


@dataclass
class Replay:
    n: int
    fill_msgs_per_s: float
    connect_after_start_s: float
    replay_s: float
    acked_s: float
    received_s: float
    received: int
    replayed_flag: int
    duplicates: int
    spool_left: int


def bench_replay(bench: Bench, broker: Broker, results: Sequence[Result], n: int) -> Replay:
    """Outage: stop the broker, put ``n`` results through a live sink into its spool, start the broker, time
    the replay from the publisher's connect until the subscriber has all ``n`` and the broker acked all."""
    sub = bench.subscriber
    broker.stop()
    # reconnect_max_s 1: the publisher's backoff after the broker is back is reported, not in the rate
    sink = bench.sink(bench.port_up, FLUSH_UP_S, [], reconnect_min_s=0.2, reconnect_max_s=1.0)
    try:
        t0 = time.perf_counter()
        sent = 0
        while sent < n:
            chunk = [results[(sent + i) % len(results)] for i in range(min(SPOOL_BATCH, n - sent))]
            sink.send_batch(chunk)
            sent += len(chunk)
        fill_rate = n / (time.perf_counter() - t0)
        depth = sink.spool.stats().depth
        if depth != n or sink.publisher.stats().connects:
            raise RuntimeError(f"replay setup: spool holds {depth} of {n} (or the publisher connected)")
        broker.start()
        t_listening = time.time()
        t_connect = t_acked = 0.0
        deadline = time.monotonic() + 60.0 + n / 50.0
        while time.monotonic() < deadline:
            link = sink.publisher.stats()
            now = time.time()
            if not t_connect and link.connects:
                t_connect = now
            if not t_acked and link.delivery.acked >= n:
                t_acked = now
            if t_acked and len(sub.received(sink.boot_id)) >= n:
                break
            time.sleep(0.002 if not t_connect else 0.01)
        got = sub.received(sink.boot_id)
        if not t_connect or not t_acked or len(got) < n:
            raise RuntimeError(
                f"replay incomplete after the timeout: connected={bool(t_connect)}, acked "
                f"{sink.publisher.stats().delivery.acked} of {n}, received {len(got)} of {n}"
            )
        t_received = max(m.received for m in got.values())
        return Replay(
            n=n,
            fill_msgs_per_s=fill_rate,
            connect_after_start_s=t_connect - t_listening,
            replay_s=max(t_received, t_acked) - t_connect,
            acked_s=t_acked - t_connect,
            received_s=t_received - t_connect,
            received=len(got),
            replayed_flag=sum(m.replay for m in got.values()),
            duplicates=sub.duplicates.get(sink.boot_id, 0),
            spool_left=sink.spool.stats().depth,
        )
    finally:
        sink.close()


# main ---------------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.percentile(finite, q)) if finite else float("nan")


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def fs_type(path: Path) -> str:
    """The file system ``path`` is on (from /proc/mounts): an fsync on tmpfs costs nothing."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
            if len(parts) > 2 and inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def r3(value: float) -> float | None:
    return round(value, 3) if np.isfinite(value) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("pipeline", nargs="?", help="pipeline YAML (default: demo)")
    ap.add_argument("--frames", type=int, default=150, help="frames per round (default 150)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per condition (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--replay-n", type=int, default=2000, help="results in the outage's backlog (2000)")
    ap.add_argument("--spool-n", type=int, default=600, help="messages per spool write measurement (600)")
    ap.add_argument(
        "--broker-nodelay",
        action="store_true",
        help="set_tcp_nodelay true in the broker's config (default: Mosquitto's default, false)",
    )
    ap.add_argument("--tmp-dir", type=Path, help="where spools and the broker's files go (default: TMPDIR)")
    ap.add_argument("--subscriber", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.subscriber:
        subscriber_main(int(args.subscriber[0]), Path(args.subscriber[1]))
        return
    if args.frames < 2 or args.rounds < 1 or args.replay_n < 1 or args.spool_n < SPOOL_BATCH:
        ap.error("--frames >= 2, --rounds >= 1, --replay-n >= 1 and --spool-n >= 8 please")
    logging.basicConfig(level=logging.WARNING, format="  [log] %(name)s: %(message)s")
    exe = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if exe is None:
        sys.exit("mosquitto not found (apt-get install mosquitto)")
    run_t0 = time.perf_counter()

    config = load_config(args.pipeline, [f"model.threads={args.threads}"])
    stages = ModelStages.from_config(config)
    card = stages.model.card
    names = tuple(card.classes)
    scene = PartsScene(640, 480, seed=1)
    images = [scene.frame(i).image for i in range(50)]

    with tempfile.TemporaryDirectory(prefix="bench-mqtt-", dir=args.tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        broker = Broker(exe, tmp / "broker", args.broker_nodelay)
        sub: Subscriber | None = None
        try:
            broker.start()
            port_down = free_port()
            if port_down == broker.port or not nothing_listens(port_down):
                raise RuntimeError(f"port {port_down} is not free for the broker-down rounds")
            sub = Subscriber(broker.port, tmp / "subscriber.log")
            if not sub.wait(lambda: bool(sub.subscribes), 30.0, every=0.05):
                raise RuntimeError("the subscriber did not subscribe within 30 s")
            bench = Bench(
                stages, names, card.file, card.name, images, tmp, broker.port, port_down, sub, broker
            )
            print(
                f"MQTT sink benchmark: model {card.name}, --threads {args.threads}, {args.frames} frames x "
                f"{args.rounds} rounds per condition; mosquitto on 127.0.0.1:{broker.port}, nothing on "
                f":{port_down}; temp dir {tmp} ({fs_type(tmp)})",
                flush=True,
            )

            # warm-up (not measured), and the real results the spool and replay figures use
            collector = Collector()
            Pipeline(ReplaySource(images, len(images)), stages, {"collect": collector}).run()
            results = collector.results
            payloads = [
                results_payload(encoded_record(r, "rle", names), "0" * 32, i) for i, r in enumerate(results)
            ]

            # 1 + 2: alternating rounds
            rounds: dict[str, list[Round]] = {c: [] for c in CONDITIONS}
            for k in range(args.rounds):
                for condition in CONDITIONS if k % 2 == 0 else CONDITIONS[::-1]:
                    r = run_round(bench, condition, args.frames)
                    rounds[condition].append(r)
                    extra = ""
                    if condition == "up":
                        extra = (
                            f"received {r.received}/{r.frames}, acked {r.acked}, "
                            f"after the last result {r.close_s:.2f} s"
                        )
                    elif condition == "down":
                        extra = f"left in the spool {r.spooled}/{r.frames}"
                    line = (
                        f"  round {k + 1}  {LABELS[condition]:<22}{r.fps:7.2f} fps   "
                        f"other processes {r.others_cores:4.2f} cores   {extra}"
                    )
                    print(line.rstrip(), flush=True)

            # 3: spool writes
            spool_rates = bench_spool(payloads, args.spool_n, args.rounds, tmp)

            # 4: replay after an outage (the last: it restarts the broker)
            replay = bench_replay(bench, broker, results, args.replay_n)
        finally:
            if sub is not None:
                sub.close()
            broker.stop()

    fps = {c: median([r.fps for r in rs]) for c, rs in rounds.items()}
    ratio_up, ratio_down = fps["up"] / fps["off"], fps["down"] / fps["off"]
    paired_up = median([u.fps / o.fps for u, o in zip(rounds["up"], rounds["off"], strict=True)])
    paired_down = median([d.fps / o.fps for d, o in zip(rounds["down"], rounds["off"], strict=True)])
    up = rounds["up"]
    publish_ms = [v for r in up for v in r.publish_ms]
    capture_ms = [v for r in up for v in r.capture_ms]
    expected = sum(r.frames for r in up)
    received = sum(r.received for r in up)
    puback_p50 = median([r.puback_ms_p50 for r in up])
    puback_p99 = median([r.puback_ms_p99 for r in up])
    spool_med = {b: median(v) for b, v in spool_rates.items()}
    replay_rate = replay.n / replay.replay_s
    sizes = [len(p) for p in payloads]
    run_s = time.perf_counter() - run_t0

    def verdict(ok: bool) -> str:
        return "ok" if ok else "BELOW TARGET"

    w = 36
    print()
    print(
        f"{'pipeline FPS (median of rounds)':<{w}}"
        + ", ".join(f"{LABELS[c]} {fps[c]:.2f}" for c in CONDITIONS)
    )
    print(
        f"{'fps_ratio_broker_up':<{w}}{ratio_up:.3f}  (target >= {TARGET_FPS_RATIO}: "
        f"{verdict(ratio_up >= TARGET_FPS_RATIO)}; median of per-round ratios {paired_up:.3f})"
    )
    print(
        f"{'fps_ratio_broker_down':<{w}}{ratio_down:.3f}  (target >= {TARGET_FPS_RATIO}: "
        f"{verdict(ratio_down >= TARGET_FPS_RATIO)}; median of per-round ratios {paired_down:.3f})"
    )
    print(
        f"{'result -> subscriber (publish_ms)':<{w}}p50 {pct(publish_ms, 50):.1f} ms, "
        f"p99 {pct(publish_ms, 99):.1f} ms  ({received}/{expected} results received in the broker-up rounds)"
    )
    print(
        f"{'capture -> subscriber':<{w}}p50 {pct(capture_ms, 50):.1f} ms, p99 {pct(capture_ms, 99):.1f} ms"
        "  (the pipeline's own latency included)"
    )
    print(
        f"{'publisher publish -> PUBACK':<{w}}p50 {puback_p50:.2f} ms, p99 {puback_p99:.2f} ms"
        "  (median of the broker-up rounds)"
    )
    print(
        f"{'spool writes':<{w}}{spool_med[1]:.0f} msg/s one per append, "
        f"{spool_med[SPOOL_BATCH]:.0f} msg/s {SPOOL_BATCH} per append  ({args.spool_n} messages per "
        f"measurement, median payload {statistics.median(sizes):.0f} B)"
    )
    print(
        f"{'replay after an outage':<{w}}{replay_rate:.0f} msg/s: {replay.n} results in "
        f"{replay.replay_s:.2f} s from the connect (broker acked all after {replay.acked_s:.2f} s, "
        f"subscriber had all after {replay.received_s:.2f} s)"
    )
    print(
        f"{'':<{w}}connect {replay.connect_after_start_s:.2f} s after the broker was back; "
        f"{replay.replayed_flag} marked replay, {replay.duplicates} duplicates, "
        f"{replay.spool_left} left in the spool"
    )
    print(f"{'sink fill during the outage':<{w}}{replay.fill_msgs_per_s:.0f} results/s through send_batch")
    print(f"{'run time':<{w}}{run_s:.0f} s")
    busiest = max(r.others_cores for rs in rounds.values() for r in rs)
    if busiest > NOISY_CORES:
        print(
            f"WARNING: other processes kept up to {busiest:.2f} cores busy during some rounds (see above): "
            "the FPS ratios are unreliable; rerun on a quieter machine or with more --rounds"
        )
    doc = {
        "fps_ratio_broker_up": r3(ratio_up),
        "fps_ratio_broker_down": r3(ratio_down),
        "fps_ratio_broker_up_paired_median": r3(paired_up),
        "fps_ratio_broker_down_paired_median": r3(paired_down),
        "fps_off_median": r3(fps["off"]),
        "fps_broker_up_median": r3(fps["up"]),
        "fps_broker_down_median": r3(fps["down"]),
        "fps_off_rounds": [r3(r.fps) for r in rounds["off"]],
        "fps_broker_up_rounds": [r3(r.fps) for r in rounds["up"]],
        "fps_broker_down_rounds": [r3(r.fps) for r in rounds["down"]],
        "other_load_cores_rounds": {c: [r3(r.others_cores) for r in rs] for c, rs in rounds.items()},
        "other_load_cores_max": r3(busiest),
        "target_fps_ratio": TARGET_FPS_RATIO,
        "fps_ratio_broker_up_ok": ratio_up >= TARGET_FPS_RATIO,
        "fps_ratio_broker_down_ok": ratio_down >= TARGET_FPS_RATIO,
        "publish_ms_p50": r3(pct(publish_ms, 50)),
        "publish_ms_p99": r3(pct(publish_ms, 99)),
        "capture_to_receive_ms_p50": r3(pct(capture_ms, 50)),
        "capture_to_receive_ms_p99": r3(pct(capture_ms, 99)),
        "puback_ms_p50": r3(puback_p50),
        "puback_ms_p99": r3(puback_p99),
        "live_results_expected": expected,
        "live_results_received": received,
        "live_results_duplicates": sum(r.duplicates for r in up),
        "broker_down_results_spooled": sum(r.spooled for r in rounds["down"]),
        "results_lost": sum(r.lost for c in ("up", "down") for r in rounds[c]),
        "spool_write_msgs_per_s": {f"batch_{b}": r3(v) for b, v in spool_med.items()},
        "spool_write_rounds": {f"batch_{b}": [r3(v) for v in vs] for b, vs in spool_rates.items()},
        "spool_write_n": args.spool_n,
        "payload_bytes_median": statistics.median(sizes),
        "replay_msgs_per_s": r3(replay_rate),
        "replay_n": replay.n,
        "replay_s": r3(replay.replay_s),
        "replay_acked_s": r3(replay.acked_s),
        "replay_received_s": r3(replay.received_s),
        "replay_connect_after_broker_start_s": r3(replay.connect_after_start_s),
        "replay_marked_replay": replay.replayed_flag,
        "replay_duplicates": replay.duplicates,
        "replay_spool_left": replay.spool_left,
        "outage_fill_results_per_s": r3(replay.fill_msgs_per_s),
        "frames_per_round": args.frames,
        "rounds": args.rounds,
        "threads": args.threads,
        "broker_tcp_nodelay": args.broker_nodelay,
        "run_s": round(run_s, 1),
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    try:
        main()
    except EdgesegError as exc:  # a pipeline, model or video it cannot use: one line, as the edgeseg command
        raise SystemExit(f"bench_mqtt: {exc}") from None
