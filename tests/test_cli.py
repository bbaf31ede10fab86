"""The ``lqtheory`` command: help, usage errors (exit 2), a tiny run end to end, lazy imports."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch

from lqtheory.cli.main import main
from lqtheory.runs import ExperimentConfig, load_results, loop

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
        (["--momentum", "2"], "momentum must lie in [0, 1)"),  # issue #14 item 9
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
        "from lqtheory.cli.main import main\n"
        "try:\n    main(['prune', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('papermill' in sys.modules, 'lqtheory.workbench.reproduce' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "False False"
    res = subprocess.run([sys.executable, "-m", "lqtheory", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.startswith("lqtheory ")


# --------------------------------------------------------------------------------------------------
# issue #14: corrupt finished runs, restored rows, messages before the table


def _rows(text: str) -> list[int]:
    lines = text.splitlines()
    header = [i for i, line in enumerate(lines) if line.split()[:2] == ["iter", "remaining"]]
    assert len(header) <= 1
    if not header:
        return []
    return [int(line.split()[0]) for line in lines[header[0] + 1 :] if line.split() and line.split()[0].isdigit()]


def _prune_args(tmp_path, *extra):
    return ["prune", *TINY, "--method", "lottery-ticket", "--iterations", "2", "--out", str(tmp_path),
            "--no-progress", *extra]


def test_corrupt_finished_run_is_reported_not_loaded(tmp_path, capsys):
    args = _prune_args(tmp_path)
    assert main(args, out=io.StringIO()) == 0
    run_dir = next(p for p in tmp_path.iterdir() if (p / "config.json").is_file())  # not dense/
    mask = run_dir / "mask_1.pt"
    mask.write_bytes(mask.read_bytes()[:-5])
    out = io.StringIO()
    assert main(args, out=out) == 1
    err = capsys.readouterr().err
    assert "mask_1.pt" in err and "nothing recomputed" not in out.getvalue()
    assert _rows(out.getvalue()) == [] and "iter" not in out.getvalue()  # the error comes before any table


def test_table_shows_rows_restored_from_the_checkpoint(tmp_path, monkeypatch):
    args = _prune_args(tmp_path)
    original = loop.RunLoop.write_results

    class Crash(RuntimeError):
        pass

    def crash_at_t1(self, complete, metadata):
        if len(self.records) == 2:  # killed between the checkpoint of t = 1 and its results.json
            raise Crash
        return original(self, complete, metadata)

    monkeypatch.setattr(loop.RunLoop, "write_results", crash_at_t1)
    assert main(args, out=io.StringIO()) == 1  # the CLI reports the crash (a RuntimeError) and exits 1
    monkeypatch.setattr(loop.RunLoop, "write_results", original)
    out = io.StringIO()
    assert main(args, out=out) == 0
    assert _rows(out.getvalue()) == [0, 1, 2]
    assert "resuming at iteration 2" in out.getvalue()
    run_dir = next(p for p in tmp_path.iterdir() if (p / "config.json").is_file())  # not dense/
    assert not list(run_dir.glob(".*.tmp"))
    # results.json of the finished run deleted: every row is printed again, nothing recomputed
    (run_dir / "results.json").unlink()
    out = io.StringIO()
    assert main(args, out=out) == 0
    assert _rows(out.getvalue()) == [0, 1, 2] and "nothing recomputed" in out.getvalue()


def test_out_and_config_errors_come_before_the_table(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["prune", *TINY, "--out", str(not_a_folder), "--no-progress"], out=io.StringIO())
    assert exc.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["prune", *TINY, "--out", str(not_a_folder / "sub"), "--no-progress"], out=io.StringIO())
    assert exc.value.code == 2
    # a damaged config.json: reported before any header or row
    args = _prune_args(tmp_path / "runs")
    assert main(args, out=io.StringIO()) == 0
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if (p / "config.json").is_file())  # not dense/
    body = json.loads((run_dir / "config.json").read_text())
    body["config"]["lr"] = 0.2
    (run_dir / "config.json").write_text(json.dumps(body))
    out = io.StringIO()
    assert main(args, out=out) == 1
    assert "config.json" in capsys.readouterr().err
    assert "iter" not in out.getvalue() and _rows(out.getvalue()) == []


def test_divergence_is_reported_as_such(tmp_path, capsys):
    args = ["prune", *TINY, "--lr", "1e6", "--grad-clip", "0", "--iterations", "1", "--out", str(tmp_path),
            "--no-progress"]
    assert main(args, out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "at step" in err and "--lr" in err


def test_too_small_class_balanced_subset_is_an_error(tmp_path, capsys):
    args = ["prune", *TINY, "--n-train", "5", "--iterations", "1", "--out", str(tmp_path), "--no-progress"]
    assert main(args, out=io.StringIO()) == 1
    assert "n_train=5 is smaller than the 10 classes" in capsys.readouterr().err


def test_missing_data_error_speaks_cli_options(tmp_path, capsys, monkeypatch):
    import torchvision

    import lqtheory.engine.data as data

    class NoNetwork:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error downloading: <urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setenv("LQTHEORY_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("LQTHEORY_MNIST", raising=False)
    monkeypatch.setattr(torchvision.datasets, "MNIST", NoNetwork)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    args = ["prune", "--dataset", "mnist", "--model", "mlp-16-1-1-relu", "--iterations", "1", "--epochs", "1",
            "--device", "cpu", "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(args, out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert "LQTHEORY_MNIST" in err and "internet" in err and "Name or service not known" in err
    assert "root=" not in err and "download=True" not in err and "load_dataset" not in err
    assert not (tmp_path / "data" / "MNIST").exists()



# Every field a user may set has an option (issue #18; issue #22 item 5: --dense-epochs was missing)
NON_DEFAULT = {  # field -> (command-line text, the value the configuration must hold)
    "dataset": ("digits", "digits"), "model": ("mlp-16-1-1-relu", "mlp-16-1-1-relu"), "method": ("random", "random"),
    "scope": ("layer", "layer"), "p": ("0.25", 0.25), "q": ("2", 2.0), "eta": ("0.1", 0.1), "gamma": ("2", 2.0),
    "beta": ("0.5", 0.5), "rate": ("0.3", 0.3), "iterations": ("3", 3), "epochs": ("2", 2), "seed": ("4", 4),
    "lr": ("0.1", 0.1), "momentum": ("0.5", 0.5), "nesterov": (None, False), "weight_decay": ("0.001", 0.001),
    "schedule": ("constant", "constant"), "grad_clip": ("2", 2.0), "batch_size": ("64", 64),
    "l1_penalty": ("0.01", 0.01), "n_train": ("100", 100), "n_test": ("50", 50), "data_seed": ("3", 3),
    "stat_p": ("0.25", 0.25), "stat_q": ("2", 2.0), "si_q": ("0.25", 0.25), "device": ("cpu", "cpu"),
    "dense_epochs": ("7", 7), "precision": ("bfloat16", "bfloat16"),
}


def _parsed_config(argv):
    from lqtheory.cli.main import _build, _config_from_args

    parser, prune = _build()
    return _config_from_args(parser.parse_args(["prune", *argv]), prune)


def test_every_settable_config_field_has_a_prune_option():
    import dataclasses

    from lqtheory.cli.prune_options import option_name

    fields = [f.name for f in dataclasses.fields(ExperimentConfig) if f.init]
    assert sorted(NON_DEFAULT) == sorted(fields)  # a new field needs a line here (and an option)
    argv = []
    for name, (text, _) in NON_DEFAULT.items():
        argv += [f"--no-{name}"] if text is None else [option_name(name), text]
    cfg = _parsed_config(argv)
    for name, (_, expected) in NON_DEFAULT.items():
        assert getattr(cfg, name) == expected, name
    defaults = _parsed_config([])
    for f in dataclasses.fields(ExperimentConfig):  # and every option's default is the field's default
        if f.default is not dataclasses.MISSING:
            assert getattr(defaults, f.name) == f.default, f.name


def test_dense_epochs_option_names_another_run():
    base = ["--dataset", "digits", "--model", "mlp-16-1-1-relu", "--device", "cpu"]
    assert _parsed_config([*base, "--dense-epochs", "3"]).dense_epochs == 3
    assert _parsed_config([*base, "--dense-epochs", "3"]).run_id() != _parsed_config(base).run_id()
    with pytest.raises(SystemExit) as exc:
        _parsed_config([*base, "--dense-epochs", "-1"])
    assert exc.value.code == 2
