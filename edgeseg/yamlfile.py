"""Reading a YAML file (pipeline or model card) with one-line errors that name the file and the spot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgeseg.errors import EdgesegError


def read_yaml(path: Path, what: str, error: type[EdgesegError]) -> Any:
    """The parsed document of ``path``; ``error`` (naming ``what`` the file is) when unreadable or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:  # saved as Latin-1, or as UTF-16 by a Windows editor
        raise error(
            f"{path}: cannot read {what}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
