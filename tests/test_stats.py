"""lqtheory.analysis.stats: t intervals against scipy.stats, three- and four-way verdicts, seeds needed, bootstrap."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from lqtheory.analysis.stats import (
    Interval,
    bootstrap_interval,
    four_way,
    mean_interval,
    paired_interval,
    seeds_needed,
    seeds_to_decide,
    three_way,
    within_margin,
)

NPD = "no practical difference"


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [2, 3, 5, 17])
def test_mean_interval_matches_scipy(n, level):
    x = np.random.default_rng(n).normal(1.5, 0.7, size=n)
    iv = mean_interval(x, level)
    lo, hi = scipy.stats.t.interval(level, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert iv.mean == pytest.approx(x.mean(), rel=1e-14)
    assert iv.lo == pytest.approx(lo, rel=1e-12)
    assert iv.hi == pytest.approx(hi, rel=1e-12)
    assert iv.sd == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert (iv.n, iv.level, iv.method) == (n, level, "t")
    assert iv.half_width == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_mean_interval_by_hand():
    # mean 2, sd 1, n 3: half-width t_{0.975,2} / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.sd == 1.0
    assert iv.half_width == pytest.approx(2.4841377, abs=1e-6)
    # identical samples: zero-width interval at the value
    iv = mean_interval([0.25, 0.25, 0.25])
    assert (iv.lo, iv.hi, iv.sd) == (0.25, 0.25, 0.0)


def test_mean_interval_accepts_tensors_and_lists():
    a = mean_interval(torch.tensor([1.0, 2.0, 4.0]))
    b = mean_interval([1, 2, 4])
    assert a == b


def test_single_seed_is_unbounded():
    iv = mean_interval([0.3])
    assert iv.mean == 0.3 and iv.lo == -math.inf and iv.hi == math.inf and math.isnan(iv.sd)
    assert three_way(iv, 0.0, "above") == "inconclusive"
    assert seeds_needed(iv, 0.0) is None
    assert iv.to_dict()["lo"] is None and iv.to_dict()["sd"] is None


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [], [[1.0, 2.0]], [1.0, float("inf")]])
def test_mean_interval_rejects_bad_samples(bad):
    with pytest.raises(ValueError, match="samples"):
        mean_interval(bad)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, True])
def test_level_is_checked(level):
    with pytest.raises(ValueError, match="level"):
        mean_interval([1.0, 2.0], level)


def test_paired_interval_is_the_interval_of_differences():
    a = np.array([0.91, 0.88, 0.93, 0.90])
    b = np.array([0.90, 0.86, 0.93, 0.87])
    iv = paired_interval(a, b)
    ref = mean_interval(a - b)
    assert (iv.mean, iv.lo, iv.hi, iv.sd, iv.n) == (ref.mean, ref.lo, ref.hi, ref.sd, ref.n)
    assert iv.method == "paired-t"
    res = scipy.stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # pairing removes the shared per-seed variance: narrower than the difference of two intervals
    assert iv.half_width < mean_interval(a).half_width + mean_interval(b).half_width


def test_paired_interval_needs_aligned_samples():
    with pytest.raises(ValueError, match="aligned"):
        paired_interval([1.0, 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "lo, hi, above, below",
    [
        (0.1, 0.3, "supported", "contradicted"),
        (-0.3, -0.1, "contradicted", "supported"),
        (-0.1, 0.1, "inconclusive", "inconclusive"),
        (0.0, 0.2, "inconclusive", "inconclusive"),  # an end on the threshold covers it
        (-0.2, 0.0, "inconclusive", "inconclusive"),
        (1e-12, 0.2, "supported", "contradicted"),
    ],
)
def test_three_way_boundaries(lo, hi, above, below):
    iv = Interval((lo + hi) / 2, lo, hi, 3, 0.1)
    assert three_way(iv, 0.0, "above") == above
    assert three_way(iv, 0.0, "below") == below


def test_three_way_checks_arguments():
    iv = Interval(0.0, -1.0, 1.0, 3, 1.0)
    with pytest.raises(ValueError, match="direction"):
        three_way(iv, 0.0, "greater")
    with pytest.raises(ValueError, match="threshold"):
        three_way(iv, float("nan"), "above")
    with pytest.raises(TypeError, match="interval"):
        three_way((0.0, 1.0), 0.0, "above")


def test_interval_validates():
    with pytest.raises(ValueError, match="lo <= hi"):
        Interval(0.0, 1.0, -1.0, 3, 1.0)
    with pytest.raises(ValueError, match="n"):
        Interval(0.0, -1.0, 1.0, 0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        Interval(float("nan"), -1.0, 1.0, 2, 1.0)


def test_interval_str():
    assert str(Interval(0.012, 0.004, 0.020, 3, 0.003)) == "0.012 [0.004, 0.020]"
    assert str(Interval(0.5, -math.inf, math.inf, 1, math.nan)) == "0.5 [-inf, inf]"
    assert str(Interval(1e-15, 0.0, 2e-15, 3, 1e-15)) == "1e-15 [0.0, 2e-15]"
    assert str(Interval(12.0, 9.0, 15.0, 3, 2.0)) == "12.0 [9.0, 15.0]"  # never an integer-looking float
    assert str(Interval(1234.0, 1000.0, 1468.0, 3, 90.0)) == "1234.0 [1000.0, 1468.0]"
    assert str(Interval(123456.0, 0.0, 246912.0, 3, 9e4)) == "1.23e+05 [0.0, 2.47e+05]"


def test_seeds_needed_makes_the_interval_exclude_the_threshold():
    x = np.array([0.010, 0.030, -0.005])
    iv = mean_interval(x)
    assert three_way(iv, 0.0, "above") == "inconclusive"
    n = seeds_needed(iv, 0.0)
    assert n is not None and n > 3

    def half(m):
        return scipy.stats.t.ppf(0.975, m - 1) * iv.sd / math.sqrt(m)

    assert half(n) < iv.mean <= half(n - 1)  # the smallest such n, by hand with scipy


def test_seeds_needed_edge_cases():
    assert seeds_needed(Interval(0.5, 0.5, 0.5, 3, 0.0), 0.0) == 2  # no spread: two seeds suffice
    assert seeds_needed(Interval(0.0, -1.0, 1.0, 3, 1.0), 0.0) is None  # mean on the threshold
    # a decided interval needs no more than it has
    iv = mean_interval([1.0, 1.1, 0.9, 1.05])
    assert seeds_needed(iv, 0.0) <= iv.n
    # sd 1, gap 0.01: about (1.96 / 0.01)^2 = 38416 (t adds a little)
    n = seeds_needed(Interval(0.01, -1.0, 1.0, 3, 1.0), 0.0)
    assert 38416 <= n <= 38430


# ----------------------------------------------------------------------------------------------
# four_way: practical equivalence (hand-made intervals, threshold 0, margin 0.005 unless said)


@pytest.mark.parametrize(
    "lo, hi, above, below",
    [
        (-0.002, 0.004, NPD, NPD),  # covers the threshold, wholly inside the margin
        (0.001, 0.003, NPD, NPD),  # significant but negligible: equivalence takes precedence
        (-0.003, -0.001, NPD, NPD),
        (-0.005, 0.003, "inconclusive", "inconclusive"),  # an end on -margin is not inside
        (-0.003, 0.005, "inconclusive", "inconclusive"),  # nor on +margin
        (0.001, 0.005, "supported", "contradicted"),  # significant, touches the margin: three-way
        (-0.004, 0.006, "inconclusive", "inconclusive"),  # covers 0, crosses the margin
        (0.002, 0.007, "supported", "contradicted"),
        (-0.009, -0.006, "contradicted", "supported"),
        (-math.inf, math.inf, "inconclusive", "inconclusive"),  # one seed: never equivalent
    ],
)
def test_four_way_with_a_margin(lo, hi, above, below):
    mean = 0.0 if math.isinf(lo) else (lo + hi) / 2
    iv = Interval(mean, lo, hi, 3, 0.01)
    assert four_way(iv, 0.0, "above", 0.005) == above
    assert four_way(iv, 0.0, "below", 0.005) == below
    assert within_margin(iv, 0.0, 0.005) == (above == NPD)


def test_four_way_margin_is_around_the_threshold():
    iv = Interval(0.1, 0.09, 0.11, 5, 0.01)
    assert four_way(iv, 0.1, "above", 0.02) == NPD  # (0.08, 0.12)
    assert four_way(iv, 0.1, "above", 0.01) == "inconclusive"  # (0.09, 0.11): both ends touch
    assert four_way(iv, 0.0, "above", 0.02) == "supported"  # far from 0 ± 0.02
    assert four_way(Interval(1.0, 0.5, 1.5, 3, 1.0), 1.0, "below", 1) == NPD  # an int margin


@pytest.mark.parametrize(
    "lo, hi",
    [(0.1, 0.3), (-0.3, -0.1), (-0.1, 0.1), (0.0, 0.2), (-0.2, 0.0), (1e-12, 0.2), (-math.inf, math.inf)],
)
@pytest.mark.parametrize("direction", ["above", "below"])
def test_four_way_without_a_margin_is_three_way(lo, hi, direction):
    iv = Interval(0.0 if math.isinf(lo) else (lo + hi) / 2, lo, hi, 3, 0.1)
    assert four_way(iv, 0.0, direction) == three_way(iv, 0.0, direction)
    assert four_way(iv, 0.0, direction, None) == three_way(iv, 0.0, direction)


@pytest.mark.parametrize("margin", [0, 0.0, -0.5, float("nan"), float("inf"), True, "0.5"])
def test_four_way_margin_must_be_positive_and_finite(margin):
    iv = Interval(0.0, -1.0, 1.0, 3, 1.0)
    with pytest.raises(ValueError, match="margin must be a positive finite number"):
        four_way(iv, 0.0, "above", margin)
    with pytest.raises(ValueError, match="margin must be a positive finite number"):
        seeds_to_decide(iv, 0.0, "above", margin)


def test_four_way_checks_its_other_arguments():
    iv = Interval(0.0, -1.0, 1.0, 3, 1.0)
    with pytest.raises(ValueError, match="direction"):
        four_way(iv, 0.0, "greater", 0.5)
    with pytest.raises(ValueError, match="threshold"):
        four_way(iv, float("inf"), "above", 0.5)
    with pytest.raises(TypeError, match="interval"):
        four_way((0.0, 1.0), 0.0, "above", 0.5)


# seeds_to_decide. Oracle: half-widths of a 95% t interval with sd 1, t_{0.975, n-1} / sqrt(n):
# n=3 2.4841, n=4 1.5912, n=5 1.2417, n=6 1.0494, n=7 0.9248 (t = 4.3027, 3.1824, 2.7764, 2.5706, 2.4469).
def _at_n3(mean: float) -> Interval:
    half = 4.302652729911275 / math.sqrt(3)
    return Interval(mean, mean - half, mean + half, 3, 1.0)


def test_seeds_to_decide_by_hand():
    # mean 0.5, margin 1.5: inside once the half-width < 1.0 (n = 7), before excluding 0 (< 0.5, n ≈ 18)
    assert four_way(_at_n3(0.5), 0.0, "above", 1.5) == "inconclusive"
    assert seeds_to_decide(_at_n3(0.5), 0.0, "above", 1.5) == 7
    assert seeds_to_decide(_at_n3(0.5), 0.0, "above") == seeds_needed(_at_n3(0.5), 0.0) == 18
    # mean 1.2, margin 1.5: excluding 0 (half-width < 1.2, n = 6) comes before fitting (< 0.3)
    assert seeds_to_decide(_at_n3(1.2), 0.0, "above", 1.5) == 6
    # mean on the threshold: only equivalence can decide it (half-width < 1.5, n = 5)
    assert seeds_needed(_at_n3(0.0), 0.0) is None
    assert seeds_to_decide(_at_n3(0.0), 0.0, "below", 1.5) == 5
    assert seeds_to_decide(_at_n3(0.0), 0.0, "below") is None
    # mean outside the margin: only exclusion (half-width < 2.0, n = 4)
    assert seeds_to_decide(_at_n3(2.0), 0.0, "above", 1.5) == seeds_needed(_at_n3(2.0), 0.0) == 4
    # mean exactly on the margin's edge: never inside, exclusion only
    assert seeds_to_decide(_at_n3(1.5), 0.0, "above", 1.5) == seeds_needed(_at_n3(1.5), 0.0)


@pytest.mark.parametrize("mean, margin", [(0.5, 1.5), (1.2, 1.5), (0.0, 1.5), (0.3, 0.4), (-0.2, 0.9)])
def test_seeds_to_decide_is_the_first_n_that_decides(mean, margin):
    """Samples with the observed mean and sd (exactly) at n and n - 1: decided at n, not at n - 1."""
    n = seeds_to_decide(_at_n3(mean), 0.0, "above", margin)
    assert n is not None and n > 3

    def interval(m: int) -> Interval:
        z = np.arange(m, dtype=np.float64)
        z = (z - z.mean()) / z.std(ddof=1)  # mean 0, sd 1 exactly
        return mean_interval(mean + z)

    assert four_way(interval(n), 0.0, "above", margin) != "inconclusive"
    assert four_way(interval(n - 1), 0.0, "above", margin) == "inconclusive"


def test_seeds_to_decide_edge_cases():
    # a decided verdict needs nothing more
    assert seeds_to_decide(Interval(0.001, -0.002, 0.004, 5, 0.003), 0.0, "above", 0.005) is None
    assert seeds_to_decide(Interval(0.2, 0.1, 0.3, 5, 0.1), 0.0, "above", 0.005) is None
    assert seeds_to_decide(Interval(0.2, 0.1, 0.3, 5, 0.1), 0.0, "above") is None
    # one seed: spread unknown
    assert seeds_to_decide(Interval(0.0, -math.inf, math.inf, 1, math.nan), 0.0, "above", 0.5) is None
    # more than max_n would be needed
    assert seeds_to_decide(_at_n3(0.0), 0.0, "above", 1e-3, max_n=1000) is None
    assert seeds_to_decide(_at_n3(0.0), 0.0, "above", 1e-3) > 10**6


def test_bootstrap_interval_of_a_mean_is_close_to_the_t_interval():
    x = np.random.default_rng(0).normal(0.0, 1.0, size=400)
    iv = bootstrap_interval(np.mean, x, n_boot=4000, seed=1)
    ref = mean_interval(x)
    assert iv.mean == pytest.approx(x.mean())
    assert iv.lo == pytest.approx(ref.lo, abs=0.02) and iv.hi == pytest.approx(ref.hi, abs=0.02)
    assert iv.sd == pytest.approx(x.std(ddof=1), rel=0.1)
    assert iv.method == "bootstrap" and iv.n == 400


def test_bootstrap_interval_is_deterministic_and_paired():
    rng = np.random.default_rng(3)
    a = rng.normal(size=200)
    b = a + 0.5 * rng.normal(size=200)

    def rho(x, y):
        return scipy.stats.spearmanr(x, y).statistic

    first = bootstrap_interval(rho, a, b, n_boot=200, seed=7)
    again = bootstrap_interval(rho, torch.tensor(a), torch.tensor(b), n_boot=200, seed=7)
    assert first == again
    assert first.mean == pytest.approx(rho(a, b))
    assert 0.7 < first.lo < first.mean < first.hi < 1.0
    other = bootstrap_interval(rho, a, b, n_boot=200, seed=8)
    assert other != first


def test_bootstrap_interval_checks_arguments():
    with pytest.raises(ValueError, match="first axis"):
        bootstrap_interval(np.mean, np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_interval(np.mean, np.ones(3), n_boot=1)
    with pytest.raises(TypeError, match="statistic"):
        bootstrap_interval(3.0, np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval(np.mean, np.array([1.0, np.nan]))
