"""The runs room: prune -> rewind -> retrain experiments as hashed, resumable run folders.

The config and its hashing, the run folder's checked files, the shared dense stage, the loop and its
driver, the run-folder lease (one process computes a run) and the grid executor on Dask
(:mod:`lqtheory.runs.grid`); the names most callers need are re-exported here. Built on
:mod:`lqtheory.engine`; analysis, the workbench and the CLI sit above it.
"""

from lqtheory.runs.config import FORMAT_VERSION, ExperimentConfig, derive_seed
from lqtheory.runs.dense import dense_id, dense_identity, ensure_dense, load_dense
from lqtheory.runs.files import CorruptRunError, DataMismatchError
from lqtheory.runs.folder import COLUMNS, Results, load_checkpoint, load_results, load_run, verify_run
from lqtheory.runs.identity import data_fingerprint
from lqtheory.runs.runner import run_experiment

__all__ = [
    "COLUMNS",
    "FORMAT_VERSION",
    "CorruptRunError",
    "DataMismatchError",
    "ExperimentConfig",
    "Results",
    "data_fingerprint",
    "dense_id",
    "dense_identity",
    "derive_seed",
    "ensure_dense",
    "load_checkpoint",
    "load_dense",
    "load_results",
    "load_run",
    "run_experiment",
    "verify_run",
]
