"""Training-engine benchmark: today's per-run loop against a bank of runs trained together, and the GEMM floor.

    python benchmarks/bench_engine.py --quick --json engine.json   # 3 interleaved rounds (~2-4 min)
    python benchmarks/bench_engine.py                              # 5 rounds
    python benchmarks/bench_engine.py --profile                    # also a torch.profiler table of one bank epoch

On the ``default`` profile's model and batch size (``lqtheory.analysis.comparison.STANDARD_SETTINGS["default"]``:
``mlp-128-1-2-relu``, batch 250, 40,000 Fashion-MNIST training images; a seeded Gaussian stand-in of
the same shape when the data set is not installed), seconds per **model-epoch** (one model, one epoch)
of:

* ``loop_fp32``: :func:`lqtheory.engine.training.train`, one model, one epoch (today's per-run loop);
* ``bank_fp32``: :func:`lqtheory.engine.bank.train_bank` on a bank of ``--bank-size`` (12) members, one
  epoch, divided by the bank size;
* ``bank_bf16``: the same with ``precision="bfloat16"`` (``null`` where the device has no bf16 matrix
  unit: CUDA, or a CPU with AVX512-BF16 or AMX);
* ``bank_gemm_fp32`` (extra): the bank's products alone, one ``bmm`` over the members per product,
  per model-epoch, which splits ``bank_fp32 / floor_fp32`` into GEMM efficiency and the rest;
* ``floor_fp32`` / ``floor_bf16``: the FLOPs of one model-epoch (forward products, weight gradients and
  the input gradients of every layer but the first) divided by the GEMM rate measured in this run at
  the training's own shapes (``torch.mm`` of one model's step), fp32 and bf16.

Every round runs each case once in a rotated order (``benchmarks/harness.py``), so the ratios (paired
medians) share the load; absolute times do not. Targets on a quiet 2-core machine (issue #19):
``bank_fp32 <= 0.6 x loop_fp32`` and ``<= 1.6 x floor_fp32``; ``bank_bf16 <= 0.3 x loop_fp32`` where
AMX exists. ``--threads`` defaults to 1, the thread count the sweep's workers use.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script: make `benchmarks` and `lqtheory` importable
    sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402

from benchmarks.harness import environment, measure, paired_ratio, write_json  # noqa: E402

TARGETS = {"bank_fp32/loop_fp32": 0.6, "bank_fp32/floor_fp32": 1.6, "bank_bf16/loop_fp32": 0.3}


def default_settings() -> dict:
    from lqtheory.analysis.comparison import STANDARD_SETTINGS

    s = STANDARD_SETTINGS["default"]
    return {"dataset": s["dataset"], "model": s["model"], "batch_size": s["batch_size"], "n_train": s["n_train"],
            "lr": s["lr"]}


def load_data(settings: dict, device: torch.device):
    """The default profile's training subset, or a Gaussian stand-in of its shape if it is not installed."""
    from lqtheory.engine.data import Dataset, load_dataset

    try:
        data = load_dataset(settings["dataset"], device="cpu").subset(settings["n_train"], 1000, seed=0)
        return data.to(device), settings["dataset"]
    except (FileNotFoundError, RuntimeError, ValueError, OSError):
        g = torch.Generator().manual_seed(0)
        n = settings["n_train"]
        x, xt = torch.randn(n, 1, 28, 28, generator=g), torch.randn(1000, 1, 28, 28, generator=g)
        y, yt = torch.randint(0, 10, (n,), generator=g), torch.randint(0, 10, (1000,), generator=g)
        stand_in = Dataset("synthetic", x, y, xt, yt, num_classes=10, input_shape=(1, 28, 28))
        return stand_in.to(device), "synthetic (data set not installed)"


def bf16_supported(device: torch.device) -> tuple[bool, dict]:
    """Whether the device has bf16 matrix instructions, and which it reports."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(), {"cuda_bf16": torch.cuda.is_bf16_supported()}
    flags = {
        "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
    }
    return flags["avx512_bf16"] or flags["amx"], flags


def layer_shapes(model) -> list[tuple[int, int]]:
    from lqtheory.engine.models import mlp_weights

    return [(w.shape[1], w.shape[0]) for w in mlp_weights(model)]  # (in, out) per layer


def flops_per_epoch(shapes, n: int) -> int:
    """2·in·out per sample per product: forward, weight gradient, and input gradient except layer 1's."""
    per_sample = sum(2 * i * o * (2 if l == 0 else 3) for l, (i, o) in enumerate(shapes))
    return per_sample * n


def gemm_step(shapes, batch: int, dtype: torch.dtype, device: torch.device):
    """One training step's products of one model at its own shapes, as plain ``torch.mm`` calls."""
    g = torch.Generator(device="cpu").manual_seed(1)
    xs = [torch.randn(batch, i, generator=g).to(device, dtype) for i, _ in shapes]
    ws = [torch.randn(o, i, generator=g).to(device, dtype) for i, o in shapes]
    gs = [torch.randn(batch, o, generator=g).to(device, dtype) for _, o in shapes]

    def step():
        for l in range(len(shapes)):
            torch.mm(xs[l], ws[l].t())  # forward
            torch.mm(gs[l].t(), xs[l])  # weight gradient
            if l:
                torch.mm(gs[l], ws[l])  # input gradient
    return step


def bank_gemm_step(shapes, batch: int, members: int, dtype: torch.dtype, device: torch.device):
    """The same products for ``members`` models as the bank issues them (one ``bmm`` per product)."""
    g = torch.Generator(device="cpu").manual_seed(2)
    xs = [torch.randn(members, batch, i, generator=g).to(device, dtype) for i, _ in shapes]
    ws = [torch.randn(members, o, i, generator=g).to(device, dtype) for i, o in shapes]
    gs = [torch.randn(members, batch, o, generator=g).to(device, dtype) for _, o in shapes]

    def step():
        for l in range(len(shapes)):
            torch.bmm(xs[l], ws[l].transpose(1, 2))
            torch.bmm(gs[l].transpose(1, 2), xs[l])
            if l:
                torch.bmm(gs[l], ws[l])
    return step


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--bank-size", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-train", type=int, default=None, help="override the training-set size (tests)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one bank epoch")
    args = parser.parse_args(argv)
    if args.bank_size < 1 or args.threads < 1:
        print("bench_engine: --bank-size and --threads must be >= 1", file=sys.stderr)
        raise SystemExit(2)

    from lqtheory.engine.bank import BankMember, train_bank
    from lqtheory.engine.device import resolve_device
    from lqtheory.engine.models import build_model
    from lqtheory.engine.training import TrainConfig, train

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = default_settings()
    if args.n_train is not None:
        settings["n_train"] = args.n_train
    data, data_name = load_data(settings, device)
    config = TrainConfig(epochs=1, batch_size=settings["batch_size"], lr=settings["lr"])
    K = args.bank_size
    n = data.x_train.shape[0]

    def model(seed: int):
        torch.manual_seed(seed)
        return build_model(settings["model"], data.input_shape, data.num_classes).to(device)

    shapes = layer_shapes(model(0))
    flops = flops_per_epoch(shapes, n)
    steps = math.ceil(n / settings["batch_size"])
    bf16_ok, bf16_flags = bf16_supported(device)

    def loop_fp32():
        train(model(0), data, config, seed=0, progress=False)

    def bank(precision: str):
        def run():
            train_bank([BankMember(model(s), data, config, seed=s) for s in range(K)], precision=precision,
                       progress=False)
        return run

    fp32_step = gemm_step(shapes, settings["batch_size"], torch.float32, device)
    bf16_step = gemm_step(shapes, settings["batch_size"], torch.bfloat16, device)
    bank_fp32_step = bank_gemm_step(shapes, settings["batch_size"], K, torch.float32, device)
    # the GEMM cases time one model-epoch's products (steps x one step), so they read as seconds too
    cases = {
        "loop_fp32": loop_fp32,
        "bank_fp32": bank("float32"),
        "gemm_fp32": lambda: [fp32_step() for _ in range(steps)],
        "gemm_bf16": lambda: [bf16_step() for _ in range(steps)],
        "bank_gemm_fp32": lambda: [bank_fp32_step() for _ in range(steps)],
    }
    if bf16_ok:
        cases["bank_bf16"] = bank("bfloat16")
    repeats = args.repeats or (3 if args.quick else 5)
    env = environment(device)  # before the clock: its load average is the one the measurement starts under
    started = time.perf_counter()
    samples = measure(cases, device, repeats=repeats, warmup=1)
    per_model = {name: [s / K for s in v] if name.startswith("bank") else list(v) for name, v in samples.items()}
    # bank_gemm_fp32: the bank's own products (one bmm over K per product), per model-epoch: the part of
    # bank_fp32 that is matrix products, measured in isolation
    med = {name: statistics.median(v) for name, v in per_model.items()}

    result = {
        "loop_fp32": med["loop_fp32"],
        "bank_fp32": med["bank_fp32"],
        "bank_bf16": med.get("bank_bf16"),
        "floor_fp32": med["gemm_fp32"],
        "floor_bf16": med["gemm_bf16"],
        "bank_size": K,
        "bank_gemm_fp32": med["bank_gemm_fp32"],
        "gemm_rate_gflops": {"fp32": flops / med["gemm_fp32"] / 1e9, "bf16": flops / med["gemm_bf16"] / 1e9},
        "flops_per_model_epoch": flops,
        "ratios": {
            "bank_fp32/loop_fp32": paired_ratio(per_model["bank_fp32"], per_model["loop_fp32"]),
            "bank_fp32/floor_fp32": paired_ratio(per_model["bank_fp32"], per_model["gemm_fp32"]),
            "loop_fp32/floor_fp32": paired_ratio(per_model["loop_fp32"], per_model["gemm_fp32"]),
            "bank_gemm_fp32/floor_fp32": paired_ratio(per_model["bank_gemm_fp32"], per_model["gemm_fp32"]),
            "bank_fp32/bank_gemm_fp32": paired_ratio(per_model["bank_fp32"], per_model["bank_gemm_fp32"]),
        },
        "samples": per_model,
        "settings": {**settings, "data": data_name, "n_train": n, "steps_per_epoch": steps, "repeats": repeats,
                     "threads": args.threads},
        "bf16": {"supported": bf16_ok, **bf16_flags},
        "environment": env,
        "seconds_total": time.perf_counter() - started,
    }
    if bf16_ok:
        result["ratios"]["bank_bf16/loop_fp32"] = paired_ratio(per_model["bank_bf16"], per_model["loop_fp32"])
        result["ratios"]["bank_bf16/floor_bf16"] = paired_ratio(per_model["bank_bf16"], per_model["gemm_bf16"])
    import os

    try:
        result["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    result["targets"] = {
        key: {"bound": bound, "ratio": result["ratios"][key]["median"] if key in result["ratios"] else None,
              "met": (result["ratios"][key]["median"] <= bound) if key in result["ratios"] else None,
              **({"applies": bf16_flags.get("amx", False) or device.type == "cuda"} if "bf16" in key else {})}
        for key, bound in TARGETS.items()
    }

    print(f"engine benchmark: {settings['model']}, batch {settings['batch_size']}, {n} images ({data_name}), "
          f"bank of {K}, {args.threads} thread(s), {repeats} rounds, device {device}, "
          f"load {result['environment'].get('loadavg_start')} -> {result['environment'].get('loadavg_end')}")
    for key in ("loop_fp32", "bank_fp32", "bank_bf16", "floor_fp32", "floor_bf16"):
        value = result[key]
        print(f"  {key:<11} {'null' if value is None else f'{value:.4f} s'} per model-epoch")
    print(f"  bank_size   {K}")
    print(f"  bank_gemm_fp32 {result['bank_gemm_fp32']:.4f} s per model-epoch (the bank's bmm products alone)")
    print(f"  GEMM rate at the training's shapes: fp32 {result['gemm_rate_gflops']['fp32']:.1f}, "
          f"bf16 {result['gemm_rate_gflops']['bf16']:.1f} GFLOP/s; bf16 flags {bf16_flags}")
    for key, t in result["targets"].items():
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        verdict = {None: "n/a", True: "met", False: "MISSED"}[t["met"]]
        note = "" if t.get("applies", True) else " (target applies only where AMX exists)"
        print(f"  {key:<22} {ratio:>6}  target <= {t['bound']:g}: {verdict}{note}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            bank("float32")()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    if args.json is not None:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
