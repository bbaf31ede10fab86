"""lqtheory: neural-network compression through sparse linear approximation, reproduced.

Public API re-exported here; see docs/ARCHITECTURE.md for the module map.
"""

from lqtheory.device import resolve_device, set_determinism

__version__ = "0.1.0"

__all__ = ["resolve_device", "set_determinism", "__version__"]
