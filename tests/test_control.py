"""Live control (edgeseg.control): one validated update point, versioned snapshots carried by each frame,
saved tuning, and reload."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from mqtt_harness import edgeseg_env

from edgeseg.cli import reload_line
from edgeseg.config import Override, PipelineConfig, load_config
from edgeseg.control import Control, describe_tuning, load_tuning, tuning_path
from edgeseg.errors import ConfigError
from edgeseg.frame import Frame, Result
from edgeseg.instances import Instances
from edgeseg.live import Snapshot
from edgeseg.modelcard import OutputSpec, find_card
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.semantic import SemanticParams
from edgeseg.sources import make_source

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pipelines" / "demo.yaml"
DEMO_CARD = find_card(REPO / "models" / "demo-parts.onnx")
# the demo model draws where parts touch (a contact map): its live split parameters are the smallest part
# kept, the lowest score kept and the rods; the distance relief's do not apply to it
SCORE = "postprocess.semantic.min_score"
SIZE = "postprocess.semantic.size_threshold"
RELIEF = "postprocess.semantic.dist_threshold"
assert DEMO_CARD.semantic is not None
CARD_SCORE = DEMO_CARD.semantic.min_score
assert CARD_SCORE != 0.35  # the tests change it to 0.35
CARD_SIZE = DEMO_CARD.semantic.size_threshold


# the demo model as if it gave no contact map: its components are split by distance reliefs
SPLIT_CARD = replace(DEMO_CARD, output=replace(DEMO_CARD.output, contact=None))


def _config(*overrides: str) -> PipelineConfig:
    return load_config(DEMO, list(overrides), env={})


def _control(*overrides: str, **kwargs: Any) -> Control:
    return Control(_config(*overrides), DEMO_CARD, **kwargs)


@pytest.mark.parametrize("card", [DEMO_CARD, SPLIT_CARD], ids=["contact map", "distance reliefs"])
def test_both_ends_of_every_tunables_range_are_values_the_key_takes(card: Any) -> None:
    """A slider spans lo..hi in the window, the web page and Home Assistant: dist_threshold's lo was its
    exclusive bound 0, refused when a slider was dragged to its end."""
    control = Control(_config(), card)
    for t in control.tunables():
        for end in (t.lo, t.hi):
            if end is not None and t.kind in ("number", "integer"):
                value = int(end) if t.kind == "integer" else end
                assert control.update({t.key: value}, "test").rejected == {}, (t.key, value)


def test_a_valid_change_makes_a_new_version_with_the_value_in_effect() -> None:
    control = _control()
    before = control.current()
    outcome = control.update({SCORE: 0.35}, "test")
    assert outcome.applied == {SCORE: 0.35}
    assert outcome.version == before.version + 1
    after = control.current()
    assert after.decode.semantic is not None
    assert after.decode.semantic.min_score == 0.35
    # the card's other tuned values (rods, size: not the defaults) stay: one key changes
    assert after.decode.semantic.rods is True
    assert replace(after.decode.semantic, min_score=CARD_SCORE) == DEMO_CARD.semantic
    assert DEMO_CARD.semantic.size_threshold != SemanticParams().size_threshold
    assert before.decode.semantic is not None
    assert before.decode.semantic.min_score == CARD_SCORE


def test_a_null_key_reports_the_model_cards_value() -> None:
    control = _control()
    values = {t.key: t.value for t in control.tunables()}
    assert values[SCORE] == CARD_SCORE
    assert values["postprocess.semantic.rods"] is True
    assert RELIEF not in values  # the model draws where parts touch
    assert values["source.roi"] == [0.0, 0.0, 1.0, 1.0]
    # a semantic model has no yolo-seg thresholds to tune
    assert "postprocess.score_threshold" not in values


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (SCORE, 1.7),
        (SCORE, "abc"),
        ("postprocess.semantic.size_threshold", 2.5),
        ("postprocess.semantic.rods", "yes"),
        ("source.roi", [0, 0, 2, 1]),
        ("postprocess.semantic.dist_treshold", 0.3),
    ],
)
def test_an_invalid_value_is_refused_with_the_yaml_loaders_words(key: str, value: Any) -> None:
    control = _control()
    before = control.current()
    outcome = control.update({key: value}, "test")
    assert not outcome.applied
    assert outcome.version == before.version
    assert control.current() is before  # nothing changed, not even the version
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [f"{key}={json.dumps(value)}"], env={})
    yaml_words = str(err.value).partition(": ")[2].rpartition(" [")[0]
    assert outcome.rejected[key].startswith(yaml_words), (outcome.rejected[key], yaml_words)


def test_a_live_kernel_or_iteration_count_that_would_stall_or_fail_every_frame_is_refused() -> None:
    # applied before: a 100000 px kernel took a minute a frame on a real model, 2**31 iterations failed each
    control = Control(_config(), SPLIT_CARD)
    outcome = control.update(
        {"postprocess.semantic.erosion_kernel": 100000, "postprocess.semantic.erosion_iteration": 2**31},
        "mqtt",
    )
    assert outcome.applied == {}
    assert outcome.rejected == {
        "postprocess.semantic.erosion_kernel": "must be in [1, 63] (got 100000) [mqtt]",
        "postprocess.semantic.erosion_iteration": "must be in [0, 31] (got 2147483648) [mqtt]",
    }
    highest = {t.key: t.hi for t in control.tunables() if t.key.endswith(("_kernel", "_iteration"))}
    assert highest == {f"postprocess.semantic.{k}": 63 if k.endswith("kernel") else 31 for k in (
        "erosion_kernel", "erosion_iteration", "dilate_kernel", "dilate_iteration")}  # fmt: skip


@pytest.mark.parametrize(
    "key", ["model.path", "source.uri", "model.backend", "sinks.jsonl.path", "pipeline.queue_size"]
)
def test_keys_that_need_a_restart_are_refused_saying_so(key: str) -> None:
    control = _control()
    value = {"model.path": "/m.onnx", "source.uri": "v4l2:0", "model.backend": "onnxruntime"}.get(key)
    value = value or ({"sinks.jsonl.path": "x.jsonl"}.get(key) or 3)
    outcome = control.update({key: value}, "test")
    assert outcome.rejected[key].startswith("needs a restart")
    assert outcome.version == 1


def test_a_key_the_model_does_not_use_is_refused_not_ignored() -> None:
    outcome = _control().update({"postprocess.iou_threshold": 0.5}, "test")
    assert "has no effect" in outcome.rejected["postprocess.iou_threshold"]


def test_a_model_that_draws_where_parts_touch_offers_no_split_parameter_and_refuses_them() -> None:
    card = replace(SPLIT_CARD, classes=(*DEMO_CARD.classes, "contact"), contact=len(DEMO_CARD.classes))
    control = Control(_config(), card)
    offered = {t.key.removeprefix("postprocess.semantic.") for t in control.tunables()}
    assert offered >= {"size_threshold", "min_score", "max_instances"}
    assert not offered & {"dist_threshold", "erosion_kernel", "saddle_ratio", "rods"}
    outcome = control.update({RELIEF: 0.35, SCORE: 0.5}, "test")
    assert "nothing is split" in outcome.rejected[RELIEF]
    assert outcome.applied == {SCORE: 0.5}


def test_a_model_with_a_contact_map_offers_the_size_score_and_rods_and_refuses_the_relief_parameters() -> (
    None
):
    assert DEMO_CARD.output.contact == "contact"
    control = Control(_config(), DEMO_CARD)
    offered = {t.key.removeprefix("postprocess.semantic.") for t in control.tunables()}
    assert offered >= {"size_threshold", "min_score", "max_instances", "rods"}
    assert not offered & {"dist_threshold", "erosion_kernel", "saddle_ratio"}
    outcome = control.update({RELIEF: 0.35, "postprocess.semantic.rods": False}, "test")
    assert "nothing is split by distance reliefs" in outcome.rejected[RELIEF]
    assert outcome.applied == {"postprocess.semantic.rods": False}


def test_without_a_contact_map_the_distance_reliefs_parameters_are_offered() -> None:
    control = Control(_config(), SPLIT_CARD)
    offered = {t.key.removeprefix("postprocess.semantic.") for t in control.tunables()}
    assert offered >= {"dist_threshold", "erosion_kernel", "saddle_ratio", "rods", "min_score"}
    assert control.update({RELIEF: 0.35}, "test").applied == {RELIEF: 0.35}


def test_a_yolo_seg_models_null_thresholds_report_its_cards_values() -> None:
    card = replace(DEMO_CARD, task="yolo-seg", output=OutputSpec("output0", protos="output1"))
    control = Control(_config(), card)
    values = {t.key: t.value for t in control.tunables()}
    assert values["postprocess.score_threshold"] == card.yolo_seg.score_threshold
    assert values["postprocess.iou_threshold"] == card.yolo_seg.iou_threshold
    assert values["postprocess.max_det"] == card.yolo_seg.max_det
    outcome = control.update({"postprocess.score_threshold": 0.4}, "test")
    assert outcome.applied == {"postprocess.score_threshold": 0.4}
    assert control.current().decode.score_threshold == 0.4


def test_one_update_applies_its_valid_keys_together_and_names_each_refused_one() -> None:
    control = _control()
    outcome = control.update({SCORE: 0.3, SIZE: -1, "model.path": "x.onnx"}, "test")
    assert outcome.applied == {SCORE: 0.3}
    assert set(outcome.rejected) == {SIZE, "model.path"}
    assert outcome.version == 2


def test_each_applied_change_is_logged_and_refusals_only_the_first_three_then_every_hundredth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    control = _control()
    with caplog.at_level("INFO", logger="edgeseg.control"):
        control.update({SCORE: 0.3}, "mqtt")
        for _ in range(205):
            control.update({SIZE: -1}, "web")
        control.update({SIZE: 30}, "web", quiet=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeseg.control"]
    assert lines[0] == f"config_version 2: {SCORE}=0.3 (mqtt)"
    refused = [line.split(": ", 1)[0] for line in lines[1:]]
    assert refused == [f"live change refused (web, {n} so far)" for n in (1, 2, 3, 100, 200)]


def test_a_section_value_stands_for_the_keys_below_it() -> None:
    outcome = _control().update({"postprocess": {"semantic": {"size_threshold": 30, "min_score": 0.1}}})
    assert outcome.applied == {SIZE: 30, SCORE: 0.1}


def test_the_roi_does_not_change_live_where_the_sensor_crops() -> None:
    outcome = _control(sensor_crops=True).update({"source.roi": [0, 0, 0.5, 0.5]}, "test")
    assert "needs a restart" in outcome.rejected["source.roi"]


class RecordingStages:
    """The real demo model, recording which snapshot each frame saw in preprocess and in decode."""

    def __init__(self, inner: ModelStages) -> None:
        self.inner = inner
        self.pre: dict[int, Snapshot] = {}
        self.dec: dict[int, Snapshot] = {}

    def preprocess(self, frame: Frame, snapshot: Snapshot) -> Any:
        self.pre[frame.index] = snapshot
        return self.inner.preprocess(frame, snapshot)

    def infer(self, prepared: Any) -> Any:
        return self.inner.infer(prepared)

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Snapshot) -> Instances:
        self.dec[frame.index] = snapshot
        return self.inner.decode(frame, prepared, outputs, snapshot)

    def close(self) -> None:
        self.inner.close()


class Collect:
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.done_at: list[float] = []

    def send(self, result: Result) -> None:
        self.results.append(result)
        self.done_at.append(time.monotonic())

    def close(self) -> None:
        return None


def test_frames_keep_their_snapshot_through_every_stage_while_threads_update_and_a_burst_runs() -> None:
    """Three threads change the threshold and the ROI while frames flow, then a burst of 1,000 updates:
    every result's config_version is the snapshot its frame was preprocessed and decoded with, that
    snapshot holds the values that version was given, and frames keep completing during the burst."""
    config = _config("source.uri=synthetic:parts?seed=4", "source.width=320", "source.height=240")
    control = Control(config, DEMO_CARD)
    stages = RecordingStages(ModelStages.from_config(config))
    sink = Collect()
    pipe = Pipeline(make_source(config.source), stages, {"c": sink}, max_frames=400, control=control)
    given: dict[int, tuple[float, list[float]]] = {1: (0.2, [0.0, 0.0, 1.0, 1.0])}
    lock = threading.Lock()
    burst: list[float] = []

    def tune(seed: int, n: int, pause: float) -> None:
        rng = random.Random(seed)
        for _ in range(n):
            score = round(rng.uniform(0.1, 0.9), 3)
            roi = [round(rng.uniform(0, 0.2), 3), 0.0, 0.8, 1.0]
            bad = rng.random() < 0.3  # a refused change in the mix: it must not make a version
            changes: dict[str, Any] = {SCORE: score, "source.roi": roi}
            if bad:
                changes = {SCORE: 1.5 + score}
            outcome = pipe.update(changes, f"thread {seed}")
            if outcome.ok:
                with lock:
                    given[outcome.version] = (score, roi)
            else:
                assert not outcome.applied
            time.sleep(pause)

    pipe.start()
    try:
        threads = [threading.Thread(target=tune, args=(i, 15, 0.05)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        burst.append(time.monotonic())
        tune(99, 1000, 0.0)
        burst.append(time.monotonic())
        time.sleep(0.5)
    finally:
        pipe.stop()
        pipe.wait(30)
    assert len(sink.results) >= 10
    versions = set()
    for r in sink.results:
        i = r.frame.index
        assert stages.pre[i] is stages.dec[i], f"frame {i} changed snapshot between stages"
        snap = stages.pre[i]
        assert r.config_version == snap.version
        versions.add(snap.version)
        score, roi = given[snap.version]
        assert snap.decode.semantic is not None
        assert snap.decode.semantic.min_score == score
        assert list(snap.roi or (0.0, 0.0, 1.0, 1.0)) == roi
    assert len(versions) >= 3, "the frames should have seen several versions"
    during = sum(1 for t in sink.done_at if burst[0] <= t <= burst[1])
    assert during >= 1, f"no frame completed during the {burst[1] - burst[0]:.1f} s burst of 1,000 updates"


def test_saved_tuning_holds_only_what_differs_from_the_file_and_is_applied_at_the_next_load(
    tmp_path: Path,
) -> None:
    path = tuning_path(tmp_path, "demo")
    control = _control(tuning=path)
    control.update({SCORE: 0.45, SIZE: 0}, "test")
    line = control.save()
    assert str(path) in line
    saved = load_tuning(path)
    assert dict(saved.values) == {SCORE: 0.45, SIZE: 0}
    assert path.read_text().startswith("# Live tuning of pipeline 'demo'")
    config = load_config(DEMO, saved.overrides(), env={})
    assert config.postprocess.semantic.min_score == 0.45


def test_the_save_line_counts_one_value_in_the_singular_and_spells_values_as_the_tuning_file_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It said "saved 1 tuned values to ...: postprocess.semantic.rods=True", the log "config_version 2:
    ...rods=True", a reload "applied ...rods=True" and the next start "applying saved tuning from ...:
    ...rods=True", where the file (and --set) say ``true``."""
    path = tuning_path(tmp_path, "demo")
    control = _control(tuning=path)
    rods = "postprocess.semantic.rods"
    flipped = not control.value(rods)
    expected = f"{rods}={json.dumps(flipped)}"
    with caplog.at_level(logging.INFO, logger="edgeseg.control"):
        outcome = control.update({rods: flipped}, "test")
    assert f"config_version 2: {expected} (test)" in caplog.messages
    assert reload_line(outcome, "p.yaml") == f"reloaded p.yaml: applied {expected} (config_version 2)"
    assert control.save() == f"saved 1 tuned value to {path}: {expected}"
    assert describe_tuning(load_tuning(path)) == f"applying saved tuning from {path}: {expected}"


@pytest.mark.parametrize("chars", [200, 250])
def test_a_pipeline_named_as_long_as_a_file_name_can_be_saves_and_loads_its_tuning(
    tmp_path: Path, chars: int
) -> None:
    """'tuning-NAME.yaml' (and the temporary name it is written under) passed the 255 bytes a file name may
    have from a name of about 230: 'File name too long' at every start once the state folder existed."""
    name = "p" * chars
    path = tuning_path(tmp_path, name)
    assert load_tuning(path).values == {}
    control = _control(tuning=path)
    control.update({SCORE: 0.45}, "test")
    control.save()
    assert dict(load_tuning(tuning_path(tmp_path, name)).values) == {SCORE: 0.45}
    assert tuning_path(tmp_path, name) != tuning_path(tmp_path, name[:-1] + "q")


def test_a_saved_tiny_threshold_loads_back_as_a_number_at_the_next_start(tmp_path: Path) -> None:
    """JSON writes 5e-05, which YAML 1.1 (PyYAML) reads as a string: the next start failed on the file."""
    path = tuning_path(tmp_path, "demo")
    control = _control(tuning=path)
    assert control.update({SCORE: 5e-05}, "test").ok
    control.save()
    saved = load_tuning(path)
    assert dict(saved.values) == {SCORE: 5e-05}
    config = load_config(DEMO, saved.overrides(), env={})
    assert config.postprocess.semantic.min_score == 5e-05


def test_a_saved_tuning_file_with_a_key_that_needs_a_restart_leaves_it_out_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "tuning-demo.yaml"
    path.write_text(f"model.path: /x.onnx\n{SCORE}: 0.4\n")
    tuning = load_tuning(path)
    assert dict(tuning.values) == {SCORE: 0.4}
    ((value, why),) = tuning.left_out.values()
    assert value == "/x.onnx"
    assert why == f"{path}: model.path: not a key that changes live, so it cannot be saved tuning"


def test_a_save_keeps_the_saved_tuning_left_out_at_start_unless_it_saves_that_key(tmp_path: Path) -> None:
    """An entry the start left out (a key an upgrade renamed) was gone from the file after the next save,
    without a word: what a user saved is kept for them to fix, and the save line says so."""
    path = tuning_path(tmp_path, "demo")
    left_out = {"postprocess.semantic.min_scor": 0.5, "a: b": [1], SCORE: 7}  # ("a: b": a hand-edited key)
    control = _control(tuning=path, left_out=left_out)
    assert control.update({SCORE: 0.3}, "test").ok
    line = control.save()
    assert line.endswith("(left out at start): postprocess.semantic.min_scor, a: b")
    saved = load_tuning(path)
    assert dict(saved.values) == {SCORE: 0.3}
    kept = {key: value for key, (value, _) in saved.left_out.items()}
    assert kept == {"postprocess.semantic.min_scor": 0.5, "a: b": [1]}


def test_a_bad_value_in_saved_tuning_names_the_file_as_its_origin(tmp_path: Path) -> None:
    path = tmp_path / "tuning-demo.yaml"
    path.write_text(f"{SCORE}: 7\n")
    with pytest.raises(ConfigError, match=r"\[0, 1\] \(got 7\) \[saved tuning .*tuning-demo.yaml\]"):
        load_config(DEMO, load_tuning(path).overrides(), env={})


def test_reload_applies_what_changed_in_the_file_and_refuses_a_new_model(tmp_path: Path) -> None:
    file, text = _demo_copy(tmp_path)
    control = _reloading(file)
    control.update({SIZE: 30}, "test")  # a live change the file lacks: kept
    file.write_text(
        text.replace("semantic: null", "semantic:\n    min_score: 0.4").replace(
            "demo-parts.onnx", "other.onnx"
        )
    )
    outcome = control.reload()
    assert outcome.applied == {SCORE: 0.4}
    assert list(outcome.rejected) == ["model.path"]
    assert "needs a restart" in outcome.rejected["model.path"]
    assert control.value(SIZE) == 30
    assert control.reload().applied == {}  # nothing changed since


def test_reset_after_a_reload_goes_back_to_the_reloaded_files_values(tmp_path: Path) -> None:
    """What a restart would run now is the file as reloaded: a reset went back to the file as it was at start,
    undoing the SIGHUP."""
    file, text = _demo_copy(tmp_path)
    control = _reloading(file)
    file.write_text(text.replace("semantic: null", "semantic:\n    min_score: 0.4"))
    assert control.reload().applied == {SCORE: 0.4}
    control.update({SCORE: 0.45, SIZE: 30}, "test")
    assert control.reset().applied == {SCORE: 0.4, SIZE: CARD_SIZE}
    assert control.value(SCORE) == 0.4


def test_a_changed_line_or_a_new_zone_needs_a_restart_not_keys_below_it(tmp_path: Path) -> None:
    """A key of a named zone or line is a value, read once at start: it was refused as "a section: give the
    keys below it", and a zone added to the file by a reload with nonsense (anchor "required")."""
    file, text = _demo_copy(tmp_path)
    control = _reloading(file)
    refused = control.update({"lines.belt.dead_band": 0.05}, "test").rejected
    assert refused["lines.belt.dead_band"].startswith("needs a restart"), refused
    text = text.replace("    anchor: center\n", "    anchor: center\n    dead_band: 0.05\n", 1)
    file.write_text(text + "zones:\n  door: {polygon: [[0, 0], [1, 0], [1, 1]]}\n")
    outcome = control.reload()
    assert outcome.applied == {}
    assert {"lines.belt.dead_band", "zones.door.polygon", "zones.door.anchor"} <= outcome.rejected.keys()
    assert all(why.startswith("needs a restart") for why in outcome.rejected.values()), outcome.rejected


def test_reload_says_a_zone_removed_from_the_file_needs_a_restart(tmp_path: Path) -> None:
    """The zone still counts until a restart: the reload said "nothing changed"."""
    file, text = _demo_copy(tmp_path, "zones:\n  door: {polygon: [[0, 0], [1, 0], [1, 1]]}\n")
    control = _reloading(file)
    file.write_text(text)
    outcome = control.reload()
    assert "zones.door.polygon" in outcome.rejected
    assert all(why.startswith("needs a restart") for why in outcome.rejected.values()), outcome.rejected
    assert control.reload().rejected == {}  # reported once


def test_an_roi_edited_in_the_file_where_the_sensor_crops_is_not_saved_over_by_the_next_save(
    tmp_path: Path,
) -> None:
    """On the IMX500 a SIGHUP says a new ``source.roi`` in the file needs a restart; a later save (of a
    threshold) wrote the ROI still running into the saved tuning, which then won over the file's at that
    restart: the edit was lost."""
    file, text = _demo_copy(tmp_path)
    tuning = tuning_path(tmp_path, "p")
    control = _reloading(file, tuning, sensor_crops=True)
    file.write_text(text.replace("source:\n", "source:\n  roi: [0.1, 0.1, 0.8, 0.8]\n", 1))
    assert "needs a restart" in control.reload().rejected["source.roi"]
    assert control.update({SCORE: 0.3}, "test").ok
    control.save()
    assert dict(load_tuning(tuning).values) == {SCORE: 0.3}
    restarted = load_config(file, load_tuning(tuning).overrides(), env={})
    assert restarted.source.roi == (0.1, 0.1, 0.8, 0.8)


def test_a_save_racing_a_reload_never_keeps_the_files_old_value_over_its_new_one(tmp_path: Path) -> None:
    """SIGHUP (the main thread) while the web page or MQTT saves: the reload took in the new files before it
    applied their values, and a save in between kept the running value, the files' old one, as a live change:
    the saved tuning then won over the edited file at the next start."""
    file, text = _demo_copy(tmp_path)
    tuning = tuning_path(tmp_path, "p")
    control = _reloading(file, tuning)
    kept = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # a thread switch at almost every bytecode: the gap is hit within seconds
    try:
        for n in range(300):
            file.write_text(text.replace("semantic: null", f"semantic:\n    min_score: {(0.4, 0.45)[n % 2]}"))
            start = threading.Barrier(2, timeout=10)
            threads = [
                threading.Thread(target=lambda call=call, start=start: (start.wait(), call()))
                for call in (control.reload, control.save)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            if saved := dict(load_tuning(tuning).values):  # nothing is tuned: nothing may be saved
                kept.append((n, saved))
                control.save()
    finally:
        sys.setswitchinterval(interval)
    assert not kept


def test_a_reset_racing_a_reload_leaves_the_files_new_value_running(tmp_path: Path) -> None:
    """A reset at the moment of a SIGHUP goes back to what a restart would run, the file as reloaded: it read
    the running values after the reload had applied the file's and what a restart runs before the reload
    had changed it, and so undid the reload."""
    file, text = _demo_copy(tmp_path)
    control = _reloading(file)
    started = time.perf_counter()
    control.reload()
    reload_s = time.perf_counter() - started
    rng = random.Random(7)
    undone = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # a thread switch at almost every bytecode: the gap is hit within seconds
    try:
        for n in range(300):
            value = (0.4, 0.45)[n % 2]
            file.write_text(text.replace("semantic: null", f"semantic:\n    min_score: {value}"))
            # the reset starts while the reload runs, at a random point of it
            late = rng.uniform(0.3, 1.2) * reload_s
            threads = [
                threading.Thread(target=control.reload),
                threading.Thread(target=lambda late=late: (time.sleep(late), control.reset())),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            if control.value(SCORE) != value:
                undone.append((n, control.value(SCORE), value))
                control.reset()
    finally:
        sys.setswitchinterval(interval)
    assert not undone


def test_sighup_applies_a_changed_threshold_and_refuses_a_new_model_in_one_line(tmp_path: Path) -> None:
    """A real ``edgeseg run`` process, a real SIGHUP: the file's new threshold reaches the next results, its
    new model path is refused in the same single log line, and the run goes on."""
    file, text = _demo_copy(tmp_path)
    out, err = tmp_path / "o.jsonl", tmp_path / "stderr.txt"
    with _running(file, out, err) as proc:
        file.write_text(
            text.replace("semantic: null", "semantic:\n    min_score: 0.4").replace(
                "demo-parts.onnx", "other.onnx"
            )
        )
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not _versions(out) >= {2} and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
    assert _versions(out) == {1, 2}
    reload_lines = [line for line in err.read_text().splitlines() if "reload" in line]
    assert len(reload_lines) == 1, err.read_text()
    assert f"applied {SCORE}=0.4 (config_version 2)" in reload_lines[0]
    assert "not applied, needs a restart: model.path" in reload_lines[0]


def test_sighup_on_a_file_saved_in_another_encoding_keeps_the_run_going_and_says_why_in_one_line(
    tmp_path: Path,
) -> None:
    """A pipeline file edited on the device and saved as Latin-1 (or UTF-16 by a Windows editor) is not
    UTF-8: the reload fails in one line naming the file, the run goes on as it was, SIGTERM ends it with 0."""
    file, text = _demo_copy(tmp_path)
    out, err = tmp_path / "o.jsonl", tmp_path / "stderr.txt"
    with _running(file, out, err) as proc:
        file.write_bytes(("# conveyor at 20 \u00b0C\n" + text).encode("latin-1"))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload" not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = _lines(out)
        time.sleep(1.5)
        assert proc.poll() is None, err.read_text()
        assert _lines(out) > seen  # results still come
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
    log = err.read_text()
    assert "Traceback" not in log
    reload_lines = [line for line in log.splitlines() if "reload" in line]
    assert len(reload_lines) == 1, log
    assert "the running settings are unchanged" in reload_lines[0]
    assert f"{file}: " in reload_lines[0]
    assert "UTF-8" in reload_lines[0]


def _demo_copy(tmp_path: Path, extra: str = "") -> tuple[Path, str]:
    """The demo pipeline written to ``tmp_path`` (its model by absolute path) with ``extra`` after it, and its
    text without ``extra``."""
    file = tmp_path / "p.yaml"
    text = DEMO.read_text().replace("../models/demo-parts.onnx", str(REPO / "models" / "demo-parts.onnx"))
    file.write_text(text + extra)
    return file, text


def _reloading(file: Path, tuning: Path | None = None, sensor_crops: bool = False) -> Control:
    """The control of a run of ``file`` that a reload reads again (saving to ``tuning``)."""
    return Control(
        load_config(file, env={}),
        DEMO_CARD,
        file=file,
        tuning=tuning,
        reloader=lambda: load_config(file, env={}),
        sensor_crops=sensor_crops,
    )


@contextlib.contextmanager
def _running(file: Path, out: Path, err: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``edgeseg run`` of ``file`` (JSON lines to ``out``, stderr to ``err``) once it has written three
    results; killed at the end if it still runs."""
    cmd = [sys.executable, "-m", "edgeseg", "run", str(file), "--state-dir", str(out.parent / "st"),
           "--source", "synthetic:parts?fps=10", "--output", str(out)]  # fmt: skip
    with err.open("w") as stderr:
        proc = subprocess.Popen(cmd, env=edgeseg_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while _lines(out) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _lines(out) >= 3, err.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _versions(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {json.loads(line)["config_version"] for line in path.read_text().splitlines() if line}


def test_saving_into_the_yaml_changes_only_the_tuned_line_and_empties_the_saved_tuning(
    tmp_path: Path,
) -> None:
    file, text = _demo_copy(tmp_path)
    tuning = tuning_path(tmp_path, "p")
    control = Control(load_config(file, env={}), DEMO_CARD, file=file, tuning=tuning)
    control.update({SCORE: 0.3}, "test")
    control.save()
    assert tuning.is_file()
    control.update({SCORE: 0.35}, "test")
    control.save(into_yaml=True)
    assert not tuning.exists()
    after = file.read_text().splitlines()
    added = [line for line in after if line not in text.splitlines()]
    assert added == ["  semantic:", "    min_score: 0.35"], added
    assert [line for line in text.splitlines() if line not in after] == ["  semantic: null"]
    assert all(line in after for line in text.splitlines() if line.lstrip().startswith("#"))
    assert load_config(file, env={}).postprocess.semantic.min_score == 0.35
    assert control.changes() == {}  # the file now says what runs


def test_a_source_given_on_the_command_line_stays_as_given_through_live_changes_and_saves(
    tmp_path: Path,
) -> None:
    """``--source clip.mp4`` is relative to where edgeseg was started, not to the pipeline file's folder: a
    live change resolved it against the folder (each change validates the whole config again), and after a
    save into the YAML a SIGHUP that changed nothing said "not applied, needs a restart: source.uri"."""
    file, _ = _demo_copy(tmp_path)
    flags = [Override('source.uri="clip.mp4"', "--source")]
    control = Control(
        load_config(file, flags, env={}),
        DEMO_CARD,
        file=file,
        reloader=lambda: load_config(file, flags, env={}),
    )
    assert control.update({SCORE: 0.3}, "test").ok
    assert control.current().config is not None
    assert control.current().config.source.uri == "clip.mp4"
    control.save(into_yaml=True)
    outcome = control.reload()
    assert (outcome.applied, outcome.rejected) == ({}, {})


LIVE_KEYS = [SCORE, SIZE, "postprocess.semantic.rods", "source.roi", "postprocess.semantic.max_instances"]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 500),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.floats(-0.5, 1.5), max_size=5),
)


def _loaded(key: str, value: Any) -> PipelineConfig | str:
    """The demo config with ``--set key=value`` (origin "test"), or the loader's error text."""
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).removesuffix("\n...\n").strip()
        return load_config(DEMO, [Override(f"{key}={text}", "test")], env={})
    except ConfigError as e:
        return str(e)


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(LIVE_KEYS), value=VALUES)
def test_a_live_update_is_accepted_exactly_when_the_loader_accepts_it(key: str, value: Any) -> None:
    """One validator: whatever the value, ``update`` and ``load_config`` with ``--set`` agree: the same
    config when valid, the same words when not."""
    control = _control()
    outcome = control.update({key: value}, "test")
    if isinstance(value, float) and not math.isfinite(value):  # JSON has no NaN: no --set to compare with
        assert key in outcome.rejected
        return
    expected = _loaded(key, value)
    if isinstance(expected, str):
        assert outcome.rejected[key] in expected
        assert control.current().version == 1
    else:
        assert key in outcome.applied, outcome.rejected
        assert control.current().config == expected


@contextlib.contextmanager
def _read_only_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory holding ``tuning-demo.yaml`` (min_score 0.3) that has become read-only, as an SD
    card remounted read-only after an error: a file system of its own (root writes into a folder with no
    write permission), else a folder without it."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = os.geteuid() == 0
    if mounted:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=False)
        if mount.returncode != 0:
            pytest.skip("root without the right to mount: no read-only file system to save into")
    try:
        tuning_path(state, "demo").write_text(f"{SCORE}: 0.3\n")
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        else:
            state.chmod(0o555)
        yield state
    finally:
        if mounted:
            subprocess.run(["umount", str(state)], check=True)
        else:
            state.chmod(0o755)


@pytest.mark.parametrize("into_yaml", [False, True], ids=["state", "yaml"])
def test_a_save_that_cannot_remove_the_saved_tuning_says_so_in_one_line(
    tmp_path: Path, into_yaml: bool
) -> None:
    """A save with nothing left to keep (the value tuned back to the file's), or into the YAML, removes the
    tuning file; where the state directory had become read-only that raised a bare OSError, not the
    ConfigError a save promises: MQTT's config/save got no reply at all, the web page a 500."""
    file, _ = _demo_copy(tmp_path)
    with _read_only_state_dir(tmp_path) as state:
        tuning = tuning_path(state, "demo")
        config = load_config(file, load_tuning(tuning).overrides(), env={})
        control = Control(config, DEMO_CARD, base=load_config(file, env={}), file=file, tuning=tuning)
        control.update({SCORE: None}, "test")  # back to the file's: nothing differs
        with pytest.raises(ConfigError, match=r"tuning-demo.yaml: cannot remove the saved tuning \(") as e:
            control.save(into_yaml=into_yaml)
        assert "\n" not in str(e.value)
        assert tuning.is_file()


def test_reset_undoes_the_changes_not_saved_and_keeps_the_saved_ones(tmp_path: Path) -> None:
    control = _control(tuning=tuning_path(tmp_path, "demo"))
    control.update({SCORE: 0.3}, "test")
    control.save()
    control.update({SCORE: 0.5, SIZE: 30}, "test")
    outcome = control.reset()
    assert outcome.applied == {SCORE: 0.3, SIZE: CARD_SIZE}
    assert control.value(SCORE) == 0.3


def test_bench_controls_valid_updates_are_all_applied_to_the_demo_pipeline_and_its_invalid_ones_all_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # scripts/bench_control.py's "valid update burst" is the rate while real changes land, not refusals
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_control

    config = load_config(str(bench_control.PIPELINE), [bench_control.SOURCE])
    control = Control(config, DEMO_CARD)
    for i in range(3):
        outcome = control.update(bench_control.valid_update(i), "bench", quiet=True)
        assert outcome.rejected == {}
        assert set(outcome.applied) == set(bench_control.valid_update(i))
    for changes in bench_control.INVALID_UPDATES:
        outcome = control.update(changes, "bench", quiet=True)
        assert outcome.applied == {}
        assert set(outcome.rejected) == set(changes)
