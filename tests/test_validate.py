"""The one validator's rules, value by value: what each basic type takes, what it is turned into, and the
one-line message of each refusal (every config section, model card and live update goes through these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from edgeseg.fields import meta
from edgeseg.validate import FieldError, Validator, check_value

ROI = tuple[float, float, float, float]


@pytest.mark.parametrize(
    ("hint", "value", "rules", "want"),
    [
        (Literal["rle", "none"], "none", {}, "none"),
        (bool, False, {}, False),
        (int, 3, {"ge": 1}, 3),
        (int, np.int64(3), {}, 3),
        (float, 1, {}, 1.0),
        (float, np.float32(0.5), {"ge": 0, "le": 1}, 0.5),
        (float, 1.0, {"ge": 0, "le": 1}, 1.0),
        (float, 1.0, {"gt": 0, "le": 1}, 1.0),
        (float, 0.0, {"ge": 0}, 0.0),
        (str, "x", {"pattern": r"\S"}, "x"),
        (Path, "models/m.onnx", {}, Path("models/m.onnx")),
        (tuple[str, ...], ["nut", "bolt"], {"ge": 2}, ("nut", "bolt")),
        (tuple[str, ...], [], {}, ()),
        (ROI, [0, 0.25, 1, 0.5], {"ge": 0, "le": 1}, (0.0, 0.25, 1.0, 0.5)),
    ],
)
def test_a_value_that_keeps_its_rule_comes_back_as_its_type(
    hint: Any, value: Any, rules: Any, want: Any
) -> None:
    got = check_value(hint, value, "k", rules)
    assert got == want
    assert type(got) is type(want)


@pytest.mark.parametrize(
    ("hint", "value", "rules", "message"),
    [
        (Literal["rle", "none"], "png", {}, "k: must be one of rle, none (got 'png')"),
        (bool, 1, {}, "k: must be true or false (got 1)"),
        (int, True, {}, "k: must be an integer (got true)"),
        (int, 3.0, {}, "k: must be an integer (got 3.0)"),
        (int, 0, {"ge": 1}, "k: must be >= 1 (got 0)"),
        (float, True, {}, "k: must be a number (got true)"),
        (float, float("nan"), {}, "k: must be a number (got NaN)"),
        (float, float("inf"), {}, "k: must be a number (got Infinity)"),
        (float, "0.5", {}, "k: must be a number (got '0.5')"),
        (float, 1.5, {"ge": 0, "le": 1}, "k: must be in [0, 1] (got 1.5)"),
        (float, -0.5, {"ge": 0, "le": 1}, "k: must be in [0, 1] (got -0.5)"),
        (float, 0.0, {"gt": 0, "le": 1}, "k: must be in (0, 1] (got 0.0)"),
        (float, 1.5, {"gt": 0, "le": 1}, "k: must be in (0, 1] (got 1.5)"),
        (float, 0.0, {"gt": 0}, "k: must be > 0 (got 0.0)"),
        (float, 2.0, {"le": 1}, "k: must be <= 1 (got 2.0)"),
        (str, 5, {}, "k: must be a string (got 5)"),
        (str, "", {"pattern": r"\S"}, "k: must not be empty (got '')"),
        (str, "ab", {"pattern": "^a$"}, "k: must match ^a$ (got 'ab')"),
        (str, "c", {"choices": ("a", "b")}, "k: must be one of a, b (got 'c')"),
        (Path, "  ", {}, "k: must be a path (got '  ')"),
        (Path, 3, {}, "k: must be a string (got 3)"),
        (tuple[str, ...], "nut", {}, "k: must be a list of strings (got 'nut')"),
        (tuple[str, ...], ["nut", ""], {}, 'k: must be a list of strings (got ["nut", ""])'),
        (tuple[str, ...], ["nut", 3], {}, 'k: must be a list of strings (got ["nut", 3])'),
        (tuple[str, ...], ["nut"], {"ge": 2}, 'k: must list at least 2 (got ["nut"])'),
        (ROI, [0, 0, 1], {}, "k: must be a list of 4 numbers (got [0, 0, 1])"),
        (ROI, "0 0 1 1", {}, "k: must be a list of 4 numbers (got '0 0 1 1')"),
        (ROI, [0, 0, 1, "1"], {}, 'k: must be a list of 4 numbers (got [0, 0, 1, "1"])'),
        (ROI, [0, 0, 1, True], {}, "k: must be a list of 4 numbers (got [0, 0, 1, true])"),
        (ROI, [0, 0, 2, 1], {"ge": 0, "le": 1}, "k: each must be in [0, 1] (got [0, 0, 2, 1])"),
    ],
)
def test_a_value_that_breaks_its_rule_is_refused_in_one_line_saying_what_is_allowed(
    hint: Any, value: Any, rules: Any, message: str
) -> None:
    with pytest.raises(FieldError) as info:
        check_value(hint, value, "k", rules)
    assert str(info.value) == message


def test_a_type_with_no_rule_is_a_programming_error_not_a_users() -> None:
    with pytest.raises(TypeError, match="no rule for type"):
        check_value(dict, {}, "k", {})


@dataclass(frozen=True)
class Inner:
    score: float = field(default=0.5, metadata=meta("A score.", ge=0, le=1))


@dataclass(frozen=True)
class Section:
    name: str = field(metadata=meta("Its name."))
    inner: Inner = field(default_factory=Inner)


def test_a_section_names_the_key_path_of_what_is_wrong_and_the_closest_known_key() -> None:
    v = Validator()
    assert v.build(Section, {"name": "a", "inner": {"score": 1}}) == Section("a", Inner(1.0))
    for data, message in [
        ([1], "(top level): must be a section of key: value pairs (got [1])"),
        ({"name": "a", "inner": 3}, "inner: must be a section of key: value pairs (got 3)"),
        ({}, "name: required (Its name.)"),
        (
            {"name": "a", "inner": {"scor": 1}},
            "inner.scor: unknown key; did you mean score? (allowed: score)",
        ),
        ({"name": "a", "inner": {"xyz": 1}}, "inner.xyz: unknown key (allowed: score)"),
        ({"name": "a", "inner": {"score": 2}}, "inner.score: must be in [0, 1] (got 2)"),
    ]:
        with pytest.raises(FieldError) as info:
            v.build(Section, data)
        assert str(info.value) == message
