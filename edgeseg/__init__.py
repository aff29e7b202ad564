"""edgeseg: real-time instance segmentation on edge devices."""

from edgeseg.errors import EdgesegError
from edgeseg.instances import Instances

__all__ = ["EdgesegError", "Instances"]
__version__ = "0.1.0"
