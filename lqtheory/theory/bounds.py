"""Pruning error bounds for one neuron (S2) and a deep ReLU network (S4), and bound-optimal budgets (S7).

All three statements are **[derived]** (THEORY.md S2, S4, S7): they follow from Hölder's inequality,
the Lipschitz property of the activation and Stechkin's inequality
``σ_s(w)_1 = ||w - w_s||_1 <= ||w||_q s^(1-1/q)`` (``0 < q <= 1``); S7 is not in the paper.

Conventions shared by every routine here:

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

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lqtheory.common.checks import (
    check_dim,
    check_exponent,
    check_mask,
    check_nonnegative,
    check_tensor,
    check_unit_counts,
)
from lqtheory.theory.approximation import best_s_term
from lqtheory.theory.norms import in_float32_for_half, lq_norm

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

_NORMS = ("inf", "l2")


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------
def _check_norm(norm) -> str:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return norm


def _check_lipschitz(lipschitz) -> float:
    return check_nonnegative(lipschitz, "lipschitz")


def _stechkin_last(w: torch.Tensor, s: torch.Tensor, q: float, p: float) -> torch.Tensor:
    """Unchecked core of :func:`stechkin_factor` along the last dim (masked entries already zeroed)."""
    if w.requires_grad:  # vector_norm keeps gradients finite at zero entries
        norm_q = torch.linalg.vector_norm(w, ord=q, dim=-1)
    else:  # the same sum, several times faster than vector_norm's generic kernel
        norm_q = w.abs().pow(q).sum(-1).pow(1.0 / q)
    nonzero = (w != 0).sum(-1)
    factor = norm_q * s.clamp_min(1).to(w.dtype).pow(1.0 / p - 1.0 / q)
    return torch.where(s >= nonzero, torch.zeros_like(factor), factor)


@in_float32_for_half
def stechkin_factor(
    w: torch.Tensor, s, q: float, *, p: float = 1.0, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Stechkin's bound on the best s-term error, ``σ_s(w)_p <= ||w||_q s^(1/p - 1/q)`` [derived: S1].

    ``p`` is 1 (ℓ1 tail, used by the ∞-norm bounds) or 2 (ℓ2 tail), ``0 < q <= 1``. Exact refinements
    (see the module docstring): 0 when ``s >= ||w||_0`` over the alive entries, and ``||w||_q`` at
    ``s = 0``. ``s``: an int or a per-unit integer tensor. Shape: ``w`` reduced over ``dim``.
    """
    check_tensor(w, "w")
    check_dim(w, dim, "w")
    q = check_exponent(q, "q")
    if p not in (1.0, 2.0):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    mask = check_mask(mask, w)
    w = w if mask is None else w.masked_fill(~mask, 0)
    w = w.movedim(dim, -1)
    s = check_unit_counts(s, "s", w.shape[:-1], w.device)
    return _stechkin_last(w, s, q, float(p))


def _flat_units(w: torch.Tensor, dim: int, mask):
    """Move ``dim`` last and flatten the leading dims: (units, d), the leading shape, the mask likewise."""
    lead = w.movedim(dim, -1).shape[:-1]
    w2 = w.movedim(dim, -1).reshape(-1, w.shape[dim])
    m2 = None if mask is None else mask.movedim(dim, -1).reshape(-1, w.shape[dim])
    return w2, lead, m2


def _flat_inputs(h: torch.Tensor, dim: int, d: int):
    check_tensor(h, "h")
    check_dim(h, dim, "h")
    if h.shape[dim] != d:
        raise ValueError(f"h has {h.shape[dim]} features along dim={dim} but w has {d}")
    lead = h.movedim(dim, -1).shape[:-1]
    return h.movedim(dim, -1).reshape(-1, d), lead


def _outer(per_input: torch.Tensor, per_unit: torch.Tensor, lead_h, lead_w) -> torch.Tensor:
    return (per_input[:, None] * per_unit[None, :]).reshape(tuple(lead_h) + tuple(lead_w))


def _validate_neuron_args(w, h, s, dim, mask, lipschitz):
    check_tensor(w, "w")
    check_dim(w, dim, "w")
    mask = check_mask(mask, w)
    w2, lead_w, m2 = _flat_units(w, dim, mask)
    h2, lead_h = _flat_inputs(h, dim, w.shape[dim])
    if h2.dtype != w2.dtype or h2.device != w2.device:
        raise TypeError(f"h ({h2.dtype}, {h2.device}) must match w ({w2.dtype}, {w2.device})")
    s2 = check_unit_counts(s, "s", lead_w, w.device).reshape(-1)
    return w2, h2, s2, m2, lead_w, lead_h, _check_lipschitz(lipschitz)


# --------------------------------------------------------------------------------------------------
# S2: one neuron
# --------------------------------------------------------------------------------------------------
def neuron_pruning_bound(
    w: torch.Tensor,
    h: torch.Tensor,
    s,
    q: float,
    *,
    norm: str = "inf",
    lipschitz: float = 1.0,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """S2 lq bound on the change of ``σ(<w,h> + b)`` when ``w`` is pruned to ``w_s`` [derived: S2].

    ``norm="inf"``: ``L_σ ||h||_∞ ||w||_q s^(1-1/q)``; ``norm="l2"``: ``L_σ ||h||_2 ||w||_q s^(1/2-1/q)``
    (with the Stechkin-factor conventions of the module docstring: 0 when nothing nonzero is pruned).

    Shapes: ``w`` is ``(*W, d)`` (every unit along ``dim``, e.g. a layer's rows), ``h`` is ``(*H, d)``
    (every input), ``s`` an int or a tensor broadcastable to ``W``; the result is ``(*H, *W)``, i.e.
    ``(inputs, neurons)`` for a weight matrix and a batch of inputs. ``mask`` (shape of ``w``) excludes
    already-pruned entries from both ``w`` and the count.
    """
    q = check_exponent(q, "q")
    norm = _check_norm(norm)
    w2, h2, s2, m2, lead_w, lead_h, lip = _validate_neuron_args(w, h, s, dim, mask, lipschitz)
    w_alive = w2 if m2 is None else w2.masked_fill(~m2, 0)
    factor = _stechkin_last(w_alive, s2, q, 1.0 if norm == "inf" else 2.0)
    h_norm = h2.abs().amax(-1) if norm == "inf" else torch.linalg.vector_norm(h2, dim=-1)
    return lip * _outer(h_norm, factor, lead_h, lead_w)


def neuron_oracle_bound(
    w: torch.Tensor,
    h: torch.Tensor,
    s,
    *,
    norm: str = "inf",
    lipschitz: float = 1.0,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """S2 oracle bound ``L_σ ||w - w_s||_1 ||h||_∞`` (``norm="inf"``) or ``L_σ ||w - w_s||_2 ||h||_2``.

    Hölder's inequality with the exact pruned tail instead of its Stechkin bound [derived: S2], so
    ``observed <= oracle <= neuron_pruning_bound`` for every neuron and input. Shapes as in
    :func:`neuron_pruning_bound`.
    """
    norm = _check_norm(norm)
    w2, h2, s2, m2, lead_w, lead_h, lip = _validate_neuron_args(w, h, s, dim, mask, lipschitz)
    w_alive = w2 if m2 is None else w2.masked_fill(~m2, 0)
    w_s, _ = best_s_term(w_alive, s2, mask=m2)
    tail = w_alive - w_s
    if norm == "inf":
        tail_norm, h_norm = tail.abs().sum(-1), h2.abs().amax(-1)
    else:
        tail_norm, h_norm = torch.linalg.vector_norm(tail, dim=-1), torch.linalg.vector_norm(h2, dim=-1)
    return lip * _outer(h_norm, tail_norm, lead_h, lead_w)


def neuron_pruning_deviation(
    w: torch.Tensor,
    b,
    h: torch.Tensor,
    s,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
    *,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Observed change ``|σ(<w,h> + b) - σ(<w_s,h> + b)|`` of every neuron on every input [derived: S2].

    ``w_s`` keeps the ``s`` largest alive magnitudes of each unit (ties: lower index). ``b`` is ``None``
    (no bias), a number, or a tensor broadcastable to ``W``. Shapes as in :func:`neuron_pruning_bound`:
    the result is ``(*H, *W)``.
    """
    if not callable(activation):
        raise TypeError(f"activation must be callable, got {type(activation).__name__}")
    w2, h2, s2, m2, lead_w, lead_h, _ = _validate_neuron_args(w, h, s, dim, mask, 1.0)
    w_alive = w2 if m2 is None else w2.masked_fill(~m2, 0)
    w_s, _ = best_s_term(w_alive, s2, mask=m2)
    if b is None:
        bias = torch.zeros(w2.shape[0], dtype=w2.dtype, device=w2.device)
    elif isinstance(b, torch.Tensor):
        check_tensor(b, "b")
        try:
            bias = torch.broadcast_to(b.to(w2.device, w2.dtype), lead_w).reshape(-1)
        except RuntimeError as err:
            raise ValueError(f"b of shape {tuple(b.shape)} does not broadcast to {tuple(lead_w)}") from err
    elif isinstance(b, (int, float)) and not isinstance(b, bool):
        bias = torch.full((w2.shape[0],), float(b), dtype=w2.dtype, device=w2.device)
    else:
        raise TypeError(f"b must be None, a number or a tensor, got {type(b).__name__}")
    dense = activation(h2 @ w_alive.T + bias)
    pruned = activation(h2 @ w_s.T + bias)
    return (dense - pruned).abs().reshape(tuple(lead_h) + tuple(lead_w))


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


def _check_network(weights, biases, x=None):
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
    lip = _check_lipschitz(lipschitz)
    if not callable(activation):
        raise TypeError(f"activation must be callable, got {type(activation).__name__}")
    weights, biases = _check_network(weights, biases, x)
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
        tails_lq.append(_stechkin_last(w, s, q, 1.0))
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
    weights, biases = _check_network(weights, biases, x)
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


# --------------------------------------------------------------------------------------------------
# S7: budget allocation
# --------------------------------------------------------------------------------------------------
def s4_coefficients(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    q: float,
    lipschitz: float = 1.0,
    *,
    biases: Sequence[torch.Tensor | None] | None = None,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
) -> list[torch.Tensor]:
    """Per-neuron coefficients ``c_j`` of a separable form of the S4 bound, one tensor per layer [derived: S7].

    Keep the S4 argument but track the error of every neuron instead of its maximum:
    ``δ^(l) = |h^(l) - h̃^(l)|`` (a vector) obeys ``δ^(l) <= L_σ (T^(l) ||h^(l-1)||_∞ + |W_l| δ^(l-1))``,
    using ``|W̃_l| <= |W_l|`` entrywise so nothing depends on the budgets. Unrolled, with
    ``A^(l) = |V| (L_σ|W_L|) ... (L_σ|W_{l+1}|)`` (``A^(L+1) = I``) the ℓ1 path weights from layer l to the
    outputs and ``a_l = max_x ||h^(l)(x)||_∞`` over the given inputs:

        Σ_k |f_k - f̃_k|  <=  Σ_l Σ_j c_j^(l) (s_j^(l))^(1-1/q)   for every input in x, with
        c_j^(l) = L_σ a_{l-1} ||W_l[j]||_q Σ_k A^(l)_{kj}      (hidden layers l = 1..L),
        c_k^(V) = a_L ||V[k]||_q                                  (output rows).

    This is the objective :func:`allocate_budgets` minimises (with the Stechkin-factor conventions of
    the module docstring the bound holds with each ``s^(1-1/q)`` term replaced by :func:`stechkin_factor`).
    ``biases`` must be given if the network has biases: the activations ``a_l`` depend on them.
    Returns ``[c^(1), ..., c^(L), c^(V)]``, shaped like the rows of each weight matrix.
    """
    q = check_exponent(q, "q")
    lip = _check_lipschitz(lipschitz)
    weights, biases = _check_network(weights, biases, x)
    h = x.reshape(-1, x.shape[-1])
    if h.shape[0] == 0:
        raise ValueError("x holds no inputs")
    act_max = []
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        act_max.append(h.abs().amax())
        h = activation(torch.addmm(b, h, w.T))
    act_max.append(h.abs().amax())
    # downstream[l]: column sums of A^(l+1) (path weights from layer l's outputs), built back to front
    downstream = [weights[-1].abs().sum(0)]
    for w in reversed(weights[1:-1]):
        downstream.append(lip * (downstream[-1] @ w.abs()))
    downstream.reverse()  # downstream[l] belongs to hidden layer l (0-based)
    coefficients = [lip * act_max[layer] * lq_norm(w, q) * downstream[layer] for layer, w in enumerate(weights[:-1])]
    coefficients.append(act_max[-1] * lq_norm(weights[-1], q))
    return coefficients


def s4_objective(coefficients, budgets, q: float) -> torch.Tensor:
    """The continuous S7 objective ``Σ_j c_j s_j^(1-1/q)`` (a 0-d tensor) [derived: S7].

    ``coefficients`` and ``budgets`` are tensors of one shape, or equally long lists of them (as returned
    by :func:`s4_coefficients` / :func:`allocate_budgets`); budgets may be real-valued and must be > 0
    where the coefficient is > 0.
    """
    q = check_exponent(q, "q")
    c, shapes = _flatten_coefficients(coefficients)
    flat, kind = _flatten_bound(budgets, c, "budgets")
    if flat is None:
        raise TypeError("budgets must be given")
    if kind == "per-layer":
        if not isinstance(shapes, list):
            raise TypeError("budgets may be a list only when coefficients is a list of per-layer tensors")
        flat = _per_layer_bound(budgets, flat, shapes, c, "budgets")
    s = flat.double()
    if bool(((s <= 0) & (c > 0)).any()):
        raise ValueError("budgets must be > 0 wherever the coefficient is > 0")
    terms = torch.where(c > 0, c * s.clamp_min(torch.finfo(c.dtype).tiny).pow(1.0 - 1.0 / q), torch.zeros_like(c))
    return terms.sum()


def _flatten_coefficients(coefficients):
    """Coefficients as one flat float64 tensor, plus the shapes to split results back (None for a tensor)."""
    if isinstance(coefficients, torch.Tensor):
        check_tensor(coefficients, "coefficients")
        return coefficients.double().reshape(-1), None
    if not isinstance(coefficients, Sequence) or len(coefficients) == 0:
        raise TypeError("coefficients must be a tensor or a non-empty list of tensors")
    for i, c in enumerate(coefficients):
        check_tensor(c, f"coefficients[{i}]")
    device = coefficients[0].device
    flat = torch.cat([c.double().reshape(-1).to(device) for c in coefficients])
    return flat, [c.shape for c in coefficients]


def _flatten_bound(value, c: torch.Tensor, name: str):
    """An int, None, a tensor or a list of tensors matching the coefficients, as a flat tensor (or None)."""
    if value is None:
        return None, None
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be numeric, got dtype {value.dtype}")
        flat = value.to(c.device).reshape(-1) if value.numel() == c.numel() else value.to(c.device)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        flat = (
            torch.full_like(c, float(value))
            if isinstance(value, float)
            else torch.full(c.shape, value, dtype=torch.long, device=c.device)
        )
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        parts = []
        for i, v in enumerate(value):
            if isinstance(v, torch.Tensor):
                parts.append(v.to(c.device).reshape(-1))
            elif isinstance(v, int) and not isinstance(v, bool):
                parts.append(None)  # an int per layer: broadcast once the layer sizes are known
            else:
                raise TypeError(f"{name}[{i}] must be an int or a tensor, got {type(v).__name__}")
        return parts, "per-layer"
    else:
        raise TypeError(f"{name} must be None, an int, a tensor or a list of tensors, got {type(value).__name__}")
    try:
        flat = torch.broadcast_to(flat, c.shape)
    except RuntimeError as err:
        raise ValueError(f"{name} of shape {tuple(value.shape)} does not match the coefficients") from err
    return flat, None


def _per_layer_bound(value, parts, shapes, c, name):
    """Assemble a list-of-layers bound (ints or tensors) into one flat tensor aligned with ``c``."""
    if len(value) != len(shapes):
        raise ValueError(f"{name} has {len(value)} entries but coefficients has {len(shapes)} layers")
    pieces = []
    for v, part, shape in zip(value, parts, shapes, strict=True):
        n = int(torch.Size(shape).numel())
        if part is None:
            pieces.append(torch.full((n,), v, dtype=torch.long, device=c.device))
        else:
            if part.numel() not in (1, n):
                raise ValueError(f"{name} entry of {part.numel()} values does not match a layer of {n} units")
            pieces.append(torch.broadcast_to(part, (n,)))
    dtypes = {p.dtype for p in pieces}
    if any(dt.is_floating_point for dt in dtypes):
        pieces = [p.double() for p in pieces]
    return torch.cat(pieces)


def _as_int_bound(value: torch.Tensor, name: str) -> torch.Tensor:
    if value.is_floating_point():
        if not bool(torch.isfinite(value).all()) or not bool((value == value.round()).all()):
            raise ValueError(f"{name} must hold finite whole numbers")
    return value.long()


def _clipped_sum(t: float, weight: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> float:
    """``Σ_j clip(t w_j, l_j, u_j)``: one bisection step, over all units at once."""
    return float(torch.minimum(torch.maximum(t * weight, lower), upper).sum())


def _waterfill(weight: torch.Tensor, total: float, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Solve ``Σ_j clip(t w_j, l_j, u_j) = total`` for ``t >= 0`` (float64, ``w >= 0``, total feasible).

    The sum is continuous and non-decreasing in t: bisection on t over all units at once, then the exact
    ``t`` for the active set it identifies (so the result sums to ``total`` up to rounding).
    """
    positive = weight > 0
    if not bool(positive.any()):
        return lower.clone()
    # t large enough that every positive-weight unit sits at its upper bound (or is as large as needed)
    finite_upper = torch.where(torch.isfinite(upper), upper, torch.full_like(upper, total))
    hi = float((finite_upper[positive] / weight[positive]).max()) * 2.0 + 1.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _clipped_sum(mid, weight, lower, upper) < total:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    t = 0.5 * (lo + hi)
    s = torch.minimum(torch.maximum(t * weight, lower), upper)
    free = positive & (t * weight > lower) & (t * weight < upper)
    if bool(free.any()):
        fixed_sum = s[~free].sum()
        t_exact = (total - fixed_sum) / weight[free].sum()
        s_free = torch.minimum(torch.maximum(t_exact * weight, lower), upper)
        s = torch.where(free, s_free, s)
    return s


def _continuous_budgets(c: torch.Tensor, total: int, q: float, low: torch.Tensor, up) -> torch.Tensor:
    """The continuous optimum of :func:`allocate_budgets` (float64) on the integer box ``[low, up]``."""
    low_f = low.double()
    up_f = torch.full_like(c, float("inf")) if up is None else up.double()
    weight = c.pow(q)  # s_j ∝ c_j^q away from the box
    s = _waterfill(weight, float(total), low_f, up_f)
    remaining = float(total) - float(s.sum())
    zero = weight == 0
    if remaining > 0.5 and bool(zero.any()):
        # positive-weight units are all at their upper bounds: spread the rest over the indifferent units
        s_zero = _waterfill(zero.double(), float(s[zero].sum()) + remaining, low_f * zero, up_f.masked_fill(~zero, 0))
        s = torch.where(zero, s_zero, s)
    return torch.minimum(torch.maximum(s, low_f), up_f)


def allocate_budgets(
    coefficients,
    total: int,
    q: float,
    lower=1,
    upper=None,
    *,
    integer: bool = True,
    rounding: str = "optimal",
):
    """Budgets minimising ``Σ_j c_j s_j^(1-1/q)`` s.t. ``Σ_j s_j = total``, ``lower <= s <= upper`` [derived: S7].

    Continuous relaxation: for ``0 < q < 1`` the objective is convex and decreasing in each ``s_j``, and
    the KKT conditions give ``s_j = clip(t c_j^q, lower_j, upper_j)`` with one multiplier ``t`` chosen so
    the budgets sum to ``total`` (water-filling; found by bisection over all units at once). At ``q = 1``
    the objective does not depend on ``s``; the same ``s ∝ c`` rule (its limit) is used. Units with
    ``c_j = 0`` stay at ``lower`` unless the others are all at ``upper``; the excess is then spread over
    them uniformly (water-filling with equal weights), since the objective cannot tell them apart.

    Integer budgets (``integer=True``, the default) always sum to ``total`` exactly and stay in the box.
    ``rounding="optimal"`` (default) returns the exact integer minimiser: the objective is separable and
    convex, so the best allocation takes the ``total - Σ lower`` largest marginal gains
    ``c_j ((k-1)^(1-1/q) - k^(1-1/q))`` over all units (greedy is exact); it is found by a threshold
    bisection started from the continuous optimum (some integer optimum lies at or above
    ``floor(s_cont)``: those increments all gain at least the relaxation's multiplier), with no loop
    over units; ties go to the lower index. It is therefore never
    worse than any other feasible integer allocation, uniform budgets included.
    ``rounding="largest-remainder"``: floors of the continuous optimum plus one for the largest fractional
    parts (each unit moves by less than 1; can lose to uniform budgets when budgets are tiny).
    At ``q = 1`` (flat objective) largest remainders are used. ``integer=False`` returns the continuous
    optimum in float64.

    ``coefficients``: a tensor of ``c_j >= 0`` (any shape), or a list of per-layer tensors (as from
    :func:`s4_coefficients`), in which case the result is a list of the same shapes. ``lower``/``upper``:
    ints, tensors of the coefficients' shape, or per-layer lists of ints/tensors; ``upper=None`` means no
    upper bound (pass the row lengths ``d_j`` to forbid budgets beyond a row). ``total`` must satisfy
    ``Σ lower <= total <= Σ upper``, else ValueError.
    """
    q = check_exponent(q, "q")
    if not isinstance(integer, bool):
        raise TypeError(f"integer must be a bool, got {type(integer).__name__}")
    if rounding not in ("optimal", "largest-remainder"):
        raise ValueError(f"rounding must be 'optimal' or 'largest-remainder', got {rounding!r}")
    c, shapes = _flatten_coefficients(coefficients)
    if bool((c < 0).any()):
        raise ValueError("coefficients must be >= 0")
    if isinstance(total, bool) or not isinstance(total, int):
        if isinstance(total, torch.Tensor) and total.numel() == 1 and not total.is_floating_point():
            total = int(total)
        else:
            raise TypeError(f"total must be an int, got {type(total).__name__}")

    bounds = {}
    for name, value in (("lower", lower), ("upper", upper)):
        flat, kind = _flatten_bound(value, c, name)
        if kind == "per-layer":
            if not isinstance(shapes, list):
                raise TypeError(f"{name} may be a list only when coefficients is a list of per-layer tensors")
            flat = _per_layer_bound(value, flat, shapes, c, name)
        bounds[name] = None if flat is None else _as_int_bound(flat, name)
    low = bounds["lower"]
    if low is None:
        raise TypeError("lower must be an int, a tensor or a list, not None")
    if bool((low < 0).any()):
        raise ValueError("lower must be >= 0")
    up = bounds["upper"]
    if up is not None and bool((up < low).any()):
        raise ValueError("upper must be >= lower for every unit")
    if total < int(low.sum()):
        raise ValueError(f"total={total} is infeasible: below the sum of the lower bounds, {int(low.sum())}")
    if up is not None and total > int(up.sum()):
        raise ValueError(f"total={total} is infeasible: above the sum of the upper bounds, {int(up.sum())}")

    s = _continuous_budgets(c, total, q, low, up)

    if integer:
        if rounding == "largest-remainder" or q == 1.0:  # at q = 1 every allocation is optimal
            s = _round_keep_total(s, total, low, up)
        else:
            # A positive unit left at 0 weights makes the objective infinite (c s^(1-1/q) at s = 0). When
            # the total lets every positive unit have one weight, every optimum gives each one at least
            # one, so solve on that box: the continuous start must be that box's optimum.
            one = torch.ones_like(low) if up is None else up.clamp_max(1)
            low_finite = torch.where(c > 0, torch.maximum(low, one), low)
            if not torch.equal(low_finite, low) and int(low_finite.sum()) <= total:
                low, s = low_finite, _continuous_budgets(c, total, q, low_finite, up)
            s = _integer_optimum(c, s, total, low, up, 1.0 / q - 1.0)
    if shapes is None:
        return s.reshape(coefficients.shape)
    sizes = [int(torch.Size(shape).numel()) for shape in shapes]
    return [part.reshape(shape) for part, shape in zip(torch.split(s, sizes), shapes, strict=True)]


def uniform_budgets(row_lengths, total: int, lower=1):
    """The same kept fraction in every row: ``s_j ∝ d_j`` with ``Σ_j s_j = total`` and ``lower <= s_j <= d_j``.

    The baseline S7 compares against ("uniform sparsity"): continuous ``s_j = t d_j`` clipped to the box
    (water-filling), then largest-remainder rounding (ties: lower index), so the total is exact.
    ``row_lengths``: an integer tensor of ``d_j >= 0``, or a list of them / of ints per layer (as
    ``[w.shape[1]] * rows``); the result has the same structure (LongTensors). ``lower``: an int or a
    matching tensor/list. ``Σ lower <= total <= Σ d`` or ValueError.
    """
    if isinstance(row_lengths, torch.Tensor):
        parts, is_list = [row_lengths], False
    elif isinstance(row_lengths, Sequence) and not isinstance(row_lengths, (str, bytes)) and len(row_lengths):
        parts, is_list = list(row_lengths), True
    else:
        raise TypeError("row_lengths must be an integer tensor or a non-empty list of them")
    as_tensors = []
    for i, part in enumerate(parts):
        if not isinstance(part, torch.Tensor) or part.is_floating_point() or part.dtype == torch.bool:
            raise TypeError(f"row_lengths[{i}] must be an integer tensor, got {type(part).__name__}")
        if bool((part < 0).any()):
            raise ValueError("row_lengths must be >= 0")
        as_tensors.append(part.double())
    coefficients = as_tensors if is_list else as_tensors[0]
    # s ∝ c^q with q = 1 is s ∝ d; the upper bounds are the row lengths themselves
    upper = parts if is_list else parts[0]
    return allocate_budgets(coefficients, total, 1.0, lower, upper)


def _round_keep_total(s: torch.Tensor, total: int, low: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    """Largest-remainder rounding of a feasible real allocation: exact total, inside the integer box."""
    floor = s.floor().long()
    floor = torch.maximum(floor, low)
    if up is not None:
        floor = torch.minimum(floor, up)
    extra = total - int(floor.sum())
    remainder = s - floor.double()
    room = torch.ones_like(floor, dtype=torch.bool) if up is None else floor < up
    if extra < 0 or extra > int(room.sum()):
        raise RuntimeError(f"internal rounding error: {extra} units left for {int(room.sum())} open slots")
    key = remainder.masked_fill(~room, float("-inf"))
    order = torch.sort(key, descending=True, stable=True).indices  # ties: lower index first
    bump = torch.zeros_like(floor)
    bump[order[:extra]] = 1
    return floor + bump


def _marginal_gain(c: torch.Tensor, k: torch.Tensor, a: float) -> torch.Tensor:
    """``c ((k-1)^(-a) - k^(-a))``: the objective's drop from a unit's k-th weight (``inf`` at k = 1).

    Written as ``c k^(-a) expm1(-a log1p(-1/k))`` to avoid the cancellation of the plain difference.
    """
    kf = k.clamp_min(1).double()
    gain = c * kf.pow(-a) * torch.expm1(-a * torch.log1p(-1.0 / kf))
    return torch.where(k <= 1, torch.full_like(gain, float("inf")), gain)


def _taken(mu: float, c, base, cap, a: float) -> torch.Tensor:
    """Per unit, how many increments above ``base`` (up to ``cap``) have a marginal gain ``>= mu``.

    The gain of increment k lies in ``[-c g'(k), -c g'(k-1)]`` (``g(s) = s^(-a)`` convex), so the last k
    with gain ``>= mu`` is ``floor(k̂)`` or ``floor(k̂) + 1`` with ``k̂ = (a c / mu)^(1/(1+a))``; two exact
    checks each way absorb rounding. O(1) vector operations, no loop over units.
    """
    k_hat = (a * c / mu).pow(1.0 / (1.0 + a))
    k = torch.minimum(k_hat, cap.double() + 1.0).floor().long().clamp_min(1)
    for _ in range(2):
        k = torch.where(_marginal_gain(c, k + 1, a) >= mu, k + 1, k)
    for _ in range(2):
        k = torch.where((k > 1) & (_marginal_gain(c, k, a) < mu), k - 1, k)
    return torch.minimum(torch.maximum(k, base), cap) - base


def _integer_optimum(c, s_cont, total: int, low, up, a: float) -> torch.Tensor:
    """Exact integer minimiser of ``Σ c_j s_j^(-a)`` (``a = 1/q - 1 > 0``) on the box with ``Σ s = total``."""
    positive = c > 0
    result = low.clone()
    if up is not None and bool(positive.any()) and total >= int(up[positive].sum()) + int(low[~positive].sum()):
        # every positive unit is full; the indifferent (c = 0) units share the rest as in the relaxation
        result[positive] = up[positive]
        if bool((~positive).any()):
            rest = total - int(up[positive].sum())
            result[~positive] = _round_keep_total(s_cont[~positive], rest, low[~positive], up[~positive])
        return result
    if not bool(positive.any()):
        return _round_keep_total(s_cont, total, low, up)
    # otherwise the c = 0 units stay at their lower bounds (the relaxation puts them there too)
    c_p, s_p, l_p = c[positive], s_cont[positive], low[positive]
    u_p = None if up is None else up[positive]
    target = total - int(low[~positive].sum())
    base = torch.maximum(s_p.floor().long() - 1, l_p)
    if u_p is not None:
        base = torch.minimum(base, u_p)
    need = target - int(base.sum())
    if need < 0:
        raise RuntimeError("internal error: the continuous optimum exceeds the total")
    if need > 0:
        cap = base + need if u_p is None else torch.minimum(u_p, base + need)
        base = base + _take_top_increments(c_p, base, cap, need, a)
    result[positive] = base
    return result


def _take_top_increments(c, base, cap, need: int, a: float) -> torch.Tensor:
    """Per-unit counts of the ``need`` largest marginal gains above ``base`` (ties: lower index)."""
    room = cap > base
    infinite = room & (base == 0)  # a positive unit going from 0 to 1 weight: infinite gain
    if int(infinite.sum()) >= need:
        # some positive unit must get no weight at all: every allocation has an infinite objective
        order = torch.sort((c * infinite).double(), descending=True, stable=True).indices
        taken = torch.zeros_like(base)
        taken[order[:need]] = 1
        return taken
    # The largest finite gain of each unit: its next increment, or the one after it when the next one
    # is the infinite 0 -> 1 step (gains fall with k, so nothing above ``hi`` stays finite).
    first_finite_k = torch.maximum(base + 1, torch.full_like(base, 2))
    finite_first = torch.where(cap >= first_finite_k, _marginal_gain(c, first_finite_k, a), torch.zeros_like(c))
    last_finite = room & (cap >= 2)
    last = _marginal_gain(c, cap.clamp_min(2), a)
    lo = float(last[last_finite].min())  # <= the need-th largest gain (see _integer_optimum's notes)
    hi = float(finite_first[torch.isfinite(finite_first)].max()) * 2.0 + 1e-300
    if _taken(lo, c, base, cap, a).sum() < need:
        raise RuntimeError("internal error: the lower threshold selects too few increments")
    for _ in range(200):
        if lo > 0 and hi / lo - 1.0 < 1e-14:
            break
        mid = (lo * hi) ** 0.5 if lo > 0 else 0.5 * hi
        count = int(_taken(mid, c, base, cap, a).sum())
        if count == need:
            return _taken(mid, c, base, cap, a)
        if count > need:
            lo = mid
        else:
            hi = mid
    taken = _taken(hi, c, base, cap, a)  # fewer than `need`; the rest lie in the narrow band [lo, hi)
    band = _taken(lo, c, base, cap, a) - taken
    missing = need - int(taken.sum())
    while missing > 0:  # at most a few rounds: the band holds (near-)equal gains
        candidates = band > 0
        gain = torch.where(candidates, _marginal_gain(c, base + taken + 1, a), torch.full_like(c, -1.0))
        order = torch.sort(gain, descending=True, stable=True).indices[: min(missing, int(candidates.sum()))]
        taken[order] += 1
        band[order] -= 1
        missing = need - int(taken.sum())
    return taken
