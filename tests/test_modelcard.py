"""Model cards: where they are found, what they hold, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeseg.errors import ModelError
from edgeseg.modelcard import find_card, load_card_file, parse_card, read_onnx_metadata

SEMANTIC = {
    "name": "demo",
    "file": "demo.onnx",
    "task": "semantic",
    "input": {"name": "image", "width": 320, "height": 240, "layout": "nchw", "color": "rgb"},
    "output": {"name": "logits", "kind": "logits"},
    "classes": ["background", "nut", "washer", "bolt"],
    "background": 0,
    "semantic": {"erosion_kernel": 3, "dist_threshold": 0.5, "size_threshold": 20},
}


def _card(tmp_path: Path, doc: dict[str, Any], stem: str = "demo") -> Path:
    (tmp_path / f"{stem}.onnx").write_bytes(b"")
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(SEMANTIC))
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    node[last] = value
    return doc


def test_card_beside_the_model_is_found_by_the_model_path(tmp_path: Path) -> None:
    _card(tmp_path, SEMANTIC)
    card = find_card(tmp_path / "demo.onnx")
    assert card.task == "semantic"
    assert card.classes == ("background", "nut", "washer", "bolt")
    assert card.input.shape == (1, 3, 240, 320)
    assert card.file == tmp_path / "demo.onnx"
    assert card.semantic.size_threshold == 20


def test_card_yaml_resolves_its_file_relative_to_itself(tmp_path: Path) -> None:
    card = find_card(_card(tmp_path, SEMANTIC))
    assert card.file == tmp_path / "demo.onnx"


def test_defaults_fill_what_the_card_leaves_out(tmp_path: Path) -> None:
    card = find_card(_card(tmp_path, SEMANTIC))
    assert (card.input.dtype, card.input.resize, card.input.mean, card.input.std) == (
        "float32",
        "stretch",
        (0.0, 0.0, 0.0),
        (255.0, 255.0, 255.0),
    )
    assert card.output.layout == "nchw"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("input.layout", "nhcw", "input.layout: must be one of nchw, nhwc (got 'nhcw')"),
        ("input.width", 0, "input.width: must be >= 1 (got 0)"),
        ("input.std", [1, 0, 1], "input.std: each must be > 0 (got [1, 0, 1])"),
        ("input.colour", "rgb", "input.colour: unknown key; did you mean color?"),
        ("output.kind", "softmax", "output.kind: must be one of logits, probabilities, sigmoid, class_map"),
        ("task", "detect", "task: must be one of semantic, yolo-seg"),
        ("background", 7, "background: must index classes (0..3) (got 7)"),
        ("contact", 0, "contact: must index classes (0..3) other than the background (got 0)"),
        ("contact", 4, "contact: must index classes (0..3) other than the background (got 4)"),
        ("contact", -1, "contact: must be >= 0 (got -1)"),
        ("classes", [], "classes: must list at least 1 (got [])"),
        ("semantic.dist_threshold", 1.7, "semantic.dist_threshold: must be in (0, 1] (got 1.7)"),
        ("semantic.erosion_kernal", 3, "semantic.erosion_kernal: unknown key; did you mean erosion_kernel?"),
        ("input.pad_value", 300, "input.pad_value: must be in [0, 255] (got 300)"),
        ("input.mean", [1, 2], "input.mean: must be a list of 3 numbers (got [1, 2])"),
        ("output.protos", "p", "output.protos: only a yolo-seg model has prototypes (got 'p')"),
        ("yolo_seg", {"max_det": 0}, "yolo_seg.max_det: must be >= 1 (got 0)"),
        ("source", "x.yaml", "source: unknown key"),  # set by the loader, not by the card
    ],
)
def test_invalid_card_error_names_the_card_and_key_path(
    tmp_path: Path, path: str, value: Any, message: str
) -> None:
    card_path = _card(tmp_path, _with(path, value))
    with pytest.raises(ModelError) as info:
        load_card_file(card_path)
    text = str(info.value)
    assert text.startswith(f"{card_path}: ")
    assert message in text
    assert "\n" not in text


def test_card_that_is_no_mapping_is_one_line_error() -> None:
    with pytest.raises(ModelError, match=r"^card\.yaml: \(top level\): must be a section"):
        parse_card(["task", "semantic"], "card.yaml")


def test_defaults_that_depend_on_other_keys() -> None:
    doc = _with("input.dtype", "uint8")
    doc["input"]["layout"] = "nhwc"
    del doc["name"]
    card = parse_card(doc, "card.yaml", model_file=Path("models/parts.onnx"))
    assert (card.name, card.input.std, card.output.layout) == ("parts", (1.0, 1.0, 1.0), "nhwc")
    yolo = {"task": "yolo-seg", "name": "y", "input": {"name": "images", "width": 8, "height": 8}}
    card = parse_card({**yolo, "output": {}, "classes": ["a"]}, "card.yaml")
    assert card.output.names == ("output0", "output1")
    with pytest.raises(ModelError, match=r"card\.yaml: output\.protos: required"):
        parse_card({**yolo, "output": {"protos": None}, "classes": ["a"]}, "card.yaml")


def test_sigmoid_output_needs_exactly_two_classes() -> None:
    doc = _with("output.kind", "sigmoid")
    with pytest.raises(ModelError, match="classes: a sigmoid output has 2 classes"):
        parse_card(doc, "card.yaml")


def test_uint8_input_must_not_carry_a_normalization() -> None:
    doc = _with("input.dtype", "uint8")
    doc["input"]["std"] = [255, 255, 255]
    with pytest.raises(ModelError, match=r"input\.mean: a uint8 input takes raw pixels"):
        parse_card(doc, "card.yaml")


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: [semantic\n")
    with pytest.raises(ModelError, match=r"bad\.yaml: invalid YAML at line") as info:
        load_card_file(path)
    assert "\n" not in str(info.value)


def test_missing_model_file_is_reported_by_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model file not found: .*absent\.onnx"):
        find_card(tmp_path / "absent.onnx")


def test_corrupt_onnx_without_card_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        find_card(path)


def test_a_valid_model_with_an_operator_this_onnxruntime_lacks_is_not_called_corrupt(tmp_path: Path) -> None:
    """onnxruntime 1.21 to 1.23 (1.23 the last for Python 3.10) have no CPU kernel for int8 ConvInteger,
    which an int8 YOLO export has; find_card called it "not a valid ONNX model (corrupt or truncated)". The
    stand-in here: DepthToSpace on int32, valid ONNX that no onnxruntime CPU kernel takes."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.INT32, [1, 16, 2, 2])
    y = helper.make_tensor_value_info("output0", TensorProto.INT32, [1, 4, 4, 4])
    node = helper.make_node("DepthToSpace", ["images"], ["output0"], blocksize=2)
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelError) as err:
        find_card(tmp_path / "m.onnx")
    assert "corrupt" not in str(err.value)
    assert f"onnxruntime {onnxruntime.__version__}" in str(err.value)
    assert "DepthToSpace" in str(err.value)


def test_ultralytics_metadata_makes_a_yolo_seg_card(assets_dir: Path) -> None:
    card = find_card(assets_dir / "models" / "yolov8n-seg_int8_320.onnx")
    assert card.task == "yolo-seg"
    assert len(card.classes) == 80
    assert card.classes[0] == "person"
    assert card.classes[79] == "toothbrush"
    assert (card.input.name, card.input.width, card.input.height) == ("images", 320, 320)
    assert (card.input.resize, card.input.pad_value, card.input.std) == ("letterbox", 114.0, (255.0,) * 3)
    assert card.output.names == ("output0", "output1")


def _onnx_with_metadata(path: Path, **meta: str) -> Path:
    """A one-node ONNX model (input ``images``) carrying ``meta`` as its metadata_props."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"task": "segment", **meta})
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("names", "imgsz", "why"),
    [
        ("{0: 'a'}", "[1e400, 320]", "cannot convert float infinity to integer"),  # was OverflowError
        ("+" * 5000 + "1", "320", "recursion"),  # was RecursionError
        ("-" * 100000 + "1", "320", "MemoryError"),  # was MemoryError
        ("'person'", "320", "names must be a dict or list (got str)"),  # was 6 classes p, e, r, s, o, n
    ],
    ids=["inf-imgsz", "deep-names", "deeper-names", "string-names"],
)
def test_ultralytics_metadata_of_a_wrong_type_or_depth_is_a_one_line_error(
    tmp_path: Path, names: str, imgsz: str, why: str
) -> None:
    path = _onnx_with_metadata(tmp_path / "m.onnx", names=names, imgsz=imgsz)
    with pytest.raises(
        ModelError, match=r"m\.onnx \(ONNX metadata\): unreadable Ultralytics 'names'/'imgsz': "
    ) as err:
        find_card(path)
    assert why in str(err.value)
    assert "\n" not in str(err.value)


def test_onnx_metadata_reader_reads_ultralytics_keys(assets_dir: Path) -> None:
    meta, inputs = read_onnx_metadata(assets_dir / "models" / "yolov8n-seg_int8_320_dequant_fp32.onnx")
    assert meta["task"] == "segment"
    assert meta["imgsz"] == "[320, 320]"
    assert inputs == ["images"]


@pytest.mark.parametrize(
    ("stem", "layout", "color", "kind"),
    [
        ("mediapipe_selfie_segmentation_256x256", "nhwc", "rgb", "sigmoid"),
        ("sinet_portrait_320", "nchw", "bgr", "logits"),
        ("deeplabv3p_mnv2_dm05_portrait_513", "nchw", "rgb", "logits"),
    ],
)
def test_repo_cards_are_found_by_the_shared_models_stem(
    assets_dir: Path, stem: str, layout: str, color: str, kind: str
) -> None:
    card = find_card(assets_dir / "models" / f"{stem}.onnx")
    assert card.source.endswith(f"models/cards/{stem}.yaml")
    assert (card.input.layout, card.input.color, card.output.kind) == (layout, color, kind)
    assert card.classes == ("background", "person")
    assert card.file == assets_dir / "models" / f"{stem}.onnx"


def test_repo_card_loaded_directly_finds_its_model_in_the_assets(assets_dir: Path, repo_root: Path) -> None:
    card = find_card(repo_root / "models" / "cards" / "sinet_portrait_320.yaml")
    assert card.file is not None
    assert card.file.resolve() == (assets_dir / "models" / "sinet_portrait_320.onnx").resolve()
