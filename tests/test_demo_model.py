"""The bundled demo model (models/demo-parts.onnx) on held-out synthetic conveyor scenes.

The model was trained on scene seeds 1000 and up and tuned on seeds 100..163 (scripts/train_demo_model.py);
these tests use seeds 0..9 (frame 250), which it has never seen. Accuracy is measured at frame
resolution (640x480, which is also the model's input size), against the generator's exact ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from edgeseg import SemanticParams, semantic_to_instances
from edgeseg.evaluate import Accuracy, PQAccumulator
from edgeseg.modelcard import find_card
from edgeseg.synthetic import CLASS_NAMES, PartsScene, SyntheticFrame

MODELS = Path(__file__).resolve().parents[1] / "models"
TEST_SEEDS = range(10)
TEST_INDEX = 250
# measured on these frames: mIoU 0.9299, PQ 0.8446 (scripts/bench_demo_model.py); floors a little below
MIOU_FLOOR = 0.925
PQ_FLOOR = 0.84


@pytest.fixture(scope="module")
def card_doc() -> dict:
    return yaml.safe_load((MODELS / "demo-parts.yaml").read_text())


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(MODELS / "demo-parts.onnx"), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def held_out(
    session: ort.InferenceSession,
) -> list[tuple[SyntheticFrame, np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out frames with the model's class map, confidence and contact map, ``(480, 640)`` each; the
    input is the frame's bytes as RGB planes, as the card states."""
    out = []
    for seed in TEST_SEEDS:
        frame = PartsScene(640, 480, seed=seed).frame(TEST_INDEX)
        x = np.ascontiguousarray(frame.image[:, :, ::-1].transpose(2, 0, 1)[None])
        ids, conf, contact = session.run(["classes", "confidence", "contact"], {"image": x})
        out.append((frame, ids[0, 0], conf[0, 0], contact[0, 0]))
    return out


def test_model_file_is_small_and_its_io_matches_the_card(card_doc: dict, session: ort.InferenceSession):
    assert (MODELS / "demo-parts.onnx").stat().st_size < 1_000_000
    (inp,) = session.get_inputs()
    spec = card_doc["input"]
    assert inp.name == spec["name"] == "image"
    assert inp.shape == [1, 3, spec["height"], spec["width"]]
    assert inp.type == "tensor(uint8)"
    assert spec["dtype"] == "uint8"
    outputs = {o.name: o for o in session.get_outputs()}
    names = card_doc["output"]
    assert (
        set(outputs)
        == {names["name"], names["confidence"], names["contact"]}
        == {"classes", "confidence", "contact"}
    )
    assert outputs["classes"].type == outputs["contact"].type == "tensor(uint8)"
    assert all(o.shape == [1, 1, spec["height"], spec["width"]] for o in outputs.values())
    assert tuple(card_doc["classes"]) == CLASS_NAMES
    assert card_doc["background"] == 0


def test_card_loads_with_the_model_card_loader():
    card = find_card(MODELS / "demo-parts.onnx")
    assert (card.task, card.classes) == ("semantic", CLASS_NAMES)
    assert (card.input.color, card.input.layout, card.output.kind) == ("rgb", "nchw", "class_map")


def test_the_contact_map_marks_where_parts_touch(held_out):
    """Where two different parts lie within 2 px of a pixel (the map the model was taught), most pixels
    are marked, and few elsewhere: the map is not empty or everywhere."""
    recall, spill = [], []
    for frame, _, _, contact in held_out:
        assert set(np.unique(contact)) <= {0, 1}
        band = frame.between_parts(2)
        recall.append(contact[band].mean())
        spill.append(contact[~band].mean())
    assert np.mean(recall) > 0.5, np.mean(recall)
    assert np.mean(spill) < 0.02, np.mean(spill)


def test_the_confidence_is_the_probability_of_the_class_given(held_out):
    for _, ids, conf, _ in held_out:
        assert ids.max() < len(CLASS_NAMES)
        assert conf.dtype == np.float32
        # the largest of 4 probabilities is at least 1/4; it is 1 at most
        assert conf.min() >= 0.25 - 1e-6
        assert conf.max() <= 1.0 + 1e-6


def test_held_out_mean_iou_over_the_four_classes_is_at_least_0_925(held_out):
    conf = np.zeros(16, np.int64)
    for frame, ids, _, _ in held_out:
        conf += np.bincount(frame.class_map.ravel() * 4 + ids.ravel().astype(np.int64), minlength=16)
    c = conf.reshape(4, 4)
    iou = np.diag(c) / (c.sum(0) + c.sum(1) - np.diag(c))
    assert iou.mean() >= MIOU_FLOOR, f"per-class IoU {np.round(iou, 4)}"


@pytest.fixture(scope="module")
def end_to_end(held_out) -> Accuracy:
    """PQ of the card's semantic post-processing on the model's maps, summed over the held-out frames."""
    params = find_card(MODELS / "demo-parts.onnx").semantic
    assert isinstance(params, SemanticParams)
    acc = PQAccumulator()
    for frame, ids, conf, contact in held_out:
        found = semantic_to_instances(ids, params, background=0, confidence=conf, touching=contact)
        acc.add(found, frame.instances())
    res = acc.result()
    assert res is not None
    return res


def test_held_out_end_to_end_panoptic_quality_is_at_least_0_84(end_to_end: Accuracy):
    assert end_to_end.pq >= PQ_FLOOR, describe(end_to_end)


def describe(res: Accuracy) -> str:
    return f"PQ {res.pq:.4f} (SQ {res.sq:.4f}, RQ {res.rq:.4f}, tp/fp/fn {res.tp}/{res.fp}/{res.fn})"
