"""One-shot evaluation of allocations (masks, no retraining) over calibration/evaluation splits.

The verification data (``--data``, resolved by :func:`lqtheory.profiler.resolve_data`) is split at
random, ``splits`` times, into a calibration half (Wanda's input norms, OWL's outlier ratios) and an
evaluation half. Each split allocates with its own calibration and measures on its own evaluation
inputs with :class:`lqtheory.profiler.evaluate.Evaluator`: accuracy with labels; otherwise output
drift ``‖f̃ − f‖/‖f‖`` and top-1 agreement with the dense model for logits, and ``1 − cos`` for
embeddings. The interval of a metric is Student-t over the splits (:func:`lqtheory.stats.mean_interval`);
the halves of different splits overlap, so it describes the spread over calibration/evaluation
draws, not independent replications.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from lqtheory.allocation.rules import Allocation, allocate_rule
from lqtheory.allocation.scores import magnitude_scores, wanda_scores
from lqtheory.analysis.stats import mean_interval
from lqtheory.profiler import masked_weights
from lqtheory.profiler.evaluate import Batch, Evaluator

__all__ = ["split_batch", "primary_metric", "scores_for", "evaluate_allocations", "summarise"]


def split_batch(batch: Batch, splits: int, seed: int = 0) -> list[tuple[Batch, Batch]]:
    """``splits`` random (calibration, evaluation) halves of ``batch`` (deterministic given ``seed``)."""
    n = len(batch)
    if n < 4:
        raise ValueError(f"--data holds {n} inputs; at least 4 are needed to split into calibration and evaluation")
    out = []
    for k in range(splits):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + k))
        halves = perm[: n // 2], perm[n // 2 :]

        def take(idx, tag, k=k):
            x = [batch.x[i] for i in idx.tolist()] if isinstance(batch.x, list) else batch.x[idx]
            y = None if batch.y is None else batch.y[idx]
            return Batch(x, y, f"{batch.name} ({tag} half of split {k})")

        out.append((take(halves[0], "calibration"), take(halves[1], "evaluation")))
    return out


def primary_metric(loaded, batch: Batch) -> str:
    """The measure a user reads first: accuracy with labels, 1 − cos for embeddings, else drift."""
    if loaded.modality == "text":
        return "cosine_drift"
    return "accuracy" if batch.y is not None else "drift"


def _runner(loaded, batch: Batch):
    if loaded.modality == "text":
        return lambda: loaded.encode(batch.x)
    return lambda: Evaluator(loaded, batch).outputs()


def scores_for(score: str, loaded, weights, calibration: Batch | None):
    """``(scores, notes)`` of ``score`` (``magnitude`` or ``wanda`` over ``calibration``)."""
    if score == "magnitude":
        return magnitude_scores(weights), []
    if calibration is None:
        raise ValueError("the wanda score needs calibration inputs (--data)")
    return wanda_scores(loaded.model, weights, _runner(loaded, calibration))


def evaluate_allocations(loaded, weights, transposed, batch: Batch, rules, scores, sparsities, *, splits: int = 5,
                         seed: int = 0, alpha=None, progress=None) -> pd.DataFrame:
    """One row per (split, rule, score, sparsity): kept fraction and the measures on the split's
    evaluation half, plus the dense model's on the same half."""
    rows = []
    for k, (calib, evalb) in enumerate(split_batch(batch, splits, seed)):
        ev = Evaluator(loaded, evalb)
        dense = ev.outputs()
        base = ev.compare(dense, dense)
        for score in scores:
            s, _ = scores_for(score, loaded, weights, calib)
            for rule in rules:
                for sp in sparsities:
                    start = time.perf_counter()
                    a: Allocation = allocate_rule(rule, score, s, sp, alpha=alpha)
                    with masked_weights(loaded.model, a.masks, transposed):
                        m = ev.compare(dense, ev.outputs())
                    row = dict(split=k, rule=rule, score=score, sparsity=sp, kept_fraction=a.kept_fraction,
                               target_kept=a.target, kept=int(a.keep.sum()), units=int(a.keep.numel()), **m)
                    if "accuracy" in base:
                        row["dense_accuracy"] = base["accuracy"]
                    row["seconds"] = time.perf_counter() - start
                    rows.append(row)
                    if progress is not None:
                        progress(row)
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, metric: str, level: float = 0.95) -> list[dict]:
    """Per (rule, score, sparsity): the kept fraction, ``metric``'s mean over splits and its interval,
    and the means of the other measures."""
    out = []
    measures = [c for c in ("accuracy", "drift", "top1_agreement", "cosine_drift", "dense_accuracy") if c in frame]
    for (rule, score, sp), g in frame.groupby(["rule", "score", "sparsity"], sort=False):
        iv = mean_interval(g[metric].to_numpy(), level)
        rec = dict(rule=rule, score=score, sparsity=float(sp), kept_fraction=float(g.kept_fraction.mean()),
                   metric=metric, value=iv.mean, interval=[iv.lo, iv.hi], splits=int(len(g)))
        rec.update({f"{c}_mean": float(g[c].mean()) for c in measures})
        out.append(rec)
    return out
