"""edgeseg: real-time instance segmentation on edge devices."""

import os

# onnxruntime's wheels (1.29 on) keep telemetry on Linux too: a device id and an event store under
# ~/.cache/Microsoft, sent to Microsoft when the network allows. A sensor in a fleet does not call home unless
# its owner sets ORT_DISABLE_TELEMETRY=0. onnxruntime reads it once, when imported, so it is set here, before
# any module of ours imports onnxruntime (microsoft/onnxruntime#27379: "a full non-Windows opt-out when set
# before initialization").
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from edgeseg.errors import EdgesegError
from edgeseg.instances import Instances
from edgeseg.semantic import SemanticParams, semantic_to_instances

__all__ = ["EdgesegError", "Instances", "SemanticParams", "semantic_to_instances"]
__version__ = "0.1.0"
