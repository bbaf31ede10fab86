"""What a Dask worker executes: module-level functions, pickled by reference (workers import
``lqtheory``, so the package must be installed, or on ``PYTHONPATH``, wherever workers run).

Room: runs (run folders, the loop, leases, the grid executor).
"""

from __future__ import annotations

import traceback

import torch

from lqtheory.runs import banks, runner
from lqtheory.runs.grid.graph import dense_stage

__all__ = ["TaskError", "bank_task", "dense_task", "run_task"]

_MAX_TRACEBACK = 20_000  # characters kept of a worker's traceback


class TaskError(RuntimeError):
    """A task's exception as plain text (``error``, ``traceback``), so that it always travels back to
    the client: some exceptions or tracebacks cannot be pickled (a deep RecursionError), and Dask then
    never reports the task as failed."""

    def __init__(self, error: str, traceback_text: str):
        super().__init__(error, traceback_text)
        self.error, self.traceback = error, traceback_text

    def __str__(self) -> str:
        return self.error


def _as_text(err: BaseException) -> TaskError:
    text = traceback.format_exc()
    if len(text) > _MAX_TRACEBACK:
        text = text[: _MAX_TRACEBACK // 2] + "\n[...]\n" + text[-_MAX_TRACEBACK // 2:]
    return TaskError(f"{type(err).__name__}: {err}"[:2000], text)


def _single_threaded(threads: int) -> None:
    # The nanny sets OMP/MKL threads to 1 through the environment; torch's intra-op pool is set here,
    # so a worker computes exactly what the serial loop computes with the same thread count.
    torch.set_num_threads(threads)


def dense_task(config, out: str, threads: int) -> str:
    """Train (or find) the dense model of ``config``; returns the artifact's folder. ``ensure_dense``
    trains under the artifact's store claim, so concurrent grids sharing the store never train it twice."""
    _single_threaded(threads)
    stage = dense_stage()
    if stage is None:
        raise RuntimeError("lqtheory.runs.dense has no dense stage (dense_id/ensure_dense)")
    _, ensure_dense = stage
    try:
        return str(ensure_dense(config, out))
    except Exception as err:  # noqa: BLE001 - sent back as text
        raise _as_text(err) from None


def run_task(config, out: str, threads: int, dense: str | None = None):
    """Run (or resume, or load) ``config`` into the store ``out``; returns the run's records as the
    DataFrame :meth:`lqtheory.runs.folder.Results.frame` gives. ``dense`` (the dense task's result)
    only orders this task after its dense stage."""
    _single_threaded(threads)
    try:
        return runner.run_experiment(config, out, progress=False, threads=threads).frame()
    except Exception as err:  # noqa: BLE001 - sent back as text
        raise _as_text(err) from None


def bank_task(configs, out: str, threads: int, *dense: str) -> dict:
    """Run (or resume, or load) ``configs`` as one bank (:func:`lqtheory.runs.banks.run_bank`) into the
    store ``out``; returns ``{run_id: frame}`` (each run's :meth:`lqtheory.runs.folder.Results.frame`, so
    that the client concatenates exactly the frames a run-per-task grid gives). ``dense`` (the dense
    tasks' results) only orders this task after its members' dense stages."""
    _single_threaded(threads)
    try:
        results = banks.run_bank(configs, out, progress=False, threads=threads)
        return {cfg.run_id(): res.frame() for cfg, res in zip(configs, results, strict=True)}
    except Exception as err:  # noqa: BLE001 - sent back as text
        raise _as_text(err) from None
