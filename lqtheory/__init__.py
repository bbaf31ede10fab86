"""lqtheory: neural-network compression through sparse linear approximation, reproduced.

The public API is re-exported here; ``docs/ARCHITECTURE.md`` maps the modules. Notebook helpers
(``lqtheory.workbench.session``) and batch reproduction (``lqtheory.workbench.reproduce``) are imported on demand.
"""

# Pin the math libraries' CPU code paths before torch initialises (numbers that do not depend on the CPU).
from lqtheory.common.kernels import check_pinned as _check_pinned
from lqtheory.common.kernels import pin_kernels as _pin_kernels

_pin_kernels()
_check_pinned()

from lqtheory.common.version import VERSION
from lqtheory.engine.data import DATASETS, DataFileError, Dataset, load_dataset, read_idx
from lqtheory.engine.device import resolve_device, set_determinism
from lqtheory.engine.masks import Mask, global_magnitude_prune, unit_view
from lqtheory.engine.models import (
    MODELS,
    build_model,
    count_multiply_adds,
    mlp_biases,
    mlp_weights,
    prunable_parameters,
)
from lqtheory.engine.pruning import METHODS, PruneConfig, prune_step, si_adaptive_config, unit_statistics
from lqtheory.engine.training import TrainConfig, evaluate, train
from lqtheory.runs import ExperimentConfig, load_results, run_experiment
from lqtheory.theory.approximation import (
    MaureyResult,
    best_s_term,
    best_s_term_error,
    maurey_approximation,
    required_terms,
    stechkin_bound,
)
from lqtheory.theory.backward import BackwardResult, Student, backward_approximation, edges_for_mse, edges_mse_curve
from lqtheory.theory.bounds import (
    NetworkBound,
    allocate_budgets,
    network_bound,
    neuron_oracle_bound,
    neuron_pruning_bound,
    neuron_pruning_deviation,
    s4_coefficients,
    s4_objective,
    stechkin_factor,
    uniform_budgets,
)
from lqtheory.theory.lasso import LassoResult, lasso, lasso_path
from lqtheory.theory.norms import (
    gini_index,
    lq_norm,
    pq_index,
    retained_count_bound,
    si_implied_size,
    sort_magnitudes,
    sparsity_index,
    tail_mass_ratio,
    teacher_sparsity_index,
)
from lqtheory.theory.selection import magnitude_prune, sap_prune_counts
from lqtheory.theory.teacher import Teacher, make_teacher, sample_teacher_data, teacher_tsi

__version__ = VERSION

_PROFILER = ("profile", "compare", "Profile")  # lqtheory.profiler, imported on first use (pandas, plots)


def __getattr__(name: str):
    if name in _PROFILER:
        from lqtheory import profiler

        return getattr(profiler, name)
    raise AttributeError(f"module 'lqtheory' has no attribute {name!r}")


__all__ = [
    # indices (THEORY.md §1, S5)
    "lq_norm", "pq_index", "sparsity_index", "teacher_sparsity_index", "gini_index", "tail_mass_ratio",
    "si_implied_size", "retained_count_bound", "sort_magnitudes",
    # sparse approximation (S1, S3)
    "best_s_term", "best_s_term_error", "stechkin_bound", "required_terms", "maurey_approximation",
    "MaureyResult",
    # bounds and budgets (S2, S4, S7)
    "neuron_pruning_bound", "neuron_oracle_bound", "neuron_pruning_deviation", "network_bound", "NetworkBound",
    "s4_coefficients", "s4_objective", "allocate_budgets", "uniform_budgets", "stechkin_factor",
    # masks and pruning
    "Mask", "magnitude_prune", "global_magnitude_prune", "sap_prune_counts", "unit_view",
    "PruneConfig", "METHODS", "prune_step", "si_adaptive_config", "unit_statistics",
    # data, models, training, experiments
    "Dataset", "DATASETS", "DataFileError", "load_dataset", "read_idx",
    "MODELS", "build_model", "prunable_parameters", "count_multiply_adds", "mlp_weights", "mlp_biases",
    "TrainConfig", "train", "evaluate", "ExperimentConfig", "run_experiment", "load_results",
    # teacher simulation and backward approximation (E1)
    "Teacher", "make_teacher", "sample_teacher_data", "teacher_tsi",
    "LassoResult", "lasso", "lasso_path",
    "Student", "BackwardResult", "backward_approximation", "edges_mse_curve", "edges_for_mse",
    # devices
    "resolve_device", "set_determinism",
    # profiling any model (issue #12)
    "profile", "compare", "Profile",
    "__version__",
]
