"""Tune mode: a real ``edgeseg run --tune`` window under Xvfb, driven by real X key events (xdotool)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mqtt_harness import edgeseg_env
from test_display import xvfb  # noqa: F401  (the fixture)

DIST = "postprocess.semantic.dist_threshold"


def _xdotool() -> str:
    exe = shutil.which("xdotool")
    if exe is None:
        msg = "xdotool not installed (apt-get install xdotool; scripts/test.sh does it as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_keys_in_the_tune_window_change_the_threshold_of_the_next_results_and_save_it(
    tmp_path: Path,
    xvfb: str,  # noqa: F811
) -> None:
    xdotool = _xdotool()
    out, state = tmp_path / "o.jsonl", tmp_path / "state"
    cmd = [sys.executable, "-m", "edgeseg", "run", "--tune", "--source", "synthetic:parts?fps=5",
           "--output", str(out), "--state-dir", str(state)]  # fmt: skip
    env = edgeseg_env(DISPLAY=xvfb)
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        assert _wait(lambda: len(_records(out)) >= 2, 60), err.read_text()
        windows: list[str] = []

        def find() -> bool:
            found = subprocess.run([xdotool, "search", "--name", "^edgeseg$"], env=env, capture_output=True)
            windows[:] = found.stdout.decode().split()
            return bool(windows)

        assert _wait(find, 30), f"no edgeseg window; {err.read_text()}"

        def press(*keys: str) -> None:
            for key in keys:
                for window in windows:  # Qt makes several X windows for one HighGUI window
                    subprocess.run([xdotool, "key", "--window", window, key], env=env, capture_output=True)
                time.sleep(0.3)

        # the trackbars: erosion_kernel, erosion_iteration, dist_threshold, ...: select the third, step it up
        press("n", "n", "bracketright")
        assert _wait(lambda: any(r["config_version"] == 2 for r in _records(out)), 30), err.read_text()
        press("s")
        tuning = state / "tuning-demo.yaml"
        assert _wait(tuning.is_file, 10), err.read_text()
        assert tuning.read_text().rstrip().endswith(f"{DIST}: 0.21")
        press("q")
        assert proc.wait(30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    versions = [r["config_version"] for r in _records(out)]
    assert versions == sorted(versions)  # once changed, every later result has the new settings
    assert versions[0] == 1
    assert versions[-1] == 2
