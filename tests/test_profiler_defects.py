"""Regression tests for the profiler defects of issue #22: code execution from model files, half-precision
indices, labels outside the class range, bad input that must be one line and exit 2, literal labels in
figures and reports, and the small output-path and export checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lqtheory.engine.models import build_model
from lqtheory.profiler import ProfileInputError, profile
from lqtheory.profiler.cli import main as profile_main


def _mlp(seed=0, width=24):
    torch.manual_seed(seed)
    return build_model(f"mlp-{width}-1-2-relu", (1, 8, 8), 10)


def _cli(capsys, *argv):
    code = profile_main(list(map(str, argv)))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _one_line_exit_2(code, err, needle=""):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("lqtheory profile: error:"), err
    assert needle in err, err


class _Payload:
    """Unpickling this creates ``path``: stands for any code a crafted model file could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_state_dict(tmp_path):
    state = dict(_mlp(width=4).state_dict())
    state["payload"] = _Payload(tmp_path / "PWNED")
    torch.save(state, tmp_path / "evil_sd.pth")
    return tmp_path / "evil_sd.pth"


def test_a_crafted_state_dict_never_runs_its_payload(tmp_path, capsys):
    evil = _evil_state_dict(tmp_path)
    code, out, err = _cli(capsys, evil, "--arch", "mlp-4-1-2-relu")
    assert not (tmp_path / "PWNED").exists()
    _one_line_exit_2(code, err, "weights_only")
    # without --arch either: nothing runs unless the user opts in
    code, out, err = _cli(capsys, evil)
    _one_line_exit_2(code, err, "--trust-pickle")
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(ProfileInputError, match="trust_pickle"):
        profile(evil)
    assert not (tmp_path / "PWNED").exists()
    # --arch says it is a state dict: read with weights_only=True even when pickles are trusted
    code, out, err = _cli(capsys, evil, "--arch", "mlp-4-1-2-relu", "--trust-pickle")
    assert code == 2 and not (tmp_path / "PWNED").exists()


def test_a_whole_pickled_module_needs_the_explicit_opt_in(tmp_path, capsys):
    m = _mlp()
    torch.save(m, tmp_path / "whole.pt")
    code, out, err = _cli(capsys, tmp_path / "whole.pt")
    _one_line_exit_2(code, err, "--trust-pickle")
    code, out, err = _cli(capsys, tmp_path / "whole.pt", "--trust-pickle")
    assert code == 0, err
    assert profile(tmp_path / "whole.pt", trust_pickle=True).summary["pqi_mean"] == pytest.approx(
        profile(m).summary["pqi_mean"])


def test_help_and_readme_name_the_opt_in_and_its_risk(capsys):
    from pathlib import Path

    with pytest.raises(SystemExit):
        profile_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--trust-pickle" in help_text and "arbitrary code" in help_text
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert "--trust-pickle" in readme and "arbitrary code" in readme


def test_a_bfloat16_model_reads_the_float32_indices():
    m = build_model("mlp-256-1-2-relu", (1, 8, 8), 10).bfloat16()  # issue #22 0b: mean PQI was 7% low
    half = profile(m).summary
    full = profile(m.float()).summary  # the same (bf16-representable) weights, in float32
    for key in ("pqi_mean", "si_mean", "m_over_d"):
        assert half[key] == pytest.approx(full[key], rel=2e-3), key


def _data(tmp_path, name, **tensors):
    torch.save(tensors, tmp_path / name)
    return tmp_path / name


def test_labels_outside_the_class_range_are_an_error(tmp_path, capsys):
    torch.save(build_model("mlp-32-1-2-relu", (64,), 10).state_dict(), tmp_path / "sd.pt")
    x = torch.randn(50, 64)
    for bad in (100, -1, 10):
        path = _data(tmp_path, f"y{bad}.pt", x=x, y=torch.full((50,), bad))
        code, out, err = _cli(capsys, tmp_path / "sd.pt", "--arch", "mlp-32-1-2-relu", "--data", path)
        _one_line_exit_2(code, err, "label")
        assert "accuracy_drop" not in out
    ok = _data(tmp_path, "ok.pt", x=x, y=torch.randint(0, 10, (50,)))
    code, out, err = _cli(capsys, tmp_path / "sd.pt", "--arch", "mlp-32-1-2-relu", "--data", ok)
    assert code == 0 and "accuracy_drop" in out, err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    m = build_model("mlp-32-1-2-relu", (64,), 10)
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    arch = ["--arch", "mlp-32-1-2-relu"]
    with torch.device("meta"):
        torch.save(build_model("mlp-32-1-2-relu", (64,), 10), tmp_path / "meta.pt")
    save_file(m.state_dict(), str(tmp_path / "ok.safetensors"))
    raw = (tmp_path / "ok.safetensors").read_bytes()
    files = {"truncated.safetensors": raw[: len(raw) // 2], "tiny.safetensors": raw[:4],
             "garbage.safetensors": b"\x10\0\0\0\0\0\0\0{not json here!!", "empty.safetensors": b"",
             "empty.pt": b""}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    cases = {
        "input": [tmp_path / "sd.pt", *arch, "--data", _data(tmp_path, "narrow.pt", x=torch.randn(50, 15))],
        "length": [tmp_path / "sd.pt", *arch, "--data",
                   _data(tmp_path, "short_y.pt", x=torch.randn(50, 64), y=torch.randint(0, 10, (10,)))],
        "meta": [tmp_path / "meta.pt", "--trust-pickle"],
        "--n-data": [tmp_path / "sd.pt", *arch, "--data", "digits", "--n-data", "-5"],
        **{name: [tmp_path / name, *arch] for name in files},
    }
    for needle, argv in cases.items():
        code, out, err = _cli(capsys, *argv)
        _one_line_exit_2(code, err, needle)


class _TiedMLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self[3].weight = self[1].weight


def test_tied_weights_are_profiled_once():
    torch.manual_seed(0)
    model = _TiedMLP()
    x, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    p = profile(model, (x, y), eps=(0.3, 0.1))
    assert p.summary["units"] == 64 + 10  # the shared matrix once
    assert "shared" in p.skipped.set_index("name").loc["3.weight", "reason"]
    assert p.verification is not None and p.bound is not None and p.bound.bound_holds.all()
    assert torch.equal(model[3].weight, model[1].weight)  # masks restored on the one shared tensor


def test_a_weight_norm_parametrization_is_profiled_by_its_effective_weight():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    torch.nn.utils.parametrizations.weight_norm(model[1])
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        plain.load_state_dict({"1.weight": model[1].weight, "1.bias": model[1].bias, "3.weight": model[3].weight,
                               "3.bias": model[3].bias})
    x, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    got, ref = profile(model, (x, y), eps=(0.3,)), profile(plain, (x, y), eps=(0.3,))
    assert got.summary["units"] == 32 + 10
    assert got.summary["pqi_mean"] == pytest.approx(ref.summary["pqi_mean"], rel=1e-6)
    assert got.verification.accuracy.tolist() == pytest.approx(ref.verification.accuracy.tolist())
    assert torch.nn.utils.parametrize.is_parametrized(model[1])  # the user's model is left as it was


def test_labels_that_look_like_tex_or_html_are_shown_literally(tmp_path, capsys):
    tex, xss = "a$\\foo$.pt", "<img src=x onerror=alert(1)>.pt"
    for name in (tex, xss):
        torch.save(_mlp().state_dict(), tmp_path / name)
        code, out, err = _cli(capsys, tmp_path / name, "--arch", "mlp-24-1-2-relu", "--data", "digits", "--n-data",
                              "32", "--eps", "0.3", "--html", tmp_path / "r.html", "--markdown", tmp_path / "r.md")
        assert code == 0, err
        page, md = (tmp_path / "r.html").read_text(), (tmp_path / "r.md").read_text()
        assert page.count("data:image/png;base64,") == 3
        if name == xss:
            assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
            assert "<img src=x" not in md  # Markdown renders raw HTML: escaped there too
    p = profile(_mlp(), "digits", n_data=32, eps=(0.3,), label=tex)
    for fig in (p.plot_curves(), p.plot_layers()):
        title = fig.axes[0].title
        fig.canvas.draw()  # mathtext would raise ParseFatalException: Unknown symbol: \foo
        assert title.get_text().startswith(tex) and not title.get_parse_math()
    assert "&lt;img src=x onerror=alert(1)&gt;" in profile(_mlp(), label=xss).to_markdown()


@pytest.mark.parametrize("width", [4, 16, 24])
def test_export_reports_the_units_the_exported_model_has(width):
    pytest.importorskip("torch_pruning")
    p = profile(_mlp(width=width), "digits", n_data=32, eps=(0.3,), export=1.0)  # eps 1: keep as few as possible
    e = p.export
    assert e["status"] == "ok"
    hidden = [m.weight.shape[0] for m in e["model"].modules() if isinstance(m, nn.Linear)][:-1]  # head not pruned
    assert e["units_kept_exact"] == sum(hidden) and e["units"] == 2 * width
    assert 1 <= min(hidden) and sum(hidden) < e["units"]  # eps = 1 keeps one unit per layer, never zero
    assert (e["params"] < e["dense_params"]) and e["size_ratio"] < 1


def test_output_paths_are_checked_before_any_computation(tmp_path, capsys, monkeypatch):
    import lqtheory.profiler as profiler_pkg

    torch.save(_mlp().state_dict(), tmp_path / "sd.pt")
    (tmp_path / "folder").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "r.json").write_text("{}")
    (tmp_path / "locked" / "r.json").chmod(0o444)
    (tmp_path / "locked").chmod(0o555)
    calls = []
    monkeypatch.setattr(profiler_pkg, "profile", lambda *a, **k: calls.append(a) or pytest.fail("profiled"))
    try:
        cases = {
            "--html": ["--html", tmp_path / "folder"],
            "--json": ["--json", tmp_path / "locked" / "r.json"],
            "--markdown": ["--markdown", tmp_path / "no" / "such" / "dir" / "r.md"],
            "--save-export": ["--export", "--save-export", tmp_path / "locked" / "small.pt"],
            "--json ": ["--json", "/proc/lqtheory-report.json"],  # not writable, even by root
        }
        import os

        for needle, extra in cases.items():
            if needle in ("--json", "--save-export") and os.geteuid() == 0:
                continue  # root writes anywhere: a read-only target cannot be made here
            code, out, err = _cli(capsys, tmp_path / "sd.pt", "--arch", "mlp-24-1-2-relu", "--data", "digits", *extra)
            _one_line_exit_2(code, err, needle.strip())
        assert not calls
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_a_run_folder_is_checked_against_its_mask_digests(tmp_path):
    from lqtheory.runs import ExperimentConfig, run_experiment

    cfg = ExperimentConfig(dataset="digits", model="mlp-8-1-1-relu", method="sap", scope="neuron", iterations=1,
                           epochs=1, n_train=200, n_test=60, batch_size=50, lr=0.1, device="cpu")
    run_experiment(cfg, tmp_path, threads=1)
    run = cfg.run_dir(tmp_path)
    assert profile(run, n_data=60).meta["iteration"] == 1
    mask_file = run / "mask_1.pt"
    body = bytearray(mask_file.read_bytes())
    body[-40] ^= 0xFF  # flip one byte: the checkpoint is intact, the mask file is not
    mask_file.write_bytes(bytes(body))
    with pytest.raises(ProfileInputError, match="mask_1.pt"):
        profile(run, n_data=60)
