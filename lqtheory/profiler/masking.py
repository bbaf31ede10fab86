"""Masks on a model's profiled weights: per-unit magnitude budgets, and zeroing them in place for a while.

Shared by the profile (:mod:`lqtheory.profiler.core`), the peers' one-shot prunability
(:mod:`lqtheory.profiler.peers`) and ``lqtheory allocate``.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from lqtheory.engine.masks import unit_view
from lqtheory.theory.selection import magnitude_prune

__all__ = ["budget_masks", "masked_weights", "model_parameter"]


def budget_masks(weights: dict[str, torch.Tensor], keep: torch.Tensor, mask=None) -> dict[str, torch.Tensor]:
    """Keep masks (name → bool, shaped like the profiled weights) that keep ``keep[u]`` largest-magnitude
    entries of every unit ``u`` (unit_view order), via :func:`lqtheory.theory.selection.magnitude_prune` per block."""
    view = unit_view(weights, "neuron", mask)
    d = view.alive_counts()
    parts = view.split_units(d - keep.to(d.device))
    return view.blocks_to_dict(
        magnitude_prune(v, n, mask=None if mask is None else m) for (v, m), n in zip(view.blocks, parts, strict=True)
    )


def model_parameter(model: torch.nn.Module, name: str) -> torch.Tensor:
    """``model.get_parameter(name)``, also for TorchScript modules (attribute walk)."""
    obj = model
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@contextmanager
def masked_weights(model: torch.nn.Module, masks: dict[str, torch.Tensor], transposed: set[str] = frozenset()):
    """Temporarily zero the masked-out entries of ``model``'s parameters (restored on exit)."""
    saved = {}
    try:
        with torch.no_grad():
            for name, m in masks.items():
                p = model_parameter(model, name)
                saved[name] = p.detach().clone()
                p.mul_((m.t() if name in transposed else m).to(p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                model_parameter(model, name).copy_(value)
