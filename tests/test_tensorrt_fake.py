"""TensorRT backend against stand-ins for ``tensorrt`` and ``pycuda.driver`` (neither installs here).

The fakes reproduce the surface the backend uses (TensorRT 10 named-tensor API, pycuda contexts, page-locked
buffers, device allocations, streams) and the rules that bite on a device, each from the real source:

- a CUDA context is current per thread and ``Device.make_context`` pushes the new one
  (inducer/pycuda ``src/wrapper/wrap_cudadrv.cpp:1167``), so running from another thread works only if the
  backend pushes its context; ``cuda.init()`` failures raise ``pycuda.driver.Error`` subclasses;
- anything made in a context (TensorRT engine and execution context, stream, device and page-locked memory)
  that is released after the context was detached fails ("context is destroyed", NVIDIA/TensorRT#1632,
  inducer/pycuda#460): the fake records it in ``cuda.errors``;
- a network with a dynamic input does not build without an optimization profile ("Network has dynamic or
  shape inputs, but no optimization profile has been defined", NVIDIA/TensorRT#1116, #768), and
  ``IExecutionContext.set_input_shape`` returns False for a shape outside the profile
  (NVIDIA/TensorRT ``python/src/infer/pyCore.cpp:1309``, TensorRT 10);
- ``OnnxParser.parse(bytes)`` cannot find external weight files (it has no path; ``parse_from_file`` has);
  the parser has no importer for ``ConvInteger`` (onnx-tensorrt ``docs/operators.md``, TensorRT 10:
  "ConvInteger | N");
- ``trt.nptype`` raises TypeError for bf16 and fp8 (``python/packaging/bindings_wheel/tensorrt/__init__.py``
  ``nptype``, lines 172-194 in 10.x: "Could not resolve TensorRT datatype to an equivalent numpy datatype.");
- TensorRT 11 has no ``BuilderFlag.FP16`` (``include/NvInfer.h`` 11.1; CHANGELOG 11.0: strongly typed only);
- an engine records the compute capability it was built for: on another one it does not deserialize ("The
  engine plan file is generated on an incompatible device, expecting compute 6.1 got compute 7.5, please
  rebuild.", NVIDIA/TensorRT#564), on another GPU of the same one it loads with only a warning ("Using an
  engine plan file across different models of devices is not recommended", dusty-nv/jetson-inference#883);
  every Jetson Orin module names itself "Orin" (``cuDeviceGetName``, as deviceQuery prints it) and has
  compute capability 8.7, the SM count and memory differ (pycuda ``Device.compute_capability``,
  ``total_memory``, ``get_attribute``: ``src/cpp/cuda.hpp:448-470``).

What they cannot show, and what has not run on real hardware: engine build times, real kernels, FP16
accuracy, and pycuda/TensorRT version quirks on a Jetson.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgeseg.backends import InferenceOptions
from edgeseg.backends import tensorrt as trt_backend
from edgeseg.backends.tensorrt import TensorRTBackend, engine_cache_path
from edgeseg.errors import ConfigError, MissingDependencyError, ModelError
from edgeseg.geometry import AxisAffine
from edgeseg.modelcard import ModelCard, parse_card
from edgeseg.preprocess import Prepared

LAYOUT = [("images", "input", [1, 3, 8, 8]), ("out", "output", [1, 2, 8, 8])]
NUMPY_TYPES = {"float32", "float16", "int8", "int32", "int64", "bool", "uint8"}  # tensorrt.nptype's mapping


@dataclass(frozen=True)
class Gpu:
    name: str
    compute: tuple[int, int]
    sms: int
    memory: int  # bytes (cuDeviceTotalMem: on a Jetson, the memory it shares with the CPU)


AGX_ORIN = Gpu("Orin", (8, 7), 16, 62 << 30)  # Jetson AGX Orin 64GB: 2048 CUDA cores
ORIN_NANO = Gpu("Orin", (8, 7), 8, 7 << 30)  # Jetson Orin Nano 8GB: 1024 CUDA cores


class FakeCuda:
    """``pycuda.driver``: contexts current per thread, device memory as numpy buffers keyed by address."""

    class Error(Exception):
        """``pycuda.driver.Error``, the base of LogicError/RuntimeError/MemoryError."""

    device_attribute = SimpleNamespace(MULTIPROCESSOR_COUNT=16)  # wrap_cudadrv.cpp:811

    def __init__(self, init_error: str | None = None, gpu: Gpu = ORIN_NANO) -> None:
        self.gpu = gpu
        self.local = threading.local()
        self.memory: dict[int, np.ndarray] = {}
        self.next_address = 0x1000
        self.freed: list[int] = []
        self.errors: list[str] = []  # releases after their context was destroyed
        self.contexts: list[Any] = []
        self.init_error = init_error
        fake = self

        class Context:
            def __init__(self) -> None:
                self.detached = False

            def push(self) -> None:
                assert not self.detached, "push of a detached context"
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
                return fake.gpu.name

            def compute_capability(self) -> tuple[int, int]:
                return fake.gpu.compute

            def total_memory(self) -> int:
                return fake.gpu.memory

            def get_attribute(self, attribute: int) -> int:
                assert attribute == fake.device_attribute.MULTIPROCESSOR_COUNT
                return fake.gpu.sms

            def make_context(self) -> Context:
                ctx = Context()
                fake.contexts.append(ctx)
                ctx.push()  # wrap_cudadrv.cpp:1167: the new context is current
                return ctx

        class Allocation(Resource):
            def __init__(self, address: int) -> None:
                super().__init__(fake, "device allocation")
                self.address = address
                self.freed = False

            def __int__(self) -> int:
                return self.address

            def free(self) -> None:
                self.check_context("free")
                self.freed = True
                fake.freed.append(self.address)

            def __del__(self) -> None:
                if not self.freed:
                    self.check_context("garbage-collected")

        class Stream(Resource):
            handle = 77

            def __init__(self) -> None:
                super().__init__(fake, "stream")

            def synchronize(self) -> None:
                pass

            def __del__(self) -> None:
                self.check_context("garbage-collected")

        self.Device, self.Stream, self._Allocation = Device, Stream, Allocation

    def _stack(self) -> list[Any]:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack  # type: ignore[no-any-return]

    def current(self) -> Any:
        return self._stack()[-1] if self._stack() else None

    def init(self) -> None:
        if self.init_error is not None:
            raise self.Error(self.init_error)

    def pagelocked_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        host = PageLocked(shape, dtype)
        host.fill(0)  # uninitialised like the real one, but numpy warns about sums of garbage in the warm-up
        host.owner = Resource(self, "page-locked buffer")
        return host

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


class Resource:
    """Something made in the current CUDA context: releasing it once that context is detached is an error."""

    def __init__(self, cuda: FakeCuda, what: str) -> None:
        self.cuda, self.what = cuda, what
        self.ctx = cuda.current()
        assert self.ctx is not None, f"{what} made with no current CUDA context"

    def check_context(self, how: str) -> None:
        if self.ctx.detached:
            self.cuda.errors.append(f"{self.what} {how} after its context was destroyed")

    def __del__(self) -> None:
        self.check_context("released")


class PageLocked(np.ndarray):
    """``pagelocked_empty``'s array: its memory (``owner``) is freed with it, in its context."""

    owner: Resource


def make_trt(
    cuda: FakeCuda,
    layout: list[tuple[str, str, list[int]]] = LAYOUT,
    version: str = "10.3.0",
    dtypes: dict[str, str] | None = None,
    compute: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
) -> Any:
    """A ``tensorrt`` stand-in whose engines compute ``out = [sum over channels, max over channels]`` of
    ``images``, or ``compute(input)`` (outputs by name) when given."""
    state = SimpleNamespace(
        builds=0, deserialized=0, flags=[], build_seconds=0.0, parse_ok=True, contexts=[], profiles=[]
    )
    types = dtypes or {}

    class TrtObject:
        """An engine or execution context: TensorRT frees its memory in the current context when it goes."""

        def __init__(self, what: str) -> None:
            self.what = what
            self.ctx = cuda.current()

        def __del__(self) -> None:
            if self.ctx is not None and self.ctx.detached:
                cuda.errors.append(f"{self.what} destroyed after its context was destroyed")

    class Engine(TrtObject):
        def __init__(self, tensors: list[list[Any]], profile: dict[str, tuple[int, ...]]) -> None:
            super().__init__("engine")
            self.tensors = tensors
            self.profile = profile
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
            return types.get(name, "float32")

        def create_execution_context(self) -> Context:
            ctx = Context(self)
            state.contexts.append(weakref.ref(ctx))
            return ctx

    class Context(TrtObject):
        def __init__(self, engine: Engine) -> None:
            super().__init__("execution context")
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.ran_in: list[Any] = []

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            if tuple(shape) != self.engine.profile.get(name):
                return False  # outside the profile: TensorRT logs an error and returns False
            self.input_shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> list[int]:
            shape = self.engine.get_tensor_shape(name)
            if name == "out" and -1 in shape:  # the output follows the input's height and width
                _, _, h, w = self.get_tensor_shape("images")
                return [1, 2, h, w]
            return list(self.input_shapes.get(name, shape))

        def set_tensor_address(self, name: str, address: int) -> None:
            assert isinstance(address, int)
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle: int) -> bool:
            if cuda.current() is None or state.fail_execute:  # pycuda: "invalid resource handle"
                return False
            self.ran_in.append(cuda.current())
            if compute is not None:
                name = self.engine.tensors[0][0]
                dtype = np.dtype(types.get(name, "float32"))  # the bytes hold the engine's own tensor types
                x = cuda.memory[self.addresses[name]].view(dtype).reshape(self.get_tensor_shape(name))
                for out_name, value in compute(x).items():
                    out_type = np.dtype(types.get(out_name, "float32"))
                    raw = np.ascontiguousarray(value, out_type).view(np.uint8).reshape(-1)
                    cuda.memory[self.addresses[out_name]][:] = raw
                return True
            x = (
                cuda.memory[self.addresses["images"]]
                .view(np.float32)
                .reshape(self.get_tensor_shape("images"))
            )
            y = np.concatenate([x.sum(axis=1, keepdims=True), x.max(axis=1, keepdims=True)], axis=1)
            cuda.memory[self.addresses["out"]][:] = y.astype(np.float32).view(np.uint8).reshape(-1)
            return True

    state.fail_execute = False

    class Network:
        def __init__(self, implicit_batch: bool) -> None:
            self.inputs: list[Any] = []
            self.has_implicit_batch_dimension = implicit_batch

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

    class Parser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.num_errors = 0

        def parse(self, data: bytes, path: str | None = None) -> bool:
            if self.network.has_implicit_batch_dimension:  # onnx-tensorrt 8.x ModelImporter::importModel
                return self._fail(
                    'Assertion failed: !_importer_ctx.network()->hasImplicitBatchDimension() && "This '
                    "version of the ONNX parser only supports TensorRT INetworkDefinitions with an explicit "
                    "batch dimension. Please ensure the network was created using the EXPLICIT_BATCH "
                    'NetworkDefinitionCreationFlag."'
                )
            if b"external_data" in data and path is None:  # weights in a side file it cannot locate
                return self._fail("Failed to open file: weights.bin (external data without a model path)")
            if b"ConvInteger" in data:  # onnx-tensorrt docs/operators.md: "ConvInteger | N"
                return self._fail("No importer registered for op: ConvInteger")
            if not state.parse_ok:
                return self._fail("Unsupported ONNX op ConvInteger")
            self.network.inputs = [
                SimpleNamespace(name=n, shape=list(s)) for n, mode, s in layout if mode == "input"
            ]
            return True

        def parse_from_file(self, path: str) -> bool:
            return self.parse(Path(path).read_bytes(), path)

        def _fail(self, desc: str) -> bool:
            self.num_errors = 1
            self.desc = desc
            return False

        def get_error(self, i: int) -> Any:
            return SimpleNamespace(desc=lambda: self.desc)

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}

        def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:
            assert tuple(min) == tuple(opt) == tuple(max)
            self.shapes[name] = tuple(opt)

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def set_flag(self, flag: str) -> None:
            state.flags.append(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            state.profiles.append(profile.shapes)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            # TensorRT 8: 0 makes an implicit-batch network; 10 ignores the flag (explicit batch only)
            explicit = flags & (1 << trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
            return Network(implicit_batch=major < 10 and not explicit)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            state.builds += 1
            time.sleep(state.build_seconds)
            dynamic = [t.name for t in network.inputs if -1 in t.shape]
            profile = config.profiles[0].shapes if config.profiles else {}
            if any(name not in profile for name in dynamic):
                # "Network has dynamic or shape inputs, but no optimization profile has been defined."
                return None
            doc = {
                "version": trt.__version__,
                "compute": cuda.gpu.compute,
                "tensors": layout,
                "profile": profile,
            }
            return b"ENGINE:" + json.dumps(doc).encode()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            if not data.startswith(b"ENGINE:"):
                return None
            doc = json.loads(data[7:])
            if doc["version"] != trt.__version__ or tuple(doc["compute"]) != cuda.gpu.compute:
                return None
            state.deserialized += 1
            return Engine(doc["tensors"], {k: tuple(v) for k, v in doc["profile"].items()})

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    def nptype(trt_type: str) -> Any:
        if trt_type not in NUMPY_TYPES:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(trt_type)

    major = int(version.split(".")[0])
    flags = {"FP16": "fp16"} if major < 11 else {}
    trt = SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=Parser,
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=SimpleNamespace(TF32="tf32", **flags),
        NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0),  # NvInfer.h: kEXPLICIT_BATCH = 0
        nptype=nptype,
        state=state,
    )
    return trt


def _context(trt: Any) -> Any:
    """The execution context made last (the fake holds it weakly, like nothing else would)."""
    return trt.state.contexts[-1]()


def _card_doc(outputs: str = "out") -> dict[str, Any]:
    return {
        "name": "tiny",
        "task": "semantic",
        "input": {"name": "images", "width": 8, "height": 8},
        "output": {"name": outputs, "kind": "logits"},
        "classes": ["bg", "fg"],
    }


def _card(tmp_path: Path, outputs: str = "out", **input_overrides: Any) -> ModelCard:
    onnx = tmp_path / "tiny.onnx"
    if not onnx.exists():
        onnx.write_bytes(b"onnx-bytes-v1")
    doc = _card_doc(outputs)
    doc["input"].update(input_overrides)
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
    assert re.fullmatch(r"tiny-[0-9a-f]{8}-fp32-[0-9a-f]{20}\.engine", files[0])


def test_cache_key_depends_on_onnx_bytes_input_shape_tensorrt_version_gpu_and_precision(
    tmp_path: Path,
) -> None:
    onnx = tmp_path / "m.onnx"
    shape = (1, 3, 8, 8)
    base = engine_cache_path(tmp_path, onnx, "a" * 64, shape, "10.3.0", "Orin", False)
    assert base == engine_cache_path(tmp_path, onnx, "a" * 64, shape, "10.3.0", "Orin", False)
    variants = [
        engine_cache_path(tmp_path, onnx, "b" * 64, shape, "10.3.0", "Orin", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, (1, 3, 16, 16), "10.3.0", "Orin", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, shape, "10.7.0", "Orin", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, shape, "10.3.0", "RTX 4090", False),
        engine_cache_path(tmp_path, onnx, "a" * 64, shape, "10.3.0", "Orin", True),
    ]
    assert len({base, *variants}) == 6


def test_a_new_tensorrt_version_rebuilds_instead_of_loading_the_old_engine(tmp_path: Path) -> None:
    cuda = FakeCuda()
    _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda).close()
    newer = make_trt(cuda, version="10.7.0")
    backend = _backend(tmp_path, newer, cuda)
    backend.close()
    assert newer.state.builds == 1
    assert list((tmp_path / "engines").iterdir()) == [backend.engine_path]  # the old one removed


def test_an_engine_built_on_an_agx_orin_is_not_reused_on_an_orin_nano(tmp_path: Path) -> None:
    """Both name themselves "Orin" and have compute capability 8.7: TensorRT loads the AGX's engine on the
    Nano with only a warning, tuned for twice its SMs."""
    agx, nano = FakeCuda(gpu=AGX_ORIN), FakeCuda(gpu=ORIN_NANO)
    _backend(tmp_path, make_trt(agx), agx).close()
    on_nano = make_trt(nano)
    backend = _backend(tmp_path, on_nano, nano)
    backend.close()
    assert on_nano.state.builds == 1
    assert list((tmp_path / "engines").iterdir()) == [backend.engine_path]
    assert backend.gpu == "Orin (sm_87, 8 SMs, 7 GiB)"


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
    ctx = _context(trt)
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
    assert _context(trt).ran_in[-1] is backend._ctx


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


@pytest.mark.parametrize(
    ("det", "refusal"),
    [
        ([1, 6, 21], r"output 'output0' has shape \[1, 6, 21\], expected \[1, 38, A\]"),  # no masks
        ([1, 38, 21], None),
    ],
)
def test_a_yolo_seg_engine_whose_outputs_cannot_be_decoded_is_refused_at_load(
    tmp_path: Path, det: list[int], refusal: str | None
) -> None:
    cuda = FakeCuda()
    layout = [
        ("images", "input", [1, 3, 8, 8]),
        ("output0", "output", det),
        ("output1", "output", [1, 32, 2, 2]),
    ]
    (tmp_path / "tiny.onnx").write_bytes(b"onnx-bytes-v1")
    doc = {**_card_doc(), "task": "yolo-seg", "output": {"name": "output0", "protos": "output1"}}
    card = parse_card(doc, "tiny.yaml", model_file=tmp_path / "tiny.onnx")
    zeros = {name: np.zeros(shape, np.float32) for name, _, shape in layout[1:]}
    trt = make_trt(cuda, layout=layout, compute=lambda _: zeros)
    if refusal is None:
        _backend(tmp_path, trt, cuda, card=card).close()
        return
    with pytest.raises(ModelError, match=f"^model 'tiny': engine of {tmp_path / 'tiny.onnx'}: {refusal}"):
        _backend(tmp_path, trt, cuda, card=card)


DYNAMIC = [("images", "input", [-1, 3, -1, -1]), ("out", "output", [1, 2, -1, -1])]


def test_dynamic_input_builds_with_a_profile_pinned_to_the_card_shape(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, layout=DYNAMIC)
    backend = _backend(tmp_path, trt, cuda)
    assert trt.state.profiles == [{"images": (1, 3, 8, 8)}]
    assert _context(trt).input_shapes == {"images": (1, 3, 8, 8)}
    out = backend.run(_prepared(np.ones((1, 3, 8, 8), np.float32)))
    np.testing.assert_allclose(out["out"][0, 0], 3.0)
    backend.close()


def test_engines_for_other_input_shapes_are_cached_apart(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, layout=DYNAMIC)
    _backend(tmp_path, trt, cuda).close()
    card16 = parse_card(
        {**_card_doc(), "input": {"name": "images", "width": 16, "height": 16}},
        "tiny16.yaml",
        model_file=tmp_path / "tiny.onnx",
    )
    _backend(tmp_path, trt, cuda, card=card16).close()
    assert trt.state.builds == 2
    assert trt.state.profiles == [{"images": (1, 3, 8, 8)}, {"images": (1, 3, 16, 16)}]


def test_input_shape_the_engine_refuses_is_a_model_error(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, layout=DYNAMIC)
    _backend(tmp_path, trt, cuda).close()
    (engine,) = (tmp_path / "engines").iterdir()
    doc = json.loads(engine.read_bytes()[7:])
    doc["profile"] = {"images": [1, 3, 16, 16]}  # an engine built for another shape under this name
    engine.write_bytes(b"ENGINE:" + json.dumps(doc).encode())
    with pytest.raises(ModelError, match=r"does not accept input 'images' of shape \[1, 3, 8, 8\]"):
        _backend(tmp_path, trt, cuda)
    assert cuda.contexts[-1].detached


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
    assert re.fullmatch(r"tiny-[0-9a-f]{8}-fp16-[0-9a-f]{20}\.engine", backend.engine_path.name)


def test_onnx_the_parser_rejects_is_a_model_error_with_its_reasons(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    trt.state.parse_ok = False
    with pytest.raises(
        ModelError, match=r"TensorRT cannot parse .*tiny\.onnx: Unsupported ONNX op ConvInteger"
    ):
        _backend(tmp_path, trt, cuda)


def _quantized_net(path: Path) -> None:
    """A net of two convolutions quantized by quantize_dynamic (ConvInteger), written to ``path``."""
    from onnx import TensorProto, helper, numpy_helper, save
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1])]
    nodes.append(helper.make_node("Conv", ["c", "w"], ["out"], pads=[1, 1, 1, 1]))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("images", "out")]
    graph = helper.make_graph(nodes, "tiny", io[:1], io[1:], [w])
    save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
        path.with_suffix(".f32"),
    )
    quantize_dynamic(path.with_suffix(".f32"), path, weight_type=QuantType.QInt8)


def test_a_dynamically_quantized_model_reaches_tensorrt_with_float_convolutions(tmp_path: Path) -> None:
    _quantized_net(tmp_path / "tiny.onnx")
    assert b"ConvInteger" in (tmp_path / "tiny.onnx").read_bytes()
    cuda = FakeCuda()
    trt = make_trt(cuda)
    _backend(tmp_path, trt, cuda).close()  # the default: the parser never sees a ConvInteger
    assert trt.state.builds == 1
    options = InferenceOptions(backend="tensorrt", float_convs=False, engine_cache_dir=tmp_path / "other")
    with pytest.raises(ModelError, match=r"TensorRT cannot parse .*tiny\.onnx: No importer .* ConvInteger"):
        TensorRTBackend(_card(tmp_path), options, trt=trt, cuda=cuda)


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


# -- what the real libraries do that the first fakes did not --------------------------------------------


def test_fp16_on_tensorrt_11_is_a_config_error_not_an_attribute_error(tmp_path: Path) -> None:
    cuda = FakeCuda()
    with pytest.raises(ConfigError, match=r"model\.fp16: TensorRT 11\.1\.0 has no FP16 builder flag"):
        _backend(tmp_path, make_trt(cuda, version="11.1.0"), cuda, fp16=True)
    assert cuda.contexts == []  # refused before CUDA was touched


def test_tensorrt_11_builds_fp32(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, version="11.1.0")
    _backend(tmp_path, trt, cuda).close()
    assert trt.state.builds == 1
    assert trt.state.flags == []


def test_tensorrt_8_of_jetpack_5_is_refused_in_one_line_naming_tensorrt_10(tmp_path: Path) -> None:
    # JetPack 5 ships TensorRT 8.5 (8.6 on x86), whose ONNX parser refuses an implicit-batch network, the
    # kind create_network(0) makes there; its message asks for a flag the user cannot set
    cuda = FakeCuda()
    with pytest.raises(MissingDependencyError, match=r"needs TensorRT 10 .*this is TensorRT 8\.5\.2\.2"):
        _backend(tmp_path, make_trt(cuda, version="8.5.2.2"), cuda)
    assert cuda.contexts == []  # refused before CUDA was touched


def test_bf16_engine_tensor_is_a_model_error_naming_it(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, dtypes={"out": "bf16"})
    with pytest.raises(ModelError, match=r"engine tensor 'out' is bf16, which numpy cannot hold"):
        _backend(tmp_path, trt, cuda)


def test_engine_input_dtype_unlike_the_card_is_a_model_error_at_load(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda, dtypes={"images": "float16"})
    with pytest.raises(
        ModelError, match=r"engine input 'images' is float16, the card says input\.dtype float32"
    ):
        _backend(tmp_path, trt, cuda)


def test_close_releases_everything_before_the_context_is_detached(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    backend = _backend(tmp_path, trt, cuda)
    backend.run(_prepared(np.ones((1, 3, 8, 8), np.float32)))
    backend.close()
    del backend
    assert cuda.contexts[-1].detached
    assert cuda.errors == []
    assert cuda.current() is None


def test_failing_init_releases_and_detaches_its_context(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    trt.state.fail_execute = True
    with pytest.raises(ModelError, match="execute_async_v3 failed"):
        _backend(tmp_path, trt, cuda)
    assert cuda.contexts[-1].detached
    assert cuda.current() is None
    assert cuda.errors == []


def test_cuda_init_failure_is_one_line_model_error(tmp_path: Path) -> None:
    cuda = FakeCuda(init_error="cuInit failed: no CUDA-capable device is detected")
    with pytest.raises(
        ModelError, match=r"CUDA cannot start on GPU 0: cuInit failed: no CUDA-capable device"
    ):
        _backend(tmp_path, make_trt(cuda), cuda)


def test_onnx_with_external_weights_is_parsed_from_its_path(tmp_path: Path) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    (tmp_path / "tiny.onnx").write_bytes(b"graph with external_data: weights.bin")
    _backend(tmp_path, trt, cuda).close()
    assert trt.state.builds == 1


def test_engine_file_is_synced_before_the_rename_and_readable_by_other_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    cuda = FakeCuda()
    backend = _backend(tmp_path, make_trt(cuda), cuda)
    backend.close()
    assert events == ["fsync", "replace", "fsync"]  # the file before the rename, then the rename (its folder)
    assert stat.S_IMODE(backend.engine_path.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("failing", "error", "says"),
    [
        ("pycuda.driver", ImportError("No module named 'pycuda'", name="pycuda"), "pip install edgeseg"),
        (
            "pycuda.driver",
            ImportError("libcuda.so.1: cannot open shared object file", name="pycuda._driver"),
            r"pycuda is installed but cannot load its libraries \(libcuda\.so\.1: cannot open",
        ),
        (
            "tensorrt",
            ImportError("libnvinfer.so.10: cannot open shared object file"),
            r"tensorrt is installed but cannot load its libraries \(libnvinfer\.so\.10",
        ),
    ],
)
def test_missing_dependency_message_names_what_is_really_missing(
    monkeypatch: pytest.MonkeyPatch, failing: str, error: ImportError, says: str
) -> None:
    def import_module(name: str) -> Any:
        if name == failing:
            raise error
        return SimpleNamespace(__name__=name)

    monkeypatch.setattr(trt_backend.importlib, "import_module", import_module)
    with pytest.raises(MissingDependencyError, match=says):
        trt_backend.import_tensorrt()


def test_a_new_engine_removes_the_models_engines_for_other_keys_but_not_one_a_running_instance_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Months of model, TensorRT or option updates must not fill the state directory with engines of
    hundreds of MB that no key will ever match again; an engine another running process loaded stays."""
    cuda = FakeCuda()
    running = _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda, fp16=True)
    old = _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda)
    old.close()
    other_model = tmp_path / "engines" / f"other-fp32-{'0' * 20}.engine"
    other_model.write_bytes(b"ENGINE:{}")
    with caplog.at_level(logging.INFO, logger="edgeseg.backends.tensorrt"):
        new = _backend(tmp_path, make_trt(cuda, version="10.7.0"), cuda)
    new.close()
    running.close()
    assert sorted((tmp_path / "engines").iterdir()) == sorted(
        [new.engine_path, running.engine_path, other_model]
    )
    assert f"removed engine {old.engine_path}" in caplog.text


@pytest.mark.parametrize(
    "names",
    [("front/best.onnx", "back/best.onnx"), (f"{'m' * 48}-day.onnx", f"{'m' * 48}-night.onnx")],
    ids=["one-name-in-two-folders", "long-names-with-one-start"],
)
def test_two_model_files_sharing_a_cache_keep_each_others_engines(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    """Engines were grouped by the first 48 characters of the model's file name: two different best.onnx (two
    pipelines or a manual run beside the service, one cache) removed each other's engine at each build, so
    every start of one rebuilt its engine (minutes on a Jetson) and cost the other its own."""
    cuda = FakeCuda()
    trt = make_trt(cuda)
    cards = []
    for name in names:
        onnx = tmp_path / name
        onnx.parent.mkdir(exist_ok=True)
        onnx.write_bytes(f"onnx-bytes-of-{name}".encode())
        cards.append(parse_card(_card_doc(), "tiny.yaml", model_file=onnx))
    for card in cards + cards:  # one after the other, neither running while the other builds
        _backend(tmp_path, trt, cuda, card=card).close()
    assert trt.state.builds == 2
    assert len(list((tmp_path / "engines").iterdir())) == 2


def test_an_engine_cached_under_the_name_an_older_edgeseg_gave_it_is_loaded_not_rebuilt(
    tmp_path: Path,
) -> None:
    cuda = FakeCuda()
    trt = make_trt(cuda)
    first = _backend(tmp_path, trt, cuda)
    first.close()
    named = re.fullmatch(r"(tiny)-[0-9a-f]{8}(-fp32-[0-9a-f]{20}\.engine)", first.engine_path.name)
    assert named is not None
    first.engine_path.rename(first.engine_path.with_name(named[1] + named[2]))  # as it was named before
    _backend(tmp_path, trt, cuda).close()
    assert trt.state.builds == 1
    assert first.engine_path.exists()


def test_a_build_removes_the_models_engine_named_as_before_its_files_place_was_in_the_name(
    tmp_path: Path,
) -> None:
    # (no name matches it any more: it would lie in the cache for ever)
    cache = tmp_path / "engines"
    cache.mkdir()
    older = cache / f"tiny-fp32-{'0' * 20}.engine"
    older.write_bytes(b"ENGINE:{}")
    cuda = FakeCuda()
    backend = _backend(tmp_path, make_trt(cuda), cuda)
    backend.close()
    assert list(cache.iterdir()) == [backend.engine_path]


def test_a_model_file_name_as_long_as_a_file_name_can_be_gets_its_engine_cached(tmp_path: Path) -> None:
    """The engine's name is the ONNX stem and 33 characters more (its temporary one 14 more again): from a
    stem of about 210 characters it was longer than a file name can be, 'File name too long' after the
    build."""
    onnx = tmp_path / ("m" * 250 + ".onnx")
    onnx.write_bytes(b"onnx-bytes-v1")
    card = parse_card(_card_doc(), "tiny.yaml", model_file=onnx)
    cuda = FakeCuda()
    trt = make_trt(cuda)
    _backend(tmp_path, trt, cuda, card=card).close()
    _backend(tmp_path, trt, cuda, card=card).close()
    assert trt.state.builds == 1
    (engine,) = (tmp_path / "engines").iterdir()
    assert engine.name.startswith("mmm")


def test_a_cache_dir_longer_than_a_file_name_can_be_is_a_config_error(tmp_path: Path) -> None:
    # "OSError: [Errno 36] File name too long" from looking for the cached engine, a traceback
    cuda = FakeCuda()
    options = InferenceOptions(backend="tensorrt", engine_cache_dir=tmp_path / ("e" * 300))
    says = r"model\.engine_cache_dir: .* is not writable \(File name too long\)"
    with pytest.raises(ConfigError, match=says):
        TensorRTBackend(_card(tmp_path), options, trt=make_trt(cuda), cuda=cuda)


CHILD_ENV = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
# what a stopping child's script starts with: ``stop``, the audit hook its body adds where it is to be watched
STOPPING = """
import fcntl, os, signal, sys, tempfile
from pathlib import Path
from test_tensorrt_fake import FakeCuda, _backend, make_trt

stopped = []

def stop(event, args):
    if not stopped and ({when}):
        stopped.append(True)
        print({said!r}, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
"""


@contextmanager
def _child_stopped(when: str, said: str, body: str, *argv: object) -> Iterator[subprocess.Popen[str]]:
    """A real process running the script ``body``, which adds the audit hook ``stop`` where it is to be
    watched: at the first audit event for which ``when`` (of ``event`` and ``args``) holds, the process prints
    ``said`` and stops itself (SIGSTOP). Yielded stopped there; stdin a pipe (a line may tell it to go on);
    killed on leaving."""
    script = STOPPING.format(when=when, said=said) + textwrap.dedent(body)
    child = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, argv)],
        env={**os.environ, **CHILD_ENV},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        assert child.stdout.readline() == said + "\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stdin.close()


def _go_on(child: subprocess.Popen[str]) -> None:
    """Tell a stopped child waiting for a line on stdin to go on and end."""
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()


def test_an_engine_the_disk_cannot_hold_is_a_one_line_error_after_the_stale_ones_made_room(
    tmp_path: Path,
) -> None:
    """A full disk (here the kernel's own refusal under RLIMIT_FSIZE: EFBIG) failed the write at the end of
    the build with an OSError traceback, and the model's stale engines, which may be what filled it, were
    kept: they were removed only after a write that succeeded."""
    cuda = FakeCuda()
    old = _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda)
    old.close()
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        from test_tensorrt_fake import FakeCuda, _backend, make_trt
        from edgeseg.errors import ConfigError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (EFBIG instead of the signal's core dump)
        cuda = FakeCuda()
        trt = make_trt(cuda, version="10.7.0")
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
        try:
            _backend(Path(sys.argv[1]), trt, cuda)
        except ConfigError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env={**os.environ, **CHILD_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("model.engine_cache_dir: cannot write the engine to "), done.stdout
    assert "(File too large)" in done.stdout
    assert list((tmp_path / "engines").iterdir()) == []  # the stale engine gone, no temporary file left


def test_a_build_removes_the_temp_file_of_an_engine_write_a_crash_cut_short_but_not_one_under_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process killed while it wrote an engine left ``.NAME.engine.XXXXXXXX.tmp`` (hundreds of MB on a
    Jetson) in the cache for good. Here a real writer stops itself just before its rename (the audit event of
    os.replace), its engine written: another build must leave that file while it lives, and remove it once
    the writer has been killed."""
    cache = tmp_path / "engines"
    cache.mkdir()
    other = cache / f"other-fp32-{'0' * 20}.engine"
    body = """
        from edgeseg.atomic import replace_file
        sys.addaudithook(stop)
        replace_file(Path(sys.argv[1]), b"ENGINE:" + b"x" * 4096)
        """
    with _child_stopped('event == "os.rename"', "written", body, other) as writer:
        (temp,) = cache.glob(f".{other.name}.*.tmp")
        written = time.time() - 3600  # (a write an hour old: its lock alone keeps it)
        os.utime(temp, (written, written))
        cuda = FakeCuda()
        _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda).close()
        assert temp.exists()  # its writer lives
        writer.kill()
        writer.wait(timeout=10)
        with caplog.at_level(logging.INFO, logger="edgeseg.backends.tensorrt"):
            _backend(tmp_path, make_trt(cuda, version="10.7.0"), cuda).close()
    assert not temp.exists()
    assert f"removed {temp} (an engine's write that a crash or power cut cut short)" in caplog.text
    assert not other.exists()


def test_an_engine_just_written_is_held_before_another_keys_build_can_prune_it(tmp_path: Path) -> None:
    """The writer let go of its engine when the temp file it wrote was closed, after the rename, and took
    the shared lock of a running instance only then: another instance of the model (another key) finishing
    its build in that moment removed it, and the next start rebuilt it (minutes). Here a real writer stops
    itself there (the audit event of opening its folder to sync the rename), another build prunes."""
    cache = tmp_path / "engines"
    body = """
        cuda = FakeCuda()
        trt = make_trt(cuda, version="10.3.0")
        sys.addaudithook(stop)
        backend = _backend(Path(sys.argv[1]), trt, cuda)
        print(backend.engine_path, flush=True)
        sys.stdin.readline()
        backend.close()
        """
    _card(tmp_path)  # (both write the model file otherwise)
    # (os.open's audit event of the folder, opened to sync the rename)
    when = 'event == "open" and args[1] is None and str(args[0]) == sys.argv[2]'
    with _child_stopped(when, "renamed", body, tmp_path, cache) as writer:
        assert writer.stdout is not None
        cuda = FakeCuda()
        _backend(tmp_path, make_trt(cuda, version="10.7.0"), cuda).close()
        writer.send_signal(signal.SIGCONT)
        written = Path(writer.stdout.readline().strip())
        assert written.is_file()  # still there while its instance runs
        _go_on(writer)
        assert writer.wait(timeout=30) == 0
        writer.stdin.close()


def test_a_build_leaves_the_engine_temp_file_an_older_edgeseg_is_writing_without_a_lock(
    tmp_path: Path,
) -> None:
    """An edgeseg from before the writer's flock, still running while a newer one is installed beside it,
    writes its engine's temp file unlocked: the newer one's build took it for a crash's leftover and removed
    it mid-write, and the older one's rename failed (FileNotFoundError). Here a real writer as it was then
    stops itself just before its rename."""
    cache = tmp_path / "engines"
    cache.mkdir()
    older = cache / f"tiny-fp32-{'0' * 20}.engine"
    body = """
        sys.addaudithook(stop)
        # replace_file before its flock (commit 67a8137 added it), the folder's sync left out
        folder, name = os.path.split(sys.argv[1])
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as out:
            out.write(b"ENGINE:" + b"x" * 4096)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, sys.argv[1])
        """
    with _child_stopped('event == "os.rename"', "written", body, older) as writer:
        cuda = FakeCuda()
        new = _backend(tmp_path, make_trt(cuda, version="10.7.0"), cuda)
        writer.send_signal(signal.SIGCONT)
        assert writer.wait(timeout=30) == 0
        new.close()
    assert older.read_bytes().startswith(b"ENGINE:")


def test_an_engine_being_loaded_is_not_lost_to_another_keys_build_between_its_open_and_its_lock(
    tmp_path: Path,
) -> None:
    """A start that loads a cached engine opens it, then takes its shared lock: another instance of the model
    (another key) finishing its build in between removed it, the start ran on the bytes it had open, and the
    next start rebuilt it (minutes). Here a real loader stops itself just before its lock."""
    cuda = FakeCuda()
    cached = _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda)
    cached.close()
    body = """
        cuda = FakeCuda()
        trt = make_trt(cuda, version="10.3.0")
        sys.addaudithook(stop)
        backend = _backend(Path(sys.argv[1]), trt, cuda)
        print(trt.state.builds, flush=True)
        sys.stdin.readline()
        backend.close()
        """
    when = 'event == "fcntl.flock" and args[1] == fcntl.LOCK_SH'
    with _child_stopped(when, "opened", body, tmp_path) as loader:
        assert loader.stdout is not None
        _backend(tmp_path, make_trt(cuda, version="10.7.0"), cuda).close()
        loader.send_signal(signal.SIGCONT)
        assert loader.stdout.readline() == "0\n"  # loaded, not built
        assert cached.engine_path.read_bytes().startswith(b"ENGINE:")  # still there while its instance runs
        _go_on(loader)
        assert loader.wait(timeout=30) == 0


def test_without_building_a_cached_engine_that_does_not_deserialize_is_said_to_be_that_not_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``edgeseg doctor`` times the model without building (``build_engine=False``): an engine in the cache
    that did not deserialize logged "rebuilding it", which nothing did, and the check said no engine was
    there yet."""
    cuda = FakeCuda()
    _backend(tmp_path, make_trt(cuda), cuda).close()
    (engine,) = (tmp_path / "engines").iterdir()
    engine.write_bytes(b"torn write")
    options = InferenceOptions(backend="tensorrt", engine_cache_dir=tmp_path / "engines", build_engine=False)
    says = rf"model 'tiny': the cached TensorRT engine {engine} does not deserialize here .*rebuilds it"
    with (
        caplog.at_level(logging.INFO, logger="edgeseg.backends.tensorrt"),
        pytest.raises(ModelError, match=says),
    ):
        TensorRTBackend(_card(tmp_path), options, trt=make_trt(cuda), cuda=cuda)
    assert "rebuilding" not in caplog.text
    assert engine.read_bytes() == b"torn write"


def test_a_prune_does_not_remove_the_engine_another_key_wrote_over_the_one_it_locked(tmp_path: Path) -> None:
    """A build removing the model's engines of other keys locked one, then removed it by its name: when
    the instance of that key, whose cached engine did not deserialize, wrote its new engine over it in that
    moment, the prune removed the new one, which the instance ran (the next start rebuilt it). Here a real
    pruner stops itself just before its lock."""
    cuda = FakeCuda()
    other = _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda)
    other.close()
    other.engine_path.write_bytes(b"torn write")
    body = """
        cuda = FakeCuda()
        trt = make_trt(cuda, version="10.7.0")
        sys.addaudithook(stop)
        _backend(Path(sys.argv[1]), trt, cuda).close()
        """
    when = 'event == "fcntl.flock" and args[1] == fcntl.LOCK_EX | fcntl.LOCK_NB'
    with _child_stopped(when, "opened", body, tmp_path) as pruner:
        rebuilt = _backend(tmp_path, make_trt(cuda, version="10.3.0"), cuda)
        pruner.send_signal(signal.SIGCONT)
        assert pruner.wait(timeout=30) == 0
        assert rebuilt.engine_path.read_bytes().startswith(b"ENGINE:")  # still there while its instance runs
        rebuilt.close()
