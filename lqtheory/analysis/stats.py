"""Intervals and verdicts (three-way, or four-way with a practical-equivalence margin) for empirical claims.

An empirical claim is decided from an interval, never from one number:

- :func:`mean_interval`: Student-t interval of the mean over seeds (each seed one independent run);
- :func:`paired_interval`: the same for the mean of ``a_i - b_i`` where ``a`` and ``b`` are aligned
  by seed (the same seed means the same dense model, so the differences remove its variance);
- :func:`bootstrap_interval`: a percentile bootstrap interval of any statistic over many units
  (vectors, neurons, cells) when the claim is not a mean over seeds, e.g. a rank correlation;
- :func:`three_way`: "supported" when the interval lies on the claimed side of a threshold,
  "contradicted" when it lies on the other side, "inconclusive" when it covers the threshold;
- :func:`four_way`: :func:`three_way` plus "no practical difference" when the claim registers a
  margin and the whole interval lies within it of the threshold (equivalence, two one-sided tests);
- :func:`seeds_needed`: how many samples an interval with the observed spread would need to
  exclude the threshold (what scale would decide an inconclusive claim); :func:`seeds_to_decide`
  the same when a margin can also decide it.

Everything is computed in float64 with NumPy/SciPy; inputs may be lists, NumPy arrays or torch
tensors (moved to the CPU).

Room: analysis (statistics and comparisons over runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lqtheory.common.vocabulary import EMPIRICAL_VERDICTS, NO_PRACTICAL_DIFFERENCE

VERDICTS = EMPIRICAL_VERDICTS  # the verdicts of four_way (three_way gives the first three)
DIRECTIONS = ("above", "below")


__all__ = [
    "DIRECTIONS",
    "VERDICTS",
    "Interval",
    "bootstrap_interval",
    "four_way",
    "mean_interval",
    "paired_interval",
    "seeds_needed",
    "seeds_to_decide",
    "three_way",
    "within_margin",
]


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number strictly between 0 and 1, got {level!r}")
    return float(level)


def _t_quantile(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, dof))


def _as_samples(samples: Any, name: str = "samples") -> np.ndarray:
    if hasattr(samples, "detach"):  # torch tensor
        samples = samples.detach().cpu().numpy()
    try:
        arr = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(samples).__name__}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per seed), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at positions {np.flatnonzero(np.isnan(arr)).tolist()}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains an infinite value")
    return arr


def _decimals(half_width: float) -> int | None:
    """Fixed decimals (at least one) that show the half-width to one significant digit, or None (%.3g)."""
    if not math.isfinite(half_width) or half_width <= 0:
        return None
    d = -math.floor(math.log10(half_width))
    if d > 6:
        return None
    return max(d, 1) if d >= -2 else None


@dataclass(frozen=True)
class Interval:
    """An interval estimate: ``mean`` with ``[lo, hi]`` at confidence ``level`` from ``n`` samples.

    ``sd`` is the sample standard deviation of the units (NaN when unknown, e.g. ``n == 1``); for a
    bootstrap interval it is the bootstrap standard error times ``sqrt(n)``, so that ``sd / sqrt(n)``
    is the standard error in both cases. ``method`` says how it was obtained: "t" (Student-t over
    seeds), "paired-t", "bootstrap" or "given".
    """

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    level: float = 0.95
    method: str = "t"

    def __post_init__(self):
        for name in ("mean", "lo", "hi", "sd", "level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"Interval.{name} must be a number, got {type(value).__name__}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ValueError(f"Interval.n must be a positive integer, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        if math.isnan(self.mean) or math.isnan(self.lo) or math.isnan(self.hi):
            raise ValueError("Interval mean, lo and hi must not be NaN")
        if not self.lo <= self.hi:
            raise ValueError(f"Interval needs lo <= hi, got lo={self.lo} hi={self.hi}")
        _check_level(self.level)

    @property
    def half_width(self) -> float:
        """Half the interval's width (``inf`` when a bound is infinite)."""
        return (self.hi - self.lo) / 2.0

    def format(self) -> str:
        """``"mean [lo, hi]"`` rounded so the half-width shows one significant digit.

        Every number keeps a decimal mark or an exponent, so nbval's sanitizer masks it.
        """
        d = _decimals(self.half_width)

        def fmt(x: float) -> str:
            if math.isinf(x):
                return "inf" if x > 0 else "-inf"
            text = f"{x:.{d}f}" if d is not None else f"{x:.3g}"
            if text.lstrip("-").isdigit():  # always visibly a float (nbval's sanitizer masks decimals)
                text = f"{x:.1f}"
            return text[1:] if text.startswith("-") and float(text) == 0 else text

        return f"{fmt(self.mean)} [{fmt(self.lo)}, {fmt(self.hi)}]"

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (non-finite floats become None)."""

        def safe(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"mean": safe(self.mean), "lo": safe(self.lo), "hi": safe(self.hi), "n": self.n,
                "sd": safe(self.sd), "level": self.level, "method": self.method}


def mean_interval(samples: Any, level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``samples`` (one value per seed).

    ``n == 1`` gives ``lo = -inf, hi = +inf`` and ``sd = NaN``: one seed says nothing about the spread.
    NaN or infinite samples are an error.
    """
    level = _check_level(level)
    x = _as_samples(samples)
    n = x.size
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, math.nan, level, "t")
    sd = float(x.std(ddof=1))
    half = _t_quantile(level, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd, level, "t")


def paired_interval(a: Any, b: Any, level: float = 0.95) -> Interval:
    """Student-t interval of ``mean(a_i - b_i)``; ``a`` and ``b`` are aligned by seed."""
    x = _as_samples(a, "a")
    y = _as_samples(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be aligned by seed (same length), got {x.size} and {y.size}")
    iv = mean_interval(x - y, level)
    return Interval(iv.mean, iv.lo, iv.hi, iv.n, iv.sd, iv.level, "paired-t")


def three_way(interval: Interval, threshold: float, direction: str) -> str:
    """The verdict of "the quantity is ``direction`` ``threshold``" given ``interval``.

    ``direction="above"``: "supported" if ``lo > threshold``, "contradicted" if ``hi < threshold``,
    otherwise "inconclusive" (the interval covers the threshold, ends included). "below" mirrored.
    """
    if not isinstance(interval, Interval):
        raise TypeError(f"interval must be an Interval, got {type(interval).__name__}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    threshold = float(threshold)
    if direction == "above":
        if interval.lo > threshold:
            return "supported"
        if interval.hi < threshold:
            return "contradicted"
        return "inconclusive"
    if direction == "below":
        if interval.hi < threshold:
            return "supported"
        if interval.lo > threshold:
            return "contradicted"
        return "inconclusive"
    raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")


def _check_margin(margin: Any) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(margin)) or float(margin) <= 0:
        raise ValueError(f"margin must be a positive finite number, got {margin!r}")
    return float(margin)


def within_margin(interval: Interval, threshold: float, margin: float) -> bool:
    """Whether the whole ``interval`` lies strictly inside ``(threshold - margin, threshold + margin)``.

    An end exactly on ``threshold ± margin`` is not inside (the bounds of an equivalence test are
    excluded, as :func:`three_way` counts an end on the threshold as covering it).
    """
    if not isinstance(interval, Interval):
        raise TypeError(f"interval must be an Interval, got {type(interval).__name__}")
    margin = _check_margin(margin)
    threshold = float(threshold)
    return threshold - margin < interval.lo and interval.hi < threshold + margin


def four_way(interval: Interval, threshold: float, direction: str, margin: float | None = None) -> str:
    """:func:`three_way`, plus "no practical difference" when a practical-equivalence margin decides it.

    With ``margin=None`` this is exactly :func:`three_way`. With a margin ``m`` (positive, in the
    metric's units): if the whole interval lies strictly inside ``(threshold - m, threshold + m)``
    the verdict is "no practical difference"; otherwise the three-way verdict. A two-sided interval at
    level ``1 - 2α`` lying inside the margin is the same decision as the two one-sided tests (TOST)
    of equivalence at level ``α`` each: a 95% interval inside it rejects both "the quantity is at most
    ``threshold - m``" and "at least ``threshold + m``" at 2.5% each.

    Equivalence takes precedence: an interval inside the margin that also excludes the threshold (a
    statistically significant difference too small to matter, e.g. ``[0.001, 0.003]`` against
    ``0 ± 0.005``) reads "no practical difference", not "supported" or "contradicted". The margin
    is registered before the measurement as the smallest difference that would matter, so a
    difference below it is not evidence for an ordering, however many seeds resolve it.
    """
    verdict = three_way(interval, threshold, direction)  # validates interval, threshold and direction
    if margin is None:
        return verdict
    return NO_PRACTICAL_DIFFERENCE if within_margin(interval, threshold, margin) else verdict


def _samples_to_shrink(sd: float, target: float, level: float, max_n: int) -> int | None:
    """Smallest ``n >= 2`` with ``t_{level, n-1} * sd / sqrt(n) < target``: the half-width of a t
    interval with spread ``sd`` falls below ``target``. ``None`` when ``target <= 0``, ``sd`` is not
    finite, or more than ``max_n`` would be needed; 2 when ``sd == 0``."""
    if not target > 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2.0))
    n = max(2, math.ceil((z * sd / target) ** 2))  # the t quantile exceeds z: never fewer
    if n > max_n:
        return None

    # Grow geometrically until the t criterion holds, then bisect for the smallest n.
    def ok(m: int) -> bool:
        return _t_quantile(level, m - 1) * sd / math.sqrt(m) < target

    hi = n
    while not ok(hi):
        hi *= 2
        if hi > max_n:
            return None
    lo = max(2, hi // 2) if hi > n else n
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def seeds_needed(interval: Interval, threshold: float, level: float = 0.95, max_n: int = 10**7) -> int | None:
    """Smallest ``n >= 2`` whose t interval, with the observed ``sd`` and mean, excludes ``threshold``.

    ``None`` when the mean equals the threshold or the spread is unknown (``sd`` NaN, e.g. one seed),
    or when more than ``max_n`` would be needed. With ``sd == 0`` two samples suffice. For a
    bootstrap interval ``n`` counts its units (vectors, neurons), not seeds.
    """
    if not isinstance(interval, Interval):
        raise TypeError(f"interval must be an Interval, got {type(interval).__name__}")
    level = _check_level(level)
    gap = abs(interval.mean - float(threshold))
    if gap == 0:
        return None
    return _samples_to_shrink(interval.sd, gap, level, max_n)


def seeds_to_decide(interval: Interval, threshold: float, direction: str, margin: float | None = None,
                    max_n: int = 10**7) -> int | None:
    """Samples an inconclusive claim would need to be decided, by :func:`four_way` with ``margin``.

    The same extrapolation as :func:`seeds_needed` (the observed mean and ``sd``, a t interval at the
    interval's level): the smallest ``n`` at which either the interval would exclude ``threshold``
    (:func:`seeds_needed`) or, when the mean lies within the margin, the interval would fit strictly
    inside ``threshold ± margin`` (its half-width below ``margin - |mean - threshold|``), whichever is
    smaller. Without a margin it is :func:`seeds_needed`. ``None`` when the verdict is already decided
    (not "inconclusive"), when the spread is unknown, or when neither happens within ``max_n``.
    """
    if four_way(interval, threshold, direction, margin) != "inconclusive":
        return None
    exclude = seeds_needed(interval, threshold, interval.level, max_n)
    if margin is None:
        return exclude
    slack = _check_margin(margin) - abs(interval.mean - float(threshold))
    equivalent = _samples_to_shrink(interval.sd, slack, interval.level, max_n)
    found = [n for n in (exclude, equivalent) if n is not None]
    return min(found) if found else None


def bootstrap_interval(statistic: Callable[..., Any], *samples: Any, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of ``statistic(*samples)`` over the units of ``samples``.

    ``samples`` are one or more arrays whose first axis indexes the same units (vectors, neurons,
    cells); every replicate resamples the units with replacement, jointly across the arrays (so
    pairs stay pairs), and evaluates ``statistic`` on NumPy float64 arrays. ``mean`` is the
    statistic on the full samples, ``[lo, hi]`` the ``(1 ± level)/2`` quantiles of the replicates,
    ``sd`` the replicates' standard deviation times ``sqrt(n)``. Deterministic given ``seed``.
    """
    if not callable(statistic):
        raise TypeError(f"statistic must be callable, got {type(statistic).__name__}")
    if not samples:
        raise ValueError("bootstrap_interval needs at least one sample array")
    level = _check_level(level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    arrays = []
    for i, s in enumerate(samples):
        if hasattr(s, "detach"):
            s = s.detach().cpu().numpy()
        a = np.asarray(s, dtype=np.float64)
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"samples[{i}] must have at least one unit along its first axis")
        if np.isnan(a).any():
            raise ValueError(f"samples[{i}] contains NaN")
        arrays.append(a)
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"samples must share their first axis, got lengths {[a.shape[0] for a in arrays]}")

    def value(*args) -> float:
        v = statistic(*args)
        if hasattr(v, "item"):
            v = v.item()
        v = float(v)
        if math.isnan(v):
            raise ValueError("statistic returned NaN")
        return v

    point = value(*arrays)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    reps = np.array([value(*(a[i] for a in arrays)) for i in idx])
    alpha = 1.0 - level
    lo, hi = np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0])
    lo, hi = float(min(lo, point)), float(max(hi, point))
    sd = float(reps.std(ddof=1)) * math.sqrt(n)
    return Interval(point, lo, hi, n, sd, level, "bootstrap")
