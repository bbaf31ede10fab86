"""Matched comparisons of pruning runs: equal remaining fractions, effects against the control, paired
differences over seeds, summary tables with 95% intervals (issue #10, parts 1–3).

Pruning methods remove weights at different speeds (One-Shot and Lottery Ticket 20% of what remains
per iteration, SI-adaptive as much as the weights' sparsity allows), so comparing them *at the same
iteration* compares models of different sizes. Here every run is instead read off at the same
**remaining fractions**:

* :func:`fraction_grid` — one shared, log-spaced grid of remaining fractions;
* :func:`at_fractions` — each run's metric (test accuracy by default) interpolated linearly in
  ``log(remaining fraction)`` between the two iterations that bracket each grid point. Only points
  inside the run's observed range are filled; outside it the value is NaN (never extrapolated);
* :func:`against_control` — each value minus the **control** run of the same seed (the same
  rewind-and-retrain schedule with nothing pruned, ``method="control"``), so extra training can
  never pose as "pruning helps";
* :func:`paired_differences` — method A minus method B, seed by seed (the same seed means the same
  dense model, see :func:`lqtheory.runs.dense.dense_id`);
* :func:`summarize` / :func:`summarize_paired` — mean and 95% interval over seeds per group, through
  :mod:`lqtheory.analysis.stats` (Student-t intervals of the mean over seeds).

Frames are the tidy frames :func:`lqtheory.runs.grid.run_experiments` returns (one row per run and
iteration, with ``run_id``, ``method``, ``scope``, ``seed``, ``remaining_percent``, ...).

Matching the control [derived]. Every iteration of a run rewinds to ``w_init`` and retrains ``epochs``
epochs; for the control, whose mask never changes, the iterations ``t ≥ 1`` are therefore repeated
draws of one procedure (the same dense network retrained ``epochs`` epochs), differing only in their
batch orders. There is no trend over ``t`` to match, so on a fraction grid a run is compared with the
**mean of its control's retrained iterations** ``t = 1..T``: the least noisy estimate of "the same
training without pruning". Iteration ``t = 0`` (the dense stage, ``dense_epochs`` long) is left out
because its length may differ from the retraining's. Per-iteration comparisons (no fraction grid)
match the control at the same ``t`` instead, where the two runs share the retraining's batch order
(the same ``derive_seed(seed, t, "train")``), which removes that source of noise from the difference.

Room: analysis (statistics and comparisons over runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lqtheory.analysis.stats import mean_interval, paired_interval
from lqtheory.runs.config import ExperimentConfig

__all__ = [
    "CONTROL",
    "MATCH_KEYS",
    "fraction_grid",
    "at_fractions",
    "against_control",
    "paired_differences",
    "summarize",
    "summarize_paired",
    "STANDARD_SETTINGS",
    "ADAPTIVE_METHODS",
    "rounds_of",
    "standard_settings",
    "standard_config",
    "standard_grid",
]

CONTROL = "control"

#: What a run and its control must share besides the seed: the data, the model and the schedule.
MATCH_KEYS = ("dataset", "model", "epochs", "dense_epochs")

#: Columns that identify a run in the frames (kept in the outputs when present).
_RUN_COLUMNS = ("run_id", "dataset", "model", "method", "scope", "seed", "p", "q", "eta", "gamma", "rate",
                "epochs", "dense_epochs", "iterations")


def _require(frame, columns: Sequence[str], name: str = "frame") -> None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}")


def fraction_grid(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` remaining fractions spaced evenly in ``log`` from ``hi`` down to ``lo`` (``0 < lo < hi ≤ 1``),
    in decreasing order (the order pruning visits them). Values are rounded to 6 significant digits so
    grids built in different notebooks compare equal."""
    for name, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if not 0 < lo < hi <= 1:
        raise ValueError(f"need 0 < lo < hi <= 1, got lo={lo:g}, hi={hi:g}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    grid = np.exp(np.linspace(math.log(hi), math.log(lo), n))
    return np.array([float(f"{g:.6g}") for g in grid])


def _fraction(frame) -> np.ndarray:
    return frame["remaining_percent"].to_numpy(dtype=float) / 100.0


def at_fractions(frame, fractions, value: str = "accuracy"):
    """Each run's ``value`` at the remaining ``fractions``, interpolated in ``log(fraction)``.

    For every run (``run_id``) the observed points are ``(log f_t, value_t)`` over its iterations ``t``
    (``f_t = remaining_percent / 100``). A grid fraction ``g`` inside ``[min f_t, max f_t]`` gets the
    linear interpolation between the two observed fractions that bracket it (an exact hit gets the
    observed value); a fraction outside that range gets NaN: a run is never extrapolated below the
    smallest fraction it reached. Iterations that left the fraction unchanged (a method that pruned
    nothing in a round, e.g. SI-adaptive once every unit hits its floor) are averaged into one point.
    ``iteration`` in the result is interpolated the same way (the pruning rounds needed to reach ``g``).

    Returns one row per (run, fraction): the run's identifying columns, ``fraction``, ``iteration``,
    and ``value``'s column under its own name.
    """
    import pandas as pd

    _require(frame, ("run_id", "iteration", "remaining_percent", value))
    grid = np.asarray(fractions, dtype=float).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0) or np.any(grid > 1):
        raise ValueError("fractions must be a non-empty sequence of numbers in (0, 1]")
    keep = [c for c in _RUN_COLUMNS if c in frame.columns]
    rows = []
    for _, run in frame.groupby("run_id", sort=False):
        f = _fraction(run)
        points = (
            pd.DataFrame({"x": np.log(f), "y": run[value].to_numpy(dtype=float),
                          "t": run["iteration"].to_numpy(dtype=float)})
            .groupby("x", sort=True).mean()  # one point per distinct fraction, ascending
        )
        x = points.index.to_numpy()
        gx = np.log(grid)
        # a tolerance of a few ulps: a grid point equal to an observed fraction is inside
        inside = (gx >= x[0] - 1e-12) & (gx <= x[-1] + 1e-12)
        gx_c = np.clip(gx, x[0], x[-1])
        y = np.where(inside, np.interp(gx_c, x, points["y"].to_numpy()), np.nan)
        t = np.where(inside, np.interp(gx_c, x, points["t"].to_numpy()), np.nan)
        ident = run.iloc[0][keep].to_dict()
        for g, yi, ti in zip(grid, y, t, strict=True):
            rows.append({**ident, "fraction": g, "iteration": ti, value: yi})
    return pd.DataFrame(rows)


def _control_rows(controls, value: str):
    _require(controls, ("method", "seed", "iteration", value, *MATCH_KEYS), "controls")
    ctrl = controls[controls["method"] == CONTROL]
    if ctrl.empty:
        raise ValueError("no control runs (method 'control') in the frame given as controls")
    if ctrl.groupby(["seed", *MATCH_KEYS, "iteration"]).size().max() > 1:
        raise ValueError("more than one control run for the same seed and schedule")
    return ctrl


def against_control(frame, controls=None, value: str = "accuracy"):
    """``frame``'s ``value`` minus the control of the same seed and schedule (see the module docstring).

    ``frame``: either a run frame (one row per run and iteration) or the output of :func:`at_fractions`
    (it has a ``fraction`` column). ``controls``: a run frame holding the control runs
    (``method == "control"``); default: the control rows of ``frame`` itself. A run is matched with the
    control that shares its ``seed`` and :data:`MATCH_KEYS` (data set, model, retraining and dense
    epochs). On a fraction grid the reference is the mean of the control's iterations ``t ≥ 1``;
    per iteration it is the control at the same ``t`` (the control must have run at least as many
    iterations). Control rows are dropped from the result. A run with no matching control raises
    ``ValueError`` naming its seed: an effect without its control is not reported.

    Adds ``control_<value>`` and ``effect = value − control_<value>``.
    """
    import pandas as pd

    if controls is None:
        controls = frame
    _require(frame, ("method", "seed", value, *MATCH_KEYS))
    ctrl = _control_rows(controls, value)
    keys = ["seed", *MATCH_KEYS]
    out = frame[frame["method"] != CONTROL].copy()
    ref_name = f"control_{value}"
    if "fraction" in frame.columns:
        retrained = ctrl[ctrl["iteration"] >= 1]
        if retrained.empty:
            raise ValueError("the control runs have no retrained iteration (iterations >= 1 needed)")
        ref = retrained.groupby(keys)[value].mean().rename(ref_name).reset_index()
    else:
        _require(frame, ("iteration",))
        ref = ctrl[[*keys, "iteration", value]].rename(columns={value: ref_name})
        keys = [*keys, "iteration"]
    merged = out.merge(ref, on=keys, how="left", validate="many_to_one")
    missing = merged[ref_name].isna() & merged[value].notna()
    if missing.any():
        bad = merged.loc[missing, keys].drop_duplicates().head(5).to_dict("records")
        raise ValueError(f"no control run for {bad} (run the control with the same seed and schedule)")
    merged["effect"] = merged[value] - merged[ref_name]
    return merged.reset_index(drop=True) if isinstance(merged, pd.DataFrame) else merged


def paired_differences(frame_a, frame_b, on: str | Sequence[str] = "seed", value: str = "accuracy",
                       by: str | Sequence[str] | None = None):
    """``a − b`` of ``value`` for rows of ``frame_a`` and ``frame_b`` aligned on ``on`` (the seed) and ``by``.

    ``by`` defaults to ``"fraction"`` when both frames have that column (outputs of
    :func:`at_fractions` / :func:`against_control`), else ``"iteration"``. Each frame must have at most
    one row per key (select one method and scope per frame first); keys present in only one frame, or
    with a NaN on either side (a fraction one run did not reach), are dropped. Returns the keys and
    columns ``a``, ``b``, ``difference``.
    """
    on = [on] if isinstance(on, str) else list(on)
    if by is None:
        by = ["fraction"] if "fraction" in frame_a.columns and "fraction" in frame_b.columns else ["iteration"]
    else:
        by = [by] if isinstance(by, str) else list(by)
    keys = [*by, *on]
    _require(frame_a, (*keys, value), "frame_a")
    _require(frame_b, (*keys, value), "frame_b")
    for name, f in (("frame_a", frame_a), ("frame_b", frame_b)):
        if f.duplicated(keys).any():
            raise ValueError(f"{name} has several rows per {keys}: select one method and scope first")
    a = frame_a[[*keys, value]].rename(columns={value: "a"})
    b = frame_b[[*keys, value]].rename(columns={value: "b"})
    merged = a.merge(b, on=keys, how="inner").dropna(subset=["a", "b"])
    merged["difference"] = merged["a"] - merged["b"]
    return merged.sort_values(keys, ascending=[False] * len(by) + [True] * len(on)).reset_index(drop=True)


def _interval_row(interval) -> dict:
    return {"mean": interval.mean, "lo": interval.lo, "hi": interval.hi, "n": interval.n}


def summarize(frame, by: str | Sequence[str], value: str = "accuracy", level: float = 0.95, min_n: int = 1):
    """Mean and ``level`` interval over seeds of ``value`` per group ``by`` (e.g. method, scope, fraction),
    through :func:`lqtheory.analysis.stats.mean_interval`. NaNs (fractions a run did not reach) are dropped
    first; groups with fewer than ``min_n`` values are left out. Columns: ``by``, ``mean``, ``lo``,
    ``hi``, ``n``."""
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    _require(frame, (*by, value))
    rows = []
    for key, group in frame.dropna(subset=[value]).groupby(by, sort=False):
        samples = group[value].to_numpy(dtype=float)
        if samples.size < max(1, min_n):
            continue
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), **_interval_row(mean_interval(samples, level=level))})
    return pd.DataFrame(rows, columns=[*by, "mean", "lo", "hi", "n"])


def summarize_paired(differences, by: str | Sequence[str] = "fraction", level: float = 0.95, min_n: int = 1):
    """Mean and ``level`` interval of the paired differences (output of :func:`paired_differences`) per
    group ``by``, through :func:`lqtheory.analysis.stats.paired_interval`. Columns: ``by``, ``mean``, ``lo``,
    ``hi``, ``n``."""
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    _require(differences, (*by, "a", "b"), "differences")
    rows = []
    for key, group in differences.groupby(by, sort=False):
        if len(group) < max(1, min_n):
            continue
        key = key if isinstance(key, tuple) else (key,)
        interval = paired_interval(group["a"].to_numpy(dtype=float), group["b"].to_numpy(dtype=float), level=level)
        rows.append({**dict(zip(by, key, strict=True)), **_interval_row(interval)})
    return pd.DataFrame(rows, columns=[*by, "mean", "lo", "hi", "n"])


# --------------------------------------------------------------------------------------------------
# The settings E2 (notebook 05) and E3 (notebook 06) share
# --------------------------------------------------------------------------------------------------

#: One table of settings per profile, written once so that notebooks 05 and 06 build identical
#: configurations for the runs they share (Lottery Ticket, One-Shot, SI-adaptive(c=1) = SAP(0.5, 1),
#: random and the control at each scope): run folders are content-addressed, so a shared run is
#: computed once. ``dense_epochs``: the dense stage, long enough to converge (notebook 05 measures
#: it against a 3x longer dense run); ``epochs``: each retraining after a pruning step; ``iterations``:
#: the prune-rewind-retrain rounds of the rate methods (Lottery Ticket, One-Shot, random: ``rate`` of
#: what remains per round); ``sap_iterations``: the rounds of SAP and SI-adaptive, which set their own
#: pace (the papers' T = 30); the control runs as long as the longest (:func:`rounds_of`); ``n_seeds``:
#: seeds ``seed, seed+1, ...``; ``grid``: the shared log-spaced remaining-fraction grid
#: ``fraction_grid(lo, 1, n)``.
STANDARD_SETTINGS: dict[str, dict] = {
    "ci": dict(dataset="digits", model="mlp-64-1-2-relu", lr=0.2, batch_size=64, n_train=None, n_test=None,
               dense_epochs=8, epochs=4, iterations=6, sap_iterations=8, rate=0.2, n_seeds=3, grid_lo=0.27,
               grid_n=6),
    # default: 40,000 training images (class-balanced) reach 0.889 / 0.887 dense in 10 epochs for seeds 0 / 1
    # (30 epochs: 0.889 / 0.891; 30,000 images: 0.882 < the required 0.885; 60,000: 0.896 at 1.5x the cost).
    # Retraining from the rewound weights: 5 epochs reached only 0.879 (1 point short of dense, not converged),
    # 7 epochs 0.885 (0.4 points short); 8 epochs, and the control run (same schedule, nothing pruned) measures
    # whatever gap is left (claim E2.retrain). The papers' regime (issue #20): 16 rounds at 20% reach
    # 0.8^16 = 2.8% remaining, SAP runs the papers' T = 30, 5 seeds; the grid ends at 3%.
    "default": dict(dataset="fashion-mnist", model="mlp-128-1-2-relu", lr=0.1, batch_size=250, n_train=40_000,
                    n_test=None, dense_epochs=10, epochs=8, iterations=16, sap_iterations=30, rate=0.2, n_seeds=5,
                    grid_lo=0.03, grid_n=13),
    "paper": dict(dataset="fashion-mnist", model="mlp-128-1-2-relu", lr=0.1, batch_size=250, n_train=None,
                  n_test=None, dense_epochs=100, epochs=100, iterations=30, sap_iterations=30, rate=0.2, n_seeds=5,
                  grid_lo=0.002, grid_n=25),
}

#: Methods that set their own pace (their rounds are ``sap_iterations``).
ADAPTIVE_METHODS = ("sap", "si-adaptive")


def rounds_of(profile: str, method: str) -> int:
    """The prune-rewind-retrain rounds of ``method`` at ``profile``: ``sap_iterations`` for SAP and
    SI-adaptive, ``iterations`` for the rate methods, the longer of the two for the control (it is
    compared with every method at the same iteration)."""
    s = standard_settings(profile)
    if method in ADAPTIVE_METHODS:
        return s["sap_iterations"]
    if method == "control":
        return max(s["iterations"], s["sap_iterations"])
    return s["iterations"]


def standard_settings(profile: str) -> dict:
    """A copy of :data:`STANDARD_SETTINGS` ``[profile]`` (``ci``, ``default`` or ``paper``)."""
    if profile not in STANDARD_SETTINGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(STANDARD_SETTINGS)}")
    return dict(STANDARD_SETTINGS[profile])


def standard_config(profile: str, method: str, scope: str = "neuron", seed: int = 0, *, device: str = "auto",
                    **changes):
    """The :class:`lqtheory.runs.config.ExperimentConfig` of one run at ``profile``'s shared settings.

    ``method``/``scope``/``seed`` as usual; ``changes`` override any field. Notebooks that build their
    configurations here share every run they have in common. SAP(0.5, 1) and SI-adaptive(q=0.5, c=1)
    are the same rule (:class:`lqtheory.engine.pruning.SIAdaptive` is SAP with ``(p, q) = (q_small, 1)``), but
    the method name is part of the run id: to share those runs, build both as
    ``standard_config(profile, "si-adaptive", scope, seed, p=0.5, q=1.0, gamma=1.0)`` (notebook 05 does).
    """
    s = standard_settings(profile)
    fields = dict(dataset=s["dataset"], model=s["model"], method=method, scope=scope, seed=seed, lr=s["lr"],
                  batch_size=s["batch_size"], n_train=s["n_train"], n_test=s["n_test"],
                  dense_epochs=s["dense_epochs"], epochs=s["epochs"], iterations=rounds_of(profile, method),
                  rate=s["rate"], device=device)
    return ExperimentConfig(**{**fields, **changes})


def standard_grid(profile: str) -> np.ndarray:
    """The shared remaining-fraction grid of ``profile``: ``fraction_grid(grid_lo, 1, grid_n)``."""
    s = standard_settings(profile)
    return fraction_grid(s["grid_lo"], 1.0, s["grid_n"])
