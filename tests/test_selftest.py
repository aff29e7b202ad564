"""``edgeseg selftest``: PASS on the CPU path here, FAIL with the measured difference when the engine's
outputs are off, and its TensorRT and IMX500 halves against the fakes (tests/test_tensorrt_fake.py,
tests/imx500_fake.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from imx500_fake import RPK, World
from test_tensorrt_fake import FakeCuda, make_trt

from edgeseg import selftest
from edgeseg.backends import Backend, InferenceOptions
from edgeseg.backends.ort import OrtBackend
from edgeseg.backends.tensorrt import TensorRTBackend
from edgeseg.cli import main
from edgeseg.config import PipelineConfig, load_config
from edgeseg.instances import Instances
from edgeseg.modelcard import ModelCard
from edgeseg.sources.picamera2 import Picamera2Source

REPO = Path(__file__).parents[1]
PIPELINES = REPO / "pipelines"
PERSON = 15


def _fake_tensorrt(tmp_path: Path, offset: float) -> selftest.BackendFactory:
    """TensorRT on the fakes, its engine computing the model with onnxruntime, its float outputs scaled by
    ``1 - offset``."""

    def factory(card: ModelCard, options: InferenceOptions) -> Backend:
        ort = OrtBackend(card)
        x = np.zeros(card.input.shape, np.dtype(card.input.dtype))
        outputs = ort.run_tensor(x)
        shapes = {name: list(v.shape) for name, v in outputs.items()}
        dtypes = {card.input.name: card.input.dtype, **{name: str(v.dtype) for name, v in outputs.items()}}
        layout = [(card.input.name, "input", list(card.input.shape))]
        layout += [(name, "output", shape) for name, shape in shapes.items()]

        def compute(x: np.ndarray) -> dict[str, np.ndarray]:
            # the float outputs (the confidence, a probability) are scaled down by ``offset``: a wrong engine
            # whose values still pass the head's checks; the class map is left as it is
            out = ort.run_tensor(x).items()
            return {name: v * (1 - offset) if v.dtype.kind == "f" else v for name, v in out}

        cuda = FakeCuda()
        options = replace(options, backend="tensorrt", engine_cache_dir=tmp_path / "engines")
        return TensorRTBackend(
            card, options, trt=make_trt(cuda, layout, dtypes=dtypes, compute=compute), cuda=cuda
        )

    return factory


def test_selftest_passes_on_the_cpu_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "output classes: 0.00% of pixels differ (0 of 614400; tolerance 1%)" in out
    assert "output confidence: max |diff| 0 " in out
    assert "PQ 1.000 (class mean), mean mask IoU 1.000" in out
    assert out.rstrip().endswith("PASS")


def test_a_class_the_backend_loses_entirely_fails_the_self_test_as_pq_is_averaged_over_classes() -> None:
    """PQ as ``edgeseg eval`` reports it (panopticapi's ``pq_average``: per class, then the mean): class 0
    found nine times exactly (PQ 1), class 1's one instance missed (PQ 0) gives (1 + 0) / 2 = 0.5. Pooled
    over the classes it was 9 / (9 + 0.5) = 0.947, a PASS."""
    shape = (40, 100)
    boxes = [(10 * k, 0) for k in range(9)]
    want = Instances.from_crops(
        shape, [0] * 9 + [1], np.ones(10), [*boxes, (0, 20)], [np.ones((5, 5), bool)] * 10
    )
    got = want[np.arange(9)]
    report = selftest.Report()
    selftest._compare_instances(report, [(got, want)])
    assert report.lines == [
        "instances: PQ 0.500 (class mean), mean mask IoU 1.000 against onnxruntime's (9 matched, 0 extra, "
        "1 missed; minimum 0.9)  <- FAIL"
    ]
    assert not report.passed


@pytest.mark.parametrize("flag", [["--source", "emptyd"], ["--roi", "0.5,0,0.5,1"]])
def test_selftest_of_a_cpu_pipeline_refuses_a_source_or_roi_it_would_ignore(
    tmp_path: Path, flag: list[str]
) -> None:
    # it ran its synthetic frames whatever --source said (an empty folder too) and printed PASS
    (tmp_path / "emptyd").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "edgeseg", "selftest", "--frames", "1", *flag],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert done.stderr == (
        f"edgeseg: error: {flag[0]}: the self-test of a pipeline on onnxruntime runs on synthetic frames "
        "(--source and --roi are for an imx500 pipeline's camera)\n"
    )


def test_tensorrt_half_passes_when_the_engine_computes_the_model(tmp_path: Path) -> None:
    config = load_config(PIPELINES / "demo.yaml", [])
    report = selftest.run(config, 2, backend_factory=_fake_tensorrt(tmp_path, 0.0))
    assert report.passed, report.text()
    assert "tensorrt (GPU 0) against onnxruntime" in report.lines[0]


def test_perturbed_engine_outputs_fail_with_the_measured_difference(tmp_path: Path) -> None:
    config = load_config(PIPELINES / "demo.yaml", [])
    report = selftest.run(config, 2, backend_factory=_fake_tensorrt(tmp_path, 0.5))
    text = report.text()
    assert text.endswith("FAIL")
    assert "output confidence: max |diff| 0.5 = " in text
    assert "<- FAIL" in text


def _aicam(tmp_path: Path) -> PipelineConfig:
    network = tmp_path / "imx500_network_deeplabv3plus.rpk"
    network.write_bytes(RPK)
    config = load_config(PIPELINES / "aicam-imx500-deeplab.yaml", [])
    source = replace(config.source, uri=f"picamera2:?network={network}", imx500_network=str(network))
    return replace(config, source=source)


def test_imx500_half_reports_the_upload_shapes_and_crop_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World(results_from=3, objects=[(PERSON, (2300, 1200, 500, 700))])
    report = selftest.run(_aicam(tmp_path), 3, modules=world.modules)
    text = report.text()
    assert report.passed, text
    assert "uploading network firmware" in text
    assert "output output0: shapes ['(1, 320, 320)'] (class_map), as the card's head takes them" in text
    assert "3 frames decoded: 3 instances" in text


def test_imx500_half_names_the_network_it_uploaded_when_the_source_uri_names_another(tmp_path: Path) -> None:
    # --source picamera2:?network=X wins over the pipeline's source.imx500_network (picamera2.py's URI
    # options), and the report named the pipeline's network, which was never loaded
    config = _aicam(tmp_path)
    config = replace(
        config, source=replace(config.source, imx500_network="/usr/share/imx500-models/other.rpk")
    )
    world = World(results_from=0, objects=[(PERSON, (2300, 1200, 500, 700))])
    report = selftest.run(config, 1, modules=world.modules)
    assert report.lines[0].startswith(
        f"network {tmp_path / 'imx500_network_deeplabv3plus.rpk'} on picamera2:"
    )


def test_imx500_half_fails_when_the_network_gives_no_result_in_its_time(tmp_path: Path) -> None:
    """The camera held every frame back while no result came (a network that never starts), so read() never
    returned: the self-test printed the upload state for ever and no report."""
    world = World(results_from=10**9)
    reports: list[selftest.Report] = []

    def check() -> None:
        reports.append(selftest.check_imx500(_aicam(tmp_path), 2, modules=world.modules, timeout_s=0.5))

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    checker.join(30)
    assert not checker.is_alive()
    text = reports[0].text()
    assert ": no result after " in text
    assert "0 of 2 frames with on-sensor results in 0.5 s  <- FAIL" in text
    assert text.endswith("FAIL")
    assert world.cameras_open == 0


LOGITS_CARD = """name: imx500-logits
task: semantic
input: {name: input, width: 320, height: 320, layout: nchw, color: rgb, dtype: uint8, resize: stretch}
output: {name: output0, kind: logits, layout: nchw}
classes: [background, person]
background: 0
"""


@pytest.mark.parametrize(
    ("card", "world"),
    [
        (None, World(results_from=0, objects=[(PERSON, (2300, 1200, 500, 700))], output_wh=(160, 160))),
        (LOGITS_CARD, World(results_from=0, shapes=[(2, 40, 40)])),
    ],
    ids=["class-map-at-half-the-input", "logits"],
)
def test_imx500_half_passes_outputs_the_cards_head_decodes_at_any_resolution(
    tmp_path: Path, card: str | None, world: World
) -> None:
    """The self-test wanted ``(1, H, W)`` of the card's input whatever its output kind: a network giving
    logits or probabilities (``[1, C, h, w]``), or a class map at another stride than the input, which the
    pipeline decodes, always failed it."""
    config = _aicam(tmp_path)
    if card is not None:
        (tmp_path / "logits.yaml").write_text(card)
        config = replace(config, model=replace(config.model, path=tmp_path / "logits.yaml"))
    report = selftest.run(config, 2, modules=world.modules)
    assert report.passed, report.text()
    assert "frames decoded" in report.text()


def test_imx500_half_reports_a_network_the_source_gave_up_on_as_a_fail_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the source ends a wait for the first result after its upload limit (SourceGoneError from read()), as
    # the self-test's own deadline does: whichever comes first, the report says FAIL
    monkeypatch.setitem(Picamera2Source.__init__.__kwdefaults__, "upload_timeout_s", 0.2)
    world = World(results_from=10**9)
    report = selftest.check_imx500(_aicam(tmp_path), 2, modules=world.modules, timeout_s=60)
    text = report.text()
    assert "gave no result in 0.2 s of streaming (uploading network firmware" in text
    assert text.endswith("FAIL")
    assert world.cameras_open == 0


def test_imx500_half_fails_on_outputs_the_cards_head_cannot_decode_saying_why(tmp_path: Path) -> None:
    world = World(results_from=0, shapes=[(21, 40, 40)])  # 21 maps where the class_map card wants one
    report = selftest.run(_aicam(tmp_path), 2, modules=world.modules)
    assert report.text().endswith("FAIL")
    assert (
        "output output0: shapes ['(1, 21, 40, 40)'] (class_map): model 'imx500-deeplabv3plus': output "
        "'output0' has shape [1, 21, 40, 40], expected one map [1, h, w] or [1, 1, h, w] (2 of 2 frames)"
        "  <- FAIL"
    ) in report.text()
