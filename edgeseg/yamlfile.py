"""Reading YAML (pipelines, model cards, overrides, saved tuning) with one-line errors that name the file and
the spot, and floats read as YAML 1.2 and JSON write them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from edgeseg.errors import EdgesegError

# the largest YAML file read: a pipeline, a model card, a saved tuning are a few KB. A video or a log given
# where one goes (`edgeseg run clip.mp4`) was read whole into memory first, /dev/zero without an end.
MAX_BYTES = 1 << 20


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1), but a float in exponent form without a dot or without the exponent's
    sign (``1e-3``, ``2E-1``, ``1.0e5``) is a number, as YAML 1.2 and JSON have it, not the string YAML 1.1
    makes of it: a threshold written so was refused as "must be a number (got '1e-3')".

    A key written twice in one mapping is an error (YAML requires keys to be unique; PyYAML keeps the last):
    a second ``sinks:`` added at the end of a file silently dropped every sink of the first."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:  # (an anchor name: str | None)
        # checked as written, before merges (<<: *base, which the mapping's own keys may override) are
        # flattened into the mapping's node, for every mapping that aliases it
        node: yaml.MappingNode = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise yaml.composer.ComposerError(
                        "while composing a mapping", node.start_mark, f"found duplicate key {key.value!r}",
                        key.start_mark,
                    )  # fmt: skip
                seen.add((key.tag, key.value))
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # a scalar PyYAML's constructors take that Python refuses with ValueError, a traceback from a
        # pipeline file, a card, a saved tuning or --set: an integer of more than 4300 digits (int()'s
        # limit), a date of month 13 (2020-13-45)
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            # (int()'s message goes on to advise sys.set_int_max_str_digits, no help to a user)
            reason = str(exc).split(";")[0]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({reason})", node.start_mark
            ) from None


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, which quotes a string that :class:`Loader` would read as a float (``"1e3"``)."""


for _resolves in (Loader, _Dumper):
    _resolves.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # a line break in a string: in double quotes, where it is escaped (\n, \N for a NEL), not on a line
    # of its own as PyYAML writes it in single quotes (where it reads a NEL back as a space)
    style = '"' if any(c in text for c in "\n\r\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def load(text: str) -> Any:
    """The document of YAML ``text`` (:class:`Loader`); raises ``yaml.YAMLError`` where it is invalid, or
    nested deeper than the interpreter recurses (PyYAML composes a node per level: ``[[[[...`` a few hundred
    deep was a RecursionError, a traceback, from a pipeline file, a card, a saved tuning or ``--set``)."""
    try:
        return yaml.load(text, Loader=Loader)  # (a SafeLoader: no Python objects)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def one_line(value: Any) -> str:
    """A plain value (JSON types) as a one-line YAML flow scalar or collection that :func:`load` reads back
    as it (and PyYAML's own loader: a float under 1e-4 is ``5.0e-05``, where JSON's ``5e-05`` is a string to
    YAML 1.1)."""
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=1 << 30, allow_unicode=True)
    # not strip(): a plain scalar may end in a space of Unicode's (U+00A0, U+3000) that YAML keeps
    return text.removesuffix("\n...\n").removesuffix("\n")


def read_yaml(path: Path, what: str, error: type[EdgesegError]) -> Any:
    """The parsed document of ``path``; ``error`` (naming ``what`` the file is) when unreadable or invalid,
    or larger than :data:`MAX_BYTES`."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise error(f"{path}: too large for a {what} (more than {MAX_BYTES >> 20} MB)")
        text = data.decode("utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:  # saved as Latin-1, or as UTF-16 by a Windows editor
        raise error(
            f"{path}: cannot read {what}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    try:
        return load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
