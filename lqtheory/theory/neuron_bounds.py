"""Pruning error bounds for one neuron (S2) and the Stechkin factor they rest on [derived: S2].

The conventions (best s-term ties, the Stechkin factor's exact refinements) are those of
:mod:`lqtheory.theory.bounds`, the entry point that re-exports these names.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

from collections.abc import Callable

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
from lqtheory.theory.norms import in_float32_for_half

__all__ = [
    "neuron_pruning_bound",
    "neuron_oracle_bound",
    "neuron_pruning_deviation",
    "stechkin_factor",
    "check_lipschitz",
    "stechkin_factor_last_dim",
]

_NORMS = ("inf", "l2")


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------
def _check_norm(norm) -> str:
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return norm


def check_lipschitz(lipschitz) -> float:
    return check_nonnegative(lipschitz, "lipschitz")


def stechkin_factor_last_dim(w: torch.Tensor, s: torch.Tensor, q: float, p: float) -> torch.Tensor:
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
    (see :mod:`lqtheory.theory.bounds`): 0 when ``s >= ||w||_0`` over the alive entries, and ``||w||_q`` at
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
    return stechkin_factor_last_dim(w, s, q, float(p))


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
    return w2, h2, s2, m2, lead_w, lead_h, check_lipschitz(lipschitz)


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
    (with the Stechkin-factor conventions of :mod:`lqtheory.theory.bounds`: 0 when nothing nonzero is pruned).

    Shapes: ``w`` is ``(*W, d)`` (every unit along ``dim``, e.g. a layer's rows), ``h`` is ``(*H, d)``
    (every input), ``s`` an int or a tensor broadcastable to ``W``; the result is ``(*H, *W)``, i.e.
    ``(inputs, neurons)`` for a weight matrix and a batch of inputs. ``mask`` (shape of ``w``) excludes
    already-pruned entries from both ``w`` and the count.
    """
    q = check_exponent(q, "q")
    norm = _check_norm(norm)
    w2, h2, s2, m2, lead_w, lead_h, lip = _validate_neuron_args(w, h, s, dim, mask, lipschitz)
    w_alive = w2 if m2 is None else w2.masked_fill(~m2, 0)
    factor = stechkin_factor_last_dim(w_alive, s2, q, 1.0 if norm == "inf" else 2.0)
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
