"""The training loop: masks hold, determinism, learning, clipping, ℓ1 penalty, schedule, callbacks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lqtheory.engine.data import load_dataset
from lqtheory.engine.training import LambdaCallback, TrainConfig, TrainingDivergedError, evaluate, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=500, n_test=200, seed=0)


def tiny_mlp(seed: int = 0, width: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def random_mask(model: nn.Module, keep: float = 0.5, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if p.dim() > 1}


def l1(model: nn.Module) -> float:
    return sum(float(p.detach().abs().sum()) for p in model.parameters() if p.dim() > 1)


def test_pruned_weights_stay_exactly_zero(digits):
    model = tiny_mlp()
    mask = random_mask(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Large weight decay, momentum and an ℓ1 penalty: all of them would move a zero weight if its
    # gradient or the post-step mask were missing.
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.1, weight_decay=0.05, momentum=0.9, l1_penalty=1e-3)
    seen = []

    def check(state):
        for name, m in mask.items():
            p = dict(state.model.named_parameters())[name]
            seen.append(bool((p.detach()[~m] == 0).all()))

    train(model, digits, cfg, mask=mask, seed=0, callbacks=[LambdaCallback(on_batch_end=check)])
    assert seen and all(seen)
    params = dict(model.named_parameters())
    for name, m in mask.items():
        w = params[name].detach()
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
        assert not torch.equal(w[m], before[name][m])  # the survivors did train


def test_mask_applied_before_first_step_and_validated(digits):
    model = tiny_mlp()
    mask = random_mask(model, keep=0.3)
    train(model, digits, TrainConfig(epochs=0), mask=mask)
    for name, p in model.named_parameters():
        if name in mask:
            assert int((p.detach() != 0).sum()) <= int(mask[name].sum())
    with pytest.raises(ValueError, match="does not have"):
        train(tiny_mlp(), digits, TrainConfig(epochs=1), mask={"nope.weight": mask["1.weight"]})
    with pytest.raises(ValueError, match="shape"):
        train(tiny_mlp(), digits, TrainConfig(epochs=1), mask={"1.weight": mask["1.weight"][:, :3]})
    with pytest.raises(TypeError, match="boolean"):
        train(tiny_mlp(), digits, TrainConfig(epochs=1), mask={"1.weight": mask["1.weight"].float()})


def test_deterministic_given_seed(digits):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05)
    runs = []
    for seed in (3, 3, 4):
        model = tiny_mlp(seed=0)
        hist = train(model, digits, cfg, seed=seed)
        runs.append((model.state_dict(), hist))
    (a, ha), (b, hb), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert not all(torch.equal(a[k], c[k]) for k in a)  # another seed shuffles differently


def test_training_leaves_global_rng_untouched(digits):
    model = tiny_mlp()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    train(model, digits, TrainConfig(epochs=1), seed=9)
    assert torch.equal(torch.get_rng_state(), state)


def test_tiny_model_learns_digits(digits):
    model = tiny_mlp()
    acc0, loss0 = evaluate(model, digits.x_test, digits.y_test)
    hist = train(model, digits, TrainConfig(epochs=8, batch_size=50, lr=0.1), seed=0)
    acc, loss = evaluate(model, digits.x_test, digits.y_test)
    assert acc > 0.8 > 0.1  # chance is 0.1
    assert loss < loss0
    assert hist[-1]["test_accuracy"] == acc and hist[-1]["test_loss"] == pytest.approx(loss)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_evaluate_matches_full_batch_oracle(digits):
    model = tiny_mlp(seed=5)
    x, y = digits.x_test, digits.y_test
    with torch.no_grad():
        out = model(x).double()
    oracle_acc = float((out.argmax(1) == y).double().mean())
    oracle_loss = float(nn.functional.cross_entropy(out, y))
    acc, loss = evaluate(model, x, y, batch_size=7)  # batches of 7 do not divide 200
    assert acc == pytest.approx(oracle_acc, abs=1e-12)
    assert loss == pytest.approx(oracle_loss, rel=1e-5)
    model.train()
    evaluate(model, x, y)
    assert model.training  # mode restored


def test_gradient_clipping_applied(digits):
    clip = 0.05
    pre, post = [], []

    def check(state):
        pre.append(state.grad_norm)
        grads = [p.grad.double() for p in state.model.parameters()]
        post.append(math.sqrt(sum(float((g * g).sum()) for g in grads)))

    cfg = TrainConfig(epochs=1, batch_size=50, lr=0.01, grad_clip=clip)
    train(tiny_mlp(), digits, cfg, callbacks=[LambdaCallback(on_batch_end=check)])
    assert max(pre) > clip  # clipping had something to do
    assert max(post) <= clip * (1 + 1e-5)
    for a, b in zip(pre, post, strict=True):
        assert b == pytest.approx(min(a, clip), rel=1e-4)
    # without clipping, the gradient reaching the optimiser is the raw one
    pre.clear(), post.clear()
    train(tiny_mlp(), digits, TrainConfig(epochs=1, batch_size=50, grad_clip=None),
          callbacks=[LambdaCallback(on_batch_end=check)])
    assert pre == pytest.approx(post, rel=1e-4) and max(post) > clip


def test_l1_penalty_shrinks_l1_norm(digits):
    norms = {}
    for lam in (0.0, 1e-2):
        model = tiny_mlp(seed=2)
        train(model, digits, TrainConfig(epochs=4, batch_size=50, lr=0.05, l1_penalty=lam), seed=0)
        norms[lam] = l1(model)
    assert norms[1e-2] < 0.8 * norms[0.0]


def test_cosine_schedule():
    cfg = TrainConfig(lr=0.1)
    assert cfg.lr_at(0, 100) == pytest.approx(0.1)
    assert cfg.lr_at(50, 100) == pytest.approx(0.05)
    assert cfg.lr_at(100, 100) == pytest.approx(0.0, abs=1e-15)
    assert TrainConfig(lr=0.1, schedule="constant").lr_at(70, 100) == 0.1


def test_schedule_reaches_optimizer(digits):
    lrs = []
    cfg = TrainConfig(epochs=2, batch_size=100, lr=0.2)
    train(tiny_mlp(), digits, cfg, callbacks=[LambdaCallback(
        on_batch_end=lambda s: lrs.append(s.optimizer.param_groups[0]["lr"]))])
    total = 2 * math.ceil(500 / 100)
    assert lrs == pytest.approx([cfg.lr_at(k, total) for k in range(total)])


def test_callback_can_stop_and_interrupt(digits):
    cfg = TrainConfig(epochs=5)

    def stop(state):
        state.stop = state.epoch == 1

    hist = train(tiny_mlp(), digits, cfg, callbacks=[LambdaCallback(on_epoch_end=stop)])
    assert [h["epoch"] for h in hist] == [1, 2]
    assert "test_accuracy" in hist[-1]  # evaluated although stopped early

    class Boom(RuntimeError):
        pass

    def boom(state):
        raise Boom

    with pytest.raises(Boom):
        train(tiny_mlp(), digits, cfg, callbacks=[LambdaCallback(on_epoch_end=boom)])
    with pytest.raises(TypeError, match="unknown hook"):
        LambdaCallback(on_step=print)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epochs": -1}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"lr": 0.0}, ValueError),
        ({"lr": float("nan")}, ValueError),
        ({"schedule": "step"}, ValueError),
        ({"momentum": 0.0}, ValueError),  # Nesterov without momentum
        ({"epochs": 1.5}, TypeError),
        ({"l1_penalty": -1.0}, ValueError),
        ({"grad_clip": -1.0}, ValueError),
    ],
)
def test_config_validation(kwargs, error):
    with pytest.raises(error):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("momentum", [1.0, 2.0])
def test_momentum_of_one_or_more_is_rejected(momentum):
    # issue #14 item 9: --momentum 2 was accepted without a word
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        TrainConfig(momentum=momentum)
    assert TrainConfig(momentum=0.99).momentum == 0.99


def test_divergence_is_reported_with_its_step(digits):
    # issue #14 item 9: lr 1e6 ended in "weights contain NaN or Inf" from the pruning statistics
    model = tiny_mlp()
    cfg = TrainConfig(epochs=2, batch_size=50, lr=1e6, grad_clip=None)
    diverged = r"training diverged: the loss is -?(nan|inf) at step \d+ of 20"
    with pytest.raises(TrainingDivergedError, match=diverged) as info:
        train(model, digits, cfg, seed=0)
    step = int(str(info.value).split(" at step ")[1].split()[0])
    assert 1 <= step <= 20
    # a run that stays finite trains as before
    assert train(tiny_mlp(), digits, TrainConfig(epochs=1, batch_size=50, lr=0.1), seed=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_masked_training(digits):
    model = tiny_mlp()
    mask = random_mask(model)
    train(model, digits, TrainConfig(epochs=1), mask=mask, device="cuda")
    for name, m in mask.items():
        w = dict(model.named_parameters())[name].detach().cpu()
        assert torch.equal(w[~m], torch.zeros_like(w[~m]))
