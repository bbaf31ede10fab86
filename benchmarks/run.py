"""lqtheory benchmarks: one entry point for every group, reporting speed as ratios measured in one run.

    python benchmarks/run.py                  # full sizes (64M-parameter weight set), CPU or GPU (auto)
    python benchmarks/run.py --quick          # small sizes, a few minutes on a laptop
    python benchmarks/run.py --only indices --only masks --device cpu --json out.json
    python benchmarks/run.py --e2e            # also time `lqtheory reproduce --profile ci|default --force` (long)

Groups (``--only``): ``indices``, ``masks``, ``bounds``, ``training``, ``scaling``, ``lasso``, ``e2e``.
Each routine is timed against the cheapest thing any implementation must do on the same tensors in
the same run (one fused ``torch.linalg.vector_norm``, one ``torch.sort``, one forward pass, ...) and
against the naive alternative (a per-neuron Python loop, ``torch.nn.utils.prune`` row by row, a
``DataLoader`` pipeline). Ratios are paired medians over interleaved rounds (see ``harness.py``),
so they stay meaningful on a loaded machine; absolute times do not. The targets come from the
benchmark issue and are printed beside each ratio.

The weight set: four float32 matrices of equal size whose rows (the neurons) have 256, 1024, 4096
and 16384 entries, 64M (2^26) parameters in all (4M with ``--quick``). Groups whose routine is not in
the package yet print a "not available yet" line instead of failing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script: make `benchmarks` and `lqtheory` importable
    sys.path.insert(0, str(_HERE.parent))

from benchmarks.harness import (  # noqa: E402
    Row,
    Target,
    Unavailable,
    environment,
    fit_loglog_slope,
    format_markdown,
    format_table,
    measure,
    paired_ratio,
    plot_scaling,
    row_from_samples,
    synchronize,
    write_json,
)

GROUPS = ("indices", "masks", "bounds", "training", "scaling", "lasso", "e2e")
DEFAULT_GROUPS = ("indices", "masks", "bounds", "training", "scaling", "lasso")  # e2e only with --e2e
M = 2**20


@dataclasses.dataclass(frozen=True)
class Settings:
    """Problem sizes of one preset."""

    name: str
    total_params: int  # size of the weight set of the indices and masks groups
    row_lengths: tuple[int, ...]  # one matrix per row length, equal parameter counts
    loop_fraction: int  # the Python-loop baselines run on the first 1/loop_fraction of every matrix's rows
    scaling_sizes: tuple[int, ...]
    repeats: int
    scaling_repeats: int
    train_epochs: int  # epochs per timed training run
    train_repeats: int
    train_samples: int | None  # None: the real Fashion-MNIST; an int: that many synthetic images
    bound_samples: int | None  # test inputs for the bound; None = the whole test split
    synthetic_data: bool = False  # smoke test: random images instead of Fashion-MNIST
    e2e_profiles: tuple[str, ...] = ("ci", "default")


PRESETS = {
    "full": Settings(
        name="full",
        total_params=64 * M,
        row_lengths=(256, 1024, 4096, 16384),
        loop_fraction=256,
        scaling_sizes=(1 * M, 2 * M, 4 * M, 8 * M, 16 * M, 32 * M, 64 * M),
        repeats=3,  # a 64M-entry sort takes ~15 s on one core
        scaling_repeats=3,
        train_epochs=2,
        train_repeats=3,
        train_samples=None,
        bound_samples=None,
    ),
    "quick": Settings(
        name="quick",
        total_params=4 * M,
        row_lengths=(256, 1024, 4096, 16384),
        loop_fraction=16,
        scaling_sizes=(1 * M, 2 * M, 4 * M, 8 * M),
        repeats=5,
        scaling_repeats=3,
        train_epochs=1,
        train_repeats=3,
        train_samples=None,
        bound_samples=None,
    ),
    # Not a benchmark: the smallest sizes that exercise every code path (tests/test_benchmarks_smoke.py).
    "smoke": Settings(
        name="smoke",
        total_params=2 * 64 * 64,
        row_lengths=(16, 64),
        loop_fraction=4,
        scaling_sizes=(2 * 64 * 32, 2 * 64 * 64),
        repeats=1,
        scaling_repeats=1,
        train_epochs=1,
        train_repeats=1,
        train_samples=500,
        bound_samples=64,
        synthetic_data=True,
        e2e_profiles=("ci",),
    ),
}


@dataclasses.dataclass
class Context:
    settings: Settings
    device: torch.device
    repeats: int
    seed: int = 0
    series: dict[str, dict] = dataclasses.field(default_factory=dict)  # scaling data for JSON and plot


# --------------------------------------------------------------------------------------------------
# Shared inputs
# --------------------------------------------------------------------------------------------------


def weight_set(total: int, row_lengths: Sequence[int], device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """Matrices ``(total / (k L), L)`` for each row length ``L`` (k of them): ``total`` parameters.

    Gaussian entries drawn on the CPU from a fixed seed, so every device gets the same numbers.
    """
    k = len(row_lengths)
    if total % k or any((total // k) % length for length in row_lengths):
        raise ValueError(f"total={total} does not split evenly into matrices with rows of {tuple(row_lengths)}")
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(total // k // length, length, generator=g).to(device) for length in row_lengths]


def _each(fn: Callable[[torch.Tensor], object], ws: Sequence[torch.Tensor]) -> Callable[[], list]:
    """One call of ``fn`` per matrix: how a user would run a routine over a model's layers."""
    return lambda: [fn(w) for w in ws]


def _import(module: str, *names: str):
    """``names`` from ``lqtheory.<module>``, or :class:`Unavailable` naming what is missing."""
    try:
        mod = __import__(f"lqtheory.{module}", fromlist=list(names))
    except ImportError as err:
        raise Unavailable(f"lqtheory.{module} not available yet ({err})") from err
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise Unavailable(f"lqtheory.{module}.{', '.join(missing)} not available yet")
    return [getattr(mod, n) for n in names]


def _size(ws: Sequence[torch.Tensor]) -> int:
    return sum(w.numel() for w in ws)


def _mega(n: int) -> str:
    return f"{n / M:g}M" if n >= M else str(n)


# --------------------------------------------------------------------------------------------------
# Per-neuron Python loops: the naive way, used as the "loop" baselines
# --------------------------------------------------------------------------------------------------


def _loop_lq(w: torch.Tensor, q: float) -> torch.Tensor:
    return torch.stack([row.abs().pow(q).sum().pow(1.0 / q) for row in w])


def _loop_pq(w: torch.Tensor, p: float, q: float) -> torch.Tensor:
    out = []
    for row in w:
        d = row.numel()
        a = row.abs()
        out.append(1 - d ** (1 / q - 1 / p) * a.pow(p).sum().pow(1 / p) / a.pow(q).sum().pow(1 / q))
    return torch.stack(out)


def _loop_si(w: torch.Tensor, q: float) -> torch.Tensor:
    out = []
    for row in w:
        a = row.abs()
        out.append(row.numel() ** (1 / q - 1) * a.sum() / a.pow(q).sum().pow(1 / q))
    return torch.stack(out)


def _loop_gini(w: torch.Tensor) -> torch.Tensor:
    out = []
    for row in w:
        s = row.abs().sort().values
        n = s.numel()
        k = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
        out.append(((2 * k - n - 1) * s).sum() / (n * s.sum()))
    return torch.stack(out)


def _loop_l1_unstructured(w: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """``torch.nn.utils.prune.l1_unstructured`` applied row by row, as a user would without batching."""
    from torch.nn.utils import prune

    masks = []
    for row, k in zip(w, counts, strict=True):
        holder = torch.nn.Module()
        holder.weight = torch.nn.Parameter(row.detach().clone())
        prune.l1_unstructured(holder, "weight", amount=k)
        masks.append(holder.weight_mask)
    return torch.stack(masks).bool()


def _loop_l1_compute_mask(w: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Only the mask computation of ``l1_unstructured`` (``L1Unstructured.compute_mask``) per row: no
    module re-parametrisation, so a harder baseline than the public function."""
    from torch.nn.utils import prune

    ones = torch.ones_like(w[0])
    masks = [prune.L1Unstructured(amount=k).compute_mask(row, ones) for row, k in zip(w, counts, strict=True)]
    return torch.stack(masks).bool()


# --------------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------------

Q = 0.5  # the exponent of lq_norm and SI, and the p of PQI (the papers' default p = 0.5, q = 1)
VN_Q = f"vector_norm(ord={Q:g})"
VN_1 = "vector_norm(ord=1)"
SORT = "torch.sort"


def bench_indices(ctx: Context) -> list[Row]:
    """§1 indices over every neuron of the weight set, against fused reductions and a Python loop."""
    (lq_norm, pq_index, sparsity_index, gini_index) = _import(
        "theory.norms", "lq_norm", "pq_index", "sparsity_index", "gini_index"
    )
    s, dev = ctx.settings, ctx.device
    ws = weight_set(s.total_params, s.row_lengths, dev, ctx.seed)
    n = _size(ws)
    # The same tensors as leaves that require grad: the forward pass autograd records (another kernel).
    wgrad = [w.detach().requires_grad_() for w in ws]
    vn = torch.linalg.vector_norm
    cases = {
        VN_Q: _each(lambda w: vn(w, ord=Q, dim=-1), ws),
        VN_1: _each(lambda w: vn(w, ord=1, dim=-1), ws),
        "vector_norm(ord=2)": _each(lambda w: vn(w, ord=2, dim=-1), ws),
        f"{VN_Q} + {VN_1}": _each(lambda w: (vn(w, ord=Q, dim=-1), vn(w, ord=1, dim=-1)), ws),
        f"lq_norm(q={Q:g})": _each(lambda w: lq_norm(w, Q), ws),
        "lq_norm(q=1)": _each(lambda w: lq_norm(w, 1.0), ws),
        f"pq_index(p={Q:g},q=1)": _each(lambda w: pq_index(w, Q, 1.0), ws),
        f"sparsity_index(q={Q:g})": _each(lambda w: sparsity_index(w, Q), ws),
        f"lq_norm(q={Q:g}) [autograd]": _each(lambda w: lq_norm(w, Q), wgrad),
        f"pq_index(p={Q:g},q=1) [autograd]": _each(lambda w: pq_index(w, Q, 1.0), wgrad),
    }
    t = measure(cases, dev, ctx.repeats)
    two = f"{VN_Q} + {VN_1}"
    rows = [
        row_from_samples("indices", VN_Q, t, [VN_1], size=n, note="the floor: one fused reduction"),
        row_from_samples("indices", VN_1, t, [VN_Q], size=n),
        row_from_samples("indices", "vector_norm(ord=2)", t, [VN_Q, VN_1], size=n, note="memory-bound reference"),
        row_from_samples("indices", two, t, [VN_Q, VN_1], size=n, note="the floor of a two-norm index"),
        row_from_samples("indices", f"lq_norm(q={Q:g})", t, [VN_Q, VN_1], size=n, target=Target(VN_Q, 1.2)),
        row_from_samples("indices", "lq_norm(q=1)", t, [VN_1, VN_Q], size=n, target=Target(VN_1, 1.2)),
        row_from_samples("indices", f"pq_index(p={Q:g},q=1)", t, [VN_Q, VN_1, two], size=n, target=Target(VN_Q, 2.2)),
        row_from_samples("indices", f"sparsity_index(q={Q:g})", t, [VN_Q, VN_1, two], size=n, target=Target(VN_Q, 2.2)),
        row_from_samples(
            "indices",
            f"lq_norm(q={Q:g}) [autograd]",
            t,
            [VN_Q],
            size=n,
            target=Target(VN_Q, 1.2),
            note="w.requires_grad: forward only, the vector_norm kernel (finite gradients at zeros)",
        ),
        row_from_samples(
            "indices",
            f"pq_index(p={Q:g},q=1) [autograd]",
            t,
            [VN_Q, two],
            size=n,
            target=Target(VN_Q, 2.2),
            note="w.requires_grad: forward only",
        ),
    ]

    sort_cases = {
        SORT: _each(lambda w: torch.sort(w, dim=-1), ws),
        "gini_index": _each(gini_index, ws),
    }
    t = measure(sort_cases, dev, ctx.repeats)
    rows.append(row_from_samples("indices", SORT, t, [], size=n, note="the floor of gini_index"))
    rows.append(row_from_samples("indices", "gini_index", t, [SORT], size=n, target=Target(SORT, 1.2)))

    # Against a per-neuron Python loop, on the same fraction of every matrix's rows (the loop is slow).
    sub = _row_subset(ws, s.loop_fraction)
    loops = {
        f"lq_norm(q={Q:g})": (lambda w: lq_norm(w, Q), lambda w: _loop_lq(w, Q)),
        f"pq_index(p={Q:g},q=1)": (lambda w: pq_index(w, Q, 1.0), lambda w: _loop_pq(w, Q, 1.0)),
        f"sparsity_index(q={Q:g})": (lambda w: sparsity_index(w, Q), lambda w: _loop_si(w, Q)),
        "gini_index": (gini_index, _loop_gini),
    }
    for name, (batched, loop) in loops.items():
        rows.append(
            _per_matrix_comparison(
                ctx,
                "indices",
                name,
                sub,
                {name: batched, "loop": loop},
                "loop",
                target=Target("loop", 50.0, "speedup"),
                note=f"first 1/{s.loop_fraction} of every matrix's rows; loop = per-neuron Python loop of torch ops",
            )
        )
    return rows


def _row_subset(ws: Sequence[torch.Tensor], fraction: int) -> list[torch.Tensor]:
    """The first ``1/fraction`` of every matrix's rows (at least one): the weight set's mix of row
    lengths in miniature."""
    return [w[: max(1, w.shape[0] // fraction)].contiguous() for w in ws]


def _per_matrix_comparison(
    ctx: Context,
    group: str,
    case: str,
    ws: Sequence[torch.Tensor],
    fns: dict[str, Callable[[torch.Tensor], object]],
    baseline: str,
    *,
    others: Sequence[str] = (),
    target: Target | None = None,
    note: str = "",
) -> Row:
    """Time ``fns[case]`` against ``fns[baseline]`` (and ``others``) matrix by matrix, interleaved.

    The row holds the whole subset (per-round sums over the matrices); the note adds the speed-up at
    each row length, since a per-neuron loop costs per row while a batched call costs per entry.
    """
    names = [case, baseline, *others]
    cases = {f"{n}@{i}": (lambda f=fns[n], w=w: f(w)) for i, w in enumerate(ws) for n in names}
    t = measure(cases, ctx.device, ctx.repeats)
    totals = {n: [sum(t[f"{n}@{i}"][r] for i in range(len(ws))) for r in range(ctx.repeats)] for n in names}
    row = row_from_samples(
        group,
        case,
        totals,
        [baseline, *others],
        size=_size(ws),
        target=target,
        note=note,
        label=f"{case} [loop subset]",
    )
    by_length = ", ".join(
        f"d={w.shape[1]}: {paired_ratio(t[f'{baseline}@{i}'], t[f'{case}@{i}'])['median']:.0f}x"
        for i, w in enumerate(ws)
    )
    row.note = f"{note}; speed-up by row length {by_length}"
    return row


def _sap_mask(sap_prune_counts, magnitude_prune):
    def run(w: torch.Tensor) -> torch.Tensor:
        return magnitude_prune(w, sap_prune_counts(w, p=Q, q=1.0, dim=-1), dim=-1)

    return run


def _row_counts(w: torch.Tensor, seed: int) -> torch.Tensor:
    """A different pruning count per row, between 0 and 90% of the row (like SAP's, with cap 0.9)."""
    g = torch.Generator().manual_seed(seed)
    frac = torch.rand(w.shape[0], generator=g) * 0.9
    return (frac * w.shape[1]).floor().long().to(w.device)


def bench_masks(ctx: Context) -> list[Row]:
    """Neuron-wise SAP masks (a different count per row) and global-scope masks."""
    magnitude_prune, sap_prune_counts = _import("theory.selection", "magnitude_prune", "sap_prune_counts")
    s, dev = ctx.settings, ctx.device
    ws = weight_set(s.total_params, s.row_lengths, dev, ctx.seed)
    n = _size(ws)
    counts = [_row_counts(w, ctx.seed + i) for i, w in enumerate(ws)]
    sap = _sap_mask(sap_prune_counts, magnitude_prune)
    cases = {
        SORT: _each(lambda w: torch.sort(w, dim=-1), ws),
        "SAP neuron-wise (counts + mask)": _each(sap, ws),
        "sap_prune_counts": _each(lambda w: sap_prune_counts(w, p=Q, q=1.0, dim=-1), ws),
        "magnitude_prune(per-row counts)": lambda: [
            magnitude_prune(w, c, dim=-1) for w, c in zip(ws, counts, strict=True)
        ],
    }
    t = measure(cases, dev, ctx.repeats)
    rows = [
        row_from_samples("masks", SORT, t, [], size=n, note="the floor of a per-row mask"),
        row_from_samples(
            "masks",
            "SAP neuron-wise (counts + mask)",
            t,
            [SORT],
            size=n,
            target=Target(SORT, 1.5),
            note="p=0.5, q=1, eta=0, gamma=1, beta=0.9",
        ),
        row_from_samples("masks", "sap_prune_counts", t, [SORT], size=n),
        row_from_samples("masks", "magnitude_prune(per-row counts)", t, [SORT], size=n, target=Target(SORT, 1.5)),
    ]

    # Against torch.nn.utils.prune row by row, with the same per-row counts, on a subset of rows.
    sub = _row_subset(ws, s.loop_fraction)
    sub_counts = {id(w): c[: w.shape[0]] for w, c in zip(sub, counts, strict=True)}
    sub_lists = {id(w): c[: w.shape[0]].tolist() for w, c in zip(sub, counts, strict=True)}
    l1, cm = "l1_unstructured row by row", "L1Unstructured.compute_mask row by row"
    fns = {
        "magnitude_prune": lambda w: magnitude_prune(w, sub_counts[id(w)], dim=-1),
        l1: lambda w: _loop_l1_unstructured(w, sub_lists[id(w)]),
        cm: lambda w: _loop_l1_compute_mask(w, sub_lists[id(w)]),
    }
    rows.append(
        _per_matrix_comparison(
            ctx,
            "masks",
            "magnitude_prune",
            sub,
            fns,
            cm,
            others=[l1],
            target=Target(cm, 20.0, "speedup"),
            note=f"first 1/{s.loop_fraction} of every matrix's rows, same per-row counts",
        )
    )
    rows.extend(_bench_package_sap(ctx, ws))
    rows.extend(_bench_global_masks(ctx, ws))
    return rows


def _bench_package_sap(ctx: Context, ws: list[torch.Tensor]) -> list[Row]:
    """The user-facing path, ``lqtheory.engine.pruning.sap(weights, mask, scope="neuron")`` over the whole set.

    It views the set through ``masks.unit_view`` (one unpadded block per row width), counts and masks
    each block with one batched call, and builds a ``Mask``.
    """
    case = "pruning.sap(scope=neuron)"
    try:
        (sap,) = _import("engine.pruning", "sap")
        (Mask,) = _import("engine.masks", "Mask")
    except Unavailable as err:
        return [Row("masks", case, math.nan, skipped=True, note=str(err))]
    note = "the package path: unit_view (a copy of the set), sap_prune_counts, magnitude_prune, Mask"
    named = {f"layer{i}.weight": w for i, w in enumerate(ws)}
    mask = Mask({k: torch.ones_like(w, dtype=torch.bool) for k, w in named.items()})
    t = measure(
        {SORT: _each(lambda w: torch.sort(w, dim=-1), ws), case: lambda: sap(named, mask, scope="neuron")},
        ctx.device,
        ctx.repeats,
    )
    return [row_from_samples("masks", case, t, [SORT], size=_size(ws), target=Target(SORT, 1.5), note=note)]


def _bench_global_masks(ctx: Context, ws: list[torch.Tensor]) -> list[Row]:
    """Global scope: one threshold over the whole set, against kthvalue/sort of the flattened set."""
    try:
        (global_prune,) = _import("engine.masks", "global_magnitude_prune")
    except Unavailable as err:
        return [Row("masks", "global-scope mask", math.nan, skipped=True, note=str(err))]
    n = _size(ws)
    k = n // 2
    flat = torch.cat([w.reshape(-1) for w in ws])
    named = {f"w{i}": w for i, w in enumerate(ws)}
    cases = {
        "torch.kthvalue(flat)": lambda: torch.kthvalue(flat.abs(), k),
        "torch.sort(flat)": lambda: torch.sort(flat.abs()),
        "global mask (50%)": lambda: global_prune(named, k),
    }
    t = measure(cases, ctx.device, ctx.repeats)
    return [
        row_from_samples("masks", "torch.kthvalue(flat)", t, ["torch.sort(flat)"], size=n),
        row_from_samples("masks", "torch.sort(flat)", t, [], size=n),
        row_from_samples(
            "masks",
            "global mask (50%)",
            t,
            ["torch.kthvalue(flat)", "torch.sort(flat)"],
            size=n,
            note="whole weight set, one threshold",
        ),
    ]


def _mlp_inputs(ctx: Context):
    """The MLP of E2 (mlp-128-1-2-relu) and the Fashion-MNIST test inputs (synthetic in smoke mode)."""
    (build_model,) = _import("engine.models", "build_model")
    s = ctx.settings
    if s.synthetic_data:
        g = torch.Generator().manual_seed(ctx.seed)
        x = torch.randn(s.bound_samples, 1, 28, 28, generator=g)
    else:
        x = _fashion(ctx).x_test
        if s.bound_samples is not None:
            x = x[: s.bound_samples]
    torch.manual_seed(ctx.seed)
    model = build_model("mlp-128-1-2-relu", (1, 28, 28), 10).to(ctx.device).eval()
    return model, x.to(ctx.device)


def _fashion(ctx: Context):
    (load_dataset,) = _import("engine.data", "load_dataset")
    try:
        return load_dataset("fashion-mnist", device="cpu", download=False)
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        raise Unavailable(f"Fashion-MNIST files not found ({str(err).splitlines()[0]})") from err


def bench_bounds(ctx: Context) -> list[Row]:
    """S4 network bound over a whole MLP and the full test set, against one forward pass."""
    (network_bound,) = _import("theory.bounds", "network_bound")
    mlp_weights, mlp_biases = _import("engine.models", "mlp_weights", "mlp_biases")
    model, x = _mlp_inputs(ctx)
    with torch.no_grad():
        weights = [w.detach() for w in mlp_weights(model)]
        biases = [b.detach() for b in mlp_biases(model)]
    budgets = [torch.full((w.shape[0],), max(1, w.shape[1] // 4), dtype=torch.long, device=ctx.device) for w in weights]
    flat = x.reshape(x.shape[0], -1)

    def forward():
        with torch.no_grad():
            return model(x)

    def bound(q):
        def run():
            with torch.no_grad():
                return network_bound(weights, biases, flat, budgets, q)

        return run

    t = measure(
        {"forward pass": forward, "network_bound(q=0.5)": bound(0.5), "network_bound(q=1)": bound(1.0)},
        ctx.device,
        ctx.repeats,
    )
    n = x.shape[0]
    note = f"mlp-128-1-2-relu, {n} test inputs, every row kept to 1/4 of its entries"
    return [
        row_from_samples("bounds", "forward pass", t, [], size=n, note="the floor"),
        row_from_samples(
            "bounds", "network_bound(q=0.5)", t, ["forward pass"], size=n, target=Target("forward pass", 3.0), note=note
        ),
        row_from_samples(
            "bounds", "network_bound(q=1)", t, ["forward pass"], size=n, target=Target("forward pass", 3.0), note=note
        ),
    ]


def _uint8_images(x: torch.Tensor) -> torch.Tensor:
    """Recover the uint8 pixels from standardised images (an affine map of pixel/255 per data set,
    whose extremes 0 and 255 both occur in Fashion-MNIST): the raw form a torchvision data set holds."""
    lo, hi = x.min(), x.max()
    return ((x - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8).reshape(x.shape[0], *x.shape[-2:])


class TorchvisionStyleImages(torch.utils.data.Dataset):
    """Exactly what ``torchvision.datasets.FashionMNIST.__getitem__`` does, over in-memory uint8 images:
    uint8 array -> PIL image -> ``transform`` (ToTensor + Normalize). (torchvision cannot download here,
    and Debian's recompressed files fail its checksum, so the class is rebuilt over the same pixels.)"""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform=None):
        self.data, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy())  # a 2-D uint8 array becomes a mode "L" image, as in torchvision
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def _conventional_loop(model, train_set, test_set, config, device: torch.device, epochs: int):
    """The textbook loop: DataLoader (shuffle, batch 250), per-batch transfer, same SGD, clipping and
    per-step cosine schedule as the project's loop, then a test pass through a DataLoader."""
    import torch.nn.functional as F

    loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
    model.to(device).train()
    for _ in range(epochs):
        running = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            running += loss.item()
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in torch.utils.data.DataLoader(test_set, batch_size=config.eval_batch_size):
            correct += int((model(xb.to(device)).argmax(1) == yb.to(device)).sum())
    return running, correct


def _training_data(ctx: Context):
    s = ctx.settings
    if not s.synthetic_data:
        return _fashion(ctx)
    (Dataset,) = _import("engine.data", "Dataset")
    g = torch.Generator().manual_seed(ctx.seed)
    n = s.train_samples or 500
    pix = torch.randint(0, 256, (n + n // 5, 1, 28, 28), generator=g, dtype=torch.uint8)
    pix[0].fill_(0)
    pix[1].fill_(255)
    x = (pix.float() / 255 - 0.5) / 0.25
    y = torch.randint(0, 10, (n + n // 5,), generator=g)
    return Dataset("synthetic", x[:n], y[:n], x[n:], y[n:], num_classes=10, input_shape=(1, 28, 28))


def bench_training(ctx: Context) -> list[Row]:
    """Epochs per second of lqtheory.engine.training.train against a DataLoader loop, same model and optimiser."""
    train, TrainConfig = _import("engine.training", "train", "TrainConfig")
    (build_model,) = _import("engine.models", "build_model")
    try:
        from torchvision import transforms
    except ImportError as err:
        raise Unavailable(f"torchvision not installed ({err})") from err
    s, dev = ctx.settings, ctx.device
    data = _training_data(ctx)
    images_train, images_test = _uint8_images(data.x_train), _uint8_images(data.x_test)
    scaled = images_train.float() / 255
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((scaled.mean().item(),), (scaled.std().item(),))]
    )
    train_set = TorchvisionStyleImages(images_train, data.y_train, transform)
    test_set = TorchvisionStyleImages(images_test, data.y_test, transform)
    config = TrainConfig(epochs=s.train_epochs, batch_size=250)
    torch.manual_seed(ctx.seed)
    init = build_model("mlp-128-1-2-relu", (1, 28, 28), 10)
    data_dev = data.to(dev) if hasattr(data, "to") else data

    def project():
        train(copy.deepcopy(init), data_dev, config, device=dev, seed=ctx.seed, progress=False)

    def conventional():
        _conventional_loop(copy.deepcopy(init), train_set, test_set, config, dev, s.train_epochs)

    t = measure({"lqtheory.train": project, "DataLoader loop": conventional}, dev, s.train_repeats, warmup=0)
    note = (
        f"mlp-128-1-2-relu, {data.n_train} samples, batch 250, {s.train_epochs} epoch(s) + test pass per call; "
        "DataLoader num_workers=0"
    )
    rows = []
    for case in ("lqtheory.train", "DataLoader loop"):
        row = row_from_samples(
            "training",
            case,
            t,
            ["DataLoader loop"] if case == "lqtheory.train" else [],
            size=data.n_train,
            note=note,
            target=Target("DataLoader loop", 3.0, "speedup") if case == "lqtheory.train" else None,
        )
        row.note = f"{s.train_epochs / row.seconds:.2f} epochs/s; " + note
        rows.append(row)
    return rows


def bench_scaling(ctx: Context) -> list[Row]:
    """Items 1 and 2 at growing sizes: the log-log slope of time against size should be ~1."""
    (lq_norm, pq_index, sparsity_index, gini_index) = _import(
        "theory.norms", "lq_norm", "pq_index", "sparsity_index", "gini_index"
    )
    try:
        magnitude_prune, sap_prune_counts = _import("theory.selection", "magnitude_prune", "sap_prune_counts")
        sap = _sap_mask(sap_prune_counts, magnitude_prune)
    except Unavailable:
        sap = None
    s, dev = ctx.settings, ctx.device
    routines: dict[str, Callable[[torch.Tensor], object]] = {
        VN_Q: lambda w: torch.linalg.vector_norm(w, ord=Q, dim=-1),
        f"lq_norm(q={Q:g})": lambda w: lq_norm(w, Q),
        f"pq_index(p={Q:g},q=1)": lambda w: pq_index(w, Q, 1.0),
        f"sparsity_index(q={Q:g})": lambda w: sparsity_index(w, Q),
        SORT: lambda w: torch.sort(w, dim=-1),
        "gini_index": gini_index,
    }
    if sap is not None:
        routines["SAP neuron-wise mask"] = sap
    series: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in routines}
    for size in s.scaling_sizes:
        ws = weight_set(size, s.row_lengths, dev, ctx.seed)
        t = measure({name: _each(fn, ws) for name, fn in routines.items()}, dev, s.scaling_repeats)
        for name in routines:
            series[name][0].append(size)
            series[name][1].append(sorted(t[name])[len(t[name]) // 2])
        del ws
    ctx.series["scaling"] = {name: {"sizes": sz, "seconds": sec} for name, (sz, sec) in series.items()}
    rows = []
    lo, hi = s.scaling_sizes[0], s.scaling_sizes[-1]
    for name, (sz, sec) in series.items():
        slope = fit_loglog_slope(sz, sec)
        times = ", ".join(f"{_mega(n)}: {x * 1e3:.1f} ms" for n, x in zip(sz, sec, strict=True))
        rows.append(
            Row(
                "scaling",
                name,
                sec[-1],
                hi,
                list(sec),
                note=f"log-log slope {slope:.2f} from {lo} to {hi} parameters ({times})",
            )
        )
    if sap is None:
        rows.append(
            Row("scaling", "SAP neuron-wise mask", math.nan, skipped=True,
                note="lqtheory.theory.selection not available yet")
        )
    return rows


def bench_lasso(ctx: Context) -> list[Row]:
    """The batched Lasso benchmark lives in benchmarks/bench_lasso.py (another module's owner)."""
    path = _HERE / "bench_lasso.py"
    if not path.exists():
        raise Unavailable("benchmarks/bench_lasso.py not available yet")
    import importlib

    try:
        mod = importlib.import_module("benchmarks.bench_lasso")
    except ImportError as err:
        raise Unavailable(f"benchmarks/bench_lasso.py does not import yet ({err})") from err
    fn = getattr(mod, "run_group", None)
    if fn is None:
        raise Unavailable("benchmarks/bench_lasso.py has no run_group(settings, device, repeats) yet")
    return list(fn(ctx.settings.name, ctx.device, ctx.repeats))


def _reproduce_command() -> list[str] | None:
    """The installed ``lqtheory`` command (next to this Python first), or None."""
    exe = Path(sys.executable).with_name("lqtheory")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("lqtheory")
    return [found] if found else None


def bench_e2e(ctx: Context) -> list[Row]:
    """Wall time of `lqtheory reproduce --profile P` for each profile (long: only with --e2e)."""
    cmd0 = _reproduce_command()
    if cmd0 is None:
        raise Unavailable("the `lqtheory` command is not installed yet")
    rows = []
    for profile in ctx.settings.e2e_profiles:
        # --force: a cold run (the reproduction caches finished notebooks). Its output streams through.
        cmd = [*cmd0, "reproduce", "--profile", profile, "--force"]
        print(f"[e2e] {' '.join(cmd)}", flush=True)
        synchronize(ctx.device)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=_HERE.parent, check=False)
        elapsed = time.perf_counter() - start
        case = f"reproduce --profile {profile}"
        if proc.returncode != 0:
            note = f"failed (exit {proc.returncode}) after {elapsed:.0f} s"
            rows.append(Row("e2e", case, math.nan, skipped=True, note=note))
            continue
        rows.append(Row("e2e", case, elapsed, samples=[elapsed], note="lqtheory " + " ".join(cmd[1:])))
    return rows


BENCHES: dict[str, Callable[[Context], list[Row]]] = {
    "indices": bench_indices,
    "masks": bench_masks,
    "bounds": bench_bounds,
    "training": bench_training,
    "scaling": bench_scaling,
    "lasso": bench_lasso,
    "e2e": bench_e2e,
}


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes (4M-parameter weight set, scaling 1M-8M)")
    size.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny sizes, for the smoke test
    ap.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="GROUP",
        help=f"run only this group (repeatable or comma-separated): {', '.join(GROUPS)}",
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    ap.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="where to write the results ('' for nowhere; default benchmarks/results.json, "
        "results-quick.json with --quick)",
    )
    ap.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="where to save the scaling plot (default benchmarks/scaling.png, scaling-quick.png with --quick)",
    )
    ap.add_argument("--no-plot", action="store_true", help="do not draw the scaling plot")
    ap.add_argument("--markdown", default=None, metavar="PATH", help="also write the table as Markdown")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per measurement (default: the preset's)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument(
        "--e2e",
        action="store_true",
        help="also time `lqtheory reproduce --profile ci|default --force` (long; rewrites the outputs like "
        "`make reproduce`)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    groups: list[str] = []
    for item in args.only or []:
        for g in item.split(","):
            g = g.strip()
            if g not in GROUPS:
                ap.error(f"unknown group {g!r}; choose from {', '.join(GROUPS)}")
            if g not in groups:
                groups.append(g)
    if not groups:
        groups = list(DEFAULT_GROUPS) + (["e2e"] if args.e2e else [])
    args.groups = groups
    # The committed results are the full run's; other presets write beside them, never over them.
    suffix = "" if not (args.quick or args.smoke) else "-quick" if args.quick else "-smoke"
    if args.json is None:
        args.json = str(_HERE / f"results{suffix}.json")
    if args.plot is None:
        args.plot = str(_HERE / f"scaling{suffix}.png")
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parse(argv)
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, argv)
    finally:
        torch.set_num_threads(threads_before)  # main() may be called in-process (the smoke test)


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    from lqtheory.engine.device import resolve_device

    device = resolve_device(args.device)
    settings = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    ctx = Context(settings, device, args.repeats or settings.repeats, seed=args.seed)
    env = environment(device)
    print(
        f"lqtheory benchmarks [{settings.name}] on {env['device']} ({env['device_name']}); torch {env['torch']}, "
        f"numpy {env['numpy']}, python {env['python']}, {env['torch_threads']} torch thread(s) of "
        f"{env['cpu_count']} CPUs, load average {env.get('loadavg_start', '?')}, git {env['git']}",
        flush=True,
    )
    rows: list[Row] = []
    for group in args.groups:
        started = time.perf_counter()
        try:
            new = BENCHES[group](ctx)
        except Unavailable as err:
            new = [Row(group, "(group)", math.nan, skipped=True, note=str(err))]
            print(f"[{group}] skipped: {err}", flush=True)
        else:
            print(f"[{group}] done in {time.perf_counter() - started:.1f} s", flush=True)
        rows.extend(new)
    try:
        import os

        env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    print()
    print(format_table(rows))
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed: " + ", ".join(f"{r.group}/{r.case}" for r in missed))
    if "scaling" in ctx.series and not args.no_plot:
        series = {name: (d["sizes"], d["seconds"]) for name, d in ctx.series["scaling"].items()}
        plot_scaling(
            series,
            Path(args.plot),
            f"lqtheory scaling on {env['device_name']} ({env['torch_threads']} thread(s), torch {env['torch']})",
        )
        print(f"scaling plot: {args.plot}")
    command = "python benchmarks/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    payload = {
        "command": command.strip(),
        "preset": dataclasses.asdict(settings),
        "environment": env,
        "groups": args.groups,
        "rows": [r.to_json() for r in rows],
        "series": ctx.series,
    }
    if args.json:
        write_json(Path(args.json), payload)
        print(f"results: {args.json}")
    if args.markdown:
        md = Path(args.markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"`{payload['command']}` on {env['device_name']} ({env['device']}), {env['torch_threads']} torch "
            f"thread(s) of {env['cpu_count']} CPUs, torch {env['torch']}, numpy {env['numpy']}, python "
            f"{env['python']}, git {env['git']}, load average {env.get('loadavg_start')} -> "
            f"{env.get('loadavg_end')}\n\n"
        )
        md.write_text(header + format_markdown(rows))
        print(f"markdown table: {args.markdown}")
    return payload


if __name__ == "__main__":
    main()
