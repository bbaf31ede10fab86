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

import pandas as pd

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

        details = ww.WeightWatcher(model=model, log_level=logging.ERROR).analyze()
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
