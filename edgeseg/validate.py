"""The one validator: a mapping (YAML, JSON, a live update) -> a frozen dataclass, checked field by field.

Every typed section of edgeseg is a frozen dataclass whose fields carry their rules as metadata
(:func:`edgeseg.fields.meta`: description, bounds, choices, pattern): the pipeline YAML and its overrides
(:mod:`edgeseg.config`), model cards (:mod:`edgeseg.modelcard`), :class:`edgeseg.semantic.SemanticParams`
built in code, and live updates (:mod:`edgeseg.control`, which validates by rebuilding the config). Rules that
span fields live in the dataclass's ``__post_init__``, which raises :class:`FieldError` with the field's name;
the builder prefixes the section's key path.

A failure is :class:`FieldError`: the key path, what is allowed, and the value given. Each caller turns it
into its own error type and adds where the value came from (``[--set]``, the card file).

Why not pydantic (the usual choice): the rules already live in the field metadata that also generates the
JSON Schema of the pipeline files, errors must keep edgeseg's one-line format (pydantic's would be
translated back), and importing pydantic costs more start-up time on a Raspberry Pi than this module's
whole work.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import re
import types
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from edgeseg.errors import InputError

T = TypeVar("T")


class FieldError(InputError):
    """``key`` breaks its rule: ``message`` says what is allowed; ``value`` (when given) what was not."""

    def __init__(self, key: str, message: str, value: Any = MISSING) -> None:
        self.key = key
        self.message = message
        self.value = value
        super().__init__(self.text())

    def text(self) -> str:
        got = "" if self.value is MISSING else f" (got {describe(self.value)})"
        # a key is the file's too: one holding a line break ("a\nb": 1) must not break the line, and one of
        # a megabyte (a YAML key is any length) is cut as a value is
        key = _cut(self.key if self.key.isprintable() else json.dumps(self.key))
        return f"{key}: {self.message}{got}"

    def under(self, prefix: str) -> FieldError:
        """The same failure with the section's key path in front."""
        return FieldError(f"{prefix}{self.key}", self.message, self.value)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def type_hints(cls: type[Any]) -> dict[str, Any]:
    """``get_type_hints(cls)``, once per class: it evaluates every annotation string again on each call,
    which was most of the cost of validating a live update."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    return hints


# the most list items and section entries an error message shows of a value (all levels together)
_SHOWN_ITEMS = 20
# the most characters it shows of a string: a value of a megabyte (a pipeline file may have one, a --set
# value or an MQTT payload a good part of one) was echoed whole on the error's line
_SHOWN_CHARS = 200


def describe(value: Any) -> str:
    """A value as an error message shows it: strings quoted, the rest as JSON, cut to :data:`_SHOWN_ITEMS`
    items and each string to :data:`_SHOWN_CHARS` characters."""
    if isinstance(value, str):
        return repr(value) if len(value) <= _SHOWN_CHARS else f"{_cut(value)!r} ({len(value)} characters)"
    return json.dumps(_shown(value, [_SHOWN_ITEMS]), default=str)


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _shown(value: Any, left: list[int]) -> Any:
    """``value`` with at most ``left[0]`` items in all, the rest "...": YAML aliases make a few lines of a
    file a list of a billion items (``&b [*a, *a, ...]`` nested) or one that holds itself (``&a [*a]``), and
    keys of any type (a date) where JSON takes strings and numbers only."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if left[0] <= 0:
                out["..."] = "..."
                break
            left[0] -= 1
            out[key if isinstance(key, (str, int, float)) else str(key)] = _shown(item, left)
        return out
    if isinstance(value, (list, tuple)):
        shown: list[Any] = []
        for item in value:
            if left[0] <= 0:
                shown.append("...")
                break
            left[0] -= 1
            shown.append(_shown(item, left))
        return shown
    if isinstance(value, int) and not isinstance(value, bool):
        # an integer of thousands of digits (YAML reads up to 4300) is cut as a string is
        digits = str(value)
        return value if len(digits) <= _SHOWN_CHARS else f"{_cut(digits)} ({len(digits)} digits)"
    return _cut(value) if isinstance(value, str) else value


def choices_of(meta: Mapping[str, Any]) -> tuple[str, ...] | None:
    choices = meta.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


class Validator:
    """Builds dataclasses from mappings. Subclasses handle types of their own in :meth:`special` and may
    turn :class:`FieldError` into their own error in :meth:`fail`."""

    def fail(self, key: str, message: str, value: Any = MISSING) -> Exception:
        return FieldError(key, message, value)

    def special(self, hint: Any, value: Any, key: str) -> Any:
        """A value of a type this validator knows beyond the basic ones, else ``MISSING``."""
        return MISSING

    def build(self, cls: type[T], data: Any, prefix: str = "") -> T:
        if not isinstance(data, Mapping):
            raise self.fail(
                prefix.rstrip(".") or "(top level)", "must be a section of key: value pairs", data
            )
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        self.check_keys(data, known, prefix, getattr(cls, "__secrets__", {}))
        hints = type_hints(cls)
        values: dict[str, Any] = {}
        for name, f in known.items():
            key = f"{prefix}{name}"
            if name in data:
                values[name] = self.convert(hints[name], data[name], key, f.metadata)
            elif f.default is MISSING and f.default_factory is MISSING:
                if not is_dataclass(hints[name]):
                    raise self.fail(key, f"required ({f.metadata.get('doc', '')})")
                values[name] = self.build(hints[name], {}, key + ".")
        try:
            return cls(**values)
        except FieldError as e:  # a rule across fields, in the class's __post_init__
            raise self.fail(f"{prefix}{e.key}", e.message, e.value) from None

    def check_keys(
        self, data: Mapping[Any, Any], known: Mapping[str, Any], prefix: str, secrets: Mapping[str, str]
    ) -> None:
        for key in data:
            if key in secrets:
                # the value itself is never echoed: it may be a password
                raise self.fail(f"{prefix}{key}", secrets[key])
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise self.fail(f"{prefix}{key}", f"unknown key{hint} (allowed: {', '.join(known)})")

    def convert(self, hint: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        if get_origin(hint) in (Union, types.UnionType):
            if value is None:
                return None
            hint = next(a for a in get_args(hint) if a is not type(None))
        done = self.special(hint, value, key)
        if done is not MISSING:
            return done
        if is_dataclass(hint):
            return self.build(hint, value if value is not None else {}, key + ".")  # type: ignore[arg-type]
        return check_value(hint, value, key, meta, self.fail)


def check_value(hint: Any, value: Any, key: str, meta: Mapping[str, Any], fail: Any = FieldError) -> Any:
    """One value of a basic type (bool, int, float, str, Path, Literal, tuples), checked against ``meta``;
    returns it converted (int -> float, list -> tuple, str -> Path)."""
    args = get_args(hint)
    if get_origin(hint) is Literal:
        if value not in args:
            raise fail(key, f"must be one of {', '.join(map(str, args))}", value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise fail(key, "must be true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise fail(key, "must be an integer", value)
        constrain(key, value, meta, fail)
        return int(value)
    if hint is float:
        if not is_number(value):
            raise fail(key, "must be a number", value)
        constrain(key, value, meta, fail)
        return float(value)
    if hint in (str, Path):
        if not isinstance(value, str):
            raise fail(key, "must be a string", value)
        # a NUL ("\0" in a quoted YAML string) is no path the OS takes: open() raised ValueError at start
        if hint is Path and (not value.strip() or "\0" in value):
            raise fail(key, "must be a path", value)
        constrain(key, value, meta, fail)
        return Path(value) if hint is Path else value
    if get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] is str:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise fail(key, "must be a list of strings", value)
        if meta.get("ge") and len(value) < meta["ge"]:
            raise fail(key, f"must list at least {meta['ge']:g}", value)
        return tuple(value)
    if get_origin(hint) is tuple and args and all(a is float for a in args):
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise fail(key, f"must be a list of {len(args)} numbers", value)
        if not all(is_number(v) for v in value):
            raise fail(key, f"must be a list of {len(args)} numbers", value)
        for v in value:
            constrain(key, v, meta, fail, whole=value)
        return tuple(float(v) for v in value)
    raise TypeError(f"{key}: no rule for type {hint!r}")


def is_number(value: Any) -> bool:
    """A finite real number (not a bool) that a float takes."""
    # numbers.Real: numpy scalars too (a grid search builds SemanticParams from numpy values)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer past a float's range (a file's 400 digits): no number a float takes
        return False


def constrain(
    key: str, value: Any, meta: Mapping[str, Any], fail: Any = FieldError, whole: Any = MISSING
) -> None:
    """The bounds, choices and pattern of ``meta``; ``whole`` is what the error shows (a list's element is
    checked, the list is shown)."""
    shown = value if whole is MISSING else whole
    each = "" if whole is MISSING else "each "
    gt, ge, le = meta.get("gt"), meta.get("ge"), meta.get("le")
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        if ge is not None and le is not None and not ge <= value <= le:
            raise fail(key, f"{each}must be in [{ge:g}, {le:g}]", shown)
        if gt is not None and le is not None and not gt < value <= le:
            raise fail(key, f"{each}must be in ({gt:g}, {le:g}]", shown)
        if gt is not None and not value > gt:
            raise fail(key, f"{each}must be > {gt:g}", shown)
        if ge is not None and not value >= ge:
            raise fail(key, f"{each}must be >= {ge:g}", shown)
        if le is not None and not value <= le:
            raise fail(key, f"{each}must be <= {le:g}", shown)
    choices = choices_of(meta)
    if choices is not None and value not in choices:
        raise fail(key, f"must be one of {', '.join(choices)}", shown)
    pattern = meta.get("pattern")
    if pattern is not None and isinstance(value, str) and not re.search(pattern, value):
        rule = f"must match {pattern}"
        if meta.get("says"):  # (the pattern in words: a regular expression tells a user little)
            rule = f"must be {meta['says']}"
        elif pattern == r"\S":
            rule = "must not be empty"
        raise fail(key, rule, shown)


def check_fields(obj: Any) -> None:
    """Check a dataclass built in code (not from a mapping) against its fields' rules; raises
    :class:`FieldError` keyed by the field's name."""
    hints = type_hints(type(obj))
    for f in fields(obj):
        check_value(hints[f.name], getattr(obj, f.name), f.name, f.metadata)
