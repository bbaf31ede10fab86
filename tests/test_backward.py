"""Backward approximation learning: against a slow per-node oracle (scikit-learn + NumPy) and its
defining properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import Lasso

from lqtheory.theory.backward import Student, backward_approximation, edges_for_mse, edges_mse_curve
from lqtheory.theory.teacher import make_teacher, sample_teacher_data

F64 = torch.float64


@pytest.fixture(scope="module")
def tiny():
    # c = 5 makes the signal dominate the N(0,1) biases, so ReLUs switch and no hidden design is
    # collinear (checked in the oracle test): every Lasso below has a unique solution
    t = make_teacher(input_dim=4, depth=2, width=6, c=5.0, distribution="student-t", seed=3, dtype=F64)
    x, y = sample_teacher_data(t, 400, seed=1)
    xt, yt = sample_teacher_data(t, 400, seed=2)
    return t, x, y, xt, yt


def _oracle(teacher, x, y, alpha):
    """Slow backward approximation: one scikit-learn Lasso and one lstsq per node, loops everywhere."""
    tr = teacher.hidden(x)
    post = [h.numpy() for h in tr.post]
    pre = [a.numpy() for a in tr.pre]
    n = x.shape[0]

    def fit(H, t):
        Hc, tc = H - H.mean(0), t - t.mean()
        lam = alpha * np.abs(Hc.T @ tc).max() / n
        m = Lasso(alpha=lam, tol=1e-12, max_iter=1_000_000).fit(H, t)
        S = np.flatnonzero(m.coef_ != 0)
        A = np.hstack([H[:, S], np.ones((n, 1))])
        sol = np.linalg.lstsq(A, t, rcond=None)[0]
        return S, sol[:-1], sol[-1]

    L = teacher.depth
    S, w, b = fit(post[L], y.numpy())
    layers = {L + 1: {0: (S, w, b)}}
    kept = {L: S}
    for layer in range(L, 0, -1):
        fits = {j: fit(post[layer - 1], pre[layer - 1][:, j]) for j in kept[layer]}
        layers[layer] = fits
        kept[layer - 1] = np.array(sorted(set().union(*[set(f[0]) for f in fits.values()])), dtype=int)
    for layer in range(L + 1):  # the designs are well conditioned, so the oracle's answer is unique
        H = post[layer] - post[layer].mean(0)
        assert np.linalg.eigvalsh(H.T @ H / n).min() > 1e-6
    return layers, kept


def test_matches_slow_oracle(tiny):
    t, x, y, _, _ = tiny
    alpha = 0.05
    res = backward_approximation(t, x, y, alpha, relative=True, tol=1e-12, max_iter=100000)
    layers, kept = _oracle(t, x, y, alpha)
    L = t.depth
    s = res.student
    for layer in range(1, L + 1):
        np.testing.assert_array_equal(s.kept[layer - 1].numpy(), kept[layer])
    np.testing.assert_array_equal(s.kept_inputs.numpy(), kept[0])
    # output layer
    S, w, b = layers[L + 1][0]
    pos = np.searchsorted(kept[L], S)
    dense = np.zeros(len(kept[L]))
    dense[pos] = w
    np.testing.assert_allclose(s.weights[L].numpy()[0], dense, atol=1e-7)
    assert float(s.biases[L][0]) == pytest.approx(b, abs=1e-7)
    # hidden layers: node i of the student is teacher node kept[layer][i]
    for layer in range(1, L + 1):
        cols = kept[layer - 1] if layer > 1 else np.arange(t.input_dim)
        for i, j in enumerate(kept[layer]):
            Sj, wj, bj = layers[layer][j]
            dense = np.zeros(len(cols))
            dense[np.searchsorted(cols, Sj)] = wj
            np.testing.assert_allclose(s.weights[layer - 1].numpy()[i], dense, atol=1e-7)
            assert float(s.biases[layer - 1][i]) == pytest.approx(bj, abs=1e-7)
    # the oracle selected something at every layer, so the comparison was not vacuous
    assert all(len(kept[layer]) > 0 for layer in range(L + 1))
    assert res.edges < sum(w.numel() for w in t.weights)


def test_small_penalty_recovers_the_teacher(tiny):
    t, x, y, xt, yt = tiny
    res = backward_approximation(t, x, y, 1e-9, x_test=xt, y_test=yt, tol=1e-12, max_iter=100000)
    var = float(yt.var(unbiased=False))
    assert res.rel_mse < 1e-8 and res.mse_teacher < 1e-8 * var and res.mse == pytest.approx(res.mse_teacher)
    assert res.converged
    torch.testing.assert_close(res.student(xt), t(xt), rtol=0, atol=1e-4 * math.sqrt(var))


def test_large_penalty_gives_few_edges(tiny):
    t, x, y, xt, yt = tiny
    none = backward_approximation(t, x, y, 1.0, relative=True, x_test=xt, y_test=yt)
    assert none.edges == 0 and none.nodes == 0
    # the empty student predicts the training mean
    torch.testing.assert_close(none.student(xt), torch.full((400,), float(y.mean()), dtype=F64))
    assert none.rel_mse == pytest.approx(float(((y.mean() - yt) ** 2).mean() / yt.var(unbiased=False)))
    few = backward_approximation(t, x, y, 0.5, relative=True, x_test=xt, y_test=yt)
    dense = backward_approximation(t, x, y, 1e-3, relative=True, x_test=xt, y_test=yt)
    assert 0 < few.edges < dense.edges and few.rel_mse > dense.rel_mse


def test_counts_and_module_agree_with_the_weights(tiny):
    t, x, y, xt, _ = tiny
    res = backward_approximation(t, x, y, 0.02, relative=True)
    s = res.student
    module = s.to_module()
    lin = [m for m in module if isinstance(m, torch.nn.Linear)]
    assert res.edges == sum(int((m.weight != 0).sum()) for m in lin) == s.edges
    assert res.nodes == sum(m.out_features for m in lin[:-1]) == sum(k.numel() for k in s.kept)
    assert res.edges_per_layer == [int((m.weight != 0).sum()) for m in lin]
    assert res.nodes_per_layer == [m.out_features for m in lin[:-1]]
    # module forward = Student.forward = manual NumPy forward
    h = xt.numpy()
    for W, b in zip(s.weights[:-1], s.biases[:-1], strict=True):
        h = np.maximum(h @ W.numpy().T + b.numpy(), 0)
    manual = h @ s.weights[-1].numpy()[0] + s.biases[-1].numpy()[0]
    np.testing.assert_allclose(s(xt).numpy(), manual, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(module(xt).squeeze(1), s(xt))


def test_empty_student_module_builds_silently(tiny):
    t, x, y, xt, _ = tiny
    s = backward_approximation(t, x, y, 1.0, relative=True).student
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = s.to_module()
    with torch.no_grad():
        torch.testing.assert_close(module(xt).squeeze(1), s(xt))


def test_refit_false_keeps_the_lasso_weights(tiny):
    t, x, y, _, _ = tiny
    lam_out = 0.01
    res = backward_approximation(t, x, y, [0.01, 0.01, lam_out], refit=False, tol=1e-12, max_iter=100000)
    H = t.hidden(x).post[-1].numpy()
    m = Lasso(alpha=lam_out, tol=1e-12, max_iter=1_000_000).fit(H, y.numpy())
    kept = res.student.kept[-1].numpy()
    np.testing.assert_array_equal(kept, np.flatnonzero(m.coef_))
    np.testing.assert_allclose(res.student.weights[-1].numpy()[0], m.coef_[kept], atol=1e-7)
    assert float(res.student.biases[-1][0]) == pytest.approx(m.intercept_, abs=1e-7)
    refit = backward_approximation(t, x, y, [0.01, 0.01, lam_out], tol=1e-12, max_iter=100000)
    assert refit.edges == res.edges  # same selection, other weights
    assert refit.train_mse < res.train_mse


def test_sweep_edges_decrease_as_penalty_grows():
    t = make_teacher(input_dim=10, depth=3, width=30, c=5.0, distribution="normal", seed=4, dtype=F64)
    x, y = sample_teacher_data(t, 600, seed=5)
    xt, yt = sample_teacher_data(t, 600, seed=6)
    lambdas = [0.3, 0.001, 0.01, 0.03, 0.1, 0.6, 0.003, 1.0]  # unsorted: rows come back in this order
    curve = edges_mse_curve(t, x, y, xt, yt, lambdas, relative=True)
    assert isinstance(curve, pd.DataFrame) and list(curve["lam"]) == lambdas
    assert set(curve.columns) >= {"lam", "nodes", "edges", "mse", "mse_teacher", "rel_mse", "converged"}
    srt = curve.sort_values("lam")
    assert (np.diff(srt["edges"].to_numpy()) <= 0).all(), srt
    assert srt["edges"].iloc[0] > 10 * max(1, srt["edges"].iloc[-2]) and srt["edges"].iloc[-1] == 0
    assert srt["rel_mse"].iloc[0] < 0.01 < srt["rel_mse"].iloc[-2]
    assert curve["converged"].all()
    # each row equals a stand-alone fit (the sweep's warm starts and shared Grams change nothing)
    one = backward_approximation(t, x, y, 0.03, relative=True, x_test=xt, y_test=yt)
    row = curve[curve["lam"] == 0.03].iloc[0]
    assert row["edges"] == one.edges and row["nodes"] == one.nodes
    assert row["mse"] == pytest.approx(one.mse, rel=1e-4)


def test_edges_for_mse_interpolates_on_the_envelope():
    curve = pd.DataFrame({"edges": [0, 10, 100, 1000, 50], "rel_mse": [1.0, 0.5, 0.05, 0.001, 0.6]})
    # envelope: (0,1) (10,.5) (50,.5) (100,.05) (1000,.001); target 0.1 lies between 50 and 100 edges
    got = edges_for_mse(curve, 0.1)
    expect = math.exp(math.log(50) + (math.log(0.5) - math.log(0.1)) / (math.log(0.5) - math.log(0.05))
                      * (math.log(100) - math.log(50)))
    assert got == pytest.approx(expect)
    assert edges_for_mse(curve, 0.05) == pytest.approx(100)
    assert math.isnan(edges_for_mse(curve, 1e-4))
    assert edges_for_mse(curve, 2.0) == 0
    with pytest.raises(ValueError, match="target"):
        edges_for_mse(curve, -1)


def test_bad_inputs(tiny):
    t, x, y, xt, yt = tiny
    with pytest.raises(ValueError, match="depth \\+ 1 = 3"):
        backward_approximation(t, x, y, [0.1, 0.1])
    with pytest.raises(ValueError, match="finite and >= 0"):
        backward_approximation(t, x, y, -0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 4\)"):
        backward_approximation(t, x[:, :3], y, 0.1)
    with pytest.raises(ValueError, match="one target per row"):
        backward_approximation(t, x, y[:-1], 0.1)
    with pytest.raises(ValueError, match="both x_test and y_test"):
        backward_approximation(t, x, y, 0.1, x_test=xt)
    with pytest.raises(TypeError, match="teacher must be a Teacher"):
        backward_approximation("t", x, y, 0.1)
    with pytest.raises(ValueError, match="lambdas must not be empty"):
        edges_mse_curve(t, x, y, xt, yt, [])
    assert isinstance(backward_approximation(t, x, y, 0.1).student, Student)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny):
    t, x, y, xt, yt = tiny
    cpu = backward_approximation(t, x, y, 0.05, relative=True, x_test=xt, y_test=yt, tol=1e-10)
    gpu = backward_approximation(t.to(device="cuda"), x, y, 0.05, relative=True, x_test=xt, y_test=yt, tol=1e-10)
    assert gpu.student.weights[0].device.type == "cuda"
    assert gpu.edges == cpu.edges and gpu.nodes == cpu.nodes
    assert gpu.mse == pytest.approx(cpu.mse, rel=1e-6)
