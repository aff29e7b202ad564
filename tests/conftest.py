"""Shared fixtures: where the real third-party assets live, and a loud failure in CI when they don't."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mjpeg import MjpegServer, real_jpegs
from mqtt_harness import Broker, Collector

REPO = Path(__file__).resolve().parents[1]


def assets_root() -> Path:
    return Path(os.environ.get("EDGESEG_ASSETS", REPO.parent / "shared" / "assets")).resolve()


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The shared assets folder; tests that need it fail in CI (CI=true) when it is missing, else skip."""
    root = assets_root()
    if not (root / "MANIFEST.md").is_file():
        msg = f"shared assets not found at {root} (set EDGESEG_ASSETS)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker on a random loopback port, stopped after the test."""
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    """A paho subscriber to everything on ``broker``."""
    c = Collector(broker.port)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def mjpeg_server(assets_dir: Path) -> Iterator[MjpegServer]:
    """An MJPEG stream of real video frames on a loopback port; ``flowing.clear()`` stalls it."""
    server = MjpegServer(real_jpegs(assets_dir))
    try:
        yield server
    finally:
        server.close()


class FakeClock:
    """The monotonic clock, stopped: ``now`` (seconds) moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def monotonic_ns(self) -> int:
        return round(self.now * 1e9)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """``time.monotonic`` and ``time.monotonic_ns`` read a :class:`FakeClock` for the test (a module that
    bound them at import, as ``threading`` did, keeps the real ones)."""
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock.monotonic)
    monkeypatch.setattr(time, "monotonic_ns", clock.monotonic_ns)
    return clock
