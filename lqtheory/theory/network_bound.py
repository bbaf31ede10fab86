"""The S4 bound of a deep ReLU network in oracle and lq forms, and the S3 L2(P) error helpers [derived: S4].

The conventions are those of :mod:`lqtheory.theory.bounds`, the entry point that re-exports these names.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lqtheory.common.checks import (
    check_exponent,
    check_tensor,
    check_unit_counts,
)
from lqtheory.theory.approximation import best_s_term
from lqtheory.theory.neuron_bounds import check_lipschitz, stechkin_factor_last_dim

__all__ = [
    "NetworkBound",
    "network_bound",
    "mlp_layer_inputs",
    "dictionary_constant",
    "empirical_l2_error",
    "check_network",
]


# --------------------------------------------------------------------------------------------------
# S4: a deep ReLU network
# --------------------------------------------------------------------------------------------------
@dataclass
class NetworkBound:
    """Result of :func:`network_bound` for ``n`` inputs (any leading shape ``B``) and ``K`` outputs.

    ``observed``, ``oracle``, ``lq``: ``(*B, K)``, the per-output deviation ``|f_k - f̃_k|`` and its two
    bounds. ``observed_layers``, ``oracle_layers``, ``lq_layers``: one ``(*B,)`` tensor per hidden layer
    ``l = 1..L``: ``e_l = ||h^(l) - h̃^(l)||_∞`` and its two recursive bounds. ``pruned_weights``: the
    row-wise pruned ``W̃_1..W̃_L, Ṽ``; ``keep_masks`` their boolean masks. ``dense_output`` and
    ``pruned_output``: ``f`` and ``f̃`` (``(*B, K)``), e.g. for accuracies.
    """

    observed: torch.Tensor
    oracle: torch.Tensor
    lq: torch.Tensor
    observed_layers: list[torch.Tensor]
    oracle_layers: list[torch.Tensor]
    lq_layers: list[torch.Tensor]
    pruned_weights: list[torch.Tensor]
    keep_masks: list[torch.Tensor]
    dense_output: torch.Tensor
    pruned_output: torch.Tensor


def _check_finite_tensor(x, name: str) -> None:
    """:func:`check_tensor` with a fast path: a finite sum proves every entry finite (NaN/Inf propagate);
    only when the sum is not finite (a NaN, an Inf, or a mere overflow) is the entrywise check run."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        check_tensor(x, name)
    elif not bool(torch.isfinite(x.sum())):
        check_tensor(x, name)


def check_network(weights, biases, x=None):
    """Validate an MLP given as weight and bias lists; return (weights, biases with zeros for None)."""
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise TypeError("weights must be a non-empty list of 2-D weight tensors (the last one the output layer)")
    weights = list(weights)
    for i, w in enumerate(weights):
        _check_finite_tensor(w, f"weights[{i}]")
        if w.dim() != 2 or 0 in w.shape:
            raise ValueError(f"weights[{i}] must be a non-empty 2-D (out, in) matrix, got shape {tuple(w.shape)}")
        if w.dtype != weights[0].dtype or w.device != weights[0].device:
            raise TypeError(f"weights[{i}] has dtype/device {w.dtype}/{w.device}, unlike weights[0]")
        if i and w.shape[1] != weights[i - 1].shape[0]:
            raise ValueError(
                f"weights[{i}] expects {w.shape[1]} inputs but weights[{i - 1}] has {weights[i - 1].shape[0]} rows"
            )
    if biases is None:
        biases = [None] * len(weights)
    if isinstance(biases, torch.Tensor) or not isinstance(biases, Sequence) or len(biases) != len(weights):
        raise TypeError(f"biases must be None or a list of {len(weights)} tensors (or None entries)")
    checked = []
    for i, (b, w) in enumerate(zip(biases, weights, strict=True)):
        if b is None:
            checked.append(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
            continue
        check_tensor(b, f"biases[{i}]")
        if b.shape != (w.shape[0],):
            raise ValueError(f"biases[{i}] must have shape ({w.shape[0]},), got {tuple(b.shape)}")
        checked.append(b.to(w.device, w.dtype))
    if x is not None:
        _check_finite_tensor(x, "x")
        if x.dim() == 0 or x.shape[-1] != weights[0].shape[1]:
            raise ValueError(f"x must have shape (..., {weights[0].shape[1]}), got {tuple(x.shape)}")
        if x.dtype != weights[0].dtype or x.device != weights[0].device:
            raise TypeError(
                f"x ({x.dtype}, {x.device}) must match the weights ({weights[0].dtype}, {weights[0].device})"
            )
    return weights, checked


def _check_budgets(budgets, weights) -> list[torch.Tensor]:
    if isinstance(budgets, torch.Tensor) or not isinstance(budgets, Sequence) or len(budgets) != len(weights):
        raise TypeError(f"budgets must be a list of {len(weights)} ints or per-row integer tensors, one per layer")
    return [
        check_unit_counts(s, f"budgets[{i}]", torch.Size([w.shape[0]]), w.device)
        for i, (s, w) in enumerate(zip(budgets, weights, strict=True))
    ]


def _row_max(h_inf: torch.Tensor, bound: torch.Tensor, tails: torch.Tensor, row_l1: torch.Tensor) -> torch.Tensor:
    """``max_j (tails_j h_inf + row_l1_j bound)`` for every input: one small matmul and one reduction."""
    return (torch.stack([h_inf, bound], -1) @ torch.stack([tails, row_l1])).amax(-1)


def network_bound(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None] | None,
    x: torch.Tensor,
    budgets: Sequence,
    q: float,
    *,
    lipschitz: float = 1.0,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
) -> NetworkBound:
    """Prune every row of an MLP to its budget and bound the output change on every input [derived: S4].

    Network: ``h^(0) = x``, ``h^(l) = σ(W_l h^(l-1) + b_l)`` for ``l = 1..L``, ``f = V h^(L) + c``, given as
    ``weights = [W_1, ..., W_L, V]`` (``(out, in)`` matrices, ``L >= 0``) and ``biases`` (``None`` entries,
    or ``biases=None``, mean no bias). Row ``j`` of every matrix keeps its ``s_j`` largest magnitudes
    (ties: lower index); ``budgets[l]`` is an int or a per-row integer tensor.

    With ``T_j^(l)`` the pruned ℓ1 mass of row ``j`` (exact ``||W_l[j] - W̃_l[j]||_1`` for the *oracle*
    bound, the Stechkin factor ``||W_l[j]||_q (s_j^(l))^(1-1/q)`` for the *lq* bound) and ``L_σ`` the
    activation's Lipschitz constant, the bound on ``e_l = ||h^(l) - h̃^(l)||_∞`` is, per input,

        E_0 = 0,   E_l = L_σ max_j ( T_j^(l) ||h^(l-1)||_∞ + ||W̃_l[j]||_1 E_{l-1} ),

    and for output ``k``:  ``|f_k - f̃_k| <= T_k^(V) ||h^(L)||_∞ + ||Ṽ[k]||_1 E_L``.
    Proof: ``W h - W̃ h̃ = (W - W̃) h + W̃ (h - h̃)`` and Hölder row by row. Since ``T_oracle <= T_lq``
    (Stechkin) and the recursion is monotone, ``observed <= oracle <= lq`` for every input and output.
    ``||h^(l-1)||_∞`` is the dense network's activation on that input.

    Cost: the dense and the pruned forward pass, one row selection per matrix, and ``O(inputs x width)``
    work per layer for the bounds. ``x``: ``(*B, d_0)``. Returns a :class:`NetworkBound`.
    """
    q = check_exponent(q, "q")
    lip = check_lipschitz(lipschitz)
    if not callable(activation):
        raise TypeError(f"activation must be callable, got {type(activation).__name__}")
    weights, biases = check_network(weights, biases, x)
    budgets = _check_budgets(budgets, weights)
    lead = x.shape[:-1]
    h = x.reshape(-1, x.shape[-1])
    h_pruned = h

    pruned, keeps, tails_oracle, tails_lq, row_l1 = [], [], [], [], []
    for w, s in zip(weights, budgets, strict=True):
        w_s, keep = best_s_term(w, s)
        pruned.append(w_s)
        keeps.append(keep)
        tails_oracle.append((w - w_s).abs().sum(-1))
        tails_lq.append(stechkin_factor_last_dim(w, s, q, 1.0))
        row_l1.append(w_s.abs().sum(-1))

    zeros = h.new_zeros(h.shape[0])
    bound_oracle, bound_lq = zeros, zeros
    observed_layers, oracle_layers, lq_layers = [], [], []
    for layer in range(len(weights) - 1):
        h_inf = h.abs().amax(-1)  # (vector_norm(ord=inf) is far slower on the CPU)
        # max_j (T_j ||h||_∞ + N_j E): an (inputs x 2) @ (2 x rows) product, then a max over rows
        bound_oracle = lip * _row_max(h_inf, bound_oracle, tails_oracle[layer], row_l1[layer])
        bound_lq = lip * _row_max(h_inf, bound_lq, tails_lq[layer], row_l1[layer])
        h = activation(torch.addmm(biases[layer], h, weights[layer].T))
        h_pruned = activation(torch.addmm(biases[layer], h_pruned, pruned[layer].T))
        observed_layers.append((h - h_pruned).abs().amax(-1).reshape(lead))
        oracle_layers.append(bound_oracle.reshape(lead))
        lq_layers.append(bound_lq.reshape(lead))

    h_inf = h.abs().amax(-1)
    out_oracle = torch.stack([h_inf, bound_oracle], -1) @ torch.stack([tails_oracle[-1], row_l1[-1]])
    out_lq = torch.stack([h_inf, bound_lq], -1) @ torch.stack([tails_lq[-1], row_l1[-1]])
    f = torch.addmm(biases[-1], h, weights[-1].T)
    f_pruned = torch.addmm(biases[-1], h_pruned, pruned[-1].T)
    k = weights[-1].shape[0]
    return NetworkBound(
        observed=(f - f_pruned).abs().reshape(*lead, k),
        oracle=out_oracle.reshape(*lead, k),
        lq=out_lq.reshape(*lead, k),
        observed_layers=observed_layers,
        oracle_layers=oracle_layers,
        lq_layers=lq_layers,
        pruned_weights=pruned,
        keep_masks=keeps,
        dense_output=f.reshape(*lead, k),
        pruned_output=f_pruned.reshape(*lead, k),
    )


def mlp_layer_inputs(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None] | None,
    x: torch.Tensor,
    *,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
) -> list[torch.Tensor]:
    """The inputs ``[h^(0) = x, h^(1), ..., h^(L)]`` of every matrix of the MLP ``[W_1, ..., W_L, V]``.

    ``h^(l) = σ(W_l h^(l-1) + b_l)``, as in :func:`network_bound`; ``h^(l-1)`` is what S2 and S3 call the
    neuron's input ``h`` (the dictionary of layer l). ``x``: ``(*B, d_0)``; each result ``(*B, d_l)``.
    """
    weights, biases = check_network(weights, biases, x)
    lead = x.shape[:-1]
    h = x.reshape(-1, x.shape[-1])
    out = [x]
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        h = activation(torch.addmm(b, h, w.T))
        out.append(h.reshape(*lead, h.shape[-1]))
    return out


# --------------------------------------------------------------------------------------------------
# S3 helpers: errors of sparse linear approximations in L2(P), P the empirical distribution of inputs
# --------------------------------------------------------------------------------------------------
def dictionary_constant(h: torch.Tensor) -> torch.Tensor:
    """``C = max_i ||h_i||_{L2(P)} = max_i (mean_x h_i(x)²)^(1/2)`` over the dictionary [paper: GIY Thm 2].

    ``h``: ``(n, d)``, ``n`` samples (rows; P is their empirical distribution) of ``d`` dictionary
    functions (columns), e.g. a layer's inputs. Returns a 0-d tensor. With it,
    ``||Σ_i a_i h_i||_{L2(P)} <= ||a||_1 C`` for every coefficient vector a (triangle inequality).
    """
    check_tensor(h, "h", allow_empty=False)
    if h.dim() != 2:
        raise ValueError(f"h must be (samples, dictionary size), got shape {tuple(h.shape)}")
    return h.pow(2).mean(0).sqrt().amax()


def empirical_l2_error(w: torch.Tensor, w_approx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``||Σ_i (w_i - w̃_i) h_i||_{L2(P)} = (mean_x <w - w̃, h(x)>²)^(1/2)`` for every unit [derived: S3].

    The RMS error, over the samples ``h`` (``(n, d)``), of replacing each unit's ``g = <w, h>`` by
    ``<w̃, h>``. ``w``, ``w_approx``: ``(*W, d)`` (e.g. all rows of a layer); result ``(*W,)``. Pass a
    stack of approximations (``(draws, *W, d)``) to get one error per draw.
    """
    check_tensor(w, "w", allow_empty=False)
    check_tensor(w_approx, "w_approx", allow_empty=False)
    check_tensor(h, "h", allow_empty=False)
    if h.dim() != 2 or h.shape[1] != w.shape[-1] or w_approx.shape[-1] != w.shape[-1]:
        raise ValueError(
            f"shapes do not match: w {tuple(w.shape)}, w_approx {tuple(w_approx.shape)}, h {tuple(h.shape)} "
            "(expected (..., d), (..., d) and (n, d))"
        )
    diff = torch.broadcast_to(w, torch.broadcast_shapes(w.shape, w_approx.shape)) - w_approx
    lead = diff.shape[:-1]
    residual = h @ diff.reshape(-1, diff.shape[-1]).T  # (n, units)
    return residual.pow(2).mean(0).sqrt().reshape(lead)
