"""A bank of runs trained together (lqtheory.engine.bank): bank-size independence, masks, resume, errors.

The central property: a member's records and final weights do not depend on the company it keeps
(alone, in a bank of 2 or of K, at any position), checked with ``torch.equal`` and exact record
equality. ``train_bank`` is also compared with :func:`lqtheory.engine.training.train` (the per-run loop).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lqtheory.engine.bank import BankDivergedError, BankMember, is_stackable, train_bank
from lqtheory.engine.data import load_dataset
from lqtheory.engine.training import LambdaCallback, TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent

# momentum, Nesterov, weight decay, l1, clipping that binds, a cosine schedule, a ragged last batch
CFG = TrainConfig(epochs=3, batch_size=64, lr=0.2, weight_decay=5e-3, l1_penalty=1e-4, grad_clip=0.5, eval_every=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=500, n_test=200, seed=0)


def mlp(seed: int, width: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def random_mask(model: nn.Module, seed: int, keep: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if p.dim() > 1}


def member(seed: int, data, config=CFG, **kw) -> BankMember:
    model = mlp(seed)
    return BankMember(model, data, config, mask=random_mask(model, seed), seed=seed, **kw)


def strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same_run(a: tuple, b: tuple) -> None:
    assert strip(a[0]) == strip(b[0])
    assert len(a[1]) == len(b[1]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1], strict=True))


def run_bank(seeds, data, **kw) -> dict[int, tuple]:
    members = [member(s, data) for s in seeds]
    histories = train_bank(members, progress=False, **kw)
    return {s: (h, weights(m.model)) for s, h, m in zip(seeds, histories, members, strict=True)}


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_records_and_weights_do_not_depend_on_bank_size_or_position(digits, threads):
    # at 2 threads a lone member's products would go to a multi-threaded BLAS call (other rounding)
    # unless the bank keeps them single-threaded: this is the case that failed before it did
    alone = {s: run_bank([s], digits)[s] for s in (0, 4)}
    for seeds in ([0, 1], [0, 1, 2], [3, 2, 1, 0, 4], [4, 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]):
        bank = run_bank(seeds, digits)
        for s in (0, 4):
            if s in bank:
                assert_same_run(bank[s], alone[s])
    # the members did train, each its own way (not one run copied K times)
    assert alone[0][0][-1]["train_loss"] < alone[0][0][0]["train_loss"]
    assert strip(alone[0][0]) != strip(alone[4][0])


def test_bank_is_deterministic_and_matches_train_closely(digits):
    a, b = run_bank([0, 1], digits), run_bank([0, 1], digits)
    assert_same_run(a[0], b[0])
    model = mlp(0)
    history = train(model, digits, CFG, mask=random_mask(model, 0), seed=0, progress=False)
    bank_history, bank_weights = a[0]
    # Same batch orders, same schedule, same records keys; the numbers agree to float32 rounding (on
    # the machine this was written on they are bit-identical; that is not promised across CPUs).
    assert [set(r) for r in history] == [set(r) for r in bank_history]
    for r, q in zip(history, bank_history, strict=True):
        assert r["epoch"] == q["epoch"] and r["lr"] == q["lr"]
        for key in ("train_loss", "grad_norm", "test_loss", "test_accuracy"):
            assert math.isclose(r[key], q[key], rel_tol=1e-5, abs_tol=1e-6), key
    for x, y in zip(weights(model), bank_weights, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_pruned_weights_stay_exactly_zero_inside_a_bank(digits):
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.1, weight_decay=0.05, momentum=0.9, l1_penalty=1e-3)
    members, seen = [], []

    def checker(mask):
        def check(state):
            params = dict(state.model.named_parameters())
            for name, m in mask.items():
                seen.append(bool((params[name].detach()[~m] == 0).all()))
                seen.append(bool((params[name].grad[~m] == 0).all()))
        return check

    for s, keep in ((0, 0.3), (1, 0.7), (2, 1.0)):
        model = mlp(s)
        mask = random_mask(model, s, keep)
        cb = [LambdaCallback(on_batch_end=checker(mask))] if s != 2 else []
        members.append(BankMember(model, digits, cfg, mask=mask, seed=s, callbacks=cb))
    before = [weights(m.model) for m in members]
    train_bank(members, progress=False)
    assert seen and all(seen)
    for m, start in zip(members, before, strict=True):
        params = dict(m.model.named_parameters())
        for (name, mask), w0 in zip(m.mask.items(), [w for w in start if w.dim() > 1], strict=True):
            w = params[name].detach()
            assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
            assert not torch.equal(w[mask], w0[mask])  # the survivors trained


class Crash(RuntimeError):
    pass


def test_an_interrupted_bank_resumes_to_the_uninterrupted_records(digits, tmp_path):
    seeds = [0, 1, 2]
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.2, l1_penalty=1e-4, eval_every=1)
    reference_members = [member(s, digits, cfg) for s in seeds]
    reference = train_bank(reference_members, progress=False)

    ckpt = tmp_path / "bank.pt"

    def boom(state):
        if state.epoch == 2:  # the third epoch ends, then the process "dies"
            raise Crash("interrupted")

    crashing = [member(s, digits, cfg, callbacks=[LambdaCallback(on_epoch_end=boom)] if s == 1 else ())
                for s in seeds]
    with pytest.raises(Crash):
        train_bank(crashing, checkpoint=ckpt, progress=False)
    assert ckpt.is_file()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2  # the last completed epoch boundary

    resumed_members = [member(s, digits, cfg) for s in seeds]  # rebuilt from their initial weights
    resumed = train_bank(resumed_members, checkpoint=ckpt, progress=False)
    assert [strip(h) for h in resumed] == [strip(h) for h in reference]
    for a, b in zip(resumed_members, reference_members, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(weights(a.model), weights(b.model), strict=True))
    assert not ckpt.exists()  # removed once the bank finished


def test_a_checkpoint_of_another_bank_is_refused(digits, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=64)
    ckpt = tmp_path / "bank.pt"

    def boom(state):
        if state.epoch == 1:  # after the first epoch's checkpoint
            raise Crash("interrupted")

    with pytest.raises(Crash):
        train_bank([member(0, digits, cfg, callbacks=[LambdaCallback(on_epoch_end=boom)])], checkpoint=ckpt,
                   progress=False)
    with pytest.raises(ValueError, match="belongs to another bank.*members"):
        train_bank([member(1, digits, cfg)], checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="belongs to another bank.*precision"):
        train_bank([member(0, digits, cfg)], checkpoint=ckpt, precision="bfloat16", progress=False)
    assert ckpt.is_file()  # a refused checkpoint is left alone


def test_members_of_another_schedule_data_or_architecture_are_refused(digits):
    a = member(0, digits)
    with pytest.raises(ValueError, match=r"member 1 \(b\) has another schedule.*config\.lr = 0\.3"):
        train_bank([a, member(1, digits, TrainConfig(epochs=3, batch_size=64, lr=0.3), label="b")])
    other = load_dataset("digits", n_train=400, n_test=200, seed=0)
    with pytest.raises(ValueError, match="member 1 has other data.*x_train"):
        train_bank([a, member(1, other)])
    wide = BankMember(mlp(1, width=48), digits, CFG)
    with pytest.raises(ValueError, match="member 1 has another architecture"):
        train_bank([a, wide])
    with pytest.raises(ValueError, match="at least one member"):
        train_bank([])
    with pytest.raises(ValueError, match="precision must be one of"):
        train_bank([a], precision="fp16")
    with pytest.raises(ValueError, match="mask names parameter 'nope'"):
        train_bank([BankMember(mlp(0), digits, CFG, mask={"nope": torch.ones(3, dtype=torch.bool)})])
    with pytest.raises(TypeError, match="members\\[0\\] must be a BankMember"):
        train_bank([mlp(0)])


def test_a_member_stopped_by_its_callback_leaves_the_others_unchanged(digits):
    alone = run_bank([1], digits)[1]
    after_first_epoch = []

    def snapshot(state):
        if state.epoch == 0:
            after_first_epoch.extend(weights(state.model))

    full = member(0, digits, callbacks=[LambdaCallback(on_epoch_end=snapshot)])
    full_history = train_bank([full], progress=False)[0]

    def stop(state):
        state.stop = state.epoch == 0

    members = [member(0, digits, callbacks=[LambdaCallback(on_epoch_end=stop)]), member(1, digits)]
    histories = train_bank(members, progress=False)
    assert strip(histories[0]) == strip(full_history[:1])  # eval_every=1: the first record is complete
    assert all(torch.equal(x, y) for x, y in zip(weights(members[0].model), after_first_epoch, strict=True))
    assert_same_run((histories[1], weights(members[1].model)), alone)


def test_a_diverging_member_is_reported_and_the_others_finish(digits):
    alone = run_bank([1], digits)[1]
    bad = member(0, digits, label="huge")
    with torch.no_grad():
        next(bad.model.parameters()).fill_(float("inf"))
    with pytest.raises(BankDivergedError, match=r"1 of 2 members diverged \(member 0 \(huge\)\)") as err:
        train_bank([bad, member(1, digits)], progress=False)
    assert err.value.histories[0] is None and set(err.value.errors) == {0}
    assert strip(err.value.histories[1]) == strip(alone[0])


@pytest.mark.parametrize("precision", ["bfloat16"])
def test_bfloat16_bank_is_size_independent_and_learns_like_float32(digits, precision):
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.2)
    runs = {}
    for seeds in ([0], [1, 0, 2]):
        members = [BankMember(mlp(s), digits, cfg, seed=s) for s in seeds]
        histories = train_bank(members, precision=precision, progress=False)
        runs[len(seeds)] = (histories[seeds.index(0)], weights(members[seeds.index(0)].model))
    assert_same_run(runs[3], runs[1])
    assert all(w.dtype == torch.float32 for w in runs[1][1])  # fp32 master weights
    fp32 = train_bank([BankMember(mlp(0), digits, cfg, seed=0)], progress=False)[0]
    bf16 = runs[1][0]
    assert bf16[-1]["train_loss"] < bf16[0]["train_loss"]
    assert abs(bf16[-1]["test_accuracy"] - fp32[-1]["test_accuracy"]) < 0.05
    assert strip(bf16) != strip(fp32)  # bf16 products did run


def test_models_the_stacked_path_does_not_cover_fall_back_to_train(digits):
    def cnn(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))

    small = load_dataset("digits", n_train=120, n_test=60, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=40)
    assert not is_stackable(cnn(0)) and is_stackable(mlp(0))
    members = [BankMember(cnn(s), small, cfg, seed=s) for s in (0, 1)]
    histories = train_bank(members, progress=False)
    for s, h, m in zip((0, 1), histories, members, strict=True):
        lone = cnn(s)
        expected = train(lone, small, cfg, seed=s, progress=False)
        assert strip(h) == strip(expected)
        assert all(torch.equal(x, y) for x, y in zip(weights(m.model), weights(lone), strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_bank_is_size_independent(digits):
    cfg = TrainConfig(epochs=2, batch_size=64)
    runs = {}
    for seeds in ([0], [0, 1, 2]):
        members = [BankMember(mlp(s), digits, cfg, seed=s) for s in seeds]
        histories = train_bank(members, device="cuda", progress=False)
        assert next(members[0].model.parameters()).device.type == "cuda"
        runs[len(seeds)] = (histories[0], [w.cpu() for w in weights(members[0].model)])
    assert_same_run(runs[3], runs[1])


def test_benchmark_runs_and_reports_every_key(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_engine_smoke", ROOT / "benchmarks" / "bench_engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "engine.json"
    result = module.main(["--quick", "--repeats", "1", "--bank-size", "2", "--n-train", "500", "--json", str(out)])
    assert out.is_file()
    for key in ("loop_fp32", "bank_fp32", "floor_fp32", "floor_bf16"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["bank_size"] == 2
    assert result["bank_bf16"] is None or result["bank_bf16"] > 0
    assert result["flops_per_model_epoch"] == module.flops_per_epoch([(784, 128), (128, 128), (128, 10)], 500)


def test_regression_and_zero_epochs_behave_as_train():
    teacher = load_dataset("teacher-normal", n_train=300, n_test=100, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05)

    def reg(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(teacher.input_shape[0], 16), nn.ReLU(), nn.Linear(16, teacher.num_classes))

    for epochs in (2, 0):
        c = TrainConfig(**{**cfg.__dict__, "epochs": epochs})
        members = [BankMember(reg(s), teacher, c, mask=random_mask(reg(s), s), seed=s) for s in (0, 1)]
        histories = train_bank(members, progress=False)
        for s, h, m in zip((0, 1), histories, members, strict=True):
            lone = reg(s)
            expected = train(lone, teacher, c, mask=random_mask(reg(s), s), seed=s, progress=False)
            assert len(h) == epochs and [set(r) for r in h] == [set(r) for r in expected]
            for r, q in zip(h, expected, strict=True):
                assert math.isclose(r["train_loss"], q["train_loss"], rel_tol=1e-5)
            if epochs:
                assert math.isnan(h[-1]["test_accuracy"])  # regression: no accuracy, as train
                assert math.isclose(h[-1]["test_loss"], expected[-1]["test_loss"], rel_tol=1e-5)
            for x, y in zip(weights(m.model), weights(lone), strict=True):
                torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
