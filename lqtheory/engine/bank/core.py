"""``train_bank``: the loop of :func:`lqtheory.engine.training.train`, run for K members at once on stacked weights.

See the package docstring (:mod:`lqtheory.engine.bank`) for the contract; this module holds the loop,
the member checks and the epoch-boundary checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lqtheory.engine.bank.stacked import StackedMLP, architecture_signature, is_stackable
from lqtheory.engine.device import resolve_device
from lqtheory.engine.training import (
    Callback,
    TrainConfig,
    TrainingDivergedError,
    TrainState,
    epoch_generator,
    evaluate,
    loss_function,
    progress_enabled,
    train,
)

__all__ = ["PRECISIONS", "BankMember", "BankDivergedError", "train_bank", "bank_identity"]

#: Names of the precision settings; the name is what a caller hashes into a run's identity.
PRECISIONS = ("float32", "bfloat16")

_CHECKPOINT_FORMAT = "lqtheory-bank-checkpoint-v1"


@dataclasses.dataclass
class BankMember:
    """One run of a bank: what :func:`lqtheory.engine.training.train` would be called with for it.

    ``model`` holds the initial weights and is trained in place (as ``train`` does); ``mask`` (name →
    bool tensor, True = alive) and ``seed`` (batch orders: the per-``(seed, epoch)`` generator of
    ``train``) are the member's own; ``data`` and ``config`` must be the same for every member of a
    bank (:func:`train_bank` raises ``ValueError`` naming the difference). ``callbacks`` see a
    :class:`lqtheory.engine.training.TrainState` of this member alone. ``label`` names it in messages.
    """

    model: nn.Module
    data: Any
    config: TrainConfig
    mask: Mapping[str, torch.Tensor] | None = None
    seed: int = 0
    callbacks: Sequence[Callback] = ()
    label: str | None = None

    def name(self, k: int) -> str:
        return f"member {k}" + (f" ({self.label})" if self.label else "")


class BankDivergedError(TrainingDivergedError):
    """Some members diverged. The others finished; ``histories[k]`` is member k's history (``None``
    for a diverged member) and ``errors`` maps a diverged member's index to its error."""

    def __init__(self, message: str, histories: list[list[dict] | None], errors: dict[int, TrainingDivergedError]):
        super().__init__(message)
        self.histories = histories
        self.errors = errors


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _check_precision(precision) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _same_data(a, b) -> str | None:
    """None if ``a`` and ``b`` hold the same tensors, else the first difference."""
    if a is b:
        return None
    for name in ("x_train", "y_train", "x_test", "y_test"):
        ta, tb = getattr(a, name), getattr(b, name)
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            return f"{name} has shape {tuple(tb.shape)} {tb.dtype}, not {tuple(ta.shape)} {ta.dtype}"
        if not torch.equal(ta.cpu(), tb.cpu()):
            return f"{name} holds other values"
    ta, tb = getattr(a, "task", "classification"), getattr(b, "task", "classification")
    if ta != tb:
        return f"task is {tb!r}, not {ta!r}"
    return None


def _check_members(members: Sequence[BankMember]) -> list[BankMember]:
    members = list(members)
    if not members:
        raise ValueError("a bank needs at least one member")
    for k, m in enumerate(members):
        if not isinstance(m, BankMember):
            raise TypeError(f"members[{k}] must be a BankMember, got {type(m).__name__}")
        if not isinstance(m.model, nn.Module):
            raise TypeError(f"{m.name(k)}: model must be a torch.nn.Module, got {type(m.model).__name__}")
        if not isinstance(m.config, TrainConfig):
            raise TypeError(f"{m.name(k)}: config must be a TrainConfig, got {type(m.config).__name__}")
        if isinstance(m.seed, bool) or not isinstance(m.seed, int):
            raise TypeError(f"{m.name(k)}: seed must be an int, got {type(m.seed).__name__}")
        for cb in m.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"{m.name(k)}: callbacks must be Callback instances, got {type(cb).__name__}")
    first = members[0]
    ref_sig = architecture_signature(first.model)
    for k, m in enumerate(members[1:], start=1):
        if m.config != first.config:
            f = next(f.name for f in dataclasses.fields(TrainConfig)
                     if getattr(m.config, f.name) != getattr(first.config, f.name))
            raise ValueError(
                f"{m.name(k)} has another schedule than member 0: config.{f} = {getattr(m.config, f)!r}, "
                f"not {getattr(first.config, f)!r} (a bank trains members of one schedule)"
            )
        diff = _same_data(first.data, m.data)
        if diff is not None:
            raise ValueError(f"{m.name(k)} has other data than member 0: {diff} "
                             "(a bank trains members of one data set)")
        sig = architecture_signature(m.model)
        if sig != ref_sig:
            where = next((f"{b} instead of {a}" for a, b in zip(ref_sig, sig, strict=False) if a != b),
                         f"{len(sig)} entries instead of {len(ref_sig)}")
            raise ValueError(f"{m.name(k)} has another architecture than member 0: {where}")
    return members


def _stacked_masks(members, stack: StackedMLP, device) -> list[tuple[int, torch.Tensor]]:
    """``(param index, pruned)`` with ``pruned`` the stacked complement of the members' masks (True =
    pruned), for every parameter that some member prunes. Validation as in ``train``."""
    per_param: dict[int, list[torch.Tensor | None]] = {}
    K = len(members)
    for k, m in enumerate(members):
        if m.mask is None:
            continue
        if not isinstance(m.mask, Mapping):
            raise TypeError(f"{m.name(k)}: mask must be a Mask / mapping name -> bool tensor or None, "
                            f"got {type(m.mask).__name__}")
        for name, t in m.mask.items():
            if name not in stack.index:
                raise ValueError(f"{m.name(k)}: mask names parameter {name!r}, which the model does not have")
            i = stack.index[name]
            shape = tuple(stack.params[i].shape[1:])
            if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
                raise TypeError(f"{m.name(k)}: mask[{name!r}] must be a boolean tensor")
            if tuple(t.shape) != shape:
                raise ValueError(f"{m.name(k)}: mask[{name!r}] has shape {tuple(t.shape)} "
                                 f"but the parameter has {shape}")
            per_param.setdefault(i, [None] * K)[k] = t
    out = []
    for i, masks in sorted(per_param.items()):
        if all(t is None or bool(t.all()) for t in masks):
            continue  # nothing pruned in this tensor by any member
        shape = stack.params[i].shape[1:]
        pruned = torch.stack([
            torch.zeros(shape, dtype=torch.bool, device=device) if t is None else ~t.to(device) for t in masks
        ])
        out.append((i, pruned))
    return out


# --------------------------------------------------------------------------------------------------
# Identity and checkpoint
# --------------------------------------------------------------------------------------------------


def _digest_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)};".encode())
    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def bank_identity(members: Sequence[BankMember], precision: str = "float32") -> dict[str, Any]:
    """What a bank's checkpoint must match to be resumed: the shared config, the precision, and per
    member the seed and digests of its initial weights and mask (the data are checked by the digest
    of their tensors)."""
    members = list(members)
    data = members[0].data
    h = hashlib.sha256(b"lqtheory-bank-data-v1")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        _digest_tensor(h, getattr(data, name))
    per_member = []
    for m in members:
        hw = hashlib.sha256()
        for _, t in sorted(m.model.state_dict().items()):
            _digest_tensor(hw, t)
        hm = hashlib.sha256()
        for name, t in sorted((m.mask or {}).items()):
            hm.update(name.encode())
            _digest_tensor(hm, t)
        per_member.append({"seed": m.seed, "weights": hw.hexdigest()[:16], "mask": hm.hexdigest()[:16]})
    return {"format": _CHECKPOINT_FORMAT, "config": dataclasses.asdict(members[0].config),
            "precision": precision, "data": h.hexdigest()[:16], "members": per_member}


def _write_checkpoint(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash leaves the previous epoch's checkpoint


def _read_checkpoint(path: Path, identity: dict) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    stored = payload.get("identity")
    if stored != identity:
        diff = sorted(k for k in set(identity) | set(stored or {}) if (stored or {}).get(k) != identity.get(k))
        raise ValueError(f"checkpoint {path} belongs to another bank (differs in: {', '.join(diff)}); delete it")
    return payload


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


def _autocast(device: torch.device, precision: str):
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_bank(
    members: Sequence[BankMember],
    *,
    device: str | torch.device | None = None,
    precision: str = "float32",
    checkpoint: str | os.PathLike | None = None,
    progress: bool | None = None,
    desc: str = "bank epochs",
) -> list[list[dict]]:
    """Train every member as :func:`lqtheory.engine.training.train` would, together; return their histories.

    ``members``: :class:`BankMember` of one architecture, data set and :class:`TrainConfig`
    (``ValueError`` naming the difference otherwise). Each model is trained in place; the returned list
    holds one ``train``-style history per member, in order. ``precision``: ``"float32"`` (default) or
    ``"bfloat16"`` (autocast for the products; fp32 master weights, gradients, optimizer and
    reductions). ``checkpoint``: a file written atomically at every epoch boundary; a call with the
    same members and an existing checkpoint resumes from it (records equal to an uninterrupted bank's,
    ``seconds`` aside); it is deleted once the bank finished. ``device`` defaults to the data's.

    Plain MLPs (``linear``, ``mlp-*``, ``pqi-mlp``) train on stacked weights (one batched product per
    layer); any other model (the registry's CNNs) falls back to ``train``, member after member (the
    checkpoint then records finished members).
    """
    members = _check_members(members)
    precision = _check_precision(precision)
    data, config = members[0].data, members[0].config
    dev = resolve_device(device) if device is not None else data.x_train.device
    path = Path(checkpoint) if checkpoint is not None else None
    identity = bank_identity(members, precision) if path is not None else None
    if all(is_stackable(m.model) for m in members):
        return _train_stacked(members, data, config, dev, precision, path, identity, progress, desc)
    return _train_fallback(members, data, config, dev, precision, path, identity, progress, desc)


def _train_fallback(members, data, config, dev, precision, path, identity, progress, desc) -> list[list[dict]]:
    """Models the stacked path does not cover: ``train`` member by member (autocast around it for
    bfloat16); the checkpoint holds each finished member's weights and history."""
    histories: list[list[dict] | None] = [None] * len(members)
    if path is not None and path.is_file():
        payload = _read_checkpoint(path, identity)
        for k, (state, history) in payload["finished"].items():
            members[k].model.load_state_dict(state)
            members[k].model.to(dev)
            histories[k] = history
    for k, m in enumerate(members):
        if histories[k] is not None:
            continue
        with _autocast(dev, precision):
            histories[k] = train(m.model, data, config, mask=m.mask, device=dev, seed=m.seed,
                                 callbacks=m.callbacks, progress=progress, desc=f"{desc} {m.name(k)}")
        if path is not None:
            finished = {j: ({n: t.detach().cpu() for n, t in members[j].model.state_dict().items()}, histories[j])
                        for j in range(len(members)) if histories[j] is not None}
            _write_checkpoint(path, {"identity": identity, "finished": finished})
    if path is not None and path.exists():
        path.unlink()
    return histories  # type: ignore[return-value]


def _member_losses(out: torch.Tensor, yb: torch.Tensor, task: str) -> torch.Tensor:
    # One loss call per member slice (the very call ``train`` makes), so a member's loss and its
    # gradient are computed exactly as alone; ``unbind``'s backward is a single stack.
    loss_fn = loss_function(task)
    return torch.stack([loss_fn(o, y) for o, y in zip(out.unbind(0), yb.unbind(0), strict=True)])


@torch.no_grad()
def _evaluate_stacked(stack: StackedMLP, x, y, batch_size: int, task: str, precision: str, dev):
    """Per member ``(accuracy, loss)`` on ``(x, y)``, as :func:`lqtheory.engine.training.evaluate`."""
    K, n = stack.size, x.shape[0]
    if n == 0:
        return [(float("nan"), float("nan"))] * K
    loss_sum = torch.zeros(K, dtype=torch.float64, device=dev)
    correct = torch.zeros(K, dtype=torch.int64, device=dev)
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with _autocast(dev, precision):
            out = stack.forward(xb.unsqueeze(0).expand(K, *xb.shape))
            losses = _member_losses(out, yb.unsqueeze(0).expand(K, *yb.shape), task)
        loss_sum += losses.double() * xb.shape[0]
        if task == "classification":
            correct += (out.argmax(dim=2) == yb).sum(dim=1)
    accs = (correct.double() / n).tolist() if task == "classification" else [float("nan")] * K
    return list(zip(accs, (loss_sum / n).tolist(), strict=True))


def _train_stacked(members, data, config: TrainConfig, dev, precision, path, identity, progress, desc):
    K = len(members)
    for m in members:
        m.model.to(dev)
    x_train, y_train = data.x_train.to(dev), data.y_train.to(dev)
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    task = getattr(data, "task", "classification")
    stack = StackedMLP([m.model for m in members], dev)
    masked = _stacked_masks(members, stack, dev)
    l1_slots = [i for i, p in enumerate(stack.params) if p.dim() > 2] if config.l1_penalty > 0 else []
    momentum_bufs: list[torch.Tensor | None] = [None] * len(stack.params)
    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size) if n else 0
    total_steps = steps_per_epoch * config.epochs
    step, start_epoch = 0, 0
    active = list(range(K))  # members still training (a callback may stop one early)
    histories: list[list[dict]] = [[] for _ in range(K)]
    errors: dict[int, TrainingDivergedError] = {}
    final: dict[int, list[torch.Tensor]] = {}  # weights of members that left the stack

    if path is not None and path.is_file():
        ck = _read_checkpoint(path, identity)
        step, start_epoch, active = ck["step"], ck["epoch"], ck["active"]
        histories = ck["histories"]
        errors = {k: TrainingDivergedError(msg) for k, msg in ck["errors"].items()}
        final = {k: [t.to(dev) for t in ts] for k, ts in ck["final"].items()}
        stack.select(active)
        with torch.no_grad():
            for p, saved in zip(stack.params, ck["params"], strict=True):
                p.copy_(saved.to(dev))
        momentum_bufs = [None if b is None else b.to(dev) for b in ck["momentum"]]
        masked = [(i, pr.index_select(0, torch.as_tensor(active, device=dev))) for i, pr in masked]

    states = {k: TrainState(model=members[k].model, optimizer=None, config=config, data=data,  # type: ignore[arg-type]
                            total_steps=total_steps, step=step, history=histories[k]) for k in range(K)}
    with_callbacks = [k for k in range(K) if members[k].callbacks]

    def call(hook: str, *, grads: bool = False) -> None:
        for pos, k in enumerate(active):
            if members[k].callbacks:
                stack.write_member(pos, members[k].model, grads=grads)
                for cb in members[k].callbacks:
                    getattr(cb, hook)(states[k])

    with torch.no_grad():
        for i, pruned in masked:
            stack.params[i].masked_fill_(pruned, 0.0)

    show = progress_enabled(progress)
    bar = None
    if show and config.epochs > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=start_epoch, desc=desc, leave=False, file=sys.stderr)

    def leave(positions_to_drop: set[int]) -> None:
        """Members at these stack positions leave the bank (stopped or diverged)."""
        nonlocal active, masked, momentum_bufs
        keep = [pos for pos in range(len(active)) if pos not in positions_to_drop]
        for pos in positions_to_drop:
            final[active[pos]] = [p.detach()[pos].clone() for p in stack.params]
        idx = torch.as_tensor(keep, dtype=torch.long, device=dev)
        stack.select(keep)
        masked = [(i, pr.index_select(0, idx)) for i, pr in masked]
        momentum_bufs = [None if b is None else b.index_select(0, idx) for b in momentum_bufs]
        active = [active[pos] for pos in keep]

    fork_devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            call("on_train_begin")  # also on a resumed call: the hook sees the weights this call starts from
            for epoch in range(start_epoch, config.epochs):
                if not active:
                    break
                for k in active:
                    states[k].epoch = epoch
                call("on_epoch_begin")
                started = time.perf_counter()
                perms = torch.stack([torch.randperm(n, generator=epoch_generator(members[k].seed, epoch))
                                     for k in active]).to(dev)
                A = len(active)
                loss_sum = torch.zeros(A, dtype=torch.float64, device=dev)
                norm_sum = torch.zeros(A, dtype=torch.float64, device=dev)
                lr_first = config.lr_at(step, total_steps)
                for start in range(0, n, config.batch_size):
                    idx = perms[:, start : start + config.batch_size]
                    b = idx.shape[1]
                    flat = idx.reshape(-1)
                    xb = x_train.index_select(0, flat).view(A, b, *x_train.shape[1:])
                    yb = y_train.index_select(0, flat).view(A, b, *y_train.shape[1:])
                    lr = config.lr_at(step, total_steps)
                    for p in stack.params:
                        p.grad = None  # backward then writes the gradient instead of adding it to zeros
                    with _autocast(dev, precision):
                        out = stack.forward(xb)
                        losses = _member_losses(out, yb, task)
                    losses.sum().backward()  # d(sum)/d(loss_k) = 1: each member gets its own gradient
                    norms = _step(stack, masked, l1_slots, momentum_bufs, config, lr)
                    step += 1
                    losses = losses.detach()
                    finite = torch.isfinite(losses)
                    if not bool(finite.all()):
                        bad = [pos for pos in range(A) if not bool(finite[pos])]
                        for pos in bad:
                            k = active[pos]
                            errors[k] = TrainingDivergedError(
                                f"training diverged: {members[k].name(k)}'s loss is {float(losses[pos])} at step "
                                f"{step} of {total_steps} (epoch {epoch + 1}, learning rate {lr:g})"
                            )
                        keep_pos = [pos for pos in range(A) if pos not in bad]
                        leave(set(bad))
                        kp = torch.as_tensor(keep_pos, dtype=torch.long, device=dev)
                        perms, losses, norms, loss_sum, norm_sum = (
                            t.index_select(0, kp) for t in (perms, losses, norms, loss_sum, norm_sum))
                        A = len(active)
                        if not A:
                            break
                    loss_sum += losses.double()
                    norm_sum += norms.double()  # float32 norms summed in float64, as train's Python floats
                    for k in active:
                        states[k].step = step
                    if with_callbacks:
                        for pos, k in enumerate(active):
                            states[k].batch_loss = float(losses[pos])
                            states[k].grad_norm = float(norms[pos])
                        call("on_batch_end", grads=True)
                if not active:
                    break
                last = epoch + 1 == config.epochs
                evaluated = last or bool(config.eval_every and (epoch + 1) % config.eval_every == 0)
                scores = _evaluate_stacked(stack, x_test, y_test, config.eval_batch_size, task, precision, dev) \
                    if evaluated else None
                seconds = time.perf_counter() - started
                losses_cpu, norms_cpu = loss_sum.tolist(), norm_sum.tolist()
                for pos, k in enumerate(active):
                    record = {
                        "epoch": epoch + 1,
                        "lr": lr_first,
                        "train_loss": losses_cpu[pos] / steps_per_epoch if steps_per_epoch else float("nan"),
                        "grad_norm": norms_cpu[pos] / steps_per_epoch if steps_per_epoch else float("nan"),
                    }
                    if scores is not None:
                        record["test_accuracy"], record["test_loss"] = scores[pos]
                    record["seconds"] = seconds / len(active)  # the bank's epoch, shared among its members
                    histories[k].append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sum(losses_cpu) / len(losses_cpu) / max(steps_per_epoch, 1):.3f}",
                                    members=len(active))
                call("on_epoch_end")
                stopped = {pos for pos, k in enumerate(active) if states[k].stop}
                if stopped:
                    leave(stopped)
                if path is not None and epoch + 1 < config.epochs:
                    _write_checkpoint(path, {
                        "identity": identity, "epoch": epoch + 1, "step": step, "active": active,
                        "histories": histories, "errors": {k: str(e) for k, e in errors.items()},
                        "final": {k: [t.cpu() for t in ts] for k, ts in final.items()},
                        "params": [p.detach().cpu() for p in stack.params],
                        "momentum": [None if b is None else b.cpu() for b in momentum_bufs],
                    })
            for pos in range(len(active)):
                final[active[pos]] = [p.detach()[pos] for p in stack.params]
            # write the final weights into the members' models; evaluate those stopped early (as train)
            for k, m in enumerate(members):
                if k in errors:
                    continue
                with torch.no_grad():
                    named = dict(m.model.named_parameters())
                    for name, t in zip(stack.names, final[k], strict=True):
                        named[name].copy_(t)
                if step and not all(bool(torch.isfinite(p).all()) for p in m.model.parameters()):
                    errors[k] = TrainingDivergedError(
                        f"training diverged: {m.name(k)}'s weights contain NaN or Inf after step {step} of "
                        f"{total_steps} (learning rate {config.lr:g})"
                    )
                    continue
                if histories[k] and "test_accuracy" not in histories[k][-1]:  # stopped early by a callback
                    acc, loss = evaluate(m.model, x_test, y_test, config.eval_batch_size, task=task)
                    histories[k][-1]["test_accuracy"], histories[k][-1]["test_loss"] = acc, loss
                for cb in m.callbacks:
                    cb.on_train_end(states[k])
    finally:
        if bar is not None:
            bar.close()
    if path is not None and path.exists():
        path.unlink()
    if errors:
        names = ", ".join(members[k].name(k) for k in sorted(errors))
        first = errors[min(errors)]
        raise BankDivergedError(f"{len(errors)} of {K} members diverged ({names}); first: {first}",
                                [None if k in errors else h for k, h in enumerate(histories)], errors)
    return histories


@torch.no_grad()
def _step(stack: StackedMLP, masked, l1_slots, momentum_bufs, config: TrainConfig, lr: float) -> torch.Tensor:
    """Steps 2-5 of ``train``'s optimisation step on every member's slice; returns the pre-clip norms.

    The operations and scalars are ``train``'s (the ℓ1 subgradient, the masked gradient,
    ``clip_grad_norm_``'s norms and coefficient, ``torch.optim.SGD``'s single-tensor update). Exactly
    rounded elementwise operations (a product, a plain sum, a fill) run once over the stacked tensors.
    Reductions and scaled adds (``add_(x, alpha=a)``) run on each member's slice (``torch._foreach_*``
    over the slices), i.e. as the very calls ``train`` makes on tensors of the same size: how a
    kernel vectorises, splits across threads and fuses such an operation may depend on the tensor's
    size, so a member's rounding would otherwise rest on kernel details. (Measured on the machine this
    was written on: whole-stack versions also passed the size-independence test; the per-member form
    costs about 4% of a bank epoch.)
    """
    params = stack.params
    grads = [p.grad for p in params]
    K = params[0].shape[0]
    p_sl = [list(p.detach().unbind(0)) for p in params]
    g_sl = [list(g.unbind(0)) for g in grads]
    for i in l1_slots:
        torch._foreach_add_(g_sl[i], torch._foreach_sign(p_sl[i]), alpha=config.l1_penalty)
    for i, pruned in masked:
        grads[i].masked_fill_(pruned, 0.0)
    P = len(params)
    member_norms = torch._foreach_norm([g_sl[i][k] for k in range(K) for i in range(P)])
    norms = torch.stack([torch.linalg.vector_norm(torch.stack(member_norms[k * P:(k + 1) * P])) for k in range(K)])
    if config.grad_clip:
        coef = torch.clamp(config.grad_clip / (norms + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(K, *([1] * (g.dim() - 1))))
    all_g = [t for sl in g_sl for t in sl]
    all_p = [t for sl in p_sl for t in sl]
    # torch.optim.SGD's single-tensor update, in place on the gradient (a fresh tensor every step)
    if config.weight_decay != 0:
        torch._foreach_add_(all_g, all_p, alpha=config.weight_decay)
    step_dirs = all_g
    if config.momentum != 0:
        for i, g in enumerate(grads):
            if momentum_bufs[i] is None:
                momentum_bufs[i] = g.clone()
            else:
                momentum_bufs[i].mul_(config.momentum).add_(g)
        all_b = [t for b in momentum_bufs for t in b.unbind(0)]
        if config.nesterov:
            torch._foreach_add_(all_g, all_b, alpha=config.momentum)
        else:
            step_dirs = all_b
    torch._foreach_add_(all_p, step_dirs, alpha=-lr)
    for i, pruned in masked:
        params[i].masked_fill_(pruned, 0.0)
    return norms
