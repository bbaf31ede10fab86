"""Pruning methods × scopes (THEORY.md §3, S7): SAP, SI-adaptive, One-Shot, Lottery Ticket, random,
bound-optimal, each at ``neuron``, ``layer`` or ``global`` scope.

Two levels, as in ``torch.nn.utils.prune``: small lower-case functions for users (:func:`sap`,
:func:`si_adaptive`, :func:`one_shot`, :func:`lottery_ticket`, :func:`random_prune`,
:func:`bound_optimal`), and one class per method in the registry :data:`METHODS` holding its rule. The
machinery is written once in :class:`PruningMethod`: view the weights at the scope as rows of units
(:func:`lqtheory.engine.masks.unit_view`: blocks of equal row width, never padded), compute how many alive
entries each unit loses and the scores that rank them, and remove the lowest-scoring ones with one
batched :func:`lqtheory.theory.selection.magnitude_prune` per block (ties: among equal scores the higher
index goes first, the same on every device). The entry point is :func:`prune_step`; it is pure (never
touches a model) and cumulative (the new mask is a subset of the old one; pruned weights are never revived).

Units: ``neuron`` — a Linear row or a flattened Conv output filter; ``layer`` — a whole tensor;
``global`` — all masked tensors concatenated (ties by position in the mask's name order).

Rounding rule of the rate-based methods (One-Shot, Lottery Ticket, random, bound-optimal):
``n_prune = round_half_to_even(rate · alive)`` per unit (neuron / layer / whole network), computed in
float64 — exactly how ``torch.nn.utils.prune`` turns a float ``amount`` into a count (Python
``round(amount * n)``). So 20% of 10 alive weights removes 2, 20% of 12 removes 2 (2.4), 50% of 5
removes 2 (2.5 rounds to even), and a unit with 2 alive weights loses none at rate 0.2 (0.4 → 0).
The rate is a fraction of what *remains*, so after k steps at rate ρ about ``(1 − ρ)^k`` of the weights
are left. SAP/SI-adaptive use their own count (:func:`lqtheory.theory.selection.sap_prune_counts`).

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from lqtheory.common.checks import check_exponent, check_real
from lqtheory.engine.masks import SCOPES, Mask, UnitView, unit_view
from lqtheory.theory.bounds import allocate_budgets
from lqtheory.theory.norms import MAX_EXPONENT, gini_index, lq_norm, pq_index, sparsity_index
from lqtheory.theory.selection import magnitude_prune, sap_prune_counts

__all__ = [
    "METHODS",
    "PruneConfig",
    "PruningMethod",
    "SAP",
    "SIAdaptive",
    "OneShot",
    "LotteryTicket",
    "RandomPruning",
    "BoundOptimal",
    "Control",
    "prune_step",
    "rate_prune_counts",
    "si_adaptive_config",
    "unit_statistics",
    "sap",
    "si_adaptive",
    "one_shot",
    "lottery_ticket",
    "random_prune",
    "bound_optimal",
]

_USES_P = ("sap", "si-adaptive")  # the methods whose rule involves the PQ Index I_{p,q}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------




@dataclass(frozen=True)
class PruneConfig:
    """Hyper-parameters of one pruning step, validated on construction (ValueError / TypeError).

    - ``method``: a key of :data:`METHODS` (``sap``, ``si-adaptive``, ``one-shot``, ``lottery-ticket``,
      ``random``, ``bound-optimal``, ``control``: nothing pruned); ``scope``: ``neuron``, ``layer`` or ``global``.
    - ``p``, ``q`` > 0: the PQ Index exponents of SAP, which needs ``p < q``; ``si-adaptive`` requires
      ``q = 1`` (its ``p`` is the paper's ``q_small``); ``bound-optimal`` ignores ``p`` and uses ``q`` in
      ``(0, 1]`` for ``c_j = ||W[j]||_q`` and ``s_j ∝ c_j^q``; the other methods ignore both.
    - ``eta >= 0``, ``gamma > 0``, ``0 <= beta <= 1``: SAP's tail-mass ratio, scale and per-unit cap.
    - ``0 <= rate <= 1``: fraction of the *remaining* weights removed per step by the rate-based methods.
    Integers are stored as floats, so equal settings compare and hash equal.
    """

    method: str
    scope: str = "neuron"
    p: float = 0.5
    q: float = 1.0
    eta: float = 0.0
    gamma: float = 1.0
    beta: float = 0.9
    rate: float = 0.2

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; choose one of {', '.join(SCOPES)}")
        p = check_exponent(self.p, "p", high=MAX_EXPONENT)
        q = check_exponent(self.q, "q", high=MAX_EXPONENT)
        if self.method in _USES_P and not p < q:
            raise ValueError(f"p must be smaller than q (0 < p < q), got p={p:g}, q={q:g}")
        eta, gamma, beta, rate = (check_real(getattr(self, n), n) for n in ("eta", "gamma", "beta", "rate"))
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta:g}")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma:g}")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must lie in [0, 1], got {beta:g}")
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must lie in [0, 1], got {rate:g}")
        if self.method == "si-adaptive" and q != 1.0:
            raise ValueError(f"si-adaptive is SAP with (p, q) = (q_small, 1); got q={q:g} (use method='sap')")
        if self.method == "bound-optimal" and q > 1.0:
            raise ValueError(f"bound-optimal needs 0 < q <= 1 (s_j ∝ c_j^q, S7), got q={q:g}")
        for name, value in (("p", p), ("q", q), ("eta", eta), ("gamma", gamma), ("beta", beta), ("rate", rate)):
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        """Plain dict of the fields (for JSON records and run hashes)."""
        return dataclasses.asdict(self)


def si_adaptive_config(
    q: float = 0.5, c: float = 1.0, scope: str = "neuron", *, beta: float = 0.9, eta: float = 0.0
) -> PruneConfig:
    """SI-adaptive pruning [paper: the 2022 code]: SAP with ``(p, q) = (q, 1)`` and ``γ = c``.

    The paper's main setting is ``q = 0.5``; ablations ``q ∈ {0.2, 0.4, 0.5, 0.6, 0.8}``,
    ``c ∈ {1, 3, 5, 7, 9}``. With ``(p, 1)`` the retained count is ``r = ⌈d SI_p^(−p/(1−p))⌉``
    (``SI_p = 1/(1 − I_{p,1})``), e.g. ``⌈d / SI⌉`` at ``p = 1/2``.
    """
    return PruneConfig("si-adaptive", scope=scope, p=q, q=1.0, eta=eta, gamma=c, beta=beta)


def rate_prune_counts(alive: torch.Tensor, rate: float) -> torch.Tensor:
    """``round_half_to_even(rate · alive)`` in float64 as a LongTensor: the rate methods' per-unit count.

    Matches ``torch.nn.utils.prune``'s conversion of a float ``amount`` (``round(amount * n)``).
    """
    rate = check_real(rate, "rate")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must lie in [0, 1], got {rate:g}")
    return torch.round(alive.double() * rate).long()


# --------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------


class PruningMethod:
    """Shared machinery: view at the scope, per-unit counts, scores, one batched magnitude prune.

    A subclass sets :attr:`name` and overrides :meth:`counts` (how many alive entries each unit loses)
    and, when the ranking is not by the latest weights' magnitude, :meth:`scores`.
    """

    name: ClassVar[str] = ""
    needs_dense: ClassVar[bool] = False  # ranks by the dense trained weights (dense_weights required)

    def __init__(self, config: PruneConfig):
        if not isinstance(config, PruneConfig):
            raise TypeError(f"config must be a PruneConfig, got {type(config).__name__}")
        self.config = config

    def view_scope(self) -> str:
        """The scope whose units :meth:`counts` and :meth:`scores` see (the config's by default)."""
        return self.config.scope

    def counts(self, view: UnitView, *, coefficients=None) -> torch.Tensor:
        """Per-unit number of alive entries to remove, LongTensor ``(units,)``."""
        raise NotImplementedError

    def scores(self, view: UnitView, *, dense_view: UnitView | None, generator) -> list[torch.Tensor]:
        """Scores shaped like ``view.blocks``' values; the alive entries of smallest ``|score|`` go first."""
        return [values for values, _ in view.blocks]

    @torch.no_grad()
    def __call__(self, weights, mask: Mask, *, dense_weights=None, generator=None, coefficients=None) -> Mask:
        if self.needs_dense and dense_weights is None:
            raise ValueError(
                f"{self.name} ranks weights by the dense trained model: pass dense_weights= "
                "(the weights trained before any pruning)"
            )
        scope = self.view_scope()
        view = unit_view(weights, scope, mask)
        dense_view = None
        if self.needs_dense:
            dense_view = unit_view(dense_weights, scope, mask)
            if dense_view.layer.device != view.layer.device:
                raise ValueError("dense_weights and weights live on different devices")
        n_prune = view.split_units(self.counts(view, coefficients=coefficients))
        scores = self.scores(view, dense_view=dense_view, generator=generator)
        # One batched call per block of equal row width (a few per network, never one per neuron).
        keep = [magnitude_prune(s, n, mask=m) for s, n, (_, m) in zip(scores, n_prune, view.blocks, strict=True)]
        return Mask(view.blocks_to_dict(keep))


class SAP(PruningMethod):
    """SAP [paper: ICLR 2023 Algorithm 1]: each unit loses ``sap_prune_counts`` alive weights by magnitude.

    ``n = ⌊d · clamp(γ (1 − r/d), 0, β)⌋``, ``r = ⌈d (1+η)^(−q/(q−p)) (1 − I_{p,q})^(qp/(q−p))⌉`` over the
    unit's alive weights (the latest trained weights).
    """

    name = "sap"

    def counts(self, view, *, coefficients=None):
        c = self.config
        return view.per_unit(lambda values, mask: sap_prune_counts(values, c.p, c.q, c.eta, c.gamma, c.beta, mask=mask))


class SIAdaptive(SAP):
    """SI-adaptive [paper: 2022 code]: SAP with ``(p, q) = (q_small, 1)`` and ``γ = c``.

    See :func:`si_adaptive_config`.
    """

    name = "si-adaptive"


class _RateMethod(PruningMethod):
    def counts(self, view, *, coefficients=None):
        return rate_prune_counts(view.alive_counts(), self.config.rate)


class OneShot(_RateMethod):
    """One-Shot [paper]: ``rate`` of each unit's remaining weights, smallest magnitude in the *dense trained*
    weights (``dense_weights``), cumulative over steps."""

    name = "one-shot"
    needs_dense = True

    def scores(self, view, *, dense_view, generator):
        return [values for values, _ in dense_view.blocks]


class LotteryTicket(_RateMethod):
    """Lottery Ticket / iterative magnitude pruning [paper]: ``rate`` of each unit's remaining weights,
    smallest magnitude in the *latest retrained* weights."""

    name = "lottery-ticket"


class RandomPruning(_RateMethod):
    """Random pruning (sanity floor): ``rate`` of each unit's remaining weights, uniformly at random.

    Scores are ``torch.rand`` drawn from ``generator`` (on the generator's device; without one, from
    torch's global RNG on the weights' device), so a seeded CPU generator gives the same mask whatever
    device the weights live on.
    """

    name = "random"

    def scores(self, view, *, dense_view, generator):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        out = []
        for values, _ in view.blocks:  # drawn block by block, in the view's unit order
            if generator is None:
                out.append(torch.rand(values.shape, device=values.device))
            else:
                out.append(torch.rand(values.shape, generator=generator, device=generator.device).to(values.device))
        return out


class BoundOptimal(PruningMethod):
    """Bound-optimal budgets [derived: THEORY.md S7]: keep ``(1 − rate)`` of the remaining weights of each
    pool, split over its neurons as ``s_j ∝ c_j^q`` by water-filling, and keep each neuron's ``s_j``
    largest alive weights.

    Units are always neurons; the scope sets the pool: ``layer`` — each tensor keeps
    ``alive − round(rate · alive)`` of its weights; ``global`` — the whole network does; ``neuron`` — each
    neuron is its own pool, so the rule coincides with Lottery Ticket at neuron scope. Budgets come from
    :func:`lqtheory.theory.bounds.allocate_budgets` with ``upper = d_j`` (alive count) and ``lower = 1`` for
    neurons with alive weights (``lower = 0`` for all if the pool keeps fewer weights than it has
    live neurons). ``c_j = ||W[j]||_q`` over alive weights unless ``coefficients`` (``{name: (rows,)}``
    tensors ``>= 0``, e.g. the S4 coefficients) are given.
    """

    name = "bound-optimal"

    def view_scope(self):
        return "neuron"

    def _coefficients(self, view: UnitView, coefficients) -> torch.Tensor:
        if coefficients is None:
            return view.per_unit(lambda values, mask: lq_norm(values.double(), self.config.q, mask=mask))
        if not isinstance(coefficients, Mapping):
            raise TypeError(
                f"coefficients must be a mapping name -> per-neuron tensor, got {type(coefficients).__name__}"
            )
        parts = []
        for name, shape in zip(view.names, view.shapes, strict=True):
            if name not in coefficients:
                raise ValueError(f"coefficients has no entry for {name!r}")
            c = coefficients[name]
            rows = shape[0] if len(shape) > 1 else 1
            if not isinstance(c, torch.Tensor) or c.numel() != rows:
                raise ValueError(f"coefficients[{name!r}] must be a tensor with one value per neuron ({rows})")
            parts.append(c.reshape(-1).double().to(view.layer.device))
        c = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=view.layer.device)
        if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
            raise ValueError("coefficients must be finite and >= 0")
        return c

    def counts(self, view, *, coefficients=None):
        d = view.alive_counts()
        if self.config.scope == "neuron":
            return rate_prune_counts(d, self.config.rate)
        c = self._coefficients(view, coefficients)
        if self.config.scope == "global":
            pools = [torch.arange(d.numel(), device=d.device)]
        else:  # a loop over layers (few), never over neurons
            pools = [torch.nonzero(view.layer == i).flatten() for i in range(len(view.names))]
        keep = torch.zeros_like(d)
        for idx in pools:
            d_pool = d[idx]
            alive = int(d_pool.sum())
            total = alive - int(rate_prune_counts(torch.tensor(alive), self.config.rate))
            lower = (d_pool > 0).long()
            if int(lower.sum()) > total:
                lower = torch.zeros_like(lower)
            if idx.numel():
                keep[idx] = allocate_budgets(c[idx].cpu(), total, self.config.q, lower.cpu(), d_pool.cpu()).to(d.device)
        return d - keep


class Control(PruningMethod):
    """The control of every experiment: the same prune → rewind → retrain schedule with nothing pruned.

    Its mask stays all-True, so each iteration rewinds to ``w_init`` and retrains the dense model for the
    same number of epochs as the pruned runs. Pruning effects are reported against it (see
    :mod:`lqtheory.analysis.comparison`), so extra training can never pose as "pruning helps". Its pruning
    hyper-parameters (scope, p, q, rate, ...) have no effect.
    """

    name = "control"

    def counts(self, view, *, coefficients=None):
        return torch.zeros_like(view.alive_counts())


METHODS: dict[str, type[PruningMethod]] = {
    cls.name: cls for cls in (SAP, SIAdaptive, OneShot, LotteryTicket, RandomPruning, BoundOptimal, Control)
}


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def prune_step(
    weights: Mapping[str, torch.Tensor],
    mask: Mask,
    config: PruneConfig,
    *,
    dense_weights: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    coefficients: Mapping[str, torch.Tensor] | None = None,
) -> Mask:
    """One pruning step: the NEW cumulative mask (alive set ⊆ ``mask``'s; nothing is revived).

    ``weights``: the latest trained weights by name (extra entries such as biases are ignored; every
    name of ``mask`` must be present with the same shape). ``mask``: the current :class:`Mask` (or a
    dict of bool tensors); its names are the tensors pruned. ``config``: a :class:`PruneConfig`.
    ``dense_weights``: the dense trained weights, required by ``one-shot`` (ValueError if missing).
    ``generator``: the ``torch.Generator`` of ``random`` (global RNG if None). ``coefficients``:
    optional per-neuron ``c_j`` for ``bound-optimal``. Pure: no model is touched; the result lives on
    the weights' device.
    """
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config must be a PruneConfig, got {type(config).__name__}")
    if not isinstance(mask, Mask):
        if not isinstance(mask, Mapping):
            raise TypeError(f"mask must be a Mask or a mapping name -> bool tensor, got {type(mask).__name__}")
        mask = Mask(mask)
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping name -> tensor, got {type(weights).__name__}")
    if dense_weights is not None and not isinstance(dense_weights, Mapping):
        raise TypeError(f"dense_weights must be a mapping name -> tensor, got {type(dense_weights).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return METHODS[config.method](config)(
        weights, mask, dense_weights=dense_weights, generator=generator, coefficients=coefficients
    )


# --------------------------------------------------------------------------------------------------
# Statistics for the experiment recorder
# --------------------------------------------------------------------------------------------------


def _scope_stats(view: UnitView, p: float, q: float, si_q: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    per_block = []
    for values, mask in view.blocks:
        v = values.double()  # one float64 copy per block for the three indices
        per_block.append((pq_index(v, p, q, mask=mask), sparsity_index(v, si_q, mask=mask), gini_index(v, mask=mask)))
    stats = {key: torch.cat([part[i] for part in per_block]) for i, key in enumerate(("pqi", "si", "gini"))}
    return stats, view.alive_counts() > 0


_DEGENERATE = {"pqi": 0.0, "si": 1.0, "gini": 0.0}


def _means(stats, live, groups, n_groups):
    """Per-group means over live units; groups without live units get the degenerate values."""
    weight = live.double()
    n = torch.zeros(n_groups, dtype=torch.float64, device=weight.device).index_add_(0, groups, weight)
    out = {}
    for key, value in stats.items():
        total = torch.zeros_like(n).index_add_(0, groups, value * weight)
        out[key] = torch.where(n > 0, total / n.clamp_min(1), torch.full_like(n, _DEGENERATE[key]))
    return out, n


@torch.no_grad()
def unit_statistics(
    weights: Mapping[str, torch.Tensor],
    mask,
    scope: str = "neuron",
    p: float = 0.5,
    q: float = 1.0,
    si_q: float = 0.5,
) -> dict:
    """Mean PQ Index ``I_{p,q}``, sparsity index ``SI_{si_q}`` and Gini over the units of a scope [paper].

    Returns ``{"layers": {name: stats}, "global": stats}`` with ``stats = {"pqi", "si", "gini", "units"}``
    (Python floats; ``units`` = number of units averaged). Each index is computed over the alive
    weights of a unit (``mask``; None = all alive). At ``neuron`` scope a layer's entry is the mean over
    its neurons and ``global`` the mean over all neurons of the network; at ``layer`` scope a layer's
    entry is that tensor as one unit and ``global`` the mean over layers; at ``global`` scope a layer's
    entry is again the tensor as one unit and ``global`` is the index of all tensors concatenated.
    Units with no alive weight are left out of the means; a group with none reports the degenerate
    values PQI 0, SI 1, Gini 0 (the ``lqtheory.theory.norms`` convention) and ``units`` 0.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    view = unit_view(weights, "neuron" if scope == "neuron" else "layer", mask)
    stats, live = _scope_stats(view, p, q, si_q)
    layer_means, layer_n = _means(stats, live, view.layer, len(view.names))
    if scope == "global":
        gview = unit_view(weights, "global", mask)
        gstats, glive = _scope_stats(gview, p, q, si_q)
        global_means, global_n = _means(gstats, glive, torch.zeros(1, dtype=torch.long, device=glive.device), 1)
    else:
        global_means, global_n = _means(stats, live, torch.zeros_like(view.layer), 1)

    def row(means, n, i):
        return {**{k: float(v[i]) for k, v in means.items()}, "units": int(n[i])}

    return {
        "layers": {name: row(layer_means, layer_n, i) for i, name in enumerate(view.names)},
        "global": row(global_means, global_n, 0),
    }


# --------------------------------------------------------------------------------------------------
# User-facing functions
# --------------------------------------------------------------------------------------------------


def sap(weights, mask, *, scope="neuron", p=0.5, q=1.0, eta=0.0, gamma=1.0, beta=0.9) -> Mask:
    """SAP step (see :class:`SAP`): ``prune_step`` with ``PruneConfig("sap", ...)``."""
    return prune_step(weights, mask, PruneConfig("sap", scope=scope, p=p, q=q, eta=eta, gamma=gamma, beta=beta))


def si_adaptive(weights, mask, *, scope="neuron", q=0.5, c=1.0, beta=0.9, eta=0.0) -> Mask:
    """SI-adaptive step (see :func:`si_adaptive_config`)."""
    return prune_step(weights, mask, si_adaptive_config(q, c, scope, beta=beta, eta=eta))


def one_shot(dense_weights, mask, *, scope="neuron", rate=0.2) -> Mask:
    """One-Shot step: ``rate`` of the remaining weights by the dense trained weights' magnitude."""
    return prune_step(dense_weights, mask, PruneConfig("one-shot", scope=scope, rate=rate), dense_weights=dense_weights)


def lottery_ticket(weights, mask, *, scope="neuron", rate=0.2) -> Mask:
    """Lottery Ticket (iterative magnitude) step: ``rate`` of the remaining weights by the latest magnitude."""
    return prune_step(weights, mask, PruneConfig("lottery-ticket", scope=scope, rate=rate))


def random_prune(weights, mask, *, scope="neuron", rate=0.2, generator=None) -> Mask:
    """Random step: ``rate`` of the remaining weights, uniformly at random (``generator`` for reproducibility)."""
    return prune_step(weights, mask, PruneConfig("random", scope=scope, rate=rate), generator=generator)


def bound_optimal(weights, mask, *, scope="layer", rate=0.2, q=0.5, coefficients=None) -> Mask:
    """Bound-optimal step (see :class:`BoundOptimal`)."""
    config = PruneConfig("bound-optimal", scope=scope, q=q, rate=rate)
    return prune_step(weights, mask, config, coefficients=coefficients)
