"""``python -m edgeseg``: the same as the ``edgeseg`` command."""

from edgeseg.launch import entry

entry()
