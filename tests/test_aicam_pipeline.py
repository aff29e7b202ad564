"""pipelines/aicam-imx500-deeplab.yaml end to end against the picamera2 fakes (tests/imx500_fake.py): the card
is found for the .rpk although it is not on this machine, and the instances the sensor's class map gives land
on the image pixels that show the object, whatever part of the sensor the image and the network see."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imx500_fake import NETWORK_WH, RPK, World

from edgeseg.cli import losses, summary
from edgeseg.config import PipelineConfig, load_config
from edgeseg.errors import ModelError, SourceError, TransientError
from edgeseg.frame import Result
from edgeseg.modelcard import find_card
from edgeseg.pipeline import ModelStages, Pipeline
from edgeseg.sources import parse_uri
from edgeseg.sources.picamera2 import Picamera2Source

PIPELINE = Path(__file__).parents[1] / "pipelines" / "aicam-imx500-deeplab.yaml"
PERSON = 15
OBJECT = (2300, 1200, 500, 700)  # full-sensor px: inside the image and the network's crop in every case


def _config() -> PipelineConfig:
    return load_config(PIPELINE, [])


def _source(tmp_path: Path, config: PipelineConfig, world: World, **source: Any) -> Picamera2Source:
    """The pipeline's picamera2 source (unopened) on ``world``'s fake AI Camera, with ``source`` settings."""
    network = tmp_path / "imx500_network_deeplabv3plus.rpk"
    network.write_bytes(RPK)
    source_config = replace(config.source, uri=f"picamera2:?network={network}", **source)
    camera = Picamera2Source.from_uri(parse_uri(source_config.uri), source_config)
    camera._modules_factory = world.modules
    return camera


def test_the_aicam_pipeline_loads_here_with_the_imx500_deeplab_card() -> None:
    config = _config()
    assert not Path(config.model.path).exists()
    stages = ModelStages.from_config(config)
    card = stages.model.card
    assert card.name == "imx500-deeplabv3plus"
    assert (card.input.width, card.input.height) == NETWORK_WH
    assert card.output.kind == "class_map"
    assert card.output.name == "output0"
    assert len(card.classes) == 21
    assert (card.classes[0], card.classes[PERSON], card.classes[20]) == ("background", "person", "tvmonitor")
    assert card.background == 0


def test_an_rpk_without_a_card_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=r"^no model card for the IMX500 network .*mystery\.rpk: put mystery\.yaml"
    ):
        find_card(tmp_path / "mystery.rpk")


@pytest.mark.parametrize(
    ("size", "zoom", "roi"),
    [
        ((640, 480), None, None),
        ((1280, 720), None, None),
        ((640, 480), (1014, 760, 2028, 1520), (0.5, 0.25, 0.5, 0.5)),
    ],
    ids=["4:3", "16:9", "zoom-roi"],
)
def test_instances_land_on_the_image_pixels_that_show_the_object(
    tmp_path: Path,
    size: tuple[int, int],
    zoom: tuple[int, int, int, int] | None,
    roi: tuple[float, float, float, float] | None,
) -> None:
    config = _config()
    world = World(results_from=1, zoom=zoom, objects=[(PERSON, OBJECT)])
    source = _source(tmp_path, config, world, width=size[0], height=size[1], roi=roi)
    source.open()
    stages = ModelStages.from_config(config)
    frame = source.read()
    source.close()
    assert frame is not None
    prepared = stages.preprocess(frame)
    instances = stages.decode(frame, prepared, stages.infer(prepared))

    cx, cy, cw, ch = world.requests[-1].metadata["ScalerCrop"]
    sx, sy = size[0] / cw, size[1] / ch
    x, y, w, h = OBJECT
    expected = [(x - cx) * sx, (y - cy) * sy, (x + w - cx) * sx, (y + h - cy) * sy]
    assert world.imx500 is not None
    seen = world.imx500.config["roi"]
    cell = max(seen[2] / NETWORK_WH[0] * sx, seen[3] / NETWORK_WH[1] * sy)  # one class-map pixel in the image
    assert instances.class_id.tolist() == [PERSON]
    np.testing.assert_allclose(instances.xyxy[0], expected, atol=2.5 * cell + 1)


class _Collect:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def send(self, result: Result) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


def test_frames_the_sensor_gave_no_result_for_are_passed_over_not_failed_inference(tmp_path: Path) -> None:
    """picamera2's get_outputs returns None for a frame whose metadata has no output tensor, which happens
    after the first result too (picamera2's own demos keep the last result then): every such frame was a
    "LOST: frames a stage failed on: inference" and an error line in the log."""
    config = _config()
    world = World(results_from=1, objects=[(PERSON, OBJECT)], no_results_at=frozenset({3, 5}))
    source = _source(tmp_path, config, world)
    sink = _Collect()
    stats = Pipeline(
        source, ModelStages.from_config(config), {"c": sink}, max_frames=6, owns_stages=True
    ).run()
    assert stats.bad_frames == {}
    assert source.stats.held_back == 2
    lines = summary(stats, source.stats, [], "done", lost=losses(stats, source.stats, {}))
    assert lines[0].startswith("done: ")  # no LOST, nor a "frames a stage failed on" line
    assert (
        "source: 2 frames came without the sensor's result and were passed over "
        "(not lost: the next frame's result follows; see the log)"
    ) in lines
    assert [r.instances.class_id.tolist() for r in sink.results] == [[PERSON]] * len(sink.results)


def test_a_camera_whose_every_read_fails_ends_the_run_as_a_failure_a_restart_may_fix(tmp_path: Path) -> None:
    """A camera whose reads all failed, ten in a row (here its frame buffers cannot be mapped: memory gone),
    ended the run with a SourceError, status 2, which the unit never restarts, though its reads may well work
    in a fresh process; a file's would fail again (bad input), and stays 2."""
    config = _config()
    world = World(results_from=1, objects=[(PERSON, OBJECT)], fail_mapping_from=0)
    source = _source(tmp_path, config, world)
    pipeline = Pipeline(source, ModelStages.from_config(config), {"c": _Collect()}, owns_stages=True)
    stats = pipeline.run()
    assert stats.frames_read == 0  # nothing read, so nothing lost: the error is the run's status (cli.py)
    assert isinstance(pipeline.error, SourceError)
    assert isinstance(pipeline.error, TransientError)
    assert "failed 10 reads in a row: [Errno 12] Cannot allocate memory" in str(pipeline.error)


def test_a_network_that_gives_no_first_result_ends_the_run_after_the_upload_limit_for_a_restart(
    tmp_path: Path,
) -> None:
    """Frames without a result are held back while the network uploads, and the source counts as waiting (the
    watchdog fed, READY sent): a network that never gave a result kept an unattended device "uploading network
    firmware" for ever, silently. After the upload limit the run fails with status 4, which the unit
    restarts (a fresh start uploads the network again)."""
    config = _config()
    world = World(results_from=10**9, objects=[(PERSON, OBJECT)])
    source = _source(tmp_path, config, world)
    source._upload_timeout_s = 0.2  # (15 minutes by default)
    pipeline = Pipeline(source, ModelStages.from_config(config), {"c": _Collect()}, owns_stages=True)
    runner = threading.Thread(target=pipeline.run, daemon=True)
    runner.start()
    runner.join(10)
    if runner.is_alive():
        pipeline.stop()
        runner.join(10)
        pytest.fail("the run still waits for the network's first result")
    assert isinstance(pipeline.error, TransientError)
    assert "gave no result in 0.2 s of streaming (uploading network firmware" in str(pipeline.error)
    assert world.cameras_open == 0
