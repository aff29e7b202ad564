"""edgeseg: real-time instance segmentation on edge devices."""

import os

# onnxruntime's wheels (1.29 on) keep telemetry on Linux too: a device id and an event store under
# ~/.cache/Microsoft, sent to Microsoft when the network allows. A sensor in a fleet does not call home unless
# its owner sets ORT_DISABLE_TELEMETRY=0. onnxruntime reads it once, when imported, so it is set here, before
# any module of ours imports onnxruntime (microsoft/onnxruntime#27379: "a full non-Windows opt-out when set
# before initialization").
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from typing import TYPE_CHECKING

from edgeseg.errors import EdgesegError

if TYPE_CHECKING:
    from edgeseg.instances import Instances
    from edgeseg.semantic import SemanticParams, semantic_to_instances

__all__ = ["EdgesegError", "Instances", "SemanticParams", "semantic_to_instances"]
__version__ = "0.1.0"

# imported at their first use, not with the package: the ``edgeseg`` command's first module
# (edgeseg.launch) runs after this file, and holds the stop signals only once it runs, so numpy and OpenCV
# (most of a second, seconds on a Raspberry Pi) load after it
_LAZY = {
    "Instances": "edgeseg.instances",
    "SemanticParams": "edgeseg.semantic",
    "semantic_to_instances": "edgeseg.semantic",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
