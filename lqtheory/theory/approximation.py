"""Sparse approximation of weight vectors: best s-term pruning (S1) and Maurey sampling (S3).

THEORY.md S1: for ``0 < q < p`` the best s-term error obeys Stechkin's inequality
``σ_s(w)_p = ||w - w_s||_p <= s^(1/p - 1/q) ||w||_q`` [derived]; hence the relative ℓ1 tail is at most ε
once ``s >= (||w||_q / (ε ||w||_1))^(q/(1-q))``. S3: keeping the few large entries exactly and sampling
m terms from the rest with probabilities ``|w_i|/D`` gives an unbiased approximation with fewer than 2m
terms and RMS error ``<= C ||w||_q m^(1/2 - 1/q)`` [paper: Gao-Ing-Yang Thm 2; construction derived].

Same conventions as :mod:`lqtheory.theory.norms`: any shape, reduce over ``dim``, optional boolean ``mask``
(True = alive; masked entries are never kept, never sampled and come out as 0), no Python loops over
units, any device. Ties between equal magnitudes go to the lower index on every device.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from lqtheory.common.checks import check_dim, check_exponent, check_mask, check_tensor
from lqtheory.theory.norms import (
    MAX_EXPONENT,
    alive_count,
    as_per_unit,
    count_true,
    in_float32_for_half,
    lq_norm,
    sort_magnitudes,
)
from lqtheory.theory.selection import magnitude_prune

__all__ = [
    "best_s_term",
    "best_s_term_error",
    "stechkin_bound",
    "required_terms",
    "maurey_approximation",
    "MaureyResult",
]


def _prepare(w, dim, mask):
    check_tensor(w, "w")
    check_dim(w, dim)
    mask = check_mask(mask, w)
    if mask is not None:
        w = w.masked_fill(~mask, 0)
    return w, mask


def _term_counts(s, d: torch.Tensor) -> torch.Tensor:
    """``s`` as an int64 per-unit tensor (broadcast to ``d``'s shape), validated ``>= 0``."""
    s = as_per_unit(s, "s", d, integer=True)
    if bool((s < 0).any()):
        raise ValueError(f"s must be >= 0, got a minimum of {int(s.min())}")
    return s


def _positions(w: torch.Tensor, dim: int) -> torch.Tensor:
    """``0, 1, ..., n-1`` along ``dim``, shaped to broadcast against ``w``."""
    shape = [1] * w.dim()
    shape[dim] = w.shape[dim]
    return torch.arange(w.shape[dim], device=w.device).view(shape)


def best_s_term(
    w: torch.Tensor, s, dim: int = -1, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best s-term approximation ``w_s``: keep the s largest ``|w_i|`` of each unit, zero the rest [paper, §1].

    ``s`` is an int or a per-unit integer tensor broadcastable to the reduced shape; it is clipped to the
    unit's alive count ``d`` (so ``s >= d`` keeps every alive entry); negative ``s`` is a ValueError.
    Ties between equal magnitudes go to the lower index, identically on CPU and CUDA (the selection of
    :func:`lqtheory.theory.selection.magnitude_prune`, removing the ``d - s`` smallest). Returns ``(w_s, keep)`` with
    ``w``'s shape: ``keep`` is a boolean tensor with exactly ``min(s, d)`` True entries per unit (kept
    zeros count), masked entries never kept.
    """
    w, mask = _prepare(w, dim, mask)
    dim = dim % w.dim()
    if mask is None:
        d = torch.full(w.shape[:dim] + w.shape[dim + 1 :], w.shape[dim], dtype=torch.long, device=w.device)
    else:
        d = count_true(mask, dim)
    s = _term_counts(s, d)
    keep = magnitude_prune(w, (d - s).clamp_min(0), dim, mask)
    return w.masked_fill(~keep, 0), keep


@in_float32_for_half
def best_s_term_error(
    w: torch.Tensor, s, p: float = 1.0, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact best s-term error ``σ_s(w)_p = ||w - w_s||_p = (Σ_{k>s} |w|_(k)^p)^(1/p)`` [paper, §1].

    ``|w|_(k)`` are the alive magnitudes in decreasing order; ``p > 0`` (``p < 1`` gives the quasi-norm).
    ``s`` as in :func:`best_s_term`; ``s >= d`` gives 0. Computed from the sorted magnitudes scaled by
    the unit's largest one, so it does not underflow for large p.
    """
    p = check_exponent(p, "p", high=MAX_EXPONENT)
    w, mask = _prepare(w, dim, mask)
    d = alive_count(w, dim, mask)
    s = _term_counts(s, d)
    if w.shape[dim] == 0:
        return torch.zeros_like(d)
    magnitudes, _ = sort_magnitudes(w, dim, mask)
    tail = magnitudes.masked_fill(_positions(w, dim) < s.unsqueeze(dim % w.dim()), 0)
    scale = magnitudes.narrow(dim, 0, 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(tail / scale, ord=p, dim=dim) * scale.squeeze(dim)


@in_float32_for_half
def stechkin_bound(
    w: torch.Tensor, s, q: float, p: float = 1.0, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Stechkin's bound ``s^(1/p - 1/q) ||w||_q >= σ_s(w)_p``, for ``0 < q < p`` [derived, S1].

    ``s`` is an int or per-unit integer tensor ``>= 0``; it is not clipped to ``d`` (the bound holds, and
    stays positive, for every s). At ``s = 0`` the rate ``s^(1/p - 1/q)`` would be infinite; we return
    the trivial bound ``||w||_q`` instead (``σ_0(w)_p = ||w||_p <= ||w||_q`` because ``q < p``), i.e. the
    formula evaluated at ``max(s, 1)``. Degenerate units (no alive or all-zero entries) give 0.
    """
    p = check_exponent(p, "p", high=MAX_EXPONENT)
    q = check_exponent(q, "q", high=MAX_EXPONENT)
    if not q < p:
        raise ValueError(f"stechkin_bound needs q < p (0 < q < p), got q={q:g}, p={p:g}")
    norm_q = lq_norm(w, q, dim, mask)
    s = _term_counts(s, norm_q)
    return s.clamp_min(1).to(norm_q.dtype).pow(1.0 / p - 1.0 / q) * norm_q


def required_terms(
    w: torch.Tensor, q: float, eps: float, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Smallest s for which S1 guarantees a relative ℓ1 tail ``σ_s(w)_1 <= ε ||w||_1`` [derived, S1].

    ``s = ceil((||w||_q / (ε ||w||_1))^(q/(1-q)))`` (``= ceil(ε^(-q/(1-q)) m(w))`` with ``m`` the SI-implied
    size), clipped to ``[0, d]`` (keeping all d entries always achieves a zero tail). ``0 < q < 1``,
    ``0 < ε <= 1``. Computed in float64; returns an int64 tensor of the reduced shape. Degenerate units
    need 0 terms (their tail is already 0). The true tail is usually much smaller than the guarantee:
    this is a sufficient count, not the optimal one for the actual w.

    ``eps`` may also be a sequence (or 1-D tensor) of values: the result then has one leading entry per
    value, ``required_terms(w, q, [e1, e2])[i] == required_terms(w, q, ei)``, with the norms computed once.
    """
    q = check_exponent(q, "q", high=1.0, high_inclusive=False)
    several = isinstance(eps, (list, tuple, torch.Tensor)) and not (isinstance(eps, torch.Tensor) and eps.dim() == 0)
    if several:
        values = eps.tolist() if isinstance(eps, torch.Tensor) else list(eps)
        if not values:
            raise ValueError("eps must hold at least one value")
        values = [check_exponent(e, "eps", high=1.0) for e in values]
    else:
        eps = check_exponent(eps, "eps", high=1.0)
    w, mask = _prepare(w, dim, mask)
    w64 = w.double()
    d = alive_count(w64, dim, mask)
    norm_q, norm_1 = lq_norm(w64, q, dim, mask), lq_norm(w64, 1.0, dim, mask)
    if several:  # one leading entry per ε; the norms are computed once
        eps = torch.tensor(values, dtype=torch.float64, device=w.device).view(-1, *([1] * norm_1.dim()))
        d = d.expand(len(values), *d.shape)
    ratio = norm_q / (eps * norm_1)
    terms = torch.ceil(ratio.pow(q / (1.0 - q)))
    terms = torch.where(torch.isnan(terms), torch.zeros_like(terms), torch.minimum(terms, d))
    return terms.long()


class MaureyResult(NamedTuple):
    """Output of :func:`maurey_approximation` (tensors of ``w``'s shape, then of the reduced shape).

    coefficients: head entries of w exactly, plus ``(D/m) · counts · sign(w)`` on the tail.
    head_mask: the deterministic set ``L* = {i : |w_i| > ||w||_q m^(-1/q)}`` (fewer than m per unit).
    counts: how often each tail entry was drawn (int64; sums to m on units with ``D > 0``, else 0).
    n_terms: number of distinct nonzero terms, ``|L*| + #distinct drawn indices`` (< 2m).
    head_size: ``|L*|``.
    tail_mass: ``D = Σ_{i∉L*} |w_i|`` (``<= ||w||_q m^(1-1/q)``).
    bound_factor: ``||w||_q m^(1/2 - 1/q)``; times ``C = max_i ||h_i||_{L2(P)}`` it bounds the RMS error.
    """

    coefficients: torch.Tensor
    head_mask: torch.Tensor
    counts: torch.Tensor
    n_terms: torch.Tensor
    head_size: torch.Tensor
    tail_mass: torch.Tensor
    bound_factor: torch.Tensor


def _generator(generator, seed, device: torch.device) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator(device=device).manual_seed(int(seed))


def maurey_approximation(
    w: torch.Tensor,
    m: int,
    q: float,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> MaureyResult:
    """Maurey's sparse approximation of ``g = Σ_i w_i h_i`` with fewer than 2m terms [paper: GIY Thm 2, S3].

    Keep ``L* = {i : |w_i| > ||w||_q m^(-1/q)}`` exactly; draw m indices i.i.d. from the tail with
    ``P(J = i) = |w_i| / D``, ``D = Σ_{i∉L*}|w_i|``, and put ``(D/m) · #{k : J_k = i} · sign(w_i)`` on each
    drawn i [construction derived]. The coefficients are unbiased (``E coef = w``) and for any dictionary
    with ``C = max_i ||h_i||``, ``E||Σ_i (coef_i - w_i) h_i||² <= D² C² / m <= C² ||w||_q² m^(1-2/q)``.

    Entries within a relative 1e-12 of the threshold count as tail (ties at the threshold are tail by
    definition; the margin keeps rounding from moving them). Batched over units (one ``torch.multinomial``
    call); a unit with ``D = 0`` gets just its head. ``m`` is
    an int ``>= 1``, ``0 < q <= 1``. Randomness: ``generator`` (on ``w``'s device), or ``seed`` (a fresh
    generator; the same seed gives the same draws on the same device), or neither (global RNG).
    """
    q = check_exponent(q, "q")
    if isinstance(m, bool) or not isinstance(m, numbers.Integral):
        raise TypeError(f"m must be an int, got {type(m).__name__}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    m = int(m)
    w, mask = _prepare(w, dim, mask)
    gen = _generator(generator, seed, w.device)

    norm_q = lq_norm(w, q, dim, mask)
    dim = dim % w.dim()
    # |w_i| > ||w||_q m^(-1/q)  <=>  m |w_i|^q > Σ_j |w_j|^q, tested in float64 with a relative margin:
    # entries equal to the threshold (a 1-sparse unit with m = 1, a uniform unit with m = d) belong to
    # the tail, and rounding must not push them into the head, which would break |L*| < m.
    magnitude = w.abs()  # masked entries are 0 here, so they are neither head nor drawn
    powered = magnitude.double().pow(q)
    head = m * powered > powered.sum(dim, keepdim=True) * (1.0 + 1e-12)
    tail = magnitude.masked_fill(head, 0)
    tail_mass = tail.sum(dim)

    # Sample on a (units, n) view; rows without tail mass draw from a dummy uniform row, then discarded.
    tail_rows = tail.movedim(dim, -1)
    rows = tail_rows.reshape(-1, tail_rows.shape[-1])
    counts = torch.zeros(rows.shape, dtype=torch.long, device=w.device)
    has_tail = rows.sum(-1) > 0
    if rows.numel() and bool(has_tail.any()):
        probs = torch.where(has_tail.unsqueeze(-1), rows, torch.ones_like(rows))
        draws = torch.multinomial(probs, m, replacement=True, generator=gen)
        counts.scatter_add_(1, draws, torch.ones_like(draws))
        counts.masked_fill_(~has_tail.unsqueeze(-1), 0)
    counts = counts.reshape(tail_rows.shape).movedim(-1, dim)

    step = (tail_mass / m).unsqueeze(dim)
    coefficients = torch.where(head, w, step * counts.to(w.dtype) * torch.sign(w))
    n_terms = (head | (counts > 0)).sum(dim)
    bound_factor = norm_q * m ** (0.5 - 1.0 / q)
    return MaureyResult(coefficients, head, counts, n_terms, head.sum(dim), tail_mass, bound_factor)
