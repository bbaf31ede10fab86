"""Slow, obviously-correct NumPy float64 oracles for the batched routines of ``lqtheory``.

Each oracle loops over units in Python and evaluates the definition from THEORY.md §1/§2 literally on
the alive entries of one unit (``math.fsum`` for sums, Python's stable ``sorted`` for orderings). They
take torch tensors or NumPy arrays with the same ``dim``/``mask`` conventions as the library and return
float64 NumPy arrays of the reduced shape (or of the input shape where the library returns a tensor
like ``w``). Degenerate units (no alive entries, or all alive entries zero) get the values documented
in ``lqtheory/norms.py``. Nothing here imports ``lqtheory``: the oracles must stay independent.

Other engineers' tests may import them (``from oracles import ...`` under pytest's default rootdir
insertion); ``random_weights`` draws the test distributions used throughout.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = [
    "random_weights",
    "random_mask",
    "units",
    "alive_count",
    "lq_norm",
    "pq_index",
    "sparsity_index",
    "teacher_sparsity_index",
    "gini_index",
    "tail_mass_ratio",
    "si_implied_size",
    "retained_count_bound",
    "sort_order",
    "sort_magnitudes",
    "best_s_term",
    "best_s_term_error",
    "stechkin_bound",
    "required_terms",
    "maurey_head",
    "maurey_expected_sq_error",
]

KINDS = ("normal", "laplace", "student_t", "cauchy", "sparse", "ties", "zeros", "power_law")


# ----------------------------------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------------------------------
def random_weights(kind: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Float64 weights of a given ``shape`` drawn from one of ``KINDS``.

    normal / laplace / student_t (3 d.o.f.) / cauchy: i.i.d. draws (heavy tails for the last two);
    sparse: about 80% exact zeros; ties: entries from {0, ±1, ±2} (many equal magnitudes);
    zeros: all zero; power_law: ``|w|_(k) = k^(-2)`` in random order with random signs.
    """
    shape = tuple(shape)
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "laplace":
        return rng.laplace(size=shape)
    if kind == "student_t":
        return rng.standard_t(3, size=shape)
    if kind == "cauchy":
        return rng.standard_cauchy(shape)
    if kind == "sparse":
        return rng.standard_normal(shape) * (rng.random(shape) < 0.2)
    if kind == "ties":
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "power_law":
        n = shape[-1] if shape else 1
        base = np.arange(1, n + 1, dtype=np.float64) ** -2.0
        out = np.broadcast_to(base, shape).copy()
        out = rng.permuted(out, axis=-1) if out.ndim else out
        return out * rng.choice([-1.0, 1.0], size=shape)
    raise ValueError(f"unknown kind {kind!r}; use one of {KINDS}")


def random_mask(shape, rng: np.random.Generator, keep: float = 0.7) -> np.ndarray:
    """A boolean mask with about ``keep`` alive entries."""
    return rng.random(tuple(shape)) < keep


# ----------------------------------------------------------------------------------------------------
# Unit extraction
# ----------------------------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def units(w, dim: int = -1, mask=None):
    """Split ``w`` into units along ``dim``.

    Returns ``(rows, alive, reduced_shape)``: ``rows`` is a list of float64 1-D arrays (all entries of
    each unit, in index order), ``alive`` the matching list of boolean arrays, ``reduced_shape`` the
    shape of ``w`` with ``dim`` removed (the order of ``rows`` is C order over that shape).
    """
    w = _np(w).astype(np.float64)
    m = np.ones(w.shape, dtype=bool) if mask is None else _np(mask).astype(bool)
    w_last = np.moveaxis(w, dim, -1)
    m_last = np.moveaxis(m, dim, -1)
    reduced = w_last.shape[:-1]
    n = w_last.shape[-1]
    flat_w = w_last.reshape(-1, n)
    flat_m = m_last.reshape(-1, n)
    return [flat_w[i] for i in range(flat_w.shape[0])], [flat_m[i] for i in range(flat_m.shape[0])], reduced


def _per_unit_values(value, reduced, count: int) -> list:
    """A scalar or array broadcast to the reduced shape, as a flat list (C order)."""
    arr = np.broadcast_to(_np(value), reduced)
    return [arr.reshape(-1)[i].item() for i in range(count)] if count else []


def _reduce(fn, w, dim, mask, *per_unit):
    """Apply ``fn(alive_values, *per_unit_args)`` to every unit and reshape to the reduced shape."""
    rows, alive, reduced = units(w, dim, mask)
    args = [_per_unit_values(a, reduced, len(rows)) for a in per_unit]
    out = [fn(row[a], *(arg[i] for arg in args)) for i, (row, a) in enumerate(zip(rows, alive, strict=True))]
    return np.array(out, dtype=np.float64).reshape(reduced)


# ----------------------------------------------------------------------------------------------------
# One-unit definitions (THEORY.md §1)
# ----------------------------------------------------------------------------------------------------
def _norm(v: np.ndarray, q: float) -> float:
    """``(Σ|v_i|^q)^(1/q)`` literally."""
    return math.fsum(abs(float(x)) ** q for x in v) ** (1.0 / q)


def _degenerate(v: np.ndarray) -> bool:
    return len(v) == 0 or not np.any(v != 0)


def _pq(v, p, q):
    if _degenerate(v):
        return 0.0
    d = len(v)
    return 1.0 - d ** (1.0 / q - 1.0 / p) * _norm(v, p) / _norm(v, q)


def _si(v, q):
    if _degenerate(v):
        return 1.0
    d = len(v)
    return d ** (1.0 / q - 1.0) * _norm(v, 1.0) / _norm(v, q)


def _tsi(v, q):
    if _degenerate(v):
        return max(len(v), 1) ** (1.0 - 1.0 / q)
    return _norm(v, 1.0) / _norm(v, q)


def _gini(v):
    if _degenerate(v):
        return 0.0
    a = sorted(abs(float(x)) for x in v)
    n = len(a)
    try:
        return math.fsum((2 * k - n - 1) * a[k - 1] for k in range(1, n + 1)) / (n * math.fsum(a))
    except OverflowError:  # magnitudes near the float64 maximum: the same sums in exact rationals
        exact = [Fraction(x) for x in a]
        return float(sum((2 * k - n - 1) * exact[k - 1] for k in range(1, n + 1)) / (n * sum(exact)))


def _eta(v, r, p):
    if _degenerate(v):
        return 0.0
    a = sorted((abs(float(x)) for x in v), reverse=True)
    head = math.fsum(x**p for x in a[:r])
    tail = math.fsum(x**p for x in a[r:])
    return tail / head


def _implied_size(v, q, eta):
    d = len(v)
    if d == 0:
        return 0.0
    tsi = _tsi(v, q)
    return (1.0 + eta) ** (-1.0 / (1.0 - q)) * tsi ** (-q / (1.0 - q))


def _retained(v, p, q, eta):
    d = len(v)
    return d * (1.0 + eta) ** (-q / (q - p)) * (1.0 - _pq(v, p, q)) ** (q * p / (q - p))


# ----------------------------------------------------------------------------------------------------
# Batched oracles of lqtheory.theory.norms
# ----------------------------------------------------------------------------------------------------
def alive_count(w, dim=-1, mask=None):
    return _reduce(lambda v: float(len(v)), w, dim, mask)


def lq_norm(w, q, dim=-1, mask=None):
    return _reduce(lambda v: _norm(v, q) if len(v) else 0.0, w, dim, mask)


def pq_index(w, p=0.5, q=1.0, dim=-1, mask=None):
    return _reduce(lambda v: _pq(v, p, q), w, dim, mask)


def sparsity_index(w, q=0.5, dim=-1, mask=None):
    return _reduce(lambda v: _si(v, q), w, dim, mask)


def teacher_sparsity_index(w, q=0.5, dim=-1, mask=None):
    return _reduce(lambda v: _tsi(v, q), w, dim, mask)


def gini_index(w, dim=-1, mask=None):
    return _reduce(_gini, w, dim, mask)


def tail_mass_ratio(w, r, p=0.5, dim=-1, mask=None):
    return _reduce(lambda v, r_: _eta(v, int(r_), p), w, dim, mask, r)


def si_implied_size(w, q=0.5, eta=0.0, dim=-1, mask=None):
    return _reduce(lambda v, e: _implied_size(v, q, float(e)), w, dim, mask, eta)


def retained_count_bound(w, p=0.5, q=1.0, eta=0.0, dim=-1, mask=None):
    return _reduce(lambda v, e: _retained(v, p, q, float(e)), w, dim, mask, eta)


def sort_order(row: np.ndarray, alive: np.ndarray) -> list[int]:
    """Indices of one unit by decreasing magnitude, ties to the lower index, masked entries last."""
    n = len(row)
    return sorted(range(n), key=lambda i: (not alive[i], -abs(float(row[i])) if alive[i] else 0.0, i))


def sort_magnitudes(w, dim=-1, mask=None):
    """``(values, indices)`` with the input's shape: descending order of ``lqtheory.theory.norms.sort_magnitudes``."""
    w_np = _np(w).astype(np.float64)
    rows, alive, reduced = units(w_np, dim, mask)
    n = rows[0].shape[0] if rows else np.moveaxis(w_np, dim, -1).shape[-1]
    vals = np.zeros((len(rows), n))
    idx = np.zeros((len(rows), n), dtype=np.int64)
    for u, (row, a) in enumerate(zip(rows, alive, strict=True)):
        order = sort_order(row, a)
        idx[u] = order
        vals[u] = [abs(row[i]) if a[i] else 0.0 for i in order]
    shape = (*reduced, n)
    return np.moveaxis(vals.reshape(shape), -1, dim), np.moveaxis(idx.reshape(shape), -1, dim)


# ----------------------------------------------------------------------------------------------------
# Oracles of lqtheory.theory.approximation (S1, S3)
# ----------------------------------------------------------------------------------------------------
def best_s_term(w, s, dim=-1, mask=None):
    """``(w_s, keep)`` with the input's shape: the ``min(s, d)`` largest alive magnitudes kept."""
    w_np = _np(w).astype(np.float64)
    rows, alive, reduced = units(w_np, dim, mask)
    s_list = _per_unit_values(s, reduced, len(rows))
    n = np.moveaxis(w_np, dim, -1).shape[-1]
    out = np.zeros((len(rows), n))
    keep = np.zeros((len(rows), n), dtype=bool)
    for u, (row, a) in enumerate(zip(rows, alive, strict=True)):
        d = int(a.sum())
        for i in sort_order(row, a)[: min(int(s_list[u]), d)]:
            keep[u, i] = True
            out[u, i] = row[i]
    shape = (*reduced, n)
    return np.moveaxis(out.reshape(shape), -1, dim), np.moveaxis(keep.reshape(shape), -1, dim)


def _tail_error(v, s, p):
    a = sorted((abs(float(x)) for x in v), reverse=True)
    return math.fsum(x**p for x in a[s:]) ** (1.0 / p)


def best_s_term_error(w, s, p=1.0, dim=-1, mask=None):
    """``σ_s(w)_p = ‖w − w_s‖_p`` from the magnitudes sorted in decreasing order."""
    return _reduce(lambda v, s_: _tail_error(v, int(s_), p), w, dim, mask, s)


def stechkin_bound(w, s, q, p=1.0, dim=-1, mask=None):
    """``max(s, 1)^(1/p − 1/q) ‖w‖_q`` (``s = 0`` gives the trivial bound ``‖w‖_q``)."""
    return _reduce(lambda v, s_: max(int(s_), 1) ** (1.0 / p - 1.0 / q) * _norm(v, q), w, dim, mask, s)


def _required(v, q, eps):
    if _degenerate(v):
        return 0.0
    x = (_norm(v, q) / (eps * _norm(v, 1.0))) ** (q / (1.0 - q))
    return float(min(max(math.ceil(x), 0), len(v)))


def required_terms(w, q, eps, dim=-1, mask=None):
    """``min(d, ceil((‖w‖_q / (ε‖w‖_1))^(q/(1−q))))``; 0 for degenerate units."""
    return _reduce(lambda v: _required(v, q, eps), w, dim, mask)


def maurey_head(v, m: int, q: float):
    """For one 1-D unit: ``(head indices, tail mass D)`` of the S3 construction."""
    v = _np(v).astype(np.float64)
    threshold = _norm(v, q) * m ** (-1.0 / q)
    head = [i for i in range(len(v)) if abs(v[i]) > threshold]
    tail_mass = math.fsum(abs(v[i]) for i in range(len(v)) if i not in head)
    return head, tail_mass


def maurey_expected_sq_error(H, w, m: int, q: float) -> float:
    """Exact expectation of ``mean_n ((H (coef − w))_n²)`` for the S3 sampler, one unit ``w``.

    With ``Z = D sign(w_J) h_J`` and ``J ~ |w_i|/D`` on the tail, the sampled part is the mean of m
    i.i.d. copies of Z with ``E Z = g_tail``, so the error is ``(E‖Z‖² − ‖g_tail‖²)/m``, where ``‖·‖²``
    is the empirical mean square over the rows of H (n samples × d functions).
    """
    H = _np(H).astype(np.float64)
    w = _np(w).astype(np.float64)
    head, tail_mass = maurey_head(w, m, q)
    if tail_mass == 0:
        return 0.0
    tail = [i for i in range(len(w)) if i not in head]
    g_tail = sum(w[i] * H[:, i] for i in tail)
    second_moment = math.fsum(abs(w[i]) / tail_mass * tail_mass**2 * float(np.mean(H[:, i] ** 2)) for i in tail)
    return (second_moment - float(np.mean(g_tail**2))) / m
