"""Run a command under the seccomp filter systemd installs for ``MemoryDenyWriteExecute=yes``.

Usage: ``python tests/mdwe.py COMMAND [ARG...]``. The rules are those of systemd's
``seccomp_memory_deny_write_execute()`` (src/shared/seccomp-util.c) for x86-64 and arm64, loaded through the
same library systemd uses (libseccomp): ``mmap`` with PROT_WRITE|PROT_EXEC, ``mprotect`` /
``pkey_mprotect`` adding PROT_EXEC, and ``shmat`` with SHM_EXEC fail with EPERM. The filter survives
``execve``, so COMMAND runs exactly as it would in the unit in that respect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [  # struct scmp_arg_cmp (seccomp.h)
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def install() -> None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise SystemExit("libseccomp not found (apt install libseccomp2)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    rules = [
        ("mmap", mmap.PROT_EXEC | mmap.PROT_WRITE),
        ("mprotect", mmap.PROT_EXEC),
        ("pkey_mprotect", mmap.PROT_EXEC),
        ("shmat", SHM_EXEC),
    ]
    for syscall, mask in rules:
        nr = lib.seccomp_syscall_resolve_name(syscall.encode())
        cmp = ArgCmp(2, SCMP_CMP_MASKED_EQ, mask, mask)  # SCMP_A2(SCMP_CMP_MASKED_EQ, mask, mask)
        rc = lib.seccomp_rule_add_array(ctx, scmp_act_errno(errno.EPERM), nr, 1, ctypes.byref(cmp))
        if rc < 0:
            raise SystemExit(f"seccomp rule for {syscall}: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise SystemExit(f"seccomp_load: {os.strerror(-rc)}")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
