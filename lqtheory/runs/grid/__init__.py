"""Grids of runs on Dask: an embedded local cluster by default, any Dask cluster by address.

:func:`run_grid` turns a grid of :class:`~lqtheory.runs.experiment.ExperimentConfig` (methods × scopes ×
seeds × ablations) into Dask tasks, one per run, each depending on the task that trains the dense model
it starts from, and returns the records as one DataFrame. Run folders are claimed
(:mod:`lqtheory.runs.lease`), so concurrent workers and processes never compute one run twice, and a worker
killed mid-run is replaced by a retry that resumes from the run's checkpoint.

* ``lqtheory.runs.grid.executor``: :func:`run_grid`, :class:`GridError`, the executor/scheduler resolution;
* ``lqtheory.runs.grid.graph``: the task graph (:func:`plan_grid`), pure bookkeeping;
* ``lqtheory.runs.grid.tasks``: what the workers execute;
* ``lqtheory.runs.grid.cluster``: the local cluster (per core or per GPU), connecting, quiet logging.

``distributed`` is imported only when a grid actually runs on Dask.
"""

from lqtheory.runs.grid.executor import ENV_EXECUTOR, ENV_SCHEDULER, EXECUTORS, GridError, RunFailure, resolve, run_grid
from lqtheory.runs.grid.graph import GridPlan, plan_grid

__all__ = [
    "ENV_EXECUTOR",
    "ENV_SCHEDULER",
    "EXECUTORS",
    "GridError",
    "GridPlan",
    "RunFailure",
    "plan_grid",
    "resolve",
    "run_grid",
]
