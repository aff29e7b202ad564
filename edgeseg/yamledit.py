"""Writing tuned values back into a pipeline YAML file: only the lines that carry a new value change.

The edits are made on the original text lines, located with PyYAML's node tree (:func:`yaml.compose`): each
key and value node has the marks (line, column) where its text starts and ends, so a new value takes exactly
the old one's place and what follows it on its line (its comment) stays; a block collection's end mark is the
next token's start (past comments and blank lines), so its text ends where its last item's does. No round-trip
parser is needed: the result must read back (with PyYAML, as :func:`edgeseg.config.load_config` does) as the
original document with the changes set, or nothing is written: a layout line edits get wrong is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from edgeseg.atomic import replace_file
from edgeseg.errors import ConfigError
from edgeseg.yamlfile import Loader, load, one_line

__all__ = ["write_back"]

LAYOUT = "its layout cannot be edited line by line here; set the values by hand"


def write_back(path: Path, changes: Mapping[str, Any]) -> None:
    """Set ``changes`` (dotted key paths such as ``source.roi`` -> JSON-like values, numpy ones too) in
    the pipeline YAML ``path``, atomically (temp file, fsync, rename; a symlink is followed, the mode kept).

    An existing key gets the new value on its line, its comment stays; a new key goes at the end of its
    section; a missing or ``null`` section becomes a mapping; lists are written in flow style. Raises
    :class:`ConfigError` (one line) when the file cannot be read, parsed, edited or written, or a key path
    crosses a value.
    """
    path = Path(path)
    settings: dict[tuple[str, ...], Any] = {}
    for key, value in changes.items():
        _flatten(path, key, value, settings)
    try:
        text = path.read_bytes().decode("utf-8")
        expected = load(text)
    except OSError as exc:
        _fail(path, exc.strerror or str(exc))
    except UnicodeDecodeError as exc:
        _fail(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except yaml.YAMLError as exc:
        _fail(path, _describe(exc))
    if not isinstance(expected, dict):
        got = "the file is empty" if expected is None else f"got {type(expected).__name__}"
        _fail(path, f"the file is not a mapping of sections ({got})")
    lines = [line.rstrip("\n") + "\n" for line in text.replace("\r\n", "\n").splitlines(True)]
    original = "".join(lines)
    for parts, value in settings.items():
        section = expected  # the change in the expected document; _edit refuses a path crossing a value
        for part in parts[:-1]:
            if not isinstance(section.get(part), dict):
                section[part] = {}
            section = section[part]
        if parts[-1] in section and json.dumps(section[parts[-1]], default=str) == json.dumps(value):
            continue  # already so: keep its spelling (0.50, quotes)
        root = None  # stays so if an earlier edit broke the file (it parsed before)
        with contextlib.suppress(yaml.YAMLError):
            root = yaml.compose("".join(lines), Loader=Loader)
        if not isinstance(root, yaml.MappingNode):
            _fail(path, LAYOUT)
        _edit(path, lines, root, parts, value)
        section[parts[-1]] = value
    new_text = "".join(lines)
    if new_text == original:
        return
    try:
        same = load(new_text) == expected
    except yaml.YAMLError:
        same = False
    if not same:
        _fail(path, LAYOUT)
    new_text = new_text if text.endswith("\n") else new_text[:-1]
    _replace(path, (new_text.replace("\n", "\r\n") if "\r\n" in text else new_text).encode("utf-8"))


def _fail(path: Path, reason: str) -> NoReturn:
    raise ConfigError(f"{path}: cannot write the tuning back: {reason}")


def _describe(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = (getattr(exc, "problem", None) or str(exc)).partition("\n")[0]
    return f"invalid YAML{where}: {problem}"


def _flatten(path: Path, key: str, value: Any, out: dict[tuple[str, ...], Any]) -> None:
    """Add ``key`` (a non-empty mapping: each of its keys) to ``out`` as (key parts) -> plain value."""
    if isinstance(value, Mapping) and value:
        for name, item in value.items():
            _flatten(path, f"{key}.{name}", item, out)
        return
    parts = tuple(key.split(".")) if isinstance(key, str) else ()
    if not parts or not all(part and part == part.strip() for part in parts):
        raise ConfigError(f"{path}: {key!r}: not a key path (expected e.g. postprocess.score_threshold)")
    out[parts] = _plain(path, key, value)


def _plain(path: Path, key: str, value: Any) -> Any:
    """``value`` as JSON types (numpy scalars and arrays become float, int, bool, lists)."""
    try:
        return json.loads(json.dumps(value, default=lambda item: item.tolist()))
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"{path}: {key}: cannot write a {type(value).__name__} value into YAML") from None


def _edit(path: Path, lines: list[str], root: yaml.MappingNode, parts: tuple[str, ...], value: Any) -> None:
    """Set ``parts`` to ``value`` in ``lines``, located with ``root``, their node tree."""
    step = 2  # the file's indentation step: that of its first nested block mapping, else 2
    for k, v in reversed(root.value):
        if isinstance(v, yaml.MappingNode) and v.start_mark.line > k.start_mark.line:
            step = v.start_mark.column - k.start_mark.column
    node, where = root, (-1, -1)  # (line, column) of the key of section `node`; the file's: (-1, -1)
    for i, part in enumerate(parts):
        pairs = {k.value: (k, v) for k, v in node.value}  # the last of equal keys counts, as when loading
        if part not in pairs:  # a new key, under new sections, at the end of section `node`
            end, last = _section_end(lines, *where), root.value[-1][0].start_mark.line
            # a new section at the end of the file gets a blank line before it if the last one has one
            blank = where[0] < 0 and i < len(parts) - 1 and last > 0 and not lines[last - 1].strip()
            indent = node.value[0][0].start_mark.column if node.value else where[1] + step
            lines[end:end] = ["\n"] * blank + _chain(parts[i:], value, indent, step)
            return
        key, old = pairs[part]
        line, col = key.start_mark.line, key.start_mark.column
        if i == len(parts) - 1:  # the new value on the key's line, instead of the old one's lines
            _put(lines, key, old, one_line(value))
        elif old.tag == "tag:yaml.org,2002:null":  # `part: null`, `~` or nothing: `part:`, the rest below
            _put(lines, key, old, "")
            lines[line + 1 : line + 1] = _chain(parts[i + 1 :], value, col + step, step)
            return
        elif not isinstance(old, yaml.MappingNode):
            where_key, dotted = ".".join(parts[: i + 1]), ".".join(parts)
            raise ConfigError(f"{path}: {where_key}: is a value, not a section, cannot set {dotted}")
        node, where = old, (line, col)


def _chain(parts: tuple[str, ...], value: Any, indent: int, step: int) -> list[str]:
    """The lines of ``parts[0]: {parts[1]: ... value}`` in block style, the first key at ``indent``."""
    *sections, name = (" " * (indent + n * step) + one_line(part) for n, part in enumerate(parts))
    return [f"{section}:\n" for section in sections] + [f"{name}: {one_line(value)}\n"]


def _section_end(lines: list[str], start: int, col: int) -> int:
    """Index after the last non-blank line (comments too) below ``lines[start]`` indented past ``col``."""
    end = start + 1
    for i in range(start + 1, len(lines)):
        if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip(" ")) <= col:
            break
        end = i + 1 if lines[i].strip() else end
    return end


def _end(node: yaml.Node) -> yaml.Mark:
    """Where the text of ``node`` ends: a block collection's (never empty) where its last item's does."""
    while isinstance(node, yaml.CollectionNode) and not node.flow_style:
        node = node.value[-1][1] if isinstance(node, yaml.MappingNode) else node.value[-1]
    return node.end_mark


def _put(lines: list[str], key: yaml.Node, old: yaml.Node, value: str) -> None:
    """``value`` after the colon of ``key`` instead of ``old``, its value, and the lines that spans; the
    comment after the old value (after the colon when the old value starts below it) stays in its column."""
    line, end = key.start_mark.line, _end(old)
    stop = end.line + 1  # after the old value's last line
    if end.column == 0 and end.line > line:  # a block scalar ends past its line breaks, blank lines too
        stop = max((i + 1 for i in range(line + 1, end.line) if lines[i].strip()), default=line + 1)
    below = old.start_mark.line > line  # a block collection (or a scalar) below the key: the rest follows `:`
    col = lines[line].index(":", key.end_mark.column) + 1 if below else end.column  # where the rest starts
    head = lines[line][: col if below else old.start_mark.column].rstrip()
    tail = (lines[line] if below else lines[end.line] if stop > end.line else "").rstrip("\n")[col:]
    del lines[line + 1 : stop]
    new, comment = head + (" " + value if value else ""), tail.lstrip()
    if comment.startswith("#"):  # in its column, or one space after the new value
        tail = " " * max(col + len(tail) - len(comment) - len(new), 1) + comment
    lines[line] = new + tail.rstrip() + "\n"


def _replace(path: Path, data: bytes) -> None:
    """``data`` over ``path`` (:func:`edgeseg.atomic.replace_file`), with the file's owner and mode."""
    target = Path(os.path.realpath(path))
    try:
        info = target.stat()
        with open(target, "rb+"):  # a real attempt: os.access() says yes to root on a read-only mount
            pass
    except OSError as exc:
        _fail(path, f"the file is not writable ({exc.strerror or exc})")
    try:
        replace_file(target, data, info.st_mode & 0o7777, (info.st_uid, info.st_gid))
    except OSError as exc:
        _fail(
            path, f"cannot write a new copy in {target.parent} ({exc.strerror or exc}); the file is unchanged"
        )
