"""Run a command under the system call filter of ``edgeseg@.service``: its ``SystemCallFilter=`` lines.

Usage: ``python tests/syscall_filter.py UNIT_FILE COMMAND [ARG...]``. As systemd 252 builds it
(src/core/execute.c, apply_syscall_filter): the first line is an allow list, so every call outside it fails
with ``SystemCallErrorNumber=`` (EPERM); later ``~`` lines take their calls out of it; the calls systemd
always permits (systemd.exec(5): execve, exit, exit_group, getrlimit, rt_sigreturn, sigreturn and the
clock/sleep calls) stay allowed. Groups are expanded by the real ``systemd-analyze syscall-filter``, and
the filter is loaded with libseccomp, as systemd does; it survives ``execve``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
import sys
from functools import cache

from mdwe import SCMP_ACT_ALLOW, scmp_act_errno

ALWAYS = {
    "execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn", "clock_getres",
    "clock_gettime", "clock_nanosleep", "gettimeofday", "nanosleep", "time",
}  # fmt: skip


@cache
def expand(name: str) -> frozenset[str]:
    """The calls of ``name`` (a call, or an ``@group`` with its nested groups)."""
    if not name.startswith("@"):
        return frozenset({name})
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", name],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    words = [w.strip() for w in out.splitlines()[1:] if w.strip() and not w.strip().startswith("#")]
    return frozenset().union(*(expand(w) for w in words))


def allowed(unit: str) -> set[str]:
    key = "SystemCallFilter="
    lines = [line[len(key) :].strip() for line in unit.splitlines() if line.startswith(key)]
    if not lines or lines[0].startswith("~"):
        raise SystemExit("expects an allow list first")
    calls: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        names = set().union(*(expand(w) for w in line.lstrip("~").split()))
        calls = calls - names if deny else calls | names
    return calls | ALWAYS


def install(calls: set[str]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(scmp_act_errno(errno.EPERM))
    for call in sorted(calls):
        nr = lib.seccomp_syscall_resolve_name(call.encode())
        if nr >= 0:  # (a call this architecture lacks resolves to a negative pseudo number: nothing to allow)
            lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise SystemExit(f"seccomp_load: {os.strerror(-rc)}")


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        install(allowed(f.read()))
    os.execvp(sys.argv[2], sys.argv[2:])
