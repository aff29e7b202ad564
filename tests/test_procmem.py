"""The process's resident memory, read from /proc: what the status line and the run's summary show."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeseg.cli import status_text
from edgeseg.procmem import Resident, memory_mb, resident
from edgeseg.sources import SourceStats
from edgeseg.stats import PipelineStats

REPO = Path(__file__).resolve().parents[1]


def test_the_peak_keeps_memory_this_process_touched_after_it_is_freed() -> None:
    before = resident()
    assert before is not None
    assert 0 < before.now_mb <= before.peak_mb
    block = np.ones(64 << 17)  # 64 MB, every page written
    during = resident()
    del block
    after = resident()
    assert during is not None
    assert after is not None
    assert during.now_mb >= before.now_mb + 60
    # (the kernel's counters are batched per thread, a few dozen pages off at any moment)
    assert after.peak_mb >= during.now_mb - 1
    assert after.now_mb <= after.peak_mb


def test_a_status_file_in_the_kernels_format_gives_both_figures_in_mb(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tedgeseg\nVmPeak:\t 1024000 kB\nVmHWM:\t  157696 kB\nVmRSS:\t  153600 kB\n")
    assert resident(status) == Resident(now_mb=150.0, peak_mb=154.0)


def test_memory_is_unknown_without_proc_without_either_figure_or_in_another_form(tmp_path: Path) -> None:
    assert resident(tmp_path / "missing") is None
    status = tmp_path / "status"
    status.write_text("Name:\tedgeseg\nVmRSS:\t  153600 kB\n")  # no VmHWM (a kernel before 2.6.32)
    assert resident(status) is None
    status.write_text("VmHWM:\t\nVmRSS:\t  n/a kB\n")  # a form it does not know
    assert resident(status) is None


def test_the_stats_message_and_the_web_page_get_both_figures_to_a_tenth_of_a_mb() -> None:
    figures = memory_mb()
    assert figures is not None
    assert set(figures) == {"resident", "peak"}
    assert 0 < figures["resident"] <= figures["peak"]
    assert all(round(v, 1) == v for v in figures.values())


def test_the_status_line_shows_resident_memory_only_when_it_is_known() -> None:
    stats = PipelineStats(frames_done=145, fps=29.7, latency_ms_p50=52.0)
    known = status_text(stats, SourceStats(frames=145), None, Resident(150.4, 153.0))
    assert "RSS 150 MB" in known
    assert "RSS" not in status_text(stats, SourceStats(frames=145), None, None)


def test_the_demo_run_ends_with_its_peak_resident_memory() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "run", "--max-frames", "10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"memory: peak (\d+) MB resident, (\d+) MB at the end", done.stdout + done.stderr)
    assert found, (done.stdout + done.stderr)[-1000:]
    peak, end = int(found[1]), int(found[2])
    # the model, OpenCV and onnxruntime alone take tens of MB; a figure in kB or bytes would be off by 1024x
    assert 40 < end <= peak < 2000, (peak, end)
