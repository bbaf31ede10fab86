"""Command-line options of the grid executor, shared by ``lqtheory prune`` and ``lqtheory reproduce``
(no Dask import here: parsing must stay cheap).

Room: runs (run folders, the loop, leases, the grid executor).
"""

from __future__ import annotations

from lqtheory.common.checks import positive_int_argument
from lqtheory.runs.grid.settings import ENV_BANK_SIZE, ENV_EXECUTOR, ENV_SCHEDULER, EXECUTORS

__all__ = ["add_executor_arguments"]


def add_executor_arguments(parser, *, local_default: str) -> None:
    """``--executor``, ``--scheduler``, ``--workers``, ``--bank-size`` on ``parser`` (a parser or an argument group).
    ``local_default`` says in the help what happens without a scheduler."""
    parser.add_argument("--executor", choices=EXECUTORS, default=None,
                        help=f"dask: runs are Dask tasks; serial: one after another in this process, for "
                             f"debugging (default: ${ENV_EXECUTOR}, else {local_default})")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help=f"address of a running Dask scheduler, e.g. tcp://host:8786 (default: "
                             f"${ENV_SCHEDULER}); its workers must see the run store (--out; the notebooks' "
                             f"build/runs/) at the same path")
    parser.add_argument("--workers", type=positive_int_argument, default=None, metavar="N",
                        help="single-threaded worker processes of the local Dask cluster started when no "
                             "scheduler is given (default: one per core; one per GPU with CUDA)")
    parser.add_argument("--bank-size", type=positive_int_argument, default=None, metavar="K",
                        help=f"at most K runs of a grid train together as one bank (runs sharing data, model, "
                             f"schedule, device and precision; results do not depend on K; default: "
                             f"${ENV_BANK_SIZE}, else 12 on a CPU, 64 on CUDA, at least one bank per worker)")
