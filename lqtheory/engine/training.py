"""The training loop: device-resident batches, masked weights kept exactly zero, callbacks for behaviour.

The loop is closed to modification and open to callbacks (CONVENTIONS.md): experiments add behaviour
(logging, early stopping, interruption in tests) through :class:`Callback` objects, never through
branches inside :func:`train`.

One optimisation step, in this order (the order is what keeps pruned weights at exactly zero):

1. forward and data loss on a batch taken from device-resident tensors (no DataLoader): each epoch
   draws ``torch.randperm`` from a CPU generator seeded with ``(seed, epoch)``, so the batch order is
   the same on every device;
2. backward; the ℓ1 penalty ``λ Σ|w|`` over the prunable weights enters as its subgradient
   ``λ sign(w)`` (0 at w = 0);
3. the gradients of pruned entries are zeroed, then the gradient norm is clipped (so pruned entries
   neither count in the norm nor receive an update);
4. SGD step (momentum, Nesterov, decoupled-from-nothing weight decay ``wd·w``, as ``torch.optim.SGD``);
5. the mask is re-applied to the weights. With zero weights and zero gradients, weight decay and
   momentum (whose buffers start at zero for every call of :func:`train`) cannot revive a pruned
   entry; step 5 makes that a guarantee rather than an argument.

The learning rate follows a cosine schedule per optimisation step,
``lr_k = lr · ½ (1 + cos(π k / K))`` with ``K`` the total number of steps, the per-step form of the
cosine annealing the papers use per epoch (it also decays within a single epoch, which matters at the
tiny epoch counts of the ``ci`` profile).

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lqtheory.common.vocabulary import ENV_PROGRESS
from lqtheory.engine.device import resolve_device
from lqtheory.engine.models import prunable_parameters

if TYPE_CHECKING:
    from lqtheory.engine.data import Dataset

__all__ = [
    "TrainConfig",
    "TrainState",
    "TrainingDivergedError",
    "Callback",
    "LambdaCallback",
    "train",
    "evaluate",
    "progress_enabled",
    "SCHEDULES",
]

SCHEDULES = ("cosine", "constant")


def _check_int(value, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _check_float(value, name: str, *, low: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = value > low if strict else value >= low
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value:g}")
    return value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run [paper: the 2022 code and ICLR 2023 setup].

    Defaults are E2's: SGD lr 0.03 (E3 uses 0.1), momentum 0.9, Nesterov, weight decay 5e-4, cosine
    schedule, gradient-norm clip 1, batch 250. ``epochs`` defaults to 1 because every caller picks its
    own (the paper: 100 for E2, 200 for E3). ``l1_penalty`` adds ``λ Σ|w|`` over the prunable weights
    (``dim > 1``) to the objective; ``grad_clip=None`` (or 0) disables clipping. ``eval_every=k`` evaluates
    on the test split every k epochs (0: only after the last epoch).
    """

    epochs: int = 1
    batch_size: int = 250
    lr: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    l1_penalty: float = 0.0
    eval_batch_size: int = 1000
    eval_every: int = 0

    def __post_init__(self) -> None:
        _check_int(self.epochs, "epochs", low=0)
        _check_int(self.batch_size, "batch_size", low=1)
        _check_int(self.eval_batch_size, "eval_batch_size", low=1)
        _check_int(self.eval_every, "eval_every", low=0)
        _check_float(self.lr, "lr", strict=True)
        _check_float(self.momentum, "momentum")
        if self.momentum >= 1.0:  # the momentum buffer would grow without bound: training cannot converge
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum:g}")
        _check_float(self.weight_decay, "weight_decay")
        _check_float(self.l1_penalty, "l1_penalty")
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be a bool, got {type(self.nesterov).__name__}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.grad_clip is not None:
            _check_float(self.grad_clip, "grad_clip")

    def lr_at(self, step: int, total_steps: int) -> float:
        """The learning rate of optimisation step ``step`` (0-based) out of ``total_steps``."""
        if self.schedule == "constant" or total_steps <= 0:
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


class TrainingDivergedError(RuntimeError):
    """The training loss or the weights became NaN or infinite (learning rate too large, most often)."""


@dataclasses.dataclass
class TrainState:
    """What a callback sees. Set ``stop = True`` to end training after the current epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    data: Any
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # optimisation steps taken so far
    total_steps: int = 0
    batch_loss: float = float("nan")
    grad_norm: float = float("nan")  # norm before clipping, of the masked gradient
    history: list[dict] = dataclasses.field(default_factory=list)
    stop: bool = False


class Callback:
    """Hooks called by :func:`train`; override the ones you need. Exceptions propagate (an exception
    raised from a hook interrupts training, which is how the tests simulate a crash)."""

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_epoch_begin(self, state: TrainState) -> None:
        pass

    def on_batch_end(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass


class LambdaCallback(Callback):
    """A callback built from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda s: ...)``."""

    _HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")

    def __init__(self, **hooks: Callable[[TrainState], None]) -> None:
        unknown = set(hooks) - set(self._HOOKS)
        if unknown:
            raise TypeError(f"unknown hook(s) {sorted(unknown)}; known: {self._HOOKS}")
        for name, fn in hooks.items():
            if not callable(fn):
                raise TypeError(f"{name} must be callable")
            setattr(self, name, fn)


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show tqdm bars: ``progress`` if given; else ``$LQTHEORY_PROGRESS`` when it is
    ``0``/``1`` (also false/true, no/yes, off/on); else only when stderr is a terminal, so notebooks
    under papermill/nbval and CI logs stay quiet and stable."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get(ENV_PROGRESS, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def loss_function(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "classification":
        return F.cross_entropy
    if task == "regression":
        return lambda out, y: F.mse_loss(out.reshape(y.shape), y)
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    *,
    task: str = "classification",
) -> tuple[float, float]:
    """``(accuracy, mean loss)`` of ``model`` on ``(x, y)``, in eval mode, in batches.

    Classification: accuracy is the fraction of argmax predictions equal to ``y``, loss the mean
    cross-entropy. Regression: accuracy is NaN and loss the mean squared error. The model's
    train/eval mode is restored afterwards. An empty split gives ``(nan, nan)``.
    """
    _check_int(batch_size, "batch_size", low=1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    loss_fn = loss_function(task)
    n = x.shape[0]
    if n == 0:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = model(xb)
            loss_sum += loss_fn(out, yb).double() * xb.shape[0]
            if task == "classification":
                correct += (out.argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    accuracy = float(correct) / n if task == "classification" else float("nan")
    return accuracy, float(loss_sum) / n


def _masked_parameters(
    model: nn.Module, mask: Mapping[str, torch.Tensor] | None
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pair each masked parameter of ``model`` with the complement of its mask (True = pruned), on the
    parameter's device. Tensors with nothing pruned are left out (masking them changes nothing)."""
    if mask is None:
        return []
    if not isinstance(mask, Mapping):
        raise TypeError(f"mask must be a Mask / mapping name -> bool tensor or None, got {type(mask).__name__}")
    params = dict(model.named_parameters())
    pairs = []
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask names parameter {name!r}, which the model does not have")
        p = params[name]
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"mask[{name!r}] must be a boolean tensor")
        if m.shape != p.shape:
            raise ValueError(f"mask[{name!r}] has shape {tuple(m.shape)} but the parameter has {tuple(p.shape)}")
        m = m.to(p.device)
        if bool(m.all()):
            continue  # nothing pruned in this tensor: masking it is a no-op, skip the per-step work
        pairs.append((p, ~m))  # stored inverted: the loop fills the pruned entries
    return pairs


def _prunable(model: nn.Module) -> list[nn.Parameter]:
    return list(prunable_parameters(model).values())


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One CPU generator per (seed, epoch): the batch order is device-independent and an epoch's
    # order does not depend on how many draws earlier epochs made.
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1))
    return g


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    callbacks: Sequence[Callback] | Iterable[Callback] = (),
    progress: bool | None = None,
    desc: str = "epochs",
) -> list[dict]:
    """Train ``model`` in place on ``data`` (a :class:`lqtheory.engine.data.Dataset`) and return the history.

    ``mask`` (a :class:`lqtheory.engine.masks.Mask` or any mapping parameter name → bool tensor, True = alive)
    is applied to the weights before the first step and after every step, and the gradients of pruned
    entries are zeroed, so pruned weights stay exactly zero (module docstring). ``device`` defaults
    to the data's device; the model and the data are moved there. The global torch RNG is forked and
    seeded with ``seed`` for the duration (dropout etc.), and batch orders come from per-epoch
    generators, so training is deterministic given ``seed`` on one device and leaves the caller's
    random streams untouched.

    Returns one dict per epoch: ``epoch`` (1-based), ``lr`` (at the epoch's first step),
    ``train_loss`` (mean data loss over the epoch's batches), ``grad_norm`` (mean pre-clip norm),
    ``seconds`` (wall time), and ``test_accuracy``/``test_loss`` on evaluated epochs (always the last).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
    dev = resolve_device(device) if device is not None else data.x_train.device
    model.to(dev)
    x_train, y_train = data.x_train.to(dev), data.y_train.to(dev)
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    task = getattr(data, "task", "classification")
    loss_fn = loss_function(task)

    masked = _masked_parameters(model, mask)
    l1_params = _prunable(model) if config.l1_penalty > 0 else []
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size) if n else 0
    state = TrainState(
        model=model,
        optimizer=optimizer,
        config=config,
        data=data,
        total_steps=steps_per_epoch * config.epochs,
    )

    with torch.no_grad():
        for p, pruned in masked:
            p.masked_fill_(pruned, 0.0)

    show = progress_enabled(progress)
    bar = None
    if show and config.epochs > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, desc=desc, leave=False, file=sys.stderr)

    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model.train()
        for cb in callbacks:
            cb.on_train_begin(state)
        try:
            for epoch in range(config.epochs):
                state.epoch = epoch
                for cb in callbacks:
                    cb.on_epoch_begin(state)
                started = time.perf_counter()
                perm = torch.randperm(n, generator=epoch_generator(seed, epoch)).to(dev)
                loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
                norm_sum = 0.0
                lr_first = config.lr_at(state.step, state.total_steps)
                for start in range(0, n, config.batch_size):
                    idx = perm[start : start + config.batch_size]
                    xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr_at(state.step, state.total_steps)
                    optimizer.zero_grad(set_to_none=False)
                    loss = loss_fn(model(xb), yb)
                    loss.backward()
                    with torch.no_grad():
                        for p in l1_params:
                            if p.grad is not None:
                                p.grad.add_(torch.sign(p), alpha=config.l1_penalty)
                        for p, pruned in masked:
                            if p.grad is not None:
                                p.grad.masked_fill_(pruned, 0.0)
                    # clip_grad_norm_ returns the pre-clip norm; max_norm=inf only measures it.
                    norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
                    optimizer.step()
                    with torch.no_grad():
                        for p, pruned in masked:
                            p.masked_fill_(pruned, 0.0)
                    state.step += 1
                    state.batch_loss = float(loss.detach())
                    if not math.isfinite(state.batch_loss):
                        lr_now = optimizer.param_groups[0]["lr"]
                        raise TrainingDivergedError(
                            f"training diverged: the loss is {state.batch_loss} at step {state.step} of "
                            f"{state.total_steps} (epoch {epoch + 1}, learning rate {lr_now:g})"
                        )
                    state.grad_norm = float(norm)
                    loss_sum += loss.detach().double()
                    norm_sum += state.grad_norm
                    for cb in callbacks:
                        cb.on_batch_end(state)
                record = {
                    "epoch": epoch + 1,
                    "lr": lr_first,
                    "train_loss": float(loss_sum) / steps_per_epoch if steps_per_epoch else float("nan"),
                    "grad_norm": norm_sum / steps_per_epoch if steps_per_epoch else float("nan"),
                }
                last = epoch + 1 == config.epochs
                if last or (config.eval_every and (epoch + 1) % config.eval_every == 0):
                    acc, test_loss = evaluate(model, x_test, y_test, config.eval_batch_size, task=task)
                    record["test_accuracy"], record["test_loss"] = acc, test_loss
                record["seconds"] = time.perf_counter() - started
                state.history.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['train_loss']:.3f}")
                for cb in callbacks:
                    cb.on_epoch_end(state)
                if state.stop:
                    break
            if state.step and not all(bool(torch.isfinite(p).all()) for p in params):
                raise TrainingDivergedError(
                    f"training diverged: the weights contain NaN or Inf after step {state.step} of "
                    f"{state.total_steps} (learning rate {config.lr:g})"
                )
            if state.history and "test_accuracy" not in state.history[-1]:  # stopped early by a callback
                acc, test_loss = evaluate(model, x_test, y_test, config.eval_batch_size, task=task)
                state.history[-1]["test_accuracy"], state.history[-1]["test_loss"] = acc, test_loss
            for cb in callbacks:
                cb.on_train_end(state)
        finally:
            if bar is not None:
                bar.close()
    return state.history
