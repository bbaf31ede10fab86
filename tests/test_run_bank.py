"""The bank as the grids' unit of work (lqtheory.runs.banks, issue #19 phase 2): a grid's records are the
same whether its runs train in banks of K, banks of 1 or one run at a time; masks keep pruned weights at
exactly zero inside a bank; an interrupted bank resumes to the records of an uninterrupted one; the
precision is part of a run's identity only when it is not float32. (The killed Dask worker's bank is in
tests/test_sweep.py, which owns the cluster.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lqtheory.engine.training import Callback
from lqtheory.runs import ExperimentConfig, dense, folder, runner
from lqtheory.runs.banks import BANK_FOLDER, bank_key, run_bank
from lqtheory.runs.grid import run_grid
from lqtheory.runs.grid.graph import plan_banks, plan_grid

TINY = {"dataset": "digits", "model": "mlp-16-1-1-relu", "n_train": 300, "n_test": 120, "epochs": 2,
        "batch_size": 50, "lr": 0.1, "device": "cpu", "iterations": 2}
# methods x scopes x seeds, plus a run with more iterations (it trains on alone once the others are done)
GRID = [ExperimentConfig(**{**TINY, "method": m, "scope": s, "seed": sd})
        for m, s in (("sap", "neuron"), ("lottery-ticket", "global"), ("random", "layer")) for sd in (0, 1)]
GRID.append(ExperimentConfig(**{**TINY, "method": "one-shot", "iterations": 3}))


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.delenv("LQTHEORY_SCHEDULER", raising=False)
    monkeypatch.delenv("LQTHEORY_EXECUTOR", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the grid workers' setting, under which a bank equals train bit for bit
    yield
    torch.set_num_threads(before)


def stored(out: Path, config: ExperimentConfig) -> str:
    """results.json of a run as canonical text, wall times and the file's own checksum left out."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("wall_time", "sha256")}
        return [strip(v) for v in o] if isinstance(o, list) else o

    return json.dumps(strip(json.loads((config.run_dir(out) / "results.json").read_text())), sort_keys=True)


def masks(out: Path, config: ExperimentConfig) -> list[bytes]:
    return [p.read_bytes() for p in sorted(config.run_dir(out).glob("mask_*.pt"))]


@pytest.fixture(scope="module")
def single_run_store(tmp_path_factory):
    """The grid through the single-run path (run_experiment, one run after another): the reference."""
    out = tmp_path_factory.mktemp("single")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for cfg in GRID:
            runner.run_experiment(cfg, out, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def test_plan_banks_groups_by_what_a_bank_shares_and_cuts_to_size(tmp_path):
    other = ExperimentConfig(**{**TINY, "method": "sap", "lr": 0.05})  # another schedule: another bank
    plan = plan_grid([*GRID, other], tmp_path)
    banks = plan_banks(plan.runs, tmp_path, bank_size=3)
    assert sorted(r.run_id for b in banks for r in b.runs) == sorted(r.run_id for r in plan.runs)
    assert all(len({bank_key(c) for c in b.configs}) == 1 and 1 <= len(b.runs) <= 3 for b in banks)
    assert [len(b.runs) for b in banks if other in b.configs] == [1]
    assert len(banks) == 1 + 3  # 7 runs of one key in banks of at most 3, and the other one
    assert len(plan_banks(plan.runs, tmp_path, spread=4)) == 4 + 1  # the default size (12), one bank per worker
    assert len({b.key for b in banks}) == len(banks)
    with pytest.raises(ValueError, match="bank_size"):
        plan_banks(plan.runs, tmp_path, bank_size=0)


@pytest.mark.parametrize("bank_size", [7, 3, 1])
def test_a_grids_records_do_not_depend_on_its_banks(tmp_path, single_run_store, bank_size):
    df = run_grid(GRID, tmp_path, executor="serial", threads=1, bank_size=bank_size, progress=False)
    assert df.run_id.tolist() == [rid for cfg in GRID for rid in [cfg.run_id()] * (cfg.iterations + 1)]
    for cfg in GRID:
        assert stored(tmp_path, cfg) == stored(single_run_store, cfg), cfg.describe()
        assert masks(tmp_path, cfg) == masks(single_run_store, cfg)
        a, b = folder.load_checkpoint(cfg.run_dir(tmp_path)), folder.load_checkpoint(cfg.run_dir(single_run_store))
        assert all(torch.equal(a["latest"][k], b["latest"][k]) for k in a["latest"])
    assert not list((tmp_path / BANK_FOLDER).glob("*.pt"))  # finished banks leave no checkpoint


class PrunedStayZero(Callback):
    """Checks after every step, inside the bank, that every pruned weight of the member is exactly zero."""

    def __init__(self):
        self.checked = 0
        self.masks: dict[int, dict[str, torch.Tensor]] = {}  # id(member model) -> its mask

    def on_batch_end(self, state):
        for name, param in state.model.named_parameters():
            mask = self.masks.get(id(state.model), {}).get(name)
            if mask is not None:
                assert torch.count_nonzero(param.detach()[~mask]) == 0, name
                self.checked += 1


def test_masks_keep_pruned_weights_exactly_zero_in_a_bank(tmp_path, monkeypatch):
    from lqtheory.runs import loop

    check = PrunedStayZero()
    prepare = loop.RunLoop.prepare

    def remembering(self, t, *, callbacks=()):  # the callback needs each member's mask
        member = prepare(self, t, callbacks=callbacks)
        if member is not None:
            check.masks[id(member.model)] = dict(member.mask.items())
        return member

    monkeypatch.setattr(loop.RunLoop, "prepare", remembering)
    configs = GRID[:4]
    for cfg in configs:
        dense.ensure_dense(cfg, tmp_path)  # the callback watches the banks only
    run_bank(configs, tmp_path, callbacks=[check])
    assert check.checked > 0
    for cfg in configs:
        ck = folder.load_checkpoint(cfg.run_dir(tmp_path))
        pruned = sum(int((~m).sum()) for m in ck["mask"].values())
        assert pruned > 0
        assert all(torch.count_nonzero(ck["latest"][n][~m]) == 0 for n, m in ck["mask"].items())


class InterruptMidIteration(Callback):
    """Ctrl-C in the second epoch of iteration 2 (the bank's checkpoint after epoch 1 is on disk)."""

    def __init__(self, members: int):
        self.members, self.begun = members, 0

    def on_train_begin(self, state):
        self.begun += 1

    def on_epoch_begin(self, state):
        if self.begun > self.members and state.epoch == 1:  # iteration 1 began `members` trainings
            raise KeyboardInterrupt


def test_an_interrupted_bank_resumes_to_the_records_of_an_uninterrupted_one(tmp_path, single_run_store):
    configs = GRID[:4]
    for cfg in configs:
        dense.ensure_dense(cfg, tmp_path)  # so that the callback counts only the banks' trainings
    with pytest.raises(KeyboardInterrupt):
        run_bank(configs, tmp_path, callbacks=[InterruptMidIteration(len(configs))])
    assert [len(folder.load_run(c.run_dir(tmp_path)).records) for c in configs] == [2] * 4  # t = 0, 1 committed
    checkpoints = list((tmp_path / BANK_FOLDER).glob("*-t2.pt"))
    assert len(checkpoints) == 1  # the bank stopped mid-iteration 2 with an epoch-boundary checkpoint
    results = run_bank(configs, tmp_path)
    assert all(r.complete for r in results)
    assert not checkpoints[0].exists()  # resumed from it, then removed
    for cfg in configs:
        assert stored(tmp_path, cfg) == stored(single_run_store, cfg)
        assert masks(tmp_path, cfg) == masks(single_run_store, cfg)


def test_finished_runs_load_without_training(tmp_path, monkeypatch):
    run_bank(GRID[:2], tmp_path)
    from lqtheory.runs import banks

    monkeypatch.setattr(banks, "train_bank", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = run_bank([GRID[1], GRID[0], GRID[1]], tmp_path)
    assert [r.run_id for r in again] == [GRID[1].run_id(), GRID[0].run_id(), GRID[1].run_id()]


def test_bfloat16_is_another_run_and_trains(tmp_path):
    fp32 = GRID[0]
    bf16 = fp32.replace(precision="bfloat16")
    assert bf16.run_id() != fp32.run_id() and dense.dense_id(bf16) != dense.dense_id(fp32)
    assert "precision" not in fp32.to_dict() and "precision" not in fp32.hashed_fields()  # old ids and folders stay
    assert bf16.hashed_fields()["precision"] == "bfloat16"
    assert ExperimentConfig.from_dict(bf16.to_dict()) == bf16
    with pytest.raises(ValueError, match="precision"):
        fp32.replace(precision="float16")
    res, ref = run_bank([bf16, fp32], tmp_path)
    assert res.complete and res.config.precision == "bfloat16"
    assert dense.load_dense(dense.dense_dir(bf16, tmp_path))["identity"]["precision"] == "bfloat16"
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(res.records, ref.records, strict=True)]
    assert any(a != b for a, b in losses)  # bfloat16 products: other last bits than float32 ...
    assert all(abs(a - b) < 0.05 for a, b in losses)  # ... and the same training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_banks_do_not_change_a_runs_records(tmp_path):
    configs = [c.replace(device="cuda") for c in GRID[:4]]
    run_grid(configs, tmp_path / "k", executor="serial", bank_size=4, progress=False)
    run_grid(configs, tmp_path / "one", executor="serial", bank_size=1, progress=False)
    for cfg in configs:
        assert stored(tmp_path / "k", cfg) == stored(tmp_path / "one", cfg)


def test_bank_size_from_the_environment(tmp_path, monkeypatch):
    from lqtheory.runs.grid.settings import resolve_bank_size

    assert resolve_bank_size(None) is None and resolve_bank_size(3) == 3
    monkeypatch.setenv("LQTHEORY_BANK_SIZE", "5")
    assert resolve_bank_size(None) == 5 and resolve_bank_size(2) == 2
    monkeypatch.setenv("LQTHEORY_BANK_SIZE", "0")
    with pytest.raises(ValueError, match="LQTHEORY_BANK_SIZE"):
        run_grid(GRID[:1], tmp_path, executor="serial")


def test_a_diverged_member_leaves_its_bank_and_the_others_finish(tmp_path, single_run_store, monkeypatch):
    from lqtheory.engine.bank import BankDivergedError
    from lqtheory.engine.training import TrainingDivergedError
    from lqtheory.runs import banks

    original = banks.train_bank

    def first_member_diverges(members, **kw):  # at iteration 1, as train_bank reports a diverged member
        histories = original(members, **kw)
        if kw.get("desc") == "iteration 1":
            raise BankDivergedError("1 of K members diverged", [None, *histories[1:]],
                                    {0: TrainingDivergedError("training diverged: loss is nan")})
        return histories

    monkeypatch.setattr(banks, "train_bank", first_member_diverges)
    configs = sorted(GRID[:3], key=lambda c: c.run_id())  # a bank's members are in run-id order
    with pytest.raises(TrainingDivergedError, match=f"run {configs[0].run_id()}.*diverged"):
        run_bank(configs, tmp_path)
    assert len(folder.load_run(configs[0].run_dir(tmp_path)).records) == 1  # t = 0 only, nothing committed after
    for cfg in configs[1:]:
        assert stored(tmp_path, cfg) == stored(single_run_store, cfg)  # the others finished, unchanged
