"""Exceptions raised at edgeseg's boundaries.

Every message is one line that says what was wrong and where (config key path, file, tensor, frame), so a
user can fix it without reading a traceback.
"""

from __future__ import annotations


class EdgesegError(Exception):
    """Base class of every error edgeseg raises on purpose."""


class InputError(EdgesegError, ValueError):
    """An array or value handed to a public function is malformed (dtype, rank, range)."""


class ConfigError(EdgesegError):
    """A pipeline configuration is invalid; the message starts with the key path."""


class ModelError(EdgesegError):
    """A model file, model card or model output is missing, corrupt or does not match its card."""


class SourceError(EdgesegError):
    """A frame source cannot be opened or has failed for good."""


class SinkError(EdgesegError):
    """A sink could not write a result (its file, its device); the result is counted as lost."""


class MissingDependencyError(EdgesegError, ImportError):
    """An optional dependency (tensorrt, pycuda, picamera2) is needed but not installed."""
