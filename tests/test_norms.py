"""Tests of lqtheory.theory.norms against the NumPy oracles, THEORY.md S5/S6 as properties, and edge cases."""

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

TOL = {
    torch.float64: {"rtol": 1e-9, "atol": 1e-12},
    torch.float32: {"rtol": 2e-4, "atol": 2e-5},
}
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (function name, keyword arguments): every public index, at several exponents.
FUNCS = [
    ("alive_count", {}),
    ("lq_norm", {"q": 0.5}),
    ("lq_norm", {"q": 0.2}),
    ("lq_norm", {"q": 1.0}),
    ("lq_norm", {"q": 2.0}),
    ("pq_index", {"p": 0.5, "q": 1.0}),
    ("pq_index", {"p": 1.0, "q": 2.0}),
    ("pq_index", {"p": 0.3, "q": 0.7}),
    ("sparsity_index", {"q": 0.5}),
    ("sparsity_index", {"q": 0.2}),
    ("sparsity_index", {"q": 1.0}),
    ("teacher_sparsity_index", {"q": 0.5}),
    ("teacher_sparsity_index", {"q": 0.1}),
    ("gini_index", {}),
    ("tail_mass_ratio", {"r": 1, "p": 0.5}),
    ("tail_mass_ratio", {"r": 3, "p": 1.0}),
    ("tail_mass_ratio", {"r": 2, "p": 2.0}),
    ("si_implied_size", {"q": 0.5}),
    ("si_implied_size", {"q": 0.3, "eta": 0.2}),
    ("retained_count_bound", {"p": 0.5, "q": 1.0}),
    ("retained_count_bound", {"p": 1.0, "q": 2.0, "eta": 0.1}),
]


def _special_mask(shape, rng):
    """Random mask whose first rows are: all masked, a single alive entry, all alive."""
    mask = oracles.random_mask(shape, rng)
    mask[0] = False
    mask[1] = False
    mask[1, shape[1] // 2] = True
    mask[2] = True
    return mask


# (name, shape, dim, mask maker)
LAYOUTS = [
    ("rows", (12, 17), -1, None),
    ("columns", (17, 12), 0, None),
    ("3d_middle", (3, 9, 4), 1, None),
    ("3d_masked", (4, 5, 11), -1, oracles.random_mask),
    ("special_masks", (6, 8), -1, _special_mask),
    ("d_equals_1", (7, 1), -1, None),
    ("single_unit", (23,), 0, None),
]


def _torch(x, dtype=torch.float64):
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


def _assert_close(actual: torch.Tensor, expected, dtype, what=""):
    assert not torch.isnan(actual).any(), f"{what}: NaN in result"
    np.testing.assert_allclose(actual.double().cpu().numpy(), expected, err_msg=what, **TOL[dtype])


# ----------------------------------------------------------------------------------------------------
# Batched versions against the oracles
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("kind", oracles.KINDS)
def test_matches_oracle(kind, layout, dtype):
    name, shape, dim, make_mask = layout
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{name}".encode()))
    w_np = oracles.random_weights(kind, shape, rng)
    if dtype == torch.float32:
        w_np = w_np.astype(np.float32).astype(np.float64)  # the oracle sees exactly the float32 inputs
    mask_np = None if make_mask is None else make_mask(shape, rng)
    w = _torch(w_np, dtype)
    mask = None if mask_np is None else torch.as_tensor(mask_np)
    failures = []
    for fname, kwargs in FUNCS:
        got = getattr(N, fname)(w, **kwargs, dim=dim, mask=mask)
        want = getattr(oracles, fname)(w_np, **kwargs, dim=dim, mask=mask_np)
        assert got.dtype == dtype, f"{fname} changed the dtype"
        assert got.shape == want.shape, f"{fname}: shape {tuple(got.shape)} != {want.shape}"
        try:
            _assert_close(got, want, dtype, f"{fname}{kwargs}")
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, "\n".join(failures)


# Half precision: the result is the float64 value (of the half-precision inputs) rounded to the dtype,
# up to float32 accumulation; values beyond the dtype's range come out as inf.
HALF_TOL = {torch.float16: {"rtol": 2e-3, "atol": 1e-5}, torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-4}}


def _assert_half_matches(got: torch.Tensor, want, dtype, what=""):
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}"
    want = np.asarray(want, dtype=np.float64)
    beyond = np.abs(want) > torch.finfo(dtype).max
    got64 = got.double().cpu().numpy()
    assert not np.isnan(got64).any(), f"{what}: NaN in result"
    assert np.all(np.isinf(got64[beyond])), f"{what}: values beyond the {dtype} range must be inf"
    np.testing.assert_allclose(got64[~beyond], want[~beyond], err_msg=what, **HALF_TOL[dtype])


def _half_inputs(w_np: np.ndarray, dtype) -> tuple[torch.Tensor, np.ndarray]:
    """``w_np`` rounded to ``dtype`` (within its range) and the exact float64 values the oracle should see."""
    w = torch.as_tensor(np.clip(w_np, -6e4, 6e4)).to(dtype)
    return w, w.double().numpy()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("kind", oracles.KINDS)
def test_matches_oracle_in_half_precision(kind, layout, dtype):
    name, shape, dim, make_mask = layout
    rng = np.random.default_rng(zlib.crc32(f"half/{kind}/{name}".encode()))
    w, w_np = _half_inputs(oracles.random_weights(kind, shape, rng), dtype)
    mask_np = None if make_mask is None else make_mask(shape, rng)
    mask = None if mask_np is None else torch.as_tensor(mask_np)
    failures = []
    for fname, kwargs in FUNCS:
        if fname == "alive_count":
            continue  # d itself, in w's dtype: not an accumulation
        got = getattr(N, fname)(w, **kwargs, dim=dim, mask=mask)
        want = getattr(oracles, fname)(w_np, **kwargs, dim=dim, mask=mask_np)
        try:
            _assert_half_matches(got, want, dtype, f"{fname}{kwargs}")
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_long_units(dtype):
    # issue #14 item 2: with d = 70000 > 65504 (float16's largest value) the count d and the sums were
    # kept in the input dtype: PQI 1.0 (float64: 0.153), SI inf (1.18), Gini NaN (0.414); bfloat16
    # gave PQI 0.117. The oracle sees exactly the half-precision inputs.
    rng = np.random.default_rng(14)
    w, w_np = _half_inputs(rng.standard_normal((1, 70000)) * 0.01, dtype)
    cases = [
        ("pq_index", {"p": 0.5, "q": 1.0}),
        ("sparsity_index", {"q": 0.5}),
        ("teacher_sparsity_index", {"q": 0.5}),
        ("gini_index", {}),
        ("si_implied_size", {"q": 0.5}),
        ("retained_count_bound", {"p": 0.5, "q": 1.0}),
        ("lq_norm", {"q": 1.0}),
    ]
    for fname, kwargs in cases:
        got = getattr(N, fname)(w, **kwargs)
        _assert_half_matches(got, getattr(oracles, fname)(w_np, **kwargs), dtype, f"{fname}{kwargs}")


def test_gini_of_values_near_the_float32_maximum():
    # issue #14 item 2: Σ|w| overflowed float32 and Gini came out NaN; Gini is scale-free
    w = torch.tensor([3e38, 3e38, 1.0, 2.0])
    want = oracles.gini_index(w.double().numpy())
    assert float(N.gini_index(w)) == pytest.approx(float(want), rel=1e-6)
    assert float(N.gini_index(w)) == pytest.approx(0.5, rel=1e-6)
    w64 = torch.tensor([[1e308, 1e308, 1.0, 2.0], [3.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(N.gini_index(w64).numpy(), oracles.gini_index(w64.numpy()), rtol=1e-12)
    masked = torch.tensor([[True, True, False, True], [True, True, True, False]])
    np.testing.assert_allclose(
        N.gini_index(w64, mask=masked).numpy(), oracles.gini_index(w64.numpy(), mask=masked.numpy()), rtol=1e-12
    )


@pytest.mark.parametrize("kind", ["ties", "sparse", "normal"])
@pytest.mark.parametrize("masked", [False, True])
def test_sort_magnitudes_matches_oracle(kind, masked):
    rng = np.random.default_rng(3)
    w_np = oracles.random_weights(kind, (9, 13), rng)
    mask_np = oracles.random_mask(w_np.shape, rng) if masked else None
    mask = None if mask_np is None else torch.as_tensor(mask_np)
    for dim in (-1, 0):
        values, indices = N.sort_magnitudes(_torch(w_np), dim=dim, mask=mask)
        want_values, want_indices = oracles.sort_magnitudes(w_np, dim=dim, mask=mask_np)
        np.testing.assert_array_equal(indices.numpy(), want_indices)
        np.testing.assert_array_equal(values.numpy(), want_values)


def test_sort_magnitudes_ascending_ties_and_masks():
    w = torch.tensor([2.0, -1.0, 1.0, 0.0, -2.0, 1.0])
    mask = torch.tensor([True, True, True, True, False, True])
    values, indices = N.sort_magnitudes(w, mask=mask, descending=False)
    assert indices.tolist() == [3, 1, 2, 5, 0, 4]  # ties to the lower index, the masked entry last
    assert values.tolist() == [0.0, 1.0, 1.0, 1.0, 2.0, 0.0]
    values, indices = N.sort_magnitudes(w, mask=mask)
    assert indices.tolist() == [0, 1, 2, 5, 3, 4]
    assert values.tolist() == [2.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_per_unit_r_and_eta_tensors():
    rng = np.random.default_rng(5)
    w_np = oracles.random_weights("laplace", (3, 4, 10), rng)
    mask_np = oracles.random_mask(w_np.shape, rng)
    w, mask = _torch(w_np), torch.as_tensor(mask_np)
    r = torch.arange(1, 13).reshape(3, 4)
    np.testing.assert_allclose(
        N.tail_mass_ratio(w, r, p=0.7, mask=mask).numpy(), oracles.tail_mass_ratio(w_np, r.numpy(), 0.7, mask=mask_np)
    )
    # whole-valued float tensors and broadcastable shapes are accepted too
    r_col = torch.tensor([[1.0], [2.0], [5.0]])
    np.testing.assert_allclose(
        N.tail_mass_ratio(w, r_col, p=0.7).numpy(), oracles.tail_mass_ratio(w_np, r_col.numpy(), 0.7), rtol=1e-12
    )
    eta = torch.rand(3, 4, dtype=torch.float64)
    np.testing.assert_allclose(
        N.si_implied_size(w, 0.4, eta=eta, mask=mask).numpy(),
        oracles.si_implied_size(w_np, 0.4, eta=eta.numpy(), mask=mask_np),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        N.retained_count_bound(w, 0.5, 1.0, eta=eta, mask=mask).numpy(),
        oracles.retained_count_bound(w_np, 0.5, 1.0, eta=eta.numpy(), mask=mask_np),
        rtol=1e-10,
    )


def test_the_oracles_agree_with_hand_computed_values():
    # Guards the oracles themselves: w = (3, -1, 0, 4), d = 4.
    w = np.array([3.0, -1.0, 0.0, 4.0])
    l_half = (math.sqrt(3) + 1 + 2) ** 2
    assert oracles.lq_norm(w, 0.5) == pytest.approx(l_half)
    assert oracles.pq_index(w, 0.5, 1.0) == pytest.approx(1 - 4 ** (1 - 2) * l_half / 8)
    assert oracles.sparsity_index(w, 0.5) == pytest.approx(4 * 8 / l_half)
    assert oracles.gini_index(w) == pytest.approx((-3 * 0 - 1 * 1 + 1 * 3 + 3 * 4) / (4 * 8))
    assert oracles.tail_mass_ratio(w, 1, p=1.0) == pytest.approx(4 / 4)
    assert oracles.si_implied_size(w, 0.5) == pytest.approx(l_half / 8)


# ----------------------------------------------------------------------------------------------------
# Property tests (hypothesis)
# ----------------------------------------------------------------------------------------------------
_magnitude = st.one_of(
    st.just(0.0),
    st.sampled_from([0.5, 1.0, 2.0]),  # ties
    st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False),
)
_signed = st.tuples(_magnitude, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
signed_vectors = st.lists(_signed, min_size=1, max_size=40)
nonneg_vectors = st.lists(_magnitude, min_size=1, max_size=40)
PAIRS = [(0.5, 1.0), (1.0, 2.0), (0.25, 0.75), (0.5, 2.0), (0.1, 1.0)]
pairs = st.sampled_from(PAIRS)


def _vec(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _pqi(values, p, q) -> float:
    return float(N.pq_index(_vec(values), p, q))


@PROPERTY
@given(values=signed_vectors, pq=st.sampled_from([*PAIRS, (0.3, 1.0), (0.7, 1.0)]))
def test_s5_retained_count_lower_bound(values, pq):
    """S5: every r in 1..d satisfies r >= d (1+η_r)^(-q/(q-p)) (1-I_{p,q})^(qp/(q-p)), η_r at exponent p."""
    assume(any(v != 0 for v in values))  # η_r is 0/0 for the zero vector
    p, q = pq
    d = len(values)
    rows = _vec(values).expand(d, d)  # row r-1 evaluates the bound at r
    r = torch.arange(1, d + 1)
    eta = N.tail_mass_ratio(rows, r, p=p)
    bound = N.retained_count_bound(rows, p, q, eta=eta)
    assert bool((r.double() >= bound * (1 - 1e-9)).all()), (r, bound)
    # and the bound is attained at the smallest r that keeps all the mass (η_r = 0)
    support = sum(v != 0 for v in values)
    if len({abs(v) for v in values if v != 0}) == 1 and support in (1, d):
        assert float(bound[support - 1]) == pytest.approx(support, rel=1e-9)


@PROPERTY
@given(values=signed_vectors, q=st.sampled_from([0.2, 0.5, 0.8]))
def test_s5_si_form_is_the_p_to_q_q_to_1_case(values, q):
    w = _vec(values)
    d = len(values)
    eta = N.tail_mass_ratio(w, max(1, d // 2), p=q)
    si_form = d * (1 + eta) ** (-1 / (1 - q)) * N.sparsity_index(w, q) ** (-q / (1 - q))
    assert float(N.retained_count_bound(w, q, 1.0, eta=eta)) == pytest.approx(float(si_form), rel=1e-9)


@PROPERTY
@given(values=nonneg_vectors, pq=pairs)
def test_s6_range(values, pq):
    p, q = pq
    d = len(values)
    index = _pqi(values, p, q)
    assert 0.0 <= index <= 1.0 - d ** (1 / q - 1 / p) + 1e-12


@PROPERTY
@given(values=st.lists(_magnitude, min_size=2, max_size=40), pq=pairs, data=st.data())
def test_s6_d1_robin_hood(values, pq, data):
    p, q = pq
    i = data.draw(st.integers(0, len(values) - 1))
    j = data.draw(st.integers(0, len(values) - 1))
    assume(values[i] > values[j])
    alpha = data.draw(st.floats(0.01, 1.0)) * (values[i] - values[j]) / 2
    moved = list(values)
    moved[i] -= alpha
    moved[j] += alpha
    assert _pqi(moved, p, q) <= _pqi(values, p, q) + 1e-12


@PROPERTY
@given(values=signed_vectors, pq=pairs, c=st.floats(1e-3, 1e3))
def test_s6_d2_scaling(values, pq, c):
    p, q = pq
    assert _pqi([c * v for v in values], p, q) == pytest.approx(_pqi(values, p, q), abs=1e-10)


@PROPERTY
@given(values=nonneg_vectors, pq=pairs, c=st.floats(1e-2, 1e2))
def test_s6_d3_rising_tide(values, pq, c):
    p, q = pq
    before, after = _pqi(values, p, q), _pqi([v + c for v in values], p, q)
    assert after <= before + 1e-12
    if len(set(values)) > 1 and before > 1e-6:
        assert after < before  # strictly, unless all entries are equal
    if len(set(values)) == 1:
        assert after == pytest.approx(0.0, abs=1e-12)


@PROPERTY
@given(values=signed_vectors, pq=pairs, copies=st.integers(2, 4))
def test_s6_d4_cloning(values, pq, copies):
    p, q = pq
    assert _pqi(values * copies, p, q) == pytest.approx(_pqi(values, p, q), abs=1e-10)


@PROPERTY
@given(values=st.lists(_magnitude, min_size=2, max_size=40), pq=pairs, data=st.data())
def test_s6_p1_bill_gates(values, pq, data):
    """Growing one entry enough raises the index (it keeps rising as that entry grows further)."""
    p, q = pq
    i = data.draw(st.integers(0, len(values) - 1))
    beta = 100 * (sum(values) + 1)
    rich, richer = list(values), list(values)
    rich[i] += beta
    richer[i] += 2 * beta
    if any(v != 0 for k, v in enumerate(values) if k != i):
        assert _pqi(richer, p, q) > _pqi(rich, p, q)
    else:  # already 1-sparse: the maximum, which growing cannot change
        assert _pqi(richer, p, q) == pytest.approx(1 - len(values) ** (1 / q - 1 / p), abs=1e-12)


@PROPERTY
@given(values=nonneg_vectors, pq=pairs, zeros=st.integers(1, 5))
def test_s6_p2_babies(values, pq, zeros):
    assume(any(v != 0 for v in values))
    p, q = pq
    assert _pqi(values + [0.0] * zeros, p, q) > _pqi(values, p, q)


def test_s6_deterministic_examples():
    # A Robin Hood transfer that equalises the vector takes the index to 0; a strict drop from 3:1.
    assert _pqi([3.0, 1.0], 0.5, 1.0) > 0.0
    assert _pqi([2.0, 2.0], 0.5, 1.0) == pytest.approx(0.0, abs=1e-12)
    # 1-sparse vectors reach the top of the range; larger = sparser
    assert _pqi([0.0, 0.0, 5.0, 0.0], 0.5, 1.0) == pytest.approx(1 - 4 ** (1 - 2))
    assert _pqi([1.0, 0.1, 0.1, 0.1], 0.5, 1.0) > _pqi([1.0, 0.5, 0.5, 0.5], 0.5, 1.0)


@PROPERTY
@given(values=signed_vectors, q=st.sampled_from([0.1, 0.3, 0.5, 0.8, 1.0]))
def test_si_tsi_pqi_identities(values, q):
    w = _vec(values)
    d = len(values)
    si = float(N.sparsity_index(w, q))
    assert 1.0 - 1e-12 <= si <= d ** (1 / q - 1) * (1 + 1e-12)
    if q < 1:
        # SI = 1/(1 - I_{q,1}); 1 - I cancels to ~d^(1-1/q), so allow its absolute rounding error
        assert si * (1.0 - float(N.pq_index(w, q, 1.0))) == pytest.approx(1.0, abs=1e-9 + 1e-15 * si)
    tsi = float(N.teacher_sparsity_index(w, q))
    assert tsi == pytest.approx(d ** (1 - 1 / q) * si, rel=1e-9)
    assert d ** (1 - 1 / q) * (1 - 1e-12) <= tsi <= 1.0


@PROPERTY
@given(values=signed_vectors)
def test_implied_size_at_half(values):
    assume(any(v != 0 for v in values))
    d = len(values)
    size = float(N.si_implied_size(_vec(values), 0.5))
    explicit = math.fsum(math.sqrt(abs(v)) for v in values) ** 2 / math.fsum(abs(v) for v in values)
    assert size == pytest.approx(explicit, rel=1e-9)
    assert 1.0 - 1e-12 <= size <= d * (1 + 1e-12)


def test_implied_size_extremes():
    assert float(N.si_implied_size(_vec([0.0, 3.0, 0.0]), 0.5)) == pytest.approx(1.0)
    assert float(N.si_implied_size(_vec([2.0] * 7), 0.3)) == pytest.approx(7.0)
    # η shrinks it by (1+η)^(-1/(1-q))
    assert float(N.si_implied_size(_vec([2.0] * 7), 0.5, eta=1.0)) == pytest.approx(7.0 / 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-20, 1e-8, 1e8, 1e20])
def test_scale_invariance_at_extreme_magnitudes(dtype, scale):
    """The ratio indices are scale-free even where |w|^q under- or overflows (e.g. q = 2, |w| ~ 1e-20)."""
    base = torch.tensor([[0.3, -1.0, 0.0, 2.5, 0.01], [1.0, 1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    w, ref = (base * scale).to(dtype), base.to(dtype)
    checks = {
        "pq(1,2)": lambda x: N.pq_index(x, 1.0, 2.0),
        "pq(0.5,1)": lambda x: N.pq_index(x, 0.5, 1.0),
        "pq(2,4)": lambda x: N.pq_index(x, 2.0, 4.0),
        "si": lambda x: N.sparsity_index(x, 0.5),
        "tsi": lambda x: N.teacher_sparsity_index(x, 0.2),
        "gini": N.gini_index,
        "eta(p=2)": lambda x: N.tail_mass_ratio(x, 1, p=2.0),
        "size": lambda x: N.si_implied_size(x, 0.5),
    }
    for name, fn in checks.items():
        torch.testing.assert_close(fn(w), fn(ref), rtol=1e-5, atol=1e-6, msg=name)


def test_small_q_large_d_stays_finite():
    """||w||_q overflows for q = 0.05 and d = 4096 in float32, but the ratio indices do not."""
    w = torch.rand(3, 4096, generator=torch.Generator().manual_seed(0)) + 0.5
    assert torch.isinf(N.lq_norm(w, 0.05)).all()
    w_np = w.double().numpy()
    for value, want in [
        (N.sparsity_index(w, 0.05), oracles.sparsity_index(w_np, 0.05)),
        (N.pq_index(w, 0.05, 1.0), oracles.pq_index(w_np, 0.05, 1.0)),
        (N.si_implied_size(w, 0.05), oracles.si_implied_size(w_np, 0.05)),
    ]:
        assert torch.isfinite(value).all()
        np.testing.assert_allclose(value.double().numpy(), want, rtol=1e-3)
    # S5 bound with p = 0.05: 1 - I ~ d^(1-1/p) underflows float32, the bound d (1-I)^(p/(1-p)) does not
    one_minus_index = 4096 ** (1 - 1 / 0.05) * oracles.lq_norm(w_np, 0.05) / oracles.lq_norm(w_np, 1.0)
    np.testing.assert_allclose(
        N.retained_count_bound(w, 0.05, 1.0).double().numpy(), 4096 * one_minus_index ** (0.05 / 0.95), rtol=1e-3
    )
    # TSI ~ d^(1-1/q) = 4096^-19 is below the float32 range; in float64 it is finite and right
    tsi = N.teacher_sparsity_index(w.double(), 0.05)
    np.testing.assert_allclose(tsi.numpy(), oracles.teacher_sparsity_index(w_np, 0.05), rtol=1e-9)


# ----------------------------------------------------------------------------------------------------
# Degenerate units, errors, gradients, dtypes, devices
# ----------------------------------------------------------------------------------------------------
def test_degenerate_units_get_documented_values():
    # rows: all masked (d=0), all-zero alive entries (d=3), a single alive nonzero entry (d=1)
    w = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.0, 5.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[False, False, False], [True, True, True], [False, False, True]])
    q = 0.5
    expect = {
        "alive_count": [0, 3, 1],
        "lq_norm": [0, 0, 7],
        "pq_index": [0, 0, 0],
        "sparsity_index": [1, 1, 1],
        "teacher_sparsity_index": [1, 3 ** (1 - 1 / q), 1],
        "gini_index": [0, 0, 0],
        "tail_mass_ratio": [0, 0, 0],
        "si_implied_size": [0, 3, 1],
        "retained_count_bound": [0, 3, 1],
    }
    got = {
        "alive_count": N.alive_count(w, mask=mask),
        "lq_norm": N.lq_norm(w, q, mask=mask),
        "pq_index": N.pq_index(w, mask=mask),
        "sparsity_index": N.sparsity_index(w, q, mask=mask),
        "teacher_sparsity_index": N.teacher_sparsity_index(w, q, mask=mask),
        "gini_index": N.gini_index(w, mask=mask),
        "tail_mass_ratio": N.tail_mass_ratio(w, 1, mask=mask),
        "si_implied_size": N.si_implied_size(w, q, mask=mask),
        "retained_count_bound": N.retained_count_bound(w, mask=mask),
    }
    for name, value in got.items():
        assert not torch.isnan(value).any(), name
        np.testing.assert_allclose(value.numpy(), expect[name], rtol=1e-12, err_msg=name)


def test_degenerate_with_eta_and_empty_reduced_dimension():
    zeros = torch.zeros(2, 4)
    assert N.retained_count_bound(zeros, eta=1.0).tolist() == pytest.approx([4 * 2 ** (-1 / 0.5)] * 2)
    assert N.si_implied_size(zeros, 0.5, eta=1.0).tolist() == pytest.approx([4 / 4] * 2)
    empty = torch.zeros(3, 0)
    for value, want in [
        (N.alive_count(empty), 0.0),
        (N.lq_norm(empty, 0.5), 0.0),
        (N.pq_index(empty), 0.0),
        (N.sparsity_index(empty), 1.0),
        (N.teacher_sparsity_index(empty), 1.0),
        (N.gini_index(empty), 0.0),
        (N.tail_mass_ratio(empty, 2), 0.0),
        (N.si_implied_size(empty), 0.0),
        (N.retained_count_bound(empty), 0.0),
    ]:
        assert value.shape == (3,)
        assert value.tolist() == [want] * 3
    assert N.pq_index(torch.zeros(0, 5)).shape == (0,)  # no units at all


def test_q_equal_one_and_d_equal_one():
    w = torch.tensor([[4.0, -1.0, 0.5]])
    assert float(N.sparsity_index(w, 1.0)) == 1.0
    assert float(N.teacher_sparsity_index(w, 1.0)) == 1.0
    single = torch.tensor([[-3.0], [0.0]])
    assert N.pq_index(single).tolist() == [0.0, 0.0]  # range [0, 1 - 1] = {0}
    assert N.sparsity_index(single).tolist() == [1.0, 1.0]
    assert N.gini_index(single).tolist() == [0.0, 0.0]


W = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, 3.0]])


@pytest.mark.parametrize(
    "call",
    [
        lambda: N.lq_norm(W, 0.0),
        lambda: N.lq_norm(W, -1.0),
        lambda: N.lq_norm(W, float("nan")),
        lambda: N.lq_norm(W, float("inf")),
        lambda: N.sparsity_index(W, 1.5),
        lambda: N.teacher_sparsity_index(W, 0.0),
        lambda: N.si_implied_size(W, 1.0),
        lambda: N.pq_index(W, 1.0, 1.0),
        lambda: N.pq_index(W, 2.0, 1.0),
        lambda: N.pq_index(W, -0.5, 1.0),
        lambda: N.retained_count_bound(W, 1.0, 0.5),
        lambda: N.tail_mass_ratio(W, 0),
        lambda: N.tail_mass_ratio(W, torch.tensor([1, 0])),
        lambda: N.tail_mass_ratio(W, torch.tensor([1.5, 2.0])),
        lambda: N.tail_mass_ratio(W, torch.tensor([1, 2, 3])),
        lambda: N.si_implied_size(W, 0.5, eta=-0.1),
        lambda: N.retained_count_bound(W, eta=torch.tensor([0.1, -1.0])),
        lambda: N.pq_index(W, dim=2),
        lambda: N.pq_index(W, dim=-3),
        lambda: N.pq_index(torch.tensor(1.0)),
        lambda: N.gini_index(W, mask=torch.ones(2, 2, dtype=torch.bool)),
    ],
)
def test_value_errors(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: N.lq_norm([1.0, 2.0], 0.5),
        lambda: N.pq_index(np.ones(3)),
        lambda: N.pq_index(torch.tensor([1, 2, 3])),
        lambda: N.lq_norm(W, "0.5"),
        lambda: N.lq_norm(W, True),
        lambda: N.pq_index(W, dim=1.0),
        lambda: N.gini_index(W, mask=torch.ones(2, 3)),
        lambda: N.gini_index(W, mask=[[True] * 3] * 2),
        lambda: N.tail_mass_ratio(W, 1.0),
        lambda: N.tail_mass_ratio(W, True),
    ],
)
def test_type_errors(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("fname", ["lq_norm", "pq_index", "sparsity_index", "gini_index", "sort_magnitudes"])
def test_non_finite_entries_are_an_error_naming_w(bad, fname):
    w = torch.tensor([[1.0, bad, 0.0]])
    fn = getattr(N, fname)
    args = (0.5,) if fname == "lq_norm" else ()
    with pytest.raises(ValueError, match=r"\bw\b.*NaN or Inf"):
        fn(w, *args)
    with pytest.raises(ValueError, match="NaN or Inf"):  # even where the entry is masked out
        fn(w, *args, mask=torch.tensor([[True, False, True]]))


def test_error_messages_name_the_argument():
    with pytest.raises(ValueError, match="p=2.*q=1"):
        N.pq_index(W, 2.0, 1.0)
    with pytest.raises(ValueError, match="mask"):
        N.pq_index(W, mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="dim"):
        N.pq_index(W, dim=5)
    with pytest.raises(ValueError, match="eta"):
        N.si_implied_size(W, eta=-1.0)


@pytest.mark.parametrize("q", [0.2, 0.5, 1.0, 2.0])
def test_lq_norm_gradient_finite_at_zero_entries(q):
    w = torch.tensor([[0.0, 1.5, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, -1.0, 0.7]], dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True] * 4, [True, True, True, False]])
    x = w.clone().requires_grad_(True)
    N.lq_norm(x, q, mask=mask).sum().backward()
    grad = x.grad
    assert torch.isfinite(grad).all()
    # analytic gradient d||w||_q/dw_i = sign(w_i) |w_i|^(q-1) ||w||_q^(1-q) at nonzero alive entries, 0 elsewhere
    alive = w.masked_fill(~mask, 0.0)
    norm = oracles.lq_norm(w.numpy(), q, mask=mask.numpy())
    nonzero = alive != 0
    expected = torch.zeros_like(w)
    norm_t = torch.as_tensor(norm).unsqueeze(-1).expand_as(w)
    expected[nonzero] = (alive.sign() * alive.abs().pow(q - 1) * norm_t.pow(1 - q))[nonzero]
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_index_gradients_finite_at_zero_entries_and_zero_units():
    w = torch.tensor([[0.0, 1.0, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 3.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True] * 4, [False, True, True, True]])
    for name, fn in [
        ("pq", lambda t: N.pq_index(t, mask=mask)),
        ("pq(1,2)", lambda t: N.pq_index(t, 1.0, 2.0, mask=mask)),
        ("si", lambda t: N.sparsity_index(t, mask=mask)),
        ("tsi", lambda t: N.teacher_sparsity_index(t, mask=mask)),
        ("size", lambda t: N.si_implied_size(t, mask=mask)),
    ]:
        x = w.clone().requires_grad_(True)
        fn(x).sum().backward()
        assert torch.isfinite(x.grad).all(), name
        assert (x.grad[1] == 0).all() and x.grad[2, 0] == 0, name  # zero unit, masked entry
        # the nonzero rows' gradients match a finite-difference check of the index itself
        assert torch.autograd.gradcheck(lambda t, fn=fn: fn(t)[0], (w.clone().requires_grad_(True),)), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_keep_dtype(dtype):
    w = torch.randn(4, 6, dtype=dtype)
    for fname, kwargs in FUNCS:
        assert getattr(N, fname)(w, **kwargs).dtype == dtype, fname
    assert N.sort_magnitudes(w)[0].dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_cpu_and_cuda_agree():
    rng = np.random.default_rng(11)
    for kind in ("ties", "cauchy", "sparse"):
        w_np = oracles.random_weights(kind, (16, 33), rng)
        mask = torch.as_tensor(oracles.random_mask(w_np.shape, rng))
        w = _torch(w_np, torch.float32)
        for fname, kwargs in FUNCS:
            cpu = getattr(N, fname)(w, **kwargs, mask=mask)
            gpu = getattr(N, fname)(w.cuda(), **kwargs, mask=mask.cuda())
            assert gpu.device.type == "cuda"
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6, msg=fname)
        # ties broken identically: the orders must be equal, not merely the values
        assert torch.equal(N.sort_magnitudes(w.cuda(), mask=mask.cuda())[1].cpu(), N.sort_magnitudes(w, mask=mask)[1])


def test_index_set_equals_each_index_function():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 4, 30, generator=g) ** 3
    w[0, 0] = 0  # a zero unit
    mask = torch.rand(w.shape, generator=g) > 0.3
    mask[1, 1] = False  # a unit with nothing alive
    for m in (None, mask):
        got = N.index_set(w, 0.5, 1.0, 0.5, mask=m)
        assert torch.equal(got["pqi"], N.pq_index(w, 0.5, 1.0, mask=m))
        assert torch.equal(got["si"], N.sparsity_index(w, 0.5, mask=m))
        assert torch.equal(got["tsi"], N.teacher_sparsity_index(w, 0.5, mask=m))
        assert torch.equal(got["m"], N.si_implied_size(w, 0.5, mask=m))
    got = N.index_set(w.double(), 0.3, 2.0, 0.7, dim=1)
    assert torch.equal(got["pqi"], N.pq_index(w.double(), 0.3, 2.0, dim=1))
    assert torch.equal(got["m"], N.si_implied_size(w.double(), 0.7, dim=1))
    with pytest.raises(ValueError):
        N.index_set(w, 1.0, 0.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_index_set_accumulates_half_precision_in_float32(dtype):
    # issue #22 0b: index_set computed in the input dtype (bf16 PQI off by 0.04, 27% of its mean)
    w32 = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
    w = w32.to(dtype)
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) > 0.2
    for m in (None, mask):
        got, ref = N.index_set(w, mask=m), N.index_set(w.float(), mask=m)
        # the float32 result rounded once to the half dtype: within that dtype's half ulp (rel 2^-8 / 2^-11)
        rtol = 2.0 ** (-8 if dtype is torch.bfloat16 else -11)
        for k in ("pqi", "si", "tsi", "m"):
            assert got[k].dtype == dtype, k
            torch.testing.assert_close(got[k].float(), ref[k], rtol=rtol, atol=0, msg=k)
            assert torch.equal(got[k], N.index_set(w.float(), mask=m)[k].to(dtype)), k
        assert torch.equal(got["pqi"], N.pq_index(w, mask=m))
