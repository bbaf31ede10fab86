"""The grid executor of the runs room: grids of runs on Dask, an embedded local cluster by default, any
Dask cluster by address.

:func:`run_grid` turns a grid of :class:`~lqtheory.runs.config.ExperimentConfig` (methods × scopes ×
seeds × ablations) into Dask tasks, one per bank of runs trained together (:mod:`lqtheory.runs.banks`),
each depending on the tasks that train the dense models its runs start from, and returns the records as
one DataFrame. Run folders are leased
(:mod:`lqtheory.runs.lease`), so concurrent workers and processes never compute one run twice, and a worker
killed mid-run is replaced by a retry that resumes from the run's checkpoint.

* ``lqtheory.runs.grid.executor``: :func:`run_grid`, :func:`run_experiments`, :class:`GridError`;
* ``lqtheory.runs.grid.settings``: the executor/scheduler resolution and its environment variables;
* ``lqtheory.runs.grid.graph``: the task graph (:func:`plan_grid`), pure bookkeeping;
* ``lqtheory.runs.grid.tasks``: what the workers execute;
* ``lqtheory.runs.grid.cluster``: the local cluster (per core or per GPU), connecting, quiet logging.

``distributed`` is imported only when a grid actually runs on Dask.
"""

from lqtheory.runs.grid.executor import GridError, RunFailure, run_experiments, run_grid
from lqtheory.runs.grid.graph import GridPlan, plan_grid
from lqtheory.runs.grid.settings import ENV_EXECUTOR, ENV_SCHEDULER, EXECUTORS, resolve

__all__ = [
    "ENV_EXECUTOR",
    "ENV_SCHEDULER",
    "EXECUTORS",
    "GridError",
    "GridPlan",
    "RunFailure",
    "plan_grid",
    "run_experiments",
    "resolve",
    "run_grid",
]
