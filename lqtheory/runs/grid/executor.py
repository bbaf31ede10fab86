"""``run_grid`` / ``run_experiments``: a grid of runs on Dask (or in-process), returned as one DataFrame
(the grid executor of the runs room)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lqtheory.engine.training import progress_enabled
from lqtheory.runs import banks, runner
from lqtheory.runs.config import ExperimentConfig
from lqtheory.runs.files import CorruptRunError
from lqtheory.runs.folder import load_run
from lqtheory.runs.grid.cluster import connect, default_workers, gpu_count
from lqtheory.runs.grid.graph import plan_banks, plan_grid
from lqtheory.runs.grid.settings import resolve, resolve_bank_size
from lqtheory.runs.grid.tasks import TaskError, bank_task, dense_task

__all__ = ["GridError", "RunFailure", "run_experiments", "run_grid"]


@dataclass(frozen=True)
class RunFailure:
    """A run of a grid that raised: its configuration, the error and the traceback (from the worker)."""

    config: object
    run_id: str
    error: str
    traceback: str

    def describe(self) -> str:
        return f"run {self.run_id} ({self.config.describe()}): {self.error}"


class GridError(RuntimeError):
    """Some runs of a grid failed; the others finished. ``failures``: :class:`RunFailure` list;
    ``frame``: the records of the runs that finished (None if none did)."""

    def __init__(self, failures: Sequence[RunFailure], total: int, frame=None):
        self.failures = list(failures)
        self.frame = frame
        lines = [f"{len(self.failures)} of {total} run(s) failed (the others finished):"]
        for f in self.failures:
            lines += [f"  {f.describe()}", *("    " + ln for ln in f.traceback.rstrip().splitlines())]
        super().__init__("\n".join(lines))


def _check_count(value, name: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


def _finished(config, out) -> bool:
    """The run's results.json says complete (a cheap look; run_experiment verifies when it loads)."""
    try:
        return load_run(config.run_dir(out)).complete
    except (FileNotFoundError, CorruptRunError, OSError):
        return False


def run_grid(configs, out: str | os.PathLike = "runs", *, executor: str | None = None, scheduler=None,
             workers: int | None = None, threads: int | None = 1, progress: bool | None = None,
             bank_size: int | None = None):
    """Run (or resume, or load) every configuration of a grid; return all records as one DataFrame.

    The frame is the one :func:`run_experiments` has always returned: the
    :meth:`~lqtheory.runs.folder.Results.frame` of each distinct configuration, concatenated in the
    order given (duplicates run once). Runs live in ``<out>/<run_id>/`` as with ``run_experiment``.

    ``executor``: ``"dask"`` (the default) sends one task per bank of runs (the runs that share data,
    model, schedule, device and precision, retrained together: :mod:`lqtheory.runs.banks`), and one
    task per distinct dense model the runs start from (their dependency, the dense stage,
    :mod:`lqtheory.runs.dense`), to a Dask cluster; ``"serial"`` runs the banks one after another in
    this process (for debugging: the first error is raised as is). Without an argument,
    ``$LQTHEORY_EXECUTOR`` decides. ``bank_size``: at most this many runs per bank (default
    ``$LQTHEORY_BANK_SIZE``, else
    :data:`lqtheory.runs.grid.graph.DEFAULT_BANK_SIZE`: 12 on a CPU, 64 on CUDA); a small grid is cut
    into at least one bank per worker. A run's records do not depend on its bank (bank of 1 included).

    ``scheduler``: the address of an existing Dask scheduler (``tcp://host:8786``) or a cluster object
    (``LocalCluster``, dask-jobqueue's ``SLURMCluster``); default ``$LQTHEORY_SCHEDULER``. Without one,
    a ``LocalCluster`` is started for the grid and closed afterwards: ``workers`` single-threaded
    worker processes (default: one per core), or one per GPU when the runs use CUDA. When the executor
    is not asked for explicitly and fewer than two runs are left to compute, no cluster is started:
    they run in this process (a cluster would only add its start-up).

    Runs already finished in the store are loaded here, not sent. Workers must see ``out`` at the same
    path (a shared file system on a cluster); it is made absolute before it is sent.

    ``threads``: torch CPU threads per run (``torch.set_num_threads``), 1 by default; with the same
    count, a run computed by a worker is bit-identical to one computed in-process. ``None`` leaves
    torch's setting alone in the serial loop and means 1 on Dask workers.

    ``progress``: one tqdm bar over the tasks (default: when interactive). A run that raises on Dask
    is reported on stderr with its configuration and traceback as soon as it fails, the other runs go
    on, and :class:`GridError` (listing every failure, holding the finished runs' frame) is raised at
    the end. A worker that dies mid-run is replaced: Dask retries its task, which takes over the dead
    worker's claim on the run folder and resumes from the last checkpoint.
    """
    if isinstance(configs, ExperimentConfig | str | bytes):
        raise TypeError(f"configs must be a sequence of ExperimentConfig, got {type(configs).__name__}")
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty")
    for cfg in configs:
        if not isinstance(cfg, ExperimentConfig):
            raise TypeError(f"configs must hold ExperimentConfig objects, got {type(cfg).__name__}")
    _check_count(workers, "workers")
    _check_count(threads, "threads")
    _check_count(bank_size, "bank_size")
    bank_size = resolve_bank_size(bank_size)
    executor, scheduler, explicit = resolve(executor, scheduler)
    if executor == "serial":
        if workers is not None:
            raise ValueError("workers sizes a local Dask cluster; it has no meaning with executor='serial'")
        return _serial(list(dict.fromkeys(configs)), out, threads=threads, progress=progress, bank_size=bank_size)
    return _dask(configs, out, scheduler=scheduler, workers=workers, threads=threads or 1, progress=progress,
                 explicit=explicit, bank_size=bank_size)


def _concat(frames):
    import pandas as pd  # not at import time: `lqtheory prune --help` stays quick

    return pd.concat(frames, ignore_index=True)


def _bar(total: int, progress: bool | None, desc: str):
    if not progress_enabled(progress):
        return None
    from tqdm.auto import tqdm  # only when drawn: importing it in a kernel without ipywidgets warns

    return tqdm(total=total, desc=desc, file=sys.stderr)


def _serial(configs, out, *, threads, progress, bank_size):
    """The banks one after another in this process."""
    show = progress_enabled(progress)
    plan = plan_grid(configs, out)
    bar = _bar(len(plan.runs), progress, "runs")
    frames = {}
    try:
        for bank in plan_banks(plan.runs, out, bank_size=bank_size):
            results = banks.run_bank(bank.configs, out, progress=show, threads=threads)
            frames.update({r.run_id: res.frame() for r, res in zip(bank.runs, results, strict=True)})
            if bar is not None:
                bar.update(len(bank.runs))
    finally:
        if bar is not None:
            bar.close()
    return _concat([frames[run_id] for _, run_id in plan.order])


def _gpus_for(configs, scheduler) -> int:
    """One local worker per GPU when the runs use CUDA (and no cluster is given)."""
    if scheduler is not None:
        return 0
    if not any(cfg.device_type() == "cuda" for cfg in configs):
        return 0
    return gpu_count()


def _dask(configs, out, *, scheduler, workers, threads, progress, explicit, bank_size):
    out_abs = str(Path(out).expanduser().resolve())
    plan = plan_grid(configs, out_abs)
    frames: dict[str, object] = {}
    pending = []
    for task in plan.runs:
        if _finished(task.config, out_abs):
            frames[task.run_id] = runner.run_experiment(task.config, out_abs, progress=False).frame()
        else:
            pending.append(task)
    failures: list[RunFailure] = []
    if pending and not explicit and scheduler is None and len(pending) < 2:
        for task in pending:
            try:
                frames[task.run_id] = banks.run_bank([task.config], out_abs, progress=False,
                                                     threads=threads)[0].frame()
            except Exception as err:  # noqa: BLE001 - reported like a failed Dask task
                failures.append(RunFailure(task.config, task.run_id, f"{type(err).__name__}: {err}",
                                           traceback.format_exc()))
                _report(failures[-1])
    elif pending:
        n_workers = workers if workers is not None else None
        if scheduler is None and n_workers is None:
            n_workers = min(default_workers(), len(pending))
        gpus = _gpus_for([t.config for t in pending], scheduler)
        failures = _submit(plan, pending, out_abs, scheduler=scheduler, workers=n_workers, gpus=gpus,
                           threads=threads, progress=progress, frames=frames, bank_size=bank_size)
    done = [frames[run_id] for _, run_id in plan.order if run_id in frames]
    if failures:
        raise GridError(failures, len(plan.runs), _concat(done) if done else None)
    return _concat(done)


def _report(failure: RunFailure) -> None:
    print(f"lqtheory: {failure.describe()}\n{failure.traceback.rstrip()}", file=sys.stderr, flush=True)


def _failure(task, future) -> RunFailure:
    if future.status == "error":
        err = future.exception()
        if isinstance(err, TaskError):  # raised in the run (or its dense stage): the worker's traceback
            return RunFailure(task.config, task.run_id, err.error, err.traceback)
        # from Dask itself, e.g. KilledWorker: the task killed every worker it was tried on
        tb = "".join(traceback.format_exception(type(err), err, future.traceback()))
        return RunFailure(task.config, task.run_id, f"{type(err).__name__}: {err}", tb)
    return RunFailure(task.config, task.run_id, f"task {future.status}", "")


def _submit(plan, pending, out, *, scheduler, workers, gpus, threads, progress, frames, bank_size) -> list[RunFailure]:
    """Send the pending runs as banks, and the dense tasks they need; collect frames and failures."""
    from distributed import as_completed  # distributed only when a grid really goes to Dask

    needed = {t.dense for t in pending if t.dense is not None}
    failures: list[RunFailure] = []
    with connect(scheduler, workers=workers, gpus=gpus) as client:
        # banks per group: at least one per worker (a cluster object's spec counts workers still starting)
        spread = workers if workers is not None else max(1, len(client.scheduler_info().get("workers", {})),
                                                         len(getattr(scheduler, "worker_spec", None) or {}))
        dense = {d.key: client.submit(dense_task, d.config, out, threads, key=d.key)
                 for d in plan.dense if d.key in needed}
        submitted = {client.submit(bank_task, bank.configs, out, threads, *(dense[k] for k in bank.dense),
                                   key=bank.key): bank
                     for bank in plan_banks(pending, out, bank_size=bank_size, spread=spread)}
        bar = _bar(len(dense) + len(submitted), progress, "grid")
        try:
            for future in as_completed([*dense.values(), *submitted], loop=client.loop):
                bank = submitted.get(future)
                if bank is not None:
                    if future.status == "finished":
                        frames.update(future.result())
                    else:  # members that committed their last iteration before the failure are kept
                        for task in bank.runs:
                            if _finished(task.config, out):
                                frames[task.run_id] = runner.run_experiment(task.config, out, progress=False).frame()
                            else:
                                failures.append(_failure(task, future))
                                _report(failures[-1])
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return failures


def run_experiments(
    configs: Sequence[ExperimentConfig],
    out: str | os.PathLike = "runs",
    *,
    progress: bool | None = None,
    threads: int | None = None,
    executor: str | None = None,
    scheduler=None,
    workers: int | None = None,
):
    """Run (or load) every configuration and return all records as one pandas DataFrame
    (:meth:`Results.frame` rows with the run id and main settings as columns, in the order given).
    Duplicate configurations run once. A tqdm bar over the runs is shown when interactive.

    Delegates to :func:`lqtheory.runs.grid.run_grid` (see there for ``executor``, ``scheduler``,
    ``workers``, ``threads``). What differs is the default executor: the grid goes to Dask when a
    scheduler is known (``scheduler``, or ``$LQTHEORY_SCHEDULER``, which ``lqtheory reproduce`` sets
    for its notebooks) or Dask is asked for (``executor="dask"``, ``$LQTHEORY_EXECUTOR=dask``, or
    ``workers``); otherwise the runs go one after another in this process, so a notebook executed on
    its own (Jupyter, nbval) never starts a cluster of its own. Results are identical either way (with
    the same ``threads``).
    """
    executor, scheduler, _ = resolve(executor, scheduler, default="dask" if workers is not None else "serial")
    return run_grid(configs, out, executor=executor, scheduler=scheduler if executor == "dask" else None,
                    workers=workers, threads=threads, progress=progress)
