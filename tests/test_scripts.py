"""The benchmark scripts under scripts/: what they say when they are given something they cannot use (their
figures are theirs to print, not asserted here)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from mqtt_harness import Broker

from edgeseg.frame import Result
from edgeseg.sinks.mqtt_sink import MqttSink

REPO = Path(__file__).resolve().parents[1]


def _script(
    script: str, args: Sequence[str], env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_naming(done: subprocess.CompletedProcess[str], what: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    assert what in done.stderr.strip().splitlines()[-1]


def _reference_tree(tmp_path: Path) -> str:
    """A copy of this tree's ``edgeseg/semantic`` to give a script as its ``--reference``."""
    shutil.copytree(REPO / "edgeseg" / "semantic", tmp_path / "semantic")
    return str(tmp_path / "semantic")


def _main_put_back(monkeypatch: pytest.MonkeyPatch, script: Any, argv: list[str]) -> None:
    """A bench script's ``main()`` run with ``argv``: it sets one OpenCV thread and turns warnings off, both
    put back after it."""
    monkeypatch.setattr(sys, "argv", argv)
    threads = cv2.getNumThreads()
    try:
        script.main()
    finally:
        cv2.setNumThreads(threads)
        logging.disable(logging.NOTSET)


def _noted(calls: list[str], name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    """``call``, noting ``name`` in ``calls`` at each call: the order in which a bench calls what it times."""

    def note(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return call(*args, **kwargs)

    return note


@pytest.mark.parametrize(
    "script", ["bench_runs.py", "bench_record.py", "bench_scores.py", "bench_explain.py"]
)
def test_a_reference_that_is_not_there_is_one_line_naming_it_not_a_traceback(
    script: str, tmp_path: Path
) -> None:
    missing = tmp_path / "before"
    _one_line_naming(_script(script, ["--reference", str(missing)]), str(missing))


def test_the_tracker_and_planner_of_a_reference_that_is_not_there_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (bench_tracking and bench_planner load them after minutes of work: their loaders alone here)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_planner
    import bench_tracking

    with pytest.raises(SystemExit, match=str(tmp_path)):
        bench_tracking.tracker_module(tmp_path)
    with pytest.raises(SystemExit, match=str(tmp_path)):
        bench_planner.reference_planner(tmp_path)


def test_bench_tracking_times_this_tree_and_the_reference_in_turn_on_each_hostile_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (each map was split frame after frame, then run through this tree's tracker, then the reference's: a
    # load that came while one side ran weighed on it alone, and the reference always ran second)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_tracking

    import edgeseg.semantic

    (tmp_path / "edgeseg").mkdir()
    shutil.copy(REPO / "edgeseg" / "tracker.py", tmp_path / "edgeseg" / "tracker.py")
    calls: list[str] = []

    load = bench_tracking.tracker_module

    def recording_module(reference: Path | None) -> Any:
        module = load(reference)
        name = "edgeseg" if reference is None else "reference"
        monkeypatch.setattr(module.Tracker, "update", _noted(calls, name, module.Tracker.update))
        return module

    split = edgeseg.semantic.semantic_to_instances
    monkeypatch.setattr(edgeseg.semantic, "semantic_to_instances", _noted(calls, "split", split))
    monkeypatch.setattr(bench_tracking, "tracker_module", recording_module)
    rings = {"nested_rings": [bench_tracking.rings(2 * i) for i in range(4)]}  # (one map: all take seconds)
    monkeypatch.setattr(bench_tracking, "hostile_maps", lambda n: rings)
    level = logging.getLogger("edgeseg").level
    try:
        report = bench_tracking.worst_case(4, {}, tmp_path)
    finally:
        logging.getLogger("edgeseg").setLevel(level)  # (it quiets the budgets' notes for the process)
    assert len(report) == 1
    frames = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(frames) == 4
    assert all(f[0] == "split" and sorted(f[1:]) == ["edgeseg", "reference"] for f in frames), calls
    assert {f[1] for f in frames[1:]} == {"edgeseg", "reference"}  # (each goes first in turn)


def test_bench_planner_counts_the_reference_planners_trials_that_measured_each_plan_twice_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (only this tree's planner's log was counted: measured_twice_more_reference read 0 whatever it did)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_planner

    from edgeseg.threadplan import SETTLE_FRAMES, WINDOW_FRAMES

    (tmp_path / "edgeseg").mkdir()
    shutil.copy(REPO / "edgeseg" / "threadplan.py", tmp_path / "edgeseg" / "threadplan.py")
    planner = bench_planner.reference_planner(tmp_path)(SimpleNamespace(most_threads=2, runs=1, threads=2))
    levels = {name: logging.getLogger(name).level for name in bench_planner.PLANNER_LOGS}
    retrials = bench_planner.Retrials.counting()
    try:
        # a window on every thread, then the trial's two on two runs and one on every thread again, their
        # frames back to back: both plans read as post-processing's 1 ms a frame, under a tenth apart
        for _ in range(4 * (SETTLE_FRAMES + WINDOW_FRAMES)):
            planner.postprocessed(1.0)
            planner.inferred(10.0 * planner.plan.runs)
        assert "twice more" in planner.outcome
        assert retrials.count == 1
    finally:
        for name, level in levels.items():
            logging.getLogger(name).removeHandler(retrials)
            logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("script", "args", "env"),
    [
        ("bench_pipeline.py", ["--no-mqtt", "--model", "{missing}"], {}),
        ("bench_pipeline.py", ["--no-mqtt", "--video", "{missing}"], {}),
        ("bench_mqtt.py", ["{missing}"], {}),
        ("bench_inference.py", [], {"EDGESEG_ASSETS": "{missing}"}),
        ("bench_vs_ultralytics.py", [], {"EDGESEG_ASSETS": "{missing}"}),
    ],
)
def test_a_model_video_pipeline_or_assets_folder_that_is_not_there_is_one_line_naming_it(
    script: str, args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing")
    named = {k: v.format(missing=missing) for k, v in env.items()}
    done = _script(script, [a.format(missing=missing) for a in args], named)
    _one_line_naming(done, missing)


@pytest.mark.parametrize("lacks", ["models/yolov8n-seg_int8_320.onnx", "images/bus.jpg"])
def test_bench_inference_names_the_files_an_assets_folder_lacks_in_one_line(
    lacks: str, tmp_path: Path, assets_dir: Path
) -> None:
    # (a traceback at the first model it lacked, or at cv2.imread's None for an image, after timing the rest)
    (tmp_path / "models").mkdir()
    if lacks.startswith("images/"):  # the models there, the images not
        for model in (assets_dir / "models").glob("*.onnx"):
            (tmp_path / "models" / model.name).symlink_to(model)
    done = _script("bench_inference.py", ["--repeats", "1"], {"EDGESEG_ASSETS": str(tmp_path)})
    _one_line_naming(done, lacks)


@pytest.mark.parametrize("args", [["--cost-frames", "10"], ["--sets", "hostile", "--hostile-frames", "1"]])
def test_bench_tracking_refuses_too_few_frames_to_time_up_front(args: list[str]) -> None:
    # (it timed none after the warm-up, and its median of nothing ended the run in a traceback at the end)
    done = _script("bench_tracking.py", ["--sets", "crossing", *args], {"EDGESEG_ASSETS": "/nonexistent"})
    assert done.returncode == 2
    _one_line_naming(done, args[-2])


def test_bench_record_times_a_set_only_after_a_pass_over_it_untimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (with --repeat 1 its one timed pass was the child's first over each set: the figure was one-off costs)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_record

    import edgeseg.rle
    import edgeseg.sinks.record

    data = tmp_path / "results.pickle"
    data.write_bytes(pickle.dumps({"touching_discs": bench_record.scene_results("touching_discs", 1)}))
    calls: list[str] = []

    monkeypatch.setattr(edgeseg.rle, "encode", _noted(calls, "rle", edgeseg.rle.encode))
    monkeypatch.setattr(
        edgeseg.sinks.record, "encoded_record", _noted(calls, "record", edgeseg.sinks.record.encoded_record)
    )
    clock = SimpleNamespace(perf_counter=_noted(calls, "clock", time.perf_counter))
    monkeypatch.setattr(bench_record, "time", clock)
    figures = bench_record.child(data, repeat=1)
    assert set(figures) == {"touching_discs"}
    assert "rle" in calls[: calls.index("clock")]
    assert "record" in calls[: calls.index("clock")]


def test_bench_scores_times_a_way_only_after_an_untimed_call_of_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (with --repeat 1 each way's one timed call was its first on the logits: the figure was one-off costs)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_scores

    calls: list[str] = []
    noise = {k: v for k, v in bench_scores.SCORE_SETS.items() if "noise" in k}  # (3 channels: the cheaper)
    monkeypatch.setattr(bench_scores, "SCORE_SETS", noise)
    monkeypatch.setattr(
        bench_scores, "semantic_to_instances", _noted(calls, "split", bench_scores.semantic_to_instances)
    )
    monkeypatch.setattr(
        bench_scores, "time", SimpleNamespace(perf_counter=_noted(calls, "clock", time.perf_counter))
    )
    _main_put_back(monkeypatch, bench_scores, ["bench_scores.py", "--seeds", "1", "--repeat", "1"])
    assert len(noise) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["rows"]
    assert "split" in calls[: calls.index("clock")]


def test_profile_semantic_times_this_tree_and_the_reference_only_after_an_untimed_call_of_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (this tree's split made the first call on each map, timed: what only a first call pays counted against
    # it alone, the reference's calls all coming after it)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import profile_semantic

    from edgeseg.synthetic import PartsScene

    reference = _reference_tree(tmp_path)
    calls: list[str] = []
    load = profile_semantic.load_reference
    monkeypatch.setattr(
        profile_semantic, "load_reference", lambda path: _noted(calls, "reference", load(path))
    )
    monkeypatch.setattr(
        profile_semantic,
        "semantic_to_instances",
        _noted(calls, "new", profile_semantic.semantic_to_instances),
    )
    class_map = PartsScene(640, 480, seed=0).frame(250).class_map.astype(np.uint8)
    monkeypatch.setattr(profile_semantic, "demo_maps", lambda seeds, frames: {"truth": [(class_map, {})]})
    monkeypatch.setattr(sys, "argv", ["profile_semantic.py", "--reference", reference, "--repeat", "2"])
    profile_semantic.main()
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["truth"]["calls_differing"] == 0
    assert calls == ["new", "reference"] * 3  # (one untimed call of each, then --repeat 2)


def test_bench_scores_times_this_tree_and_the_reference_side_by_side_each_first_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the reference ran last in every round, after the floor's pass, and this tree's first, right after the
    # reference's on the same logits: one timed always after the other reads faster)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_scores

    reference = _reference_tree(tmp_path)
    calls: list[str] = []
    split, arguments = bench_scores.semantic_to_instances, bench_scores.bench_arguments

    def ours(*args: Any, **kwargs: Any) -> Any:
        calls.append("scores" if kwargs.get("logits") else "class map")
        return split(*args, **kwargs)

    def with_reference(doc: str, seeds: int, repeat: int) -> tuple[Any, Any]:
        args, module = arguments(doc, seeds, repeat)
        return args, SimpleNamespace(
            semantic_to_instances=_noted(calls, "reference", module.semantic_to_instances)
        )

    noise = {k: v for k, v in bench_scores.SCORE_SETS.items() if "noise" in k}  # (3 channels: the cheaper)
    monkeypatch.setattr(bench_scores, "SCORE_SETS", noise)
    monkeypatch.setattr(bench_scores, "semantic_to_instances", ours)
    monkeypatch.setattr(bench_scores, "bench_arguments", with_reference)
    _main_put_back(
        monkeypatch,
        bench_scores,
        ["bench_scores.py", "--seeds", "1", "--repeat", "2", "--reference", reference],
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]["same_as_reference"]
    # per layout (channels first, then last): the untimed calls, then the two rounds
    untimed = ["scores", "class map", "reference"]
    first, second = ["scores", "reference", "class map"], ["reference", "scores", "class map"]
    assert calls == [*untimed, *first, *second] * 2


def test_bench_explain_times_this_trees_view_and_the_references_each_first_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the reference's view ran always right after this tree's on the same map: one timed always after the
    # other reads faster)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_explain

    reference = _reference_tree(tmp_path)
    calls: list[str] = []
    arguments = bench_explain.bench_arguments

    def with_reference(doc: str, seeds: int, repeat: int) -> tuple[Any, Any]:
        args, module = arguments(doc, seeds, repeat)
        return args, SimpleNamespace(explain_split=_noted(calls, "reference", module.explain_split))

    monkeypatch.setattr(bench_explain, "SCENE_SETS", {"ellipses": bench_explain.SCENE_SETS["ellipses"]})
    monkeypatch.setattr(bench_explain, "HOSTILE_SETS", {})
    monkeypatch.setattr(
        bench_explain, "semantic_to_instances", _noted(calls, "split", bench_explain.semantic_to_instances)
    )
    monkeypatch.setattr(bench_explain, "explain_split", _noted(calls, "view", bench_explain.explain_split))
    monkeypatch.setattr(bench_explain, "bench_arguments", with_reference)
    _main_put_back(
        monkeypatch,
        bench_explain,
        ["bench_explain.py", "--seeds", "1", "--repeat", "2", "--reference", reference],
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["same"]
    # the untimed calls, the two rounds, then the split and the view compared
    first, second = ["split", "view", "reference"], ["split", "reference", "view"]
    assert calls == [*first, *first, *second, "split", "view"]


def test_the_reference_env_pins_the_versions_the_golden_file_was_made_with() -> None:
    # (its comment said the pins were the dev venv's, which takes any opencv setup.cfg allows: 5.1 beside the
    # pinned 5.0; a golden file regenerated later is made by the same code only while these two agree)
    pins = dict(re.findall(r"\b([\w-]+)==([\w.]+)", (REPO / "scripts" / "setup_ref_env.sh").read_text()))
    golden = json.loads((REPO / "tests" / "golden" / "yolov8n_seg_320_ultralytics.json").read_text())
    made_with = {k: v.partition("+")[0] for k, v in golden["versions"].items()}  # (torch: 2.14.1+cu130)
    opencv = ".".join(pins.pop("opencv-python").split(".")[:3])  # (its 4th number is the wheel's build)
    assert {"opencv": opencv, **{k: pins[k] for k in made_with.keys() - {"opencv"}}} == made_with


def test_the_benches_render_the_conveyor_frames_they_replay_with_one_scene(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (a scene was made for each frame, ~0.2 s of setting up its belt each: ten seconds at the start of every
    # device bench and of every bench_sinks child, six of bench_record's 30 demo frames)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_pipeline
    import bench_record

    from edgeseg.synthetic import PartsScene

    calls: list[str] = []
    monkeypatch.setattr(PartsScene, "__init__", _noted(calls, "scene", PartsScene.__init__))
    assert len(bench_record.demo_results(3)) == 3
    assert len(calls) == 1
    assert len(bench_pipeline.conveyor_frames(4)) == 4
    assert len(calls) == 2


# bench_pipeline's main with the order of its timed runs noted, on a few frames (the order is what counts), in
# a child process: it sets the process's malloc and OpenCV's threads as the edgeseg command does
BENCH_PIPELINE_ORDER = """
import json, sys
import bench_pipeline
order = []
def noted(name, call):
    def note(*args, **kwargs):
        order.append(name)
        return call(*args, **kwargs)
    return note
bench_pipeline.FIRST_RUN_FRAMES = bench_pipeline.LATENCY_RESULTS = 5
conveyor_frames = bench_pipeline.conveyor_frames
bench_pipeline.conveyor_frames = lambda count=50: conveyor_frames(5)
bench_pipeline.infer_side_by_side = noted("inference", bench_pipeline.infer_side_by_side)
bench_pipeline.Pipeline = noted("pipeline", bench_pipeline.Pipeline)
sys.argv[1:] = ["--no-mqtt", "--rounds", "2", "--timing-frames", "5", "--frames", "10"]
bench_pipeline.main()
print(json.dumps(order))
"""


def test_bench_pipeline_times_inference_alone_and_the_pipelines_first_in_turn() -> None:
    # (inference alone ran first in every round, the pipelines after it, though its rounds are "alternating":
    # a machine getting slower or faster over a round weighed on each round's fps_ratio the same way)
    path = os.pathsep.join([str(REPO), str(REPO / "scripts")])
    done = subprocess.run(
        [sys.executable, "-c", BENCH_PIPELINE_ORDER],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    order = json.loads(done.stdout.splitlines()[-1])
    # the first run (the planner's), the two rounds (each inference alone and three pipelines), the latency
    # and the memory runs
    first, rounds, after = order[0], order[1:-2], order[-2:]
    assert [first, *after] == ["pipeline"] * 3
    assert rounds == ["inference", *["pipeline"] * 6, "inference"]


def test_bench_sinks_feeds_the_mqtt_sink_the_batches_its_linger_gathers_as_the_pipeline_does(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (one spool transaction a result cost the sink and its publisher ~1.5x the CPU a result of the lingered
    # batches a device's pipeline hands it at 60 results a second)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_sinks

    batches: list[int] = []
    send_batch = MqttSink.send_batch

    def counted(sink: MqttSink, results: Sequence[Result]) -> None:
        batches.append(len(results))
        send_batch(sink, results)

    monkeypatch.setattr(MqttSink, "send_batch", counted)
    cpu = bench_sinks.child(broker.port, 30, 60.0, tmp_path, video=False)
    assert set(cpu) == {"jsonl", "mqtt", "publisher"}
    assert sum(batches) == 30
    assert max(batches) > 1  # results 17 ms apart, a linger of 20 ms


def test_soaks_first_sample_is_of_the_edgeseg_run_not_of_the_child_before_it_starts(tmp_path: Path) -> None:
    # --warm-s 0: every sample counts; one of the forked interpreter before its exec read as 0.1 MB after
    # warm-up and as ranges of descriptors and threads (3-10, 1-12), which the soak reads as a leak
    args = ["--minutes", "0.05", "--sample-s", "0.5", "--warm-s", "0"]
    done = _script("soak.py", args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["exit_status"] == 0
    assert figures["rss_mb_first"] > 20
    assert figures["threads"][0] > 1


def test_a_soak_whose_run_fails_exits_non_zero_after_its_figures(tmp_path: Path) -> None:
    # (it exited 0 with the failure only as "exit_status" inside its JSON line)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: /nonexistent/model.onnx\n")
    done = _script(
        "soak.py", [str(bad), "--minutes", "0.05", "--sample-s", "0.5", "--warm-s", "0"], cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr[-1500:]
    assert json.loads(done.stdout.splitlines()[-1])["exit_status"] == 2
    assert "exit status 2" in done.stderr.strip().splitlines()[-1]


def test_bench_web_times_the_encodings_apart_from_the_results_that_encode_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # its one time column was the web sink's median per result, "encoding included": at the stream's rate
    # most results encode nothing, so the median was that of a skip, not of an encoding
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import bench_web

    clients = bench_web.HttpClients(1)
    try:
        b = bench_web.block("http", clients, 1, 1.0, stream_fps=1.0)
    finally:
        clients.close()
    assert b.encoded >= 1
    assert b.encode_ms > b.sink_ms  # (unpaced: 5 results a second or more, on 2 busy cores)
