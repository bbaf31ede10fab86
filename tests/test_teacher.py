"""E1 teachers: shapes, row normalisation, determinism, forward consistency, tail heaviness vs TSI."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from lqtheory.theory.norms import teacher_sparsity_index
from lqtheory.theory.teacher import (
    Teacher,
    draw_rows,
    make_teacher,
    sample_teacher_data,
    teacher_tsi,
)


def test_shapes_and_row_normalisation():
    t = make_teacher(input_dim=7, depth=3, width=11, c=2.5, distribution="cauchy", seed=1, dtype=torch.float64)
    assert [tuple(w.shape) for w in t.weights] == [(11, 7), (11, 11), (11, 11), (1, 11)]
    assert [tuple(b.shape) for b in t.biases] == [(11,), (11,), (11,), (1,)]
    assert t.depth == 3 and t.input_dim == 7 and t.widths == [11, 11, 11]
    for w in t.weights:
        torch.testing.assert_close(w.abs().sum(1), torch.full((w.shape[0],), 2.5, dtype=torch.float64),
                                   rtol=1e-14, atol=0)
    t32 = make_teacher(depth=2, width=[5, 9], c=0.5, distribution="t", df=2.0, seed=2)
    assert t32.dtype == torch.float32 and t32.widths == [5, 9] and t32.distribution == "student-t"
    for w in t32.weights:
        torch.testing.assert_close(w.abs().sum(1), torch.full((w.shape[0],), 0.5), rtol=1e-6, atol=0)


def test_seed_determinism_and_generator():
    a = make_teacher(depth=2, width=8, distribution="student-t", seed=5)
    b = make_teacher(depth=2, width=8, distribution="student-t", seed=5)
    c = make_teacher(depth=2, width=8, distribution="student-t", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.weights + a.biases, b.weights + b.biases, strict=True))
    assert not torch.equal(a.weights[0], c.weights[0])
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(make_teacher(depth=1, width=4, seed=g1).weights[0],
                       make_teacher(depth=1, width=4, seed=g2).weights[0])
    # dtype does not change the draw: float32 is the float64 teacher rounded
    d = make_teacher(depth=2, width=8, seed=5, dtype=torch.float64, distribution="student-t")
    assert torch.equal(d.weights[1].float(), a.weights[1])


def test_draws_follow_the_named_distribution():
    g = torch.Generator().manual_seed(0)
    for name, cdf in [
        ("normal", scipy.stats.norm.cdf),
        ("cauchy", scipy.stats.cauchy.cdf),
        ("student-t", lambda v: scipy.stats.t.cdf(v, 2.5)),
    ]:
        a = draw_rows((4000,), name, df=2.5, generator=g).numpy()
        assert np.isfinite(a).all()
        # Kolmogorov-Smirnov: the statistic of a correct sampler of this size is ~0.01-0.02
        assert scipy.stats.kstest(a, cdf).statistic < 0.03, name


def test_forward_hidden_and_module_agree():
    t = make_teacher(input_dim=6, depth=3, width=10, c=3.0, seed=3, dtype=torch.float64)
    x, y = sample_teacher_data(t, 50, seed=4)
    tr = t.hidden(x)
    assert len(tr.pre) == 4 and len(tr.post) == 4 and torch.equal(tr.post[0], x)
    # manual forward, written out independently in NumPy
    h = x.numpy()
    for W, b in zip(t.weights[:-1], t.biases[:-1], strict=True):
        h = np.maximum(h @ W.numpy().T + b.numpy(), 0)
    manual = (h @ t.weights[-1].numpy().T + t.biases[-1].numpy())[:, 0]
    np.testing.assert_allclose(y.numpy(), manual, rtol=1e-12, atol=1e-12)
    for a, hh in zip(tr.pre[:-1], tr.post[1:], strict=True):
        assert torch.equal(torch.relu(a), hh)
    torch.testing.assert_close(t.to_module()(x).squeeze(1), y)
    assert torch.equal(t(x), y)


def test_sample_teacher_data():
    t = make_teacher(input_dim=4, depth=1, width=3, seed=0)
    x, y = sample_teacher_data(t, 20000, seed=1)
    assert x.shape == (20000, 4) and y.shape == (20000,) and x.dtype == torch.float32
    assert float(x.mean(0).abs().max()) < 0.05 and float((x.var(0) - 1).abs().max()) < 0.05
    x2, y2 = sample_teacher_data(t, 20000, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _, yn = sample_teacher_data(t, 20000, seed=1, noise_std=0.5)
    assert abs(float((yn - y).std()) - 0.5) < 0.02


def test_heavier_tails_give_higher_tsi():
    # 2 x 300 rows of 300 weights each. Over seeds 0-7 the ratios were t3/normal 1.077-1.079 and
    # cauchy/t3 2.47-2.74: the margins below are many standard deviations wide.
    stats = {}
    for name in ("normal", "student-t", "cauchy"):
        t = make_teacher(input_dim=300, depth=2, width=300, distribution=name, df=3.0, seed=11)
        stats[name] = teacher_tsi(t, q_values=[0.5], include_output=False)[0.5]["network"]
    assert stats["normal"] * 1.04 < stats["student-t"] and stats["student-t"] * 1.8 < stats["cauchy"], stats


def test_teacher_tsi_structure_and_values():
    t = make_teacher(input_dim=5, depth=2, width=6, distribution="cauchy", seed=2)
    res = teacher_tsi(t, q_values=(0.3, 0.5))
    assert set(res) == {0.3, 0.5}
    r = res[0.5]
    assert [v.shape[0] for v in r["node"]] == [6, 6, 1] and r["layer"].shape == (3,)
    for W, v in zip(t.weights, r["node"], strict=True):
        w = W.double().numpy()
        direct = np.abs(w).sum(1) / (np.sqrt(np.abs(w)).sum(1) ** 2)  # ||w||_1 / ||w||_{1/2}
        np.testing.assert_allclose(v.double().numpy(), direct, rtol=1e-5)
        torch.testing.assert_close(v, teacher_sparsity_index(W, q=0.5))
    torch.testing.assert_close(r["layer"], torch.stack([v.mean() for v in r["node"]]))
    assert r["network"] == pytest.approx(float(r["layer"].mean()))
    # range [d^(1-1/q), 1]; the output layer is one node
    assert all(bool((v <= 1 + 1e-6).all()) and bool((v >= 6 ** (1 - 1 / 0.3) - 1e-6).all())
               for v in res[0.3]["node"][:2])
    hidden_only = teacher_tsi(t, 0.5, include_output=False)[0.5]
    assert hidden_only["layer"].shape == (2,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="distribution must be one of"):
        make_teacher(distribution="laplace")
    with pytest.raises(ValueError, match="c must be"):
        make_teacher(c=0)
    with pytest.raises(ValueError, match="df must be"):
        make_teacher(distribution="t", df=-1.0)
    with pytest.raises(ValueError, match="depth"):
        make_teacher(depth=0)
    with pytest.raises(ValueError, match="width must be an int or have one entry"):
        make_teacher(depth=2, width=[3])
    with pytest.raises(TypeError, match="seed"):
        make_teacher(seed=1.5)
    t = make_teacher(input_dim=3, depth=1, width=2)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        t(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="n must be"):
        sample_teacher_data(t, 0)
    with pytest.raises(TypeError, match="teacher must be a Teacher"):
        teacher_tsi("not a teacher", 0.5)
    assert isinstance(t, Teacher)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_teacher_on_cuda():
    cpu = make_teacher(depth=2, width=8, seed=3)
    gpu = make_teacher(depth=2, width=8, seed=3, device="cuda")
    assert gpu.device.type == "cuda"
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu.weights, gpu.weights, strict=True))
