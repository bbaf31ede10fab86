"""Selection primitives (theory room; THEORY.md §1, S5): which entries of each unit a rule keeps.

* :func:`magnitude_prune` — remove the ``n`` smallest-magnitude alive weights of every unit (a threshold
  from a sort, ties settled by index: among equal magnitudes the higher index goes first, identically on
  every device; never ``torch.topk``);
* :func:`sap_prune_counts` — how many alive weights SAP removes from every unit [paper: ICLR 2023 Alg. 1].

Pure batched tensor functions: any leading shape, reduce over ``dim``, an optional boolean ``mask``. The
engine's masks and pruning methods, the approximation routines and the profiler all select through them.
"""

from __future__ import annotations

import math

import torch

from lqtheory.common.checks import (
    check_dim,
    check_exponent,
    check_mask,
    check_p_less_than_q,
    check_real,
    check_tensor,
    check_unit_counts,
)
from lqtheory.theory.norms import MAX_EXPONENT, as_per_unit, count_true, retained_count_bound

__all__ = ["ROUNDING_RTOL", "magnitude_prune", "sap_prune_counts"]

# Products of a decimal rate and an integer count within this many float64 ulps (relative; absolute
# below 1) of an integer are snapped to it before ceil/floor, so that 0.29 * 100 = 28.999999999999996
# counts as 29, the value the decimal rate means. Only the floating-point error of the product itself:
# a value genuinely off an integer by 1e-9 is not moved (see sap_prune_counts for the S5 bound's own
# error estimate).
ROUNDING_RTOL = 8 * torch.finfo(torch.float64).eps



def magnitude_prune(w: torch.Tensor, n_prune, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A new mask that removes the ``n_prune`` smallest-magnitude alive entries of every unit along ``dim``.

    ``n_prune`` is an int or an integer tensor broadcastable to the units' shape (``w`` without ``dim``);
    negative counts raise ``ValueError`` and counts above a unit's alive count ``d`` remove all of it.
    Unit by unit the result keeps exactly the ``max(d - n_prune, 0)`` alive entries of largest ``|w|``
    [paper: magnitude pruning]. Ties: among equal magnitudes the higher index is removed first (the
    lower index is kept), identically on CPU and CUDA, no ``topk``. Entries already masked stay masked.
    Returns a bool tensor shaped like ``w``.

    Cost: the per-unit threshold (the ``k``-th largest alive magnitude) from one ``torch.kthvalue``
    (a selection) when every unit keeps the same count ``k`` — a single unit, as at global scope —
    else from one sort of ``|w|`` along ``dim``; then one comparison pass. Units where entries equal to
    the threshold straddle the cut are settled by index among those entries only.
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    check_tensor(w, "w")
    check_dim(w, dim)
    mask = check_mask(mask, w)
    dim = dim % w.dim()
    units_shape = w.shape[:dim] + w.shape[dim + 1 :]
    if mask is None:
        d = torch.full(units_shape, w.shape[dim], dtype=torch.long, device=w.device)
    else:
        d = count_true(mask, dim)
    counts = check_unit_counts(n_prune, "n_prune", d.shape, w.device)
    if w.dim() == 1:  # a single unit: as one row, so that the per-unit tie handling below can index units
        row_mask = None if mask is None else mask.unsqueeze(0)
        return magnitude_prune(w.unsqueeze(0), counts.reshape(1), -1, row_mask)[0]
    keep_count = d - torch.minimum(counts, d)
    if w.numel() == 0:
        return torch.zeros_like(w, dtype=torch.bool)
    key = w.detach().abs()
    if mask is not None:
        key.masked_fill_(~mask, float("-inf"))  # pruned entries are the smallest and never reach a threshold
    k = keep_count.flatten()[0]
    if bool((keep_count == k).all()):  # one count for all: select, no sort
        k = int(k)
        if k == 0:
            return torch.zeros_like(w, dtype=torch.bool)
        threshold = torch.kthvalue(key, w.shape[dim] - k + 1, dim=dim).values
        keep = key >= threshold.unsqueeze(dim)
        tied = count_true(keep, dim) > keep_count
    else:
        ranked = torch.sort(key, dim=dim, descending=True).values
        kth = ranked.gather(dim, (keep_count - 1).clamp_min(0).unsqueeze(dim)).squeeze(dim)
        threshold = torch.where(keep_count > 0, kth, torch.full_like(kth, float("inf")))
        after = ranked.gather(dim, keep_count.clamp_max(w.shape[dim] - 1).unsqueeze(dim)).squeeze(dim)
        tied = (keep_count > 0) & (keep_count < d) & (after == threshold)
        del ranked
        keep = key >= threshold.unsqueeze(dim)
    # Where entries equal to the threshold continue past the cut, keep only the lowest-index ones of them
    # (a stable sort's order): ranks among the equal entries, from their positions alone.
    if bool(tied.any()):
        units = tied.nonzero(as_tuple=True)
        sub_key = key.movedim(dim, -1)[units]  # (tied units, entries)
        sub_threshold = threshold[units].unsqueeze(-1)
        sub_keep = sub_key > sub_threshold
        at = sub_key == sub_threshold
        row, col = at.nonzero(as_tuple=True)  # row-major: by unit, then by index
        per_row = at.sum(-1)
        rank = torch.arange(row.numel(), device=w.device) - (per_row.cumsum(0) - per_row)[row]
        room = keep_count[units] - sub_keep.sum(-1)
        chosen = rank < room[row]
        sub_keep[row[chosen], col[chosen]] = True
        keep.movedim(dim, -1)[units] = sub_keep
    return keep


def _snap(x: torch.Tensor, rtol=ROUNDING_RTOL) -> torch.Tensor:
    """Snap values within ``rtol`` (relative; absolute below 1; a number or a tensor like ``x``) of an
    integer to that integer."""
    nearest = x.round()
    close = (x - nearest).abs() <= rtol * x.abs().clamp_min(1.0)
    return torch.where(close, nearest, x)


def _bound_rtol(d: torch.Tensor, p: float, q: float) -> torch.Tensor:
    """Relative float64 error bound of ``norms.retained_count_bound`` computed in float64, per unit.

    The bound is ``d exp(e x)`` with ``e = qp/(q-p)`` and ``x = (1/q - 1/p) log d + log||w||_p - log||w||_q``.
    Each log-norm is the log of a sum of ``d`` powers (relative error <= (log2 d + d/2^20 + 4) eps for a
    pairwise sum continued over at most d/2^20 sequential blocks) and a log of magnitude below ~750 + log(d)/p
    (float64 magnitudes lie in [1e-324, 1e308]); ``x``'s absolute error is their sum, and exp turns
    it into a relative error of ``e`` times it. A factor 4 on top covers pow, exp and the products.
    """
    eps = torch.finfo(torch.float64).eps
    e = q * p / (q - p)
    log_d = torch.log(d.clamp_min(1.0))
    summed = torch.log2(d.clamp_min(1.0)) + d / 2.0**20 + 4.0
    magnitude = 2 * 750.0 + log_d * (1.0 / p + 1.0 / q + abs(1.0 / q - 1.0 / p))
    return 4.0 * eps * ((1.0 + e) * (2 * summed + magnitude) + 1.0)




_CHUNK = 1 << 20  # entries converted to float64 at a time by sap_prune_counts


def _retained_count_bound_float64(w, p, q, eta, dim, mask) -> torch.Tensor:
    """``norms.retained_count_bound`` computed in float64, by chunks of whole units.

    A float64 copy of a large ``w`` at once (512 MB at 64M entries) costs more in page faults than the
    arithmetic; chunks of ~1M entries reuse the allocator's memory. Every unit is reduced within one
    chunk, so the values are those of the whole-tensor call. A NaN/Inf raises from the first chunk
    holding it (the norms' deferred check).
    """
    x = w.movedim(dim, -1)
    units_shape, d = x.shape[:-1], x.shape[-1]
    n_units = math.prod(units_shape)
    x = x.reshape(n_units, d)
    m = None if mask is None else mask.movedim(dim, -1).reshape(n_units, d)
    if isinstance(eta, torch.Tensor):  # per unit: broadcast to the units, then chunked with them
        units = torch.empty(units_shape, dtype=torch.float64, device=w.device)
        eta = as_per_unit(eta, "eta", units, integer=False).double().reshape(-1)
    rows = max(1, _CHUNK // max(d, 1))
    parts = [
        retained_count_bound(
            x[i : i + rows].double(),
            p,
            q,
            eta[i : i + rows] if isinstance(eta, torch.Tensor) else eta,
            -1,
            None if m is None else m[i : i + rows],
        )
        for i in range(0, x.shape[0], rows)
    ]
    bound = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=w.device)
    return bound.reshape(units_shape)


def sap_prune_counts(
    w: torch.Tensor,
    p: float = 0.5,
    q: float = 1.0,
    eta=0.0,
    gamma: float = 1.0,
    beta: float = 0.9,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Number of alive weights SAP removes from every unit [paper: ICLR 2023 Algorithm 1].

    ``n = ⌊d · clamp(γ (1 − r/d), 0, β)⌋`` with ``r = ⌈d (1+η)^(−q/(q−p)) (1 − I_{p,q}(w))^(qp/(q−p))⌉``
    (``norms.retained_count_bound``, the S5 bound, rounded up), ``d`` the unit's alive count. Units with
    ``d = 0`` give 0; a uniform or all-zero unit has ``I = 0``, so at ``η = 0`` it gives ``r = d`` and 0.
    Computed in float64 whatever ``w``'s dtype, as ``n = min(⌊γ (d − r)⌋, ⌊β d⌋)`` (equal to the formula
    since ``0 ≤ r ≤ d``). Before the ceil, a bound within its own float64 error (a relative ~1e-12 for
    moderate ``qp/(q−p)``; see ``_bound_rtol``) of an integer is snapped to it, so that a bound that is
    mathematically an integer (``d`` for a uniform unit, 1 for a 1-sparse one) is not rounded up by
    its rounding error; a bound 1e-9 above an integer is rounded up, as it should be. Before the floors,
    ``γ (d − r)`` and ``β d`` within ``ROUNDING_RTOL`` (8 ulps) of an integer are snapped to it, so
    that the decimal rate ``β = 0.29`` of 100 entries gives 29. ``eta`` is a number or a per-unit
    tensor ``≥ 0``; requires ``0 < p < q``, ``γ > 0``, ``0 ≤ β ≤ 1``.
    Returns a LongTensor of the units' shape (``w`` without ``dim``).
    """
    gamma = check_real(gamma, "gamma")
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma:g}")
    beta = check_real(beta, "beta")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta:g}")
    if not isinstance(eta, torch.Tensor):
        eta = check_real(eta, "eta")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta:g}")
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got dtype {w.dtype}")
    check_p_less_than_q(check_exponent(p, "p", high=MAX_EXPONENT), check_exponent(q, "q", high=MAX_EXPONENT))
    dim = check_dim(w, dim) % w.dim()
    mask = check_mask(mask, w)
    bound = _retained_count_bound_float64(w, p, q, eta, dim, mask)
    if mask is None:
        d = torch.full(bound.shape, float(w.shape[dim]), dtype=torch.float64, device=w.device)
    else:
        d = count_true(mask, dim).double()
    r = torch.minimum(torch.ceil(_snap(bound, _bound_rtol(d, float(p), float(q)))), d)
    by_gamma = torch.floor(_snap(gamma * (d - r)))
    by_beta = torch.floor(_snap(beta * d))
    return torch.minimum(by_gamma, by_beta).clamp_min(0).long()
