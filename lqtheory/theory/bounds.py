"""Pruning error bounds for one neuron (S2) and a deep ReLU network (S4), and bound-optimal budgets (S7).

All three statements are **[derived]** (THEORY.md S2, S4, S7): they follow from Hölder's inequality,
the Lipschitz property of the activation and Stechkin's inequality
``σ_s(w)_1 = ||w - w_s||_1 <= ||w||_q s^(1-1/q)`` (``0 < q <= 1``); S7 is not in the paper.

Conventions shared by every routine here (the code lives in :mod:`lqtheory.theory.neuron_bounds` (S2),
:mod:`lqtheory.theory.network_bound` (S4) and :mod:`lqtheory.theory.budgets` (S7); this module re-exports it):

* Best s-term pruning keeps the ``s`` largest magnitudes of a unit; ties go to the lower index
  (:func:`lqtheory.theory.selection.magnitude_prune`), identically on every device.
* The *Stechkin factor* of a unit is ``||w||_q s^(1-1/q)``, the lq bound on the pruned ℓ1 mass, with
  two exact refinements that keep it a valid bound: it is ``0`` when ``s >= ||w||_0`` (nothing nonzero is
  pruned, so the tail is exactly 0; hence every bound here vanishes when nothing is pruned), and at
  ``s = 0`` it is ``||w||_q`` (the whole mass, ``||w||_1 <= ||w||_q``), i.e. ``max(s, 1)`` replaces ``s``.
  The ℓ2 analogue ``||w||_q s^(1/2-1/q)`` follows the same two rules.
* No Python loop runs over neurons or inputs; :func:`network_bound` loops over layers only.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from lqtheory.theory.budgets import allocate_budgets, s4_coefficients, s4_objective, uniform_budgets
from lqtheory.theory.network_bound import (
    NetworkBound,
    dictionary_constant,
    empirical_l2_error,
    mlp_layer_inputs,
    network_bound,
)
from lqtheory.theory.neuron_bounds import (
    neuron_oracle_bound,
    neuron_pruning_bound,
    neuron_pruning_deviation,
    stechkin_factor,
)

__all__ = [
    "neuron_pruning_bound",
    "neuron_oracle_bound",
    "neuron_pruning_deviation",
    "NetworkBound",
    "network_bound",
    "stechkin_factor",
    "s4_coefficients",
    "s4_objective",
    "allocate_budgets",
    "uniform_budgets",
    "mlp_layer_inputs",
    "dictionary_constant",
    "empirical_l2_error",
]
