"""TensorRT 10 backend: engine built from the ONNX file once, cached, run with the tensor-address API.

- ``tensorrt`` and ``pycuda`` are imported when this backend is created, never at package import; without
  them it raises :class:`MissingDependencyError` saying how to install them (:data:`INSTALL`), and when they
  are there but the CUDA driver or libnvinfer they load is not, it says that instead.
- Engines are cached in a writable directory (``engine_cache_dir``, else ``$EDGESEG_ENGINE_CACHE``, else
  ``engines/`` in the state directory of :mod:`edgeseg.statedir`) under a name keyed by the ONNX
  file's sha256, the input shape, the TensorRT version, the GPU (:func:`gpu_identity`: its name, compute
  capability, SM count and memory) and the precision. An engine from another TensorRT version or GPU
  therefore never matches and is rebuilt; one that fails to deserialize is rebuilt too. A backend holds a
  shared ``flock`` on the engine it loaded (written back if it was removed before the lock), or wrote (from
  before its rename), while it runs; building a new engine removes that model file's engines (by its path:
  another best.onnx is another model) for other keys (a model, TensorRT, GPU or option change: hundreds of
  MB each, never matched again) except those another running process holds, and logs each one removed,
  before it is written (on a full disk they are its room; a write the disk still refuses is a one-line
  ConfigError).
  The file is written to a temporary name, synced and renamed, so a crash mid-write or a power cut never
  leaves a torn engine (the next build removes such a temporary file, unless its write may still be under
  way); it is readable by all (an engine holds no secret, and a manual run may share the service's cache).
  The ONNX file is parsed from its path so that external weight files are found; a model with dynamically
  quantized convolutions (``ConvInteger``, which TensorRT cannot import) is given to it with float ones
  instead (:mod:`edgeseg.floatconv`), unless ``float_convs`` is False.
- An ONNX input with dynamic dimensions gets an optimization profile fixed to the card's shape (TensorRT
  refuses to build such a network without one).
- TensorRT 10 or later (JetPack 6): TensorRT 8 (JetPack 5) is refused in one line.
- ``fp16`` needs ``BuilderFlag.FP16``, which TensorRT 11 removed (its networks are strongly typed: the
  precision comes from the ONNX file); there ``fp16: true`` is a ConfigError, not an AttributeError.
- The build logs "building engine" and the elapsed time every ``PROGRESS_S`` seconds (minutes on a Jetson).
- The CUDA context belongs to this backend, not to the importing thread (no ``pycuda.autoinit``): it is
  pushed around every call and popped after, so ``run`` works from the pipeline's inference thread.
  Everything made in it (TensorRT context and engine, stream, buffers) is released before it is detached,
  also when ``__init__`` fails: TensorRT objects outliving their context give "context is destroyed" errors
  or a segfault at exit (NVIDIA/TensorRT#1632, inducer/pycuda#460).
- I/O: page-locked host buffers and device buffers per tensor, bound once with ``set_tensor_address``; a
  run is copy in, ``execute_async_v3`` on the backend's stream, copy out, synchronize.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from edgeseg import floatconv
from edgeseg.atomic import names_file, remove_leftovers, remove_unheld, replace_file_held
from edgeseg.backends import DEFAULT_INFERENCE, InferenceOptions, Outputs
from edgeseg.errors import ConfigError, MissingDependencyError, ModelError
from edgeseg.modelcard import ModelCard, check_yolo_seg_outputs, file_sha256
from edgeseg.preprocess import Prepared
from edgeseg.statedir import state_dir
from edgeseg.threadplan import ThreadCount

log = logging.getLogger(__name__)
PROGRESS_S = 15.0
WORKSPACE_BYTES = 1 << 30
ENGINE_STEM_CHARS = 48  # of the model's name in an engine's (at most 4 bytes each, with 42 more: < 255)
PLACE_CHARS = 8  # of the hash of the model file's path in an engine's name
# engine_cache_path's names; ``model``: the model's stem and its file's place (the stem alone before that)
ENGINE_NAME = re.compile(r"(?P<model>.*)-fp(16|32)-[0-9a-f]{20}\.engine")
# JetPack's tensorrt comes from apt without pip metadata, so on a Jetson the extra would fetch PyPI's
# tensorrt, which fails to build there (tensorrt-cu12 on an AGX Orin: ultralytics/ultralytics#22271)
INSTALL = (
    "on a Jetson, JetPack's TensorRT (sudo apt install python3-libnvinfer, seen by a venv made with "
    "--system-site-packages) and pip install pycuda; elsewhere, pip install edgeseg[tensorrt]"
)


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, pycuda.driver)``, or MissingDependencyError saying what to install."""
    modules = []
    for package, module in (("pycuda", "pycuda.driver"), ("tensorrt", "tensorrt")):
        try:
            modules.append(importlib.import_module(module))
        except ImportError as exc:
            # a missing package names itself; a package whose shared libraries do not load (libcuda.so.1,
            # libnvinfer.so.10) raises with name None or an inner module such as pycuda._driver
            if exc.name in (package, module):
                raise MissingDependencyError(
                    f"the tensorrt backend needs tensorrt and pycuda ({package} is missing): {INSTALL}"
                ) from None
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MissingDependencyError(
                f"{package} is installed but cannot load its libraries ({first}): the NVIDIA driver "
                "(libcuda) or TensorRT (libnvinfer) is missing or from another CUDA version; on a Jetson, "
                "install JetPack (apt install nvidia-jetpack)"
            ) from None
    cuda, trt = modules
    return trt, cuda


def require_tensorrt_10(trt: Any) -> None:
    """MissingDependencyError for a TensorRT older than 10. TensorRT 8 (JetPack 5) would get as far as the
    ONNX parser, which refuses create_network(0)'s implicit-batch network with a message asking for a flag
    the user cannot set."""
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise MissingDependencyError(
            f"the tensorrt backend needs TensorRT 10 (JetPack 6 on a Jetson; elsewhere, pip install "
            f"edgeseg[tensorrt]): "
            f"this is TensorRT {trt.__version__}"
        )


def default_cache_dir() -> Path:
    env = os.environ.get("EDGESEG_ENGINE_CACHE")
    if env:
        return Path(env)
    return state_dir() / "engines"


def gpu_identity(cuda: Any, device: Any) -> str:
    """What tells one GPU's engines from another's: ``"Orin (sm_87, 8 SMs, 7 GiB)"``.

    The name alone does not: every Jetson Orin module (AGX, NX, Nano) is "Orin", with compute capability 8.7,
    and TensorRT loads an engine built on another model of the same compute capability with only a warning
    ("Using an engine plan file across different models of devices is not recommended and is likely to affect
    performance or even cause errors"), so the SM count (16 on an AGX Orin 64GB, 8 on an Orin Nano 8GB) and
    the memory (an Orin NX 16GB has the Nano's SMs) join it. TensorRT's hardware compatibility levels, which
    would let one engine serve several GPUs, are for desktop GPUs only (the developer guide's Hardware
    Compatibility section: not on NVIDIA DRIVE OS or JetPack).
    """
    major, minor = device.compute_capability()
    sms = int(device.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT))
    return f"{device.name()} (sm_{major}{minor}, {sms} SMs, {round(device.total_memory() / 2**30)} GiB)"


def engine_cache_path(
    cache_dir: Path,
    onnx: Path,
    onnx_sha256: str,
    input_shape: tuple[int, ...],
    trt_version: str,
    gpu: str,
    fp16: bool,
) -> Path:
    """Where the engine for this ONNX file, input shape, TensorRT version, GPU and precision lives."""
    shape = "x".join(str(d) for d in input_shape)
    text = f"{onnx_sha256}|input={shape}|trt={trt_version}|gpu={gpu}|fp16={fp16}"
    key = hashlib.sha256(text.encode()).hexdigest()
    # the stem only names the file for people (the key tells engines apart): cut, so that a model name as
    # long as a file name can be gives an engine name, and a temporary one beside it, that can be too. The
    # file's place tells prune_engines whose engines they are: two best.onnx in one cache are two models
    # (its absolute path, not the resolved one: a link switched to a new version is still the same model)
    place = hashlib.sha256(os.fsencode(os.path.abspath(onnx))).hexdigest()[:PLACE_CHARS]
    precision = "fp16" if fp16 else "fp32"
    return cache_dir / f"{onnx.stem[:ENGINE_STEM_CHARS]}-{place}-{precision}-{key[:20]}.engine"


def hold_engine(path: Path) -> BinaryIO | None:
    """``path`` opened with a shared lock that tells :func:`prune_engines` a running process uses it (until
    closed, or the process ends); None when it cannot be read: there is no such file, or the folder cannot
    hold one (a file in its place, a name too long), which the build then says in one line."""
    try:
        held = path.open("rb")
    except OSError:
        return None
    fcntl.flock(held, fcntl.LOCK_SH)
    return held


def _older_model(model: str) -> str:
    """The model part of an engine's name as an older edgeseg gave it: the stem, without "-PLACE"."""
    return model[: -(PLACE_CHARS + 1)]


def adopt_older_name(path: Path) -> None:
    """Link the engine cached under the name an older edgeseg gave it, the model's stem without its file's
    place, to ``path``: the same key, so the same engine, which an update would otherwise rebuild (minutes on
    a Jetson). Nothing when there is none, ``path`` exists, or the file system has no hard links."""
    own = ENGINE_NAME.fullmatch(path.name)
    if own is None:
        return
    older = path.with_name(_older_model(own["model"]) + path.name[len(own["model"]) :])
    with contextlib.suppress(OSError):
        os.link(older, path)


def prune_engines(keep: Path) -> list[Path]:
    """Remove the engines in ``keep``'s folder for the same model file (as :func:`engine_cache_path` names
    them) other than ``keep`` that no running process holds (:func:`hold_engine`); the ones removed. Those
    named by the model's stem alone, as before the file's place was in the name, go too: no name matches
    them any more."""
    own = ENGINE_NAME.fullmatch(keep.name)
    if own is None:  # (not a name engine_cache_path gives)
        return []
    models = (own["model"], _older_model(own["model"]))
    removed = []
    for path in sorted(keep.parent.iterdir()):
        other = ENGINE_NAME.fullmatch(path.name)
        if path == keep or other is None or other["model"] not in models:
            continue
        try:
            if not remove_unheld(path):
                continue  # another instance (a manual run beside the service) runs it
        except OSError as exc:  # (gone meanwhile, or not ours to remove: it only costs disk)
            log.warning("cannot remove the unused engine %s: %s", path, exc.strerror or exc)
            continue
        log.info("removed engine %s (built for another model file, TensorRT, GPU or options)", path)
        removed.append(path)
    return removed


@dataclass(frozen=True)
class TensorBinding:
    """One engine I/O tensor: name, shape (``-1`` = dynamic), numpy dtype, direction."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    is_input: bool


def engine_bindings(engine: Any, trt: Any, model: str) -> list[TensorBinding]:
    """The engine's I/O tensors in engine order (TensorRT 10 named-tensor API)."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        trt_dtype = engine.get_tensor_dtype(name)
        try:
            dtype = np.dtype(trt.nptype(trt_dtype))
        except TypeError:  # bf16, fp8, int4, fp4: no numpy type (tensorrt/__init__.py nptype)
            raise ModelError(
                f"model {model!r}: engine tensor {name!r} is {trt_dtype}, which numpy cannot hold: "
                "export the ONNX model with float32, float16 or uint8 inputs and outputs"
            ) from None
        out.append(
            TensorBinding(
                name=name,
                shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
                dtype=dtype,
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
    if inputs[0].dtype != np.dtype(spec.dtype):
        raise ModelError(
            f"model {card.name!r}: engine input {spec.name!r} is {inputs[0].dtype}, "
            f"the card says input.dtype {spec.dtype}"
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
    thread_count: ThreadCount | None = None  # the GPU runs the network
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
        self.float_convs = options.float_convs is not False  # null too: TensorRT cannot run ConvInteger
        require_tensorrt_10(trt)
        if self.fp16 and not hasattr(trt.BuilderFlag, "FP16"):
            raise ConfigError(
                f"model.fp16: TensorRT {trt.__version__} has no FP16 builder flag (removed in TensorRT 11, "
                "whose precision comes from the ONNX file): set fp16: false or export the model in float16"
            )
        self.cache_dir = options.engine_cache_dir or default_cache_dir()
        self.may_build = options.build_engine
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._device: dict[str, Any] = {}
        self._host: dict[str, NDArray[Any]] = {}
        self.engine: Any = None
        self._held: BinaryIO | None = None
        self.context: Any = None
        self.stream: Any = None
        try:
            cuda.init()
            device = cuda.Device(0)
            self.gpu = gpu_identity(cuda, device)
            self._ctx = device.make_context()  # made current on this thread; popped below, pushed per call
        except cuda.Error as exc:
            raise ModelError(f"model {self.card.name!r}: CUDA cannot start on GPU 0: {exc}") from None
        try:
            self.engine_path = engine_cache_path(
                self.cache_dir,
                self.onnx,
                file_sha256(self.onnx),
                card.input.shape,
                str(trt.__version__),
                self.gpu,
                self.fp16,
            )
            self.engine = self._load_engine()
            self._setup_io()
            self._run_on_buffers()  # warm-up: first enqueue initializes kernels
        except BaseException:
            self._release()  # the context is current here: _release pops it
            raise
        self._ctx.pop()

    # -- engine -------------------------------------------------------------------------------------

    def _load_engine(self) -> Any:
        runtime = self.trt.Runtime(self._logger)
        adopt_older_name(self.engine_path)
        self._held = hold_engine(self.engine_path)
        if self._held is not None:
            plan = self._held.read()
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is not None:
                log.info("loaded TensorRT engine %s", self.engine_path)
                if not names_file(self.engine_path, self._held):
                    # another key's build removed it between its open and its lock: put it back, held
                    self._held.close()
                    self._restore_engine(plan)
                return engine
            self._held.close()
            if not self.may_build:
                raise ModelError(
                    f"model {self.card.name!r}: the cached TensorRT engine {self.engine_path} does not "
                    f"deserialize here (TensorRT {self.trt.__version__}, {self.gpu}): its next run or "
                    "`edgeseg service prepare` rebuilds it (minutes)"
                )
            log.warning("cached engine %s does not deserialize here; rebuilding it", self.engine_path)
        if not self.may_build:
            raise ModelError(
                f"model {self.card.name!r}: no TensorRT engine for it (TensorRT {self.trt.__version__}, "
                f"{self.gpu}, fp16={self.fp16}) in {self.cache_dir} yet: its first run or `edgeseg service "
                "prepare` builds it (minutes)"
            )
        plan = self.build_engine()
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelError(
                f"model {self.card.name!r}: TensorRT could not deserialize the engine it just built"
            )
        return engine

    def _parse(self, parser: Any) -> bool:
        """Parse the ONNX file. TensorRT has no importer for ``ConvInteger`` (onnx-tensorrt's
        ``docs/operators.md``: "ConvInteger | N"), so a model quantized by onnxruntime's ``quantize_dynamic``
        reaches it with those convolutions made float ones (:mod:`edgeseg.floatconv`), from bytes
        with the file's path beside them for external weights; ``model.float_convs: false`` keeps the
        graph as it is."""
        if self.float_convs:
            try:
                data, count = floatconv.float_convs_of(self.onnx)
            except OSError as exc:
                raise ModelError(
                    f"model {self.card.name!r}: cannot read {self.onnx}: {exc.strerror}"
                ) from None
            if count:
                log.info("%s: %d int8 convolutions given to TensorRT as float ones", self.onnx.name, count)
                return bool(parser.parse(data, str(self.onnx)))
        return bool(parser.parse_from_file(str(self.onnx)))

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
        if not self._parse(parser):
            errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
            raise ModelError(f"model {self.card.name!r}: TensorRT cannot parse {self.onnx}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        self._fix_dynamic_inputs(builder, network, config)
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
        # the stale engines go first: on a disk they filled, theirs is the room this one needs
        with contextlib.suppress(OSError):  # (an unreadable cache folder: nothing to prune)
            for temp in remove_leftovers(self.cache_dir, ENGINE_NAME):
                log.info("removed %s (an engine's write that a crash or power cut cut short)", temp)
            prune_engines(self.engine_path)
        try:
            self._write_engine(data)
        except OSError as exc:  # a full disk
            raise ConfigError(
                f"model.engine_cache_dir: cannot write the engine to {self.cache_dir} "
                f"({exc.strerror or exc}); without a cache the engine is rebuilt at every start"
            ) from None
        log.info("built engine %s in %.1f s", self.engine_path, time.monotonic() - start)
        return data

    def _fix_dynamic_inputs(self, builder: Any, network: Any, config: Any) -> None:
        """One optimization profile pinning every dynamic input to the card's shape (min = opt = max)."""
        shape = self.card.input.shape
        profile = None
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(int(d) for d in tensor.shape)
            if all(d >= 0 for d in dims):
                continue
            if len(dims) != len(shape) or any(d not in (-1, w) for d, w in zip(dims, shape, strict=True)):
                raise ModelError(
                    f"model {self.card.name!r}: ONNX input {tensor.name!r} has shape {list(dims)}, "
                    f"the card says {list(shape)}"
                )
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(tensor.name, shape, shape, shape)
        if profile is not None:
            config.add_optimization_profile(profile)

    def _restore_engine(self, data: bytes) -> None:
        """Write back the engine loaded from a file removed meanwhile; without room for it, the backend runs
        and the next start builds it."""
        try:
            self._write_engine(data)
        except OSError as exc:
            log.warning("cannot write back the engine %s: %s", self.engine_path, exc.strerror or exc)
        else:
            log.info("wrote back the engine %s (removed while it was loaded)", self.engine_path)

    def _write_engine(self, data: bytes) -> None:
        # (readable by all: a run as another user shares the cache). Held from before the rename on, as the
        # engine this backend runs: once written and not yet held, another key's build removed it
        self._held = replace_file_held(self.engine_path, data, 0o644)

    # -- I/O ----------------------------------------------------------------------------------------

    def _setup_io(self) -> None:
        cuda, card = self.cuda, self.card
        self.bindings = engine_bindings(self.engine, self.trt, card.name)
        check_bindings(self.bindings, card)
        self.context = self.engine.create_execution_context()
        inp = next(b for b in self.bindings if b.is_input)
        if -1 in inp.shape and not self.context.set_input_shape(inp.name, card.input.shape):
            raise ModelError(
                f"model {card.name!r}: the engine does not accept input {inp.name!r} of shape "
                f"{list(card.input.shape)} (outside its optimization profile)"
            )
        for b in self.bindings:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(b.name))
            if any(d < 0 for d in shape):
                raise ModelError(
                    f"model {card.name!r}: engine tensor {b.name!r} keeps a dynamic shape {shape}"
                )
            host = cuda.pagelocked_empty(shape, b.dtype)
            dev = cuda.mem_alloc(host.nbytes)
            self._host[b.name], self._device[b.name] = host, dev
            self.context.set_tensor_address(b.name, int(dev))
        if card.task == "yolo-seg":  # (on the shapes the card's input gives: no dimension is dynamic here)
            det, protos = self._host[card.output.name].shape, self._host[str(card.output.protos)].shape
            check_yolo_seg_outputs(
                card, list(det), list(protos), f"model {card.name!r}: engine of {card.file}"
            )
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

    def run(self, prepared: Prepared) -> Outputs:
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
        # host buffers are reused by the next call: hand out copies. Integer outputs (a class map, a contact
        # map) keep their type, as onnxruntime gives them: the head refuses a contact map of floats
        return {
            name: np.array(self._host[name], np.float32 if self._host[name].dtype.kind == "f" else None)
            for name in self.card.output.names
        }

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        self._release()

    def _release(self) -> None:
        """Free everything made in the context (it is current), newest first, then pop and detach it."""
        try:
            self.context = None  # the execution context before the engine it came from
            self.engine = None
            self.stream = None
            self._host.clear()
            for dev in self._device.values():
                dev.free()
            self._device.clear()
            if self._held is not None:
                self._held.close()
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
