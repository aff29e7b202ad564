"""Dynamically quantized convolutions run as float ones: the rewrite of edgeseg.floatconv, checked
on nets quantized by onnxruntime's own quantize_dynamic and on the real YOLOv8n-seg int8 export."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgeseg.backends import InferenceOptions
from edgeseg.errors import ModelError
from edgeseg.floatconv import float_convs
from edgeseg.frame import Frame
from edgeseg.model import Model

YOLO_INT8 = "models/yolov8n-seg_int8_320.onnx"
YOLO_DEQUANT = "models/yolov8n-seg_int8_320_dequant_fp32.onnx"


def _conv_net(rng: np.random.Generator) -> onnx.ModelProto:
    """x (1, 3, 24, 24) -> Conv 3x3 -> Relu -> Conv 3x3 stride 2 -> y, float weights and biases."""
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b2")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 24, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])],
        [w1, b1, w2, b2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run(model: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _dequantized_weights(quantized: onnx.ModelProto) -> dict[str, NDArray[np.float32]]:
    """Each ConvInteger's weight as (Wq - zero point) * scale, the scale read off its scale product."""
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    made = {o: n for n in quantized.graph.node for o in n.output}
    users = {i: n for n in quantized.graph.node for i in n.input}
    out = {}
    for n in quantized.graph.node:
        if n.op_type != "ConvInteger":
            continue
        mul = users[users[n.output[0]].output[0]]  # Cast, then the Mul by the scale product
        product = made[next(i for i in mul.input if i in made and made[i].op_type == "Mul")]
        scale = next(inits[i] for i in product.input if i in inits)
        wq, zero = inits[n.input[1]].astype(np.float32), inits[n.input[3]].astype(np.float32)
        per_out = (-1, 1, 1, 1)
        out[n.input[1]] = (wq - zero.reshape(per_out)) * scale.astype(np.float32).reshape(per_out)
    return out


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_convolutions_quantized_by_onnxruntime_run_as_float_convs_of_their_int8_weights(
    tmp_path: Path, per_channel: bool
) -> None:
    rng = np.random.default_rng(1)
    net = _conv_net(rng)
    onnx.save(net, tmp_path / "float.onnx")
    quantize_dynamic(
        tmp_path / "float.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8, per_channel=per_channel
    )
    int8 = (tmp_path / "int8.onnx").read_bytes()
    assert b"ConvInteger" in int8
    rewritten, count = float_convs(int8)
    assert count == 2
    ops = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert "ConvInteger" not in ops
    assert "DynamicQuantizeLinear" not in ops
    onnx.checker.check_model(onnx.load_from_string(rewritten))
    # the float net with the int8 weights, dequantized: what the rewritten graph must compute
    weights = _dequantized_weights(onnx.load_from_string(int8))
    assert len(weights) == 2
    expected = onnx.ModelProto()
    expected.CopyFrom(net)
    for t in expected.graph.initializer:
        if f"{t.name}_quantized" in weights:
            t.CopyFrom(numpy_helper.from_array(weights[f"{t.name}_quantized"], t.name))
    x = rng.normal(0, 1, (1, 3, 24, 24)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(expected.SerializeToString(), x), atol=1e-5)
    # and the int8 graph as given is the same net up to its activations' quantization error
    given, exact = _run(int8, x), _run(net.SerializeToString(), x)
    assert np.abs(given - exact).max() < 0.15 * np.abs(exact).max()


def test_int8_weights_shared_by_two_convolutions_become_two_float_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 12, 12]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "shared", io[:1], io[1:], [w])
    net = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(net, tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8)
    rewritten, count = float_convs((tmp_path / "int8.onnx").read_bytes())
    assert count == 2
    onnx.checker.check_model(onnx.load_from_string(rewritten))
    x = rng.normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
    exact = _run(net.SerializeToString(), x)
    assert np.abs(_run(rewritten, x) - exact).max() < 0.05 * np.abs(exact).max()


def test_a_model_without_dynamically_quantized_convolutions_is_returned_as_it_is() -> None:
    model = _conv_net(np.random.default_rng(2)).SerializeToString()
    assert float_convs(model) == (model, 0)


def test_the_yolo_int8_export_becomes_the_float_model_derived_from_it(assets_dir: Path) -> None:
    # the manifest's dequant_fp32 file is the same export with W = (Wq - zp) * scale and ConvInteger -> Conv
    rewritten, count = float_convs((assets_dir / YOLO_INT8).read_bytes())
    assert count == 76
    image = cv2.resize(cv2.imread(str(assets_dir / "images" / "bus.jpg")), (320, 320))
    x = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255
    ours = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(str(assets_dir / YOLO_DEQUANT), providers=["CPUExecutionProvider"])
    for a, b in zip(ours.run(None, {"images": x}), theirs.run(None, {"images": x}), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_the_backend_says_how_many_convolutions_run_in_float_and_can_be_told_not_to(
    assets_dir: Path,
) -> None:
    floats = Model.load(assets_dir / YOLO_INT8, InferenceOptions(float_convs=True))
    given = Model.load(assets_dir / YOLO_INT8, InferenceOptions(float_convs=False))
    assert "76 int8 convolutions run in float" in floats.backend.description
    assert "float" not in given.backend.description
    image = cv2.imread(str(assets_dir / "images" / "bus.jpg"))
    a, b = (m.decode(m.infer(p := m.preprocess(Frame(0, image, 0, 0.0))), p) for m in (floats, given))
    assert len(a) == len(b) >= 4  # the people and the bus, found either way
    assert sorted(a.class_id.tolist()) == sorted(b.class_id.tolist())


def test_a_truncated_int8_model_is_still_one_model_error(tmp_path: Path, assets_dir: Path) -> None:
    cut = (assets_dir / YOLO_INT8).read_bytes()[:40000]
    assert b"ConvInteger" in cut  # so the rewrite reads it before onnxruntime does
    (tmp_path / "cut.onnx").write_bytes(cut)
    card = yaml.safe_load((Path(__file__).parents[1] / "models/cards/sinet_portrait_320.yaml").read_text())
    card["file"] = str(tmp_path / "cut.onnx")
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError) as info:
        Model.load(tmp_path / "card.yaml", InferenceOptions(float_convs=True))
    assert str(info.value).startswith("model 'sinet-portrait': cannot load ")
    assert "\n" not in str(info.value)


def test_an_int8_model_with_a_damaged_tensor_name_is_one_model_error(tmp_path: Path) -> None:
    # a byte of a tensor's name damaged on disk (an SD card's bit flip) into no UTF-8: protobuf parses the
    # file, the rewrite cannot read the name back
    onnx.save(_conv_net(np.random.default_rng(4)), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8)
    int8 = (tmp_path / "int8.onnx").read_bytes()
    assert b"\n\x02r1" in int8  # what the second convolution's quantization reads (field 1: a node's input)
    (tmp_path / "int8.onnx").write_bytes(int8.replace(b"\n\x02r1", b"\n\x02r\xc9"))
    message = _load_damaged(tmp_path)
    assert message.startswith("model 'damaged': cannot load ")
    assert "\n" not in message


def _load_damaged(folder: Path) -> str:
    """The ModelError of loading ``folder``'s ``int8.onnx`` (a semantic model of 4 classes, 24x24) with the
    float rewrite on."""
    card = {
        "name": "damaged",
        "file": "int8.onnx",
        "task": "semantic",
        "input": {"name": "x", "width": 24, "height": 24},
        "output": {"name": "y"},
        "classes": ["a", "b", "c", "d"],
    }
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError) as info:
        Model.load(folder / "card.yaml", InferenceOptions(float_convs=True))
    return str(info.value)


def _damaged(int8: bytes, damage: str) -> bytes:
    """The quantized test net with one node of its first convolution's chain short of an input or output."""
    model = onnx.load_from_string(int8)
    nodes = model.graph.node
    conv = next(n for n in nodes if n.op_type == "ConvInteger")
    users = {i: n for n in nodes for i in n.input}
    made = {o: n for n in nodes for o in n.output}
    cast = users[conv.output[0]]
    scale = users[cast.output[0]]
    scales = made[next(i for i in scale.input if i != cast.output[0])]
    node, field, keep = {
        "conv-output": (conv, "output", 0),
        "cast-output": (cast, "output", 0),
        "scale-input": (scale, "input", 1),
        "scale-output": (scale, "output", 0),
        "quantization-outputs": (made[conv.input[0]], "output", 1),
        "scales-input": (scales, "input", 1),
    }[damage]
    del getattr(node, field)[keep:]
    return model.SerializeToString()


@pytest.mark.parametrize(
    "damage",
    ["conv-output", "cast-output", "scale-input", "scale-output", "quantization-outputs", "scales-input"],
)
def test_an_int8_model_with_a_node_short_of_its_inputs_or_outputs_is_one_model_error(
    tmp_path: Path, damage: str
) -> None:
    # a damaged file that protobuf still parses: the rewrite leaves it to onnxruntime, which names the problem
    onnx.save(_conv_net(np.random.default_rng(5)), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "int8.onnx", weight_type=QuantType.QInt8)
    (tmp_path / "int8.onnx").write_bytes(_damaged((tmp_path / "int8.onnx").read_bytes(), damage))
    message = _load_damaged(tmp_path)
    assert message.startswith("model 'damaged': ")
    assert "\n" not in message
