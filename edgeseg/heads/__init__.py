"""Heads (decoders): raw output tensors -> :class:`~edgeseg.instances.Instances` in full-frame pixels.

One small Protocol and a registry keyed by the card's ``task``; a head module is imported only when a model
of its task is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from edgeseg.backends import Outputs
from edgeseg.errors import ModelError
from edgeseg.semantic import SemanticParams

if TYPE_CHECKING:
    from edgeseg.instances import Instances
    from edgeseg.modelcard import ModelCard
    from edgeseg.preprocess import Prepared


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding knobs; ``None`` takes the model card's default (``yolo_seg:`` / ``semantic:`` sections).

    ``score_threshold``: yolo-seg minimum class score (strictly greater passes). ``iou_threshold``: yolo-seg
    NMS IoU above which a lower-scored box of the same class is suppressed. ``max_det``: most instances kept
    by yolo-seg. ``semantic``: semantic -> instance parameters.
    """

    score_threshold: float | None = None
    iou_threshold: float | None = None
    max_det: int | None = None
    semantic: SemanticParams | None = None


DEFAULT_DECODE = DecodeOptions()


class Head(Protocol):
    """Decodes one model's outputs for one prepared frame."""

    def decode(self, outputs: Outputs, prepared: Prepared, options: DecodeOptions) -> Instances: ...


def _semantic(card: ModelCard) -> Head:
    from edgeseg.heads.semantic import SemanticHead

    return SemanticHead(card)


def _yolo_seg(card: ModelCard) -> Head:
    from edgeseg.heads.yolo_seg import YoloSegHead

    return YoloSegHead(card)


HEADS: dict[str, Callable[[ModelCard], Head]] = {"semantic": _semantic, "yolo-seg": _yolo_seg}


def create_head(card: ModelCard) -> Head:
    """The head for ``card.task``."""
    try:
        return HEADS[card.task](card)
    except KeyError:
        raise ModelError(
            f"{card.source}: task: no head for {card.task!r} (known: {', '.join(HEADS)})"
        ) from None
