"""The ``edgeseg`` command's first module (the console script's and ``python -m edgeseg``'s): it holds the
stop signals and SIGHUP from the start of the process, and only then imports the command.

That import (numpy, OpenCV, onnxruntime: most of a second here, seconds on a Raspberry Pi) comes before the
command can handle a signal; under the signals' own actions a SIGTERM in it ended the process by that
signal (README's exit table says 0), SIGINT printed a KeyboardInterrupt traceback, and SIGHUP (a ``systemctl
reload`` just after a start) ended the service, which systemd takes for a clean exit and does not restart.
This module imports nothing heavy, so a library user who imports ``edgeseg`` keeps the signals as they were.
"""

from __future__ import annotations

from typing import NoReturn

from edgeseg.signalhold import Held


def entry() -> NoReturn:
    """The ``edgeseg`` command."""
    held = Held()
    from edgeseg.cli import entry as command

    command(held)
