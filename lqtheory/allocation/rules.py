"""Allocation rules: how many weights every unit keeps at a target sparsity ``S``.

Every rule returns one kept count per unit (a row of a profiled weight, :func:`lqtheory.masks.unit_view`
order) that sums to exactly ``T = round((1 - S) · N)`` of the model's ``N`` prunable weights, and the
masks that keep, in every unit, its largest-score entries. Rules, all batched (loops over layers or
bisection steps, never over units):

* ``uniform``: every layer keeps the fraction ``1 - S``;
* ``uniform-row``: every row keeps ``1 - S`` (Wanda's comparison group);
* ``global``: one score threshold over the whole model;
* ``owl`` (Yin et al., 2024, "Outlier Weighed Layerwise sparsity"): a layer's outlier ratio ``D_l`` is
  the fraction of its scores above ``M`` times their mean (``M = 5``); ``D`` min-max scaled to
  ``[0, 2λ]`` (``λ = 0.08``) and shifted so that its mean is the target density ``1 - S`` gives the
  layer densities: sparsities spanning ``2λ`` around ``S`` (the paper's ``[S - λ, S + λ]`` when the
  ratios are symmetric about their mean; its code, followed here, fixes only the span and the mean). The
  shift uses the plain mean over layers, as the paper and its code do (their LLM blocks are equally
  large); for layers of unequal size the budgets are then scaled by one common factor to the exact total
  (water-filling below), which keeps every layer's density positive where the plain formula does;
* ``alphapruning`` (Lu et al., 2024): WeightWatcher's power-law exponent ``α_l`` of each layer mapped
  linearly onto sparsities in ``[1 - ε, 1 + ε]`` (``ε = 0.3``; larger α = less well trained = pruned
  more), then scaled by one factor so that the layer sizes weight them to ``S``
  (the official code's ``ww_sparsity`` mapping, per layer instead of per LLM block);
* ``exact`` (the ℓ1-tail rule of the profiler): each unit keeps its fewest largest-score entries whose
  left-out mass is at most ``ε`` of the unit's ℓ1 mass, one ``ε`` for the model found by bisection;
* ``sap``: SAP's per-unit retained count (the S5 bound ``r``, γ = β = 1) scaled to the target;
* ``s7``: the S7 bound-optimal budgets, minimising ``Σ_j c_j s_j^(1-1/q)`` with ``c_j = ||score_j||_q``,
  ``q = 0.5`` (:func:`lqtheory.bounds.allocate_budgets`, exact integer optimum).

For the per-layer rules (``uniform``, ``owl``, ``alphapruning``) a layer's budget is spread over its
rows as the score's own method compares weights: ``wanda`` keeps the same fraction of every row (per
output), ``magnitude`` uses one threshold per layer. Layer densities outside ``[0, 1]`` are clipped and
the totals re-balanced by water-filling (:func:`lqtheory.bounds.allocate_budgets` with ``q = 1``).
Fractional budgets are rounded by largest remainders, so the total is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lqtheory.engine.masks import global_magnitude_prune, unit_view
from lqtheory.profiler import budget_masks
from lqtheory.theory.bounds import allocate_budgets, uniform_budgets
from lqtheory.theory.norms import lq_norm, sort_magnitudes
from lqtheory.theory.selection import sap_prune_counts

__all__ = ["RULES", "LAYER_RULES", "OWL_M", "OWL_LAMBDA", "ALPHA_EPSILON", "S7_Q", "Allocation", "allocate_rule",
           "owl_densities", "alphapruning_sparsities", "exact_counts"]

RULES = ("uniform", "uniform-row", "global", "owl", "alphapruning", "exact", "sap", "s7")
LAYER_RULES = ("uniform", "owl", "alphapruning")
LQ_RULES = ("exact", "sap", "s7")
OWL_M = 5.0  # OWL's outlier threshold M (its paper)
OWL_LAMBDA = 0.08  # OWL's density range lambda (its paper)
ALPHA_EPSILON = 0.3
S7_Q = 0.5


@dataclass
class Allocation:
    """Kept counts per unit (``keep``, unit_view order), the masks, and what the rule decided."""

    rule: str
    score: str
    sparsity: float
    keep: torch.Tensor
    masks: dict[str, torch.Tensor]
    names: tuple[str, ...]
    layer: torch.Tensor
    d: torch.Tensor
    target: int
    details: dict = field(default_factory=dict)

    @property
    def kept_fraction(self) -> float:
        return float(self.keep.sum()) / float(self.d.sum())

    def layer_kept(self) -> dict[str, int]:
        per = torch.zeros(len(self.names), dtype=torch.long).index_add_(0, self.layer.cpu(), self.keep.cpu())
        return dict(zip(self.names, per.tolist(), strict=True))

    def layer_sparsity(self) -> dict[str, float]:
        total = torch.zeros(len(self.names), dtype=torch.long).index_add_(0, self.layer.cpu(), self.d.cpu())
        kept = self.layer_kept()
        return {n: 1.0 - kept[n] / int(t) for n, t in zip(self.names, total.tolist(), strict=True)}


def _layer_sizes(view) -> torch.Tensor:
    return torch.bincount(view.layer.cpu(), weights=view.alive_counts().cpu().double(),
                          minlength=len(view.names)).round().long()


def _layer_totals(density: torch.Tensor, sizes: torch.Tensor, target: int) -> torch.Tensor:
    """Integer layer budgets ∝ ``density · size`` in ``[0, size]`` summing to ``target`` (water-filling)."""
    c = (density.clamp(0.0, 1.0) * sizes.double()).clamp_min(0.0)
    if float(c.sum()) == 0.0:  # every density clipped to 0: fall back to sizes
        c = sizes.double()
    return allocate_budgets(c, target, 1.0, 0, sizes)


def _spread_over_rows(scores, view, layer_totals: torch.Tensor, group: str) -> torch.Tensor:
    """Per-unit counts from per-layer budgets: equal fraction per row (``row``) or one threshold (``layer``)."""
    d = view.alive_counts().cpu()
    layer = view.layer.cpu()
    if group == "layer":
        sizes = _layer_sizes(view)
        masks = global_magnitude_prune(scores, sizes - layer_totals, scope="layer")
        return torch.cat([masks[n].reshape(masks[n].shape[0], -1).sum(1) for n in view.names]).long()
    keep = torch.zeros_like(d)
    for i in range(len(view.names)):  # a loop over layers (few), never over units
        idx = torch.nonzero(layer == i).flatten()
        keep[idx] = uniform_budgets(d[idx], int(layer_totals[i]), lower=0)
    return keep


def owl_densities(scores, view, sparsity: float, m: float = OWL_M, lam: float = OWL_LAMBDA) -> torch.Tensor:
    """OWL's layer densities (see the module docstring): plain mean ``1 - S`` over the layers."""
    ratios = []
    for name in view.names:  # per layer: the fraction of its scores above M times their mean
        s = scores[name]
        ratios.append((s > m * s.mean()).double().mean())
    d = torch.stack(ratios)
    span = float(d.max() - d.min())
    a = (d - d.min()) / span * 2 * lam if span > 0 else torch.zeros_like(d)
    return a - a.mean() + (1.0 - sparsity)


def alphapruning_sparsities(alpha: torch.Tensor, sizes: torch.Tensor, sparsity: float,
                            epsilon: float = ALPHA_EPSILON) -> torch.Tensor:
    """AlphaPruning's layer sparsities: α mapped linearly onto ``[1-ε, 1+ε]``, scaled to mean ``S``."""
    alpha = alpha.double()
    span = float(alpha.max() - alpha.min())
    r = (alpha - alpha.min()) / span * 2 * epsilon + (1 - epsilon) if span > 0 else torch.ones_like(alpha)
    sizes = sizes.double()
    return r * (sizes.sum() * sparsity / (sizes * r).sum())


def _sorted_tails(view):
    """Per block: sorted scores, the mass from each position on, and the row totals (float64)."""
    out = []
    for v, m in view.blocks:
        mags = sort_magnitudes(v, -1, m)[0].double()
        total = mags.sum(-1, keepdim=True)
        out.append((total - mags.cumsum(-1) + mags, total))
    return out


def _tail_counts(tails, eps: float) -> torch.Tensor:
    return torch.cat([(after > eps * (1 + 1e-12) * total).sum(-1) for after, total in tails]).cpu()


def exact_counts(view, target: int, iterations: int = 100) -> tuple[torch.Tensor, float]:
    """The ℓ1-tail rule at the ``ε`` that meets ``target``: bisection on ``ε`` (one sort per block),
    then the units whose tail crosses at that ``ε`` take the remaining few weights (lower index first)."""
    tails = _sorted_tails(view)
    d = view.alive_counts().cpu()
    lo, hi = 0.0, 1.0
    k_lo = _tail_counts(tails, lo)
    if int(k_lo.sum()) <= target:  # even ε = 0 keeps fewer (zeros carry no mass): keep zeros too
        k_lo = d
        hi = 0.0
    else:
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            if int(_tail_counts(tails, mid).sum()) > target:
                lo = mid
            else:
                hi = mid
        k_lo = _tail_counts(tails, lo)
    k_hi = _tail_counts(tails, hi)
    deficit = target - int(k_hi.sum())
    delta = k_lo - k_hi
    before = delta.cumsum(0) - delta
    extra = (deficit - before).clamp(min=0)
    extra = torch.minimum(extra, delta)
    return k_hi + extra, hi


def _sap_retained(view) -> torch.Tensor:
    return torch.cat([(m.sum(-1) - sap_prune_counts(v, 0.5, 1.0, 0.0, 1.0, 1.0, mask=m)).cpu()
                      for v, m in view.blocks])


def allocate_rule(rule: str, score: str, scores: dict[str, torch.Tensor], sparsity: float,
                  alpha: dict[str, float] | None = None) -> Allocation:
    """Per-unit kept counts and masks of ``rule`` on ``scores`` (name → non-negative tensor, rows =
    units) at ``sparsity``. ``alpha``: WeightWatcher's α per weight name (``alphapruning`` only)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must lie in (0, 1), got {sparsity:g}")
    view = unit_view(scores, "neuron")
    d = view.alive_counts().cpu()
    n_total = int(d.sum())
    target = int(round((1.0 - sparsity) * n_total))
    group = "row" if score == "wanda" else "layer"
    sizes = _layer_sizes(view)
    details: dict = {}
    if rule == "uniform":
        keep = _spread_over_rows(scores, view, uniform_budgets(sizes, target, lower=0), group)
    elif rule == "uniform-row":
        keep = uniform_budgets(d, target, lower=0)
    elif rule == "global":
        masks = global_magnitude_prune(scores, n_total - target, scope="global")
        keep = torch.cat([masks[n].reshape(masks[n].shape[0], -1).sum(1) for n in view.names]).long()
    elif rule == "owl":
        density = owl_densities(scores, view, sparsity)
        details.update(owl_m=OWL_M, owl_lambda=OWL_LAMBDA, owl_density=density.tolist())
        keep = _spread_over_rows(scores, view, _layer_totals(density, sizes, target), group)
    elif rule == "alphapruning":
        if alpha is None:
            raise ValueError("alphapruning needs WeightWatcher's alpha per layer (pip install lqtheory[peers])")
        a = torch.tensor([float(alpha[n]) for n in view.names], dtype=torch.float64)
        sp = alphapruning_sparsities(a, sizes, sparsity)
        details.update(alpha_epsilon=ALPHA_EPSILON, alpha=a.tolist(), alpha_sparsity=sp.tolist())
        keep = _spread_over_rows(scores, view, _layer_totals(1.0 - sp, sizes, target), group)
    elif rule == "exact":
        keep, eps = exact_counts(view, target)
        details["eps"] = eps
    elif rule == "sap":
        retained = _sap_retained(view).double()
        keep = allocate_budgets(retained, target, 1.0, 0, d)
    else:  # s7
        c = view.per_unit(lambda v, m: lq_norm(v.double(), S7_Q, mask=m)).cpu()
        lower = (d > 0).long() if target >= int((d > 0).sum()) else torch.zeros_like(d)
        keep = allocate_budgets(c, target, S7_Q, lower, d)
        details["s7_q"] = S7_Q
    keep = keep.long().cpu()
    masks = budget_masks(scores, keep.to(view.layer.device))
    return Allocation(rule, score, float(sparsity), keep, masks, view.names, view.layer.cpu(), d, target, details)
