"""Tests of lqtheory.engine.pruning: every method × scope against loop oracles, rounding rule, invariants.

The oracle builds the units of a scope by explicit loops over tensors and rows (not through
``unit_view``), counts with the stated rule per unit and keeps entries in the order (-|score|, position),
so the batched code path (blocks of equal row width) is checked against the definition.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_masks import oracle_magnitude_keep, oracle_pqi, oracle_sap_count
from torch import nn
from torch.nn.utils import prune

from lqtheory.engine.masks import SCOPES, Mask
from lqtheory.engine.pruning import (
    METHODS,
    PruneConfig,
    bound_optimal,
    lottery_ticket,
    one_shot,
    prune_step,
    random_prune,
    rate_prune_counts,
    sap,
    si_adaptive,
    si_adaptive_config,
    unit_statistics,
)
from lqtheory.theory.bounds import allocate_budgets

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HYP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------------
# Fixtures and oracles
# --------------------------------------------------------------------------------------------------


def make_weights(seed=0, ties=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def draw(*shape):
        if ties:
            return torch.randint(-3, 4, shape, generator=g).to(dtype)
        return (torch.randn(*shape, generator=g, dtype=torch.float64) ** 3).to(dtype)  # heavy-ish tails

    return {
        "conv.weight": draw(4, 2, 3, 3),
        "conv.bias": draw(4),
        "fc.weight": draw(6, 10),
        "fc.bias": draw(6),
        "out.weight": draw(3, 6),
    }


def make_mask(weights, seed=0, frac=0.8):
    g = torch.Generator().manual_seed(seed + 1000)
    return Mask({k: torch.rand(v.shape, generator=g) < frac for k, v in weights.items() if v.dim() > 1})


def oracle_units(mask: Mask, scope: str):
    """Units as lists of (name, flat index), by explicit loops."""
    units = []
    if scope == "global":
        units.append([(name, i) for name in mask for i in range(mask[name].numel())])
    for name in mask if scope != "global" else []:
        shape = mask[name].shape
        if scope == "layer":
            units.append([(name, i) for i in range(mask[name].numel())])
        else:
            width = math.prod(shape[1:])
            units.extend([(name, r * width + j) for j in range(width)] for r in range(shape[0]))
    return units


def oracle_prune(weights, mask: Mask, scope: str, count_rule, scores=None) -> dict[str, np.ndarray]:
    """New keep-masks: each unit loses ``count_rule(alive |w| values)`` entries of smallest |score|."""
    scores = weights if scores is None else scores
    flat_w = {k: weights[k].double().flatten().numpy() for k in mask}
    flat_s = {k: scores[k].double().flatten().numpy() for k in mask}
    flat_m = {k: mask[k].flatten().numpy() for k in mask}
    new = {k: np.zeros_like(v) for k, v in flat_m.items()}
    for unit in oracle_units(mask, scope):
        alive = np.array([flat_m[n][i] for n, i in unit], dtype=bool)
        w = np.array([flat_w[n][i] for n, i in unit])
        s = np.array([flat_s[n][i] for n, i in unit])
        n_prune = count_rule(np.abs(w[alive]))
        keep = oracle_magnitude_keep(s, alive, n_prune)
        for (name, i), k in zip(unit, keep, strict=True):
            new[name][i] = k
    return {k: v.reshape(mask[k].shape) for k, v in new.items()}


def assert_mask_equals(got: Mask, expected: dict[str, np.ndarray]):
    assert list(got) == list(expected)
    for k in expected:
        assert got[k].cpu().numpy().tolist() == expected[k].tolist(), k


def removed_per_unit(old: Mask, new: Mask, scope: str):
    """(alive before, removed) per unit, by explicit loops."""
    out = []
    for unit in oracle_units(old, scope):
        before = sum(bool(old[n].flatten()[i]) for n, i in unit)
        after = sum(bool(new[n].flatten()[i]) for n, i in unit)
        out.append((before, before - after))
    return out


# --------------------------------------------------------------------------------------------------
# PruneConfig
# --------------------------------------------------------------------------------------------------


def test_config_defaults_and_registry():
    assert set(METHODS) == {"sap", "si-adaptive", "one-shot", "lottery-ticket", "random", "bound-optimal", "control"}
    c = PruneConfig("sap")
    assert (c.scope, c.p, c.q, c.eta, c.gamma, c.beta, c.rate) == ("neuron", 0.5, 1.0, 0.0, 1.0, 0.9, 0.2)
    assert PruneConfig("sap", q=2, gamma=3) == PruneConfig("sap", q=2.0, gamma=3.0)
    assert isinstance(PruneConfig("sap", q=2).q, float)
    assert hash(PruneConfig("one-shot", rate=0.2)) == hash(PruneConfig("one-shot", rate=0.2))
    assert PruneConfig("random", scope="global").to_dict()["scope"] == "global"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rate = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"method": "magnitude"}, ValueError, "sap, si-adaptive, one-shot, lottery-ticket, random, bound-optimal"),
        ({"method": "sap", "scope": "row"}, ValueError, "neuron, layer, global"),
        ({"method": "sap", "p": 1.0, "q": 1.0}, ValueError, "p must be smaller"),
        ({"method": "sap", "p": 2.0, "q": 1.0}, ValueError, "p must be smaller"),
        ({"method": "sap", "p": 0.0}, ValueError, "p must lie"),
        ({"method": "sap", "eta": -0.1}, ValueError, "eta"),
        ({"method": "sap", "gamma": 0.0}, ValueError, "gamma"),
        ({"method": "sap", "beta": 1.1}, ValueError, "beta"),
        ({"method": "one-shot", "rate": 1.5}, ValueError, "rate"),
        ({"method": "one-shot", "rate": -0.1}, ValueError, "rate"),
        ({"method": "one-shot", "rate": "0.2"}, TypeError, "rate"),
        ({"method": "sap", "gamma": float("inf")}, ValueError, "gamma"),
        ({"method": "si-adaptive", "p": 0.5, "q": 2.0}, ValueError, "si-adaptive"),
        ({"method": "bound-optimal", "p": 0.5, "q": 2.0}, ValueError, "bound-optimal"),
        ({"method": "si-adaptive", "p": 1.0, "q": 1.0}, ValueError, "p must be smaller"),
    ],
)
def test_config_validation(kwargs, err, match):
    with pytest.raises(err, match=match):
        PruneConfig(**kwargs)


def test_p_is_only_constrained_for_the_pq_index_methods():
    assert PruneConfig("bound-optimal", q=0.5).q == 0.5  # p = 0.5 is unused here
    assert PruneConfig("one-shot", p=2.0, q=1.0).p == 2.0
    with pytest.raises(ValueError, match="p must lie"):
        PruneConfig("one-shot", p=-1.0)


def test_si_adaptive_config_is_sap_preset():
    c = si_adaptive_config(q=0.4, c=3.0, scope="layer")
    assert (c.method, c.scope, c.p, c.q, c.gamma, c.beta, c.eta) == ("si-adaptive", "layer", 0.4, 1.0, 3.0, 0.9, 0.0)
    w = make_weights(3)
    mask = make_mask(w, 3)
    as_sap = prune_step(w, mask, PruneConfig("sap", scope="layer", p=0.4, q=1.0, gamma=3.0))
    assert prune_step(w, mask, c) == as_sap
    assert si_adaptive(w, mask, scope="layer", q=0.4, c=3.0) == as_sap


# --------------------------------------------------------------------------------------------------
# Rounding rule of the rate methods
# --------------------------------------------------------------------------------------------------


def test_rate_rounding_rule_is_round_half_even():
    alive = torch.arange(0, 200)
    for rate in (0.2, 0.5, 0.3, 0.05, 1.0, 0.0):
        assert rate_prune_counts(alive, rate).tolist() == [round(rate * a) for a in range(200)]
    # documented examples
    assert rate_prune_counts(torch.tensor([10, 12, 2, 3]), 0.2).tolist() == [2, 2, 0, 1]
    assert rate_prune_counts(torch.tensor([5, 7]), 0.5).tolist() == [2, 4]  # 2.5 -> 2, 3.5 -> 4
    with pytest.raises(ValueError, match="rate"):
        rate_prune_counts(alive, 1.2)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_lottery_ticket_matches_torch_prune_iterations(scope):
    """At layer/global scope our L1 rule must equal torch's l1_unstructured / global_unstructured."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 11), nn.ReLU(), nn.Linear(11, 7))
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = Mask.ones_like(model)
    for _ in range(6):
        mask = lottery_ticket(weights, mask, scope=scope, rate=0.2)
        if scope == "layer":
            for module in (model[0], model[2]):
                prune.l1_unstructured(module, "weight", amount=0.2)
        else:
            prune.global_unstructured(
                [(model[0], "weight"), (model[2], "weight")], pruning_method=prune.L1Unstructured, amount=0.2
            )
        assert mask == Mask.from_torch_prune(model)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method", ["one-shot", "lottery-ticket", "random"])
def test_rate_methods_remove_exactly_the_stated_fraction_of_remaining(method, scope):
    g = torch.Generator().manual_seed(7)
    dense = make_weights(1)
    weights = dict(dense)
    mask = Mask.ones_like(dense)
    config = PruneConfig(method, scope=scope, rate=0.2)
    for _ in range(6):
        new = prune_step(weights, mask, config, dense_weights=dense, generator=g)
        assert new.issubset(mask)
        for before, removed in removed_per_unit(mask, new, scope):
            assert removed == round(0.2 * before)
        mask = new
        weights = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in weights.items()}  # "retraining"
    assert mask.count_alive() < 0.5 * mask.count_total()


def test_one_shot_ranks_by_dense_and_lottery_ticket_by_latest():
    dense = make_weights(2)
    # latest weights rank the other way round: 1/|w|
    latest = {k: 1.0 / (v.abs() + 0.1) for k, v in dense.items()}
    mask = make_mask(dense, 2)
    for scope in SCOPES:
        os_mask = prune_step(latest, mask, PruneConfig("one-shot", scope=scope), dense_weights=dense)
        lt_dense = prune_step(dense, mask, PruneConfig("lottery-ticket", scope=scope))
        lt_latest = prune_step(latest, mask, PruneConfig("lottery-ticket", scope=scope))
        assert os_mask == lt_dense and os_mask != lt_latest
        assert one_shot(dense, mask, scope=scope) == os_mask
        expected = oracle_prune(latest, mask, scope, lambda a: round(0.2 * a.size), scores=dense)
        assert_mask_equals(os_mask, expected)
    with pytest.raises(ValueError, match="dense_weights"):
        prune_step(latest, mask, PruneConfig("one-shot"))


# --------------------------------------------------------------------------------------------------
# Every method × scope against the loop oracle
# --------------------------------------------------------------------------------------------------


def _count_rule(config):
    if config.method in ("sap", "si-adaptive"):
        return lambda a: oracle_sap_count(a, config.p, config.q, config.eta, config.gamma, config.beta)
    return lambda a: round(config.rate * a.size)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(
    "config",
    [
        PruneConfig("sap"),
        PruneConfig("sap", p=1.0, q=2.0, gamma=2.0, beta=0.7, eta=0.1),
        PruneConfig("si-adaptive", p=0.5, q=1.0, gamma=3.0),
        PruneConfig("lottery-ticket", rate=0.35),
    ],
    ids=lambda c: f"{c.method}-p{c.p}-q{c.q}-g{c.gamma}",
)
def test_deterministic_methods_match_oracle(config, scope, ties):
    config = dataclasses.replace(config, scope=scope)
    weights = make_weights(4, ties=ties)
    mask = make_mask(weights, 4)
    got = prune_step(weights, mask, config)
    assert got.issubset(mask)
    assert_mask_equals(got, oracle_prune(weights, mask, scope, _count_rule(config)))


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_and_scope_returns_valid_cumulative_mask(method, scope):
    weights = make_weights(5)
    dense = make_weights(6)
    mask = make_mask(weights, 5)
    q = 0.5 if method == "bound-optimal" else 1.0
    config = PruneConfig(method, scope=scope, q=q, rate=0.3)
    new = prune_step(weights, mask, config, dense_weights=dense, generator=torch.Generator().manual_seed(0))
    assert isinstance(new, Mask) and list(new) == list(mask)
    assert all(new[k].shape == mask[k].shape and new[k].dtype == torch.bool for k in mask)
    if method == "control":  # the schedule without pruning: the mask is returned unchanged
        assert new == mask
    else:
        assert new.issubset(mask) and new.count_alive() < mask.count_alive()
    if method not in ("sap", "si-adaptive", "control") and scope == "global":
        assert mask.count_alive() - new.count_alive() == round(0.3 * mask.count_alive())
    # inputs untouched (pure)
    assert torch.equal(weights["fc.weight"], make_weights(5)["fc.weight"])
    assert mask == make_mask(weights, 5)


def test_pruned_weights_never_revive_even_if_large():
    weights = make_weights(8)
    mask = make_mask(weights, 8, frac=0.5)
    huge = {k: torch.where(mask[k], v, torch.full_like(v, 1e6)) if k in mask else v for k, v in weights.items()}
    for method in METHODS:
        for scope in SCOPES:
            q = 0.5 if method == "bound-optimal" else 1.0
            new = prune_step(huge, mask, PruneConfig(method, scope=scope, q=q), dense_weights=huge)
            assert new.issubset(mask), (method, scope)


@HYP
@given(
    seed=st.integers(0, 2**31 - 1),
    scope=st.sampled_from(SCOPES),
    pq=st.sampled_from([(0.5, 1.0), (1.0, 2.0), (0.2, 1.0)]),
    beta=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
    eta=st.sampled_from([0.0, 0.2]),
    frac=st.sampled_from([0.1, 0.5, 1.0]),
)
def test_sap_gamma_one_never_removes_more_than_beta_of_a_unit(seed, scope, pq, beta, eta, frac):
    weights = make_weights(seed % 1000, ties=seed % 3 == 0)
    mask = make_mask(weights, seed, frac=frac)
    new = sap(weights, mask, scope=scope, p=pq[0], q=pq[1], gamma=1.0, beta=beta, eta=eta)
    for before, removed in removed_per_unit(mask, new, scope):
        assert 0 <= removed <= math.floor(beta * before + 1e-9)


# --------------------------------------------------------------------------------------------------
# Random
# --------------------------------------------------------------------------------------------------


def test_random_is_seeded_and_roughly_uniform():
    weights = {"w": torch.zeros(1, 50)}  # magnitudes carry no information
    mask = Mask({"w": torch.ones(1, 50, dtype=torch.bool)})
    a = random_prune(weights, mask, rate=0.2, generator=torch.Generator().manual_seed(1))
    b = random_prune(weights, mask, rate=0.2, generator=torch.Generator().manual_seed(1))
    c = random_prune(weights, mask, rate=0.2, generator=torch.Generator().manual_seed(2))
    assert a == b and a != c
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(50)
    for _ in range(400):
        hits += (~random_prune(weights, mask, rate=0.2, generator=g)["w"][0]).float()
    # each entry is removed with probability 10/50 = 0.2; 400 draws: sd ≈ 8, allow ±5 sd
    assert bool(((hits - 80).abs() < 40).all())
    with pytest.raises(TypeError, match="generator"):
        prune_step(weights, mask, PruneConfig("random"), generator=0)


# --------------------------------------------------------------------------------------------------
# Bound-optimal
# --------------------------------------------------------------------------------------------------


def _oracle_c(weights, mask, q):
    """Per-neuron ||W[j]||_q over alive weights, by loops, in unit order."""
    out = []
    for name in mask:
        w = weights[name].double().reshape(weights[name].shape[0], -1).numpy()
        m = mask[name].reshape(mask[name].shape[0], -1).numpy()
        for r in range(w.shape[0]):
            a = np.abs(w[r][m[r]])
            out.append(math.fsum(float(x) ** q for x in a) ** (1 / q) if a.size else 0.0)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_bound_optimal_keeps_exactly_the_requested_total(scope, rate):
    weights = make_weights(9)
    mask = make_mask(weights, 9)
    new = bound_optimal(weights, mask, scope=scope, rate=rate, q=0.5)
    assert new.issubset(mask)
    units = oracle_units(mask, "neuron")
    d = [sum(bool(mask[n].flatten()[i]) for n, i in u) for u in units]
    kept = [sum(bool(new[n].flatten()[i]) for n, i in u) for u in units]
    layer_of = [u[0][0] for u in units]
    if scope == "global":
        pools = {"all": list(range(len(units)))}
    elif scope == "layer":
        pools = {name: [j for j, n in enumerate(layer_of) if n == name] for name in mask}
    else:
        pools = {j: [j] for j in range(len(units))}
    c = _oracle_c(weights, mask, 0.5)
    for idx in pools.values():
        alive = sum(d[j] for j in idx)
        total = alive - round(rate * alive)
        assert sum(kept[j] for j in idx) == total
        if scope != "neuron":
            lower = [1 if d[j] > 0 else 0 for j in idx]
            with_floor = sum(lower) <= total
            if not with_floor:
                lower = [0] * len(idx)
            budget = allocate_budgets(
                c[idx], total, 0.5, torch.tensor(lower), torch.tensor([d[j] for j in idx])
            ).tolist()
            assert [kept[j] for j in idx] == budget
            if with_floor:  # every live neuron keeps at least one weight
                assert all(kept[j] >= 1 for j in idx if d[j] > 0)
    # each neuron keeps its largest alive weights
    for j, u in enumerate(units):
        w = np.array([weights[n].flatten()[i].item() for n, i in u])
        alive = np.array([bool(mask[n].flatten()[i]) for n, i in u])
        keep = oracle_magnitude_keep(w, alive, d[j] - kept[j])
        assert [bool(new[n].flatten()[i]) for n, i in u] == keep.tolist()


def test_bound_optimal_favours_large_coefficients_and_accepts_custom_ones():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 30, generator=g)
    w[0] *= 10.0  # neuron 0 has a much larger lq norm
    weights = {"fc.weight": w}
    mask = Mask.ones_like(weights)
    new = bound_optimal(weights, mask, scope="layer", rate=0.6, q=0.5)
    kept = new["fc.weight"].sum(1)
    assert int(kept.sum()) == 120 - round(0.6 * 120)
    assert int(kept[0]) == int(kept.max()) and int(kept[0]) > int(kept[1:].max())
    # custom coefficients steer the budgets: put everything on neuron 3
    # custom coefficients steer the budgets: neuron 3 fills up to its 30 weights, the other 18 are spread
    # evenly over the zero-coefficient neurons (the objective cannot tell them apart)
    coeff = {"fc.weight": torch.tensor([0.0, 0.0, 0.0, 1.0])}
    custom = bound_optimal(weights, mask, scope="layer", rate=0.6, q=0.5, coefficients=coeff)
    assert custom["fc.weight"].sum(1).tolist() == [6, 6, 6, 30]
    coeff = {"fc.weight": torch.tensor([0.0, 1.0, 0.0, 0.0])}
    custom = bound_optimal(weights, mask, scope="layer", rate=0.9, q=0.5, coefficients=coeff)
    assert custom["fc.weight"].sum(1).tolist() == [1, 9, 1, 1]
    with pytest.raises(ValueError, match="one value per neuron"):
        bound_optimal(weights, mask, scope="layer", coefficients={"fc.weight": torch.ones(3)})
    with pytest.raises(ValueError, match="no entry"):
        bound_optimal(weights, mask, scope="layer", coefficients={})
    with pytest.raises(ValueError, match=">= 0"):
        bound_optimal(weights, mask, scope="layer", coefficients={"fc.weight": -torch.ones(4)})


def test_bound_optimal_drops_lower_bound_when_pool_is_tiny():
    weights = {"fc.weight": torch.randn(6, 4, generator=torch.Generator().manual_seed(1))}
    mask = Mask({"fc.weight": torch.eye(6, 4, dtype=torch.bool) | torch.eye(6, 4, dtype=torch.bool).roll(1, 1)})
    alive = mask.count_alive()  # 8 weights over 6 neurons (rows 4, 5 are empty)
    new = bound_optimal(weights, mask, scope="global", rate=0.9, q=0.5)
    assert new.count_alive() == alive - round(0.9 * alive) == 1


# --------------------------------------------------------------------------------------------------
# prune_step validation
# --------------------------------------------------------------------------------------------------


def test_prune_step_validation():
    weights = make_weights(0)
    mask = make_mask(weights, 0)
    with pytest.raises(TypeError, match="config"):
        prune_step(weights, mask, {"method": "sap"})
    with pytest.raises(TypeError, match="mask"):
        prune_step(weights, [1, 2], PruneConfig("sap"))
    with pytest.raises(TypeError, match="weights"):
        prune_step([1], mask, PruneConfig("sap"))
    with pytest.raises(ValueError, match="no tensor of that name"):
        prune_step({"fc.weight": weights["fc.weight"]}, mask, PruneConfig("sap"))
    bad = dict(weights)
    bad["fc.weight"] = torch.randn(6, 9)
    with pytest.raises(ValueError, match="shape"):
        prune_step(bad, mask, PruneConfig("sap"))
    with pytest.raises(TypeError, match="dense_weights"):
        prune_step(weights, mask, PruneConfig("one-shot"), dense_weights=[1])
    # a plain dict of bool tensors is accepted as a mask
    assert prune_step(weights, dict(mask), PruneConfig("sap")) == prune_step(weights, mask, PruneConfig("sap"))


def test_prune_step_works_with_parameters_and_no_grad_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    params = dict(model.named_parameters())
    mask = Mask.ones_like(model)
    new = prune_step(params, mask, PruneConfig("sap", scope="global"))
    assert all(not m.requires_grad for m in new.values())
    assert new.count_alive() < mask.count_alive()


# --------------------------------------------------------------------------------------------------
# unit_statistics
# --------------------------------------------------------------------------------------------------


def _oracle_gini(a):
    a = np.sort(np.abs(a))
    n = a.size
    if n == 0 or a.sum() == 0:
        return 0.0
    return math.fsum((2 * (k + 1) - n - 1) * a[k] for k in range(n)) / (n * math.fsum(a))


def _oracle_stats(a, p, q, si_q):
    si = 1.0 / (1.0 - oracle_pqi(a, si_q, 1.0))
    return {"pqi": oracle_pqi(a, p, q), "si": si, "gini": _oracle_gini(a)}


@pytest.mark.parametrize("scope", SCOPES)
def test_unit_statistics_match_loop_oracle(scope):
    weights = make_weights(11)
    mask = make_mask(weights, 11, frac=0.7)
    # kill one neuron entirely: it must be left out of the means
    killed = mask["fc.weight"].clone()
    killed[2] = False
    mask = Mask({**mask, "fc.weight": killed})
    got = unit_statistics(weights, mask, scope, p=0.5, q=1.0, si_q=0.5)
    assert set(got["layers"]) == set(mask)

    def alive_values(units):
        return [
            np.abs(np.array([weights[n].flatten()[i].item() for n, i in u if bool(mask[n].flatten()[i])]))
            for u in units
        ]

    layer_scope = "neuron" if scope == "neuron" else "layer"
    all_units = []
    for name in mask:
        units = [u for u in oracle_units(mask, layer_scope) if u[0][0] == name]
        values = [a for a in alive_values(units) if a.size]
        all_units += values
        for key in ("pqi", "si", "gini"):
            expected = np.mean([_oracle_stats(a, 0.5, 1.0, 0.5)[key] for a in values])
            assert got["layers"][name][key] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert got["layers"][name]["units"] == len(values)
    if scope == "global":
        (flat,) = alive_values(oracle_units(mask, "global"))
        expected_global = _oracle_stats(flat, 0.5, 1.0, 0.5)
        assert got["global"]["units"] == 1
    else:
        expected_global = {
            k: np.mean([_oracle_stats(a, 0.5, 1.0, 0.5)[k] for a in all_units]) for k in ("pqi", "si", "gini")
        }
        assert got["global"]["units"] == len(all_units)
    for key in ("pqi", "si", "gini"):
        assert got["global"][key] == pytest.approx(expected_global[key], rel=1e-9, abs=1e-12)
    if scope == "neuron":
        assert got["layers"]["fc.weight"]["units"] == 5


def test_unit_statistics_degenerate_group_and_validation():
    weights = {"a.weight": torch.randn(3, 4), "b.weight": torch.randn(2, 2)}
    mask = Mask({"a.weight": torch.ones(3, 4, dtype=torch.bool), "b.weight": torch.zeros(2, 2, dtype=torch.bool)})
    got = unit_statistics(weights, mask, "neuron")
    assert got["layers"]["b.weight"] == {"pqi": 0.0, "si": 1.0, "gini": 0.0, "units": 0}
    assert got["global"]["units"] == 3
    assert unit_statistics(weights, None, "layer")["global"]["units"] == 2
    with pytest.raises(ValueError, match="scope"):
        unit_statistics(weights, mask, "row")


# --------------------------------------------------------------------------------------------------
# CUDA agreement
# --------------------------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("scope", SCOPES)
def test_cpu_cuda_agreement(scope):
    weights = make_weights(12, ties=True)
    mask = make_mask(weights, 12)
    gpu_w = {k: v.cuda() for k, v in weights.items()}
    for method in METHODS:
        q = 0.5 if method == "bound-optimal" else 1.0
        config = PruneConfig(method, scope=scope, q=q)
        cpu = prune_step(weights, mask, config, dense_weights=weights, generator=torch.Generator().manual_seed(0))
        gpu = prune_step(
            gpu_w, mask.to("cuda"), config, dense_weights=gpu_w, generator=torch.Generator().manual_seed(0)
        )
        assert cpu == gpu, method
