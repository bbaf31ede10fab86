"""``lqtheory allocate``: per-unit pruning budgets at target sparsities, from the standard allocation rules
and the lq rules side by side, evaluated one-shot (issue #21).

:func:`allocate` loads a model like the profiler (:func:`lqtheory.profiler.load_model`; its units from
:func:`lqtheory.profiler.profiled_weights`), scores every weight (:mod:`~lqtheory.allocation.scores`:
``magnitude``, ``wanda``), allocates by every rule (:mod:`~lqtheory.allocation.rules`), and with data
measures the pruned model over calibration/evaluation splits (:mod:`~lqtheory.allocation.evaluation`).
:mod:`~lqtheory.allocation.exports` hands the result to ``torch.nn.utils.prune``, Torch-Pruning and
llm-compressor. The command line is :mod:`lqtheory.allocation.cli`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from lqtheory.allocation.evaluation import evaluate_allocations, primary_metric, scores_for, summarise
from lqtheory.allocation.rules import LAYER_RULES, LQ_RULES, RULES, Allocation, allocate_rule
from lqtheory.allocation.scores import SCORES
from lqtheory.profiler import ProfileInputError, load_model, model_parameter, peers, profiled_weights, resolve_data

__all__ = ["allocate", "AllocationReport", "Allocation", "allocate_rule", "RULES", "LAYER_RULES", "LQ_RULES",
           "SCORES", "DEFAULT_SPARSITIES", "check_request"]

DEFAULT_SPARSITIES = (0.5, 0.7, 0.9)


@dataclass
class AllocationReport:
    """What :func:`allocate` found: ``results`` (one dict per rule, score and sparsity: kept fraction,
    the metric and its interval when there was data), ``splits`` (the per-split measurements),
    ``allocations`` (computed with all the data as calibration; for the exports), notes."""

    label: str
    source: str
    metric: str | None
    results: list[dict]
    splits: pd.DataFrame | None
    allocations: dict = field(default_factory=dict)
    transposed: set = field(default_factory=set)
    notes: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(model=self.label, source=self.source, metric=self.metric, results=self.results,
                    notes=self.notes, meta=self.meta)


def check_request(rules, scores, sparsities, have_data: bool) -> None:
    """Reject what cannot run before any model is loaded (ValueError with a one-line message)."""
    for sp in sparsities:
        if not 0.0 < float(sp) < 1.0:
            raise ValueError(f"--sparsity must lie in (0, 1), got {sp:g}")
    for r in rules:
        if r not in RULES:
            raise ValueError(f"unknown rule {r!r}; choose from {', '.join(RULES)}")
    for s in scores:
        if s not in SCORES:
            raise ValueError(f"unknown score {s!r}; choose from {', '.join(SCORES)}")
    if "wanda" in scores and not have_data:
        raise ValueError("the wanda score needs calibration inputs: give --data")
    if "alphapruning" in rules and not peers.peers_available():
        raise ValueError("the alphapruning rule needs WeightWatcher: pip install lqtheory[peers]")


def allocate(model, data=None, *, arch: str | None = None, sparsities=DEFAULT_SPARSITIES, rules=None, scores=None,
             splits: int = 5, seed: int = 0, n_data: int = 256, trust_pickle: bool = False,
             progress=None) -> AllocationReport:
    """Allocate ``model``'s weights by every rule and score at every sparsity; with ``data``, measure.

    ``rules``: default every rule (``alphapruning`` only when WeightWatcher is installed); ``scores``:
    default ``magnitude`` and, with data, ``wanda``. Raises ``ValueError`` (the profiler's
    ``ProfileInputError`` included) on bad input.
    """
    start = time.perf_counter()
    notes = []
    if rules is None:
        rules = [r for r in RULES if r != "alphapruning" or peers.peers_available()]
        if "alphapruning" not in rules:
            notes.append(f"alphapruning skipped: {peers.PEERS_HINT}")
    if scores is None:
        scores = ["magnitude", "wanda"] if data is not None else ["magnitude"]
    rules, scores, sparsities = list(rules), list(scores), [float(s) for s in sparsities]
    check_request(rules, scores, sparsities, data is not None)
    if splits < 1:
        raise ValueError(f"--splits must be >= 1, got {splits}")
    loaded = load_model(model, arch=arch, trust_pickle=trust_pickle)
    weights, _kinds, skipped = profiled_weights(loaded.model)
    if not weights:
        raise ProfileInputError(f"{loaded.label}: no prunable layers (no Linear, Conv or attention projection "
                                f"weights; {len(skipped)} other parameter(s))")
    transposed = {n for n, w in weights.items() if w.shape != model_parameter(loaded.model, n).shape}
    alpha = None
    if "alphapruning" in rules:
        ww = peers.weightwatcher_metrics(loaded.model, list(weights))
        missing = ww.alpha.isna()
        if bool(missing.all()):
            raise ProfileInputError(f"{loaded.label}: WeightWatcher fitted no layer, so alphapruning has no alpha")
        if bool(missing.any()):
            notes.append(f"alphapruning: WeightWatcher skipped {int(missing.sum())} layer(s) "
                         f"(e.g. {ww.layer[missing].iloc[0]}); they get the mean alpha")
        alpha = dict(zip(ww.layer, ww.alpha.fillna(ww.alpha.mean()), strict=True))
    batch = resolve_data(data, loaded, n_data)
    metric = None
    frame = None
    if batch is not None:
        metric = primary_metric(loaded, batch)
        frame = evaluate_allocations(loaded, weights, transposed, batch, rules, scores, sparsities, splits=splits,
                                     seed=seed, alpha=alpha, progress=progress)
        results = summarise(frame, metric)
    allocations = {}
    for score in scores:
        s, score_notes = scores_for(score, loaded, weights, batch)
        notes.extend(score_notes)
        for rule in rules:
            for sp in sparsities:
                allocations[(rule, score, sp)] = allocate_rule(rule, score, s, sp, alpha=alpha)
    if batch is None:
        results = [dict(rule=r, score=s, sparsity=sp, kept_fraction=a.kept_fraction, metric=None, value=None,
                        interval=None) for (r, s, sp), a in allocations.items()]
    for rec in results:  # what the rule decided, with all data as calibration
        a = allocations[(rec["rule"], rec["score"], rec["sparsity"])]
        rec["kept"], rec["target_kept"], rec["units"] = int(a.keep.sum()), a.target, int(a.keep.numel())
        if "eps" in a.details:
            rec["eps"] = a.details["eps"]
        rec["layer_sparsity"] = a.layer_sparsity()
    meta = dict(seconds=time.perf_counter() - start, data=None if batch is None else batch.name,
                inputs=0 if batch is None else len(batch), splits=splits if batch is not None else 0, seed=seed,
                weights=int(sum(w.numel() for w in weights.values())), layers=len(weights))
    return AllocationReport(loaded.label, loaded.source, metric, results, frame, allocations, transposed, notes, meta)
