"""The real shared models run from their model card alone, on real images, and find the people in them."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.frame import Frame
from edgeseg.instances import Instances
from edgeseg.model import Model

# Person boxes (xyxy, frame px) in the shared images, from the Ultralytics reference (tests/golden/).
PEOPLE = {
    "zidane.jpg": [(746, 35, 1145, 711), (134, 210, 962, 708)],
    "bus.jpg": [(46, 391, 224, 907), (226, 409, 344, 857), (674, 372, 806, 869)],
}
# obama.jpg is a head-and-shoulders portrait: the person covers the centre of the bottom half.
OBAMA_TORSO = (450, 1100, 850, 1600)

MEDIAPIPE = "mediapipe_selfie_segmentation_256x256"
SINET = "sinet_portrait_320"
DEEPLAB = "deeplabv3p_mnv2_dm05_portrait_513"


@cache
def _model(path: Path) -> Model:
    return Model.load(path)


def _run(assets: Path, stem: str, image: str) -> Instances:
    model = _model(assets / "models" / f"{stem}.onnx")
    frame = Frame(0, cv2.imread(str(assets / "images" / image)), 0, 0.0)
    prepared = model.preprocess(frame)
    return model.decode(model.infer(prepared), prepared)


def _people(inst: Instances) -> Instances:
    return inst[inst.class_id == 1]


def _covered(inst: Instances, box: tuple[int, int, int, int]) -> float:
    """Fraction of ``box`` covered by the union of the instances' masks."""
    x0, y0, x1, y1 = box
    dense = inst.dense_masks().any(axis=0) if len(inst) else np.zeros(inst.image_shape, bool)
    return float(dense[y0:y1, x0:x1].mean())


@pytest.mark.parametrize("stem", [MEDIAPIPE, SINET, DEEPLAB])
def test_portrait_is_one_confident_person_covering_the_torso(assets_dir: Path, stem: str) -> None:
    people = _people(_run(assets_dir, stem, "obama.jpg"))
    assert len(people) >= 1
    best = int(np.argmax(people.area))
    assert people.score[best] > 0.9
    assert _covered(people[best], OBAMA_TORSO) > 0.95
    assert people.image_shape == (1752, 1314)


@pytest.mark.parametrize("stem", [MEDIAPIPE, SINET, DEEPLAB])
def test_both_players_in_zidane_are_segmented(assets_dir: Path, stem: str) -> None:
    people = _people(_run(assets_dir, stem, "zidane.jpg"))
    assert len(people) >= 1
    for box in PEOPLE["zidane.jpg"]:
        assert _covered(people, box) > 0.2, box


def test_pedestrians_on_the_bus_image_are_separate_instances(assets_dir: Path) -> None:
    people = _people(_run(assets_dir, MEDIAPIPE, "bus.jpg"))
    left, middle = PEOPLE["bus.jpg"][:2]
    on_left = {i for i in range(len(people)) if _covered(people[i], left) > 0.2}
    on_middle = {i for i in range(len(people)) if _covered(people[i], middle) > 0.2}
    assert on_left
    assert on_middle
    assert on_left.isdisjoint(on_middle)
    assert _covered(people, (300, 0, 810, 200)) < 0.01  # nothing on the bus roof or the sky


def test_portrait_deeplab_still_finds_the_nearest_pedestrian_on_the_bus_image(assets_dir: Path) -> None:
    # SINet and DeepLab are portrait models that miss small full-body people (MANIFEST.md); DeepLab still
    # finds the large pedestrian on the left, SINet finds none, so it is not checked here
    people = _people(_run(assets_dir, DEEPLAB, "bus.jpg"))
    assert _covered(people, PEOPLE["bus.jpg"][0]) > 0.1


def test_demo_model_loads_from_its_card(repo_root: Path) -> None:
    path = repo_root / "models" / "demo-parts.onnx"
    if not path.is_file() and os.environ.get("CI", "").lower() != "true":
        pytest.skip("models/demo-parts.onnx is not here yet")
    model = Model.load(path)
    assert model.card.task == "semantic"
    assert model.card.classes == ("background", "nut", "washer", "bolt")
    frame = Frame(0, np.zeros((480, 640, 3), np.uint8), 0, 0.0)
    prepared = model.preprocess(frame)
    inst = model.decode(model.infer(prepared), prepared)
    assert inst.image_shape == (480, 640)
