"""Matched comparisons: the log-fraction interpolation (never extrapolated), the control, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lqtheory.analysis.comparison import against_control, at_fractions, fraction_grid, paired_differences

SCHEDULE = {"dataset": "digits", "model": "mlp-16-1-1-relu", "epochs": 2, "dense_epochs": 4}


def run_rows(run_id, method, seed, remaining, accuracy, scope="neuron", **extra):
    return [
        {"run_id": run_id, "method": method, "scope": scope, "seed": seed, "iteration": t,
         "remaining_percent": r, "accuracy": a, **SCHEDULE, **extra}
        for t, (r, a) in enumerate(zip(remaining, accuracy, strict=True))
    ]


def test_fraction_grid_is_log_spaced_and_validated():
    g = fraction_grid(0.01, 1.0, 5)
    assert g.tolist() == [1.0, 0.316228, 0.1, 0.0316228, 0.01]
    assert np.allclose(np.diff(np.log(g)), np.log(0.01) / 4, rtol=1e-5)
    for bad in [(0.0, 1.0, 3), (0.5, 0.4, 3), (0.1, 1.5, 3)]:
        with pytest.raises(ValueError):
            fraction_grid(*bad)
    with pytest.raises(ValueError, match="n must"):
        fraction_grid(0.1, 1.0, 1)


def test_at_fractions_interpolates_in_log_fraction_and_never_extrapolates():
    df = pd.DataFrame(run_rows("a", "lottery-ticket", 0, [100, 80, 64], [0.9, 0.8, 0.7]))
    out = at_fractions(df, [1.0, 0.9, 0.8, 0.7, 0.64, 0.5])
    acc = out["accuracy"].to_numpy()
    w = (math.log(0.9) - math.log(0.8)) / (math.log(1.0) - math.log(0.8))
    assert acc[0] == pytest.approx(0.9) and acc[2] == pytest.approx(0.8) and acc[4] == pytest.approx(0.7)
    assert acc[1] == pytest.approx(0.8 + w * 0.1)
    w2 = (math.log(0.7) - math.log(0.64)) / (math.log(0.8) - math.log(0.64))
    assert acc[3] == pytest.approx(0.7 + w2 * 0.1)
    assert math.isnan(acc[5])  # below the smallest fraction reached: NaN, not an extrapolation
    assert out["iteration"].tolist()[:3] == pytest.approx([0, 1 - w, 1])  # rounds needed, interpolated too
    assert (out["method"] == "lottery-ticket").all() and (out["run_id"] == "a").all()


def test_at_fractions_averages_rounds_that_pruned_nothing():
    df = pd.DataFrame(run_rows("s", "si-adaptive", 0, [100, 50, 50, 25], [0.9, 0.8, 0.6, 0.5]))
    out = at_fractions(df, [0.5, 0.25])
    assert out["accuracy"].tolist() == pytest.approx([0.7, 0.5])
    assert out["iteration"].tolist() == pytest.approx([1.5, 3.0])


def test_at_fractions_validates():
    df = pd.DataFrame(run_rows("a", "random", 0, [100, 80], [0.9, 0.8]))
    with pytest.raises(ValueError, match="fractions"):
        at_fractions(df, [0.0])
    with pytest.raises(ValueError, match="lacks"):
        at_fractions(df.drop(columns="remaining_percent"), [0.5])


def frame_with_control():
    rows = []
    for seed in (0, 1):
        rows += run_rows(f"c{seed}", "control", seed, [100] * 4, [0.90, 0.88 + seed / 100, 0.86, 0.87])
        rows += run_rows(f"l{seed}", "lottery-ticket", seed, [100, 80, 64, 51.2], [0.90, 0.89, 0.88 - seed / 100, 0.85])
        rows += run_rows(f"r{seed}", "random", seed, [100, 80, 64, 51.2], [0.90, 0.86, 0.80, 0.70])
    return pd.DataFrame(rows)


def test_against_control_per_iteration_matches_seed_and_round():
    df = frame_with_control()
    out = against_control(df)
    assert set(out.method) == {"lottery-ticket", "random"}  # the control rows are the reference, not results
    row = out[(out.method == "lottery-ticket") & (out.seed == 1) & (out.iteration == 1)].iloc[0]
    assert row.control_accuracy == pytest.approx(0.89) and row.effect == pytest.approx(0.0)
    row = out[(out.method == "random") & (out.seed == 0) & (out.iteration == 3)].iloc[0]
    assert row.effect == pytest.approx(0.70 - 0.87)


def test_against_control_on_a_grid_uses_the_mean_of_the_retrained_rounds():
    df = frame_with_control()
    grid = at_fractions(df[df.method != "control"], [1.0, 0.8, 0.64])
    out = against_control(grid, df)
    ctrl0 = np.mean([0.88, 0.86, 0.87])  # t = 1..3; the dense t = 0 is left out
    row = out[(out.method == "lottery-ticket") & (out.seed == 0) & (out.fraction == 0.8)].iloc[0]
    assert row.control_accuracy == pytest.approx(ctrl0) and row.effect == pytest.approx(0.89 - ctrl0)


def test_against_control_refuses_a_run_without_its_control():
    df = frame_with_control()
    with pytest.raises(ValueError, match="no control run"):
        against_control(df[~((df.method == "control") & (df.seed == 1))])
    other = df.copy()
    other.loc[other.method == "control", "epochs"] = 5  # a control with another schedule does not count
    with pytest.raises(ValueError, match="no control run"):
        against_control(other)
    with pytest.raises(ValueError, match="no control runs"):
        against_control(df[df.method != "control"])


def test_paired_differences_align_on_seed_and_fraction():
    df = frame_with_control()
    grid = at_fractions(df[df.method != "control"], [0.8, 0.64, 0.3])
    a, b = grid[grid.method == "lottery-ticket"], grid[grid.method == "random"]
    d = paired_differences(a, b)
    assert len(d) == 4  # 2 fractions x 2 seeds; 0.3 was reached by neither run: dropped
    row = d[(d.fraction == 0.64) & (d.seed == 1)].iloc[0]
    assert row.difference == pytest.approx(0.87 - 0.80)
    with pytest.raises(ValueError, match="several rows"):
        paired_differences(grid, b)


def test_summaries_use_the_stats_intervals():
    stats = pytest.importorskip("lqtheory.analysis.stats")
    from lqtheory.analysis.comparison import summarize, summarize_paired

    df = frame_with_control()
    grid = at_fractions(df[df.method != "control"], [0.8, 0.64])
    table = summarize(grid, ["method", "fraction"])
    lt = table[(table.method == "lottery-ticket") & (table.fraction == 0.64)].iloc[0]
    ref = stats.mean_interval(np.array([0.88, 0.87]))
    assert (lt["mean"], lt["lo"], lt["hi"], lt["n"]) == pytest.approx((ref.mean, ref.lo, ref.hi, 2))
    d = paired_differences(grid[grid.method == "lottery-ticket"], grid[grid.method == "random"])
    paired = summarize_paired(d)
    ref = stats.paired_interval(np.array([0.88, 0.87]), np.array([0.80, 0.80]))
    row = paired[paired.fraction == 0.64].iloc[0]
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx((ref.mean, ref.lo, ref.hi))


def test_standard_configs_are_shared_between_notebooks():
    from lqtheory.analysis.comparison import STANDARD_SETTINGS, standard_config, standard_grid

    for profile in STANDARD_SETTINGS:
        a = standard_config(profile, "lottery-ticket", "layer", 1)
        assert a == standard_config(profile, "lottery-ticket", "layer", 1)  # the same run id in 05 and 06
        assert a.dense_epochs == STANDARD_SETTINGS[profile]["dense_epochs"]
        g = standard_grid(profile)
        assert g[0] == 1.0 and g[-1] == STANDARD_SETTINGS[profile]["grid_lo"]
    with pytest.raises(ValueError, match="unknown profile"):
        standard_config("huge", "random")


def test_the_default_profile_runs_the_papers_regime():
    """Issue #20: at default the rate methods reach <= 3% remaining, SAP runs the papers' T = 30, >= 5 seeds,
    and the shared grid reaches the small fractions the claims are about."""
    from lqtheory.analysis.comparison import rounds_of, standard_config, standard_grid, standard_settings

    s = standard_settings("default")
    assert (1 - s["rate"]) ** s["iterations"] <= 0.03
    assert rounds_of("default", "sap") == rounds_of("default", "si-adaptive") == 30
    assert rounds_of("default", "lottery-ticket") == s["iterations"]
    assert rounds_of("default", "control") == max(s["iterations"], s["sap_iterations"])  # every method's rounds
    assert s["n_seeds"] >= 5 and standard_grid("default").min() <= 0.03
    assert standard_config("default", "sap", "global").iterations == 30
    assert standard_config("default", "sap", "global", iterations=8).iterations == 8  # an ablation's own rounds
