"""The typed records that flow between pipeline stages: ``Frame`` in, ``Result`` out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from edgeseg.geometry import FULL_ROI, Roi
from edgeseg.instances import Instances

if TYPE_CHECKING:
    from edgeseg.events import Event
    from edgeseg.semantic import SplitView


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image and what the source knows about it.

    Attributes:
        index: 0-based position in the source (file frame number, or capture count for live sources).
        image: ``(H, W, 3)`` uint8 BGR.
        t_capture_ns: ``time.monotonic_ns()`` when the sensor delivered it (latency is measured from here).
        wall_time: ``time.time()`` at capture, for publishing.
        roi: normalized ``(left, top, width, height)`` of the full sensor frame that ``image`` covers.
        tensors: output tensors computed on the sensor (IMX500), by output name; ``None`` elsewhere.
        tensor_roi: normalized region of ``image`` that the on-sensor network saw (IMX500 input crop).
        truth: ground-truth instances in ``image`` pixels, when the source knows them (synthetic scenes).
        source: the URI it came from, for messages.
        file: the image file it was read from, as the folder listing or glob gave it (image sequences only).
        damaged: the input was only partly decodable (a truncated JPEG; the decoder filled in the rest).
    """

    index: int
    image: NDArray[np.uint8]
    t_capture_ns: int
    wall_time: float
    roi: Roi = FULL_ROI
    tensors: Mapping[str, NDArray[np.float32]] | None = None
    tensor_roi: Roi | None = None
    truth: Instances | None = None
    source: str = ""
    file: str | None = None
    damaged: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


@dataclass(frozen=True)
class StageTimes:
    """Monotonic nanosecond stamps of one frame's way through the pipeline (0 = stage not reached)."""

    captured: int = 0
    preprocessed: int = 0
    inferred: int = 0
    decoded: int = 0
    published: int = 0

    def ms(self, start: str, end: str) -> float:
        """Milliseconds between two named stamps, e.g. ``ms("captured", "decoded")``."""
        a, b = getattr(self, start), getattr(self, end)
        return (b - a) / 1e6 if a and b else float("nan")


@dataclass(frozen=True, eq=False)
class Result:
    """A frame, the instances found in it (full-frame pixels), its stage stamps, the ``config_version`` of
    the settings it was processed with (0: a pipeline without live settings) and, in tune mode, what the
    semantic split saw (``split_view``), and the track events of this frame (``events``, see
    :mod:`edgeseg.events`).

    ``final``: not a frame's result but the carrier of the events the stream stages made when the pipeline
    stopped (``end`` for every track still held): its ``frame`` is the stream's last frame again, its
    ``instances`` are empty. The pipeline gives it only to sinks that publish events (``takes_final_events``
    set on the sink), never to image sinks.
    """

    frame: Frame
    instances: Instances
    times: StageTimes = field(default_factory=StageTimes)
    config_version: int = 0
    split_view: SplitView | None = None
    events: tuple[Event, ...] = ()
    final: bool = False
    # its JSON record, encoded once for every sink that publishes it (see edgeseg.sinks.record.encoded_record)
    _encoded: dict[tuple[str, tuple[str, ...]], str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
