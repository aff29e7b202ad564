"""Exceptions raised at edgeseg's boundaries.

Every message is one line that says what was wrong and where (config key path, file, tensor, frame), so a
user can fix it without reading a traceback.
"""

from __future__ import annotations


class EdgesegError(Exception):
    """Base class of every error edgeseg raises on purpose."""


class TransientError(EdgesegError):
    """A failure at run time that a restart may well fix (the camera plugged in again, memory back, the port
    freed by the instance before): the command exits 4, which systemd restarts, where it does not restart 2
    (bad usage, configuration or input, which only an edit fixes)."""


class InputError(EdgesegError, ValueError):
    """An array or value handed to a public function is malformed (dtype, rank, range)."""


class ConfigError(EdgesegError):
    """A pipeline configuration is invalid; the message starts with the key path."""


class ModelError(EdgesegError):
    """A model file, model card or model output is missing, corrupt or does not match its card."""


class SourceError(EdgesegError):
    """A frame source cannot be opened or has failed for good."""


class SourceGoneError(SourceError, TransientError):
    """A live source gave up: no frame for ``source.reconnect_timeout_s``, or its reads failed too many times
    in a row."""


class SessionLostError(ModelError, TransientError):
    """A model's session, made at start, could not be made again mid-run (with another thread count, then
    with the one it had)."""


class SinkError(EdgesegError):
    """A sink could not write a result (its file, its device); the result is counted as lost."""


class StdoutError(EdgesegError, OSError):
    """stdout does not take the command's output (a full disk, an I/O error)."""


class MissingDependencyError(EdgesegError, ImportError):
    """An optional dependency (tensorrt, pycuda, picamera2) is needed but not installed."""
