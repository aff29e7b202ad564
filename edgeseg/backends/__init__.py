"""Inference backends: a small Protocol and a registry keyed by the YAML name (``model.backend``).

Adding a backend is one module with a class taking ``(card, options)`` and one entry in :data:`BACKENDS`.
Optional runtimes (TensorRT, pycuda) are imported inside their backend, only when it is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edgeseg.errors import ConfigError
from edgeseg.modelcard import ModelCard
from edgeseg.preprocess import Prepared
from edgeseg.threadplan import ThreadCount

Outputs = dict[str, NDArray[np.generic]]
"""A model's raw output tensors by name: float scores, or integer maps (a class map, a contact map) where the
graph computes them (onnxruntime hands them out in the graph's own type; so must every backend)."""


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model: ``backend`` name, ONNX Runtime ``providers`` (empty = CPU), intra-op ``threads``
    (0 = one per usable core), whether idle intra-op threads ``spin`` (None = only where cores are left
    over for them), whether dynamically quantized convolutions run as float ones (``float_convs``, None =
    with ONNX Runtime on an x86-64 CPU or before 1.24, with TensorRT always; see :mod:`edgeseg.floatconv`),
    ``fp16`` TensorRT engines, where TensorRT engines are cached, and whether one not in that cache may be
    built (``build_engine``: not by doctor, whose timing must not cost minutes and hundreds of MB)."""

    backend: str = "onnxruntime"
    providers: tuple[str, ...] = ()
    threads: int = 0
    spin: bool | None = None
    float_convs: bool | None = None
    fp16: bool = False
    engine_cache_dir: Path | None = None
    build_engine: bool = True


class Backend(Protocol):
    """Runs one model. ``needs_tensor`` is False when the outputs arrive with the frame (IMX500);
    ``description`` names the runtime and device for the run's start-up line; ``thread_count`` is set where
    the pipeline may choose the CPU threads inference runs on (:mod:`edgeseg.threadplan`)."""

    needs_tensor: bool
    description: str
    thread_count: ThreadCount | None

    def run(self, prepared: Prepared) -> Outputs:
        """Raw output tensors by name for one prepared frame."""
        ...

    def close(self) -> None: ...


DEFAULT_INFERENCE = InferenceOptions()

BackendFactory = Callable[[ModelCard, InferenceOptions], Backend]


def _onnxruntime(card: ModelCard, options: InferenceOptions) -> Backend:
    from edgeseg.backends.ort import OrtBackend

    return OrtBackend(card, options)


def _tensorrt(card: ModelCard, options: InferenceOptions) -> Backend:
    from edgeseg.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(card, options)


def _imx500(card: ModelCard, options: InferenceOptions) -> Backend:
    from edgeseg.backends.imx500 import Imx500Backend

    return Imx500Backend(card, options)


BACKENDS: dict[str, BackendFactory] = {
    "onnxruntime": _onnxruntime,
    "tensorrt": _tensorrt,
    "imx500": _imx500,
}


def create_backend(card: ModelCard, options: InferenceOptions) -> Backend:
    """The backend ``options.backend`` names, loaded for ``card``."""
    try:
        factory = BACKENDS[options.backend]
    except KeyError:
        raise ConfigError(
            f"model.backend: must be one of {', '.join(BACKENDS)} (got {options.backend!r})"
        ) from None
    return factory(card, options)
