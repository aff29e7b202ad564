#!/usr/bin/env python3
"""Mutation check: which small changes to one module its tests let through.

Run: ``.venv/bin/python scripts/mutants.py edgeseg/mqtt/spool.py tests/test_spool.py [--lines 20-50]``.

One mutant at a time, the module's source is parsed, one site changed, written back in place of the module,
and the tests run (``pytest -x``, stopped at the first failure); the module's own text is put back at the
end, also on errors, Ctrl-C and SIGTERM (so do not edit or test that module while it runs). The sites: each
comparison (``<`` and ``<=``, ``==`` and ``!=``, ``in``, ``is`` turned into their neighbour), each ``+ - * /``
(``+`` and ``-`` swapped, ``*`` into ``/``), each ``and``/``or`` swapped, each integer literal plus one, and
each ``if`` condition negated. A mutant the tests pass is printed with its line: either the tests miss a
behaviour, or the change cannot be told apart from the original (a boundary at exact float equality, a value
that is overwritten before use). Judging which is left to the reader.

The last line is one JSON object: the module, the sites tried and the mutants that survived.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

SWAP: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.And: ast.Or,
    ast.Or: ast.And,
}
Site = tuple[int, int, int, int, int]  # line, column, end line, end column (one node), operand index


def _where(node: ast.AST, index: int = 0) -> Site:
    return (node.lineno, node.col_offset, node.end_lineno or 0, node.end_col_offset or 0, index)  # type: ignore[attr-defined]


def _mutable(node: ast.AST) -> bool:
    if isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)):
        return type(node.op) in SWAP
    return isinstance(node, ast.If) or (isinstance(node, ast.Constant) and type(node.value) is int)


def sites(tree: ast.AST) -> list[Site]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found += [_where(node, i) for i, op in enumerate(node.ops) if type(op) in SWAP]
        elif _mutable(node):
            found.append(_where(node))
    return found


def mutated(tree: ast.AST, site: Site) -> ast.AST:
    new = copy.deepcopy(tree)
    for node in ast.walk(new):
        if not hasattr(node, "lineno") or _where(node, site[4]) != site:
            continue
        if isinstance(node, ast.Compare):
            node.ops[site[4]] = SWAP[type(node.ops[site[4]])]()
        elif isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)):
            node.op = SWAP[type(node.op)]()
        elif isinstance(node, ast.Constant):
            node.value += 1
        elif isinstance(node, ast.If):
            node.test = ast.UnaryOp(ast.Not(), node.test)
        else:
            continue
        break
    return ast.fix_missing_locations(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("module", type=Path, help="the .py file to mutate")
    ap.add_argument("tests", nargs="+", help="pytest arguments: the tests that should catch the mutants")
    ap.add_argument("--lines", help="only sites on these lines, FIRST-LAST")
    args = ap.parse_args()
    original = args.module.read_text()
    tree = ast.parse(original)
    todo = sites(tree)
    if args.lines:
        first, last = (int(v) for v in args.lines.split("-"))
        todo = [s for s in todo if first <= s[0] <= last]
    lines = original.splitlines()
    # the tests' own child processes (``python -m edgeseg ...``) import the mutated tree too, not the
    # checkout an editable install points at
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    survived = []
    # SIGTERM (pkill) ends the run like Ctrl-C: subprocess.run kills the test run under way, and the module's
    # own text is put back (the default action left the module mutated and that pytest running on)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for site in todo:
            args.module.write_text(ast.unparse(mutated(tree, site)))
            run = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", *args.tests]
            try:
                passed = subprocess.run(run, capture_output=True, timeout=600, env=env).returncode == 0
            except subprocess.TimeoutExpired:  # a mutant that hangs the tests is caught by them
                passed = False
            if passed:
                survived.append(f"{site[0]}:{site[1]}  {lines[site[0] - 1].strip()}")
                print("survived", survived[-1], flush=True)
    finally:
        args.module.write_text(original)
    print(f"{len(todo)} mutants, {len(survived)} survived")
    print(
        json.dumps(
            {"bench": "mutants", "module": str(args.module), "mutants": len(todo), "survived": survived}
        )
    )


if __name__ == "__main__":
    main()
