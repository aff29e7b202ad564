"""``python -m edgeseg``: the same as the ``edgeseg`` command."""

from edgeseg.cli import entry

entry()
