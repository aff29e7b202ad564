"""TensorRT backend against stand-ins for ``tensorrt`` and ``pycuda.driver`` (neither installs here).

The fakes reproduce the surface the backend uses (TensorRT 10 named-tensor API, pycuda contexts, page-locked
buffers, device allocations, streams) and the one rule that bites in practice: a CUDA context is current
per thread, so running the engine from another thread works only if the backend pushes its context.
What they cannot show, and what has not run on real hardware: engine build times, real kernels, FP16
accuracy, and pycuda/TensorRT version quirks on a Jetson.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgeseg.backends import InferenceOptions
from edgeseg.backends import tensorrt as trt_backend
from edgeseg.backends.tensorrt import TensorRTBackend, engine_cache_path
from edgeseg.errors import ConfigError, ModelError
from edgeseg.geometry import AxisAffine
from edgeseg.modelcard import ModelCard, parse_card
from edgeseg.preprocess import Prepared

LAYOUT = [("images", "input", [1, 3, 8, 8]), ("out", "output", [1, 2, 8, 8])]


class FakeCuda:
    """``pycuda.driver``: contexts current per thread, device memory as numpy buffers keyed by address."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.memory: dict[int, np.ndarray] = {}
        self.next_address = 0x1000
        self.freed: list[int] = []
        fake = self

        class Context:
            def push(self) -> None:
                fake._stack().append(self)

            def pop(self) -> None:
                assert fake.current() is self, "pop of a context that is not current"
                fake._stack().pop()

            def detach(self) -> None:
                self.detached = True

        class Device:
            def __init__(self, ordinal: int) -> None:
                self.ordinal = ordinal

            def name(self) -> str:
                return "Fake Orin"

            def make_context(self) -> Context:
                ctx = Context()
                ctx.push()
                return ctx

        class Allocation:
            def __init__(self, address: int) -> None:
                self.address = address

            def __int__(self) -> int:
                return self.address

            def free(self) -> None:
                fake.freed.append(self.address)

        class Stream:
            handle = 77

            def synchronize(self) -> None:
                pass

        self.Device, self.Stream, self._Allocation = Device, Stream, Allocation

    def _stack(self) -> list[Any]:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack  # type: ignore[no-any-return]

    def current(self) -> Any:
        return self._stack()[-1] if self._stack() else None

    def init(self) -> None:
        pass

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype)

    def mem_alloc(self, nbytes: int) -> Any:
        address = self.next_address
        self.next_address += 0x1000 + nbytes
        self.memory[address] = np.zeros(nbytes, np.uint8)
        return self._Allocation(address)

    def memcpy_htod_async(self, dev: Any, host: np.ndarray, stream: Any) -> None:
        assert self.current() is not None, "no current CUDA context"
        self.memory[int(dev)][:] = host.view(np.uint8).reshape(-1)

    def memcpy_dtoh_async(self, host: np.ndarray, dev: Any, stream: Any) -> None:
        assert self.current() is not None, "no current CUDA context"
        host.view(np.uint8).reshape(-1)[:] = self.memory[int(dev)]


def make_trt(
    cuda: FakeCuda, layout: list[tuple[str, str, list[int]]] = LAYOUT, version: str = "10.3.0"
) -> Any:
    """A ``tensorrt`` stand-in whose engines compute ``out = [sum over channels, max over channels]``."""
    state = SimpleNamespace(builds=0, deserialized=0, flags=[], build_seconds=0.0, parse_ok=True, contexts=[])

    class Engine:
        def __init__(self, tensors: list[list[Any]]) -> None:
            self.tensors = tensors
            self.num_io_tensors = len(tensors)

        def get_tensor_name(self, i: int) -> str:
            return str(self.tensors[i][0])

        def _t(self, name: str) -> list[Any]:
            return next(t for t in self.tensors if t[0] == name)

        def get_tensor_mode(self, name: str) -> str:
            return str(self._t(name)[1])

        def get_tensor_shape(self, name: str) -> list[int]:
            return list(self._t(name)[2])

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def create_execution_context(self) -> Context:
            ctx = Context(self)
            state.contexts.append(ctx)
            return ctx

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.ran_in: list[Any] = []

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
            self.input_shapes[name] = tuple(shape)

        def get_tensor_shape(self, name: str) -> list[int]:
            shape = self.engine.get_tensor_shape(name)
            return list(self.input_shapes.get(name, shape))

        def set_tensor_address(self, name: str, address: int) -> None:
            assert isinstance(address, int)
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle: int) -> bool:
            if cuda.current() is None:  # what pycuda reports as "invalid resource handle"
                return False
            self.ran_in.append(cuda.current())
            x = cuda.memory[self.addresses["images"]].view(np.float32).reshape(1, 3, 8, 8)
            y = np.concatenate([x.sum(axis=1, keepdims=True), x.max(axis=1, keepdims=True)], axis=1)
            cuda.memory[self.addresses["out"]][:] = y.astype(np.float32).view(np.uint8).reshape(-1)
            return True

    class Parser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.network = network
            self.num_errors = 0 if state.parse_ok else 1

        def parse(self, data: bytes) -> bool:
            return bool(state.parse_ok)

        def get_error(self, i: int) -> Any:
            return SimpleNamespace(desc=lambda: "Unsupported ONNX op ConvInteger")

    class Config:
        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def set_flag(self, flag: str) -> None:
            state.flags.append(flag)

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Any:
            assert flags == 0
            return SimpleNamespace()

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            state.builds += 1
            time.sleep(state.build_seconds)
            return b"ENGINE:" + json.dumps({"version": trt.__version__, "tensors": layout}).encode()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            if not data.startswith(b"ENGINE:"):
                return None
            doc = json.loads(data[7:])
            if doc["version"] != trt.__version__:
                return None
            state.deserialized += 1
            return Engine(doc["tensors"])

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    trt = SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=Parser,
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=SimpleNamespace(FP16="fp16"),
        nptype=lambda dt: np.dtype(dt),
        state=state,
    )
    return trt


def _card(tmp_path: Path, outputs: str = "out") -> ModelCard:
    onnx = tmp_path / "tiny.onnx"
    if not onnx.exists():
        onnx.write_bytes(b"onnx-bytes-v1")
    doc = {
        "name": "tiny",
        "task": "semantic",
        "input": {"name": "images", "width": 8, "height": 8},
        "output": {"name": outputs, "kind": "logits"},
        "classes": ["bg", "fg"],
    }
    return parse_card(doc, "tiny.yaml", model_file=onnx)


def _backend(
    tmp_path: Path, trt: Any, cuda: FakeCuda, fp16: bool = False, card: ModelCard | None = None
) -> TensorRTBackend:
    options = InferenceOptions(backend="tensorrt", fp16=fp16, engine_cache_dir=tmp_path / "engines")
    return TensorRTBackend(card or _card(tmp_path), options, trt=trt, cuda=cuda)


def _prepared(x: np.ndarray) -> Prepared:
    return Prepared(x, AxisAffine(), (8, 8), None, (0, 0, 8, 8))


def test_first_start_builds_and_caches_the_engine_later_starts_load_it(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    _backend(tmp_path, trt, cuda).close()
    _backend(tmp_path, trt, cuda).close()
    assert trt.state.builds == 1
    files = sorted(p.name for p in (tmp_path / "engines").iterdir())
    assert len(files) == 1  # no temporary or probe files left behind
    assert files[0].startswith("tiny-fp32-")
    assert files[0].endswith(".engine")


def test_cache_key_depends_on_onnx_bytes_tensorrt_version_gpu_and_precision(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    base = engine_cache_path(tmp_path, onnx, "a" * 64, "10.3.0", "Orin", False)
    assert base == engine_cache_path(tmp_path, onnx, "a" * 64, "10.3.0", "Orin", False)
    variants = [
        engine_cache_path(tmp_path, onnx, "b" * 64, "10.3.0", "Orin", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, "10.7.0", "Orin", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, "10.3.0", "RTX 4090", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, "10.3.0", "Orin", True),
    ]
    assert len({base, *variants}) == 5


def test_a_new_tensorrt_version_rebuilds_instead_of_loading_the_old_engine(tmp_path: Path) -> None:
    cuda = FakeCuda()
    _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda).close()
    newer = make_trt(cuda, version="10.7.0")
    _backend(tmp_path, newer, cuda).close()
    assert newer.state.builds == 1
    assert len(list((tmp_path / "engines").iterdir())) == 2


def test_changed_onnx_file_gets_a_new_engine(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    _backend(tmp_path, trt, cuda).close()
    (tmp_path / "tiny.onnx").write_bytes(b"onnx-bytes-v2")
    _backend(tmp_path, trt, cuda).close()
    assert trt.state.builds == 2


def test_an_engine_that_does_not_deserialize_is_rebuilt_and_replaced(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    _backend(tmp_path, trt, cuda).close()
    (engine,) = (tmp_path / "engines").iterdir()
    engine.write_bytes(b"torn write")
    _backend(tmp_path, trt, cuda).close()
    assert trt.state.builds == 2
    assert engine.read_bytes().startswith(b"ENGINE:")


def test_every_io_tensor_is_bound_to_its_own_device_buffer_and_outputs_come_back(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    backend = _backend(tmp_path, trt, cuda)
    ctx = trt.state.contexts[-1]
    assert set(ctx.addresses) == {"images", "out"}
    assert len(set(ctx.addresses.values())) == 2
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    out = backend.run(_prepared(x))
    np.testing.assert_allclose(out["out"][0, 0], x[0].sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out["out"][0, 1], x[0].max(axis=0))
    again = backend.run(_prepared(x * 2))
    assert not np.shares_memory(out["out"], again["out"])  # results survive the next call
    backend.close()
    assert len(cuda.freed) == 2


def test_run_from_another_thread_uses_the_backends_own_context(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    backend = _backend(tmp_path, trt, cuda)
    assert cuda.current() is None  # construction leaves no context current on the loading thread
    result: dict[str, Any] = {}

    def worker() -> None:
        result["out"] = backend.run(_prepared(np.ones((1, 3, 8, 8), np.float32)))
        result["current_after"] = cuda.current()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    np.testing.assert_allclose(result["out"]["out"][0, 0], 3.0)
    assert result["current_after"] is None
    assert trt.state.contexts[-1].ran_in[-1] is backend._ctx


def test_engine_input_shape_unlike_the_card_is_a_model_error(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, layout=[("images", "input", [1, 3, 16, 16]), ("out", "output", [1, 2, 16, 16])])
    with pytest.raises(
        ModelError, match=r"engine input 'images' has shape \[1, 3, 16, 16\], the card says \[1, 3, 8, 8\]"
    ):
        _backend(tmp_path, trt, cuda)


def test_card_output_the_engine_lacks_is_a_model_error(tmp_path: Path) -> None:
    cuda = FakeCuda()
    with pytest.raises(ModelError, match=r"card output 'logits' is not an engine output \(has \['out'\]\)"):
        _backend(tmp_path, make_trt(cuda), cuda, card=_card(tmp_path, outputs="logits"))


def test_dynamic_input_is_fixed_to_the_card_shape(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, layout=[("images", "input", [-1, 3, 8, 8]), ("out", "output", [1, 2, 8, 8])])
    _backend(tmp_path, trt, cuda)
    assert trt.state.contexts[-1].input_shapes == {"images": (1, 3, 8, 8)}


def test_wrong_input_tensor_is_a_model_error(tmp_path: Path) -> None:
    cuda = FakeCuda()
    backend = _backend(tmp_path, make_trt(cuda), cuda)
    with pytest.raises(ModelError, match=r"input 'images' got shape \(1, 3, 4, 4\), expected \(1, 3, 8, 8\)"):
        backend.run(_prepared(np.zeros((1, 3, 4, 4), np.float32)))


def test_fp16_option_sets_the_builder_flag_and_its_own_cache_entry(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    backend = _backend(tmp_path, trt, cuda, fp16=True)
    assert trt.state.flags == ["fp16"]
    assert backend.engine_path.name.startswith("tiny-fp16-")


def test_onnx_the_parser_rejects_is_a_model_error_with_its_reasons(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    trt.state.parse_ok = False
    with pytest.raises(
        ModelError, match=r"TensorRT cannot parse .*tiny\.onnx: Unsupported ONNX op ConvInteger"
    ):
        _backend(tmp_path, trt, cuda)


def test_unwritable_cache_dir_is_a_config_error(tmp_path: Path) -> None:
    cuda = FakeCuda()
    blocker = tmp_path / "engines"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(ConfigError, match=r"model\.engine_cache_dir: .* is not writable"):
        _backend(tmp_path, make_trt(cuda), cuda)


def test_build_reports_progress_with_elapsed_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trt_backend, "PROGRESS_S", 0.01)
    cuda = FakeCuda()
    trt = make_trt(cuda)
    trt.state.build_seconds = 0.3
    with caplog.at_level(logging.INFO, logger="edgeseg.backends.tensorrt"):
        _backend(tmp_path, trt, cuda)
    text = caplog.text
    assert "building TensorRT engine for tiny.onnx" in text
    assert "s elapsed" in text
    assert "built engine" in text
