"""Timing machinery shared by the benchmark groups: paired, interleaved repeats and ratios.

Why paired ratios: on a shared machine absolute times drift with the load, but a routine and its
baseline timed back to back in the same round see (nearly) the same load. Every round runs each case
once, in a rotated order, and a ratio is the median over rounds of ``time(case) / time(baseline)``
of the same round. Absolute times are medians too. On CUDA the clock is read only after
``torch.cuda.synchronize()``.

Also here: the record type of one table row, the environment description (library versions, CPU,
threads, load), the table printer, the JSON writer and the byte-stable scaling plot.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Row",
    "Target",
    "Unavailable",
    "environment",
    "fit_loglog_slope",
    "format_markdown",
    "format_table",
    "measure",
    "paired_ratio",
    "plot_scaling",
    "synchronize",
    "write_json",
]


class Unavailable(RuntimeError):
    """A group's routine is not in the package yet (another engineer is writing it): skip the group."""


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so the clock measures work done, not work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], Any], device: torch.device, number: int) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / number


def measure(
    cases: Mapping[str, Callable[[], Any]],
    device: torch.device,
    repeats: int = 5,
    warmup: int = 1,
    min_sample: float = 0.02,
) -> dict[str, list[float]]:
    """Seconds per call of every case, ``repeats`` samples each, interleaved round by round.

    Warm-up calls come first (allocator, lazy init, caches). A case faster than ``min_sample``
    seconds is called several times per sample (the count fixed after warm-up) so that timer
    resolution and one-off hiccups do not dominate. Round ``r`` runs the cases starting at index
    ``r mod n``, so no case always runs first (after a pause) or last.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(cases)
    number = dict.fromkeys(names, 1)  # warmup=0 (long cases, e.g. training epochs): one call per sample
    for name in names:
        elapsed = math.inf
        for _ in range(warmup):
            elapsed = _time_once(cases[name], device, 1)
        if elapsed < min_sample:
            number[name] = min(1000, math.ceil(min_sample / max(elapsed, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one sample would bias one case of one round
    try:
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                samples[name].append(_time_once(cases[name], device, number[name]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def paired_ratio(case: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """Median, min and max over rounds of ``case[r] / baseline[r]``."""
    ratios = [c / b for c, b in zip(case, baseline, strict=True) if b > 0]
    if not ratios:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


@dataclasses.dataclass(frozen=True)
class Target:
    """``time(case) / time(baseline) <= bound`` (``kind="at_most"``) or
    ``time(baseline) / time(case) >= bound`` (``kind="speedup"``)."""

    baseline: str
    bound: float
    kind: str = "at_most"

    def __post_init__(self) -> None:
        if self.kind not in ("at_most", "speedup"):
            raise ValueError(f"kind must be 'at_most' or 'speedup', got {self.kind!r}")

    def met(self, time_ratio: float) -> bool | None:
        if not math.isfinite(time_ratio) or time_ratio <= 0:
            return None
        return time_ratio <= self.bound if self.kind == "at_most" else 1.0 / time_ratio >= self.bound

    def describe(self) -> str:
        if self.kind == "at_most":
            return f"<= {self.bound:g}x {self.baseline}"
        return f">= {self.bound:g}x faster than {self.baseline}"


@dataclasses.dataclass
class Row:
    """One line of the results table (and one record of the JSON file)."""

    group: str
    case: str
    seconds: float  # median seconds per call
    size: int | None = None  # parameters (or samples) processed per call
    samples: list[float] = dataclasses.field(default_factory=list)
    ratios: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # baseline -> stats
    target: Target | None = None
    note: str = ""
    skipped: bool = False

    @property
    def met(self) -> bool | None:
        if self.target is None or self.skipped:
            return None
        stats = self.ratios.get(self.target.baseline)
        return None if stats is None else self.target.met(stats["median"])

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.target is not None:
            out["target"] = {**dataclasses.asdict(self.target), "text": self.target.describe()}
        out["met"] = self.met
        return out


def row_from_samples(
    group: str,
    case: str,
    samples: Mapping[str, list[float]],
    baselines: Sequence[str] = (),
    *,
    size: int | None = None,
    target: Target | None = None,
    note: str = "",
    label: str | None = None,
) -> Row:
    """A row for ``case`` (shown as ``label``) with its paired ratios to each of ``baselines`` (all
    keys of ``samples``)."""
    mine = samples[case]
    ratios = {b: paired_ratio(mine, samples[b]) for b in baselines if b != case}
    return Row(group, label or case, statistics.median(mine), size, list(mine), ratios, target, note)


# --------------------------------------------------------------------------------------------------
# Environment, table, JSON, plot
# --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{'+dirty' if dirty else ''}" if rev else "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    """Everything needed to interpret the numbers: versions, hardware, threads, load."""
    import numpy

    env: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": _git_revision(Path(__file__).resolve().parent.parent),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    try:
        env["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return env


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt_size(n: int | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("M", 2**20), ("K", 2**10)):
        if n >= scale and n % (scale // 16) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)


def format_ratio(stats: Mapping[str, float], baseline: str) -> str:
    r = stats["median"]
    if not math.isfinite(r):
        return f"- {baseline}"
    if r < 1:  # a speed-up reads better as "N x faster"
        return f"{1 / r:.{0 if r < 0.1 else 2}f}x faster than {baseline}"
    return f"{r:.2f}x {baseline}"


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: group, case, size, median time, ratios, target and verdict."""
    lines = []
    header = ("group", "case", "size", "time", "ratios (paired medians)", "target", "status")
    body = []
    for row in rows:
        if row.skipped:
            body.append((row.group, row.case, "", "", row.note, "", "skipped"))
            continue
        ratios = "; ".join(format_ratio(stats, b) for b, stats in row.ratios.items())
        status = {None: "", True: "met", False: "MISSED"}[row.met]
        target = row.target.describe() if row.target else ""
        body.append((row.group, row.case, _fmt_size(row.size), _fmt_seconds(row.seconds), ratios, target, status))
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    widths[4] = min(widths[4], 90)
    fmt = "  ".join(f"{{:{'<'}{w}}}" for w in widths)
    lines.append(fmt.format(*header).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt.format(*r).rstrip() for r in body)
    return "\n".join(lines)


def format_markdown(rows: Sequence[Row]) -> str:
    """The results table as GitHub Markdown (for RESULTS.md): one line per row, notes included."""
    out = [
        "| group | case | size | median time | ratios (paired medians) | target | status | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row.group, row.case, _fmt_size(row.size)]
        if row.skipped:
            cells += ["", "", "", "skipped", row.note]
        else:
            ratios = "; ".join(format_ratio(stats, b) for b, stats in row.ratios.items())
            status = {None: "", True: "met", False: "**MISSED**"}[row.met]
            cells += [_fmt_seconds(row.seconds), ratios, row.target.describe() if row.target else "", status, row.note]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(out) + "\n"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write atomically (a crash never leaves half a file) with sorted keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def fit_loglog_slope(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of ``log t`` against ``log n``: 1 for linear growth."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(sizes, seconds, strict=True) if n > 0 and t > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else float("nan")


def plot_scaling(series: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path, title: str) -> None:
    """Log-log plot of time against size, one line per routine, with a slope-1 guide.

    Saved through the Agg backend with the software/date metadata stripped, so the file depends only
    on the numbers (byte-stable for equal data).
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=110)
    all_sizes = sorted({n for sizes, _ in series.values() for n in sizes})
    for name, (sizes, seconds) in series.items():
        slope = fit_loglog_slope(sizes, seconds)
        ax.plot(sizes, seconds, marker="o", linewidth=1.4, label=f"{name} (slope {slope:.2f})")
    if all_sizes and series:
        # slope-1 guide through the geometric middle of the first series
        first_sizes, first_secs = next(iter(series.values()))
        anchor_n, anchor_t = first_sizes[0], first_secs[0]
        guide = [anchor_t * n / anchor_n for n in all_sizes]
        ax.plot(all_sizes, guide, linestyle=":", color="black", linewidth=1.0, label="linear (slope 1)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if all_sizes:
        ax.set_xticks(all_sizes, [_fmt_size(n) for n in all_sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("parameters in the weight set")
    ax.set_ylabel("seconds per call (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
