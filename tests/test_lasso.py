"""Batched Lasso against scikit-learn's Lasso (the oracle) and against its own definitions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from lqtheory.theory.lasso import (
    lasso,
    lasso_gram,
    lasso_lambda_max,
    lasso_objective,
    lasso_path,
    refit_least_squares,
    refit_least_squares_gram,
)

F64 = torch.float64


def _sk(X: np.ndarray, y: np.ndarray, lam: float):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = Lasso(alpha=lam, fit_intercept=True, tol=1e-10, max_iter=100000).fit(X, y)
    return m.coef_, float(m.intercept_)


def _np_objective(X, y, coef, intercept, lam):
    r = y - X @ coef - intercept
    return 0.5 * np.mean(r * r) + lam * np.abs(coef).sum()


def _design(n, p, rho=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, p, generator=g, dtype=F64)
    if rho == 0:
        return Z
    X = torch.empty_like(Z)
    X[:, 0] = Z[:, 0]
    for j in range(1, p):  # AR(1) columns: corr(X_i, X_j) = rho^|i-j|
        X[:, j] = rho * X[:, j - 1] + (1 - rho**2) ** 0.5 * Z[:, j]
    return X


def _targets(X, K, s=5, noise=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    p = X.shape[-1]
    B = torch.zeros(p, K, dtype=F64)
    B[:s] = torch.randn(s, K, generator=g, dtype=F64) * 2
    return X @ B + noise * torch.randn(X.shape[0], K, generator=g, dtype=F64) + 1.5


def _assert_matches_sklearn(X, y, lam, coef, intercept, rtol=1e-6):
    Xn, yn = X.double().numpy(), y.double().numpy()
    sk_coef, sk_int = _sk(Xn, yn, lam)
    ours = coef.double().numpy()
    o_ours = _np_objective(Xn, yn, ours, float(intercept), lam)
    o_sk = _np_objective(Xn, yn, sk_coef, sk_int, lam)
    assert abs(o_ours - o_sk) <= rtol * abs(o_sk), (o_ours, o_sk)
    # same support, except where the coefficient is itself tiny in both solutions
    diff = (np.abs(ours) > 1e-8) != (np.abs(sk_coef) > 1e-8)
    assert np.all(np.abs(sk_coef[diff]) < 1e-6) and np.all(np.abs(ours[diff]) < 1e-6)
    return sk_coef


@pytest.mark.parametrize(
    ("n", "p", "rho", "frac"),
    [(120, 30, 0.0, 0.1), (120, 30, 0.9, 0.05), (40, 100, 0.0, 0.2), (40, 100, 0.9, 0.1), (200, 10, 0.5, 0.01)],
)
def test_shared_design_many_targets_match_sklearn(n, p, rho, frac):
    X = _design(n, p, rho, seed=n + p)
    Y = _targets(X, K=6, seed=p)
    lam = frac * lasso_lambda_max(X, Y)  # per target, so every problem has a non-trivial solution
    res = lasso(X, Y, lam, tol=1e-12, max_iter=100000)
    assert res.coef.shape == (6, p) and res.intercept.shape == (6,)
    assert bool(res.converged.all())
    assert res.dual_gap.shape == (6,) and bool((res.dual_gap >= 0).all())
    for k in range(6):
        _assert_matches_sklearn(X, Y[:, k], float(lam[k]), res.coef[k], res.intercept[k])
    # the fit is genuinely sparse and non-trivial, so the comparison above has teeth
    nnz = (res.coef != 0).sum(1)
    assert bool((nnz > 0).all()) and bool((nnz < p).any())


def test_per_problem_lambda_and_intercept():
    X = _design(80, 20, 0.3, seed=3)
    Y = _targets(X, K=4, seed=4)
    lam = torch.tensor([0.01, 0.1, 0.5, 5.0], dtype=F64)
    res = lasso(X, Y, lam, tol=1e-12, max_iter=100000)
    for k in range(4):
        sk_coef = _assert_matches_sklearn(X, Y[:, k], float(lam[k]), res.coef[k], res.intercept[k])
        Xn, yn = X.numpy(), Y[:, k].numpy()
        assert abs(float(res.intercept[k]) - (yn.mean() - Xn.mean(0) @ sk_coef)) < 1e-6
    assert torch.equal(res.lam, lam)
    # larger penalty, fewer non-zeros here (independent problems but a clear spread of lam)
    assert int((res.coef[3] != 0).sum()) < int((res.coef[0] != 0).sum())


def test_batched_designs_match_sklearn_and_shared_path():
    K, n, p = 3, 60, 15
    X = torch.stack([_design(n, p, rho, seed=10 + k) for k, rho in enumerate([0.0, 0.6, 0.95])])
    Y = torch.stack([_targets(X[k], 1, seed=20 + k)[:, 0] for k in range(K)], dim=1)
    lam = torch.tensor([0.05, 0.02, 0.1], dtype=F64)
    res = lasso(X, Y, lam, tol=1e-12, max_iter=100000)
    assert bool(res.converged.all())
    for k in range(K):
        _assert_matches_sklearn(X[k], Y[:, k], float(lam[k]), res.coef[k], res.intercept[k])
        single = lasso(X[k], Y[:, k], float(lam[k]), tol=1e-12, max_iter=100000)
        torch.testing.assert_close(single.coef, res.coef[k], atol=1e-7, rtol=0)


def test_lambda_max_gives_exact_zeros():
    X = _design(50, 12, 0.5, seed=7)
    Y = _targets(X, K=3, seed=8)
    lam_max = lasso_lambda_max(X, Y)
    Xc, Yc = X.numpy() - X.numpy().mean(0), Y.numpy() - Y.numpy().mean(0)
    np.testing.assert_allclose(lam_max.numpy(), np.abs(Xc.T @ Yc).max(0) / 50, rtol=1e-12)
    at = lasso(X, Y, lam_max, tol=1e-12)
    assert bool((at.coef == 0).all()) and bool(at.converged.all()) and bool((at.n_iter == 0).all())
    torch.testing.assert_close(at.intercept, Y.mean(0))
    above = lasso(X, Y, lam_max * 1.5 + 1.0)
    assert bool((above.coef == 0).all())
    below = lasso(X, Y, lam_max * (1 - 1e-3), tol=1e-12)
    assert bool(((below.coef != 0).sum(1) >= 1).all())
    # scikit-learn agrees just below lam_max (a single coordinate enters)
    for k in range(3):
        _assert_matches_sklearn(X, Y[:, k], float(lam_max[k]) * (1 - 1e-3), below.coef[k], below.intercept[k])


def test_one_dimensional_target_drops_the_problem_dimension():
    X = _design(40, 8, seed=9)
    y = _targets(X, 1, seed=10)[:, 0]
    res = lasso(X, y, 0.05, tol=1e-12)
    assert res.coef.shape == (8,) and res.intercept.dim() == 0 and res.converged.dim() == 0
    _assert_matches_sklearn(X, y, 0.05, res.coef, res.intercept)
    assert lasso_lambda_max(X, y).dim() == 0
    assert lasso_objective(X, y, res.coef, res.intercept, 0.05).dim() == 0


def test_float32_close_to_float64_oracle():
    X = _design(150, 25, 0.7, seed=11)
    Y = _targets(X, 5, seed=12)
    lam = 0.05
    res = lasso(X.float(), Y.float(), lam, tol=1e-6, max_iter=10000)
    assert res.coef.dtype == torch.float32 and bool(res.converged.all())
    for k in range(5):
        sk_coef, sk_int = _sk(X.numpy(), Y[:, k].numpy(), lam)
        o_ours = _np_objective(X.numpy(), Y[:, k].numpy(), res.coef[k].double().numpy(), float(res.intercept[k]), lam)
        o_sk = _np_objective(X.numpy(), Y[:, k].numpy(), sk_coef, sk_int, lam)
        assert abs(o_ours - o_sk) <= 1e-4 * o_sk
        big = np.abs(sk_coef) > 1e-2  # clearly selected coefficients are selected in float32 too
        assert np.all(res.coef[k].numpy()[big] != 0)


def test_nonconvergence_is_flagged():
    X = _design(60, 40, 0.95, seed=13)
    Y = _targets(X, 3, seed=14)
    res = lasso(X, Y, 0.01, tol=1e-14, max_iter=2)
    assert not bool(res.converged.any())
    assert bool((res.n_iter == 2).all())
    tol_abs = 1e-14 * (Y - Y.mean(0)).pow(2).mean(0)
    assert bool((res.dual_gap > tol_abs).all())
    zero = lasso(X, Y, 0.01, max_iter=0)
    assert bool((zero.coef == 0).all()) and not bool(zero.converged.any()) and bool((zero.n_iter == 0).all())


def test_dual_gap_matches_definition_and_bounds_suboptimality():
    X = _design(70, 20, 0.8, seed=15)
    Y = _targets(X, 2, seed=16)
    lam = 0.03
    rough = lasso(X, Y, lam, tol=1e-14, max_iter=3)
    exact = lasso(X, Y, lam, tol=1e-13, max_iter=100000)
    f_rough = lasso_objective(X, Y, rough.coef, rough.intercept, lam)
    f_exact = lasso_objective(X, Y, exact.coef, exact.intercept, lam)
    # weak duality: the reported gap bounds the primal suboptimality
    assert bool((f_rough - f_exact <= rough.dual_gap * (1 + 1e-9) + 1e-15).all())
    assert bool((f_rough - f_exact > 0).all())
    # independent recomputation of the gap from the residual (NumPy)
    for k in range(2):
        Xn, yn = X.numpy(), Y[:, k].numpy()
        Xc, yc = Xn - Xn.mean(0), yn - yn.mean()
        b = rough.coef[k].numpy()
        r = yc - Xc @ b
        dn = np.abs(Xc.T @ r).max() / 70
        s = min(1.0, lam / dn)
        gap = 0.5 * (r @ r) / 70 * (1 + s * s) - s * (r @ yc) / 70 + lam * np.abs(b).sum()
        assert abs(gap - float(rough.dual_gap[k])) <= 1e-9 * (yc @ yc) / 70


def test_warm_start_and_path():
    X = _design(80, 30, 0.6, seed=17)
    Y = _targets(X, 4, seed=18)
    sol = lasso(X, Y, 0.05, tol=1e-10, max_iter=100000)
    again = lasso(X, Y, 0.05, tol=1e-10, init=sol.coef)
    assert bool((again.n_iter <= 1).all())
    torch.testing.assert_close(again.coef, sol.coef, atol=1e-9, rtol=0)
    lambdas = [0.02, 0.3, 0.05, 0.1]  # deliberately unsorted: returned in this order
    path = lasso_path(X, Y, lambdas, tol=1e-11, max_iter=100000)
    assert path.coef.shape == (4, 4, 30) and path.intercept.shape == (4, 4)
    assert bool(path.converged.all())
    for m, lam in enumerate(lambdas):
        single = lasso(X, Y, lam, tol=1e-11, max_iter=100000)
        torch.testing.assert_close(path.coef[m], single.coef, atol=1e-6, rtol=0)
        f_path = lasso_objective(X, Y, path.coef[m], path.intercept[m], lam)
        f_single = lasso_objective(X, Y, single.coef, single.intercept, lam)
        torch.testing.assert_close(f_path, f_single, rtol=1e-9, atol=0)
    per_problem = lasso_path(X, Y, torch.tensor([[0.3] * 4, [0.05] * 4], dtype=F64), tol=1e-11)
    torch.testing.assert_close(per_problem.coef[1], path.coef[2], atol=1e-6, rtol=0)


def test_screening_does_not_change_the_solution():
    X = _design(90, 40, 0.9, seed=19)
    Y = _targets(X, 5, seed=20)
    a = lasso(X, Y, 0.02, tol=1e-12, max_iter=100000, screening=True)
    b = lasso(X, Y, 0.02, tol=1e-12, max_iter=100000, screening=False)
    torch.testing.assert_close(a.coef, b.coef, atol=1e-7, rtol=0)


def test_degenerate_columns_and_targets():
    X = _design(50, 6, seed=21)
    X[:, 2] = 3.0  # constant column: zero after centring, its coefficient must stay 0
    Y = _targets(X, 2, seed=22)
    Y[:, 1] = -2.0  # constant target: all-zero solution, intercept = the constant
    res = lasso(X, Y, 0.01, tol=1e-12)
    assert bool((res.coef[:, 2] == 0).all())
    assert bool((res.coef[1] == 0).all()) and float(res.intercept[1]) == pytest.approx(-2.0)
    assert bool(res.converged.all())


def test_zero_penalty_is_least_squares():
    X = _design(100, 8, 0.5, seed=23)
    Y = _targets(X, 2, seed=24)
    res = lasso(X, Y, 0.0, tol=1e-14, max_iter=100000)
    A = np.hstack([X.numpy(), np.ones((100, 1))])
    sol = np.linalg.lstsq(A, Y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(res.coef.numpy(), sol[:8].T, atol=1e-6)
    np.testing.assert_allclose(res.intercept.numpy(), sol[8], atol=1e-6)


def test_lasso_gram_equals_lasso():
    X = _design(60, 10, 0.4, seed=25)
    Y = _targets(X, 3, seed=26)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    res = lasso_gram(
        Xc.T @ Xc / 60, (Xc.T @ Yc).T / 60, Yc.pow(2).mean(0), 0.05, n=60,
        x_mean=X.mean(0), y_mean=Y.mean(0), tol=1e-12,
    )
    ref = lasso(X, Y, 0.05, tol=1e-12)
    torch.testing.assert_close(res.coef, ref.coef)
    torch.testing.assert_close(res.intercept, ref.intercept)


def test_refit_least_squares_matches_numpy_on_the_support():
    X = _design(70, 12, 0.6, seed=27)
    Y = _targets(X, 3, seed=28)
    support = torch.zeros(3, 12, dtype=torch.bool)
    support[0, [0, 3, 4]] = True
    support[1, :] = True
    # support[2] empty: intercept only
    coef, intercept = refit_least_squares(X, Y, support)
    for k in range(3):
        cols = support[k].nonzero().flatten().numpy()
        A = np.hstack([X.numpy()[:, cols], np.ones((70, 1))])
        sol = np.linalg.lstsq(A, Y[:, k].numpy(), rcond=None)[0]
        expect = np.zeros(12)
        expect[cols] = sol[:-1]
        np.testing.assert_allclose(coef[k].numpy(), expect, atol=1e-9)
        assert float(intercept[k]) == pytest.approx(sol[-1], abs=1e-9)
    assert bool((coef[~support] == 0).all())
    # a duplicated column makes the support's Gram singular: the minimum-norm solution is used
    Xd = torch.cat([X[:, :3], X[:, :1]], dim=1)
    sup = torch.ones(1, 4, dtype=torch.bool)
    cd, _ = refit_least_squares(Xd, Y[:, :1], sup)
    assert torch.isfinite(cd).all()
    assert float(cd[0, 0]) == pytest.approx(float(cd[0, 3]), rel=1e-6)
    # batched Gram form agrees with the shared one
    Xc = X - X.mean(0)
    G = Xc.T @ Xc / 70
    c = ((Xc.T @ (Y - Y.mean(0))).T / 70)
    torch.testing.assert_close(refit_least_squares_gram(G.expand(3, 12, 12), c, support), coef)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(5, 40),
    p=st.integers(1, 30),
    frac=st.floats(0.01, 1.2),
    seed=st.integers(0, 10_000),
    heavy=st.booleans(),
)
def test_random_problems_match_sklearn(n, p, frac, seed, heavy):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=F64)
    if heavy:  # heavy-tailed design entries
        X = X / torch.rand(n, p, generator=g, dtype=F64).clamp_min(0.05)
    y = X[:, : min(p, 3)].sum(1) + torch.randn(n, generator=g, dtype=F64)
    lam_max = float(lasso_lambda_max(X, y))
    lam = max(frac * lam_max, 1e-3)
    res = lasso(X, y, lam, tol=1e-12, max_iter=200000)
    assert bool(res.converged)
    Xn, yn = X.numpy(), y.numpy()
    sk_coef, sk_int = _sk(Xn, yn, lam)
    o_ours = _np_objective(Xn, yn, res.coef.numpy(), float(res.intercept), lam)
    o_sk = _np_objective(Xn, yn, sk_coef, sk_int, lam)
    assert o_ours <= o_sk * (1 + 1e-6) + 1e-12
    if frac >= 1:
        assert bool((res.coef == 0).all())


def test_bad_inputs():
    X = _design(20, 5)
    Y = _targets(X, 2)
    with pytest.raises(ValueError, match="Y has 19 rows"):
        lasso(X, Y[:19], 0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        lasso(X, Y, -0.1)
    with pytest.raises(ValueError, match="lam must be a scalar or have shape"):
        lasso(X, Y, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="lam contains NaN"):
        lasso(X, Y, float("nan"))
    Xn = X.clone()
    Xn[0, 0] = float("nan")
    with pytest.raises(ValueError, match="X contains NaN"):
        lasso(Xn, Y, 0.1)
    Yn = Y.clone()
    Yn[1, 1] = float("inf")
    with pytest.raises(ValueError, match="Y contains NaN or Inf"):
        lasso(X, Yn, 0.1)
    with pytest.raises(TypeError, match="Y must have X's dtype"):
        lasso(X, Y.float(), 0.1)
    with pytest.raises(TypeError, match="X must be a floating-point"):
        lasso(X.long(), Y, 0.1)
    with pytest.raises(ValueError, match="X must have shape"):
        lasso(X.reshape(1, 1, 20, 5), Y, 0.1)
    with pytest.raises(ValueError, match="batched X has K=3"):
        lasso(X.expand(3, 20, 5), Y, 0.1)
    with pytest.raises(ValueError, match="init must have shape"):
        lasso(X, Y, 0.1, init=torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="tol"):
        lasso(X, Y, 0.1, tol=-1)
    with pytest.raises(ValueError, match="max_iter"):
        lasso(X, Y, 0.1, max_iter=1.5)
    with pytest.raises(ValueError, match=r"lambdas\[1\] must be >= 0"):
        lasso_path(X, Y, [0.1, -0.2])
    with pytest.raises(ValueError, match="support must have shape"):
        refit_least_squares(X, Y, torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X = _design(100, 20, 0.7, seed=29)
    Y = _targets(X, 8, seed=30)
    cpu = lasso(X, Y, 0.05, tol=1e-12, max_iter=100000)
    gpu = lasso(X.cuda(), Y.cuda(), 0.05, tol=1e-12, max_iter=100000)
    assert gpu.coef.device.type == "cuda"
    torch.testing.assert_close(gpu.coef.cpu(), cpu.coef, atol=1e-8, rtol=0)
    g32 = lasso(X.float().cuda(), Y.float().cuda(), 0.05, tol=1e-6, max_iter=100000)
    assert bool(g32.converged.all())


def test_cpu_thread_setting_is_restored():
    before = torch.get_num_threads()
    X = _design(30, 5, seed=31)
    Y = _targets(X, 2, seed=32)
    lasso(X, Y, 0.1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        lasso(X, Y, -1.0)  # an error inside the single-threaded section
    assert torch.get_num_threads() == before
