"""Tests of lqtheory.engine.masks: Mask semantics, magnitude_prune, sap_prune_counts, unit views.

Oracles are slow loops in NumPy float64 / plain Python that evaluate the definitions unit by unit
(THEORY.md §1, §3), independently of lqtheory.
"""

from __future__ import annotations

import math
import os

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from lqtheory.engine.masks import SCOPES, Mask, global_magnitude_prune, prunable_tensors, unit_view
from lqtheory.theory.selection import magnitude_prune, sap_prune_counts

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------------
# Oracles (loops, NumPy float64)
# --------------------------------------------------------------------------------------------------


def _exact_snap(x):
    """An mpmath value within 1e-30 (relative) of an integer is that integer: the reference computes with
    60 digits, so this only settles values that are integers in exact arithmetic."""
    nearest = mpmath.nint(x)
    return nearest if abs(x - nearest) <= mpmath.mpf("1e-30") * max(abs(x), 1) else x


def oracle_pqi(a: np.ndarray, p: float, q: float) -> float:
    """I_{p,q} = 1 - d^(1/q-1/p) ||a||_p / ||a||_q on the alive magnitudes ``a`` (0 when degenerate)."""
    d = a.size
    if d == 0 or not np.any(a > 0):
        return 0.0
    norm_p = math.fsum(float(x) ** p for x in a) ** (1 / p)
    norm_q = math.fsum(float(x) ** q for x in a) ** (1 / q)
    return max(0.0, 1.0 - d ** (1 / q - 1 / p) * norm_p / norm_q)


def oracle_sap_count(a: np.ndarray, p, q, eta, gamma, beta) -> int:
    """⌊d · clamp(γ(1 − r/d), 0, β)⌋, r = ⌈d (1+η)^(−q/(q−p)) (1−I)^(qp/(q−p))⌉, in exact arithmetic.

    An exact reference (mpmath, 60 significant digits): the weights are the exact binary values of the
    tensor entries; p, q, η, γ, β are the decimals they print as (0.29 means 29/100, as a user means it).
    """
    d = a.size
    if d == 0:
        return 0
    with mpmath.workdps(60):
        mags = [mpmath.mpf(abs(float(x))) for x in a]
        p_, q_, eta_, gamma_, beta_ = (mpmath.mpf(repr(float(v))) for v in (p, q, eta, gamma, beta))
        if all(m == 0 for m in mags):
            one_minus_index = mpmath.mpf(1)  # degenerate unit: I = 0
        else:
            norm_p = mpmath.fsum(m**p_ for m in mags) ** (1 / p_)
            norm_q = mpmath.fsum(m**q_ for m in mags) ** (1 / q_)
            one_minus_index = min(mpmath.mpf(1), mpmath.mpf(d) ** (1 / q_ - 1 / p_) * norm_p / norm_q)
        r_real = d * (1 + eta_) ** (-q_ / (q_ - p_)) * one_minus_index ** (q_ * p_ / (q_ - p_))
        r = min(int(mpmath.ceil(_exact_snap(r_real))), d)
        by_gamma = int(mpmath.floor(_exact_snap(gamma_ * (d - r))))
        by_beta = int(mpmath.floor(_exact_snap(beta_ * d)))
    return max(min(by_gamma, by_beta), 0)


def oracle_magnitude_keep(w: np.ndarray, alive: np.ndarray, n: int) -> np.ndarray:
    """Keep the d - n alive entries that come first in the order (-|w|, index)."""
    idx = [i for i in range(w.size) if alive[i]]
    idx.sort(key=lambda i: (-abs(float(w[i])), i))
    keep = np.zeros(w.size, dtype=bool)
    keep[idx[: max(len(idx) - n, 0)]] = True
    return keep


def _units(x: np.ndarray, dim: int) -> np.ndarray:
    """(units, d) view of x with ``dim`` last."""
    return np.moveaxis(x, dim, -1).reshape(-1, x.shape[dim])


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------


@st.composite
def weights_and_mask(draw, max_units=5, max_d=12):
    units = draw(st.integers(1, max_units))
    d = draw(st.integers(0, max_d))
    kind = draw(st.sampled_from(["normal", "cauchy", "sparse", "ties", "zeros", "uniform"]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        w = torch.randn(units, d, generator=g, dtype=torch.float64)
    elif kind == "cauchy":
        w = torch.distributions.Cauchy(0.0, 1.0).sample((units, d)).double().clamp(-1e6, 1e6)
        w = torch.where(torch.rand(units, d, generator=g) < 0.5, w, -w)
    elif kind == "sparse":
        w = torch.randn(units, d, generator=g, dtype=torch.float64) * (torch.rand(units, d, generator=g) < 0.3)
    elif kind == "ties":
        w = torch.randint(-2, 3, (units, d), generator=g).double()
    elif kind == "zeros":
        w = torch.zeros(units, d, dtype=torch.float64)
    else:
        w = torch.ones(units, d, dtype=torch.float64) * draw(st.sampled_from([1.0, -0.3, 7.0]))
    use_mask = draw(st.booleans())
    mask = (torch.rand(units, d, generator=g) < draw(st.sampled_from([0.2, 0.6, 0.9]))) if use_mask else None
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return w.to(dtype), mask


pq_pairs = st.sampled_from([(0.5, 1.0), (0.25, 1.0), (1.0, 2.0), (0.5, 2.0), (0.1, 0.7), (0.9, 1.0)])


# --------------------------------------------------------------------------------------------------
# sap_prune_counts
# --------------------------------------------------------------------------------------------------


@HYP
@given(
    wm=weights_and_mask(),
    pq=pq_pairs,
    eta=st.sampled_from([0.0, 0.05, 0.5, 3.0]),
    gamma=st.sampled_from([0.3, 1.0, 2.5, 9.0]),
    beta=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
)
def test_sap_prune_counts_matches_loop_oracle(wm, pq, eta, gamma, beta):
    w, mask = wm
    p, q = pq
    got = sap_prune_counts(w, p, q, eta, gamma, beta, mask=mask)
    assert got.dtype == torch.long and got.shape == w.shape[:-1]
    wn = w.double().numpy()
    alive = np.ones(w.shape, bool) if mask is None else mask.numpy()
    expected = [oracle_sap_count(np.abs(wn[u][alive[u]]), p, q, eta, gamma, beta) for u in range(w.shape[0])]
    assert got.tolist() == expected


@HYP
@given(wm=weights_and_mask(), pq=pq_pairs, beta=st.sampled_from([0.0, 0.3, 0.9, 1.0]))
def test_sap_with_gamma_one_never_removes_more_than_beta(wm, pq, beta):
    w, mask = wm
    n = sap_prune_counts(w, *pq, eta=0.0, gamma=1.0, beta=beta, mask=mask)
    d = w.shape[-1] if mask is None else mask.sum(-1)
    d = torch.as_tensor(d).expand_as(n)
    assert bool((n >= 0).all())
    assert bool((n <= torch.floor(beta * d.double() + 1e-9)).all())
    # at η = 0 the S5 bound keeps at least one weight of a live unit (r >= 1)
    assert bool((n <= (d - 1).clamp_min(0)).all())


def test_sap_counts_on_dim_and_3d_input():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 7, 4, generator=g).exp() ** 3  # heavy-ish tail
    mask = torch.rand(3, 7, 4, generator=g) < 0.8
    got = sap_prune_counts(w, 0.5, 1.0, dim=1, mask=mask)
    wn, mn = w.numpy(), mask.numpy()
    assert got.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            a = wn[i, :, j][mn[i, :, j]]
            assert int(got[i, j]) == oracle_sap_count(a, 0.5, 1.0, 0.0, 1.0, 0.9)


def test_sap_r_rounding_does_not_jump_up():
    # uniform unit, d = 9, (1+η)^(-2) = 1/3  =>  r = 9 / 3 = 3 exactly; float64 gives 3.0000000000000004
    eta = math.sqrt(3.0) - 1.0
    real = 9 * (1 + eta) ** -2.0
    assert real != 3.0 and math.ceil(real) == 4  # the hazard is real in float64
    n = sap_prune_counts(torch.ones(1, 9), 0.5, 1.0, eta=eta, gamma=1.0, beta=1.0)
    assert n.tolist() == [6]


def test_sap_gamma_times_removable_is_snapped_before_floor():
    # 1-sparse unit: I = 1 - d^(1/q - 1/p), so r = 1; d = 101 -> γ (d - r) = 0.29 * 100 = 29
    assert math.floor(0.29 * 100) == 28  # naive float arithmetic loses one
    w = torch.zeros(1, 101, dtype=torch.float64)
    w[0, 5] = 3.0
    assert sap_prune_counts(w, 0.5, 1.0, gamma=0.29, beta=1.0).tolist() == [29]
    assert sap_prune_counts(w, 0.5, 1.0, gamma=1.0, beta=1.0).tolist() == [100]  # keeps r = 1


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_sap_bound_just_above_an_integer_rounds_up(gamma):
    # issue #14 item 8: (p, q) = (1, 2), η = 0: the bound is ||w||_1^2 / ||w||_2^2 = 1 + 2ab/(a^2 + b^2)
    # = 1.00000082 here, so r = 2 = d and nothing is pruned; a 1e-6 snap made r = 1 and pruned a weight
    w = torch.tensor([7.25e-7, -1.775])
    assert oracle_sap_count(w.numpy(), 1.0, 2.0, 0.0, gamma, 0.9) == 0
    assert sap_prune_counts(w, 1.0, 2.0, 0.0, gamma, 0.9).tolist() == 0
    assert sap_prune_counts(w.double().reshape(1, 2), 1.0, 2.0, 0.0, gamma, 1.0).tolist() == [0]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    gap=st.floats(1e-9, 1e-5),  # above the bound's float64 error estimate (~4e-12 relative)
    d=st.integers(2, 40),
    pq=pq_pairs,
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_sap_counts_near_integer_bounds_match_exact_reference(seed, gap, d, pq, dtype):
    """Units whose S5 bound lies a hair above an integer (one entry of size ~gap next to k equal large
    ones: the bound is then k + O(gap)), checked against the exact mpmath reference."""
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(1, d, (1,), generator=g))
    w = torch.zeros(3, d, dtype=torch.float64)
    w[:, :k] = 1.0 + 0.5 * torch.rand(1, generator=g, dtype=torch.float64)  # k equal large entries
    w[0, k] = gap  # a tiny extra entry
    w[1, k:] = gap * torch.rand(d - k, generator=g, dtype=torch.float64)  # several tiny ones
    w[2, k] = -gap
    w = w.to(dtype)
    p, q = pq
    for gamma in (1.0, 3.0):
        got = sap_prune_counts(w, p, q, 0.0, gamma, 1.0)
        wn = w.double().numpy()
        assert got.tolist() == [oracle_sap_count(wn[u], p, q, 0.0, gamma, 1.0) for u in range(3)]


def test_sap_degenerate_units():
    w = torch.zeros(3, 5)
    w[1] = 2.0  # uniform
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2] = False  # d = 0
    assert sap_prune_counts(w, mask=mask).tolist() == [0, 0, 0]
    assert sap_prune_counts(torch.zeros(2, 0)).tolist() == [0, 0]


def test_sap_eta_per_unit_tensor():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 20, generator=g)
    eta = torch.tensor([0.0, 0.1, 1.0, 5.0])
    got = sap_prune_counts(w, eta=eta, beta=1.0)
    for u in range(4):
        assert int(got[u]) == oracle_sap_count(np.abs(w[u].double().numpy()), 0.5, 1.0, float(eta[u]), 1.0, 1.0)
    # larger η => smaller retained bound => at least as many removed
    same = w[:1].expand(4, 20)
    counts = sap_prune_counts(same, eta=eta, beta=1.0)
    assert counts.tolist() == sorted(counts.tolist())


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"gamma": 0.0}, ValueError, "gamma"),
        ({"gamma": -1.0}, ValueError, "gamma"),
        ({"beta": 1.5}, ValueError, "beta"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"eta": -0.1}, ValueError, "eta"),
        ({"eta": torch.tensor([-1.0, 0.0])}, ValueError, "eta"),
        ({"p": 1.0, "q": 1.0}, ValueError, "p must be smaller"),
        ({"p": 2.0, "q": 1.0}, ValueError, "p must be smaller"),
        ({"gamma": "1"}, TypeError, "gamma"),
        ({"gamma": float("nan")}, ValueError, "gamma"),
    ],
)
def test_sap_validation(kwargs, err, match):
    with pytest.raises(err, match=match):
        sap_prune_counts(torch.randn(2, 5), **kwargs)


def test_sap_rejects_bad_weights():
    with pytest.raises(ValueError, match="NaN"):
        sap_prune_counts(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(TypeError, match="floating"):
        sap_prune_counts(torch.ones(2, 3, dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# magnitude_prune
# --------------------------------------------------------------------------------------------------


@HYP
@given(wm=weights_and_mask(), data=st.data())
def test_magnitude_prune_matches_sorting_oracle(wm, data):
    w, mask = wm
    units, d = w.shape
    per_unit = data.draw(st.booleans())
    if per_unit:
        n = torch.tensor(data.draw(st.lists(st.integers(0, d + 3), min_size=units, max_size=units)), dtype=torch.long)
    else:
        n = data.draw(st.integers(0, d + 3))
    got = magnitude_prune(w, n, mask=mask)
    assert got.dtype == torch.bool and got.shape == w.shape
    alive = torch.ones_like(got) if mask is None else mask
    for u in range(units):
        n_u = int(n[u]) if per_unit else n
        expected = oracle_magnitude_keep(w[u].double().numpy(), alive[u].numpy(), n_u)
        assert got[u].numpy().tolist() == expected.tolist()
    assert not bool((got & ~alive).any())  # never revives


def test_magnitude_prune_ties_remove_higher_index_first():
    w = torch.tensor([[1.0, -1.0, 1.0, 0.5, 1.0]])
    # the three smallest: 0.5 (idx 3), then among the |1| ties the highest indices 4 and 2
    assert magnitude_prune(w, 3).tolist() == [[True, True, False, False, False]]
    assert magnitude_prune(torch.zeros(1, 4), 1).tolist() == [[True, True, True, False]]


def test_magnitude_prune_never_revives_and_clips_to_alive():
    w = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    mask = torch.tensor([[False, True, False, True, True]])
    assert magnitude_prune(w, 1, mask=mask).tolist() == [[False, True, False, True, False]]
    assert magnitude_prune(w, 3, mask=mask).tolist() == [[False] * 5]
    assert magnitude_prune(w, 100, mask=mask).tolist() == [[False] * 5]
    assert magnitude_prune(w, 0, mask=mask).tolist() == mask.tolist()


def test_magnitude_prune_dim_argument_and_broadcast_counts():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 6, 3, generator=g)
    n = torch.tensor([[0, 1, 2], [3, 6, 9]])
    got = magnitude_prune(w, n, dim=1)
    for i in range(2):
        for j in range(3):
            expected = oracle_magnitude_keep(w[i, :, j].numpy(), np.ones(6, bool), int(n[i, j]))
            assert got[i, :, j].tolist() == expected.tolist()
    # a count broadcast over the leading units
    got2 = magnitude_prune(w, torch.tensor([1, 2, 3]), dim=1)
    assert got2.sum(1).tolist() == [[5, 4, 3], [5, 4, 3]]
    # integer-valued float counts are fine
    assert torch.equal(magnitude_prune(w, torch.tensor([1.0, 2.0, 3.0]), dim=1), got2)


def test_magnitude_prune_one_dimensional_input_with_ties_at_the_cut():
    # issue #14 item 1: a 1-D input whose threshold ties straddled the cut raised IndexError
    w = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0])
    assert magnitude_prune(w, 1).tolist() == [True, True, False, True, True]
    assert magnitude_prune(w, 1).tolist() == magnitude_prune(w.reshape(1, 5), 1)[0].tolist()
    assert magnitude_prune(torch.ones(3), 2).tolist() == [True, False, False]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1000, generator=g).round()  # many ties at every cut
    mask = torch.rand(1000, generator=g) < 0.8
    for n, m in [(100, None), (100, mask), (torch.tensor(7), mask), (0, None), (2000, mask)]:
        got = magnitude_prune(w, n, mask=m)
        alive = np.ones(1000, bool) if m is None else m.numpy()
        assert got.shape == w.shape
        assert got.tolist() == oracle_magnitude_keep(w.numpy(), alive, int(n)).tolist()
    with pytest.raises(ValueError, match="broadcast"):
        magnitude_prune(w, torch.tensor([1, 2]))


def test_magnitude_prune_validation():
    w = torch.randn(2, 4)
    with pytest.raises(ValueError, match="n_prune must be >= 0"):
        magnitude_prune(w, -1)
    with pytest.raises(ValueError, match="n_prune must be >= 0"):
        magnitude_prune(w, torch.tensor([1, -2]))
    with pytest.raises(ValueError, match="whole numbers"):
        magnitude_prune(w, torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="broadcast"):
        magnitude_prune(w, torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="n_prune"):
        magnitude_prune(w, 1.0)
    with pytest.raises(TypeError, match="n_prune"):
        magnitude_prune(w, True)
    with pytest.raises(ValueError, match="shape"):
        magnitude_prune(w, 1, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        magnitude_prune(w, 1, mask=torch.ones(2, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["alive", "pruned"])
def test_magnitude_prune_rejects_non_finite_weights(bad, where):
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    w[1, 2] = bad
    mask = None if where == "alive" else torch.tensor([[True, True, True], [True, True, False]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        magnitude_prune(w, 1, mask=mask)


def test_magnitude_prune_long_rows_with_ties_at_the_cut_match_oracle():
    # Long rows of few distinct magnitudes: almost every unit's threshold is tied with pruned entries,
    # so the tie-settling path decides most of the mask (dim 0, counts per unit, a mask).
    g = torch.Generator().manual_seed(11)
    w = torch.randint(-3, 4, (300, 7), generator=g).float()
    mask = torch.rand(300, 7, generator=g) < 0.8
    n = torch.randint(0, 320, (7,), generator=g)
    # per-unit counts (threshold by sort), and one count for every unit without a mask (by kthvalue)
    for counts, alive in ((n, mask), (137, None), (0, None), (300, None)):
        got = magnitude_prune(w, counts, dim=0, mask=alive)
        for j in range(7):
            n_j = int(counts[j]) if isinstance(counts, torch.Tensor) else counts
            a = torch.ones(300, dtype=torch.bool) if alive is None else alive[:, j]
            expected = oracle_magnitude_keep(w[:, j].double().numpy(), a.numpy(), n_j)
            assert got[:, j].tolist() == expected.tolist()


def test_global_magnitude_prune_ties_by_global_position():
    weights = {"a": torch.tensor([[1.0, 2.0], [1.0, 3.0]]), "b": torch.tensor([[1.0, 2.0, 0.5]])}
    got = global_magnitude_prune(weights, 3)
    # 0.5 first, then the |1| ties from the highest global position: b[0,0], then a[1,0]
    assert got["a"].tolist() == [[True, True], [False, True]]
    assert got["b"].tolist() == [[False, True, False]]


def test_global_magnitude_prune_matches_flat_oracle():
    g = torch.Generator().manual_seed(5)
    weights = {
        "x.weight": torch.randint(-3, 4, (4, 5), generator=g).float(),
        "x.bias": torch.randn(4, generator=g),  # 1-D: not prunable, ignored
        "y.weight": torch.randint(-3, 4, (2, 3, 2, 2), generator=g).float(),
    }
    mask = {"x.weight": torch.rand(4, 5, generator=g) < 0.7, "y.weight": torch.rand(2, 3, 2, 2, generator=g) < 0.7}
    got = global_magnitude_prune(weights, 9, Mask(mask))
    flat_w = np.concatenate([weights[k].numpy().ravel() for k in mask])
    flat_m = np.concatenate([mask[k].numpy().ravel() for k in mask])
    keep = oracle_magnitude_keep(flat_w, flat_m, 9)
    assert np.concatenate([got[k].numpy().ravel() for k in mask]).tolist() == keep.tolist()
    assert set(got) == {"x.weight", "y.weight"}


# --------------------------------------------------------------------------------------------------
# unit_view
# --------------------------------------------------------------------------------------------------


def _weight_dict(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(3, 2, 2, 2, generator=g, dtype=dtype),
        "conv.bias": torch.randn(3, generator=g, dtype=dtype),
        "fc.weight": torch.randn(4, 12, generator=g, dtype=dtype),
        "out.weight": torch.randn(2, 4, generator=g, dtype=dtype),
    }


@pytest.mark.parametrize("scope", SCOPES)
def test_unit_view_layout_and_round_trip(scope):
    w = _weight_dict()
    g = torch.Generator().manual_seed(1)
    mask = {k: torch.rand(v.shape, generator=g) < 0.6 for k, v in w.items() if v.dim() > 1}
    view = unit_view(w, scope, mask)
    assert view.names == ("conv.weight", "fc.weight", "out.weight")
    expected_rows = {"neuron": 3 + 4 + 2, "layer": 3, "global": 1}[scope]
    expected_width = {"neuron": 12, "layer": 48, "global": 24 + 48 + 8}[scope]
    assert tuple(view.values.shape) == (expected_rows, expected_width)
    # alive count preserved: padding is masked
    assert int(view.mask.sum()) == sum(int(m.sum()) for m in mask.values())
    back = view.to_dict(view.values)
    back_mask = view.to_dict(view.mask)
    for k in mask:
        assert torch.equal(back[k], w[k]) and torch.equal(back_mask[k], mask[k])
    if scope == "neuron":
        assert view.layer.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
        assert torch.equal(view.values[0, :8], w["conv.weight"][0].flatten())
        assert not bool(view.mask[0, 8:].any()) and bool((view.values[0, 8:] == 0).all())
    elif scope == "layer":
        assert view.layer.tolist() == [0, 1, 2]
    else:
        assert view.layer.tolist() == [-1]


def test_unit_view_blocks_group_equal_widths_without_padding():
    g = torch.Generator().manual_seed(3)
    w = {
        "a.weight": torch.randn(3, 8, generator=g),
        "b.weight": torch.randn(5, 8, generator=g),  # same width as a: same block
        "c.weight": torch.randn(2, 3, 2, generator=g),  # width 6
        "d.weight": torch.randn(4, 8, generator=g),  # width 8 again, but not consecutive: its own block
    }
    mask = {k: torch.rand(v.shape, generator=g) < 0.7 for k, v in w.items()}
    view = unit_view(w, "neuron", mask)
    assert [tuple(v.shape) for v, _ in view.blocks] == [(8, 8), (2, 6), (4, 8)]
    assert view.block_of == (0, 0, 1, 2) and (view.units, view.width) == (14, 8)
    assert torch.equal(view.blocks[0][0], torch.cat([w["a.weight"], w["b.weight"]]))
    assert torch.equal(view.blocks[1][1], mask["c.weight"].reshape(2, 6))
    # per-unit results follow the unit order of the padded view
    assert torch.equal(view.alive_counts(), view.mask.sum(1))
    assert [len(x) for x in view.split_units(torch.arange(14))] == [8, 2, 4]
    back = view.blocks_to_dict([m for _, m in view.blocks])
    assert all(torch.equal(back[k], mask[k]) for k in w)
    with pytest.raises(ValueError, match="one tensor per block"):
        view.blocks_to_dict([m for _, m in view.blocks[:2]])
    # the same pruning through blocks and through the padded view
    n = torch.arange(14) % 5
    padded = view.to_dict(magnitude_prune(view.values, n, mask=view.mask))
    blocked = view.blocks_to_dict(
        magnitude_prune(v, c, mask=m) for (v, m), c in zip(view.blocks, view.split_units(n), strict=True)
    )
    assert all(torch.equal(padded[k], blocked[k]) for k in w)
    by_helper = global_magnitude_prune(w, n, mask, "neuron")
    assert all(torch.equal(by_helper[k], blocked[k]) for k in w)


def test_unit_view_without_mask_uses_prunable_tensors_and_validates():
    w = _weight_dict()
    view = unit_view(w, "neuron")
    assert "conv.bias" not in view.names and bool(view.mask[3:7].all())
    with pytest.raises(ValueError, match="scope"):
        unit_view(w, "row")
    with pytest.raises(ValueError, match="no tensor of that name"):
        unit_view(w, "neuron", {"missing.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        unit_view(w, "neuron", {"fc.weight": torch.ones(4, 11, dtype=torch.bool)})
    with pytest.raises(ValueError, match="NaN"):
        unit_view({"a": torch.tensor([[1.0, float("inf")]])}, "layer")


def test_unit_view_to_dict_rejects_wrong_layout():
    view = unit_view(_weight_dict(), "layer")
    with pytest.raises(ValueError, match="expected the view"):
        view.to_dict(torch.zeros(2, 48))


# --------------------------------------------------------------------------------------------------
# Mask
# --------------------------------------------------------------------------------------------------


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))


def _random_mask(model, seed=0, frac=0.6):
    g = torch.Generator().manual_seed(seed)
    return Mask(
        {n: torch.rand(t.shape, generator=g) < frac for n, t in prunable_tensors(model).items()}, reference=model
    )


def test_mask_ones_like_covers_prunable_only():
    model = _model()
    mask = Mask.ones_like(model)
    assert list(mask) == ["0.weight", "3.weight", "5.weight"]
    assert mask.count_total() == 3 * 2 * 9 + 12 * 5 + 5 * 2 == mask.count_alive()
    assert mask.fraction_alive() == 1.0
    from_dict = Mask.ones_like(dict(model.named_parameters()))
    assert from_dict == mask


def test_mask_counts_are_fractions_of_total():
    mask = Mask({"a": torch.tensor([[True, False], [False, False]]), "b": torch.ones(2, 3, dtype=torch.bool)})
    assert mask.alive_per_layer() == {"a": 1, "b": 6}
    assert mask.total_per_layer() == {"a": 4, "b": 6}
    assert mask.fraction_alive_per_layer() == {"a": 0.25, "b": 1.0}
    assert mask.count_alive() == 7 and mask.count_total() == 10
    assert mask.fraction_alive() == pytest.approx(0.7)
    assert Mask().fraction_alive() == 1.0 and Mask().count_total() == 0
    text = repr(mask)
    assert "70.00%" in text and "a: 25.00%" in text and "b: 100.00%" in text


@pytest.mark.parametrize(
    ("masks", "err", "match"),
    [
        ({"0.weight": torch.ones(3, 2, 3, 3)}, TypeError, "torch.bool"),
        ({"0.weight": torch.ones(3, 2, 3, dtype=torch.bool)}, ValueError, "shape"),
        ({"0.bias": torch.ones(3, dtype=torch.bool)}, ValueError, "no prunable tensor"),
        ({"nope.weight": torch.ones(3, 3, dtype=torch.bool)}, ValueError, "no prunable tensor"),
        ({1: torch.ones(3, 3, dtype=torch.bool)}, TypeError, "names"),
        ({"": torch.ones(3, 3, dtype=torch.bool)}, TypeError, "names"),
        ({"0.weight": [[True]]}, TypeError, "torch.Tensor"),
    ],
)
def test_mask_validation_against_reference(masks, err, match):
    with pytest.raises(err, match=match):
        Mask(masks, reference=_model())


def test_mask_validation_without_reference():
    with pytest.raises(ValueError, match="at least one dimension"):
        Mask({"a": torch.tensor(True)})
    with pytest.raises(TypeError, match="mapping"):
        Mask([("a", torch.ones(2, dtype=torch.bool))])
    with pytest.raises(TypeError, match="reference"):
        Mask({}, reference=[1, 2])
    with pytest.raises(TypeError, match=r"weights\['x'\]"):
        Mask({}, reference={"x": 3})
    # a subset of the reference's prunable tensors is fine
    assert list(Mask({"3.weight": torch.ones(5, 12, dtype=torch.bool)}, reference=_model())) == ["3.weight"]


def test_mask_is_read_only_mapping_and_equality():
    mask = _random_mask(_model())
    with pytest.raises(TypeError):
        mask["0.weight"] = torch.ones(1, dtype=torch.bool)  # type: ignore[index]
    other = Mask({k: v.clone() for k, v in mask.items()})
    assert mask == other and not (mask != other)
    flipped = {k: v.clone() for k, v in mask.items()}
    flipped["5.weight"][0, 0] = ~flipped["5.weight"][0, 0]
    assert mask != Mask(flipped)
    assert mask != Mask({k: v for k, v in mask.items() if k != "0.weight"})
    assert (mask == dict(mask)) is False  # a plain dict is not a Mask
    with pytest.raises(TypeError):
        hash(mask)


def test_mask_issubset_and_intersection():
    model = _model()
    a, b = _random_mask(model, 1), _random_mask(model, 2)
    both = a & b
    assert both.issubset(a) and both.issubset(b)
    assert Mask.ones_like(model).issubset(Mask.ones_like(model))
    assert not Mask.ones_like(model).issubset(a)
    assert both.count_alive() == sum(int((a[k] & b[k]).sum()) for k in a)
    with pytest.raises(ValueError, match="different names"):
        a & Mask({"0.weight": a["0.weight"]})


def test_mask_save_load_round_trip(tmp_path):
    model = _model()
    mask = _random_mask(model)
    path = tmp_path / "sub" / "mask.pt"
    mask.save(path)
    assert os.listdir(path.parent) == ["mask.pt"]  # no temporary file left behind
    loaded = Mask.load(path, reference=model)
    assert loaded == mask and list(loaded) == list(mask)
    payload = torch.load(path, weights_only=True)
    assert type(payload) is dict and all(v.dtype == torch.bool for v in payload.values())
    mask.save(path)  # overwrite in place
    assert Mask.load(path) == mask


def test_mask_load_rejects_corrupt_and_foreign_files(tmp_path):
    model = _model()
    good = tmp_path / "good.pt"
    _random_mask(model).save(good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable mask file"):
        Mask.load(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all")
    with pytest.raises(ValueError, match="not a readable mask file"):
        Mask.load(garbage)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.ones(2, dtype=torch.bool)], not_dict)
    with pytest.raises(ValueError, match="dict"):
        Mask.load(not_dict)
    float_mask = tmp_path / "float.pt"
    torch.save({"0.weight": torch.ones(3, 2, 3, 3)}, float_mask)
    with pytest.raises(ValueError, match="not a bool tensor"):
        Mask.load(float_mask)
    with pytest.raises(ValueError, match="shape"):
        Mask.load(good, reference=nn.Sequential(nn.Conv2d(2, 3, 2)))
    with pytest.raises(FileNotFoundError):
        Mask.load(tmp_path / "missing.pt")


def test_apply_to_zeroes_pruned_weights_in_place():
    model = _model()
    mask = _random_mask(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert mask.apply_to(model) is model
    for name, p in model.named_parameters():
        if name in mask:
            assert torch.equal(p.detach(), before[name] * mask[name])
        else:
            assert torch.equal(p.detach(), before[name])  # biases untouched
    with pytest.raises(ValueError, match="no prunable tensor"):
        Mask({"zzz.weight": torch.ones(2, 2, dtype=torch.bool)}).apply_to(model)


def test_torch_prune_round_trip_gradients_and_remove():
    model = _model()
    mask = _random_mask(model)
    x = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(9))
    reference = mask.apply_to(_model())  # same init, zeroed copy
    expected = reference(x)

    mask.to_torch_prune(model)
    assert prune.is_pruned(model)
    keys = set(model.state_dict())
    assert {"0.weight_orig", "0.weight_mask", "3.weight_orig", "5.weight_mask"} <= keys
    assert Mask.from_torch_prune(model) == mask
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    model(x).sum().backward()
    for name in mask:
        module_name, attr = name.rsplit(".", 1)
        orig = getattr(model.get_submodule(module_name), f"{attr}_orig")
        assert bool((orig.grad[~mask[name]] == 0).all())  # gradients vanish on pruned entries
    for name in mask:
        module_name, attr = name.rsplit(".", 1)
        prune.remove(model.get_submodule(module_name), attr)
    assert not prune.is_pruned(model)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    assert Mask.ones_like(model) != mask  # the re-parametrisation is gone; weights stay zero
    assert all(bool((p[~mask[n]] == 0).all()) for n, p in prunable_tensors(model).items())


def test_to_torch_prune_composes_and_apply_to_pruned_model():
    model = _model()
    first = _random_mask(model, 1)
    second = _random_mask(model, 2)
    first.to_torch_prune(model)
    second.to_torch_prune(model)  # torch multiplies the masks
    assert Mask.from_torch_prune(model) == (first & second)
    # prunable names of a re-parametrised model are the original ones
    assert list(prunable_tensors(model)) == list(first)
    Mask.ones_like(model)  # validates against weight_orig shapes


def test_from_torch_prune_requires_pruned_model():
    with pytest.raises(ValueError, match="no torch.nn.utils.prune masks"):
        Mask.from_torch_prune(_model())
    with pytest.raises(TypeError, match="nn.Module"):
        Mask.from_torch_prune({"a": 1})


def test_mask_to_device_cpu_noop_and_load_device(tmp_path):
    mask = _random_mask(_model())
    assert mask.to("cpu") == mask
    mask.save(tmp_path / "m.pt")
    assert Mask.load(tmp_path / "m.pt", device="cpu") == mask


# --------------------------------------------------------------------------------------------------
# CUDA agreement
# --------------------------------------------------------------------------------------------------


@cuda
def test_cpu_cuda_agreement():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-3, 4, (16, 50), generator=g).float()  # many ties
    mask = torch.rand(16, 50, generator=g) < 0.7
    n = torch.randint(0, 40, (16,), generator=g)
    cpu = magnitude_prune(w, n, mask=mask)
    gpu = magnitude_prune(w.cuda(), n.cuda(), mask=mask.cuda())
    assert torch.equal(cpu, gpu.cpu())
    w2 = torch.randn(16, 50, generator=g) ** 3
    assert torch.equal(sap_prune_counts(w2, mask=mask), sap_prune_counts(w2.cuda(), mask=mask.cuda()).cpu())
    weights = _weight_dict()
    assert all(
        torch.equal(a, b.cpu())
        for a, b in zip(
            global_magnitude_prune(weights, 20).values(),
            global_magnitude_prune({k: v.cuda() for k, v in weights.items()}, 20).values(),
            strict=True,
        )
    )
    mask_obj = _random_mask(_model())
    assert mask_obj.to("cuda") == mask_obj
