"""Files replaced whole (saved tuning, an edited pipeline, a TensorRT engine, a systemd unit): a crash or a
power cut leaves the old file or the new one, never half of one, and the new one is on the disk once the call
returns. What such a crash leaves beside it is a temp file, which :func:`remove_leftovers` removes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

# replace_file's temp names: mkstemp's ".NAME." prefix, its 8 random characters (tempfile's
# _RandomNameSequence: a-z, 0-9, '_') and the ".tmp" suffix
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
# a temp file written to this recently is no crash's leftover: its writer may take no lock (an edgeseg from
# before it) and, writing hundreds of MB and syncing them to an SD card, leave its mtime this old at most
LEFTOVER_AGE_S = 600.0


def replace_file(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to a temp file beside ``path``, sync it, rename it over ``path`` and sync the folder
    (the rename is only on the disk then). ``mode``: the file's permission bits; ``owner``: ``(uid, gid)``
    to give it, where the process may (root). Raises OSError, the temp file removed and ``path`` as it was."""
    replace_file_held(path, data, mode, owner).close()


def replace_file_held(
    path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> BinaryIO:
    """:func:`replace_file`, the new file returned open with the shared ``flock`` its write took: held from
    before the rename until it is closed, it tells :func:`remove_unheld` a running process uses the file,
    with no moment after the rename in which another process could remove it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    out = os.fdopen(fd, "wb")
    try:
        # it tells remove_leftovers this write from a crashed one's. Shared, a reader's lock, so that it can
        # be handed on as one: flock turns an exclusive lock into a shared one only by letting go of it first
        # (flock(2): "Converting a lock ... is not guaranteed to be atomic")
        fcntl.flock(out, fcntl.LOCK_SH)
        if owner is not None:
            with contextlib.suppress(OSError):  # only root may give a file away
                os.fchown(out.fileno(), *owner)
        os.fchmod(out.fileno(), mode)  # (after chown, which clears set-id bits)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # (a flush that failed fails again)
            out.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # (a folder that cannot be opened to sync: the rename stands)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return out


def remove_leftovers(folder: Path, target: re.Pattern[str]) -> list[Path]:
    """Remove the temp files that :func:`replace_file` left in ``folder`` when it was killed writing a file
    whose name fullmatches ``target``; the ones removed. A write under way keeps its own: it holds its lock,
    and before it has the lock its file is new. So is the file of an edgeseg from before that lock, still
    running while a newer one is installed beside it: a temp file written to in the last
    ``LEFTOVER_AGE_S`` stays (a crash's is removed by a later call). Raises OSError when ``folder`` cannot
    be listed."""
    removed = []
    written_before = time.time() - LEFTOVER_AGE_S
    for path in sorted(folder.iterdir()):
        name = TEMP_NAME.fullmatch(path.name)
        if name is None or target.fullmatch(name["target"]) is None:
            continue
        with contextlib.suppress(OSError):  # (gone meanwhile: renamed or removed)
            if remove_unheld(path, written_before):
                removed.append(path)
    return removed


def remove_unheld(path: Path, written_before: float | None = None) -> bool:
    """Remove ``path`` unless a process holds an ``flock`` on it (a writer's, or a reader's shared one);
    whether it was removed. ``written_before``: a ``time.time()``; a file modified since is kept too. OSError
    from opening or removing it."""
    with path.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if written_before is not None and os.fstat(f.fileno()).st_mtime >= written_before:
            return False
        if not names_file(path, f):  # a file renamed over it since it was opened: not the one locked
            return False
        path.unlink()
        return True


def names_file(path: Path, f: BinaryIO) -> bool:
    """Whether ``path`` still names the file ``f`` has open (not removed, nor another renamed over it)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(f.fileno()))
    except FileNotFoundError:
        return False
