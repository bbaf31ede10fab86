"""The metrics researchers reach for beside the lq indices: WeightWatcher's per-layer spectral metrics.

With the optional extra ``[peers]`` (``pip install lqtheory[peers]``: ``weightwatcher``),
:func:`weightwatcher_metrics` runs ``WeightWatcher(model).analyze()`` once and returns, for every
profiled weight, the power-law exponent ``alpha`` of its eigenvalue spectrum, ``alpha_weighted``
(α · log10 λ_max), the ``stable_rank`` and the ``log_norm`` (log10 of the squared Frobenius norm).
WeightWatcher skips layers it cannot fit (too few eigenvalues, attention in-projections it does not
recognise); those get NaN. Without the package, :data:`PEERS_HINT` says how to get it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import warnings

import numpy as np
import pandas as pd
import torch

from lqtheory.engine.masks import global_magnitude_prune
from lqtheory.profiler.masking import masked_weights

__all__ = ["PEER_METRICS", "PEERS_HINT", "PeersUnavailable", "peers_available", "weightwatcher_metrics"]

PEER_METRICS = ("alpha", "alpha_weighted", "stable_rank", "log_norm")
PEERS_HINT = ("WeightWatcher's metrics (alpha, alpha_weighted, stable_rank, log_norm) need the optional extra: "
              "pip install lqtheory[peers]")


class PeersUnavailable(ImportError):
    """WeightWatcher is not installed."""


def peers_available() -> bool:
    return importlib.util.find_spec("weightwatcher") is not None


def weightwatcher_metrics(model, names) -> pd.DataFrame:
    """One row per weight name in ``names`` (``module.weight``): WeightWatcher's metrics (NaN where it
    skipped the layer). Raises :class:`PeersUnavailable` without the extra."""
    if not peers_available():
        raise PeersUnavailable(PEERS_HINT)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import weightwatcher as ww
        from weightwatcher.constants import LAYER_TYPE

        # only the layer types the profiler's units live in: no SVD of a (vocabulary x width) embedding
        kinds = [LAYER_TYPE.DENSE, LAYER_TYPE.CONV1D, LAYER_TYPE.CONV2D]
        details = ww.WeightWatcher(model=model, log_level=logging.ERROR).analyze(layers=kinds)
    by_module = {}
    for r in details.to_dict(orient="records"):
        by_module.setdefault(str(r.get("longname", r.get("name"))), r)
    rows = []
    for name in names:
        module = name.rpartition(".")[0]
        r = by_module.get(module, {})
        row = {"layer": name}
        for k in PEER_METRICS:
            v = r.get(k, math.nan)
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                row[k] = math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["layer", *PEER_METRICS])


# ------------------------------------------------------------------------------------ in the profile
#: model-level metrics ranked against the measured prunability (lq indices, plain Gini, WeightWatcher)
RANKED_METRICS = ("m_over_d", "pqi_mean", "gini_mean", "gini_global", "sap_kept_fraction",
                  *(f"{k}_mean" for k in PEER_METRICS))
#: one-shot prunability: the smallest kept fraction (global magnitude, no retraining) whose degradation
#: stays within the tolerance of its measure (1 point of accuracy, 1% top-1 disagreement or 1 - cos)
PRUNABILITY_TOLERANCE = {"accuracy_drop": 0.01, "top1_disagreement": 0.01, "cosine_drift": 0.01, "drift": 0.1}
PRUNABILITY_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def attach_peer_metrics(prof, model, names) -> None:
    """Add WeightWatcher's metrics to ``prof.layers`` (columns) and ``prof.peer_summary`` (``<metric>_mean``,
    NaN-skipping means over layers); without the extra, or if it fails on this model, a note. They stay
    out of ``prof.summary`` so that the lq report reads the same with and without the extra."""
    if not peers_available():
        prof.notes.append(PEERS_HINT)
        return
    try:
        ww = weightwatcher_metrics(model, names)
    except Exception as err:  # e.g. a TorchScript module WeightWatcher cannot walk: keep the profile
        prof.notes.append(f"WeightWatcher failed on this model ({type(err).__name__}: {err})"[:300])
        return
    by_layer = ww.set_index("layer")
    for k in PEER_METRICS:
        prof.layers[k] = by_layer[k].reindex(prof.layers.layer).to_numpy()
        prof.peer_summary[f"{k}_mean"] = float(by_layer[k].mean()) if by_layer[k].notna().any() else math.nan


def one_shot_prunability(loaded, evaluator, weights, transposed) -> dict:
    """Global magnitude pruning (one threshold over all profiled weights, no retraining) at every kept
    fraction of :data:`PRUNABILITY_GRID`; the smallest kept fraction within the tolerance."""
    dense = evaluator.outputs()
    base = evaluator.compare(dense, dense)
    key = evaluator.degradation_key()
    if key == "drift" and "top1_agreement" in base:
        key = "top1_disagreement"
    total = sum(w.numel() for w in weights.values())
    curve = []
    for kept in PRUNABILITY_GRID:
        masks = global_magnitude_prune(weights, total - round(kept * total), scope="global")
        with masked_weights(loaded.model, masks, transposed), torch.no_grad():
            m = evaluator.compare(dense, evaluator.outputs())
        if key == "accuracy_drop":
            value = base["accuracy"] - m["accuracy"]
        elif key == "top1_disagreement":
            value = 1.0 - m["top1_agreement"]
        else:
            value = m[key]
        curve.append((kept, float(value)))
    tol = PRUNABILITY_TOLERANCE[key]
    ok = [k for k, v in curve if v <= tol]
    return dict(rule="global magnitude, one-shot", measure=key, tolerance=tol,
                kept_fraction=min(ok) if ok else 1.0, curve=curve)


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def rank_agreement(models: pd.DataFrame, measured: str = "prunability_kept", n_boot: int = 2000,
                   seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Spearman's ρ of every metric of :data:`RANKED_METRICS` present in ``models`` with ``measured``
    (lower kept fraction = more prunable), and a percentile bootstrap interval over the models
    (replicates where either ranking is constant are dropped, and counted)."""
    rows = []
    y = models[measured].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(models), size=(n_boot, len(models)))
    for metric in RANKED_METRICS:
        if metric not in models or models[metric].isna().any():
            continue
        x = models[metric].to_numpy(dtype=float)
        rho = _spearman(x, y) if len(models) >= 3 else math.nan
        reps = []
        if len(models) >= 4:
            for i in idx:
                xi, yi = x[i], y[i]
                if np.ptp(xi) > 0 and np.ptp(yi) > 0:
                    reps.append(_spearman(xi, yi))
        lo, hi = (np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]).tolist() if len(reps) >= 10
                  else (math.nan, math.nan))
        rows.append(dict(metric=metric, spearman=rho, lo=lo, hi=hi, abs_spearman=abs(rho), models=len(models),
                         replicates=len(reps)))
    out = pd.DataFrame(rows)
    return out.sort_values("abs_spearman", ascending=False, ignore_index=True) if len(out) else out
