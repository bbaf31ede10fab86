"""Is anybody watching? Batch-run detection (papermill, nbval, CI) and whether to draw progress bars
(workbench room). ``$LQTHEORY_BATCH`` and ``$LQTHEORY_PROGRESS`` override the detection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lqtheory.common.vocabulary import ENV_BATCH, ENV_PROGRESS

__all__ = [
    "INJECTED_HEADER",
    "injected_cells",
    "is_batch",
    "wants_progress",
]

INJECTED_HEADER = "# Parameters"


def _history(namespace: Mapping[str, Any] | None) -> list[str]:
    if not namespace:
        return []
    hist = namespace.get("In", namespace.get("_ih", []))
    return [h for h in hist if isinstance(h, str)] if isinstance(hist, (list, tuple)) else []


def injected_cells(namespace: Mapping[str, Any] | None) -> list[str]:
    return [h for h in _history(namespace) if h.lstrip().startswith(INJECTED_HEADER)]


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def is_batch(namespace: Mapping[str, Any] | None = None) -> bool:
    """True when nobody watches the outputs: papermill, nbval/pytest, CI or a plain script.

    ``$LQTHEORY_BATCH`` (1/0) overrides the detection. Inside a Jupyter kernel with none of these
    signals the session is interactive.
    """
    forced = _env_flag(ENV_BATCH)
    if forced is not None:
        return forced
    if injected_cells(namespace) or "PYTEST_CURRENT_TEST" in os.environ or _env_flag("CI"):
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return True
    shell = get_ipython()
    return shell is None or type(shell).__name__ != "ZMQInteractiveShell"


def wants_progress(namespace: Mapping[str, Any] | None = None) -> bool:
    """Whether tqdm bars should be drawn: ``$LQTHEORY_PROGRESS`` (0/1) if set, else interactive only."""
    forced = _env_flag(ENV_PROGRESS)
    return forced if forced is not None else not is_batch(namespace)
