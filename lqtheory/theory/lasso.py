"""Many Lasso problems at once, on the device: cyclic coordinate descent vectorised across problems.

Every problem ``k`` is scikit-learn's Lasso with a fitted, unpenalised intercept [paper: the E1
backward approximation uses the Lasso; the solver follows Friedman, Hastie & Tibshirani 2010]::

    min_{b, b0}  1/(2n) ||y_k - X_k b - b0||_2^2 + lam_k ||b||_1 .

The intercept is profiled out by centring: with ``X_c = X - mean(X)``, ``y_c = y - mean(y)``,
``G = X_c^T X_c / n``, ``c = X_c^T y_c / n`` and ``q = ||y_c||^2 / n`` the problem is
``min_b 1/2 b^T G b - b^T c + q/2 + lam ||b||_1`` and ``b0 = mean(y) - mean(X)^T b``.

Cyclic coordinate descent on that Gram form: coordinate ``j`` becomes ``S(R_j + G_jj b_j, lam) / G_jj``
with ``R = c - G b = X_c^T r / n`` and the soft threshold ``S(z, lam) = z - clamp(z, -lam, lam)``, which
gives exact zeros. Internally the variables are standardised (``β_j = b_j sqrt(G_jj) / lam``, see
:func:`_solve_group`) so that every problem shares one threshold per coordinate and an update is a
single ``softshrink``. These are the same coordinate updates as scikit-learn's cyclic solver (sweep
counts agreed within a few percent where we compared).
The loop runs over coordinates in Python; each step updates all problems at once (an outer product),
so one sweep costs ``4 p`` small kernels whatever the number of problems. The fast path is a shared
design ``X (n, p)`` with many targets ``Y (n, K)`` (one Gram for all); batched designs ``X (K, n, p)``
carry one Gram per problem. Problems leave the working set as soon as they converge.

Stopping: scikit-learn's duality gap, ``gap_k <= tol * ||y_{c,k}||^2 / n``, in the units of the
objective above (scikit-learn's ``dual_gap_``). With the residual ``r`` scaled into the dual feasible
set, ``s = min(1, lam / ||R||_inf)``::

    gap = 1/2 ||r||^2/n (1 + s^2) - s r^T y_c / n + lam ||b||_1 .

For ``lam = 0`` (least squares) there is no such dual; as in scikit-learn the first-order condition
``n ||R||_2^2`` stands in for the gap. Gap-safe screening (Ndiaye et al. 2017, as in scikit-learn)
fixes to zero the coefficients the current gap proves to be zero at the optimum; screening is redone
from scratch at every check, so a coordinate excluded by rounding is revisited later. Once a problem
needs many sweeps the gap is checked after every ``sweeps // 10`` further sweeps, so ``n_iter`` may
exceed the first sweep that met the tolerance by about 10%.

On the CPU, calls whose largest step is below ~2.7e8 multiply-adds run on one thread (restored
afterwards): the solver is many small kernels, and on a busy machine thread start-up costs far more
than it saves.

Precision: the gap is computed from the Gram form, so its rounding error is about
``eps * ||y_c||^2 / n``. In float64 tolerances down to ~1e-12 are meaningful, in float32 down to ~1e-5.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lqtheory.common.checks import check_tensor

__all__ = [
    "LassoResult",
    "LassoPathResult",
    "lasso",
    "lasso_gram",
    "lasso_path",
    "lasso_lambda_max",
    "lasso_objective",
    "refit_least_squares",
    "refit_least_squares_gram",
]


@dataclass
class LassoResult:
    """Solutions of K Lasso problems (leading K dropped when a single 1-D target was given).

    ``coef (K, p)``, ``intercept (K,)``, ``n_iter (K,)`` coordinate-descent sweeps used,
    ``converged (K,)`` whether ``dual_gap <= tol * ||y_c||^2 / n``, ``dual_gap (K,)`` the final gap in
    objective units (comparable to scikit-learn's ``dual_gap_``), ``lam (K,)`` the penalties used.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor
    dual_gap: torch.Tensor
    lam: torch.Tensor

    @property
    def support(self) -> torch.Tensor:
        """Boolean mask of the non-zero coefficients, shape of ``coef``."""
        return self.coef != 0


@dataclass
class LassoPathResult:
    """A λ path: leading dimension M indexes ``lambdas`` in the order given."""

    lambdas: torch.Tensor  # (M,) or (M, K)
    coef: torch.Tensor  # (M, K, p)
    intercept: torch.Tensor  # (M, K)
    n_iter: torch.Tensor  # (M, K)
    converged: torch.Tensor  # (M, K)
    dual_gap: torch.Tensor  # (M, K)


# ---------------------------------------------------------------------------------------------
# input handling


def _check_xy(X, Y) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    """Validate ``X (n, p)`` or ``(K, n, p)`` and ``Y (n,)`` or ``(n, K)``; return 2-D Y."""
    X = check_tensor(X, "X", allow_empty=False)
    Y = check_tensor(Y, "Y", allow_empty=False)
    if X.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"X must be float32 or float64, got {X.dtype}")
    if Y.dtype != X.dtype:
        raise TypeError(f"Y must have X's dtype {X.dtype}, got {Y.dtype}")
    if Y.device != X.device:
        raise ValueError(f"Y is on {Y.device} but X is on {X.device}")
    if X.dim() not in (2, 3):
        raise ValueError(f"X must have shape (n, p) or (K, n, p), got {tuple(X.shape)}")
    if Y.dim() not in (1, 2):
        raise ValueError(f"Y must have shape (n,) or (n, K), got {tuple(Y.shape)}")
    squeeze = Y.dim() == 1
    Y2 = Y.unsqueeze(1) if squeeze else Y
    shared = X.dim() == 2
    n = X.shape[-2]
    if Y2.shape[0] != n:
        raise ValueError(f"Y has {Y2.shape[0]} rows but X has n={n} samples")
    if not shared and X.shape[0] != Y2.shape[1]:
        raise ValueError(f"batched X has K={X.shape[0]} problems but Y has {Y2.shape[1]} targets (columns)")
    if n < 1 or X.shape[-1] < 1:
        raise ValueError(f"X must have n >= 1 and p >= 1, got shape {tuple(X.shape)}")
    return X, Y2, shared, squeeze


def _check_lam(lam, K: int, like: torch.Tensor, name: str = "lam") -> torch.Tensor:
    """A scalar or a ``(K,)`` tensor of finite penalties >= 0, as a ``(K,)`` tensor like ``like``."""
    if isinstance(lam, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool")
    if isinstance(lam, (int, float)):
        lam_t = torch.full((K,), float(lam), dtype=like.dtype, device=like.device)
    elif isinstance(lam, torch.Tensor):
        lam_t = lam.to(device=like.device, dtype=like.dtype)
        if lam_t.dim() == 0:
            lam_t = lam_t.expand(K).clone()
        elif lam_t.shape != (K,):
            raise ValueError(f"{name} must be a scalar or have shape ({K},), got {tuple(lam_t.shape)}")
    else:
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(lam).__name__}")
    if not bool(torch.isfinite(lam_t).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    if bool((lam_t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got min {float(lam_t.min()):g}")
    return lam_t


def _check_run_args(tol, max_iter) -> tuple[float, int]:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
    return float(tol), int(max_iter)


@dataclass
class _Prepared:
    """Centred sufficient statistics: gram (p,p) or (K,p,p); xty (K,p); yty (K,); means."""

    gram: torch.Tensor
    xty: torch.Tensor
    yty: torch.Tensor
    x_mean: torch.Tensor  # (p,) or (K, p)
    y_mean: torch.Tensor  # (K,)
    n: int


def _prepare(X: torch.Tensor, Y: torch.Tensor, shared: bool) -> _Prepared:
    n = X.shape[-2]
    x_mean = X.mean(dim=-2)
    y_mean = Y.mean(dim=0)
    Xc = X - x_mean.unsqueeze(-2)
    Yc = Y - y_mean
    if shared:
        gram = Xc.T @ Xc / n
        xty = (Xc.T @ Yc).T / n  # (K, p)
    else:
        gram = Xc.transpose(1, 2) @ Xc / n
        xty = torch.einsum("knp,nk->kp", Xc, Yc) / n
    yty = (Yc * Yc).sum(0) / n
    return _Prepared(gram, xty, yty, x_mean, y_mean, n)


# ---------------------------------------------------------------------------------------------
# the solver on the Gram form


def _gb(G: torch.Tensor, B: torch.Tensor, shared: bool) -> torch.Tensor:
    """``G_k b_k`` for every problem, in the solver's (p, K) layout (batched G stored (p_j, p_i, K))."""
    if shared:
        return G @ B
    return torch.einsum("jik,jk->ik", G, B)


def _gap(G, C, q, B, lam, n, shared):
    """Duality gap per problem, the fresh correlation ``R = c - G b`` and the dual scale."""
    R = C - _gb(G, B, shared)
    bc = (B * C).sum(0)
    rr = (q - bc - (B * R).sum(0)).clamp_min(0)  # ||r||^2 / n
    ry = q - bc  # r^T y_c / n
    dual_norm = R.abs().amax(0)
    safe = torch.where(dual_norm > 0, dual_norm, torch.ones_like(dual_norm))
    s = torch.where(dual_norm > lam, lam / safe, torch.ones_like(lam))
    gap = 0.5 * rr * (1 + s * s) - s * ry + lam * B.abs().sum(0)
    # lam = 0: least squares, first-order condition as in scikit-learn (in its dual_gap_ units)
    gap = torch.where(lam > 0, gap, n * (R * R).sum(0))
    return gap.clamp_min(0), R, dual_norm


def _screen(R, dual_norm, gap, lam, diag):
    """Gap-safe rule: True where coefficient (j, k) may be non-zero at the optimum."""
    theta = R / torch.maximum(lam, dual_norm)
    radius = torch.sqrt(2 * gap * diag)  # (p, K)
    lam_safe = torch.where(lam > 0, lam, torch.ones_like(lam))
    keep = (1 - theta.abs()) <= radius / lam_safe
    return keep | (lam == 0) | (diag == 0)


@contextlib.contextmanager
def few_threads(device, work: int):
    """One CPU thread for calls made of many small kernels: thread start-up dominates them, badly so
    on a busy machine (measured on 2 loaded cores, n = 2000, p = K = 200: 0.08 s single-threaded
    vs 0.5 s with 2 threads; one ``isfinite`` over X took 0.8 ms vs 116 ms). ``work``: the size of
    the largest single operation (multiply-adds); above ``_SINGLE_THREAD_WORK`` threads are kept."""
    if not isinstance(device, torch.device) or device.type != "cpu" or work > _SINGLE_THREAD_WORK:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SINGLE_THREAD_WORK = 2**28


def _cpu_threads(fn):
    """Run ``fn(X, Y, ...)`` under :func:`few_threads`, sized by its first two tensor arguments."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with few_threads(*_work(*args[:2])):
            return fn(*args, **kwargs)

    return wrapper


def _work(*tensors) -> tuple[torch.device | None, int]:
    """Device and a multiply-add estimate of the costliest step (Gram / cross products / sweeps)."""
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    if not ts:
        return None, 0
    X = ts[0]
    widest = max(max(t.shape[-1] for t in ts if t.dim() > 0), 1)
    return X.device, X.numel() * widest


def _sweep(coords, Gz, U, beta, thr, neg_thr, shared):
    """One cyclic pass over ``coords``, all problems at once, in place, in standardised variables.

    ``U_j = c'_j - Σ_{i≠j} G'_ji β_i`` (``Gz`` = standardised Gram with a zero diagonal), so the exact
    coordinate minimiser is the soft threshold of ``U_j``: 4 kernels per coordinate for a shared design.
    """
    Ur, Br, Gr = U.unbind(0), beta.unbind(0), Gz.unbind(0)
    if shared:
        for j in coords:
            bj = Br[j]
            new = F.softshrink(Ur[j], thr[j])  # exact zeros where |U_j| <= threshold
            delta = new - bj
            bj.copy_(new)
            U.addr_(Gr[j], delta, alpha=-1)
    else:
        Tr, Nr = thr.unbind(0), neg_thr.unbind(0)
        for j in coords:
            bj, z = Br[j], Ur[j]
            new = z - z.clamp(Nr[j], Tr[j])
            delta = new - bj
            bj.copy_(new)
            U.addcmul_(Gr[j], delta, value=-1)


def _solve(G, C, q, lam, B, n, shared, tol, max_iter, screening):
    """Split the problems into penalised (lam > 0) and least-squares (lam = 0) groups and solve each.

    Layout (p, K): C, B; G (p, p) or, batched, (p_j, p_i, K). Returns B, n_iter, gap, converged.
    """
    pos = lam > 0
    if bool(pos.all()) or not bool(pos.any()):
        return _solve_group(G, C, q, lam, B, n, shared, tol, max_iter, screening, zero=not bool(pos.any()))
    K = lam.shape[0]
    outs = [torch.empty(B.shape, dtype=B.dtype, device=B.device), torch.empty(K, dtype=torch.long, device=B.device),
            torch.empty(K, dtype=B.dtype, device=B.device), torch.empty(K, dtype=torch.bool, device=B.device)]
    for sel, zero in ((pos, False), (~pos, True)):
        Gs = G if shared else G[:, :, sel]
        res = _solve_group(Gs, C[:, sel], q[sel], lam[sel], B[:, sel], n, shared, tol, max_iter, screening, zero)
        outs[0][:, sel] = res[0]
        for o, r in zip(outs[1:], res[1:], strict=True):
            o[sel] = r
    return tuple(outs)


def _solve_group(G, C, q, lam, B, n, shared, tol, max_iter, screening, zero):
    """Coordinate descent on standardised variables ``β_jk = b_jk sqrt(G_jj) / lam_k``.

    With ``G' = D^{-1/2} G D^{-1/2}`` (unit diagonal) and ``c'_jk = c_jk / (lam_k sqrt(G_jj))`` problem k
    becomes ``lam_k^2 [1/2 β^T G' β - β^T c' + Σ_j |β_j| / sqrt(G_jj)]``: one threshold per coordinate,
    shared by all problems, so the update is a single ``softshrink``. (``zero``: all lam = 0, no scaling,
    no threshold.) The gap is computed in the original variables, with scikit-learn's rule.
    """
    p, K = C.shape
    device, dtype = C.device, C.dtype
    diag = torch.diagonal(G) if shared else torch.diagonal(G, dim1=0, dim2=1).T  # (p,) or (p, K)
    diag = diag.reshape(p, -1)  # (p, 1) or (p, K)
    has = diag > 0  # constant columns (zero after centring) keep a zero coefficient
    sd = torch.where(has, diag.clamp_min(0).sqrt(), torch.ones_like(diag))
    inv_sd = torch.where(has, 1 / sd, torch.zeros_like(sd))
    if shared:
        Gz = G * (inv_sd * inv_sd.T)
        Gz.fill_diagonal_(0)
        thr_all = [0.0] * p if zero else inv_sd.flatten().tolist()
        neg_thr = None
    else:
        Gz = G * (inv_sd.unsqueeze(1) * inv_sd.unsqueeze(0))
        torch.diagonal(Gz, dim1=0, dim2=1).zero_()
    scale = torch.ones_like(lam) if zero else lam
    beta = torch.where(has, B * sd / scale, torch.zeros_like(B))

    out_B = torch.zeros_like(B)
    out_iter = torch.zeros(K, dtype=torch.long, device=device)
    out_gap = torch.zeros(K, dtype=dtype, device=device)
    out_conv = torch.zeros(K, dtype=torch.bool, device=device)
    work = torch.arange(K, device=device)  # problems still being solved
    thresh = tol * q
    sweeps = 0
    while True:
        b = beta * inv_sd * scale
        gap, R, dual_norm = _gap(G, C, q, b, lam, n, shared)
        done = gap <= thresh
        if sweeps >= max_iter:
            done = torch.ones_like(done)
        if bool(done.any()):
            idx = work[done]
            out_B[:, idx] = b[:, done]
            out_gap[idx] = gap[done]
            out_iter[idx] = sweeps
            out_conv[idx] = (gap <= thresh)[done]
            keep = ~done
            if not bool(keep.any()):
                break
            work, C, q, lam, scale, beta = work[keep], C[:, keep], q[keep], lam[keep], scale[keep], beta[:, keep]
            R, dual_norm, gap, thresh = R[:, keep], dual_norm[keep], gap[keep], thresh[keep]
            if not shared:
                G, Gz, diag, has = G[:, :, keep], Gz[:, :, keep], diag[:, keep], has[:, keep]
                sd, inv_sd = sd[:, keep], inv_sd[:, keep]
        alive = has.expand(p, beta.shape[1])
        if screening and not zero:
            # gap-safe screening: zero what the gap proves zero, sweep only coordinates alive somewhere
            alive = alive & _screen(R, dual_norm, gap, lam, diag)
            dead_nz = (~alive) & (beta != 0)
            if bool(dead_nz.any()):
                R = R + _gb(G, torch.where(dead_nz, beta * inv_sd * scale, torch.zeros_like(beta)), shared)
                beta.masked_fill_(dead_nz, 0)
        coords = alive.any(1).nonzero().flatten().tolist()
        U = R * inv_sd / scale + beta
        if shared:
            thr = thr_all
        else:
            thr = torch.zeros_like(beta) if zero else inv_sd.expand_as(beta).contiguous()
            neg_thr = -thr
        # the gap check costs ~100 small kernels: once a problem needs many sweeps, check only after
        # ~10% more of them (the reported n_iter may overshoot the first converged sweep by that much)
        inner = min(max(1, sweeps // 10), max_iter - sweeps)
        for _ in range(inner):
            _sweep(coords, Gz, U, beta, thr, neg_thr, shared)
        sweeps += inner
    return out_B, out_iter, out_gap, out_conv


def _solve_prepared(prep: _Prepared, lam_t, init, tol, max_iter, screening, shared):
    K, p = prep.xty.shape
    if init is None:
        B0 = torch.zeros(p, K, dtype=prep.xty.dtype, device=prep.xty.device)
    else:
        init = check_tensor(init, "init")
        if init.shape != (K, p):
            raise ValueError(f"init must have shape ({K}, {p}), got {tuple(init.shape)}")
        B0 = init.to(device=prep.xty.device, dtype=prep.xty.dtype).T.contiguous()
    G = prep.gram if shared else prep.gram.permute(2, 1, 0).contiguous()
    B, n_iter, gap, conv = _solve(
        G, prep.xty.T.contiguous(), prep.yty, lam_t, B0, prep.n, shared, tol, max_iter, screening
    )
    coef = B.T.contiguous()
    if shared:
        intercept = prep.y_mean - coef @ prep.x_mean
    else:
        intercept = prep.y_mean - (coef * prep.x_mean).sum(-1)
    return LassoResult(coef, intercept, n_iter, conv, gap, lam_t)


def _squeeze(res: LassoResult) -> LassoResult:
    return LassoResult(
        res.coef[0], res.intercept[0], res.n_iter[0], res.converged[0], res.dual_gap[0], res.lam[0]
    )


@_cpu_threads
def lasso(
    X: torch.Tensor,
    Y: torch.Tensor,
    lam,
    *,
    tol: float = 1e-4,
    max_iter: int = 1000,
    init: torch.Tensor | None = None,
    screening: bool = True,
) -> LassoResult:
    """Solve K Lasso problems with intercept at once (scikit-learn's objective, see the module doc).

    ``X`` is a shared design ``(n, p)`` (the fast path: one Gram for all targets) or one design per
    problem ``(K, n, p)``; ``Y`` is ``(n, K)``, or ``(n,)`` for one problem (the result then has no K
    dimension). ``lam`` is a number or a ``(K,)`` tensor, each >= 0. ``tol``: stop problem k when its
    duality gap is at most ``tol * ||y_{c,k}||^2 / n`` (scikit-learn's rule); ``max_iter``: most
    coordinate-descent sweeps; problems that hit it are returned with ``converged=False``.
    ``init (K, p)``: warm-start coefficients. [paper: Lasso as the sparse linear approximation step]
    """
    X, Y2, shared, squeeze = _check_xy(X, Y)
    tol, max_iter = _check_run_args(tol, max_iter)
    K = Y2.shape[1]
    lam_t = _check_lam(lam, K, X)
    if init is not None and squeeze and isinstance(init, torch.Tensor) and init.dim() == 1:
        init = init.unsqueeze(0)
    res = _solve_prepared(_prepare(X, Y2, shared), lam_t, init, tol, max_iter, screening, shared)
    return _squeeze(res) if squeeze else res


@_cpu_threads
def lasso_gram(
    gram: torch.Tensor,
    xty: torch.Tensor,
    yty: torch.Tensor,
    lam,
    *,
    n: int,
    x_mean: torch.Tensor | None = None,
    y_mean: torch.Tensor | None = None,
    tol: float = 1e-4,
    max_iter: int = 1000,
    init: torch.Tensor | None = None,
    screening: bool = True,
) -> LassoResult:
    """The solver on precomputed centred statistics, for callers that reuse one Gram many times.

    ``gram = X_c^T X_c / n`` ``(p, p)`` (shared) or ``(K, p, p)``; ``xty = X_c^T Y_c / n`` as ``(K, p)``;
    ``yty = ||y_{c,k}||^2 / n`` ``(K,)``; ``n`` the sample count (used by the ``lam = 0`` criterion).
    With ``x_mean`` ``(p,)``/``(K, p)`` and ``y_mean`` ``(K,)`` the intercept is returned, else it is 0.
    """
    gram = check_tensor(gram, "gram", allow_empty=False)
    xty = check_tensor(xty, "xty", allow_empty=False)
    yty = check_tensor(yty, "yty", allow_empty=False)
    if xty.dim() != 2:
        raise ValueError(f"xty must have shape (K, p), got {tuple(xty.shape)}")
    K, p = xty.shape
    shared = gram.dim() == 2
    if gram.shape not in ((p, p), (K, p, p)):
        raise ValueError(f"gram must have shape ({p}, {p}) or ({K}, {p}, {p}), got {tuple(gram.shape)}")
    if yty.shape != (K,):
        raise ValueError(f"yty must have shape ({K},), got {tuple(yty.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    tol, max_iter = _check_run_args(tol, max_iter)
    lam_t = _check_lam(lam, K, xty)
    zeros_x = torch.zeros((p,) if shared else (K, p), dtype=xty.dtype, device=xty.device)
    prep = _Prepared(
        gram,
        xty,
        yty,
        zeros_x if x_mean is None else x_mean,
        torch.zeros(K, dtype=xty.dtype, device=xty.device) if y_mean is None else y_mean,
        n,
    )
    return _solve_prepared(prep, lam_t, init, tol, max_iter, screening, shared)


def lasso_lambda_max(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Smallest penalty with an all-zero solution: ``lam_max = ||X_c^T y_c||_inf / n`` [derived: KKT at b=0].

    Shape ``(K,)`` (a scalar for a 1-D ``Y``). Computed exactly as the solver's first check does, so
    ``lasso(X, Y, lasso_lambda_max(X, Y))`` returns exact zeros.
    """
    X, Y2, shared, squeeze = _check_xy(X, Y)
    lam_max = _prepare(X, Y2, shared).xty.abs().amax(-1)
    return lam_max[0] if squeeze else lam_max


def lasso_objective(X: torch.Tensor, Y: torch.Tensor, coef, intercept, lam) -> torch.Tensor:
    """scikit-learn's Lasso objective ``1/(2n) ||y - X b - b0||^2 + lam ||b||_1`` per problem."""
    X, Y2, shared, squeeze = _check_xy(X, Y)
    K = Y2.shape[1]
    coef = check_tensor(coef, "coef").reshape(K, -1)
    intercept = check_tensor(intercept, "intercept").reshape(K)
    lam_t = _check_lam(lam, K, X)
    if coef.shape[1] != X.shape[-1]:
        raise ValueError(f"coef has {coef.shape[1]} columns but X has p={X.shape[-1]}")
    pred = X @ coef.T if shared else torch.einsum("knp,kp->nk", X, coef)
    resid = Y2 - pred - intercept
    obj = 0.5 * (resid * resid).mean(0) + lam_t * coef.abs().sum(-1)
    return obj[0] if squeeze else obj


@_cpu_threads
def lasso_path(
    X: torch.Tensor,
    Y: torch.Tensor,
    lambdas,
    *,
    tol: float = 1e-4,
    max_iter: int = 1000,
    screening: bool = True,
) -> LassoPathResult:
    """Solve every problem at every penalty of ``lambdas``, warm-starting from the next larger one.

    ``lambdas``: a 1-D sequence/tensor ``(M,)`` shared by all problems, or ``(M, K)`` per problem. The
    path is solved in decreasing order (row-wise maximum for ``(M, K)``), so each fit starts from a
    nearby solution, and returned in the order given. The Gram is computed once.
    """
    X, Y2, shared, squeeze = _check_xy(X, Y)
    tol, max_iter = _check_run_args(tol, max_iter)
    K = Y2.shape[1]
    if isinstance(lambdas, torch.Tensor):
        lam_all = lambdas.to(device=X.device, dtype=X.dtype)
    else:
        try:
            lam_all = torch.as_tensor([float(v) for v in lambdas], dtype=X.dtype, device=X.device)
        except (TypeError, ValueError) as err:
            raise TypeError("lambdas must be a sequence of numbers or a tensor") from err
    if lam_all.dim() not in (1, 2) or lam_all.shape[0] == 0 or (lam_all.dim() == 2 and lam_all.shape[1] != K):
        raise ValueError(f"lambdas must have shape (M,) or (M, {K}) with M >= 1, got {tuple(lam_all.shape)}")
    for m in range(lam_all.shape[0]):
        _check_lam(lam_all[m], K, X, name=f"lambdas[{m}]")
    prep = _prepare(X, Y2, shared)
    M, p = lam_all.shape[0], X.shape[-1]
    order = torch.argsort(lam_all.reshape(M, -1).amax(1), descending=True, stable=True).tolist()
    coef = torch.zeros(M, K, p, dtype=X.dtype, device=X.device)
    intercept = torch.zeros(M, K, dtype=X.dtype, device=X.device)
    n_iter = torch.zeros(M, K, dtype=torch.long, device=X.device)
    conv = torch.zeros(M, K, dtype=torch.bool, device=X.device)
    gap = torch.zeros(M, K, dtype=X.dtype, device=X.device)
    init = None
    for m in order:
        lam_t = _check_lam(lam_all[m], K, X, name=f"lambdas[{m}]")
        res = _solve_prepared(prep, lam_t, init, tol, max_iter, screening, shared)
        coef[m], intercept[m], n_iter[m], conv[m], gap[m] = (
            res.coef, res.intercept, res.n_iter, res.converged, res.dual_gap
        )
        init = res.coef
    if squeeze:
        return LassoPathResult(
            lam_all if lam_all.dim() == 1 else lam_all[:, 0], coef[:, 0], intercept[:, 0], n_iter[:, 0],
            conv[:, 0], gap[:, 0],
        )
    return LassoPathResult(lam_all, coef, intercept, n_iter, conv, gap)



# ---------------------------------------------------------------------------------------------
# least-squares refit on a support


@_cpu_threads
def refit_least_squares_gram(
    gram: torch.Tensor,
    xty: torch.Tensor,
    support: torch.Tensor,
    *,
    chunk_elements: int = 2**24,
) -> torch.Tensor:
    """Least squares restricted to each problem's support, from centred statistics [derived].

    Solves ``G_SS b_S = c_S`` with ``b`` zero off ``S`` for every problem (``gram (p, p)`` shared or
    ``(K, p, p)``, ``xty (K, p)``, ``support (K, p)`` bool). The masked system is completed with the
    identity off the support so it stays square; a Cholesky solve is used where it succeeds and the
    pseudo-inverse (minimum-norm least squares) where the support's Gram is singular. Problems are
    processed in chunks of at most ``chunk_elements`` Gram entries to bound memory.
    """
    gram = check_tensor(gram, "gram", allow_empty=False)
    xty = check_tensor(xty, "xty")
    if not isinstance(support, torch.Tensor) or support.dtype != torch.bool:
        raise TypeError("support must be a boolean torch.Tensor")
    if support.shape != xty.shape:
        raise ValueError(f"support has shape {tuple(support.shape)} but xty has {tuple(xty.shape)}")
    K, p = xty.shape
    support = support.to(xty.device)
    out = torch.zeros_like(xty)
    step = max(1, chunk_elements // max(1, p * p))
    for start in range(0, K, step):
        sl = slice(start, min(K, start + step))
        m = support[sl].to(xty.dtype)  # (k, p)
        G = gram if gram.dim() == 2 else gram[sl]
        A = G * (m.unsqueeze(2) * m.unsqueeze(1)) + torch.diag_embed(1 - m)
        rhs = (xty[sl] * m).unsqueeze(-1)
        L, info = torch.linalg.cholesky_ex(A)
        sol = torch.cholesky_solve(rhs, L).squeeze(-1)
        bad = info != 0
        if bool(bad.any()):
            sol[bad] = (torch.linalg.pinv(A[bad], hermitian=True) @ rhs[bad]).squeeze(-1)
        out[sl] = sol * m
    return out


@_cpu_threads
def refit_least_squares(
    X: torch.Tensor, Y: torch.Tensor, support: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ordinary least squares with intercept on each problem's support: returns ``coef, intercept``.

    ``X (n, p)`` shared or ``(K, n, p)``; ``Y (n, K)`` or ``(n,)``; ``support (K, p)`` (or ``(p,)``) bool.
    The refit step of backward approximation [paper]: keep the Lasso's selection, drop its shrinkage.
    """
    X, Y2, shared, squeeze = _check_xy(X, Y)
    K, p = Y2.shape[1], X.shape[-1]
    if not isinstance(support, torch.Tensor) or support.dtype != torch.bool:
        raise TypeError("support must be a boolean torch.Tensor")
    sup = support.reshape(1, -1) if (squeeze and support.dim() == 1) else support
    if sup.shape != (K, p):
        raise ValueError(f"support must have shape ({K}, {p}), got {tuple(support.shape)}")
    prep = _prepare(X, Y2, shared)
    coef = refit_least_squares_gram(prep.gram, prep.xty, sup)
    intercept = prep.y_mean - (coef @ prep.x_mean if shared else (coef * prep.x_mean).sum(-1))
    return (coef[0], intercept[0]) if squeeze else (coef, intercept)
