"""The task graph of a grid: one task per distinct run, and one dense-training task per distinct dense
model that the runs start from (:mod:`lqtheory.runs.dense`).

Pure bookkeeping, no Dask: :func:`plan_grid` is what the executor submits, and what the tests check.
Task keys name the run (or dense) id and the run store, so two clients that submit the same run into
the same store to one scheduler share one task, and the same run into two stores are two tasks.

Room: runs (run folders, the loop, leases, the grid executor).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lqtheory.common.digests import sha256_hex
from lqtheory.runs import dense as dense_artifacts

__all__ = ["DenseTask", "GridPlan", "RunTask", "dense_stage", "plan_grid", "store_tag"]


@dataclass(frozen=True)
class DenseTask:
    """Train (or find) the dense model ``dense_id`` that the runs ``runs`` (run ids) start from."""

    key: str
    dense_id: str
    config: object  # the first ExperimentConfig that needs it (any of them names the same dense model)
    runs: tuple[str, ...]


@dataclass(frozen=True)
class RunTask:
    """Run (or resume, or load) one configuration; ``dense`` is the key of the task it waits for."""

    key: str
    run_id: str
    config: object
    dense: str | None


@dataclass(frozen=True)
class GridPlan:
    """The tasks of a grid. ``order`` maps every requested configuration (in order, duplicates kept
    out) to the run id whose records it gets."""

    runs: tuple[RunTask, ...]
    dense: tuple[DenseTask, ...]
    order: tuple[tuple[object, str], ...]

    def run(self, run_id: str) -> RunTask:
        return next(r for r in self.runs if r.run_id == run_id)


def store_tag(out: str | os.PathLike) -> str:
    """8 hex digits naming a run store by its absolute path."""
    return sha256_hex(str(Path(out).expanduser().resolve()).encode())[:8]


def dense_stage() -> tuple[Callable, Callable] | None:
    """``(dense_id, ensure_dense)`` from :mod:`lqtheory.runs.dense` when it has them, else None."""
    dense_id = getattr(dense_artifacts, "dense_id", None)
    ensure_dense = getattr(dense_artifacts, "ensure_dense", None)
    return (dense_id, ensure_dense) if callable(dense_id) and callable(ensure_dense) else None


def plan_grid(configs: Sequence, out: str | os.PathLike) -> GridPlan:
    """One :class:`RunTask` per distinct run id (configurations naming the same run folder, such as
    ``device="auto"`` and ``"cpu"`` on a CPU machine, run once) and, if the experiment module has a
    dense stage, one :class:`DenseTask` per distinct dense id, on which its runs depend."""
    tag = store_tag(out)
    stage = dense_stage()
    order, runs, dense_runs, dense_config = [], {}, {}, {}
    for cfg in dict.fromkeys(configs):
        run_id = cfg.run_id()
        order.append((cfg, run_id))
        if run_id in runs:
            continue
        dense_key = None
        if stage is not None:
            did = str(stage[0](cfg))
            dense_key = f"lqtheory-dense-{did}-{tag}"
            dense_config.setdefault(dense_key, (did, cfg))
            dense_runs.setdefault(dense_key, []).append(run_id)
        runs[run_id] = RunTask(key=f"lqtheory-run-{run_id}-{tag}", run_id=run_id, config=cfg, dense=dense_key)
    dense = tuple(DenseTask(key=k, dense_id=did, config=cfg, runs=tuple(dense_runs[k]))
                  for k, (did, cfg) in dense_config.items())
    return GridPlan(runs=tuple(runs.values()), dense=dense, order=tuple(order))
