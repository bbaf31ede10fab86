"""Tests of lqtheory.theory.approximation: oracles, S1 (Stechkin) as a property, required terms, S3 (Maurey)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import oracles
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lqtheory.theory import norms as N
from lqtheory.theory.approximation import (
    MaureyResult,
    best_s_term,
    best_s_term_error,
    maurey_approximation,
    required_terms,
    stechkin_bound,
)

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-12}, torch.float32: {"rtol": 2e-4, "atol": 2e-5}}
KINDS = ("normal", "cauchy", "student_t", "sparse", "ties", "zeros", "power_law")


def _special_mask(shape, rng):
    mask = oracles.random_mask(shape, rng)
    mask[0] = False  # no alive entries
    mask[1] = False
    mask[1, 0] = True  # a single alive entry
    mask[2] = True
    return mask


LAYOUTS = [
    ("rows", (10, 13), -1, None),
    ("columns", (13, 10), 0, None),
    ("3d_masked", (3, 8, 5), 1, oracles.random_mask),
    ("special_masks", (6, 9), -1, _special_mask),
    ("d_equals_1", (5, 1), -1, None),
    ("single_unit", (23,), 0, None),  # a 1-D input: one unit (issue #14 item 1 crashed on its ties)
]


def _case(kind, layout, dtype):
    name, shape, dim, make_mask = layout
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{name}".encode()))
    w_np = oracles.random_weights(kind, shape, rng)
    if dtype == torch.float32:
        w_np = w_np.astype(np.float32).astype(np.float64)
    mask_np = None if make_mask is None else make_mask(shape, rng)
    w = torch.as_tensor(np.ascontiguousarray(w_np), dtype=dtype)
    mask = None if mask_np is None else torch.as_tensor(mask_np)
    reduced = tuple(size for i, size in enumerate(shape) if i != dim % len(shape))
    return w, mask, w_np, mask_np, dim, reduced, rng


def _close(actual, expected, dtype, what):
    assert not torch.isnan(actual).any(), what
    np.testing.assert_allclose(actual.double().numpy(), expected, err_msg=what, **TOL[dtype])


# ----------------------------------------------------------------------------------------------------
# Against the oracles
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_oracles(kind, layout, dtype):
    w, mask, w_np, mask_np, dim, reduced, rng = _case(kind, layout, dtype)
    per_unit_s = torch.as_tensor(rng.integers(0, 12, size=reduced))
    for s in (0, 1, 3, 100, per_unit_s):
        s_np = s.numpy() if isinstance(s, torch.Tensor) else s
        w_s, keep = best_s_term(w, s, dim=dim, mask=mask)
        want_w_s, want_keep = oracles.best_s_term(w_np, s_np, dim=dim, mask=mask_np)
        np.testing.assert_array_equal(keep.numpy(), want_keep, err_msg=f"keep, s={s}")
        np.testing.assert_array_equal(w_s.double().numpy(), want_w_s, err_msg=f"w_s, s={s}")
        assert w_s.dtype == dtype and keep.dtype == torch.bool
        for p in (0.5, 1.0, 2.0):
            got = best_s_term_error(w, s, p=p, dim=dim, mask=mask)
            assert got.dtype == dtype
            _close(got, oracles.best_s_term_error(w_np, s_np, p, dim=dim, mask=mask_np), dtype, f"error p={p} s={s}")
        for q, p in ((0.5, 1.0), (0.3, 2.0), (1.0, 2.0)):
            got = stechkin_bound(w, s, q, p, dim=dim, mask=mask)
            assert got.dtype == dtype
            want = oracles.stechkin_bound(w_np, s_np, q, p, dim=dim, mask=mask_np)
            _close(got, want, dtype, f"bound q={q} p={p} s={s}")
    for q, eps in ((0.5, 0.3), (0.3, 0.07), (0.8, 0.45)):
        got = required_terms(w, q, eps, dim=dim, mask=mask)
        assert got.dtype == torch.int64 and got.shape == reduced
        want = oracles.required_terms(w_np, q, eps, dim=dim, mask=mask_np)
        # equal, except (by one) where the real-valued count lands within rounding of an integer
        norm_q = oracles.lq_norm(w_np, q, dim=dim, mask=mask_np)
        norm_1 = oracles.lq_norm(w_np, 1.0, dim=dim, mask=mask_np)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = (norm_q / (eps * norm_1)) ** (q / (1 - q))
        near_integer = np.abs(x - np.round(x)) < 1e-6 * np.maximum(x, 1)
        diff = got.numpy() - want
        assert np.all(np.abs(diff) <= 1) and np.all((diff == 0) | near_integer), (q, eps, got, want)


def test_best_s_term_of_a_one_dimensional_input_with_ties():
    # issue #14 item 1: IndexError for a 1-D input with equal magnitudes at the cut
    w_s, keep = best_s_term(torch.ones(3), 1)
    assert keep.tolist() == [True, False, False] and w_s.tolist() == [1.0, 0.0, 0.0]
    w = torch.tensor([0.0, 2.0, -1.0, 1.0, 1.0])
    assert best_s_term(w, 2)[1].tolist() == [False, True, True, False, False]
    assert best_s_term(w, 2)[1].tolist() == best_s_term(w.reshape(1, 5), 2)[1][0].tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_matches_oracles(dtype):
    # issue #14 item 2: best_s_term_error of 10^6 float16 entries summed in float16 and overflowed to inf
    rng = np.random.default_rng(5)
    w = torch.as_tensor(rng.standard_normal(10**6) * 0.01).to(dtype)
    w_np = w.double().numpy()  # the oracle sees exactly the half-precision inputs
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    got = best_s_term_error(w, 10)
    assert got.dtype == dtype and bool(torch.isfinite(got))
    want = float(np.sum(np.sort(np.abs(w_np))[:-10]))  # ℓ1 error: all but the 10 largest magnitudes
    assert float(got) == pytest.approx(want, rel=tol)
    w, w_np = w[:5000].reshape(50, 100), w_np[:5000].reshape(50, 100)
    for p in (0.5, 1.0, 2.0):
        got = best_s_term_error(w, 7, p=p)
        assert got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), oracles.best_s_term_error(w_np, 7, p), rtol=tol, atol=1e-5)
    got = stechkin_bound(w, 7, 0.5, 1.0)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.double().numpy(), oracles.stechkin_bound(w_np, 7, 0.5, 1.0), rtol=tol)


def test_best_s_term_ties_go_to_the_lower_index():
    w = torch.tensor([[1.0, -3.0, 3.0, 1.0, -1.0, 0.0]])
    for s, kept in [(1, [1]), (2, [1, 2]), (3, [0, 1, 2]), (4, [0, 1, 2, 3]), (6, [0, 1, 2, 3, 4, 5])]:
        _, keep = best_s_term(w, s)
        assert keep[0].nonzero().flatten().tolist() == kept
    mask = torch.tensor([[False, True, True, True, True, True]])
    _, keep = best_s_term(w, 3, mask=mask)
    assert keep[0].nonzero().flatten().tolist() == [1, 2, 3]  # the masked 1.0 at index 0 is skipped
    w_s, keep = best_s_term(w, 10, mask=mask)
    assert keep.sum() == 5 and w_s[0, 0] == 0  # s clipped to d = 5; masked entries come out as 0


def test_best_s_term_is_optimal_among_all_supports():
    """For tiny d, no s-subset gives a smaller ℓ_p error than the kept one (brute force)."""
    from itertools import combinations

    rng = np.random.default_rng(7)
    for _ in range(20):
        w_np = oracles.random_weights(rng.choice(["normal", "ties", "cauchy"]), (6,), rng)
        for s in range(7):
            best = min(
                (np.sum(np.abs(np.delete(w_np, list(sub))) ** 1.5) for sub in combinations(range(6), s)), default=0.0
            )
            got = float(best_s_term_error(torch.as_tensor(w_np), s, p=1.5)) ** 1.5
            assert got == pytest.approx(best, rel=1e-12, abs=1e-300)


def test_per_unit_s_broadcasts():
    w = torch.randn(3, 4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([[1], [2], [7]])  # (3, 1) broadcast to the reduced shape (3, 4)
    _, keep = best_s_term(w, s)
    assert keep.sum(-1).tolist() == [[1] * 4, [2] * 4, [7] * 4]
    s_float = torch.tensor([1.0, 2.0, 3.0, 4.0])  # whole-valued floats are fine
    assert best_s_term(w, s_float)[1].sum(-1).tolist() == [[1, 2, 3, 4]] * 3
    assert best_s_term_error(w, np.int64(7)).tolist() == [[0.0] * 4] * 3


# ----------------------------------------------------------------------------------------------------
# S1: Stechkin's inequality as a property
# ----------------------------------------------------------------------------------------------------
_magnitude = st.one_of(st.just(0.0), st.sampled_from([0.5, 1.0, 3.0]), st.floats(1e-4, 1e4))
_signed = st.tuples(_magnitude, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
signed_vectors = st.lists(_signed, min_size=1, max_size=40)
QP_PAIRS = [(0.5, 1.0), (0.3, 1.0), (0.9, 1.0), (0.5, 2.0), (1.0, 2.0), (1.5, 2.0), (0.2, 0.5), (0.1, 3.0)]


def _check_stechkin(w: torch.Tensor, q: float, p: float):
    d = w.shape[-1]
    s = torch.arange(0, d + 3)
    rows = w.expand(len(s), d)
    error = best_s_term_error(rows, s, p=p)
    bound = stechkin_bound(rows, s, q, p)
    assert bool((error <= bound * (1 + 1e-12) + 1e-300).all()), (q, p, error, bound)
    assert bool((error[d:] == 0).all())


@PROPERTY
@given(values=signed_vectors, qp=st.sampled_from(QP_PAIRS))
def test_s1_stechkin_bound_holds(values, qp):
    _check_stechkin(torch.tensor(values, dtype=torch.float64), *qp)


@PROPERTY
@given(
    kind=st.sampled_from(["normal", "laplace", "student_t", "cauchy", "sparse", "ties", "power_law"]),
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 200),
    qp=st.sampled_from(QP_PAIRS),
)
def test_s1_stechkin_bound_holds_on_heavy_tails(kind, seed, d, qp):
    w = oracles.random_weights(kind, (d,), np.random.default_rng(seed))
    _check_stechkin(torch.as_tensor(w), *qp)


def test_s1_bound_examples():
    # d = 1, s = 0: both sides are |w_1|, so the constant 1 in S1 cannot be lowered
    assert float(best_s_term_error(torch.tensor([5.0]), 0)) == float(stechkin_bound(torch.tensor([5.0]), 0, 0.5)) == 5
    # flat w = 1_64 at s = 32: σ = 32 and the bound is 32^(1-1/q) 64^(1/q) = 128 for q = 1/2
    w = torch.ones(64, dtype=torch.float64)
    assert float(best_s_term_error(w, 32, p=1.0)) == 32.0
    assert float(stechkin_bound(w, 32, 0.5, 1.0)) == pytest.approx(128.0)


@pytest.mark.parametrize("q_prime", [0.3, 0.5, 0.7])
def test_s1_log_log_slope_for_a_power_law(q_prime):
    """σ_s(w)_1 for |w|_(k) = k^(-1/q') decays like s^(1 - 1/q'): the slope S1 predicts."""
    d = 100_000
    k = torch.arange(1, d + 1, dtype=torch.float64)
    w = k.pow(-1 / q_prime)[torch.randperm(d, generator=torch.Generator().manual_seed(1))]
    s = torch.tensor([10, 30, 100, 300])
    error = best_s_term_error(w.expand(len(s), d), s, p=1.0)
    slope = np.polyfit(np.log(s.numpy()), np.log(error.numpy()), 1)[0]
    assert slope == pytest.approx(1 - 1 / q_prime, abs=0.04)
    # and the bound with any q > q' (w is in ℓ_q) stays above the error with that same slope
    bound = stechkin_bound(w.expand(len(s), d), s, q_prime + 0.05, 1.0)
    assert bool((error <= bound).all())


# ----------------------------------------------------------------------------------------------------
# Required terms
# ----------------------------------------------------------------------------------------------------
@PROPERTY
@given(values=signed_vectors, q=st.sampled_from([0.2, 0.5, 0.7, 0.9]), eps=st.floats(0.01, 1.0))
def test_required_terms_achieve_the_tolerance_and_are_minimal_for_the_bound(values, q, eps):
    w = torch.tensor(values, dtype=torch.float64)
    assume(bool((w != 0).any()))
    s = int(required_terms(w, q, eps))
    d = len(values)
    norm_1 = float(w.abs().sum())
    assert 1 <= s <= d
    assert float(best_s_term_error(w, s, p=1.0)) <= eps * norm_1 * (1 + 1e-12)
    if s < d:  # not clipped: the S1 guarantee holds at s ...
        assert float(stechkin_bound(w, s, q, 1.0)) <= eps * norm_1 * (1 + 1e-9)
    if s >= 2:  # ... and fails one term earlier
        assert float(stechkin_bound(w, s - 1, q, 1.0)) > eps * norm_1 * (1 - 1e-9)
    # the same count through the SI-implied size: ceil(ε^(-q/(1-q)) m(w))
    via_size = eps ** (-q / (1 - q)) * float(N.si_implied_size(w, q))
    assert min(math.ceil(via_size * (1 - 1e-9)), d) <= s <= min(math.ceil(via_size * (1 + 1e-9)), d)


def test_required_terms_edge_cases():
    w = torch.tensor([[0.0, 0.0, 0.0], [0.0, 4.0, 0.0], [1.0, 1.0, 1.0], [5.0, 1.0, 2.0]])
    mask = torch.tensor([[True] * 3, [True] * 3, [False] * 3, [True] * 3])
    got = required_terms(w, 0.5, 0.5, mask=mask)
    # zero unit; 1-sparse unit (m(w) = 1, so ceil(ε^(-q/(1-q)) m) = 2 although 1 term is exact); no alive entries
    assert got.tolist()[:3] == [0, 2, 0]
    assert int(required_terms(torch.tensor([0.0, 4.0, 0.0]), 0.5, 1.0)) == 1
    assert 1 <= got[3] <= 3
    # eps = 1: the empty approximation already has relative tail 1, but S1 only certifies s >= m(w)
    assert int(required_terms(torch.ones(9), 0.5, 1.0)) == 9
    assert required_terms(torch.zeros(2, 0), 0.5, 0.5).tolist() == [0, 0]


# ----------------------------------------------------------------------------------------------------
# S3: Maurey's sampling construction
# ----------------------------------------------------------------------------------------------------
def _maurey_structure(w, mask, result: MaureyResult, m, q, dim):
    """Check every documented invariant of one result against the per-unit oracle."""
    w_last = w.movedim(dim, -1)
    mask_last = torch.ones_like(w_last, dtype=torch.bool) if mask is None else mask.movedim(dim, -1)
    coef = result.coefficients.movedim(dim, -1)
    head = result.head_mask.movedim(dim, -1)
    counts = result.counts.movedim(dim, -1)
    flat = w_last.reshape(-1, w_last.shape[-1]).double()
    alive = mask_last.reshape(flat.shape)
    for u in range(flat.shape[0]):
        v = flat[u].masked_fill(~alive[u], 0.0)
        want_head, want_mass = oracles.maurey_head(v.numpy(), m, q)
        h = head.reshape(flat.shape)[u]
        c = counts.reshape(flat.shape)[u]
        co = coef.reshape(flat.shape)[u].double()
        norm_q = float(oracles.lq_norm(v.numpy(), q))
        # the head is {|w_i| > ||w||_q m^(-1/q)}; entries within rounding of the threshold may go either way
        threshold = norm_q * m ** (-1 / q)
        undecided = (v.abs() - threshold).abs() <= 1e-9 * threshold
        want = torch.zeros_like(h)
        want[want_head] = True
        assert torch.equal(h[~undecided], want[~undecided])
        want_head = h.nonzero().flatten().tolist()
        want_mass = float(v.abs()[~h].sum())
        assert len(want_head) < m  # |L*| < m
        mass = float(result.tail_mass.reshape(-1)[u])
        assert mass == pytest.approx(want_mass, rel=1e-5, abs=1e-12)
        assert mass <= norm_q * m ** (1 - 1 / q) * (1 + 1e-6)  # D <= ||w||_q m^(1-1/q)
        assert int(c.sum()) == (m if want_mass > 0 else 0)
        assert not bool((c[h | (v == 0)] > 0).any())  # draws only from the nonzero alive tail
        torch.testing.assert_close(co[h], v[h])  # head kept exactly
        tail_coef = (want_mass / m) * c.double() * v.sign()
        torch.testing.assert_close(co[~h], tail_coef[~h], rtol=1e-5, atol=1e-12)
        n_terms = int(result.n_terms.reshape(-1)[u])
        assert n_terms == int((h | (c > 0)).sum()) == int((co != 0).sum())
        assert n_terms < 2 * m
        assert int(result.head_size.reshape(-1)[u]) == len(want_head)
        assert float(result.bound_factor.reshape(-1)[u]) == pytest.approx(norm_q * m ** (0.5 - 1 / q), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("kind", ["normal", "cauchy", "sparse", "ties", "zeros", "power_law"])
def test_maurey_structure(kind, layout, dtype):
    w, mask, _, _, dim, reduced, _ = _case(kind, layout, dtype)
    for m, q in ((1, 0.5), (3, 0.5), (4, 1.0), (10, 0.3), (50, 0.8)):
        result = maurey_approximation(w, m, q, seed=m, dim=dim, mask=mask)
        assert result.coefficients.shape == w.shape and result.coefficients.dtype == dtype
        assert result.n_terms.shape == reduced and result.tail_mass.dtype == dtype
        _maurey_structure(w, mask, result, m, q, dim)


def test_maurey_seeded_is_deterministic_and_seeds_differ():
    w = torch.randn(8, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = maurey_approximation(w, 12, 0.5, seed=123)
    b = maurey_approximation(w, 12, 0.5, seed=123)
    c = maurey_approximation(w, 12, 0.5, seed=124)
    assert torch.equal(a.coefficients, b.coefficients) and torch.equal(a.counts, b.counts)
    assert not torch.equal(a.counts, c.counts)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        maurey_approximation(w, 12, 0.5, generator=g1).counts, maurey_approximation(w, 12, 0.5, generator=g2).counts
    )


def test_maurey_special_cases():
    # all-zero unit: nothing; d = 1 with m = 1: the single entry is the whole tail, recovered exactly
    w = torch.tensor([[0.0, 0.0, 0.0], [0.0, -2.5, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    r = maurey_approximation(w, 1, 0.5, seed=0)
    assert r.coefficients[0].tolist() == [0.0, 0.0, 0.0] and int(r.n_terms[0]) == 0 and float(r.tail_mass[0]) == 0
    assert r.coefficients[1].tolist() == [0.0, -2.5, 0.0]
    # m = d on a uniform unit: the threshold equals every entry, so nothing is head and D = ||w||_1
    r = maurey_approximation(torch.ones(1, 4), 4, 0.5, seed=0)
    assert int(r.head_size) == 0 and float(r.tail_mass) == 4.0
    # m large: every nonzero entry above ||w||_q m^(-1/q) is head; with one tail entry the draw is exact
    w = torch.tensor([[10.0, -5.0, 1e-9, 0.0]], dtype=torch.float64)
    r = maurey_approximation(w, 1000, 0.5, seed=0)
    assert r.head_mask[0].tolist() == [True, True, False, False]
    torch.testing.assert_close(r.coefficients, w)


def _dictionary(n, d, seed):
    """n samples of d functions with unequal scales (columns), as in a previous layer's outputs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=torch.float64, generator=g) * torch.rand(d, dtype=torch.float64, generator=g) * 3


@pytest.mark.parametrize("kind", ["cauchy", "student_t", "normal"])
@pytest.mark.parametrize("m,q", [(5, 0.5), (20, 0.5), (10, 0.8), (30, 0.3)])
def test_s3_mean_squared_error_bound(kind, m, q):
    """Over 300 independent draws, mean ||H coef - H w||² stays under C² ||w||_q² m^(1-2/q)."""
    d, n, draws = 60, 200, 300
    H = _dictionary(n, d, seed=m)
    w = torch.as_tensor(oracles.random_weights(kind, (d,), np.random.default_rng(m)))
    C = float(H.pow(2).mean(0).sqrt().max())  # max column RMS under the empirical distribution
    result = maurey_approximation(w.expand(draws, d), m, q, seed=0)  # 300 independent rows = 300 draws
    errors = ((result.coefficients - w) @ H.T).pow(2).mean(-1)  # empirical L2(P) squared error per draw
    bound = C**2 * float(N.lq_norm(w, q)) ** 2 * m ** (1 - 2 / q)
    mean_error = float(errors.mean())
    assert mean_error <= bound
    # the bound_factor the function reports gives the same number
    assert (C * float(result.bound_factor[0])) ** 2 == pytest.approx(bound)
    # and the Monte-Carlo mean agrees with the exact expectation of the construction
    exact = oracles.maurey_expected_sq_error(H.numpy(), w.numpy(), m, q)
    mass = float(result.tail_mass[0])
    assert exact <= mass**2 * C**2 / m <= bound * (1 + 1e-9)  # the proof's intermediate step, D² C² / m
    assert mean_error == pytest.approx(exact, rel=0.25, abs=1e-12)
    assert bool((result.n_terms < 2 * m).all())


def test_s3_variance_step_is_attained_by_a_degenerate_dictionary():
    """With every h_i = ±h and a tail summing to 0, the error is exactly D² C² / m (the proof's step is sharp)."""
    n, m, draws = 50, 3, 2000
    h = torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.5, -0.5], dtype=torch.float64)  # threshold 5/3: no head
    H = h.expand(n, len(w))
    C2 = float(h.pow(2).mean())
    result = maurey_approximation(w.expand(draws, len(w)), m, 1.0, seed=0)
    assert int(result.head_size[0]) == 0
    mass = float(result.tail_mass[0])
    errors = ((result.coefficients - w) @ H.T).pow(2).mean(-1)
    assert float(errors.mean()) == pytest.approx(mass**2 * C2 / m, rel=0.1)
    assert oracles.maurey_expected_sq_error(H.numpy(), w.numpy(), m, 1.0) == pytest.approx(mass**2 * C2 / m)


def test_s3_coefficients_are_unbiased():
    d, draws, m, q = 30, 4000, 8, 0.5
    w = torch.as_tensor(oracles.random_weights("student_t", (d,), np.random.default_rng(9)))
    result = maurey_approximation(w.expand(draws, d), m, q, seed=1)
    head = result.head_mask[0]
    mass = float(result.tail_mass[0])
    mean = result.coefficients.mean(0)
    assert torch.equal(mean[head], w[head])
    # each tail coefficient is (D/m) Binomial(m, |w_i|/D) sign(w_i): compare the mean within 5 standard errors
    prob = w.abs() / mass
    std = (mass / m) * torch.sqrt(m * prob * (1 - prob))
    tail = ~head
    assert bool(((mean - w).abs()[tail] <= 5 * std[tail] / math.sqrt(draws) + 1e-12).all())


# ----------------------------------------------------------------------------------------------------
# Errors, devices
# ----------------------------------------------------------------------------------------------------
W = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, 3.0]])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: best_s_term(W, -1), "s must be >= 0"),
        (lambda: best_s_term(W, torch.tensor([1, -2])), "s must be >= 0"),
        (lambda: best_s_term(W, torch.tensor([1.5, 2.0])), "s must hold whole numbers"),
        (lambda: best_s_term(W, torch.tensor([1, 2, 3])), "s of shape"),
        (lambda: best_s_term(W, 1, dim=2), "dim"),
        (lambda: best_s_term(W, 1, mask=torch.ones(3, 2, dtype=torch.bool)), "mask"),
        (lambda: best_s_term(torch.tensor([[1.0, float("nan")]]), 1), "w contains NaN"),
        (lambda: best_s_term_error(W, 1, p=0.0), "p must lie"),
        (lambda: best_s_term_error(W, -3), "s must be >= 0"),
        (lambda: stechkin_bound(W, 1, 1.0, 1.0), "q=1, p=1"),
        (lambda: stechkin_bound(W, 1, 2.0, 1.0), "q=2, p=1"),
        (lambda: stechkin_bound(W, 1, 0.0, 1.0), "q must lie"),
        (lambda: stechkin_bound(W, -1, 0.5, 1.0), "s must be >= 0"),
        (lambda: required_terms(W, 1.0, 0.1), "q must lie"),
        (lambda: required_terms(W, 0.5, 0.0), "eps must lie"),
        (lambda: required_terms(W, 0.5, 1.5), "eps must lie"),
        (lambda: required_terms(W, 0.5, -0.1), "eps must lie"),
        (lambda: maurey_approximation(W, 0, 0.5), "m must be >= 1"),
        (lambda: maurey_approximation(W, -4, 0.5), "m must be >= 1"),
        (lambda: maurey_approximation(W, 3, 1.5), "q must lie"),
        (lambda: maurey_approximation(W, 3, 0.5, seed=1, generator=torch.Generator()), "either generator or seed"),
        (lambda: maurey_approximation(torch.tensor([float("inf")]), 3, 0.5), "w contains NaN"),
    ],
)
def test_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: best_s_term([1.0, 2.0], 1),
        lambda: best_s_term(torch.tensor([1, 2]), 1),
        lambda: best_s_term(W, 1.0),
        lambda: best_s_term(W, None),
        lambda: best_s_term(W, 1, mask=torch.ones(2, 3)),
        lambda: stechkin_bound(W, 2.0, 0.5),
        lambda: required_terms(W, "0.5", 0.1),
        lambda: maurey_approximation(W, 2.5, 0.5),
        lambda: maurey_approximation(W, True, 0.5),
        lambda: maurey_approximation(W, 3, 0.5, seed=1.0),
        lambda: maurey_approximation(W, 3, 0.5, generator=1),
    ],
)
def test_type_errors(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_cpu_and_cuda_agree():
    rng = np.random.default_rng(0)
    w = torch.as_tensor(oracles.random_weights("ties", (16, 40), rng), dtype=torch.float32)
    mask = torch.as_tensor(oracles.random_mask(w.shape, rng))
    s = torch.as_tensor(rng.integers(0, 30, size=16))
    w_s, keep = best_s_term(w, s, mask=mask)
    w_s_gpu, keep_gpu = best_s_term(w.cuda(), s.cuda(), mask=mask.cuda())
    assert torch.equal(keep_gpu.cpu(), keep) and torch.equal(w_s_gpu.cpu(), w_s)  # same ties kept
    error_gpu = best_s_term_error(w.cuda(), s.cuda(), mask=mask.cuda())
    torch.testing.assert_close(error_gpu.cpu(), best_s_term_error(w, s, mask=mask))
    torch.testing.assert_close(required_terms(w.cuda(), 0.5, 0.2).cpu(), required_terms(w, 0.5, 0.2))
    result = maurey_approximation(w.cuda(), 10, 0.5, seed=3, mask=mask.cuda())
    assert result.coefficients.device.type == "cuda"
    again = maurey_approximation(w.cuda(), 10, 0.5, seed=3, mask=mask.cuda())
    assert torch.equal(result.counts, again.counts)
    _maurey_structure(w, mask, MaureyResult(*(t.cpu() for t in result)), 10, 0.5, -1)


def test_required_terms_accepts_several_eps_and_matches_one_call_per_eps():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(7, 5, 40, generator=g) ** 3
    eps = [0.3, 0.1, 0.03, 0.01]
    several = required_terms(w, 0.5, eps)
    assert several.shape == (4, 7, 5)
    for i, e in enumerate(eps):
        assert torch.equal(several[i], required_terms(w, 0.5, e))
    assert torch.equal(required_terms(w, 0.5, torch.tensor(eps)), several)
    with pytest.raises(ValueError):
        required_terms(w, 0.5, [])
    with pytest.raises(ValueError):
        required_terms(w, 0.5, [0.1, 1.5])
