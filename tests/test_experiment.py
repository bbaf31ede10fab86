"""Prune → rewind → retrain runs: every method × scope end to end, resume, caching, corruption, run ids."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from lqtheory.engine.masks import SCOPES
from lqtheory.engine.pruning import METHODS
from lqtheory.engine.training import LambdaCallback
from lqtheory.runs import (
    CorruptRunError,
    ExperimentConfig,
    banks,
    dense,
    files,
    folder,
    grid,
    identity,
    load_checkpoint,
    load_results,
    load_run,
    loop,
    run_experiment,
)

TINY = {"dataset": "digits", "model": "mlp-16-1-1-relu", "n_train": 300, "n_test": 120, "epochs": 1,
        "batch_size": 50, "lr": 0.1, "device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models train far faster on one thread, above all on shared cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(method="lottery-ticket", **kw) -> ExperimentConfig:
    return ExperimentConfig(**{**TINY, "method": method, "iterations": 2, **kw})


def without_time(records):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def masks_of(res):
    return [res.mask(t) for t in range(len(res.records))]


def pruned_entries_zero(state: dict, mask) -> bool:
    return all(bool((state[name][~m] == 0).all()) for name, m in mask.items())


# --------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_and_scope_end_to_end(tmp_path, method, scope):
    cfg = tiny(method, scope=scope, p=0.5, q=1.0)
    res = run_experiment(cfg, tmp_path)
    assert res.complete and len(res.records) == 3
    assert [r["iteration"] for r in res.records] == [0, 1, 2]
    masks = masks_of(res)
    assert all(later.issubset(earlier) for earlier, later in zip(masks, masks[1:], strict=False))
    df = load_results(cfg.run_dir(tmp_path))
    assert len(df) == 3 and df["iteration"].tolist() == [0, 1, 2]
    for t, rec in enumerate(res.records):
        m = masks[t]
        assert rec["remaining"] == m.count_alive() and rec["total"] == m.count_total()
        assert rec["remaining_percent"] == pytest.approx(100 * m.fraction_alive())
        assert rec["compression"] == pytest.approx(m.count_total() / m.count_alive())
        # an MLP uses every weight once per input, so the speed-up equals the compression ratio
        assert rec["speedup"] == pytest.approx(rec["compression"])
        assert 0 <= rec["accuracy"] <= 1 and math.isfinite(rec["loss"])
        for layer, values in rec["layers"].items():
            assert values["remaining"] == int(m[layer].sum())
        if t == 0:
            assert rec["pruned_accuracy"] is None and rec["prune_rate"] == 0
            assert rec["remaining_percent"] == 100
        else:
            assert 0 <= rec["pruned_accuracy"] <= 1
            prev = res.records[t - 1]["remaining"]
            assert rec["prune_rate"] == pytest.approx(1 - rec["remaining"] / prev)
        for s in SCOPES:
            assert 0 <= rec[f"pqi_{s}"] <= 1 and rec[f"si_{s}"] >= 1 and 0 <= rec[f"gini_{s}"] <= 1
    ckpt = load_checkpoint(cfg.run_dir(tmp_path))
    assert pruned_entries_zero(ckpt["latest"], masks[-1])


def test_rate_methods_remove_twenty_percent_of_remaining(tmp_path):
    for method in ("one-shot", "lottery-ticket"):
        for scope in SCOPES:
            res = run_experiment(tiny(method, scope=scope, iterations=3), tmp_path)
            masks = masks_of(res)
            for prev, new in zip(masks, masks[1:], strict=False):
                for name in prev:
                    if scope == "neuron":
                        alive_prev = prev[name].sum(1).numpy()
                        got = new[name].sum(1).numpy()
                    else:
                        alive_prev, got = np.array([int(prev[name].sum())]), np.array([int(new[name].sum())])
                    if scope == "global":
                        continue  # checked below on the total
                    expected = alive_prev - np.round(0.2 * alive_prev)  # round half to even, like torch.prune
                    assert np.array_equal(got, expected), (method, scope, name)
                if scope == "global":
                    a = prev.count_alive()
                    assert new.count_alive() == a - round(0.2 * a)
            assert res.records[-1]["remaining_percent"] == pytest.approx(100 * 0.8**3, abs=1.0)


def test_one_shot_ranks_by_dense_and_lottery_ticket_by_latest(tmp_path):
    one = run_experiment(tiny("one-shot", scope="global", iterations=3), tmp_path)
    lt = run_experiment(tiny("lottery-ticket", scope="global", iterations=3), tmp_path)
    dense = load_checkpoint(one.run_dir)["dense"]
    names = list(one.mask(0))
    flat = np.concatenate([dense[n].double().abs().flatten().numpy() for n in names])
    order = np.argsort(-flat, kind="stable")  # ties: lower index kept first
    for t in range(1, 4):
        keep = np.zeros(flat.size, dtype=bool)
        keep[order[: one.records[t]["remaining"]]] = True
        got = np.concatenate([one.mask(t)[n].flatten().numpy() for n in names])
        assert np.array_equal(got, keep)  # One-Shot: the top of the dense trained weights
    # Both rank by the dense weights at t = 1 (the latest weights then are the dense ones) ...
    assert lt.mask(1) == one.mask(1)
    # ... and Lottery Ticket follows the retrained weights afterwards.
    assert lt.mask(3) != one.mask(3)
    assert load_checkpoint(one.run_dir)["dense"].keys() == dense.keys()


def test_rewind_to_init_restores_survivors_and_biases(tmp_path):
    starts = []  # the model's state when each iteration's (re)training begins
    cb = LambdaCallback(on_train_begin=lambda s: starts.append({k: v.clone() for k, v in s.model.state_dict().items()}))
    res = run_experiment(tiny("lottery-ticket", scope="layer", iterations=2), tmp_path, callbacks=[cb])
    w_init = load_checkpoint(res.run_dir)["w_init"]
    assert len(starts) == 3
    for t, state in enumerate(starts):
        mask = res.mask(t)
        for name, w0 in w_init.items():
            expected = w0 * mask[name] if name in mask else w0  # biases rewound too
            assert torch.equal(state[name], expected), (t, name)
    assert not torch.equal(load_checkpoint(res.run_dir)["latest"]["fc1.bias"], w_init["fc1.bias"])


def test_pruned_weights_stay_zero_through_retraining(tmp_path):
    seen = []
    model_mask = {}

    def check(state):
        if model_mask:
            params = dict(state.model.named_parameters())
            seen.append(all(bool((params[n].detach()[~m] == 0).all()) for n, m in model_mask.items()))

    def grab(state):
        # the mask the loop trains under is applied before training starts: read it off the weights
        model_mask.clear()
        for name, p in state.model.named_parameters():
            if p.dim() > 1:
                model_mask[name] = p.detach() != 0

    cb = LambdaCallback(on_train_begin=grab, on_batch_end=check)
    res = run_experiment(tiny("sap", scope="neuron", iterations=2, weight_decay=0.01), tmp_path, callbacks=[cb])
    assert seen and all(seen)
    assert res.records[-1]["remaining"] < res.records[0]["remaining"]


# --------------------------------------------------------------------------------------------------
# Determinism, resume, caching, corruption


def test_same_config_gives_identical_results(tmp_path):
    cfg = tiny("random", scope="neuron")
    a = run_experiment(cfg, tmp_path / "a")
    b = run_experiment(cfg, tmp_path / "b")
    assert without_time(a.records) == without_time(b.records)
    assert masks_of(a) == masks_of(b)
    c = run_experiment(cfg.replace(seed=1), tmp_path / "a")
    assert masks_of(c)[-1] != masks_of(a)[-1]


class Interrupt(RuntimeError):
    pass


def interrupt_at_train_call(k):
    calls = []

    def on_train_begin(state):
        calls.append(1)
        if len(calls) == k:
            raise Interrupt

    return LambdaCallback(on_train_begin=on_train_begin)


@pytest.mark.parametrize("method", ["sap", "random", "one-shot"])
def test_resume_after_interruption_is_exact(tmp_path, method):
    cfg = tiny(method, scope="neuron", iterations=3)
    ref = run_experiment(cfg, tmp_path / "ref")
    with pytest.raises(Interrupt):
        run_experiment(cfg, tmp_path / "cut", callbacks=[interrupt_at_train_call(3)])  # during t = 2
    partial = load_run(cfg.run_dir(tmp_path / "cut"))
    assert not partial.complete and len(partial.records) == 2
    resumed = run_experiment(cfg, tmp_path / "cut")
    assert resumed.complete
    assert without_time(resumed.records) == without_time(ref.records)
    assert masks_of(resumed) == masks_of(ref)
    a, b = load_checkpoint(ref.run_dir), load_checkpoint(resumed.run_dir)
    assert all(torch.equal(a["latest"][k], b["latest"][k]) for k in a["latest"])


def test_resume_when_crash_hit_between_checkpoint_and_results(tmp_path, monkeypatch):
    cfg = tiny("lottery-ticket", iterations=2)
    ref = run_experiment(cfg, tmp_path / "ref")
    original = loop.RunLoop.write_results

    def crash_on_final(self, complete, metadata):
        if complete:
            raise Interrupt
        return original(self, complete, metadata)

    monkeypatch.setattr(loop.RunLoop, "write_results", crash_on_final)
    with pytest.raises(Interrupt):
        run_experiment(cfg, tmp_path / "cut")
    monkeypatch.setattr(loop.RunLoop, "write_results", original)
    assert not load_run(cfg.run_dir(tmp_path / "cut")).complete  # results.json lags the checkpoint
    resumed = run_experiment(cfg, tmp_path / "cut")
    assert resumed.complete and without_time(resumed.records) == without_time(ref.records)


def test_finished_run_is_loaded_not_recomputed(tmp_path, monkeypatch):
    cfg = tiny("sap")
    first = run_experiment(cfg, tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(loop, "train_bank", forbidden)
    monkeypatch.setattr(dense, "train_bank", forbidden)
    again = run_experiment(cfg, tmp_path)
    assert again.records == first.records and again.complete
    # a longer schedule is another run, so it is computed (and hits the patched train)
    with pytest.raises(AssertionError, match="retrained"):
        run_experiment(cfg.replace(iterations=3), tmp_path)


def test_corrupted_results_file_is_detected(tmp_path):
    cfg = tiny("sap")
    res = run_experiment(cfg, tmp_path)
    path = res.run_dir / "results.json"
    text = path.read_text()
    body = json.loads(text)
    body["records"][1]["accuracy"] = 0.999  # a plausible, silent change
    path.write_text(json.dumps(body))
    with pytest.raises(CorruptRunError, match="checksum"):
        load_results(res.run_dir)
    with pytest.raises(CorruptRunError):
        run_experiment(cfg, tmp_path)
    path.write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(CorruptRunError, match="JSON"):
        load_results(res.run_dir)


def test_corrupted_checkpoint_and_mask_are_detected(tmp_path):
    cfg = tiny("lottery-ticket", iterations=3)
    with pytest.raises(Interrupt):
        run_experiment(cfg, tmp_path, callbacks=[interrupt_at_train_call(3)])
    run_dir = cfg.run_dir(tmp_path)
    ckpt = run_dir / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:-10])
    with pytest.raises(CorruptRunError, match="checksum"):
        run_experiment(cfg, tmp_path)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CorruptRunError, match="header"):
        run_experiment(cfg, tmp_path)
    ckpt.write_bytes(good)
    mask = run_dir / "mask_1.pt"
    mask_bytes = mask.read_bytes()
    mask.write_bytes(mask_bytes[:-1] + bytes([mask_bytes[-1] ^ 1]))
    with pytest.raises(CorruptRunError, match="mask_1"):
        run_experiment(cfg, tmp_path)
    with pytest.raises(CorruptRunError, match="mask_1"):
        load_run(run_dir).mask(1)
    mask.write_bytes(mask_bytes)
    assert run_experiment(cfg, tmp_path).complete  # intact again: resumes and finishes
    shutil.rmtree(run_dir)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("truncate checkpoint.pt", "checkpoint.pt"),
        ("delete checkpoint.pt", "checkpoint.pt"),
        ("truncate mask_1.pt", "mask_1.pt"),
        ("delete mask_2.pt", "mask_2.pt"),
        ("flip mask_0.pt", "mask_0.pt"),
    ],
)
def test_corrupt_file_of_a_finished_run_is_reported(tmp_path, damage, named, monkeypatch):
    # issue #14 item 3: a finished run was loaded without checking its checkpoint and mask files
    cfg = tiny("sap", iterations=2)
    res = run_experiment(cfg, tmp_path)
    action, name = damage.split()
    path = res.run_dir / name
    if action == "delete":
        path.unlink()
    elif action == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    else:
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    def forbidden(*args, **kwargs):
        raise AssertionError("a corrupt finished run was retrained")

    monkeypatch.setattr(loop, "train_bank", forbidden)
    monkeypatch.setattr(dense, "train_bank", forbidden)
    with pytest.raises(CorruptRunError, match=named.replace(".", r"\.")):
        run_experiment(cfg, tmp_path)
    with pytest.raises(CorruptRunError, match=named.replace(".", r"\.")):
        folder.verify_run(res.run_dir)


def test_intact_finished_run_verifies(tmp_path):
    res = run_experiment(tiny("random", iterations=1), tmp_path)
    assert folder.verify_run(res.run_dir).records == res.records


def test_infinite_compression_is_written_as_standard_json(tmp_path):
    # issue #14 item 6: one-shot at rate 1 removes everything: compression and speed-up are infinite,
    # which json.dumps wrote as the non-standard token Infinity
    cfg = tiny("one-shot", iterations=1, rate=1.0)
    res = run_experiment(cfg, tmp_path)
    assert res.records[1]["remaining"] == 0
    assert res.records[1]["compression"] == math.inf and res.records[1]["speedup"] == math.inf
    path = res.run_dir / "results.json"
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text

    def reject(name):
        raise ValueError(name)

    body = json.loads(text, parse_constant=reject)  # strict, standard JSON
    assert body["records"][1]["compression"] is None and body["records"][1]["speedup"] is None
    again = load_run(res.run_dir)  # null reads back as inf
    assert again.records[1]["compression"] == math.inf
    assert load_results(res.run_dir)["compression"].tolist()[1] == math.inf
    for name in ("config.json",):
        assert "Infinity" not in (res.run_dir / name).read_text()
    # a file with the non-standard token (and a checksum that matches it) is refused, not read
    body["records"][1]["compression"] = math.inf
    del body["sha256"]
    body["sha256"] = files.sha256_hex(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    path.write_text(json.dumps(body))
    with pytest.raises(CorruptRunError, match="Infinity"):
        load_run(res.run_dir)


def test_resume_reports_restored_records_and_removes_stale_temporaries(tmp_path, monkeypatch):
    # issue #14 item 4: records restored from the checkpoint must reach the caller (the CLI's table)
    cfg = tiny("lottery-ticket", iterations=2)
    original = loop.RunLoop.write_results

    def crash_at_t1(self, complete, metadata):
        if len(self.records) == 2:  # checkpoint of t = 1 written, results.json not yet
            raise Interrupt
        return original(self, complete, metadata)

    monkeypatch.setattr(loop.RunLoop, "write_results", crash_at_t1)
    with pytest.raises(Interrupt):
        run_experiment(cfg, tmp_path)
    monkeypatch.setattr(loop.RunLoop, "write_results", original)
    run_dir = cfg.run_dir(tmp_path)
    assert len(load_run(run_dir).records) == 1  # results.json lags the checkpoint
    stale = run_dir / ".results.json.x1y2z3.tmp"
    stale.write_bytes(b"half a file")
    restored, new = [], []
    res = run_experiment(cfg, tmp_path, on_restore=lambda records, complete: restored.append((records, complete)),
                         on_record=lambda record: new.append(record["iteration"]))
    assert [[r["iteration"] for r in records] for records, _ in restored] == [[0, 1]]
    assert restored[0][1] is False and new == [2]
    assert res.complete and not stale.exists()
    # a finished run: restored once, complete
    restored.clear()
    run_experiment(cfg, tmp_path, on_restore=lambda records, complete: restored.append((len(records), complete)))
    assert restored == [(3, True)]
    # results.json of a finished run deleted: rebuilt from the checkpoint, all records reported
    (run_dir / "results.json").unlink()
    restored.clear()
    run_experiment(cfg, tmp_path, on_restore=lambda records, complete: restored.append((len(records), complete)))
    assert restored == [(3, True)]


def test_results_without_checkpoint_is_an_error(tmp_path):
    cfg = tiny("sap", iterations=2)
    with pytest.raises(Interrupt):
        run_experiment(cfg, tmp_path, callbacks=[interrupt_at_train_call(2)])
    (cfg.run_dir(tmp_path) / "checkpoint.pt").unlink()
    with pytest.raises(CorruptRunError, match="no checkpoint"):
        run_experiment(cfg, tmp_path)


# --------------------------------------------------------------------------------------------------
# Configuration and run ids


def test_run_id_hashes_only_non_default_fields():
    a = ExperimentConfig("digits", "mlp-16-1-1-relu", "sap")
    b = ExperimentConfig("digits", "mlp-16-1-1-relu", "sap", scope="neuron", p=0.5, gamma=1, device="cpu")
    assert a.run_id() == b.run_id() and len(a.run_id()) == 12
    assert set(a.hashed_fields()) == {"dataset", "model", "method"}
    assert a.replace(gamma=3.0).run_id() != a.run_id()
    assert a.replace(seed=1).run_id() != a.run_id()
    assert ExperimentConfig("Digits", "MLP-16-1-1-relu", "SAP").run_id() == a.run_id()  # canonical names
    if not torch.cuda.is_available():
        assert a.replace(device="auto").run_id() == a.run_id()
    else:
        assert a.replace(device="cuda").run_id() != a.run_id()
    assert a.run_dir("out").parent.name == "out"


def test_config_round_trip_and_train_config():
    cfg = tiny("si-adaptive", p=0.4, gamma=3.0)
    assert ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    tc = cfg.train_config()
    assert (tc.lr, tc.epochs, tc.batch_size, tc.nesterov) == (0.1, 1, 50, True)
    pc = cfg.prune_config()
    assert (pc.method, pc.p, pc.q, pc.gamma) == ("si-adaptive", 0.4, 1.0, 3.0)
    with pytest.raises(ValueError, match="unknown ExperimentConfig"):
        ExperimentConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"dataset": "imagenet"}, ValueError, "unknown dataset"),
        ({"model": "transformer"}, ValueError, "unknown model"),
        ({"method": "magic"}, ValueError, "unknown pruning method"),
        ({"scope": "channel"}, ValueError, "unknown scope"),
        ({"p": 1.0, "q": 1.0}, ValueError, "p must be smaller"),
        ({"iterations": -1}, ValueError, "iterations"),
        ({"epochs": -2}, ValueError, "epochs"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"iterations": 1.5}, TypeError, "iterations"),
    ],
)
def test_config_validation(changes, error, match):
    with pytest.raises(error, match=match):
        ExperimentConfig(**{**TINY, "method": "sap", **changes})


def test_frame_columns_and_config_file(tmp_path):
    cfg = tiny("sap", iterations=1)
    res = run_experiment(cfg, tmp_path)
    df = res.frame()
    for col in ("iteration", "accuracy", "pruned_accuracy", "remaining_percent", "prune_rate", "compression",
                "speedup", "pqi_neuron", "pruned_si_layer", "gini_global", "fc1.weight/remaining_percent",
                "head.weight/pqi_neuron", "method", "scope", "seed", "run_id"):
        assert col in df.columns, col
    assert math.isnan(df.loc[0, "pruned_accuracy"]) and df.loc[1, "pruned_accuracy"] >= 0
    assert res.dense_accuracy == df.loc[0, "accuracy"]
    body = json.loads((res.run_dir / "config.json").read_text())
    assert body["run_id"] == cfg.run_id() and body["metadata"]["torch"] == torch.__version__
    assert res.metadata["device_type"] == "cpu"


def test_run_experiments_concatenates_and_deduplicates(tmp_path, monkeypatch):
    configs = [tiny("sap", iterations=1), tiny("random", iterations=1), tiny("sap", iterations=1)]
    calls = []
    original = banks.run_bank
    monkeypatch.setattr(banks, "run_bank", lambda cfgs, *a, **k: calls.extend(cfgs) or original(cfgs, *a, **k))
    df = grid.run_experiments(configs, tmp_path)
    assert sorted(c.run_id() for c in calls) == sorted(c.run_id() for c in configs[:2])  # the duplicate ran once
    assert df.method.tolist() == ["sap", "sap", "random", "random"]  # in the order given
    assert len(df) == 4 and sorted(df.method.unique()) == ["random", "sap"]
    assert set(df.run_id) == {c.run_id() for c in configs}
    with pytest.raises(ValueError, match="empty"):
        grid.run_experiments([], tmp_path)


# --------------------------------------------------------------------------------------------------
# The dense stage, the control, the data fingerprint


def count_dense_trainings(monkeypatch):
    calls = []
    original = dense.train_bank

    def counting(members, **kw):
        if kw.get("desc") == "dense":
            calls.extend(m.config.epochs for m in members)
        return original(members, **kw)

    monkeypatch.setattr(dense, "train_bank", counting)
    return calls


def test_dense_stage_is_trained_once_and_shared(tmp_path, monkeypatch):
    calls = count_dense_trainings(monkeypatch)
    lt = run_experiment(tiny("lottery-ticket", dense_epochs=3), tmp_path)
    sap = run_experiment(tiny("sap", scope="layer", dense_epochs=3, iterations=1), tmp_path)
    assert calls == [3]  # one dense training for two methods, scopes and schedules
    assert dense.dense_id(lt.config) == dense.dense_id(sap.config)
    artifact_dir = dense.ensure_dense(lt.config, tmp_path)
    assert artifact_dir == tmp_path / "dense" / dense.dense_id(lt.config)
    mtime = (artifact_dir / "dense.pt").stat().st_mtime_ns
    artifact = dense.load_dense(artifact_dir)
    assert lt.records[0]["accuracy"] == sap.records[0]["accuracy"] == artifact["accuracy"]
    ck = load_checkpoint(sap.run_dir)
    assert all(torch.equal(ck["dense"][k], artifact["dense"][k]) for k in artifact["dense"])
    assert len(artifact["history"]) == 3 and artifact["data_fingerprint"] == lt.data_fingerprint
    # another seed, or another dense length, is another artifact; the pruning settings are not part of it
    run_experiment(tiny("lottery-ticket", dense_epochs=3, seed=1), tmp_path)
    assert calls == [3, 3]
    assert dense.dense_id(tiny("lottery-ticket", dense_epochs=3, seed=1)) != dense.dense_id(lt.config)
    assert dense.dense_id(tiny("lottery-ticket", dense_epochs=4)) != dense.dense_id(lt.config)
    assert dense.dense_id(tiny("random", scope="global", dense_epochs=3, epochs=2, iterations=5)) == \
        dense.dense_id(lt.config)
    assert (artifact_dir / "dense.pt").stat().st_mtime_ns == mtime  # reused, never rewritten
    # no temporaries and no claims left; the claims' logs stay (who trained what)
    assert not [p for p in (tmp_path / "dense").iterdir() if p.name.startswith(".") and not p.name.endswith(".log")]


def test_dense_epochs_none_keeps_run_ids_and_numbers(tmp_path):
    cfg = tiny("sap")
    assert cfg.replace(dense_epochs=None).run_id() == cfg.run_id()
    assert "dense_epochs" not in cfg.hashed_fields()
    assert cfg.replace(dense_epochs=1).run_id() != cfg.run_id()  # same numbers, but named explicitly
    assert dense.dense_id(cfg.replace(dense_epochs=1)) == dense.dense_id(cfg)
    a = run_experiment(cfg, tmp_path)
    b = run_experiment(cfg.replace(dense_epochs=1), tmp_path)
    assert without_time(a.records) == without_time(b.records)
    with pytest.raises(ValueError, match="dense_epochs"):
        tiny("sap", dense_epochs=-1)


def test_corrupt_dense_artifact_is_detected(tmp_path):
    cfg = tiny("random", dense_epochs=2, iterations=1)
    folder = dense.ensure_dense(cfg, tmp_path)
    pt = folder / "dense.pt"
    good = pt.read_bytes()
    pt.write_bytes(good[:-3])
    with pytest.raises(CorruptRunError, match="dense.pt"):
        run_experiment(cfg, tmp_path)
    pt.write_bytes(good)
    assert run_experiment(cfg, tmp_path).complete


def test_control_prunes_nothing_and_retrains_on_the_same_schedule(tmp_path):
    starts = []
    cb = LambdaCallback(on_train_begin=lambda s: starts.append(s.config.epochs))
    cfg = tiny("control", iterations=3, dense_epochs=2)
    res = run_experiment(cfg, tmp_path, callbacks=[cb])
    assert starts == [2, 1, 1, 1]  # the dense stage, then a rewind-and-retrain per iteration
    assert all(m.count_alive() == m.count_total() for m in masks_of(res))
    assert [r["remaining_percent"] for r in res.records] == [100.0] * 4
    assert [r["prune_rate"] for r in res.records] == [0.0] * 4
    # the pruning hyper-parameters mean nothing for the control: one run id serves every scope
    assert tiny("control", iterations=3, dense_epochs=2, scope="global", rate=0.5).run_id() == cfg.run_id()
    # each iteration retrains from w_init with its own batch order: retrained models differ from the dense one
    assert len({r["loss"] for r in res.records}) > 1


def perturbed_digits(monkeypatch, change):
    full = identity.full_dataset("digits")
    x = change(full.x_train.clone())
    monkeypatch.setattr(identity, "full_dataset", lambda name: dataclasses.replace(full, x_train=x))
    identity.subset_and_fingerprint.cache_clear()


def test_reloading_a_finished_run_on_other_data_names_both_fingerprints(tmp_path, monkeypatch):
    cfg = tiny("lottery-ticket", iterations=1)
    done = run_experiment(cfg, tmp_path)
    old = done.data_fingerprint
    assert len(old) == 64 and json.loads((done.run_dir / "config.json").read_text())["data_fingerprint"] == old

    def touch_one_pixel(x):
        x[..., 3] += 1.0  # one pixel column of every image, e.g. files read from another folder
        return x

    perturbed_digits(monkeypatch, touch_one_pixel)
    new = identity.load_run_data(cfg, torch.device("cpu"))[1]
    assert new != old
    with pytest.raises(files.DataMismatchError) as err:
        run_experiment(cfg, tmp_path)
    assert old in str(err.value) and new in str(err.value)
    with pytest.raises(files.DataMismatchError, match=old):
        dense.ensure_dense(cfg, tmp_path)
    monkeypatch.undo()
    identity.subset_and_fingerprint.cache_clear()
    assert run_experiment(cfg, tmp_path).records == done.records  # the original data: loaded again


def test_resuming_on_another_split_is_an_error(tmp_path, monkeypatch):
    cfg = tiny("sap", iterations=3)
    with pytest.raises(Interrupt):
        run_experiment(cfg, tmp_path, callbacks=[interrupt_at_train_call(3)])
    old = load_run(cfg.run_dir(tmp_path)).data_fingerprint
    perturbed_digits(monkeypatch, lambda x: x.flip(0))  # the same images in another order: another split
    with pytest.raises(files.DataMismatchError) as err:
        run_experiment(cfg, tmp_path)
    assert old in str(err.value)
    monkeypatch.undo()
    identity.subset_and_fingerprint.cache_clear()


def test_data_fingerprint_is_by_content():
    from lqtheory.engine.data import load_dataset

    a = load_dataset("digits").subset(100, 50, seed=0)
    b = load_dataset("digits").subset(100, 50, seed=0)
    assert identity.data_fingerprint(a) == identity.data_fingerprint(b)
    assert identity.data_fingerprint(a) != identity.data_fingerprint(load_dataset("digits").subset(100, 50, seed=1))
    c = dataclasses.replace(a, y_test=a.y_test.clone())
    c.y_test[0] = (c.y_test[0] + 1) % 10
    assert identity.data_fingerprint(c) != identity.data_fingerprint(a)
