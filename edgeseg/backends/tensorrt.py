"""TensorRT 10 backend: engine built from the ONNX file once, cached, run with the tensor-address API.

- ``tensorrt`` and ``pycuda`` are imported when this backend is created, never at package import; without
  them it raises :class:`MissingDependencyError` ("pip install edgeseg[tensorrt]").
- Engines are cached in a writable directory (``engine_cache_dir``, else ``$EDGESEG_ENGINE_CACHE``, else
  ``engines/`` in the state directory of :mod:`edgeseg.statedir`) under a name keyed by the ONNX
  file's sha256, the TensorRT version, the GPU name and the precision. An engine from another TensorRT
  version or GPU therefore never matches and is rebuilt; one that fails to deserialize is rebuilt too.
  The file is written to a temporary name and renamed, so a crash mid-write never leaves a torn engine.
- The build logs "building engine" and the elapsed time every ``PROGRESS_S`` seconds (minutes on a Jetson).
- The CUDA context belongs to this backend, not to the importing thread (no ``pycuda.autoinit``): it is
  pushed around every call and popped after, so ``run`` works from the pipeline's inference thread.
- I/O: page-locked host buffers and device buffers per tensor, bound once with ``set_tensor_address``; a
  run is copy in, ``execute_async_v3`` on the backend's stream, copy out, synchronize.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgeseg.backends import DEFAULT_INFERENCE, InferenceOptions
from edgeseg.errors import ConfigError, MissingDependencyError, ModelError
from edgeseg.modelcard import ModelCard, file_sha256
from edgeseg.preprocess import Prepared
from edgeseg.statedir import state_dir

log = logging.getLogger(__name__)
PROGRESS_S = 15.0
WORKSPACE_BYTES = 1 << 30


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, pycuda.driver)``, or MissingDependencyError naming the extra to install."""
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            f"the tensorrt backend needs tensorrt and pycuda ({exc.name} is missing): "
            "pip install edgeseg[tensorrt] (on a Jetson, use JetPack's python3-libnvinfer)"
        ) from None
    return trt, cuda


def default_cache_dir() -> Path:
    env = os.environ.get("EDGESEG_ENGINE_CACHE")
    if env:
        return Path(env)
    return state_dir() / "engines"


def engine_cache_path(
    cache_dir: Path, onnx: Path, onnx_sha256: str, trt_version: str, gpu: str, fp16: bool
) -> Path:
    """Where the engine for this ONNX file, TensorRT version, GPU and precision lives."""
    key = hashlib.sha256(f"{onnx_sha256}|trt={trt_version}|gpu={gpu}|fp16={fp16}".encode()).hexdigest()
    return cache_dir / f"{onnx.stem}-{'fp16' if fp16 else 'fp32'}-{key[:20]}.engine"


@dataclass(frozen=True)
class TensorBinding:
    """One engine I/O tensor: name, shape (``-1`` = dynamic), numpy dtype, direction."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    is_input: bool


def engine_bindings(engine: Any, trt: Any) -> list[TensorBinding]:
    """The engine's I/O tensors in engine order (TensorRT 10 named-tensor API)."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        out.append(
            TensorBinding(
                name=name,
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
                dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            )
        )
    return out


def check_bindings(bindings: list[TensorBinding], card: ModelCard) -> None:
    """Raise ModelError unless the engine has exactly the card's input (shape-compatible) and its outputs."""
    inputs = [b for b in bindings if b.is_input]
    names = {b.name: b for b in bindings}
    spec = card.input
    if len(inputs) != 1 or inputs[0].name != spec.name:
        raise ModelError(
            f"model {card.name!r}: engine inputs {[b.name for b in inputs]} != card input.name {spec.name!r}"
        )
    shape = inputs[0].shape
    if len(shape) != 4 or any(d not in (-1, w) for d, w in zip(shape, spec.shape, strict=True)):
        raise ModelError(
            f"model {card.name!r}: engine input {spec.name!r} has shape {list(shape)}, "
            f"the card says {list(spec.shape)}"
        )
    for name in card.output.names:
        if name not in names or names[name].is_input:
            outs = [b.name for b in bindings if not b.is_input]
            raise ModelError(
                f"model {card.name!r}: card output {name!r} is not an engine output (has {outs})"
            )


class TensorRTBackend:
    """Runs a card's ONNX model as a cached TensorRT engine on GPU 0.

    ``trt`` and ``cuda`` default to the real modules; tests pass stand-ins with the same surface.
    """

    needs_tensor = True
    description = "tensorrt (GPU 0)"

    def __init__(
        self,
        card: ModelCard,
        options: InferenceOptions = DEFAULT_INFERENCE,
        trt: Any = None,
        cuda: Any = None,
    ) -> None:
        if card.file is None or not Path(card.file).is_file():
            raise ModelError(f"model {card.name!r}: file not found: {card.file}")
        if trt is None or cuda is None:
            trt, cuda = import_tensorrt()
        self.card, self.trt, self.cuda = card, trt, cuda
        self.onnx = Path(card.file)
        self.fp16 = options.fp16
        self.cache_dir = options.engine_cache_dir or default_cache_dir()
        self._logger = trt.Logger(trt.Logger.WARNING)
        cuda.init()
        device = cuda.Device(0)
        self.gpu = str(device.name())
        self._ctx = device.make_context()  # made current on this thread; popped below, pushed per call
        try:
            self.engine_path = engine_cache_path(
                self.cache_dir, self.onnx, file_sha256(self.onnx), str(trt.__version__), self.gpu, self.fp16
            )
            self.engine = self._load_engine()
            self._setup_io()
            self._run_on_buffers()  # warm-up: first enqueue initializes kernels
        finally:
            self._ctx.pop()

    # -- engine -------------------------------------------------------------------------------------

    def _load_engine(self) -> Any:
        runtime = self.trt.Runtime(self._logger)
        if self.engine_path.is_file():
            engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if engine is not None:
                log.info("loaded TensorRT engine %s", self.engine_path)
                return engine
            log.warning("cached engine %s does not deserialize here; rebuilding it", self.engine_path)
        plan = self.build_engine()
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelError(
                f"model {self.card.name!r}: TensorRT could not deserialize the engine it just built"
            )
        return engine

    def build_engine(self) -> bytes:
        """Build the serialized engine from the ONNX file and write it atomically to the cache."""
        trt = self.trt
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.cache_dir, prefix=".probe-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"model.engine_cache_dir: {self.cache_dir} is not writable ({exc.strerror or exc}); "
                "without a cache the engine is rebuilt at every start"
            ) from None
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(self.onnx.read_bytes()):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise ModelError(f"model {self.card.name!r}: TensorRT cannot parse {self.onnx}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        log.info(
            "building TensorRT engine for %s (fp16=%s, gpu %s): this can take minutes",
            self.onnx.name,
            self.fp16,
            self.gpu,
        )
        start = time.monotonic()
        done = threading.Event()

        def progress() -> None:
            while not done.wait(PROGRESS_S):
                log.info("building engine for %s: %.0f s elapsed", self.onnx.name, time.monotonic() - start)

        ticker = threading.Thread(target=progress, name="trt-build-progress", daemon=True)
        ticker.start()
        try:
            plan = builder.build_serialized_network(network, config)
        finally:
            done.set()
            ticker.join()
        if plan is None:
            raise ModelError(f"model {self.card.name!r}: TensorRT failed to build an engine from {self.onnx}")
        data = bytes(plan)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{self.engine_path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.engine_path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("built engine %s in %.1f s", self.engine_path, time.monotonic() - start)
        return data

    # -- I/O ----------------------------------------------------------------------------------------

    def _setup_io(self) -> None:
        cuda, card = self.cuda, self.card
        self.bindings = engine_bindings(self.engine, self.trt)
        check_bindings(self.bindings, card)
        self.context = self.engine.create_execution_context()
        inp = next(b for b in self.bindings if b.is_input)
        if -1 in inp.shape:
            self.context.set_input_shape(inp.name, card.input.shape)
        self._host: dict[str, NDArray[Any]] = {}
        self._device: dict[str, Any] = {}
        for b in self.bindings:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(b.name))
            if any(d < 0 for d in shape):
                raise ModelError(
                    f"model {card.name!r}: engine tensor {b.name!r} keeps a dynamic shape {shape}"
                )
            host = cuda.pagelocked_empty(shape, b.dtype)
            dev = cuda.mem_alloc(host.nbytes)
            self.context.set_tensor_address(b.name, int(dev))
            self._host[b.name], self._device[b.name] = host, dev
        self._input = inp.name
        self._outputs = [b.name for b in self.bindings if not b.is_input]
        self.stream = cuda.Stream()

    def _run_on_buffers(self) -> None:
        cuda = self.cuda
        cuda.memcpy_htod_async(self._device[self._input], self._host[self._input], self.stream)
        if not self.context.execute_async_v3(stream_handle=self.stream.handle):
            raise ModelError(f"model {self.card.name!r}: TensorRT execute_async_v3 failed")
        for name in self._outputs:
            cuda.memcpy_dtoh_async(self._host[name], self._device[name], self.stream)
        self.stream.synchronize()

    def run(self, prepared: Prepared) -> dict[str, NDArray[np.float32]]:
        tensor = prepared.tensor
        host_in = self._host[self._input]
        if tensor is None or tensor.shape != host_in.shape:
            got = None if tensor is None else tensor.shape
            raise ModelError(
                f"model {self.card.name!r}: input {self._input!r} got shape {got}, expected {host_in.shape}"
            )
        np.copyto(host_in, tensor, casting="same_kind")
        self._ctx.push()
        try:
            self._run_on_buffers()
        finally:
            self._ctx.pop()
        # host buffers are reused by the next call: hand out copies
        return {name: np.array(self._host[name], np.float32) for name in self.card.output.names}

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        try:
            for dev in self._device.values():
                dev.free()
            self._device.clear()
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
