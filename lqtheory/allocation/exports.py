"""Hand an allocation to the tools that prune for real.

* :func:`prune_masks` / :func:`save_masks`: ``{parameter name: bool mask}`` shaped like the model's
  own parameters (HF ``Conv1D`` weights transposed back), which ``torch.nn.utils.prune.custom_from_mask``
  accepts as is (:func:`apply_masks` does exactly that for every entry);
* :func:`torch_pruning_ratios`: ``{module name: layer sparsity}`` for Torch-Pruning's
  ``pruning_ratio_dict`` (:func:`torch_pruning_ratio_dict` turns the names into the modules it wants).
  Torch-Pruning removes whole channels, so the ratio is read there as the fraction of a layer's output
  channels to remove: the unstructured allocation transfers its per-layer shares, not its masks;
* :func:`llmcompressor_recipe`: an llm-compressor recipe (YAML) whose ``SparseGPTModifier`` (or another
  sparsity modifier) gets the layer names as ``targets`` and the per-layer ``sparsity`` list in the same
  order; llm-compressor then chooses the weights within each layer itself.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from lqtheory.common.atomic import atomic_open

__all__ = ["prune_masks", "save_masks", "apply_masks", "torch_pruning_ratios", "torch_pruning_ratio_dict",
           "llmcompressor_recipe"]


def prune_masks(allocation, transposed=frozenset()) -> dict[str, torch.Tensor]:
    """Bool masks by parameter name, in the parameters' own layout (for ``prune.custom_from_mask``)."""
    return {n: (m.t() if n in transposed else m).detach().cpu().bool().contiguous()
            for n, m in allocation.masks.items()}


def save_masks(path, allocation, transposed=frozenset()) -> None:
    """``torch.save`` the masks (a plain dict of bool tensors: loads with ``weights_only=True``)."""
    with atomic_open(path) as fh:
        torch.save(prune_masks(allocation, transposed), fh)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """``torch.nn.utils.prune.custom_from_mask`` for every ``module.param`` entry of ``masks``."""
    from torch.nn.utils import prune

    for name, mask in masks.items():
        module_name, _, param = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        prune.custom_from_mask(module, param, mask)
    return model


def _module(name: str) -> str:
    return name.rpartition(".")[0]


def torch_pruning_ratios(allocation) -> dict[str, float]:
    """``{module name: sparsity}`` of every layer the allocation covers."""
    return {_module(n): float(s) for n, s in allocation.layer_sparsity().items()}


def torch_pruning_ratio_dict(model: nn.Module, ratios: dict[str, float], ignore=()) -> dict[nn.Module, float]:
    """Torch-Pruning's ``pruning_ratio_dict`` (module → ratio) from :func:`torch_pruning_ratios`."""
    return {model.get_submodule(n): r for n, r in ratios.items() if n not in set(ignore)}


def llmcompressor_recipe(allocation, modifier: str = "SparseGPTModifier") -> str:
    """An llm-compressor recipe (YAML text) with this allocation's per-layer sparsities."""
    import yaml

    sparsity = allocation.layer_sparsity()
    targets = [_module(n) for n in sparsity]
    body = {"sparsity_stage": {"sparsity_modifiers": {modifier: {
        "sparsity": [round(float(v), 6) for v in sparsity.values()],
        "targets": targets,
        "mask_structure": "0:0",
    }}}}
    header = (f"# lqtheory allocate: rule {allocation.rule}, score {allocation.score}, target sparsity "
              f"{allocation.sparsity:g} (kept fraction {allocation.kept_fraction:.6f})\n")
    return header + yaml.safe_dump(body, sort_keys=False)


def dumps_ratios(ratios: dict[str, float]) -> str:
    return json.dumps(ratios, indent=1)
