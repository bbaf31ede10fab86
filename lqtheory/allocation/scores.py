"""Importance scores of every prunable weight: ``magnitude`` (``|W|``) and ``wanda`` (``|W| · ||X||``).

Wanda (Sun et al., 2023) scores weight ``W[i, j]`` by ``|W[i, j]| · ||X_j||_2``, the norm of input
feature ``j`` over all calibration tokens/positions. The norms come from forward pre-hooks on the
layers the profiler finds (:func:`lqtheory.profiler.profiled_weights`), one pass over the calibration
inputs, batched per layer: a Linear's features are its input's last axis; a Conv's are the columns of
its im2col matrix (``F.unfold``, ordered as the flattened filter ``(C_in/groups, k...)``, per group);
``nn.MultiheadAttention.in_proj_weight`` uses the query's features (exact for self-attention). A layer
whose hook never fires (e.g. ``out_proj`` inside ``MultiheadAttention``'s fused path) keeps plain
magnitudes and is listed in the returned notes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SCORES", "magnitude_scores", "wanda_scores", "input_feature_norms"]

SCORES = ("magnitude", "wanda")


def magnitude_scores(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``|W|`` of every profiled weight (rows = units)."""
    return {n: w.detach().abs().double() for n, w in weights.items()}


def _module_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mod_name, _, pname = name.rpartition(".")
    return (model.get_submodule(mod_name) if mod_name else model), pname


def _conv_columns(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sum over positions and inputs of the squared im2col columns: ``(C_in · prod(k),)``."""
    k = module.kernel_size
    if x.dim() == len(k) + 1:  # unbatched input
        x = x.unsqueeze(0)
    if len(k) == 1:  # Conv1d as a height-1 Conv2d
        x, k = x.unsqueeze(-2), (1, k[0])
        stride, pad, dil = (1, module.stride[0]), (0, module.padding[0]), (1, module.dilation[0])
    elif len(k) == 2:
        stride, pad, dil = module.stride, module.padding, module.dilation
    else:
        raise NotImplementedError("Conv3d")
    if isinstance(pad, str):  # 'same' / 'valid': unfold needs numbers
        pad = tuple((d * (kk - 1)) // 2 for d, kk in zip(dil, k, strict=True)) if pad == "same" else (0, 0)
    cols = F.unfold(x.double(), k, dilation=dil, padding=pad, stride=stride)  # (N, C*kh*kw, L)
    return cols.pow(2).sum(dim=(0, 2))


def input_feature_norms(model: nn.Module, names, run) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``{name: ||X_j||_2 per input column of the weight}`` for the weights ``names`` of ``model`` over
    the calibration pass ``run()`` (a callable that runs the model), and the names no hook saw."""
    sums: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name, module):
        tname = type(module).__name__

        def hook(mod, args, kwargs=None):
            x = args[0] if args else (kwargs or {}).get("query", (kwargs or {}).get("input"))
            if not isinstance(x, torch.Tensor):
                return
            x = x.detach()
            if tname.startswith("Conv") and tname != "Conv1D":
                part = _conv_columns(mod, x)
            else:
                part = x.double().reshape(-1, x.shape[-1]).pow(2).sum(0)
            sums[name] = sums.get(name, 0) + part

        return hook

    for name in names:
        module, _ = _module_of(model, name)
        handles.append(module.register_forward_pre_hook(hook_for(name, module), with_kwargs=True))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return {n: s.sqrt() for n, s in sums.items()}, [n for n in names if n not in sums]


def _row_feature_norms(module: nn.Module, weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """The norms laid out like ``weight`` (rows = units), groups of a grouped conv respected."""
    rows = weight.shape[0]
    flat = weight.reshape(rows, -1)
    groups = getattr(module, "groups", 1)
    if groups > 1 and norms.numel() == flat.shape[1] * groups:
        per_group = norms.reshape(groups, flat.shape[1])
        return per_group.repeat_interleave(rows // groups, dim=0).reshape(weight.shape)
    if norms.numel() != flat.shape[1]:
        raise ValueError(f"{norms.numel()} input features for a weight of row width {flat.shape[1]}")
    return norms.reshape(1, -1).expand(rows, -1).reshape(weight.shape)


def wanda_scores(model: nn.Module, weights: dict[str, torch.Tensor], run) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Wanda's ``|W| · ||X||`` for every profiled weight (see the module docstring) and notes."""
    norms, unseen = input_feature_norms(model, list(weights), run)
    scores, notes = {}, []
    for name, w in weights.items():
        mag = w.detach().abs().double()
        if name not in norms:
            scores[name] = mag
            continue
        module, _ = _module_of(model, name)
        scores[name] = mag * _row_feature_norms(module, w, norms[name].to(w.device))
    if unseen:
        notes.append(f"wanda: no calibration input reached {len(unseen)} layer(s) (e.g. {unseen[0]}); "
                     "they are scored by magnitude")
    return scores, notes
