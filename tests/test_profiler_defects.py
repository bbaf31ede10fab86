"""Regression tests for the profiler defects of issue #22: code execution from model files, half-precision
indices, labels outside the class range, bad input that must be one line and exit 2, literal labels in
figures and reports, and the small output-path and export checks."""

from __future__ import annotations

import pytest
import torch

from lqtheory.models import build_model
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
