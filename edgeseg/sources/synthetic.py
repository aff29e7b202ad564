"""``synthetic:parts``: the demo conveyor scene as a live camera that also knows the ground truth."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from edgeseg.errors import InputError, SourceError
from edgeseg.frame import Frame
from edgeseg.sources import Pacer, ParsedUri, SourceStats, check_options, option_fps, option_int
from edgeseg.sources.spec import MAX_SIDE
from edgeseg.synthetic import PartsScene

if TYPE_CHECKING:
    from edgeseg.sources.spec import SourceConfig

SCENES = ("parts",)
OPTIONS = ("seed", "width", "height", "fps")


class SyntheticSource:
    """Frames of a :class:`~edgeseg.synthetic.PartsScene`, each with ``Frame.truth`` set.

    It behaves as a live camera (``live`` is True): with ``fps`` set it delivers one frame every ``1/fps``
    seconds however fast it is read, and the scene moves on in real time: a reader that falls behind gets the
    scene as it is now (frame indices skip what nobody read), so motion per second of capture time is the
    scene's at any reading rate; without ``fps`` it renders frames ``0, 1, 2, …`` as fast as it is read (a
    camera faster than any pipeline, which is what the latency benchmark needs). It never ends.
    """

    live = True
    frames_total: int | None = None

    def __init__(
        self, uri: str, width: int = 640, height: int = 480, seed: int = 0, fps: float | None = None
    ) -> None:
        self.uri = uri
        self._size = (width, height)
        self._seed = seed
        self._stop = threading.Event()
        self._fps = fps
        self._pacer = Pacer(fps, self._stop)
        self._scene: PartsScene | None = None
        self._delivered = 0
        self._state = "new"

    @classmethod
    def from_uri(cls, parsed: ParsedUri, config: SourceConfig) -> SyntheticSource:
        """Build from ``synthetic:<scene>?options``; URI options win over ``config.width/height/fps``."""
        if parsed.target not in SCENES:
            raise SourceError(
                f"source URI {parsed.uri!r}: unknown synthetic scene {parsed.target!r} (use synthetic:parts)"
            )
        check_options(parsed, OPTIONS)
        return cls(
            parsed.uri,
            width=option_int(parsed, "width", config.width or 640, maximum=MAX_SIDE),
            height=option_int(parsed, "height", config.height or 480, maximum=MAX_SIDE),
            seed=option_int(parsed, "seed", 0, minimum=0),
            fps=option_fps(parsed, config.fps),
        )

    @property
    def stats(self) -> SourceStats:
        return SourceStats(frames=self._delivered, state=self._state, fps=self._fps)

    def open(self) -> None:
        try:
            self._scene = PartsScene(*self._size, seed=self._seed)
        except InputError as e:
            raise SourceError(f"source URI {self.uri!r}: {e}") from None
        self._state = "running"

    def read(self) -> Frame | None:
        """The next scene frame (``(H, W, 3)`` uint8 BGR) with its ground-truth instances in ``truth``."""
        if self._scene is None or not self._pacer.wait():
            return None
        t_ns, index = self._pacer.now_ns, self._pacer.tick
        wall = time.time() - (time.monotonic_ns() - t_ns) / 1e9  # the same instant on the wall clock
        rendered = self._scene.frame(index)
        frame = Frame(
            index=index,
            image=rendered.image,
            t_capture_ns=t_ns,
            wall_time=wall,
            truth=rendered.instances(),
            source=self.uri,
        )
        self._delivered += 1
        return frame

    def close(self) -> None:
        self._stop.set()
        self._state = "closed"
