"""The task graph of a grid: one task per distinct run, and one dense-training task per distinct dense
model that the runs start from (:mod:`lqtheory.runs.dense`); the runs that can train together are
grouped into bank tasks (:func:`plan_banks`, :mod:`lqtheory.runs.banks`), the unit of work sent.

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
from lqtheory.runs.banks import bank_key

__all__ = ["DEFAULT_BANK_SIZE", "BankTask", "DenseTask", "GridPlan", "RunTask", "default_bank_size", "dense_stage",
           "plan_banks", "plan_grid", "store_tag"]

#: runs per bank by device type: on a CPU a bank of 12 gains most of what batching gives (issue #19's
#: measurements); a GPU needs many more runs to be filled
DEFAULT_BANK_SIZE = {"cpu": 12, "cuda": 64}


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
class BankTask:
    """Run (or resume, or load) ``runs`` (run tasks of one :func:`lqtheory.runs.banks.bank_key`) as one
    bank; ``dense`` are the keys of the dense tasks its members wait for."""

    key: str
    runs: tuple[RunTask, ...]
    dense: tuple[str, ...]

    @property
    def configs(self) -> list:
        return [r.config for r in self.runs]


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


def default_bank_size(config) -> int:
    """:data:`DEFAULT_BANK_SIZE` for the device type of ``config``'s runs (the CPU's for others)."""
    return DEFAULT_BANK_SIZE.get(config.device_type(), DEFAULT_BANK_SIZE["cpu"])


def plan_banks(runs: Sequence[RunTask], out: str | os.PathLike, *, bank_size: int | None = None,
               spread: int = 1) -> tuple[BankTask, ...]:
    """The bank tasks of ``runs``: grouped by :func:`lqtheory.runs.banks.bank_key`, each group (in run-id
    order) cut into contiguous banks of near-equal size, at most ``bank_size`` runs each (default
    :func:`default_bank_size`) and at least ``min(spread, group size)`` banks, so that a small grid
    still occupies ``spread`` workers. A run's records do not depend on its bank, so any cut gives
    the same results."""
    if bank_size is not None and (isinstance(bank_size, bool) or not isinstance(bank_size, int) or bank_size < 1):
        raise ValueError(f"bank_size must be a positive int or None, got {bank_size!r}")
    tag = store_tag(out)
    groups: dict[tuple, list[RunTask]] = {}
    for task in sorted(runs, key=lambda r: r.run_id):
        groups.setdefault(bank_key(task.config), []).append(task)
    banks = []
    for tasks in groups.values():
        size = bank_size if bank_size is not None else default_bank_size(tasks[0].config)
        n = len(tasks)
        count = max(-(-n // size), min(max(spread, 1), n))
        bounds = [round(i * n / count) for i in range(count + 1)]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            members = tuple(tasks[lo:hi])
            digest = sha256_hex("/".join(r.run_id for r in members).encode())[:16]
            dense = tuple(dict.fromkeys(r.dense for r in members if r.dense is not None))
            banks.append(BankTask(key=f"lqtheory-bank-{digest}-{tag}", runs=members, dense=dense))
    return tuple(banks)
