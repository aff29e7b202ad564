"""Tune mode of the display window: a trackbar per live threshold, keys to step, save and reset.

Every change goes through the pipeline's one control point (:class:`edgeseg.live.Controls`), exactly as an
MQTT or web change does: a value the control refuses is shown in the window and the trackbar snaps back to
the value in effect; a change made elsewhere (MQTT, the web page, SIGHUP) moves the trackbar. All HighGUI
calls happen on the display sink's thread, which also runs the trackbar callbacks (inside ``waitKey``).

Keys (the keyboard works where a mouse cannot reach, e.g. over VNC, and is what the tests drive with real X
key events): ``n`` selects the next threshold, ``]`` / ``[`` step it up / down, ``s`` saves the tuning (to
the state directory; see the README's Live control), ``r`` undoes the changes not saved.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import cv2

from edgeseg.errors import EdgesegError
from edgeseg.live import Controls, Outcome, Tunable, TunableKind

log = logging.getLogger(__name__)

ORIGIN = "tune window"
MESSAGE_S = 4.0  # how long a save/refusal message stays in the window
# modlib's dilation knobs are kept for compatibility but change nothing here (edgeseg.semantic): no trackbar
HIDDEN = ("postprocess.semantic.dilate_kernel", "postprocess.semantic.dilate_iteration")
KEY_NEXT, KEY_UP, KEY_DOWN, KEY_SAVE, KEY_RESET = (ord(c) for c in "n][sr")
UNBOUNDED_SPAN = 4.0  # an integer without an upper bound gets a trackbar up to this many times its value


@dataclass(frozen=True)
class Slider:
    """How one tunable maps onto an integer trackbar: ``value = position * step``, from position ``first``
    (the lowest value's) to ``last``. Qt labels a trackbar with its position ("name (pos/max)",
    ``window_QT.cpp``, ``CvTrackbar::setLabel``): counted from the lowest value, max_instances (lowest 1)
    said 300 for 301; so an integer's trackbar stands at its value, a number's at it over ``step``."""

    key: str
    name: str
    kind: TunableKind
    step: float
    first: int
    last: int

    @classmethod
    def of(cls, t: Tunable) -> Slider:
        name = t.key.rpartition(".")[2]
        if t.kind == "bool":
            return cls(t.key, name, t.kind, 1, 0, 1)
        step = t.step or (1.0 if t.kind == "integer" else 0.01)
        lo = t.lo if t.lo is not None else 0.0
        hi = t.hi if t.hi is not None else max(lo + 10 * step, UNBOUNDED_SPAN * float(t.value or 1))
        first = math.ceil(lo / step - 1e-9)  # its value never below lo (a quotient may be 2.9999...)
        return cls(t.key, name, t.kind, step, first, first + max(1, math.ceil((hi - lo) / step)))

    def position(self, value: object) -> int:
        return min(self.last, max(self.first, self.steps(value)))

    def steps(self, value: object) -> int:
        """The position of ``value`` on an endless trackbar (set over MQTT or the web page, an unbounded
        value may lie past this one's end)."""
        if isinstance(value, bool):
            return int(value)
        return round(float(value) / self.step) if isinstance(value, (int, float)) else self.first

    def value(self, position: int) -> float | int | bool:
        if self.kind == "bool":
            return bool(position)
        v = position * self.step
        return int(round(v)) if self.kind == "integer" else round(v, 6)


class TunePanel:
    """The trackbars of one window, bound to ``control``."""

    def __init__(self, window: str, control: Controls) -> None:
        self.window = window
        self.control = control
        self.sliders = [Slider.of(t) for t in control.tunables() if t.kind != "roi" and t.key not in HIDDEN]
        self.selected = 0
        self._syncing = False
        self._message = ""
        self._message_until = 0.0

    def create(self) -> None:
        """Make the trackbars (the window exists)."""
        self._syncing = True  # HighGUI calls the callback once on creation: that is no change
        try:
            for slider in self.sliders:
                position = slider.position(self.control.value(slider.key))
                cv2.createTrackbar(slider.name, self.window, position, slider.last, self._changed(slider))
                if slider.first:
                    cv2.setTrackbarMin(slider.name, self.window, slider.first)
        finally:
            self._syncing = False
        self.sync()

    def _changed(self, slider: Slider):  # type: ignore[no-untyped-def]  # HighGUI's callback signature
        def on_change(position: int) -> None:
            if not self._syncing:
                self._apply(slider, slider.value(position))

        return on_change

    def _apply(self, slider: Slider, value: float | int | bool) -> None:
        if value == self.control.value(slider.key):
            return  # a trackbar at the value in effect (a drag back and forth) changes nothing
        outcome = self.control.update({slider.key: value}, ORIGIN)
        if outcome.rejected:
            self._say(f"{slider.name}: {outcome.rejected[slider.key]}")
            self.sync()  # back to the value in effect

    def sync(self) -> None:
        """Move every trackbar to the value in effect (a change made elsewhere, a refusal, a reset)."""
        self._syncing = True
        try:
            for slider in self.sliders:
                want = slider.position(self.control.value(slider.key))
                if cv2.getTrackbarPos(slider.name, self.window) != want:
                    cv2.setTrackbarPos(slider.name, self.window, want)
        finally:
            self._syncing = False

    def key(self, key: int) -> bool:
        """Handle a key; ``True`` when it was one of tune mode's."""
        if not self.sliders:
            return False
        slider = self.sliders[self.selected]
        if key == KEY_NEXT:
            self.selected = (self.selected + 1) % len(self.sliders)
        elif key in (KEY_UP, KEY_DOWN):
            at = slider.steps(self.control.value(slider.key))
            position = max(slider.first, at + (1 if key == KEY_UP else -1))
            # from a value past the trackbar's end, a step goes on from it: the end would lower it
            self._apply(slider, slider.value(position if at > slider.last else min(slider.last, position)))
        elif key == KEY_SAVE:
            try:
                self._say(self.control.save())
            except EdgesegError as exc:
                self._say(f"not saved: {exc}")
        elif key == KEY_RESET:
            self._report(self.control.reset())
        else:
            return False
        self.sync()
        return True

    def _report(self, outcome: Outcome) -> None:
        changed = ", ".join(f"{k.rpartition('.')[2]}={v}" for k, v in outcome.applied.items())
        self._say(f"reset: {changed or 'nothing to undo'}")

    def _say(self, text: str) -> None:
        log.log(logging.WARNING if text.startswith("not saved") else logging.INFO, "%s", text)
        self._message, self._message_until = text, time.monotonic() + MESSAGE_S

    def lines(self) -> list[str]:
        """HUD lines: the selected threshold and its value, the keys, the latest message."""
        if not self.sliders:
            return []
        slider = self.sliders[self.selected]
        out = [
            f"[{slider.name} = {self.control.value(slider.key)}]  n next  [ ] step  s save  r reset  "
            f"(config_version {self.control.current().version})"
        ]
        if self._message and time.monotonic() < self._message_until:
            out.append(self._message)  # whole: the HUD wraps it (cut, a save's message lost its values)
        return out
