"""ONNX Runtime backend (named ``ort`` so it does not shadow the ``onnxruntime`` package)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edgeseg.backends import DEFAULT_INFERENCE, InferenceOptions, floatconv
from edgeseg.errors import ConfigError, ModelError
from edgeseg.modelcard import ModelCard
from edgeseg.preprocess import Prepared

_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}
_NP_TYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
# 3 = errors only: tf2onnx exports (DeepLab) list initializers as graph inputs, which ORT warns about per load
_LOG_SEVERITY = 3
_CPU = "CPUExecutionProvider"


def check_providers(requested: tuple[str, ...]) -> list[str]:
    """The providers to use (CPU when none are requested); raises ConfigError for one not installed."""
    available = ort.get_available_providers()
    wanted = list(requested) or [_CPU]
    for p in wanted:
        if p not in available:
            hint = " (install onnxruntime-gpu for CUDA/TensorRT)" if p != _CPU else ""
            raise ConfigError(
                f"model.providers: {p!r} is not available in this onnxruntime "
                f"(available: {', '.join(available)}){hint}"
            )
    return wanted


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container or ``taskset`` may allow fewer
    than the machine has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def thread_plan(threads: int, spin: bool | None, cores: int) -> tuple[int, bool]:
    """Intra-op threads and whether they spin, for a model that shares ``cores`` with the pipeline's other
    threads (source, decode, sinks).

    Every core goes to inference (0 = auto): its parallel sections are short, and between them, and while
    a frame is decoded, the threads sleep instead of spinning (onnxruntime's default), so the decode and
    source threads get the cores back at once. Spinning saves a wake-up per parallel section only where a
    core is left over for it, i.e. when fewer threads than cores were asked for."""
    n = threads if threads > 0 else cores
    return n, (n < cores) if spin is None else spin


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
        providers = check_providers(options.providers)
        so = ort.SessionOptions()
        so.log_severity_level = _LOG_SEVERITY
        self.threads, self.spin = thread_plan(options.threads, options.spin, usable_cores())
        so.intra_op_num_threads = self.threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        # the memory pattern plans one block for every intermediate tensor of a run on top of the arena's
        # own: measured on the demo model, +18 MB of peak RSS for no measurable speed
        so.enable_mem_pattern = False
        model, self.float_convs = self._model(path, options.float_convs, providers)
        try:
            self.session = ort.InferenceSession(model, sess_options=so, providers=providers)
        except Exception as exc:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {card.name!r}: cannot load {path}: {first}") from None
        self._check_io()
        spinning = "spinning" if self.spin else "not spinning"
        floats = f", {self.float_convs} int8 convolutions run in float" if self.float_convs else ""
        self.description = (
            f"onnxruntime: {', '.join(self.session.get_providers())}, {self.threads} threads ({spinning})"
            f"{floats}"
        )
        self._input = card.input.name
        self._outputs = list(card.output.names)
        self._dtype = _NP_TYPES[card.input.dtype]
        self._shape = card.input.shape
        self.run_tensor(np.zeros(self._shape, self._dtype))  # warm-up: first run allocates and plans

    def _model(self, path: Path, float_convs: bool | None, providers: list[str]) -> tuple[str | bytes, int]:
        """What the session loads: the file's path, or its bytes with its dynamically quantized convolutions
        made float ones, and how many were (see :mod:`edgeseg.backends.floatconv`)."""
        if float_convs is None:  # measured on x86-64 only: elsewhere, int8 kernels may win
            float_convs = platform.machine().lower() in ("x86_64", "amd64") and providers == [_CPU]
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
        outputs = {o.name for o in self.session.get_outputs()}
        for name in card.output.names:
            if name not in outputs:
                raise ModelError(
                    f"model {card.name!r}: card output {name!r} is not a model output "
                    f"(the model has {', '.join(sorted(outputs))})"
                )

    def run_tensor(self, tensor: NDArray[np.generic]) -> dict[str, NDArray[np.float32]]:
        """Outputs by name for one input tensor of the card's shape and dtype."""
        if tensor.shape != self._shape or tensor.dtype != self._dtype:
            raise ModelError(
                f"model {self.card.name!r}: input {self._input!r} got {tensor.dtype} {tensor.shape}, "
                f"expected {np.dtype(self._dtype).name} {self._shape}"
            )
        try:
            values = self.session.run(self._outputs, {self._input: tensor})
        except Exception as exc:  # an ORT failure in one frame names the model, not a pybind class
            raise ModelError(
                f"model {self.card.name!r}: inference failed: {str(exc).splitlines()[0]}"
            ) from None
        return {name: np.asarray(v) for name, v in zip(self._outputs, values, strict=True)}

    def run(self, prepared: Prepared) -> dict[str, NDArray[np.float32]]:
        if prepared.tensor is None:
            raise ModelError(f"model {self.card.name!r}: onnxruntime needs an input tensor, got none")
        return self.run_tensor(prepared.tensor)

    def close(self) -> None:
        # ORT frees the session when the last reference goes; dropping it here releases memory promptly
        self.__dict__.pop("session", None)
