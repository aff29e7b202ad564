"""edgeseg: real-time instance segmentation on edge devices."""

from edgeseg.errors import EdgesegError
from edgeseg.instances import Instances
from edgeseg.semantic import SemanticParams, semantic_to_instances

__all__ = ["EdgesegError", "Instances", "SemanticParams", "semantic_to_instances"]
__version__ = "0.1.0"
