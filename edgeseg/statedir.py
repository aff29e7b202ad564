"""Where edgeseg keeps what must survive a restart: the MQTT spool and the TensorRT engine cache.

One rule for every caller: ``pipeline.state_dir`` (``--state-dir``), else systemd's ``$STATE_DIRECTORY``
(set by ``StateDirectory=``; the first entry when it lists several), else ``$XDG_STATE_HOME/edgeseg``,
else ``~/.local/state/edgeseg``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def state_dir(configured: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The state directory (not created here: each user creates what it writes)."""
    if configured is not None:
        return Path(configured).expanduser()
    environ = os.environ if env is None else env
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    xdg = environ.get("XDG_STATE_HOME", "")
    # a relative one is invalid (XDG Base Directory spec: "should consider the path invalid and ignore it"):
    # taken, the spool and the saved tuning were another folder's wherever the command ran
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "edgeseg"
