"""Files replaced whole (saved tuning, an edited pipeline, a TensorRT engine, a systemd unit): a crash or a
power cut leaves the old file or the new one, never half of one, and the new one is on the disk once the call
returns."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to a temp file beside ``path``, sync it, rename it over ``path`` and sync the folder
    (the rename is only on the disk then). ``mode``: the file's permission bits; ``owner``: ``(uid, gid)``
    to give it, where the process may (root). Raises OSError, the temp file removed and ``path`` as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if owner is not None:
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.fchown(out.fileno(), *owner)
            os.fchmod(out.fileno(), mode)  # (after chown, which clears set-id bits)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # (a folder that cannot be opened to sync: the rename stands)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
