"""IMX500 backend: the Raspberry Pi AI Camera runs the network on the sensor.

The picamera2 source reads the output tensors of each frame (``IMX500.get_outputs``) and attaches them to
the :class:`~edgeseg.frame.Frame` (``tensors``, by output name, plus ``tensor_roi``, the crop the network
saw). :meth:`edgeseg.model.Model.preprocess` passes them on in ``Prepared.attached`` with the transform from
that crop to the frame; this backend only checks them against the card and hands them to the head.
Networks with many outputs have returned zeroed tensor info on some firmware, so shapes are validated.
"""

from __future__ import annotations

import numpy as np

from edgeseg.backends import DEFAULT_INFERENCE, InferenceOptions, Outputs
from edgeseg.errors import ModelError
from edgeseg.modelcard import ModelCard
from edgeseg.preprocess import Prepared
from edgeseg.threadplan import ThreadCount


class Imx500Backend:
    needs_tensor = False
    thread_count: ThreadCount | None = None  # the sensor runs the network
    description = "imx500 (on the sensor)"

    def __init__(self, card: ModelCard, options: InferenceOptions = DEFAULT_INFERENCE) -> None:
        self.card = card

    def run(self, prepared: Prepared) -> Outputs:
        """The on-sensor outputs the card names; ModelError when a frame carries none or the wrong ones."""
        card = self.card
        if prepared.attached is None:
            raise ModelError(
                f"model {card.name!r}: the frame carries no on-sensor output tensors "
                "(the IMX500 delivered no result for it, or the source is not picamera2 with a network)"
            )
        out: Outputs = {}
        for name in card.output.names:
            if name not in prepared.attached:
                raise ModelError(
                    f"model {card.name!r}: on-sensor output {name!r} missing "
                    f"(the frame carries {', '.join(prepared.attached) or 'none'})"
                )
            t = np.asarray(prepared.attached[name])
            if t.size == 0 or 0 in t.shape:
                raise ModelError(f"model {card.name!r}: on-sensor output {name!r} is empty (shape {t.shape})")
            out[name] = t
        return out

    def close(self) -> None:
        """Nothing to release: the camera source owns the sensor."""
