"""`lqtheory allocate` (issue #21): allocation rules, scores, evaluation, exports and the command line,
on small random models; WeightWatcher-dependent parts skip without the `[peers]` extra."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from lqtheory.allocation import RULES, allocate, allocate_rule
from lqtheory.allocation.cli import main as allocate_main
from lqtheory.allocation.exports import (
    apply_masks,
    llmcompressor_recipe,
    prune_masks,
    save_masks,
    torch_pruning_ratio_dict,
    torch_pruning_ratios,
)
from lqtheory.allocation.rules import OWL_LAMBDA, alphapruning_sparsities, exact_counts, owl_densities
from lqtheory.allocation.scores import magnitude_scores, wanda_scores
from lqtheory.engine.masks import unit_view
from lqtheory.engine.models import build_model
from lqtheory.profiler import masked_weights, profiled_weights
from lqtheory.profiler import peers as peers_mod
from lqtheory.theory.bounds import s4_objective
from lqtheory.theory.norms import lq_norm

HAVE_WW = peers_mod.peers_available()


def _random_weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (4, 3, 3, 3), (9, 11), (3, 20)]
    out = {}
    for i, shape in enumerate(shapes[: 2 + seed % 3]):
        w = torch.randn(shape, generator=g)
        if seed % 2:  # heavy tails in some layers
            w = w * torch.rand(shape, generator=g).pow(3) * 10
        out[f"l{i}.weight"] = w
    return out


def _fake_alpha(scores):
    return {n: 2.0 + i for i, n in enumerate(scores)}


@pytest.mark.parametrize("seed", range(8))
def test_every_rule_reaches_the_target_total_on_random_weights(seed):
    weights = _random_weights(seed)
    g = torch.Generator().manual_seed(100 + seed)
    scores = {"magnitude": magnitude_scores(weights),
              # a wanda-like score: magnitudes times random positive column norms
              "wanda": {n: w.abs().double() * torch.rand(w.reshape(w.shape[0], -1).shape[1], generator=g)
                        .double().add(0.1).reshape(1, *w.shape[1:]) for n, w in weights.items()}}
    view = unit_view(weights)
    units = view.units
    for sparsity in (float(torch.rand(1, generator=g)) * 0.98 + 0.01, 0.5, 0.9):
        for score, s in scores.items():
            for rule in RULES:
                a = allocate_rule(rule, score, s, sparsity, alpha=_fake_alpha(s))
                n = int(a.d.sum())
                target = round((1 - sparsity) * n)
                assert abs(int(a.keep.sum()) - target) <= units, (rule, score, sparsity)
                assert int(a.keep.sum()) == target, (rule, score, sparsity)  # exact, stronger than the tolerance
                assert bool((a.keep >= 0).all() and (a.keep <= a.d).all())
                kept_rows = torch.cat([a.masks[k].reshape(a.masks[k].shape[0], -1).sum(1) for k in a.names])
                assert torch.equal(kept_rows, a.keep), (rule, score)


def test_masks_keep_the_largest_scores_of_each_row():
    weights = _random_weights(3)
    s = magnitude_scores(weights)
    a = allocate_rule("s7", "magnitude", s, 0.6)
    for name, m in a.masks.items():
        rows = s[name].reshape(m.shape[0], -1)
        mm = m.reshape(m.shape[0], -1)
        kept_min = rows.masked_fill(~mm, float("inf")).min(1).values
        dropped_max = rows.masked_fill(mm, float("-inf")).max(1).values
        assert bool((kept_min >= dropped_max).all())


def test_exact_rule_keeps_every_unit_within_its_eps():
    weights = _random_weights(5)
    s = magnitude_scores(weights)
    view = unit_view(s)
    prev_eps = -1.0
    for kept in (0.8, 0.5, 0.2):  # less kept -> a larger eps
        target = round(kept * view.units * 0 + kept * int(view.alive_counts().sum()))
        keep, eps = exact_counts(view, target)
        assert int(keep.sum()) == target
        assert eps > prev_eps
        prev_eps = eps
        for (v, _), k in zip(view.blocks, view.split_units(keep), strict=True):
            mags = v.abs().double().sort(-1, descending=True).values
            tail = mags.sum(-1) - mags.cumsum(-1).gather(1, (k - 1).clamp_min(0).unsqueeze(1)).squeeze(1) * (k > 0)
            assert bool((tail <= eps * mags.sum(-1) * (1 + 1e-9)).all())


def test_s7_is_never_worse_than_uniform_rows_on_its_objective():
    weights = _random_weights(1)
    s = magnitude_scores(weights)
    c = unit_view(s).per_unit(lambda v, m: lq_norm(v.double(), 0.5, mask=m))
    for sp in (0.5, 0.8):
        s7 = allocate_rule("s7", "magnitude", s, sp).keep
        uni = allocate_rule("uniform-row", "magnitude", s, sp).keep
        assert float(s4_objective(c, s7.double(), 0.5)) <= float(s4_objective(c, uni.double(), 0.5)) + 1e-9


def test_sap_rule_scales_sap_retained_counts():
    weights = {"a.weight": torch.cat([torch.randn(4, 50), torch.randn(4, 50).pow(5)])}
    s = magnitude_scores(weights)
    a = allocate_rule("sap", "magnitude", s, 0.5)
    assert int(a.keep[4:].sum()) < int(a.keep[:4].sum())  # heavy-tailed rows: SAP retains fewer


def test_owl_gives_outlier_layers_lower_sparsity_within_lambda():
    torch.manual_seed(0)
    weights = {f"l{i}.weight": torch.randn(20, 20) for i in range(4)}
    weights["l2.weight"][:, :3] *= 40  # a layer full of outliers
    s = magnitude_scores(weights)
    view = unit_view(s)
    dens = owl_densities(s, view, 0.7)
    assert float(dens.mean()) == pytest.approx(0.3)
    assert float(dens.max() - dens.min()) == pytest.approx(2 * OWL_LAMBDA)
    a = allocate_rule("owl", "magnitude", s, 0.7)
    sp = a.layer_sparsity()
    assert sp["l2.weight"] == min(sp.values())
    # the official code's min-max scaling and mean shift: the sparsities span 2λ and average S (the paper's
    # [S - λ, S + λ] holds only when the outlier ratios are symmetric about their mean; here one layer is out)
    assert max(sp.values()) - min(sp.values()) == pytest.approx(2 * OWL_LAMBDA, abs=2 / 400)
    assert sum(sp.values()) / 4 == pytest.approx(0.7, abs=1 / 400)


def test_alphapruning_mapping_is_linear_in_alpha_and_meets_the_target():
    alpha = torch.tensor([2.0, 3.0, 4.0, 6.0])
    sizes = torch.tensor([100, 100, 400, 200])
    sp = alphapruning_sparsities(alpha, sizes, 0.6, epsilon=0.3)
    assert float((sp * sizes).sum() / sizes.sum()) == pytest.approx(0.6)
    r = sp / sp[0]  # before scaling: 0.7 + 0.6 (alpha - 2) / 4
    torch.testing.assert_close(r, torch.tensor([0.7, 0.85, 1.0, 1.3], dtype=torch.float64) / 0.7)


def test_alphapruning_needs_alpha():
    with pytest.raises(ValueError, match="peers"):
        allocate_rule("alphapruning", "magnitude", magnitude_scores(_random_weights(0)), 0.5)


def test_wanda_scores_are_weight_times_input_column_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6))
    x = torch.randn(7, 3, 5, 5)
    weights, _, _ = profiled_weights(model)
    s, notes = wanda_scores(model, weights, lambda: model(x))
    assert not notes
    h = model[2](model[1](model[0](x)))
    torch.testing.assert_close(s["3.weight"], model[3].weight.abs().double() * h.double().norm(dim=0))
    cols = torch.nn.functional.unfold(x.double(), 3, padding=1)  # (N, 27, L): the conv's im2col columns
    norms = cols.pow(2).sum((0, 2)).sqrt()
    torch.testing.assert_close(s["0.weight"], model[0].weight.abs().double() * norms.reshape(1, 3, 3, 3))


def test_wanda_rows_reconstruct_a_layer_better_than_magnitude():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(32, 16))
    x = torch.randn(200, 32) * torch.logspace(-1, 1, 32)  # input features of very different scales
    w = {"0.weight": lin[0].weight.detach()}
    errs = {}
    for score, s in (("wanda", wanda_scores(lin, w, lambda: lin(x))[0]), ("magnitude", magnitude_scores(w))):
        m = allocate_rule("uniform-row", score, s, 0.7).masks["0.weight"]
        errs[score] = float(((w["0.weight"] * ~m) @ x.T).norm())
    assert errs["wanda"] < 0.7 * errs["magnitude"]


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory):
    from lqtheory.engine.data import load_dataset

    ds = load_dataset("digits")
    torch.manual_seed(0)
    m = build_model("mlp-32-1-2-relu", ds.input_shape, ds.num_classes)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(ds.x_train), ds.y_train).backward()
        opt.step()
    path = tmp_path_factory.mktemp("alloc") / "mlp.pt"
    torch.save(m.eval(), path)
    return path


def _cli(capsys, *argv):
    code = allocate_main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_on_a_pickled_mlp_covers_every_rule_at_the_target(mlp_file, tmp_path, capsys):
    rules = [r for r in RULES if r != "alphapruning" or HAVE_WW]
    out_json = tmp_path / "a.json"
    code, out, err = _cli(capsys, mlp_file, "--data", "digits", "--n-data", "120", "--sparsity", "0.7", "0.9",
                          "--rules", *rules, "--splits", "3", "--json", out_json, "--export", tmp_path / "exp",
                          "--trust-pickle")
    assert code == 0, err
    body = json.loads(out_json.read_text())
    assert body["metric"] == "accuracy"
    got = {(r["rule"], r["score"], r["sparsity"]) for r in body["results"]}
    assert got == {(r, s, sp) for r in rules for s in ("magnitude", "wanda") for sp in (0.7, 0.9)}
    for r in body["results"]:
        assert abs(r["kept"] - r["target_kept"]) <= r["units"]
        assert abs(r["kept_fraction"] - (1 - r["sparsity"])) < 1e-3
        lo, hi = r["interval"]
        assert lo <= r["value"] <= hi and 0.0 <= r["value"] <= 1.0
        assert r["splits"] == 3
    stems = {p.name.rsplit(".", 2)[0] for p in (tmp_path / "exp").iterdir()}
    assert len(stems) == len(got)


def test_evaluation_measures_what_the_masks_do(mlp_file):
    rep = allocate(str(mlp_file), "digits", sparsities=[0.9], rules=["uniform"], scores=["magnitude"], splits=2,
                   n_data=100, trust_pickle=True)
    model = torch.load(mlp_file, weights_only=False)
    from lqtheory.engine.data import load_dataset

    ds = load_dataset("digits")
    a = rep.allocations[("uniform", "magnitude", 0.9)]
    with masked_weights(model, a.masks):
        pruned = model(ds.x_test[:100]).argmax(1)
    dense = model(ds.x_test[:100]).argmax(1)
    assert (pruned != dense).any()  # 90% sparsity changes predictions
    splits = rep.splits
    assert set(splits.split) == {0, 1} and (splits.accuracy <= splits.dense_accuracy + 0.2).all()


def test_exports_apply_with_torch_prune_and_torch_pruning(mlp_file, tmp_path):
    rep = allocate(str(mlp_file), None, sparsities=[0.7], rules=["owl", "s7"], scores=["magnitude"], trust_pickle=True)
    a = rep.allocations[("s7", "magnitude", 0.7)]
    path = tmp_path / "m.pt"
    save_masks(path, a, rep.transposed)
    masks = torch.load(path, weights_only=True)
    assert all(m.dtype == torch.bool for m in masks.values())
    model = torch.load(mlp_file, weights_only=False)
    x = torch.randn(5, 1, 8, 8)
    with masked_weights(model, a.masks):
        expected = model(x)
    apply_masks(model, masks)  # torch.nn.utils.prune.custom_from_mask on every entry
    for name, m in masks.items():
        mod = model.get_submodule(name.rpartition(".")[0])
        assert hasattr(mod, "weight_mask") and torch.equal(mod.weight_mask.bool(), m)
    torch.testing.assert_close(model(x), expected)
    assert prune_masks(a).keys() == masks.keys()

    import torch_pruning as tp

    ratios = torch_pruning_ratios(rep.allocations[("owl", "magnitude", 0.7)])
    assert set(ratios) == {"fc1", "head"} | ({"fc2"} if "fc2" in ratios else set())
    fresh = torch.load(mlp_file, weights_only=False)
    rd = torch_pruning_ratio_dict(fresh, ratios, ignore=["head"])
    pruner = tp.pruner.MagnitudePruner(fresh, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.0, pruning_ratio_dict=rd, ignored_layers=[fresh.head])
    pruner.step()
    assert fresh.fc1.out_features < 32 and fresh(x).shape == (5, 10)

    recipe = yaml.safe_load(llmcompressor_recipe(a))
    mod = recipe["sparsity_stage"]["sparsity_modifiers"]["SparseGPTModifier"]
    assert len(mod["sparsity"]) == len(mod["targets"]) == len(a.names)
    assert sum(s * a.d[a.layer == i].sum().item() for i, s in enumerate(mod["sparsity"])) == pytest.approx(
        0.7 * int(a.d.sum()), abs=len(a.names))


class _NoUnits(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(x)


@pytest.mark.parametrize("argv, needle", [
    (["--sparsity", "1.5"], "(0, 1)"),
    (["--sparsity", "0"], "(0, 1)"),
    (["--rules", "uniform", "magic"], "unknown rule"),
    (["--scores", "taylor"], "unknown score"),
    (["--scores", "wanda"], "needs calibration"),
])
def test_cli_bad_input_one_line_exit_2(mlp_file, capsys, argv, needle):
    code, out, err = _cli(capsys, mlp_file, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and not out


def test_cli_alphapruning_without_the_extra(mlp_file, capsys, monkeypatch):
    monkeypatch.setattr(peers_mod, "peers_available", lambda: False)
    code, _, err = _cli(capsys, mlp_file, "--rules", "alphapruning")
    assert code == 2 and "pip install lqtheory[peers]" in err and len(err.strip().splitlines()) == 1


def test_cli_no_prunable_layers(tmp_path, capsys):
    path = tmp_path / "norm.pt"
    torch.save(_NoUnits(), path)
    code, _, err = _cli(capsys, path, "--rules", "uniform", "--trust-pickle")
    assert code == 2 and "no prunable layers" in err and len(err.strip().splitlines()) == 1


def test_lqtheory_cli_dispatches_allocate(mlp_file, capsys):
    from lqtheory.cli import main

    code = main(["allocate", str(mlp_file), "--rules", "uniform", "exact", "--sparsity", "0.5", "--trust-pickle"])
    out = capsys.readouterr().out
    assert code == 0 and "exact" in out and "eps" in out


@pytest.mark.skipif(not HAVE_WW, reason="needs the [peers] extra (weightwatcher)")
def test_weightwatcher_metrics_by_layer():
    torch.manual_seed(0)
    m = build_model("mlp-128-1-2-relu", (1, 28, 28), 10)
    weights, _, _ = profiled_weights(m)
    df = peers_mod.weightwatcher_metrics(m, list(weights))
    assert list(df.layer) == list(weights)
    assert df[list(peers_mod.PEER_METRICS)].notna().all().all()
    rep_alpha = dict(zip(df.layer, df.alpha, strict=True))
    a = allocate_rule("alphapruning", "magnitude", magnitude_scores(weights), 0.6, alpha=rep_alpha)
    sp = a.layer_sparsity()
    worst = max(rep_alpha, key=rep_alpha.get)
    assert sp[worst] == max(sp.values())  # the largest alpha is pruned most
