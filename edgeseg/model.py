"""The model facade the pipeline calls: card + preprocessing + backend + head behind four methods.

``Model.load(path)`` takes a model file (its card is found beside it, in ``models/cards/`` or in its ONNX
metadata) or a card YAML, and warms the backend up. Per frame: ``preprocess`` -> ``infer`` -> ``decode``,
each safe to call from a different thread in that order (one frame at a time per stage).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgeseg.backends import DEFAULT_INFERENCE, Backend, InferenceOptions, Outputs, create_backend
from edgeseg.frame import Frame
from edgeseg.geometry import FULL_ROI, AxisAffine, Roi, roi_pixels, stretch
from edgeseg.heads import DEFAULT_DECODE, DecodeOptions, Head, create_head
from edgeseg.instances import Instances
from edgeseg.modelcard import ModelCard, find_card
from edgeseg.preprocess import Prepared, Preprocessor
from edgeseg.semantic import SplitView
from edgeseg.statedir import state_dir

if TYPE_CHECKING:
    from edgeseg.config import PipelineConfig

__all__ = ["DecodeOptions", "InferenceOptions", "Model", "Prepared"]


def inference_options(config: PipelineConfig) -> InferenceOptions:
    """The ``model`` section's inference settings; TensorRT engines are cached under the state folder's
    ``engines`` when the configuration names a state folder and no ``model.engine_cache_dir``."""
    m, state = config.model, config.pipeline.state_dir
    return InferenceOptions(
        backend=m.backend,
        providers=m.providers,
        threads=m.threads,
        spin=m.spin,
        float_convs=m.float_convs,
        fp16=m.fp16,
        engine_cache_dir=m.engine_cache_dir or (state_dir(state) / "engines" if state is not None else None),
    )


class Model:
    """One loaded model: ``card`` (name, classes, task, input/output spec), backend and head."""

    def __init__(self, card: ModelCard, backend: Backend, head: Head) -> None:
        self.card = card
        self.backend = backend
        self.head = head
        self._pre = Preprocessor(card.input)

    @classmethod
    def load(cls, path: str | Path, options: InferenceOptions = DEFAULT_INFERENCE) -> Model:
        """Find the card for ``path`` (a model file or a card YAML), open the backend and warm it up.

        Raises ModelError (missing/corrupt model, card mismatch), ConfigError (unknown backend or provider)
        or MissingDependencyError (TensorRT/pycuda not installed).
        """
        card = find_card(path)
        head = create_head(card)
        backend = create_backend(card, options)
        return cls(card, backend, head)

    def preprocess(self, frame: Frame, roi: Roi | None = None) -> Prepared:
        """The input tensor for ``frame`` restricted to ``roi`` (normalized; default the whole image).

        For on-sensor backends no tensor is made: the frame's ``tensors`` are passed on, mapped through the
        frame's ``tensor_roi`` (the crop the sensor's network saw).
        """
        if not self.backend.needs_tensor:
            return self._attached(frame)
        region = FULL_ROI if roi is None else roi
        tensor, geo = self._pre(frame.image, region)
        return Prepared(tensor, geo.to_frame, frame.shape, None, geo.crop)

    def _attached(self, frame: Frame) -> Prepared:
        spec = self.card.input
        crop = roi_pixels(frame.tensor_roi or FULL_ROI, frame.shape)
        x0, y0, x1, y1 = crop
        # the sensor resizes its input crop to the network input without letterboxing
        to_frame = stretch((y1 - y0, x1 - x0), (spec.height, spec.width)).inverse()
        to_frame = to_frame.then(AxisAffine(1.0, 1.0, float(x0), float(y0)))
        return Prepared(None, to_frame, frame.shape, frame.tensors, crop)

    def infer(self, prepared: Prepared) -> Outputs:
        """Raw output tensors by name."""
        return self.backend.run(prepared)

    def decode(
        self,
        outputs: Outputs,
        prepared: Prepared,
        options: DecodeOptions = DEFAULT_DECODE,
    ) -> Instances:
        """Instances in full-frame pixels of the prepared frame."""
        return self.head.decode(outputs, prepared, options)

    def explain(
        self,
        outputs: Outputs,
        prepared: Prepared,
        options: DecodeOptions = DEFAULT_DECODE,
    ) -> SplitView | None:
        """What a semantic head's split saw (class map, distance relief, markers, instances) on its work grid,
        with ``to_frame`` placing it on the frame; None for heads without a split (yolo-seg)."""
        explain: Callable[[Outputs, Prepared, DecodeOptions], SplitView] | None
        explain = getattr(self.head, "explain", None)
        return None if explain is None else explain(outputs, prepared, options)

    def decode_view(self, view: SplitView, prepared: Prepared) -> Instances:
        """What :meth:`decode` gives, from :meth:`explain`'s view of the same outputs and options (the view's
        instances are its split's): a frame with a view is split once, not twice."""
        from edgeseg.heads.semantic import on_frame

        return on_frame(view.instances, view.to_frame, prepared)

    def close(self) -> None:
        self.backend.close()
