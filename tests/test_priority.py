"""Inference runs ``model.nice`` steps below the pipeline's other threads (edgeseg/priority.py), read back
from the kernel: real threads, a real onnxruntime session and its own thread pool."""

from __future__ import annotations

import glob
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edgeseg import priority
from edgeseg.config import load_config
from edgeseg.errors import ConfigError, ModelError
from edgeseg.frame import Frame
from edgeseg.instances import Instances
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.priority import MAX_NICE, call_lowered, lower_this_thread, thread_nice
from tests.test_cli import edgeseg
from tests.test_pipeline import ListSource

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="only Linux threads have nice values")


def main_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, os.getpid())


def task_nices() -> dict[int, int]:
    """Nice value of each of this process's threads, by thread id, from /proc (field 19 of ``stat``)."""
    out = {}
    for path in glob.glob("/proc/self/task/*/stat"):
        try:
            text = Path(path).read_text()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended before the open, or after it
            continue
        out[int(path.split("/")[4])] = int(text[text.rfind(")") + 2 :].split()[16])
    return out


class RecordingStages(ModelStages):
    """The demo model's stages, noting the nice value of the threads that infer and decode."""

    def __init__(self, stages: ModelStages) -> None:
        super().__init__(stages.model, stages.snapshot, stages.inference_nice)
        self.infer_nices: set[int | None] = set()
        self.decode_nices: set[int | None] = set()

    def infer(self, prepared: Any) -> Any:
        self.infer_nices.add(thread_nice())
        return super().infer(prepared)

    def decode(self, frame: Frame, prepared: Any, outputs: Any, snapshot: Any = None) -> Instances:
        self.decode_nices.add(thread_nice())
        return super().decode(frame, prepared, outputs, snapshot)


def run_demo(*overrides: str) -> tuple[RecordingStages, set[int]]:
    """The demo model loaded as the configuration says, run over a few frames; the stages, and the nice
    values of the threads the load started (onnxruntime's pool)."""
    before = set(task_nices())
    stages = RecordingStages(ModelStages.from_config(load_config(None, ["model.threads=2", *overrides])))
    started = {nice for tid, nice in task_nices().items() if tid not in before}
    try:
        stats = Pipeline(ListSource(6), stages).run()
    finally:
        stages.close()
    assert stats.frames_done == 6
    return stages, started


def test_inference_and_the_onnxruntime_pool_it_made_run_nice_steps_below_decode_and_the_caller() -> None:
    base = main_nice()
    want = min(MAX_NICE, base + 3)
    stages, started = run_demo("model.nice=3")
    assert started == {want}  # onnxruntime's intra-op pool (2 threads: the caller's and one more)
    assert stages.infer_nices == {want}
    assert stages.decode_nices == {base}
    assert main_nice() == base


def test_nice_0_keeps_inference_at_the_pipelines_priority() -> None:
    base = main_nice()
    stages, started = run_demo("model.nice=0")
    assert started == {base}
    assert stages.infer_nices == {base}
    assert stages.decode_nices == {base}


def test_lowering_twice_is_lowering_once_and_the_callers_own_thread_is_never_lowered() -> None:
    base = main_nice()

    def twice() -> int | None:
        lower_this_thread(4)
        return thread_nice()

    assert call_lowered(twice, 4) == min(MAX_NICE, base + 4)
    assert thread_nice() == base


def test_an_error_of_what_runs_lowered_reaches_the_caller() -> None:
    def fail() -> None:
        raise ModelError("model 'x': cannot load x.onnx: truncated")

    with pytest.raises(ModelError, match="truncated"):
        call_lowered(fail, 2)


def test_a_nice_step_outside_0_to_19_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.nice"):
        load_config(None, ["model.nice=20"])


@pytest.mark.parametrize(("step", "said"), [("3", ", nice +3)"), ("0", " threads (not spinning))")])
def test_the_start_up_line_says_how_far_below_the_pipeline_inference_runs(
    step: str, said: str, tmp_path: Path
) -> None:
    done = edgeseg("run", "--max-frames", "2", "--set", f"model.nice={step}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    start = [line for line in done.stderr.splitlines() if line.startswith("edgeseg: running ")]
    assert len(start) == 1, done.stderr
    assert said in start[0], start[0]


def test_where_lowering_is_refused_the_run_goes_on_says_so_once_and_claims_no_nice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(which: int, who: int, prio: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(priority, "_failed", threading.Event())
    monkeypatch.setattr(os, "setpriority", refuse)
    stages, started = run_demo("model.nice=3")
    assert stages.inference_nice == 0  # what the start-up line shows
    assert started == {main_nice()}
    assert stages.infer_nices == {main_nice()}
    refused = [r for r in caplog.records if "cannot lower" in r.getMessage()]
    assert len(refused) == 1, caplog.text
