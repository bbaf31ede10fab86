"""The ``lqtheory`` command: help, usage errors (exit 2), a tiny run end to end, lazy imports."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from lqtheory.cli import main
from lqtheory.experiment import ExperimentConfig, load_results

TINY = ["--dataset", "digits", "--model", "mlp-16-1-1-relu", "--n-train", "300", "--n-test", "120",
        "--epochs", "1", "--batch-size", "50", "--lr", "0.1", "--device", "cpu", "--threads", "1"]


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "prune" in text and "reproduce" in text


def test_prune_help_documents_every_option_with_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    for option, default in [
        ("--dataset", "fashion-mnist"), ("--model", "mlp-128-1-2-relu"), ("--method", "sap"),
        ("--scope", "neuron"), ("--iterations", "10"), ("--epochs", "5"), ("--seed", "0"), ("--p", "0.5"),
        ("--q", "1.0"), ("--eta", "0.0"), ("--gamma", "1.0"), ("--beta", "0.9"), ("--rate", "0.2"),
        ("--lr", "0.03"), ("--batch-size", "250"), ("--weight-decay", "0.0005"), ("--grad-clip", "1.0"),
        ("--device", "auto"), ("--out", "runs"), ("--n-train", "all"), ("--n-test", "all"),
    ]:
        assert option in text, option
        assert f"(default: {default})" in text, (option, default)
    for method in ("sap", "si-adaptive", "one-shot", "lottery-ticket", "random", "bound-optimal"):
        assert method in text


def test_reproduce_help_is_wired(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--help"])
    assert exc.value.code == 0
    assert "--profile" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--model", "transformer"], "unknown model 'transformer'"),
        (["--method", "magic"], "invalid choice: 'magic'"),
        (["--scope", "channel"], "invalid choice: 'channel'"),
        (["--p", "1", "--q", "1"], "--p must be smaller than --q"),
        (["--p", "2", "--q", "1"], "--p must be smaller than --q"),
        (["--iterations", "-1"], "must be >= 0"),
        (["--epochs", "-3"], "must be >= 0"),
        (["--iterations", "1.5"], "whole number"),
        (["--gamma", "0"], "gamma must be > 0"),
        (["--rate", "1.5"], "rate must lie in [0, 1]"),
        (["--lr", "-1"], "lr"),
        (["--device", "tpu"], "--device"),
        (["--method", "si-adaptive", "--q", "2"], "si-adaptive"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_options_exit_2_with_a_message(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["prune", *args, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a missing GPU")
def test_missing_gpu_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--device", "cuda", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_tiny_run_prints_table_and_writes_run_folder(tmp_path):
    args = ["prune", *TINY, "--method", "lottery-ticket", "--scope", "layer", "--iterations", "2",
            "--out", str(tmp_path), "--no-progress"]
    out = io.StringIO()
    assert main(args, out=out) == 0
    text = out.getvalue()
    cfg = ExperimentConfig(dataset="digits", model="mlp-16-1-1-relu", method="lottery-ticket", scope="layer",
                           iterations=2, epochs=1, batch_size=50, lr=0.1, n_train=300, n_test=120, device="cpu")
    run_dir = cfg.run_dir(tmp_path)
    assert f"results: {run_dir}" in text
    df = load_results(run_dir)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["iter", "remaining"])
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    for row, (_, rec) in zip(rows, df.iterrows(), strict=True):
        assert float(row[1]) == pytest.approx(rec["remaining_percent"], abs=0.005)
        assert float(row[2]) == pytest.approx(rec["accuracy"], abs=5e-5)
        assert float(row[5].rstrip("x")) == pytest.approx(rec["compression"], abs=0.005)
    assert rows[0][3] == "-" and float(rows[1][3]) == pytest.approx(df.loc[1, "pruned_accuracy"], abs=5e-5)
    # the same command again loads the finished run
    again = io.StringIO()
    assert main(args, out=again) == 0
    assert "nothing recomputed" in again.getvalue()
    assert again.getvalue().split("folder:")[1] == text.split("folder:")[1].replace(
        "dense accuracy", "(a finished run: loaded from its folder, nothing recomputed)\ndense accuracy")


def test_regression_run_reports_test_mse(tmp_path):
    args = ["prune", "--dataset", "teacher-normal", "--model", "mlp-16-1-1-relu", "--method", "sap",
            "--iterations", "1", "--epochs", "1", "--lr", "0.01", "--n-train", "400", "--n-test", "100",
            "--device", "cpu", "--out", str(tmp_path), "--no-progress"]
    out = io.StringIO()
    assert main(args, out=out) == 0
    text = out.getvalue()
    assert "MSE retrained" in text and "acc retrained" not in text and "nan" not in text
    df = load_results(next(p for p in tmp_path.iterdir() if p.name != "dense"))  # dense/: the shared stage
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["iter", "remaining"])
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    for row, (_, rec) in zip(rows, df.iterrows(), strict=True):
        assert float(row[2]) == pytest.approx(rec["loss"], rel=1e-3)
    assert f"dense test MSE {df.loc[0, 'loss']:.4g}; after 1 iteration(s): test MSE {df.loc[1, 'loss']:.4g}" in text


def test_run_time_failure_exits_1(tmp_path, capsys):
    cfg_args = ["prune", *TINY, "--iterations", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(cfg_args, out=io.StringIO()) == 0
    run_dir = next(p for p in tmp_path.iterdir() if p.name != "dense")
    (run_dir / "results.json").write_text("{ damaged")
    assert main(cfg_args, out=io.StringIO()) == 1
    assert "results.json" in capsys.readouterr().err


def test_python_m_and_lazy_reproduce_import():
    code = (
        "import sys\n"
        "from lqtheory.cli import main\n"
        "try:\n    main(['prune', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('papermill' in sys.modules, 'lqtheory.reproduce' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "False False"
    res = subprocess.run([sys.executable, "-m", "lqtheory", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.startswith("lqtheory ")
