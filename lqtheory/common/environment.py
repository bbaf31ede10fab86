"""Temporary changes to ``os.environ`` (common room): the one way the package sets variables for a while.

Used by ``lqtheory reproduce`` (the notebook kernels' variables), the grid's local cluster (the Dask
nanny's variables, exported up front), :class:`~lqtheory.runs.grid.cluster.SharedCluster` (the scheduler
address handed to the kernels) and the tests' notebook fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["EnvironmentPatch", "patched_environ"]


class EnvironmentPatch:
    """Variables to set (a string) or unset (``None``); :meth:`apply` records what was there,
    :meth:`restore` puts it back exactly (a variable that was unset is unset again)."""

    def __init__(self, updates: Mapping[str, str | None]):
        self.updates = dict(updates)
        self._saved: dict[str, str | None] | None = None

    @property
    def applied(self) -> bool:
        return self._saved is not None

    def apply(self) -> None:
        if self._saved is not None:
            raise RuntimeError("this environment patch is already applied")
        self._saved = {k: os.environ.get(k) for k in self.updates}
        for key, value in self.updates.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def restore(self) -> None:
        if self._saved is None:
            return
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = None


@contextmanager
def patched_environ(updates: Mapping[str, str | None]) -> Iterator[None]:
    """``updates`` applied for the block (``None`` unsets), the previous values restored afterwards."""
    patch = EnvironmentPatch(updates)
    patch.apply()
    try:
        yield
    finally:
        patch.restore()
