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
from test_display import shown_at, xvfb  # noqa: F401  (the fixture)

from edgeseg.config import load_config
from edgeseg.errors import ConfigError
from edgeseg.modelcard import find_card

SCORE = "postprocess.semantic.min_score"
_card = find_card(Path(__file__).resolve().parents[1] / "models" / "demo-parts.onnx").semantic
assert _card is not None
CARD_SCORE = _card.min_score


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

        # the trackbars of the demo model (it draws where parts touch): size_threshold, min_score, ...: select
        # the second, step it up
        press("n", "bracketright")
        assert _wait(lambda: any(r["config_version"] == 2 for r in _records(out)), 30), err.read_text()
        press("s")
        tuning = state / "tuning-demo.yaml"
        assert _wait(tuning.is_file, 10), err.read_text()
        # "]" steps the trackbar by 0.01 from the card's value
        assert tuning.read_text().rstrip().endswith(f"{SCORE}: {round(CARD_SCORE + 0.01, 2)}")
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


TRACKBAR = """
import cv2, numpy as np, time
from dataclasses import replace
from pathlib import Path
from edgeseg.config import load_config
from edgeseg.control import Control
from edgeseg.frame import Frame, Result
from edgeseg.modelcard import find_card
from edgeseg.instances import Instances
from edgeseg.sinks.base import SinkContext
from edgeseg.sinks.display import DisplaySink
card = find_card("models/demo-parts.onnx")
# as if the model gave no contact map: its components are split by distance reliefs, by a threshold in (0, 1]
card = replace(card, output=replace(card.output, contact=None))
control = Control(load_config(None, env={}), card)
# a trackbar wider than the key's range (its 0 a value the key refuses), for a refusal to snap back from
tunables = control.tunables
control.tunables = lambda: [replace(t, lo=0.0) if t.key.endswith("dist_threshold") else t for t in tunables()]
sink = DisplaySink("edgeseg-tb", SinkContext(control=control), tune=True)
img = np.full((120, 160, 3), 90, np.uint8)
result = Result(Frame(0, img, time.monotonic_ns(), time.time()), Instances.empty((120, 160)))
sink.send(result)
print("version before", control.current().version)
cv2.setTrackbarPos("dist_threshold", "edgeseg-tb", 35)  # as a drag does: HighGUI calls back, this thread
sink.send(result)
print("dist", control.value("postprocess.semantic.dist_threshold"), "version", control.current().version)
cv2.setTrackbarPos("dist_threshold", "edgeseg-tb", 0)  # 0 is outside (0, 1]: refused, the bar goes back
sink.send(result)
print("after refusal", control.value("postprocess.semantic.dist_threshold"),
      cv2.getTrackbarPos("dist_threshold", "edgeseg-tb"), "|", " / ".join(sink.panel.lines()))
sink.close()
"""


def test_a_trackbar_moved_in_the_window_changes_the_live_value_and_a_refused_one_snaps_back(
    xvfb: str,  # noqa: F811
) -> None:
    done = _in_window(TRACKBAR, xvfb)
    assert "version before 1" in done.stdout
    assert "dist 0.35 version 2" in done.stdout
    after = done.stdout.split("after refusal ")[1]
    assert after.startswith("0.35 35 |"), done.stdout
    assert "dist_threshold: must be in (0, 1] (got 0.0)" in after


STEP_PAST_END = """
import cv2
from edgeseg.config import load_config
from edgeseg.control import Control
from edgeseg.modelcard import find_card
from edgeseg.sinks.tune import KEY_DOWN, KEY_NEXT, KEY_UP, TunePanel
control = Control(load_config(None, env={}), find_card("models/demo-parts.onnx"))
cv2.namedWindow("edgeseg-step")
panel = TunePanel("edgeseg-step", control)
panel.create()
key = "postprocess.semantic.size_threshold"  # no upper bound: its trackbar ends at 4x the card's value
while panel.sliders[panel.selected].key != key:
    panel.key(KEY_NEXT)
end = panel.sliders[panel.selected].last
control.update({key: 10 * end}, "mqtt")  # past the trackbar's end, as MQTT or the web page may set it
panel.key(KEY_UP)
print("up", control.value(key) - 10 * end)
panel.key(KEY_DOWN)
panel.key(KEY_DOWN)
print("down", control.value(key) - 10 * end)
"""


def test_a_step_from_a_value_past_the_trackbars_end_moves_it_one_step_that_way(
    xvfb: str,  # noqa: F811
) -> None:
    """Set over MQTT past the trackbar's end, a value stepped up in the window fell to the trackbar's end."""
    done = _in_window(STEP_PAST_END, xvfb)
    assert done.stdout.split() == ["up", "1", "down", "-1"], done.stdout


POSITIONS = """
import cv2
from edgeseg.config import load_config
from edgeseg.control import Control
from edgeseg.modelcard import find_card
from edgeseg.sinks.tune import KEY_NEXT, KEY_UP, TunePanel
control = Control(load_config(None, env={}), find_card("models/demo-parts.onnx"))
cv2.namedWindow("edgeseg-pos")
panel = TunePanel("edgeseg-pos", control)
panel.create()
while panel.sliders[panel.selected].name != "max_instances":
    panel.key(KEY_NEXT)
panel.key(KEY_UP)
for s in panel.sliders:
    if s.kind == "integer":
        print(s.name, cv2.getTrackbarPos(s.name, "edgeseg-pos"), control.value(s.key))
"""


def test_an_integers_trackbar_stands_at_its_value_which_its_label_shows(
    xvfb: str,  # noqa: F811
) -> None:
    """Qt labels a trackbar with its position ("name (pos/max)", window_QT.cpp, CvTrackbar::setLabel): a
    trackbar counted from the key's lowest value said 300 for a max_instances of 301 (its lowest is 1)."""
    done = _in_window(POSITIONS, xvfb)
    shown = {name: (int(pos), int(value)) for name, pos, value in map(str.split, done.stdout.splitlines())}
    assert shown["max_instances"] == (301, 301)
    assert all(pos == value for pos, value in shown.values()), shown


SAVE_MESSAGE = """
import cv2, sys
from pathlib import Path
from edgeseg.config import load_config
from edgeseg.control import Control
from edgeseg.modelcard import find_card
from edgeseg.sinks.tune import KEY_SAVE, TunePanel
tuning = Path(sys.argv[1]) / "tuning-demo.yaml"
control = Control(load_config(None, env={}), find_card("models/demo-parts.onnx"), tuning=tuning)
cv2.namedWindow("edgeseg-save")
panel = TunePanel("edgeseg-save", control)
panel.create()
control.update({"postprocess.semantic.min_score": 0.41, "postprocess.semantic.size_threshold": 47}, "mqtt")
panel.key(KEY_SAVE)
print("\\n".join(panel.lines()))
"""


def test_the_save_message_in_the_window_names_every_value_saved(
    tmp_path: Path,
    xvfb: str,  # noqa: F811
) -> None:
    """The window cut its message at 100 characters: "saved 2 tuned values to PATH: ..." lost the values
    after the first (the HUD wraps a long line since; the cut stayed)."""
    done = _in_window(SAVE_MESSAGE, xvfb, str(tmp_path))
    saved = done.stdout.splitlines()[1]
    assert saved == (
        f"saved 2 tuned values to {tmp_path / 'tuning-demo.yaml'}: "
        "postprocess.semantic.size_threshold=47, postprocess.semantic.min_score=0.41"
    )


TUNE_SINK = """
from edgeseg.config import load_config
from edgeseg.control import Control
from edgeseg.modelcard import find_card
from edgeseg.sinks.base import SinkContext
control = Control(load_config(None, env={}), find_card("models/demo-parts.onnx"))
sink = DisplaySink("edgeseg-test", SinkContext(control=control), tune=True)
assert len(sink.panel.sliders) >= 3
"""


def test_the_trackbars_grow_the_window_so_the_frame_is_still_shown_at_its_own_size(
    xvfb: str,  # noqa: F811
) -> None:
    """Qt puts the trackbars inside the window sized for the frame: a 320x240 frame was shown at 186x140;
    and so once more when a frame of another size resizes the window."""
    done = _in_window(shown_at(TUNE_SINK, [(320, 240), (400, 300)]), xvfb)
    assert done.stdout.splitlines() == ["shown 320 240", "shown 400 300"]


def test_a_run_with_trackbars_ends_without_qt_warnings_about_timers_of_another_thread(
    tmp_path: Path,
    xvfb: str,  # noqa: F811
) -> None:
    """Every tune run ended with "QObject::killTimer: Timers cannot be stopped from another thread" and a
    ~QObject line: Qt's pixmap cache, made on the sink's thread, destroyed by the exit handlers on the main
    thread."""
    cmd = [sys.executable, "-m", "edgeseg", "run", "--tune", "--source", "synthetic:parts?fps=10",
           "--max-frames", "3"]  # fmt: skip
    env = {k: v for k, v in edgeseg_env(DISPLAY=xvfb).items() if k != "QT_STYLE_OVERRIDE"}
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "writing window 'edgeseg'" in done.stderr
    assert "QObject" not in done.stderr, done.stderr


def _in_window(script: str, display: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by Python with ``args`` in the repository on X display ``display``; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=edgeseg_env(DISPLAY=display),
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_tune_mode_refuses_a_window_title_that_is_not_ascii_at_load_naming_the_key() -> None:
    """OpenCV's Qt backend finds a trackbar's window by the title's bytes read as Latin-1 (window_QT.cpp,
    icvFindTrackBarByName) but made the window from them as UTF-8: with a title like "Prüfstand" every
    frame failed ("NULL window handler") and the window never showed one."""
    tune = ["sinks.display.enabled=true", "sinks.display.tune=true"]
    with pytest.raises(ConfigError, match=r"sinks\.display\.window: .*ASCII.*\(got 'Prüfstand'\)"):
        load_config(None, [*tune, "sinks.display.window=Prüfstand"], env={})
    load_config(None, [*tune, "sinks.display.window=Pruefstand"], env={})
    load_config(None, ["sinks.display.enabled=true", "sinks.display.window=Prüfstand"], env={})  # no tune


def test_tune_with_no_display_is_refused_in_one_line_and_opens_no_window(
    tmp_path: Path,
    xvfb: str,  # noqa: F811
) -> None:
    """--tune turned the window on after --no-display turned it off: under a display the window opened."""
    out = tmp_path / "o.jsonl"
    cmd = [sys.executable, "-m", "edgeseg", "run", "--tune", "--no-display", "--source", "synthetic:parts",
           "--max-frames", "2", "--output", str(out), "--state-dir", str(tmp_path / "state")]  # fmt: skip
    done = subprocess.run(cmd, env=edgeseg_env(DISPLAY=xvfb), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "edgeseg: error: --tune: tune mode is the display window, which --no-display turns off; drop one"
    ]
    assert not out.exists()  # nothing ran


def test_tune_with_no_display_says_the_tune_window_needs_one_not_to_run_with_no_display(
    tmp_path: Path,
) -> None:
    """With no display the error said "run with --no-display", which --tune refuses."""
    out = tmp_path / "o.jsonl"
    cmd = [sys.executable, "-m", "edgeseg", "run", "--tune", "--source", "synthetic:parts",
           "--max-frames", "2", "--output", str(out), "--state-dir", str(tmp_path / "state")]  # fmt: skip
    done = subprocess.run(cmd, env=edgeseg_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edgeseg: error: sinks.display: no display: DISPLAY and WAYLAND_DISPLAY are unset "
        "(tune mode is the display window: run it where there is one, or tune with --web)"
    ]
    assert not out.exists()
