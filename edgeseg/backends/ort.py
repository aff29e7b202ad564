"""ONNX Runtime backend (named ``ort`` so it does not shadow the ``onnxruntime`` package)."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edgeseg import floatconv
from edgeseg.backends import DEFAULT_INFERENCE, InferenceOptions, Outputs
from edgeseg.errors import ConfigError, ModelError, SessionLostError
from edgeseg.malloc import release_free_memory
from edgeseg.modelcard import ModelCard, check_yolo_seg_outputs
from edgeseg.preprocess import Prepared
from edgeseg.threadplan import ThreadCount, usable_cores

_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}
_NP_TYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
# 3 = errors only: tf2onnx exports (DeepLab) list initializers as graph inputs, which ORT warns about per load
_LOG_SEVERITY = 3
# a run with these options ends by giving the CPU arena's free regions back (onnxruntime's
# kOrtRunOptionsConfigEnableMemoryArenaShrinkage, onnxruntime_run_options_config_keys.h)
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
_CPU = "CPUExecutionProvider"
# onnxruntime's ConvInteger takes int8 weights (quantize_dynamic's default) from 1.24 (microsoft/onnxruntime
# #26585); before, only uint8 ones, and 1.23 is the last release for Python 3.10 (JetPack 6)
_INT8_CONV_SINCE = (1, 24)

log = logging.getLogger(__name__)


def check_providers(requested: tuple[str, ...]) -> list[str]:
    """The providers to use (CPU when none are requested); raises ConfigError for one not installed."""
    available = ort.get_available_providers()
    wanted = list(requested) or [_CPU]
    for p in wanted:
        if p not in available:
            hint = f" ({_gpu_build_hint()})" if p != _CPU else ""
            raise ConfigError(
                f"model.providers: {p!r} is not available in this onnxruntime "
                f"(available: {', '.join(available)}){hint}"
            )
    return wanted


def _int8_conv_kernel() -> bool:
    """Whether this onnxruntime runs ConvInteger with int8 weights."""
    version = tuple(int(v) for v in ort.__version__.split(".")[:2] if v.isdigit())
    return version >= _INT8_CONV_SINCE


def _gpu_build_hint() -> str:
    """What to do for a GPU provider this onnxruntime lacks. onnxruntime-gpu (NVIDIA's wheel on a Jetson) does
    not count as the ``onnxruntime`` edgeseg requires, so pip installs that one too, into the same
    ``onnxruntime`` package: the files of the one installed last are the ones imported."""
    try:
        importlib.metadata.distribution("onnxruntime-gpu")
        importlib.metadata.distribution("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return "install onnxruntime-gpu for CUDA/TensorRT"
    return (
        "onnxruntime and onnxruntime-gpu are both installed, into one onnxruntime package, and this one has "
        "no GPU: pip uninstall -y onnxruntime onnxruntime-gpu, then install onnxruntime-gpu alone"
    )


def thread_plan(threads: int, spin: bool | None, cores: int) -> tuple[int, bool]:
    """Intra-op threads and whether they spin, for a model that shares ``cores`` with the pipeline's other
    threads (source, decode, sinks).

    Every core goes to inference (0 = auto): its parallel sections are short, and between them, and while
    a frame is decoded, the threads sleep instead of spinning (onnxruntime's default), so the decode and
    source threads get the cores back at once. Spinning saves a wake-up per parallel section only where a
    core is left over for it, i.e. when fewer threads than cores were asked for."""
    n = threads if threads > 0 else cores
    return n, (n < cores) if spin is None else spin


@functools.cache
def _share_arena() -> None:
    """Give onnxruntime's environment one CPU arena for the sessions of this process, instead of one each.

    A session re-made with another thread count (:meth:`OrtBackend.set_threads`) then reuses the pages its
    predecessor touched. With an arena of its own, made on the inference thread, the demo's peak RSS grew by
    14-20 MB over the run that followed (single runs: 187.9 MB, against 171.6 with the shared arena)."""
    cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(cpu, ort.OrtArenaCfg(0, -1, -1, -1))  # onnxruntime's defaults


def _identity(path: Path) -> tuple[int, int, int]:
    """What tells a file replaced or rewritten on disk: its inode, size and modification time."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class OrtBackend:
    """Runs an ONNX model on ONNX Runtime, checked against its card at load and warmed up once."""

    needs_tensor = True

    def __init__(self, card: ModelCard, options: InferenceOptions = DEFAULT_INFERENCE) -> None:
        self.card = card
        if card.file is None:
            raise ModelError(f"model {card.name!r}: the card names no model file ({card.source})")
        path = Path(card.file)
        if not path.is_file():
            raise ModelError(f"model {card.name!r}: file not found: {path}")
        if options.threads < 0:
            raise ConfigError(f"model.threads: must be >= 0 (got {options.threads})")
        self._providers = check_providers(options.providers)
        self._path, self._options, self._cores = path, options, usable_cores()
        self._file = _identity(path)  # what was loaded, for a session made again (set_threads)
        threads, spin = thread_plan(options.threads, options.spin, self._cores)
        # the thread count left to us may be changed once frames flow (edgeseg.threadplan)
        self.thread_count: ThreadCount | None = self if options.threads == 0 and threads > 1 else None
        self.most_threads = threads
        self.runs = 1  # frames a pipeline runs on the session at once (edgeseg.threadplan)
        self._use(*self._session(threads, spin), threads, spin)
        self._check_io()
        self._input = card.input.name
        self._outputs = list(card.output.names)
        self._dtype = _NP_TYPES[card.input.dtype]
        self._shape = card.input.shape
        self._warm_up()

    def _session(self, threads: int, spin: bool) -> tuple[ort.InferenceSession, int]:
        """A session on ``threads`` intra-op threads, and how many int8 convolutions it runs in float."""
        so = ort.SessionOptions()
        so.log_severity_level = _LOG_SEVERITY
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # the memory pattern plans one block for every intermediate tensor of a run on top of the arena's
        # own: measured on the demo model, +18 MB of peak RSS for no measurable speed
        so.enable_mem_pattern = False
        _share_arena()
        so.add_session_config_entry("session.use_env_allocators", "1")
        model, float_convs = self._model(self._path, self._options.float_convs, self._providers)
        try:
            return ort.InferenceSession(model, sess_options=so, providers=self._providers), float_convs
        except Exception as exc:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "ConvInteger" in first and not _int8_conv_kernel():
                raise ModelError(
                    f"model {self.card.name!r}: onnxruntime {ort.__version__} has no ConvInteger kernel for "
                    f"int8 weights (from {'.'.join(map(str, _INT8_CONV_SINCE))}), which {self._path.name} "
                    "has: leave model.float_convs unset or set it true (they then run in float)"
                ) from None
            raise ModelError(f"model {self.card.name!r}: cannot load {self._path}: {first}") from None

    def _use(self, session: ort.InferenceSession, float_convs: int, threads: int, spin: bool) -> None:
        self.session, self.float_convs, self.threads, self.spin = session, float_convs, threads, spin
        floats = f", {float_convs} int8 convolutions run in float" if float_convs else ""
        self.description = (
            f"onnxruntime: {', '.join(session.get_providers())}, {threads} "
            f"thread{'s' if threads > 1 else ''} ({'spinning' if spin else 'not spinning'}){floats}"
        )

    def _warm_up(self) -> None:
        """The first run, which allocates and plans; after it, the arena gives back its free regions, and
        malloc its free pages. Loading leaves the arena holes where weights were converted and packed, and
        a session re-made (:meth:`set_threads`) leaves what the one before it used, runs side by side
        included. Measured on YOLOv8n-seg int8 at 320 (its convolutions made float), 2 threads: 153.5 MB
        resident after 30 runs without, 133.2 MB with; after two runs side by side and back, 188.2 MB
        against 133.2."""
        self._run(np.zeros(self._shape, self._dtype), _SHRINK_ARENA)
        release_free_memory()

    def set_threads(self, threads: int) -> None:
        """Re-make the session with ``threads`` intra-op threads, not spinning unless ``model.spin`` says so
        (the cores they leave are the other stages'), and warm it up. Call it between frames, on the thread
        that runs them. Where the model file changed on disk since it was loaded, nothing changes (and
        ``threads`` says so); SessionLostError where the file could be loaded again with neither thread
        count."""
        try:
            same = _identity(self._path) == self._file
        except OSError:
            same = False
        if not same:
            log.warning(
                "model %r: %s changed on disk since it was loaded; inference goes on with %d threads",
                self.card.name,
                self._path,
                self.threads,
            )
            return
        previous = self.threads, self.spin
        # the running session goes first: made while it lived, the new one would add what making it takes
        # to the run's peak memory. The pages it frees are given back before the new one is made: measured
        # when each thread had a heap of its own (the old session's was the loading thread's), the demo's
        # peak RSS was then that of a run on one thread from the start (166.3 MB), not 3.5 MB more.
        del self.session
        release_free_memory()
        try:
            planned = thread_plan(threads, bool(self._options.spin), self._cores)
            self._use(*self._session(*planned), *planned)
        except ModelError as exc:
            log.warning("%s; inference goes on with %d threads", exc, previous[0])
            try:
                self._use(*self._session(*previous), *previous)
            except ModelError as again:
                # the same file (checked above) made a session at start: what fails now (memory, most
                # likely) may not after a restart, and a file that is really broken fails that start
                raise SessionLostError(str(again)) from None
        self._warm_up()

    def _model(self, path: Path, float_convs: bool | None, providers: list[str]) -> tuple[str | bytes, int]:
        """What the session loads: the file's path, or its bytes with its dynamically quantized convolutions
        made float ones, and how many were (see :mod:`edgeseg.floatconv`)."""
        if (
            float_convs is None
        ):  # measured on x86-64 only: elsewhere int8 kernels may win, where there are any
            x86 = platform.machine().lower() in ("x86_64", "amd64")
            float_convs = (x86 and providers == [_CPU]) or not _int8_conv_kernel()
        if not float_convs:
            return str(path), 0
        try:
            model, count = floatconv.float_convs_of(path)
        except OSError as exc:
            raise ModelError(f"model {self.card.name!r}: cannot read {path}: {exc.strerror}") from None
        return (model, count) if count else (str(path), 0)

    def _check_io(self) -> None:
        card, spec = self.card, self.card.input
        inputs = {i.name: i for i in self.session.get_inputs()}
        if spec.name not in inputs:
            raise ModelError(
                f"model {card.name!r}: card input.name {spec.name!r} is not a model input "
                f"(the model has {', '.join(inputs)})"
            )
        info = inputs[spec.name]
        if info.type != _ORT_TYPES[spec.dtype]:
            raise ModelError(
                f"model {card.name!r}: input {spec.name!r} is {info.type}, the card says {spec.dtype}"
            )
        shape = list(info.shape)
        want = list(spec.shape)
        fixed_ok = len(shape) == len(want) and all(
            not isinstance(d, int) or d <= 0 or d == w for d, w in zip(shape, want, strict=True)
        )
        if not fixed_ok:
            raise ModelError(
                f"model {card.name!r}: input {spec.name!r} has shape {shape}, the card says {want} "
                f"({spec.layout} {spec.width}x{spec.height})"
            )
        # (onnxruntime lists the shape of an output whose rank the graph leaves open, as a scalar's, as [])
        outputs = {o.name: o.shape or None for o in self.session.get_outputs()}
        for name in card.output.names:
            if name not in outputs:
                raise ModelError(
                    f"model {card.name!r}: card output {name!r} is not an output of {self._path} "
                    f"(the model has {', '.join(sorted(outputs))})"
                )
        if card.task == "yolo-seg":
            protos = outputs[str(card.output.protos)]
            check_yolo_seg_outputs(
                card, outputs[card.output.name], protos, f"model {card.name!r}: {self._path}"
            )

    def run_tensor(self, tensor: NDArray[np.generic]) -> Outputs:
        """Outputs by name for one input tensor of the card's shape and dtype."""
        if tensor.shape != self._shape or tensor.dtype != self._dtype:
            raise ModelError(
                f"model {self.card.name!r}: input {self._input!r} got {tensor.dtype} {tensor.shape}, "
                f"expected {np.dtype(self._dtype).name} {self._shape}"
            )
        return self._run(tensor)

    def _run(self, tensor: NDArray[np.generic], options: ort.RunOptions | None = None) -> Outputs:
        try:
            values = self.session.run(self._outputs, {self._input: tensor}, options)
        except Exception as exc:  # an ORT failure in one frame names the model, not a pybind class
            raise ModelError(
                f"model {self.card.name!r}: inference failed: {str(exc).splitlines()[0]}"
            ) from None
        return {name: np.asarray(v) for name, v in zip(self._outputs, values, strict=True)}

    def run(self, prepared: Prepared) -> Outputs:
        if prepared.tensor is None:
            raise ModelError(f"model {self.card.name!r}: onnxruntime needs an input tensor, got none")
        return self.run_tensor(prepared.tensor)

    def close(self) -> None:
        # ORT frees the session when the last reference goes; dropping it here releases memory promptly
        self.__dict__.pop("session", None)
