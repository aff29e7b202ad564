"""Backends: ONNX Runtime checks at load, one-line errors, IMX500 hand-over, TensorRT import message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgeseg.backends import BACKENDS, InferenceOptions
from edgeseg.backends.ort import OrtBackend, thread_plan, usable_cores
from edgeseg.errors import ConfigError, MissingDependencyError, ModelError
from edgeseg.frame import Frame
from edgeseg.model import Model
from edgeseg.modelcard import find_card

SINET = "sinet_portrait_320"
REPO = Path(__file__).resolve().parents[1]


def _sinet_card(tmp_path: Path, assets: Path, **input_overrides: Any) -> Path:
    doc = yaml.safe_load((Path(__file__).parents[1] / "models" / "cards" / f"{SINET}.yaml").read_text())
    doc["file"] = str(assets / "models" / f"{SINET}.onnx")
    doc["input"].update(input_overrides)
    path = tmp_path / "sinet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_registry_has_the_three_backends_by_yaml_name() -> None:
    assert set(BACKENDS) == {"onnxruntime", "tensorrt", "imx500"}


def test_unknown_backend_name_is_a_config_error(assets_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.backend: must be one of onnxruntime, tensorrt, imx500"):
        Model.load(assets_dir / "models" / f"{SINET}.onnx", InferenceOptions(backend="openvino"))


def test_unavailable_provider_is_a_config_error_listing_what_is_available(assets_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Model.load(
            assets_dir / "models" / f"{SINET}.onnx", InferenceOptions(providers=("CUDAExecutionProvider",))
        )
    text = _one_line(info.value)
    assert "model.providers: 'CUDAExecutionProvider' is not available" in text
    assert "CPUExecutionProvider" in text


def test_a_cuda_provider_lost_to_onnxruntime_installed_over_onnxruntime_gpu_says_so_not_to_install_it(
    assets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu (NVIDIA's wheel on a Jetson) does not count as the onnxruntime edgeseg requires, so pip
    installs the CPU one too, into the same onnxruntime package: its files win, both distributions stay
    listed, and the error said to install onnxruntime-gpu, which is installed. The stand-in: the metadata
    onnxruntime-gpu leaves beside this venv's onnxruntime."""
    gpu = tmp_path / "onnxruntime_gpu-1.23.0.dist-info"
    gpu.mkdir()
    (gpu / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.23.0\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    with pytest.raises(ConfigError) as info:
        Model.load(
            assets_dir / "models" / f"{SINET}.onnx", InferenceOptions(providers=("CUDAExecutionProvider",))
        )
    text = _one_line(info.value)
    assert "install onnxruntime-gpu for" not in text
    assert "onnxruntime and onnxruntime-gpu are both installed" in text
    assert text.endswith(
        "pip uninstall -y onnxruntime onnxruntime-gpu, then install onnxruntime-gpu alone)"
    ), text


def test_missing_model_file_is_one_line_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        Model.load(tmp_path / "nothing.onnx")
    assert "model file not found" in _one_line(info.value)


def test_corrupt_model_file_is_one_line_model_error(tmp_path: Path, assets_dir: Path) -> None:
    card = _sinet_card(tmp_path, assets_dir)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((assets_dir / "models" / f"{SINET}.onnx").read_bytes()[:5000])
    doc = yaml.safe_load(card.read_text())
    doc["file"] = str(broken)
    card.write_text(yaml.safe_dump(doc))
    with pytest.raises(ModelError) as info:
        Model.load(card)
    assert _one_line(info.value).startswith("model 'sinet-portrait': cannot load ")


def test_card_input_name_that_the_model_lacks_is_a_model_error(tmp_path: Path, assets_dir: Path) -> None:
    with pytest.raises(ModelError) as info:
        Model.load(_sinet_card(tmp_path, assets_dir, name="image"))
    assert "card input.name 'image' is not a model input (the model has data)" in _one_line(info.value)


def test_card_input_shape_that_the_model_lacks_is_a_model_error(tmp_path: Path, assets_dir: Path) -> None:
    with pytest.raises(ModelError) as info:
        Model.load(_sinet_card(tmp_path, assets_dir, width=256))
    assert "input 'data' has shape [1, 3, 320, 320], the card says [1, 3, 320, 256]" in _one_line(info.value)


def test_card_input_layout_that_the_model_lacks_is_a_model_error(tmp_path: Path, assets_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"the card says \[1, 320, 320, 3\]"):
        Model.load(_sinet_card(tmp_path, assets_dir, layout="nhwc"))


def test_wrong_tensor_is_refused_before_onnxruntime_sees_it(assets_dir: Path) -> None:
    backend = OrtBackend(find_card(assets_dir / "models" / f"{SINET}.onnx"))
    with pytest.raises(ModelError) as info:
        backend.run_tensor(np.zeros((1, 3, 300, 320), np.float32))
    assert "got float32 (1, 3, 300, 320), expected float32 (1, 3, 320, 320)" in _one_line(info.value)


def test_onnxruntime_runs_with_threads_and_returns_card_outputs(assets_dir: Path) -> None:
    model = Model.load(assets_dir / "models" / f"{SINET}.onnx", InferenceOptions(threads=1))
    prepared = model.preprocess(Frame(0, np.zeros((240, 320, 3), np.uint8), 0, 0.0))
    outputs = model.infer(prepared)
    assert list(outputs) == ["classifier/1"]
    assert outputs["classifier/1"].shape == (1, 2, 320, 320)
    model.close()


def _yolo_onnx(path: Path, outputs: dict[str, tuple[list[int | str] | None, tuple[int, ...]]]) -> Path:
    """An ONNX model with Ultralytics' segment metadata (2 classes, 32 px input) whose outputs are zeros:
    ``outputs`` name -> (declared dims, a name for a dynamic one; actual shape). Declared as None, the
    output's rank is unknown too (an If whose branches differ in rank, as shape inference leaves it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def zeros(name: str, shape: tuple[int, ...]) -> onnx.NodeProto:
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.zeros(shape, np.float32))
        )

    nodes = [
        helper.make_node("ReduceSum", ["images"], ["sum"], keepdims=0),
        zeros("zero", ()),
        helper.make_node("Greater", ["sum", "zero"], ["lit"]),
    ]
    for name, (dims, shape) in outputs.items():
        if dims is not None:
            nodes.append(zeros(name, shape))
            continue

        # (an all-zero input takes the else branch: the shape given; a lit one, one of another rank)
        lit, dark = (
            helper.make_graph(
                [zeros(f"{name}_{tag}", size)],
                f"{name}_{tag}",
                [],
                [helper.make_tensor_value_info(f"{name}_{tag}", TensorProto.FLOAT, None)],
            )
            for tag, size in (("t", shape[:-1]), ("e", shape))
        )
        nodes.append(helper.make_node("If", ["lit"], [name], then_branch=lit, else_branch=dark))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n, (dims, _) in outputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"task": "segment", "names": "{0: 'a', 1: 'b'}", "imgsz": "[32, 32]"})
    onnx.save(model, path)
    return path


PROTOS = ([1, 32, 8, 8], (1, 32, 8, 8))


@pytest.mark.parametrize(
    ("outputs", "refusal"),
    [
        (  # a detection model: no mask coefficients
            {"output0": ([1, 6, 21], (1, 6, 21)), "output1": PROTOS},
            "output 'output0' has shape [1, 6, 21], expected [1, 38, A] (4 box + 2 classes + 32 mask "
            "coefficients)",
        ),
        (
            {"output0": ([1, 798], (1, 798)), "output1": PROTOS},
            "output 'output0' has shape [1, 798], expected [1, 38, A]",
        ),
        (  # prototypes of 16 channels for output0's 32 coefficients
            {"output0": ([1, 38, 21], (1, 38, 21)), "output1": ([1, 16, 8, 8], (1, 16, 8, 8))},
            "output 'output0' has shape [1, 38, 21], expected [1, 22, A] (4 box + 2 classes + 16 mask "
            "coefficients)",
        ),
        (
            {"output0": ([1, 38, 21], (1, 38, 21)), "output1": ([1, 32, 64], (1, 32, 64))},
            "output 'output1' has shape [1, 32, 64], expected [1, nm, h, w] (nm, h, w >= 1)",
        ),
        (  # a detection model without prototypes (refused at load before)
            {"output0": ([1, 6, 21], (1, 6, 21))},
            "card output 'output1' is not an output of {file} (the model has output0)",
        ),
    ],
    ids=["detection-model", "output0-rank", "proto-channels", "output1-rank", "output1-missing"],
)
def test_a_yolo_seg_model_whose_outputs_cannot_be_decoded_is_refused_at_load_naming_file_and_output(
    tmp_path: Path, outputs: dict[str, Any], refusal: str
) -> None:
    """They were found frame by frame: a warning a frame, every frame lost, for as long as the run lasted."""
    path = _yolo_onnx(tmp_path / "odd.onnx", outputs)
    with pytest.raises(ModelError) as info:
        Model.load(path)
    line = _one_line(info.value)
    assert line.startswith(f"model 'odd': {path}: " if "{file}" not in refusal else "model 'odd': ")
    assert refusal.format(file=path) in line


def test_a_yolo_seg_model_with_dynamic_output_dimensions_loads_and_its_frames_are_checked(
    tmp_path: Path,
) -> None:
    path = _yolo_onnx(
        tmp_path / "open.onnx",
        {"output0": (None, (1, 38, 21)), "output1": ([1, "nm", "h", "w"], (1, 32, 8, 8))},  # (rank unknown)
    )
    model = Model.load(path)
    prepared = model.preprocess(Frame(0, np.zeros((32, 32, 3), np.uint8), 0, 0.0))
    assert len(model.decode(model.infer(prepared), prepared)) == 0
    lit = model.preprocess(Frame(0, np.full((32, 32, 3), 255, np.uint8), 0, 0.0))
    with pytest.raises(ModelError, match=r"output 'output0' has shape \(1, 38\), expected \[1, 38, A\]"):
        model.decode(model.infer(lit), lit)
    model.close()


# -- imx500 -----------------------------------------------------------------------------------------

IMX_CARD = {
    "name": "imx-deeplab",
    "task": "semantic",
    "input": {"name": "input", "width": 32, "height": 32},
    "output": {"name": "mask", "kind": "class_map"},
    "classes": ["background", "thing"],
}


def _imx_model(tmp_path: Path) -> Model:
    path = tmp_path / "imx-deeplab.yaml"
    path.write_text(yaml.safe_dump(IMX_CARD))
    return Model.load(path, InferenceOptions(backend="imx500"))


def test_imx500_hands_on_the_frames_tensors_mapped_through_the_tensor_roi(tmp_path: Path) -> None:
    model = _imx_model(tmp_path)
    class_map = np.zeros((32, 32), np.float32)
    class_map[8:16, 8:24] = 1
    # the sensor's network saw the right half of a 100x200 frame
    frame = Frame(
        0, np.zeros((100, 200, 3), np.uint8), 0, 0.0, tensors={"mask": class_map}, tensor_roi=(0.5, 0, 0.5, 1)
    )
    prepared = model.preprocess(frame)
    assert prepared.tensor is None
    inst = model.decode(model.infer(prepared), prepared)
    assert inst.image_shape == (100, 200)
    # model px x 8..24 -> 100 + x * 100/32; y 8..16 -> y * 100/32
    assert inst.xyxy[0].tolist() == [125, 25, 175, 50]


def test_imx500_frame_without_tensors_is_a_model_error(tmp_path: Path) -> None:
    model = _imx_model(tmp_path)
    prepared = model.preprocess(Frame(0, np.zeros((10, 10, 3), np.uint8), 0, 0.0))
    with pytest.raises(ModelError, match="carries no on-sensor output tensors"):
        model.infer(prepared)


def test_imx500_missing_output_name_is_a_model_error(tmp_path: Path) -> None:
    model = _imx_model(tmp_path)
    frame = Frame(0, np.zeros((10, 10, 3), np.uint8), 0, 0.0, tensors={"other": np.zeros((4, 4), np.float32)})
    with pytest.raises(ModelError, match=r"on-sensor output 'mask' missing \(the frame carries other\)"):
        model.infer(model.preprocess(frame))


# -- tensorrt ---------------------------------------------------------------------------------------


def test_tensorrt_without_its_packages_says_what_to_install(assets_dir: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(MissingDependencyError) as info:
        Model.load(
            assets_dir / "models" / "yolov8n-seg_int8_320_dequant_fp32.onnx",
            InferenceOptions(backend="tensorrt"),
        )
    assert "pip install edgeseg[tensorrt]" in _one_line(info.value)


def test_loading_deeplab_prints_no_initializer_warnings(
    assets_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # tf2onnx lists DeepLab's initializers as graph inputs; ORT warns ~270 lines per load at its default level
    Model.load(assets_dir / "models" / "deeplabv3p_mnv2_dm05_portrait_513.onnx").close()
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("threads", "spin", "cores", "plan"),
    [
        (
            0,
            None,
            2,
            (2, False),
        ),  # auto: every core, and no spinning: the threads would take the decode's core
        (0, None, 8, (8, False)),
        (1, None, 2, (1, True)),  # a core left over: spinning costs no other stage its core
        (2, None, 2, (2, False)),
        (0, True, 2, (2, True)),  # said explicitly: as said
        (3, False, 8, (3, False)),
    ],
)
def test_the_thread_plan_gives_inference_every_core_and_spins_only_with_a_core_to_spare(
    threads: int, spin: bool | None, cores: int, plan: tuple[int, bool]
) -> None:
    assert thread_plan(threads, spin, cores) == plan


def test_the_session_runs_with_the_planned_threads_and_says_so(assets_dir: Path) -> None:
    model = Model.load(assets_dir / "models" / f"{SINET}.onnx", InferenceOptions(threads=0))
    backend = model.backend
    assert isinstance(backend, OrtBackend)
    assert backend.threads == usable_cores()
    assert f"{usable_cores()} threads (not spinning)" in backend.description
    model.close()


ARENA_PROBE = """
import sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from pathlib import Path
from edgeseg.backends import InferenceOptions
from edgeseg.backends.ort import OrtBackend
from edgeseg.malloc import tune_malloc
from edgeseg.modelcard import find_card
from edgeseg.procmem import resident as memory

def resident():
    return memory().now_mb

tune_malloc()  # as the edgeseg command does at start
card = find_card(Path(sys.argv[1]))
backend = OrtBackend(card, InferenceOptions(threads=2))
x = np.zeros(card.input.shape, np.float32)
backend.set_threads(1)

def frames():
    for _ in range(6):
        backend.run_tensor(x)

with ThreadPoolExecutor(2) as pool:
    for run in [pool.submit(frames) for _ in range(2)]:
        run.result()
side_by_side = resident()
backend.set_threads(2)
for _ in range(6):
    backend.run_tensor(x)
print(side_by_side, resident())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_a_session_made_again_after_runs_side_by_side_gives_their_memory_back(assets_dir: Path) -> None:
    """Two frames at once on one session hold two runs' intermediate tensors in onnxruntime's arena. A
    session made again for one frame at a time (the planner giving the runs up) must not keep them: on
    YOLOv8n-seg at 320 the process held 10 MB more after going back than with the runs (187 against 178 MB:
    the arena kept every region it had), and 11 MB less once the warm-up gave the free regions back (134
    against 145)."""
    done = subprocess.run(
        [sys.executable, "-c", ARENA_PROBE, str(assets_dir / "models" / "yolov8n-seg_int8_320.onnx")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    side_by_side, after = (float(v) for v in done.stdout.split())
    assert after < side_by_side, f"{after:.1f} MB after going back, {side_by_side:.1f} MB with two runs"


# the last onnxruntime for Python 3.10 (JetPack 6's): its ConvInteger takes uint8 weights only
ORT_FOR_PYTHON_310 = "onnxruntime==1.23.2"
_LOAD = """
import json, platform, sys
platform.machine = lambda: sys.argv[3]  # (aarch64: no float rewrite by default, int8 kernels may win)
from edgeseg.backends import InferenceOptions
from edgeseg.errors import EdgesegError
from edgeseg.model import Model
try:
    model = Model.load(sys.argv[1], InferenceOptions(float_convs=json.loads(sys.argv[2])))
    print(json.dumps({"loaded": model.backend.description}))
except EdgesegError as exc:
    print(json.dumps({"error": str(exc)}))
"""


@pytest.fixture(scope="module")
def onnxruntime_1_23(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("onnxruntime")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    installed = subprocess.run([*pip, ORT_FOR_PYTHON_310], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return target


def _load_under(onnxruntime: Path, model: Path, float_convs: bool | None, machine: str) -> dict[str, str]:
    """Model.load of ``model`` in a process that imports ``onnxruntime`` from that folder, on ``machine``."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{onnxruntime}:{REPO}", "HOME": str(onnxruntime)}
    command = [sys.executable, "-c", _LOAD, str(model), json.dumps(float_convs), machine]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_a_card_less_int8_yolo_model_loads_under_the_onnxruntime_of_python_3_10(
    onnxruntime_1_23: Path, assets_dir: Path
) -> None:
    """Its card comes from its ONNX metadata, which was read through a session of the model as it is: under
    onnxruntime < 1.24 (no ConvInteger kernel for int8 weights) that failed, although the backend would have
    run it with float convolutions (the default on x86-64, and with TensorRT)."""
    yolo = assets_dir / "models" / "yolov8n-seg_int8_320.onnx"
    result = _load_under(onnxruntime_1_23, yolo, None, "x86_64")
    assert "int8 convolutions run in float" in result.get("loaded", ""), result


def test_the_int8_yolo_model_loads_on_arm_under_the_onnxruntime_of_python_3_10(
    onnxruntime_1_23: Path, assets_dir: Path
) -> None:
    """On ARM the float rewrite is off by default (int8 kernels may win there), and onnxruntime < 1.24 has
    none for int8 weights: on a Jetson with JetPack 6 the model did not load."""
    yolo = assets_dir / "models" / "yolov8n-seg_int8_320.onnx"
    result = _load_under(onnxruntime_1_23, yolo, None, "aarch64")
    assert "int8 convolutions run in float" in result.get("loaded", ""), result


def test_int8_convolutions_kept_where_onnxruntime_has_no_kernel_for_them_is_one_line_saying_what_to_set(
    onnxruntime_1_23: Path, assets_dir: Path
) -> None:
    yolo = assets_dir / "models" / "yolov8n-seg_int8_320.onnx"
    error = _load_under(onnxruntime_1_23, yolo, False, "aarch64").get("error", "")
    assert "\n" not in error
    assert "onnxruntime 1.23.2 has no ConvInteger kernel for int8 weights (from 1.24)" in error, error
    assert error.endswith("leave model.float_convs unset or set it true (they then run in float)"), error
