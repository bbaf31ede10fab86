"""K plain MLPs held as stacked tensors: one ``(K, out, in)`` weight per layer, one batched product.

A member is a plain ReLU MLP ``[Flatten], Linear, (ReLU, Linear)*`` (``linear``, ``mlp-{w}-1-{d}-relu``,
``pqi-mlp``; :func:`lqtheory.engine.models.mlp_weights` decides what counts as one). Layer ``l`` of all
members is the leaf tensor ``weights[l]`` of shape ``(K, out, in)`` (and ``biases[l]``, ``(K, out)``),
and the forward pass is one ``torch.baddbmm`` per layer over the member axis. Nothing here mixes
members: every product, reduction and elementwise pass acts on one member's slice, so a member's
numbers do not depend on which or how many other members share the stack (checked by
``tests/test_engine_bank.py`` on the machine it runs on; batched GEMM kernels are not promised to be
batch-count invariant in general).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["StackedMLP", "is_stackable", "architecture_signature"]


def _linears(model: nn.Module) -> list[nn.Linear]:
    from lqtheory.engine.models import mlp_linears

    return mlp_linears(model)


def is_stackable(model: nn.Module) -> bool:
    """Whether ``model`` is a plain MLP the stacked path trains (else the bank falls back to ``train``)."""
    try:
        _linears(model)
    except ValueError:
        return False
    return True


def architecture_signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype)`` of every parameter and buffer, plus the module types: two members
    belong in one bank only if their signatures are equal."""
    sig = [(f"module:{type(m).__name__}", (), "") for m in model.modules()]
    sig += [(name, tuple(p.shape), str(p.dtype)) for name, p in model.named_parameters()]
    sig += [(f"buffer:{name}", tuple(b.shape), str(b.dtype)) for name, b in model.named_buffers()]
    return sig


@contextlib.contextmanager
def _gemm_threads(members: int):
    """One thread for the products of a bank of one. ``bmm`` over K >= 2 members runs each member's
    product single-threaded (the batch is split across threads); over one member it hands the whole
    product to a multi-threaded BLAS call, whose blocking, and so rounding, differs at some shapes
    (measured: the head's weight gradient at 2 threads). A lone member then computes what it computes
    in company."""
    threads = torch.get_num_threads()
    if members != 1 or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _BatchedLinear(torch.autograd.Function):
    """``x @ W^T + b`` for ``(K, batch, in)`` inputs and ``(K, out, in)`` weights, with the backward
    products in ``nn.Linear``'s orientation: ``grad_W = g^T @ x`` (contiguous ``(K, out, in)``, no
    transposed copy) and ``grad_x = g @ W``, the products ``train`` computes for a lone model.

    Under bfloat16 autocast the forward product runs in bf16; the backward then computes its products in
    the gradient's dtype (bf16) and the bias gradient as a float32 reduction; autograd hands the
    weight gradients to the fp32 master weights as fp32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        w_t = weight.transpose(1, 2)
        with _gemm_threads(x.shape[0]):
            return torch.bmm(x, w_t) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w_t)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        dt = grad.dtype
        with _gemm_threads(grad.shape[0]):
            grad_x = torch.bmm(grad, weight.to(dt)) if ctx.needs_input_grad[0] else None
            grad_w = torch.bmm(grad.transpose(1, 2), x.to(dt)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:  # per member: a reduction's split may depend on its size
            grad_b = torch.stack([g.sum(0, dtype=torch.float32) for g in grad.unbind(0)]).to(weight.dtype)
        return grad_x, grad_w, grad_b


class StackedMLP:
    """The layers of K MLPs of one architecture, stacked on a leading member axis.

    ``names[i]`` is the parameter name (``fc1.weight``, ``2.bias``, ...) of ``params[i]``, a leaf
    tensor ``(K, *shape)`` on ``device`` requiring grad. :meth:`forward` maps ``(K, batch, ...)``
    inputs to ``(K, batch, classes)`` outputs.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device):
        layer_lists = [_linears(m) for m in models]
        self.depth = len(layer_lists[0])
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        self._layer_slots: list[tuple[int, int | None]] = []  # (weight index, bias index or None)
        ref_names = {id(p): n for n, p in models[0].named_parameters()}
        for l in range(self.depth):
            lin = layer_lists[0][l]
            w_index = len(self.params)
            self.names.append(ref_names[id(lin.weight)])
            self.params.append(self._stack([layers[l].weight for layers in layer_lists], device))
            b_index = None
            if lin.bias is not None:
                b_index = len(self.params)
                self.names.append(ref_names[id(lin.bias)])
                self.params.append(self._stack([layers[l].bias for layers in layer_lists], device))
            self._layer_slots.append((w_index, b_index))
        self.index = {n: i for i, n in enumerate(self.names)}

    @staticmethod
    def _stack(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([t.detach().to(device) for t in tensors]).requires_grad_(True)

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, batch, *input_shape)`` → ``(K, batch, classes)``; one batched product per layer."""
        h = x.reshape(x.shape[0], x.shape[1], -1)
        for l, (wi, bi) in enumerate(self._layer_slots):
            h = _BatchedLinear.apply(h, self.params[wi], None if bi is None else self.params[bi])
            if l + 1 < self.depth:
                h = torch.relu(h)
        return h

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the members at positions ``keep`` (a stopped member leaves the stack)."""
        idx = torch.as_tensor(list(keep), dtype=torch.long, device=self.params[0].device)
        with torch.no_grad():
            self.params = [p.detach().index_select(0, idx).requires_grad_(True) for p in self.params]

    @torch.no_grad()
    def write_member(self, k: int, model: nn.Module, *, grads: bool = False) -> None:
        """Copy member ``k``'s slice (and, with ``grads``, its gradient) into ``model``'s parameters."""
        named = dict(model.named_parameters())
        for name, p in zip(self.names, self.params, strict=True):
            target = named[name]
            target.copy_(p[k])
            if grads:
                if p.grad is None:
                    target.grad = None
                elif target.grad is None:
                    target.grad = p.grad[k].clone()
                else:
                    target.grad.copy_(p.grad[k])
