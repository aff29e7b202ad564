"""pipelines/aicam-imx500-deeplab.yaml end to end against the picamera2 fakes (tests/imx500_fake.py): the card
is found for the .rpk although it is not on this machine, and the instances the sensor's class map gives land
on the image pixels that show the object, whatever part of the sensor the image and the network see."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from imx500_fake import NETWORK_WH, RPK, World

from edgeseg.config import PipelineConfig, load_config
from edgeseg.errors import ModelError
from edgeseg.modelcard import find_card
from edgeseg.pipeline import ModelStages
from edgeseg.sources import parse_uri
from edgeseg.sources.picamera2 import Picamera2Source

PIPELINE = Path(__file__).parents[1] / "pipelines" / "aicam-imx500-deeplab.yaml"
PERSON = 15
OBJECT = (2300, 1200, 500, 700)  # full-sensor px: inside the image and the network's crop in every case


def _config() -> PipelineConfig:
    return load_config(PIPELINE, [])


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
    network = tmp_path / "imx500_network_deeplabv3plus.rpk"
    network.write_bytes(RPK)
    config = _config()
    source_config = replace(
        config.source, uri=f"picamera2:?network={network}", width=size[0], height=size[1], roi=roi
    )
    world = World(results_from=1, zoom=zoom, objects=[(PERSON, OBJECT)])
    source = Picamera2Source.from_uri(parse_uri(source_config.uri), source_config)
    source._modules_factory = world.modules
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
