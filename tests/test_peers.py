"""Peers in the profile (issue #21): WeightWatcher's metrics beside the lq indices, the one-shot
prunability, and every metric's rank correlation with it. WeightWatcher parts skip without `[peers]`."""

from __future__ import annotations

import pytest
import torch

from lqtheory.engine.models import build_model
from lqtheory.profiler import compare, profile
from lqtheory.profiler import peers as peers_mod
from lqtheory.profiler.cli import main as profile_main

HAVE_WW = peers_mod.peers_available()


def _mlp(seed: int, power: float):
    """Heavier-tailed weights for larger ``power``: more prunable by global magnitude."""
    torch.manual_seed(seed)
    m = build_model("mlp-32-1-2-relu", (1, 8, 8), 10)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.copy_(p.sign() * p.abs().pow(power) * 3**power)
    return m


@pytest.fixture(scope="module")
def family():
    x = torch.randn(96, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return [profile(_mlp(i, pw), x, label=f"m{i}") for i, pw in enumerate([1.0, 1.75, 2.5, 3.25])]


def test_one_shot_prunability_is_measured_on_a_grid(family):
    for p in family:
        r = p.prunability
        assert r["measure"] == "top1_disagreement" and r["tolerance"] == 0.01
        assert r["kept_fraction"] in peers_mod.PRUNABILITY_GRID or r["kept_fraction"] == 1.0
        within = [k for k, v in r["curve"] if v <= r["tolerance"]]
        assert r["kept_fraction"] == (min(within) if within else 1.0)
    # the heaviest-tailed model is the most prunable
    assert family[-1].prunability["kept_fraction"] < family[0].prunability["kept_fraction"]


def test_compare_ranks_by_every_metric_and_correlates_with_prunability(family):
    c = compare(family)
    for metric in ("m_over_d", "pqi_mean", "gini_global"):
        assert f"rank_{metric}" in c.ranks
    assert list(c.ranks.prunability_kept) == [p.prunability["kept_fraction"] for p in family]
    t = c.metrics.set_index("metric")
    from scipy.stats import spearmanr

    rho = spearmanr(c.ranks.m_over_d, c.ranks.prunability_kept).statistic
    assert t.loc["m_over_d", "spearman"] == pytest.approx(rho)
    assert (t.lo <= t.spearman + 1e-12).all() and (t.spearman <= t.hi + 1e-12).all()
    assert "one-shot prunability" in c.to_markdown()


@pytest.mark.skipif(not HAVE_WW, reason="needs the [peers] extra (weightwatcher)")
def test_profile_has_weightwatcher_metrics_per_layer(family):
    p = family[0]
    for k in peers_mod.PEER_METRICS:
        assert k in p.layers and f"{k}_mean" in p.peer_summary and f"{k}_mean" not in p.summary
    ww = peers_mod.weightwatcher_metrics(_mlp(0, 1.0), list(p.layers.layer))
    assert p.layers.alpha.tolist() == pytest.approx(ww.alpha.tolist())
    assert "alpha_mean" in set(compare(family).metrics.metric)


def test_without_the_extra_the_report_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(peers_mod, "peers_available", lambda: False)
    p = profile(_mlp(0, 1.0))
    assert "alpha" not in p.layers and any("pip install lqtheory[peers]" in n for n in p.notes)
    assert "pip install lqtheory[peers]" in p.to_markdown()
    path = tmp_path / "m.pt"
    torch.save(_mlp(0, 1.0), path)
    assert profile_main([str(path), "--trust-pickle"]) == 0
    assert "pip install lqtheory[peers]" in capsys.readouterr().out


def test_cli_prints_the_rank_correlations(tmp_path, capsys):
    paths = []
    for i, pw in enumerate([1.0, 2.0, 3.0, 4.0]):
        paths.append(tmp_path / f"m{i}.pt")
        torch.save(_mlp(i, pw), paths[-1])
    x = tmp_path / "x.pt"
    torch.save({"x": torch.randn(64, 1, 8, 8)}, x)
    assert profile_main([*map(str, paths), "--data", str(x), "--eps", "0.1", "--trust-pickle"]) == 0
    out = capsys.readouterr().out
    assert "rank correlation with the one-shot prunability" in out and "m_over_d" in out


def test_peers_can_be_skipped():
    x = torch.randn(32, 1, 8, 8)
    p = profile(_mlp(0, 1.0), x, eps=[0.1], peers=False)
    assert p.prunability is None and "alpha" not in p.layers
    assert not any("lqtheory[peers]" in n for n in p.notes)
