"""Smoke test of the benchmark harness (benchmarks/run.py): every group runs one tiny case end to end.

Nothing here asserts a timing (CONVENTIONS.md: tests never time anything). What is checked: each group
produces well-formed rows (positive finite times, finite ratios against the baselines it names), the
JSON file and the plot are written, skipped groups say why, the naive baselines compute the same
numbers and masks as the batched routines they are compared with (otherwise a ratio would compare
different work), and the harness's small pure helpers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load_run():
    spec = importlib.util.spec_from_file_location("benchmarks_run_smoke", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run = _load_run()
from benchmarks import harness  # noqa: E402  (importable once run.py has put the repository on sys.path)

SMOKE = ["--smoke", "--threads", "1", "--no-plot"]


def _check_rows(rows: list[dict], group: str) -> None:
    assert rows, f"group {group} produced no rows"
    for row in rows:
        assert row["group"] == group
        if row["skipped"]:
            assert row["note"], "a skipped row must say why"
            continue
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0, row
        assert row["samples"] and all(s > 0 for s in row["samples"]), row
        for baseline, stats in row["ratios"].items():
            assert math.isfinite(stats["median"]) and stats["median"] > 0, (row["case"], baseline)
            assert stats["min"] <= stats["median"] <= stats["max"]
        if row["target"] is not None:
            assert row["target"]["baseline"] in row["ratios"], "a target must refer to a measured ratio"
            assert row["met"] in (True, False)


@pytest.mark.parametrize("group", ["indices", "masks", "bounds", "training", "scaling", "lasso"])
def test_group_runs_one_tiny_case(group, tmp_path):
    out = tmp_path / "results.json"
    payload = run.main([*SMOKE, "--only", group, "--json", str(out)])
    rows = [r for r in payload["rows"] if r["group"] == group]
    _check_rows(rows, group)
    if group in ("indices", "masks", "bounds", "scaling"):  # these modules are in the package
        assert not any(r["skipped"] and r["case"] == "(group)" for r in rows), rows
    written = json.loads(out.read_text())
    assert written["groups"] == [group]
    assert written["environment"]["torch"] == torch.__version__
    assert written["environment"]["torch_threads"] == 1
    assert len(written["rows"]) == len(rows)


def test_targets_are_attached_where_the_issue_sets_them(tmp_path):
    payload = run.main([*SMOKE, "--only", "indices,masks", "--json", str(tmp_path / "r.json")])
    targets = {r["case"]: r["target"]["text"] for r in payload["rows"] if r["target"]}
    assert targets["lq_norm(q=0.5)"] == "<= 1.2x vector_norm(ord=0.5)"
    assert targets["pq_index(p=0.5,q=1)"] == "<= 2.2x vector_norm(ord=0.5)"
    assert targets["sparsity_index(q=0.5)"] == "<= 2.2x vector_norm(ord=0.5)"
    assert targets["gini_index"] == "<= 1.2x torch.sort"
    assert targets["lq_norm(q=0.5) [autograd]"] == "<= 1.2x vector_norm(ord=0.5)"
    assert targets["gini_index [loop subset]"] == ">= 50x faster than loop"
    assert targets["SAP neuron-wise (counts + mask)"] == "<= 1.5x torch.sort"
    assert targets["pruning.sap(scope=neuron)"] == "<= 1.5x torch.sort"
    assert targets["magnitude_prune [loop subset]"].startswith(">= 20x faster than")


def test_scaling_writes_series_and_plot(tmp_path):
    plot = tmp_path / "scaling.png"
    payload = run.main(["--smoke", "--threads", "1", "--only", "scaling", "--json", "", "--plot", str(plot)])
    series = payload["series"]["scaling"]
    sizes = list(run.PRESETS["smoke"].scaling_sizes)
    assert set(series) >= {"vector_norm(ord=0.5)", "lq_norm(q=0.5)", "gini_index", "torch.sort"}
    for data in series.values():
        assert data["sizes"] == sizes
        assert all(t > 0 for t in data["seconds"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_table(tmp_path):
    md = tmp_path / "table.md"
    payload = run.main([*SMOKE, "--only", "bounds", "--json", "", "--markdown", str(md)])
    text = md.read_text()
    assert "--json ''" in payload["command"]  # the recorded command can be pasted back into a shell
    lines = [line for line in text.splitlines() if line.startswith("| bounds |")]
    assert len(lines) == len(payload["rows"])
    assert all(line.count("|") == 9 for line in lines)


def test_threads_restored_after_main(tmp_path):
    before = torch.get_num_threads()
    run.main(["--smoke", "--threads", "1", "--only", "bounds", "--json", "", "--no-plot"])
    assert torch.get_num_threads() == before


def test_missing_routine_is_reported_as_skipped(monkeypatch, tmp_path):
    real_import = run._import

    def fake_import(module, *names):
        if module == "theory.bounds":
            raise harness.Unavailable("lqtheory.theory.bounds.network_bound not available yet")
        return real_import(module, *names)

    monkeypatch.setattr(run, "_import", fake_import)
    payload = run.main([*SMOKE, "--only", "bounds", "--json", str(tmp_path / "r.json")])
    (row,) = payload["rows"]
    assert row["skipped"] and "not available yet" in row["note"]
    assert row["met"] is None


def test_e2e_times_the_reproduce_command(monkeypatch, tmp_path):
    # The real reproduction is long; a stand-in command exercises the timing and reporting path.
    monkeypatch.setattr(run, "_reproduce_command", lambda: [sys.executable, "-c", "import sys; sys.exit(0)"])
    payload = run.main([*SMOKE, "--only", "e2e", "--json", str(tmp_path / "r.json")])
    (row,) = payload["rows"]
    assert row["case"] == "reproduce --profile ci" and not row["skipped"] and row["seconds"] > 0
    monkeypatch.setattr(run, "_reproduce_command", lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    (row,) = run.main([*SMOKE, "--only", "e2e", "--json", ""])["rows"]
    assert row["skipped"] and "exit 3" in row["note"]
    monkeypatch.setattr(run, "_reproduce_command", lambda: None)
    (row,) = run.main([*SMOKE, "--only", "e2e", "--json", ""])["rows"]
    assert row["skipped"] and "not installed" in row["note"]


def test_default_outputs_depend_on_the_preset():
    full, quick = run._parse([]), run._parse(["--quick"])
    assert Path(full.json).name == "results.json" and Path(full.plot).name == "scaling.png"
    assert Path(quick.json).name == "results-quick.json" and Path(quick.plot).name == "scaling-quick.png"
    assert run._parse(["--json", ""]).json == ""


def test_e2e_is_off_by_default():
    args = run._parse(["--smoke"])
    assert "e2e" not in args.groups
    assert "e2e" in run._parse(["--smoke", "--e2e"]).groups


@pytest.mark.parametrize("argv", [["--only", "nope"], ["--repeats", "0"], ["--threads", "0"], ["--quick", "--smoke"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        run._parse(argv)


# ---------------------------------------------------------------------------------------------------
# The baselines do the same work as the routines they are compared with
# ---------------------------------------------------------------------------------------------------


def _weights():
    return run.weight_set(2 * 64 * 64, (16, 64), torch.device("cpu"), seed=3)


def test_weight_set_shapes_and_size():
    ws = _weights()
    assert [tuple(w.shape) for w in ws] == [(256, 16), (64, 64)]
    assert sum(w.numel() for w in ws) == 2 * 64 * 64
    assert torch.equal(ws[0], _weights()[0])  # seeded
    with pytest.raises(ValueError, match="does not split evenly"):
        run.weight_set(1000, (16, 64), torch.device("cpu"))


def test_loop_indices_match_batched():
    from lqtheory.theory.norms import gini_index, lq_norm, pq_index, sparsity_index

    for w in _weights():
        w64 = w.double()
        torch.testing.assert_close(run._loop_lq(w64, 0.5), lq_norm(w64, 0.5))
        torch.testing.assert_close(run._loop_pq(w64, 0.5, 1.0), pq_index(w64, 0.5, 1.0))
        torch.testing.assert_close(run._loop_si(w64, 0.5), sparsity_index(w64, 0.5))
        torch.testing.assert_close(run._loop_gini(w64), gini_index(w64))


def test_loop_masks_match_magnitude_prune():
    from lqtheory.theory.selection import magnitude_prune

    for i, w in enumerate(_weights()):
        counts = run._row_counts(w, seed=i)
        assert counts.min() >= 0 and counts.max() <= 0.9 * w.shape[1]
        assert len(set(counts.tolist())) > 1  # a different count per row
        expected = magnitude_prune(w, counts, dim=-1)
        # Gaussian entries have no ties, so topk's tie-breaking does not matter here
        assert torch.equal(run._loop_l1_unstructured(w, counts.tolist()), expected)
        assert torch.equal(run._loop_l1_compute_mask(w, counts.tolist()), expected)
        assert torch.equal((~expected).sum(-1), counts)


def test_torchvision_style_dataset_reproduces_the_tensors():
    from torchvision import transforms

    g = torch.Generator().manual_seed(0)
    pix = torch.randint(0, 256, (20, 1, 28, 28), generator=g, dtype=torch.uint8)
    pix[0].fill_(0)
    pix[1].fill_(255)
    mean, std = 0.4, 0.3
    x = (pix.float() / 255 - mean) / std  # how lqtheory.engine.data standardises
    images = run._uint8_images(x)
    assert torch.equal(images, pix[:, 0])
    ds = run.TorchvisionStyleImages(
        images, torch.arange(20), transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    )
    img, label = ds[5]
    assert label == 5 and img.shape == (1, 28, 28)
    torch.testing.assert_close(img, x[5], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Harness helpers
# ---------------------------------------------------------------------------------------------------


def test_measure_interleaves_and_counts_calls():
    calls = []
    cases = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = harness.measure(cases, torch.device("cpu"), repeats=3, warmup=0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    assert calls == ["a", "b", "b", "a", "a", "b"]  # rotated order: no case always first


def test_paired_ratio_and_targets():
    stats = harness.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0])
    assert stats == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert harness.Target("x", 1.2).met(1.1) is True
    assert harness.Target("x", 1.2).met(1.3) is False
    assert harness.Target("loop", 50.0, "speedup").met(1 / 60) is True
    assert harness.Target("loop", 50.0, "speedup").met(1 / 40) is False
    assert harness.Target("x", 1.2).met(float("nan")) is None
    with pytest.raises(ValueError, match="kind"):
        harness.Target("x", 1.0, "faster")


def test_loglog_slope():
    sizes = [2**k for k in range(10, 16)]
    assert harness.fit_loglog_slope(sizes, [3e-9 * n for n in sizes]) == pytest.approx(1.0)
    assert harness.fit_loglog_slope(sizes, [1e-12 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert math.isnan(harness.fit_loglog_slope([4], [1.0]))


def test_plot_is_byte_stable(tmp_path):
    series = {"a": ([2**20, 2**21, 2**22], [0.01, 0.02, 0.041]), "b": ([2**20, 2**21, 2**22], [0.1, 0.21, 0.4])}
    harness.plot_scaling(series, tmp_path / "1.png", "t")
    harness.plot_scaling(series, tmp_path / "2.png", "t")
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


def test_table_marks_met_missed_and_skipped():
    rows = [
        harness.Row(
            "g",
            "fast",
            1.0,
            ratios={"base": {"median": 1.1, "min": 1.0, "max": 1.2}},
            target=harness.Target("base", 1.2),
        ),
        harness.Row(
            "g",
            "slow",
            2.0,
            ratios={"base": {"median": 2.0, "min": 2.0, "max": 2.0}},
            target=harness.Target("base", 1.2),
        ),
        harness.Row("g", "(group)", math.nan, skipped=True, note="lqtheory.x not available yet"),
    ]
    table = harness.format_table(rows).splitlines()
    assert table[2].endswith("met") and table[3].endswith("MISSED") and table[4].endswith("skipped")
    assert "not available yet" in table[4]
