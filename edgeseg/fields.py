"""Field metadata shared by every config dataclass (pipeline sections and each sink's own section).

The loader in :mod:`edgeseg.config` validates values against it and the JSON Schema is generated from it, so
a sink module can declare its section without importing the loader (which imports the sink registry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def meta(
    doc: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    pattern: str | None = None,
    says: str | None = None,
    live: bool = False,
    step: float | None = None,
) -> dict[str, Any]:
    """Field metadata: the description and constraints that both the loader and the schema read.

    ``says``: what ``pattern`` asks for, in words, which the error says in its place (``must be HOST:PORT,
    e.g. 127.0.0.1:8080`` where the regular expression told a user nothing). ``live``: the value may change
    while the pipeline runs (:mod:`edgeseg.control`); ``step``: the increment a slider for it moves by (a live
    number's front-ends: Home Assistant, the tune window).
    """
    return {
        "doc": doc,
        "gt": gt,
        "ge": ge,
        "le": le,
        "choices": choices,
        "pattern": pattern,
        "says": says,
        "live": live,
        "step": step,
    }
