"""Backward approximation learning: compress a teacher into a sparse student from the output backward.

[paper: draft simulation section, THEORY.md §3 and E1] Output layer: Lasso-fit the target ``y`` on the
last hidden layer's outputs ``h^(L)``, keep the selected nodes ``S_L``. Then for ``l = L, ..., 1``:
Lasso-fit every selected node's teacher *pre-activation* ``a^(l)_j, j ∈ S_l`` on the previous layer's
outputs ``h^(l-1)`` (``h^(0) = x``) -- all of them in one batched Lasso with a shared design -- and keep
the union of the selected inputs as ``S_{l-1}``. With ``refit=True`` (default) each fit's weights are
replaced by ordinary least squares (with intercept) on its own support, which keeps the Lasso's
selection and removes its shrinkage.

The student is ``h~^(0) = x``, ``h~^(l) = ReLU(W~_l h~^(l-1) + b~_l)`` over the kept nodes and
``f~ = v~ h~^(L) + c~``: each layer was fitted on the *teacher's* activations and is then composed, so
errors propagate as in THEORY.md S4. Counts: nodes ``K = Σ_l |S_l|`` (hidden nodes) and edges ``K_E``
(non-zero student weights, the output layer included, biases excluded).

Penalties ``lam`` are given per layer (one number for all layers, or ``depth + 1`` numbers: hidden
layers 1..L then the output layer). With ``relative=True`` a number ``α`` means ``α · λ_max`` of each
fitted problem (``λ_max = ||X_c^T y_c||_∞ / n``, the smallest penalty that selects nothing), which makes
one ``α`` comparable across layers and teachers of very different scales.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from lqtheory.theory.lasso import few_threads, lasso_gram, refit_least_squares_gram
from lqtheory.theory.teacher import Teacher, relu_mlp_module

__all__ = [
    "Student",
    "BackwardResult",
    "backward_approximation",
    "edges_mse_curve",
    "edges_for_mse",
]


@dataclass
class Student:
    """A compact ReLU MLP over the kept teacher nodes.

    ``weights[0]`` is ``(|S_1|, input_dim)`` (all input columns, zero where an input is unused), then
    ``(|S_l|, |S_{l-1}|)``, and the output row ``(1, |S_L|)``. ``kept[l]`` holds the teacher indices of the
    nodes kept in hidden layer ``l + 1``; ``kept_inputs`` the inputs used by any first-layer node.
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    kept: list[torch.Tensor]
    kept_inputs: torch.Tensor

    @property
    def depth(self) -> int:
        return len(self.weights) - 1

    @property
    def nodes(self) -> int:
        """``K``: the number of kept hidden nodes."""
        return int(sum(k.numel() for k in self.kept))

    @property
    def edges(self) -> int:
        """``K_E``: the number of non-zero weights (biases excluded)."""
        return int(sum(int((w != 0).sum()) for w in self.weights))

    @property
    def nodes_per_layer(self) -> list[int]:
        return [k.numel() for k in self.kept]

    @property
    def edges_per_layer(self) -> list[int]:
        return [int((w != 0).sum()) for w in self.weights]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Student output ``(n,)``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.weights[0].shape[1]:
            raise ValueError(f"x must be a tensor of shape (n, {self.weights[0].shape[1]})")
        h = x.to(device=self.weights[0].device, dtype=self.weights[0].dtype)
        for W, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = torch.relu(torch.addmm(b, h, W.T))
        return torch.addmm(self.biases[-1], h, self.weights[-1].T).squeeze(1)

    __call__ = forward

    def to_module(self) -> nn.Sequential:
        """``nn.Sequential(Linear, ReLU, ..., Linear)`` with the student's weights; output ``(n, 1)``."""
        return relu_mlp_module(self.weights, self.biases)


@dataclass
class BackwardResult:
    """A student and its scores. ``mse``: test MSE against the true ``y_test``; ``mse_teacher``: against
    the teacher's output; ``rel_mse = mse / Var(y_test)``; ``train_mse`` on the fitting data. Test scores
    are NaN when no test data were given. ``converged``: every Lasso fit met its tolerance."""

    student: Student
    nodes: int
    edges: int
    mse: float
    mse_teacher: float
    rel_mse: float
    train_mse: float
    lam: list[float]
    relative: bool
    converged: bool
    n_unconverged: int
    nodes_per_layer: list[int] = field(default_factory=list)
    edges_per_layer: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------


@dataclass
class _LayerStats:
    """Centred statistics of design ``h^(l-1)`` against every node's target (computed once, reused
    across penalties): gram (p, p), xty (targets, p), yty (targets,), means."""

    gram: torch.Tensor
    xty: torch.Tensor
    yty: torch.Tensor
    x_mean: torch.Tensor
    y_mean: torch.Tensor


def _stats(H: torch.Tensor, T: torch.Tensor) -> _LayerStats:
    n = H.shape[0]
    xm, ym = H.mean(0), T.mean(0)
    Hc, Tc = H - xm, T - ym
    return _LayerStats(Hc.T @ Hc / n, (Hc.T @ Tc).T / n, (Tc * Tc).sum(0) / n, xm, ym)


def _teacher_stats(teacher: Teacher, x: torch.Tensor, y: torch.Tensor, dtype) -> list[_LayerStats]:
    """Per layer l = 1..L (targets: pre-activations of layer l) and the output (target: y)."""
    tr = teacher.to(dtype=dtype).hidden(x.to(dtype))
    stats = [_stats(tr.post[i], tr.pre[i]) for i in range(teacher.depth)]
    stats.append(_stats(tr.post[-1], y.to(device=tr.post[-1].device, dtype=dtype).reshape(-1, 1)))
    return stats


def _layer_lams(lam, depth: int) -> list[float]:
    if isinstance(lam, (int, float)) and not isinstance(lam, bool):
        lams = [float(lam)] * (depth + 1)
    elif isinstance(lam, Sequence) and not isinstance(lam, str):
        lams = [float(v) for v in lam]
        if len(lams) != depth + 1:
            raise ValueError(f"lam must be a number or have depth + 1 = {depth + 1} entries, got {len(lams)}")
    else:
        raise TypeError(f"lam must be a number or a sequence of numbers, got {type(lam).__name__}")
    if not all(math.isfinite(v) and v >= 0 for v in lams):
        raise ValueError(f"lam values must be finite and >= 0, got {lams}")
    return lams


def _fit(st: _LayerStats, rows, lam, relative, refit, n, tol, max_iter, warm):
    """Batched Lasso (+ refit) of the targets ``rows`` on the shared design: coef (k, p), intercept,
    number of unconverged fits. ``warm``: None or a (targets, p) store of earlier Lasso solutions,
    used as starting points and updated."""
    xty, yty, ym = st.xty[rows], st.yty[rows], st.y_mean[rows]
    if rows.numel() == 0:  # nothing kept above: an empty layer
        return xty, ym, 0
    lam_t = lam * xty.abs().amax(1) if relative else lam
    init = None if warm is None else warm[rows]
    res = lasso_gram(
        st.gram, xty, yty, lam_t, n=n, x_mean=st.x_mean, y_mean=ym, tol=tol, max_iter=max_iter, init=init
    )
    if warm is not None:
        warm[rows] = res.coef
    coef = res.coef
    if refit:
        coef = refit_least_squares_gram(st.gram, xty, coef != 0)
    intercept = ym - coef @ st.x_mean
    return coef, intercept, int((~res.converged).sum())


def _backward(teacher, stats, lams, relative, refit, n, tol, max_iter, warm=None) -> tuple[Student, int]:
    L = teacher.depth
    device = stats[0].gram.device
    weights: list[torch.Tensor] = [None] * (L + 1)  # type: ignore[list-item]
    biases: list[torch.Tensor] = [None] * (L + 1)  # type: ignore[list-item]
    kept: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
    bad = 0
    rows = torch.zeros(1, dtype=torch.long, device=device)  # the output "node"
    for layer in range(L, -1, -1):  # layer L is the output fit; layer l < L fits hidden layer l + 1
        coef, intercept, nb = _fit(
            stats[layer], rows, lams[layer], relative, refit, n, tol, max_iter, None if warm is None else warm[layer]
        )
        bad += nb
        used = (coef != 0).any(0).nonzero().flatten()  # union of selected inputs
        weights[layer] = coef if layer == 0 else coef[:, used]
        biases[layer] = intercept
        if layer > 0:
            kept[layer - 1] = used
        else:
            kept_inputs = used
        rows = used
    return Student(weights, biases, kept, kept_inputs), bad


def _scores(student, teacher, x_test, y_test, dtype):
    if x_test is None:
        return math.nan, math.nan, math.nan
    device = student.weights[0].device
    xt = x_test.to(device=device, dtype=dtype)
    yt = y_test.to(device=device, dtype=dtype).reshape(-1)
    pred = student(xt)
    mse = float(((pred - yt) ** 2).mean())
    mse_t = float(((pred - teacher.to(dtype=dtype)(xt)) ** 2).mean())
    var = float(yt.var(unbiased=False))
    return mse, mse_t, (mse / var if var > 0 else math.nan)


def _check_data(teacher, x, y, name_x="x", name_y="y"):
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name_x} and {name_y} must be torch.Tensors")
    if x.dim() != 2 or x.shape[1] != teacher.input_dim:
        raise ValueError(f"{name_x} must have shape (n, {teacher.input_dim}), got {tuple(x.shape)}")
    if y.reshape(-1).shape[0] != x.shape[0] or y.numel() != x.shape[0]:
        raise ValueError(f"{name_y} must hold one target per row of {name_x}, got shape {tuple(y.shape)}")
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all())):
        raise ValueError(f"{name_x} or {name_y} contains NaN or Inf")


def backward_approximation(
    teacher: Teacher,
    x: torch.Tensor,
    y: torch.Tensor,
    lam,
    *,
    relative: bool = False,
    refit: bool = True,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 10000,
    dtype: torch.dtype | None = None,
) -> BackwardResult:
    """Compress ``teacher`` into a sparse student by backward Lasso fits on ``(x, y)`` [paper].

    ``lam``: one penalty for every layer or ``depth + 1`` of them (hidden layers 1..L, then the output);
    ``relative``: penalties are fractions of each problem's ``λ_max``. ``refit``: least squares on each
    selected support (else the Lasso weights are kept). ``x_test, y_test``: held-out data for the scores.
    ``dtype``: precision of the fits (default: the teacher's).
    """
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
    _check_data(teacher, x, y)
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    if x_test is not None:
        _check_data(teacher, x_test, y_test, "x_test", "y_test")
    dtype = teacher.dtype if dtype is None else dtype
    lams = _layer_lams(lam, teacher.depth)
    with few_threads(teacher.device, _stats_work(teacher, x)):
        stats = _teacher_stats(teacher, x, y, dtype)
        return _result(teacher, stats, x, y, x_test, y_test, lams, relative, refit, tol, max_iter, dtype)


def _stats_work(teacher: Teacher, x: torch.Tensor) -> int:
    """Multiply-adds of the largest Gram: decides whether extra CPU threads can pay off."""
    w = max([teacher.input_dim, *teacher.widths])
    return x.shape[0] * w * w


def _result(teacher, stats, x, y, x_test, y_test, lams, relative, refit, tol, max_iter, dtype, warm=None):
    student, bad = _backward(teacher, stats, lams, relative, refit, x.shape[0], tol, max_iter, warm)
    device = student.weights[0].device
    train_mse = float(((student(x) - y.to(device=device, dtype=dtype).reshape(-1)) ** 2).mean())
    mse, mse_t, rel = _scores(student, teacher, x_test, y_test, dtype)
    return BackwardResult(
        student, student.nodes, student.edges, mse, mse_t, rel, train_mse, lams, relative, bad == 0, bad,
        student.nodes_per_layer, student.edges_per_layer,
    )


def edges_mse_curve(
    teacher: Teacher,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    lambdas,
    *,
    relative: bool = False,
    refit: bool = True,
    tol: float = 1e-6,
    max_iter: int = 10000,
    dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """Trace edges against MSE over a sweep of penalties for one teacher [paper: E1].

    ``lambdas``: a sequence; each entry is one penalty for all layers or a per-layer list (see
    :func:`backward_approximation`). The teacher's activations and every layer's Gram are computed once.
    Returns one row per penalty: ``lam`` (the first layer's value when per-layer), ``nodes``, ``edges``,
    ``mse``, ``mse_teacher``, ``rel_mse``, ``train_mse``, ``converged``.
    """
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
    _check_data(teacher, x_train, y_train, "x_train", "y_train")
    _check_data(teacher, x_test, y_test, "x_test", "y_test")
    lam_list = list(lambdas)
    if not lam_list:
        raise ValueError("lambdas must not be empty")
    dtype = teacher.dtype if dtype is None else dtype
    per_layer = [_layer_lams(v, teacher.depth) for v in lam_list]
    with few_threads(teacher.device, _stats_work(teacher, x_train)):
        return _sweep_curve(teacher, x_train, y_train, x_test, y_test, per_layer, relative, refit, tol, max_iter,
                            dtype)


def _sweep_curve(teacher, x_train, y_train, x_test, y_test, per_layer, relative, refit, tol, max_iter, dtype):
    stats = _teacher_stats(teacher, x_train, y_train, dtype)
    # largest penalties first, each layer's fits warm-started from the previous penalty's solutions
    warm = [torch.zeros_like(st.xty) for st in stats]
    order = sorted(range(len(per_layer)), key=lambda i: -max(per_layer[i]))
    rows: list[dict] = [{}] * len(per_layer)
    for i in order:
        lams = per_layer[i]
        r = _result(
            teacher, stats, x_train, y_train, x_test, y_test, lams, relative, refit, tol, max_iter, dtype, warm
        )
        rows[i] = dict(lam=lams[0], nodes=r.nodes, edges=r.edges, mse=r.mse, mse_teacher=r.mse_teacher,
                       rel_mse=r.rel_mse, train_mse=r.train_mse, converged=r.converged)
    return pd.DataFrame(rows)


def edges_for_mse(curve: pd.DataFrame, target: float, column: str = "rel_mse") -> float:
    """Edges needed to reach ``column <= target``, read off an edges-vs-error curve [derived].

    Uses the curve's lower envelope (the best error reached with at most so many edges, so a
    non-monotone sweep is handled) and interpolates linearly in ``(log edges, log error)`` between the
    last envelope point above the target and the first at or below it. NaN if the target is never
    reached; the smallest edge count if it is reached everywhere.
    """
    if column not in curve or "edges" not in curve:
        raise ValueError(f"curve must have columns 'edges' and {column!r}")
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target must be a finite number > 0, got {target!r}")
    d = curve[["edges", column]].dropna().sort_values(["edges", column])
    if d.empty:
        return math.nan
    e = d["edges"].to_numpy(dtype=float)
    m = np.minimum.accumulate(d[column].to_numpy(dtype=float))  # envelope: best error with <= e edges
    hit = np.nonzero(m <= target)[0]
    if hit.size == 0:
        return math.nan
    i = int(hit[0])
    if i == 0:
        return float(e[0])
    e0, e1, m0, m1 = e[i - 1], e[i], m[i - 1], m[i]
    if e0 <= 0 or m1 <= 0 or m0 == m1:
        return float(e1)
    t = (math.log(m0) - math.log(target)) / (math.log(m0) - math.log(m1))
    return float(math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0))))
