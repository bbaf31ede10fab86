"""Batched Lasso benchmark: K problems in one `lqtheory.theory.lasso.lasso` call vs scikit-learn one by one.

    python benchmarks/bench_lasso.py                 # K=200 targets, n=2000, p=200 (the E1 use: every
                                                     # neuron of a layer on the same previous-layer outputs)
    python benchmarks/bench_lasso.py --quick         # K=50, n=1000, p=100
    python benchmarks/bench_lasso.py --device cuda --json lasso.json

Both solvers get the same problems (a shared design, K targets, per-target penalty
``lam_k = 0.1 lam_max,k``), the same stopping rule (duality gap <= tol * ||y_c||^2, at tol = 1e-4,
the scikit-learn default, and at 1e-8; float32 at most 1e-6) and the same iteration cap, on a
Gaussian and on an AR(1) (rho = 0.9) design. scikit-learn checks the gap only once the largest
coordinate change is small, so at equal tol it often stops later and more accurately than we do.
The baseline is ``sklearn.linear_model.Lasso(alpha=lam_k).fit(X, y_k)`` for k = 1..K in a Python
loop, i.e. what one would write without a batched solver. Times are paired medians over interleaved
rounds (``harness.measure``), so the ratio is meaningful on a loaded machine; absolute times are not.
Each row's note also reports the accuracy of what was timed: the largest relative excess of the
objective over a tightly solved reference (tol = 1e-12), for both solvers, and the sweeps used.

Also importable: ``run_group(preset, device, repeats)`` is the ``lasso`` group of ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script: make `benchmarks` and `lqtheory` importable
    sys.path.insert(0, str(_HERE.parent))

from benchmarks.harness import Row, environment, format_table, measure, row_from_samples, write_json  # noqa: E402

# preset name -> (K targets, n samples, p features, default repeats)
SIZES = {"full": (200, 2000, 200, 3), "quick": (50, 1000, 100, 3), "smoke": (4, 60, 10, 1)}
ALPHA = 0.1  # penalty as a fraction of each target's lam_max
TOLS = (1e-4, 1e-8)  # scikit-learn's default, and a tight one
MAX_ITER = 10000
SKLEARN = "scikit-learn Lasso, one target at a time"


def make_problem(K: int, n: int, p: int, rho: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A design ``X (n, p)`` (AR(1) columns with correlation ``rho``) and ``K`` sparse-signal targets."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, p, generator=g, dtype=torch.float64)
    X = Z.clone()
    if rho:
        for j in range(1, p):
            X[:, j] = rho * X[:, j - 1] + (1 - rho**2) ** 0.5 * Z[:, j]
    s = max(1, p // 10)
    B = torch.zeros(p, K, dtype=torch.float64)
    rows = torch.randint(0, p, (s, K), generator=g)
    B.scatter_(0, rows, torch.randn(s, K, generator=g, dtype=torch.float64))
    Y = X @ B + torch.randn(n, K, generator=g, dtype=torch.float64)
    return X, Y


def _sklearn_loop(Xn, Yn, lams, tol):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    coefs, intercepts = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(Yn.shape[1]):
            m = Lasso(alpha=float(lams[k]), tol=tol, max_iter=MAX_ITER).fit(Xn, Yn[:, k])
            coefs.append(m.coef_)
            intercepts.append(m.intercept_)
    return coefs, intercepts


def run_group(preset: str, device: torch.device, repeats: int | None = None) -> list[Row]:
    """The benchmark at one preset (``full``, ``quick``, ``smoke``): one row per design and dtype."""
    import numpy as np
    import sklearn

    from lqtheory.theory.lasso import lasso, lasso_lambda_max, lasso_objective

    K, n, p, default_repeats = SIZES[preset]
    repeats = repeats or default_repeats
    rows: list[Row] = []
    for (design, rho), tol in itertools.product((("gaussian", 0.0), ("AR(1) rho=0.9", 0.9)), TOLS):
        X, Y = make_problem(K, n, p, rho)
        lams = ALPHA * lasso_lambda_max(X, Y)
        Xn, Yn, lam_np = X.numpy(), Y.numpy(), lams.numpy()
        Xd, Yd, lamd = X.to(device), Y.to(device), lams.to(device)
        X32, Y32, lam32 = Xd.float(), Yd.float(), lamd.float()
        tol32 = max(tol, 1e-6)  # float32 cannot certify gaps below ~1e-6 relative
        cases = {
            SKLEARN: lambda Xn=Xn, Yn=Yn, lam_np=lam_np, tol=tol: _sklearn_loop(Xn, Yn, lam_np, tol),
            "batched float64": lambda Xd=Xd, Yd=Yd, lamd=lamd, tol=tol: lasso(Xd, Yd, lamd, tol=tol, max_iter=MAX_ITER),
            "batched float32": lambda X32=X32, Y32=Y32, lam32=lam32, tol=tol32: lasso(
                X32, Y32, lam32, tol=tol, max_iter=MAX_ITER
            ),
        }
        samples = measure(cases, device, repeats=repeats, warmup=1)
        # accuracy of what was timed: relative objective excess over a tightly solved reference
        ref = lasso(X, Y, lams, tol=1e-13, max_iter=100000)
        f_ref = lasso_objective(X, Y, ref.coef, ref.intercept, lams)

        def excess(coef, intercept, f_ref=f_ref, X=X, Y=Y, lams=lams):
            f = lasso_objective(X, Y, coef.double().cpu(), intercept.double().cpu(), lams)
            return float(((f - f_ref) / f_ref).max())

        sk_coef, sk_int = _sklearn_loop(Xn, Yn, lam_np, tol)
        sk_excess = excess(torch.as_tensor(np.stack(sk_coef)), torch.as_tensor(np.array(sk_int)))
        setting = f"{design}, K={K} n={n} p={p}, lam=0.1 lam_max"
        for name in ("batched float64", "batched float32"):
            res = cases[name]()
            used = tol if name.endswith("64") else tol32
            note = (f"{setting}, tol={used:g}; objective excess over a tol=1e-13 solution: "
                    f"{excess(res.coef, res.intercept):.1e} (sklearn {sk_excess:.1e}); sweeps <= "
                    f"{int(res.n_iter.max())}; converged {int(res.converged.sum())}/{K}")
            rows.append(row_from_samples("lasso", name, samples, [SKLEARN], size=K, note=note,
                                         label=f"{name} [{design}, tol {tol:g}]"))
        rows.append(row_from_samples("lasso", SKLEARN, samples, size=K, label=f"{SKLEARN} [{design}, tol {tol:g}]",
                                     note=f"{setting}, tol={tol:g}; objective excess {sk_excess:.1e}; "
                                          f"scikit-learn {sklearn.__version__}"))
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="K=50, n=1000, p=100")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, only to exercise the code")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds per case")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="write the rows and the environment to this file")
    args = ap.parse_args(argv)
    from lqtheory.engine.device import resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    env = environment(device)
    import sklearn

    env["sklearn"] = sklearn.__version__
    print(f"batched Lasso benchmark [{preset}] on {env['device']} ({env['device_name']}); torch {env['torch']}, "
          f"numpy {env['numpy']}, scikit-learn {env['sklearn']}, python {env['python']}, "
          f"{env['torch_threads']} torch thread(s) of {env['cpu_count']} CPUs, load average "
          f"{env.get('loadavg_start', '?')}, git {env['git']}", flush=True)
    rows = run_group(preset, device, args.repeats)
    print()
    print(format_table(rows))
    print()
    for r in rows:
        print(f"- {r.case}: {r.note}")
    payload = {"preset": preset, "sizes": SIZES[preset], "environment": env, "rows": [r.to_json() for r in rows]}
    if args.json:
        write_json(Path(args.json), payload)
        print(f"results: {args.json}")
    return payload


if __name__ == "__main__":
    main()
