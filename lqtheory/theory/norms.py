"""Sparsity indices of weight vectors (THEORY.md §1, S5): lq quasi-norms, PQ Index, SI, TSI, Gini.

Every function reduces over ``dim`` of a tensor of any shape, so one call handles all the neurons of a
layer (rows), all the filters of a conv weight (after flattening) or a whole network (a flat vector).
An optional boolean ``mask`` (True = alive) excludes pruned entries; ``d`` is then the alive count of each
unit. Nothing loops over units in Python, and everything runs on whichever device ``w`` lives on.

Degenerate units (documented convention, never NaN): a unit with no alive entries (``d = 0``) or whose
alive entries are all zero carries no evidence of sparsity, so it gets the value of a dense, uniform
vector: PQI 0, SI 1, TSI ``d^(1-1/q)`` (1 when ``d = 0``), Gini 0, tail-mass ratio 0, lq norm 0,
``si_implied_size`` and ``retained_count_bound`` ``d (1+η)^(...)`` (0 when ``d = 0``).
These choices keep the identities ``SI = 1/(1 - I_{q,1})`` and ``TSI = d^(1-1/q) SI`` true everywhere,
and make SAP leave such a unit alone.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

import functools
import numbers
import threading

import torch

from lqtheory.common.checks import (
    check_dim,
    check_exponent,
    check_mask,
    check_nonnegative,
    check_p_less_than_q,
    check_tensor,
)

__all__ = [
    "lq_norm",
    "pq_index",
    "sparsity_index",
    "teacher_sparsity_index",
    "gini_index",
    "tail_mass_ratio",
    "si_implied_size",
    "retained_count_bound",
    "alive_count",
    "sort_magnitudes",
    "index_set",
]

MAX_EXPONENT = 1e6  # p or q above this is surely a mistake, and pow() overflows long before it


def _prepare(w, dim: int, mask, name: str = "w", *, defer_finite: bool = False):
    """Validate and return (w with pruned entries zeroed, mask or None, alive count in w's dtype).

    ``defer_finite=True`` (without a mask) skips the NaN/Inf scan, a full extra pass over ``w``: the
    caller must then run :func:`_check_finite_from` on a per-unit reduction that propagates NaN/Inf.
    With a mask the scan stays up front, since masked entries are zeroed before any reduction sees them.
    """
    if defer_finite and mask is None:
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
        if not w.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {w.dtype}")
    else:
        check_tensor(w, name)
    check_dim(w, dim, name)
    mask = check_mask(mask, w)
    if mask is None:
        d = torch.full_like(w.select(dim, 0), float(w.shape[dim])) if w.shape[dim] else w.sum(dim)
        return w, None, d
    return w.masked_fill(~mask, 0), mask, count_true(mask, dim).to(w.dtype)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def in_float32_for_half(fn):
    """Run ``fn`` on a float32 copy of a float16/bfloat16 ``w`` and cast its result back to ``w``'s dtype.

    In half precision the alive count ``d`` tops out at 65504 (float16), integers above 2048 (float16) or
    256 (bfloat16) are not exact, and sums of many terms lose most of their digits or overflow, so the
    indices came out as 1, inf or NaN. Accumulating in float32 gives the float64 value rounded to
    ``w``'s dtype (a value beyond that dtype's range, such as a huge lq norm, is ``inf`` as it must be).
    """

    @functools.wraps(fn)
    def wrapper(w, *args, **kwargs):
        if isinstance(w, torch.Tensor) and w.dtype in _LOW_PRECISION:
            return fn(w.float(), *args, **kwargs).to(w.dtype)
        return fn(w, *args, **kwargs)

    return wrapper


def count_true(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Number of True entries along ``dim`` (LongTensor): a bool sum with an int64 accumulator runs
    ~2x slower on the CPU than with int32, which is exact for any unit shorter than 2^31 entries."""
    if mask.shape[dim] < 2**31:
        return mask.sum(dim, dtype=torch.int32).long()
    return mask.sum(dim)


def alive_count(w: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``d`` of every unit: the number of alive entries along ``dim`` (in ``w``'s dtype)."""
    return _prepare(w, dim, mask)[2]


def _check_finite_from(reduced: torch.Tensor, w: torch.Tensor, name: str = "w") -> None:
    """Deferred NaN/Inf check: ``reduced`` is a per-unit reduction of ``w`` that is non-finite for every
    unit holding a NaN or Inf (a max, a sum, a q-norm). Only when some value is non-finite is ``w``
    scanned, to raise ``check_tensor``'s error or to accept a legitimate overflow."""
    if reduced.numel() and not bool(torch.isfinite(reduced).all()):
        check_tensor(w, name)


def _max_magnitude(w: torch.Tensor, dim: int) -> torch.Tensor | None:
    """``max_i |w_i|`` of every unit (NaN/Inf propagate), or None for an empty ``dim``.

    ``amax`` and ``amin`` are two vectorised passes without the ``|w|`` temporary that
    ``w.abs().amax()`` writes (a fresh large temporary costs page faults on top of the memory traffic);
    on the CPU ``vector_norm(ord=inf)`` and ``aminmax`` run slower kernels, and ``aminmax`` forks
    threads even for tiny inputs.
    """
    if w.shape[dim] == 0:
        return None
    w = w.detach()
    return torch.maximum(w.amax(dim), -w.amin(dim))


def _safe_low(dtype: torch.dtype) -> float:
    """Below this largest-term size, terms ``eps^2`` times smaller are subnormal or lost (underflow)."""
    info = torch.finfo(dtype)
    return info.tiny / info.eps**2


_BLOCK = 1 << 20  # entries per block of the CPU path of _norm
_SMALL = 1 << 16  # up to this many entries a plain temporary is cheap
_scratch_store = threading.local()


def _scratch(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A CPU buffer of ``numel`` (<= ``_BLOCK``) entries, kept per thread and dtype between calls.

    A fresh multi-MB temporary per call comes back from the OS as new pages (the allocator returns
    large blocks), and their page faults cost more than the arithmetic on them; a kept buffer does not.
    """
    buffers = _scratch_store.__dict__.setdefault("buffers", {})
    buf = buffers.get(dtype)
    if buf is None or buf.numel() < numel:
        buf = buffers[dtype] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def _sum_pow(x: torch.Tensor, q: float, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ|x_i|^q`` along ``dim``; the ``|x|^q`` temporary goes into ``out`` (same numel) when given."""
    t = torch.abs(x) if out is None else torch.abs(x, out=out.view(x.shape))
    return t.sum(dim) if q == 1.0 else t.pow_(q).sum(dim)


def _norm(w: torch.Tensor, q: float, dim: int) -> torch.Tensor:
    """``||w||_q`` along ``dim``, the same value as ``torch.linalg.vector_norm(w, ord=q, dim=dim)``.

    When autograd records ``w``, that fused kernel, whose gradient is finite at zero entries
    (``|w|^q`` has an infinite derivative there for ``q < 1``). Otherwise ``Σ|w_i|^q`` through the
    elementwise kernels: on the CPU ``vector_norm`` runs a generic scalar loop for ``q != 2``, while
    ``pow`` is vectorised and ``pow(0.5)`` is a square root, 4-7x faster for ``q <= 1``. On the CPU a
    ``w`` of more than ``_SMALL`` entries goes by blocks of at most ``_BLOCK`` entries (whole units, or
    slices of one huge unit) through a kept scratch buffer (:func:`_scratch`): a fresh temporary the
    size of ``w`` costs more in page faults than the arithmetic. Overflow and underflow are as with
    ``vector_norm``.
    """
    if q == 2.0 or (torch.is_grad_enabled() and w.requires_grad):
        return torch.linalg.vector_norm(w, ord=q, dim=dim)
    d = w.shape[dim]
    if w.device.type != "cpu" or w.numel() <= _SMALL or d == 0:
        total = _sum_pow(w, q, dim)
    else:
        x = w.movedim(dim, -1)
        lead = x.shape[:-1]
        x = x.reshape(-1, d)  # a view for the usual layout (contiguous, reduced along its last dim)
        if d <= _BLOCK:  # blocks of whole units
            rows = _BLOCK // d
            scratch = _scratch(min(rows, x.shape[0]) * d, w.dtype)
            parts = [
                _sum_pow(x[i : i + rows], q, -1, scratch[: min(rows, x.shape[0] - i) * d])
                for i in range(0, x.shape[0], rows)
            ]
            total = torch.cat(parts) if len(parts) > 1 else parts[0]
        else:  # a few huge units (layer or global scope): partial sums over column slices
            cols = max(1, _BLOCK // x.shape[0])
            scratch = _scratch(x.shape[0] * cols, w.dtype)
            total = x.new_zeros(x.shape[0])
            for j in range(0, d, cols):
                total += _sum_pow(x[:, j : j + cols], q, -1, scratch[: x.shape[0] * min(cols, d - j)])
        total = total.reshape(lead)
    return total if q == 1.0 else total.pow_(1.0 / q)


def _log_norm(w: torch.Tensor, q: float, dim: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``log ||w||_q`` along ``dim`` (``-inf`` for a zero unit), without overflow for small q.

    ``scale`` is :func:`_max_magnitude` of ``w`` (computed here when not given, so that callers taking
    two norms pay for it once). Fast path, taken when no unit is zero and every unit's largest term
    ``max|w_i|^q`` is far from underflow: one pass (:func:`_norm`), no rescaled copy. Otherwise
    (and for units that overflowed) the careful path below. ``||w||_q`` itself can exceed the float
    range for small q and large d (it grows like ``d^(1/q)``) while the ratios we need stay moderate,
    so units that overflowed are recomputed in the log domain in float64.
    """
    if w.shape[dim] == 0:
        return torch.linalg.vector_norm(w, ord=q, dim=dim).log()
    if scale is None:
        scale = _max_magnitude(w, dim)
    largest_term = scale.double().pow(q)
    if bool(((scale > 0) & (largest_term >= _safe_low(w.dtype))).all()):
        norm = _norm(w, q, dim)
        if bool(torch.isfinite(norm).all()):
            return norm.log()
    # Divide by the unit's largest magnitude first: for q > 1, |w_i|^q of small (but normal) entries
    # underflows to 0 (float32, |w| ~ 1e-20, q = 2), which broke scale invariance of the indices.
    # The scale is detached: ||w||_q is 1-homogeneous, so the gradient of the sum is unchanged.
    scale = scale.unsqueeze(dim)
    zero_unit = scale == 0
    # Zero units get -inf without a path through log(0): its infinite derivative times the zero
    # gradient that torch.where sends back would make the indices' gradients NaN.
    scaled = torch.where(zero_unit, torch.ones_like(w), w / torch.where(zero_unit, torch.ones_like(scale), scale))
    zero_unit, scale = zero_unit.squeeze(dim), scale.squeeze(dim)
    log_scale = torch.where(zero_unit, torch.zeros_like(scale), scale).log()
    norm = torch.linalg.vector_norm(scaled, ord=q, dim=dim)
    if bool(torch.isinf(norm).any()):
        log_norm = (scaled.abs().double().pow(q).sum(dim).log() / q).to(w.dtype)
    else:
        log_norm = norm.log()
    return torch.where(zero_unit, torch.full_like(log_norm, float("-inf")), log_norm + log_scale)


def _validated_scale(w: torch.Tensor, dim: int) -> torch.Tensor | None:
    """:func:`_max_magnitude`, which also serves as the deferred NaN/Inf check of ``w``."""
    scale = _max_magnitude(w, dim)
    if scale is not None:
        _check_finite_from(scale, w)
    return scale


@in_float32_for_half
def lq_norm(w: torch.Tensor, q: float, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The lq (quasi-)norm ``||w||_q = (Σ_i |w_i|^q)^(1/q)`` of every unit [paper, §1].

    For ``0 < q < 1`` it is a quasi-norm with ``||w||_q >= ||w||_1``; any finite ``q > 0`` is accepted
    (``q = 2`` is the Euclidean norm used by SAP(1, 2)). Gradients are finite at zero entries (the
    fused ``torch.linalg.vector_norm`` kernel defines them as 0, unlike ``w.abs().pow(q)``).
    A unit with no alive entries has norm 0. The result can overflow to ``inf`` for tiny q and large
    units (it grows like ``d^(1/q)``): use float64, or the ratio indices below, which stay finite.
    """
    q = check_exponent(q, "q", high=MAX_EXPONENT)
    w, _, _ = _prepare(w, dim, mask, defer_finite=True)
    norm = _norm(w, q, dim)
    _check_finite_from(norm, w)  # a NaN/Inf entry makes its unit's norm NaN/Inf
    return norm


@in_float32_for_half
def pq_index(
    w: torch.Tensor, p: float = 0.5, q: float = 1.0, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """PQ Index ``I_{p,q}(w) = 1 - d^(1/q - 1/p) ||w||_p / ||w||_q`` with ``0 < p < q`` [paper: PQI].

    Range ``[0, 1 - d^(1/q - 1/p)]``; larger means sparser. 0 for a uniform vector (and, by convention,
    for units with no alive or no nonzero entries). Values a rounding error below 0 are clamped to 0.
    """
    return 1.0 - torch.exp(_log_one_minus_pq(w, p, q, dim, mask)[0])


def _log_one_minus_pq(w, p, q, dim, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(1 - I_{p,q}(w)), d)``, validated; 0 (I = 0) for degenerate units, <= 0 elsewhere.

    Kept in the log domain because ``1 - I >= d^(1/q - 1/p)`` underflows float32 for small p.
    """
    p = check_exponent(p, "p", high=MAX_EXPONENT)
    q = check_exponent(q, "q", high=MAX_EXPONENT)
    check_p_less_than_q(p, q)
    w, _, d = _prepare(w, dim, mask, defer_finite=True)
    scale = _validated_scale(w, dim)
    return _log_one_minus_pq_from(_log_norm(w, p, dim, scale), _log_norm(w, q, dim, scale), d, p, q), d


def _log_one_minus_pq_from(log_p: torch.Tensor, log_q: torch.Tensor, d: torch.Tensor, p: float, q: float):
    """``log(1 - I_{p,q})`` from ``log ||w||_p``, ``log ||w||_q`` and ``d`` (see :func:`pq_index`)."""
    log_ratio = (1.0 / q - 1.0 / p) * d.clamp_min(1).log() + log_p - log_q
    degenerate = torch.isnan(log_ratio) | (d == 0)  # zero units: -inf - -inf
    # A rounding error above 0 would make I slightly negative: clamp (I >= 0 by Hölder).
    return torch.where(degenerate, torch.zeros_like(log_ratio), log_ratio.clamp_max(0.0))


@in_float32_for_half
def sparsity_index(
    w: torch.Tensor, q: float = 0.5, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Sparsity index ``SI(w) = d^(1/q - 1) ||w||_1 / ||w||_q``, ``0 < q <= 1`` [paper].

    Range ``[1, d^(1/q - 1)]``; larger means sparser; ``SI = 1 / (1 - I_{q,1}(w))``. Degenerate units: 1.
    """
    q = check_exponent(q, "q")
    w, _, d = _prepare(w, dim, mask, defer_finite=True)
    scale = _validated_scale(w, dim)
    return _si_from(_log_norm(w, 1.0, dim, scale), _log_norm(w, q, dim, scale), d, q)


def _si_from(log_1: torch.Tensor, log_q: torch.Tensor, d: torch.Tensor, q: float) -> torch.Tensor:
    """SI from ``log ||w||_1``, ``log ||w||_q`` and ``d`` (see :func:`sparsity_index`)."""
    si = torch.exp((1.0 / q - 1.0) * d.clamp_min(1).log() + log_1 - log_q)
    degenerate = torch.isnan(si) | (d == 0)
    return torch.where(degenerate, torch.ones_like(si), si.clamp_min(1.0))


@in_float32_for_half
def teacher_sparsity_index(
    w: torch.Tensor, q: float = 0.5, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Teacher sparsity index ``TSI(w) = ||w||_1 / ||w||_q``, ``0 < q <= 1`` [paper].

    Range ``[d^(1 - 1/q), 1]``, equal to 1 iff ``w`` is 1-sparse; larger means sparser.
    ``TSI = d^(1 - 1/q) SI``. Degenerate units: ``d^(1 - 1/q)`` (1 when ``d = 0``).
    """
    q = check_exponent(q, "q")
    w, _, d = _prepare(w, dim, mask, defer_finite=True)
    scale = _validated_scale(w, dim)
    return _tsi_from(_log_norm(w, 1.0, dim, scale), _log_norm(w, q, dim, scale), d, q)


def _tsi_from(log_1: torch.Tensor, log_q: torch.Tensor, d: torch.Tensor, q: float) -> torch.Tensor:
    """TSI from ``log ||w||_1``, ``log ||w||_q`` and ``d`` (see :func:`teacher_sparsity_index`)."""
    tsi = torch.exp(log_1 - log_q)
    floor = d.clamp_min(1).pow(1.0 - 1.0 / q)
    return torch.where(torch.isnan(tsi), floor, tsi.clamp(max=1.0))


def index_set(
    w: torch.Tensor, p: float = 0.5, q: float = 1.0, si_q: float = 0.5, dim: int = -1,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``{"pqi": I_{p,q}, "si": SI_{si_q}, "tsi": TSI_{si_q}, "m": m_{si_q} (η = 0)}`` of every unit at once.

    Each value equals the function of its own (:func:`pq_index`, :func:`sparsity_index`,
    :func:`teacher_sparsity_index`, :func:`si_implied_size`), computed from the same formulas; the
    scale and each distinct ``log ||w||_r`` (``r`` in ``{p, q, si_q, 1}``) are computed once, which
    saves about two thirds of the passes over ``w`` when the four are wanted together. ``si_q < 1``.
    Half precision is accumulated in float32, as in the single functions (:func:`in_float32_for_half`).
    """
    if isinstance(w, torch.Tensor) and w.dtype in _LOW_PRECISION:
        return {k: v.to(w.dtype) for k, v in index_set(w.float(), p, q, si_q, dim, mask).items()}
    p = check_exponent(p, "p", high=MAX_EXPONENT)
    q = check_exponent(q, "q", high=MAX_EXPONENT)
    check_p_less_than_q(p, q)
    si_q = check_exponent(si_q, "si_q", high=1.0, high_inclusive=False)
    w, _, d = _prepare(w, dim, mask, defer_finite=True)
    scale = _validated_scale(w, dim)
    logs = {r: _log_norm(w, r, dim, scale) for r in dict.fromkeys((p, q, si_q, 1.0))}
    return {
        "pqi": 1.0 - torch.exp(_log_one_minus_pq_from(logs[p], logs[q], d, p, q)),
        "si": _si_from(logs[1.0], logs[si_q], d, si_q),
        "tsi": _tsi_from(logs[1.0], logs[si_q], d, si_q),
        "m": _size_from(logs[si_q], logs[1.0], d, si_q, torch.zeros_like(d)),
    }


def sort_magnitudes(
    w: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None, descending: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitudes ``|w|`` sorted along ``dim``, and their indices, with a device-independent order.

    Ties go to the lower index first (a stable sort; ``torch.topk`` breaks ties differently on CPU and
    CUDA, which would make masks depend on the device). Masked entries come last in either direction
    and carry the value 0 in the sorted magnitudes.
    """
    check_tensor(w, "w")
    check_dim(w, dim)
    mask = check_mask(mask, w)
    key = w.abs()
    if mask is not None:
        key = key.masked_fill(~mask, float("-inf") if descending else float("inf"))
    values, indices = torch.sort(key, dim=dim, descending=descending, stable=True)
    if mask is not None:
        values = values.masked_fill(torch.isinf(values), 0.0)
    return values, indices


@in_float32_for_half
def gini_index(w: torch.Tensor, dim: int = -1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gini index ``G = Σ_k (2k - N - 1) |w|_(k) / (N Σ_i |w_i|)``, magnitudes sorted ascending [paper].

    ``N = d`` alive entries; range ``[0, 1 - 1/N]``; larger means sparser. Degenerate units: 0.
    Costs one sort along ``dim``.
    """
    w, mask, d = _prepare(w, dim, mask, defer_finite=True)
    magnitudes = w.abs()  # masked entries are 0 here and sort first, with the alive zeros
    total = magnitudes.sum(dim)
    _check_finite_from(total, w)
    ascending = torch.sort(magnitudes, dim=dim).values
    n = magnitudes.shape[dim]
    position_shape = [1] * magnitudes.dim()
    position_shape[dim] = n
    positions = torch.arange(1, n + 1, dtype=w.dtype, device=w.device).view(position_shape)
    # An alive entry at sorted position k has alive rank k - (#masked); zeros contribute nothing anyway.
    n_masked = n - d
    # In place when autograd is off: at 64M entries a second sort-sized temporary costs ~10% of the sort.
    ranked = ascending * positions if ascending.requires_grad else ascending.mul_(positions)
    weighted = ranked.sum(dim) - n_masked * total
    if not bool(torch.isfinite(weighted).all()):  # the sums overflowed (|w| near the dtype's largest value)
        # G is scale-free: divide every unit by its largest magnitude; then the sums stay below n^2
        scale = _max_magnitude(w, dim).detach()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(dim)
        return gini_index(w / scale, dim, mask)
    gini = (2.0 * weighted - (d + 1.0) * total) / (d * total)
    return torch.where((total > 0) & (d > 0), gini, torch.zeros_like(gini))


def as_per_unit(value, name: str, like: torch.Tensor, *, integer: bool) -> torch.Tensor:
    """A scalar or a tensor broadcastable to the reduced shape ``like``."""
    if isinstance(value, torch.Tensor):
        if value.numel() and not bool(torch.isfinite(value.double()).all()):
            raise ValueError(f"{name} contains NaN or Inf entries")
        if integer and value.is_floating_point() and not bool((value == value.round()).all()):
            raise ValueError(f"{name} must hold whole numbers")
        if integer:
            value = value.long()  # whole-valued float tensors are accepted; gather() needs int64 indices
        try:
            value = torch.broadcast_to(value.to(like.device), like.shape)
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the units' shape {tuple(like.shape)}"
            ) from err
        return value
    if integer:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
        return torch.full(like.shape, int(value), dtype=torch.long, device=like.device)
    value = check_nonnegative(value, name)
    return torch.full(like.shape, value, dtype=like.dtype, device=like.device)


@in_float32_for_half
def tail_mass_ratio(
    w: torch.Tensor, r, p: float = 0.5, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Tail-mass ratio ``η_r = Σ_{i∉M_r} |w_i|^p / Σ_{i∈M_r} |w_i|^p``, ``M_r`` the top-r entries [paper].

    ``r >= 1`` is an int or a per-unit integer tensor; ``r >= d`` gives 0. Degenerate units: 0.
    """
    p = check_exponent(p, "p", high=MAX_EXPONENT)
    w, mask, d = _prepare(w, dim, mask)
    r = as_per_unit(r, "r", d, integer=True)
    if bool((r < 1).any()):
        raise ValueError("r must be >= 1 (the top set M_r would be empty)")
    if w.shape[dim] == 0:  # no entries at all: degenerate
        return torch.zeros_like(d)
    magnitudes = sort_magnitudes(w, dim, mask)[0]
    # η is scale-free; dividing by the largest magnitude keeps |w|^p from underflowing for p > 1.
    scale = magnitudes.narrow(dim, 0, 1)
    powered = (magnitudes / torch.where(scale > 0, scale, torch.ones_like(scale))).pow(p)
    cumulative = powered.cumsum(dim)
    last = cumulative.shape[dim] - 1
    dim = dim % w.dim()
    head_index = (r.clamp(max=last + 1) - 1).unsqueeze(dim)
    head = cumulative.gather(dim, head_index).squeeze(dim)
    total = cumulative.select(dim, last)
    eta = (total - head) / head
    return torch.where(head > 0, eta.clamp_min(0.0), torch.zeros_like(eta))


@in_float32_for_half
def si_implied_size(
    w: torch.Tensor, q: float = 0.5, eta=0.0, dim: int = -1, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SI-implied size ``m(w) = (1+η)^(-1/(1-q)) (||w||_q / ||w||_1)^(q/(1-q))``, ``0 < q < 1`` [paper].

    In ``[1, d]`` at ``η = 0``; at ``q = 1/2, η = 0`` it is ``(Σ√|w_i|)² / Σ|w_i|``. Real-valued, not
    rounded. Equals ``(1+η)^(-1/(1-q)) TSI^(-q/(1-q))``, so degenerate units get ``d (1+η)^(-1/(1-q))``.
    Computed in the log domain: TSI itself underflows float32 for small q (``d^(1-1/q)``) while m <= d.
    """
    q = check_exponent(q, "q", high=1.0, high_inclusive=False)
    w, _, d = _prepare(w, dim, mask, defer_finite=True)
    scale = _validated_scale(w, dim)
    eta = as_per_unit(eta, "eta", d, integer=False).to(d.dtype)
    if bool((eta < 0).any()):
        raise ValueError("eta must be >= 0")
    return _size_from(_log_norm(w, q, dim, scale), _log_norm(w, 1.0, dim, scale), d, q, eta)


def _size_from(log_q: torch.Tensor, log_1: torch.Tensor, d: torch.Tensor, q: float, eta) -> torch.Tensor:
    """``m(w)`` from ``log ||w||_q``, ``log ||w||_1``, ``d`` and η (see :func:`si_implied_size`)."""
    # log(||w||_q / ||w||_1) >= 0 for q < 1; NaN for degenerate units, which behave like uniform ones.
    log_ratio = log_q - log_1
    uniform = (1.0 / q - 1.0) * d.clamp_min(1).log()
    log_ratio = torch.where(torch.isnan(log_ratio), uniform, log_ratio.clamp_min(0.0))
    size = (1.0 + eta).pow(-1.0 / (1.0 - q)) * torch.exp(log_ratio * (q / (1.0 - q)))
    return torch.where(d > 0, size, torch.zeros_like(size))


@in_float32_for_half
def retained_count_bound(
    w: torch.Tensor,
    p: float = 0.5,
    q: float = 1.0,
    eta=0.0,
    dim: int = -1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Right-hand side of S5: ``d (1+η)^(-q/(q-p)) (1 - I_{p,q}(w))^(qp/(q-p))`` [paper: PQI Thm 2].

    Every ``r`` whose top-r tail-mass ratio is ``η_r`` satisfies ``r >= `` this value. Real-valued (SAP
    rounds it up). ``eta`` is a number or a per-unit tensor ``>= 0``.
    """
    log_one_minus_index, d = _log_one_minus_pq(w, p, q, dim, mask)
    eta = as_per_unit(eta, "eta", d, integer=False).to(d.dtype)
    if bool((eta < 0).any()):
        raise ValueError("eta must be >= 0")
    q, p = float(q), float(p)
    return d * (1.0 + eta).pow(-q / (q - p)) * torch.exp(log_one_minus_index * (q * p / (q - p)))
