"""What the profiler measures: the prunable units of any model, and their indices and budgets.

A *unit* is a row of a weight that a neuron computes with: a Linear row (attention and FFN projections
included), a Conv output filter, a row of ``nn.MultiheadAttention.in_proj_weight``. Every other
parameter (embeddings, normalisation scales, biases, anything else) is listed as skipped, with the reason.

All statistics come from the package's batched routines, run once per block of equal row width
(:func:`lqtheory.engine.masks.unit_view`), never per neuron: :func:`lqtheory.theory.norms.pq_index`,
:func:`~lqtheory.theory.norms.sparsity_index`, :func:`~lqtheory.theory.norms.teacher_sparsity_index`,
:func:`~lqtheory.theory.norms.gini_index`, :func:`~lqtheory.theory.norms.si_implied_size` (the four norm-based ones
at once through :func:`~lqtheory.theory.norms.index_set`, which shares their norms),
:func:`lqtheory.theory.approximation.required_terms` (S1) and :func:`lqtheory.theory.selection.sap_prune_counts`.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lqtheory.engine.masks import unit_view
from lqtheory.theory.approximation import required_terms
from lqtheory.theory.norms import gini_index, index_set, sort_magnitudes
from lqtheory.theory.selection import sap_prune_counts

__all__ = ["DEFAULT_EPS", "CURVE_EPS", "Settings", "Units", "profiled_weights", "measure_units", "needed_terms"]

DEFAULT_EPS = (0.3, 0.1, 0.03, 0.01)
#: ε grid of the compressibility curves (relative ℓ1 tail), log-spaced
CURVE_EPS = (0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002)

_UNIT_MODULES = {"Linear", "NonDynamicallyQuantizableLinear", "Conv1d", "Conv2d", "Conv3d", "Conv1D"}
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
_NORM_NAMES = ("Norm", "norm")


@dataclass(frozen=True)
class Settings:
    """Exponents of the indices: PQI ``I_{p,q}``, SI/TSI/m at ``si_q``, S1 counts at ``s1_q``; SAP's η, γ, β."""

    p: float = 0.5
    q: float = 1.0
    si_q: float = 0.5
    s1_q: float = 0.5
    eta: float = 0.0
    gamma: float = 1.0
    beta: float = 0.9
    eps: tuple[float, ...] = DEFAULT_EPS

    def __post_init__(self):
        eps = tuple(float(e) for e in self.eps)
        if not eps or any(not 0 < e <= 1 for e in eps):
            raise ValueError(f"eps must be one or more values in (0, 1], got {self.eps!r}")
        object.__setattr__(self, "eps", eps)


def _kind(name: str, module: nn.Module) -> str:
    low = name.lower()
    tname = getattr(module, "original_name", type(module).__name__)
    if tname.startswith("Conv") and tname != "Conv1D":
        return "conv"
    if any(k in low for k in ("query", "key", "value", "q_proj", "k_proj", "v_proj", "in_proj", "attn", "attention")):
        return "attention"
    if any(k in low for k in ("intermediate", "output.dense", "ffn", "mlp", "fc1", "fc2", "feed_forward")):
        return "ffn"
    return "linear"


def profiled_weights(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str], list[dict]]:
    """``(weights, kinds, skipped)``: the unit weights of ``model`` by parameter name (rows = units; the
    ``(in, out)`` weight of a Hugging Face ``Conv1D`` is transposed), their kind (linear, conv, attention,
    ffn), and every other parameter with the reason it is not profiled. Works on TorchScript modules
    (layer types read from ``original_name``). Shared parameters are counted once."""
    weights, kinds, skipped, seen = {}, {}, [], set()
    for mname, module in model.named_modules():
        tname = getattr(module, "original_name", type(module).__name__)
        for pname, param in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if id(param) in seen:
                skipped.append(dict(name=name, shape=list(param.shape), reason="shared with another layer (tied)"))
                continue
            seen.add(id(param))
            t = param.detach()
            if pname.endswith("_orig"):  # torch.nn.utils.prune re-parametrisation
                pname, name = pname[:-5], name[:-5]
            is_unit_weight = (tname in _UNIT_MODULES and pname == "weight") or (
                tname == "MultiheadAttention" and pname == "in_proj_weight"
            )
            if is_unit_weight and t.is_floating_point() and t.dim() > 1 and t.numel() > 0:
                weights[name] = t.t() if tname == "Conv1D" else t
                kinds[name] = "attention" if tname == "MultiheadAttention" else _kind(name, module)
                continue
            if "bias" in pname:
                reason = "bias: not a weight of a unit (never pruned)"
            elif isinstance(module, nn.Embedding) or "Embedding" in tname:
                reason = "embedding: a lookup table whose rows are tokens, not units"
            elif isinstance(module, _NORMS) or any(k in tname for k in _NORM_NAMES):
                reason = "normalisation scale/shift (never pruned)"
            elif t.dim() < 2:
                reason = f"{t.dim()}-D parameter of a {tname}: no rows"
            else:
                reason = f"parameter of a {tname}: not a Linear, Conv or attention projection"
            skipped.append(dict(name=name, shape=list(t.shape), reason=reason))
    return weights, kinds, skipped


@dataclass
class Units:
    """Per-unit statistics, one entry per unit in :func:`unit_view` order (``layer`` indexes ``names``)."""

    names: tuple[str, ...]
    layer: torch.Tensor
    row: torch.Tensor
    d: torch.Tensor
    pqi: torch.Tensor
    si: torch.Tensor
    tsi: torch.Tensor
    gini: torch.Tensor
    m: torch.Tensor
    keep: torch.Tensor  # (len(eps), units): S1 required kept counts
    sap_prune: torch.Tensor
    eps: tuple[float, ...]
    extra: dict = field(default_factory=dict)


def _block_stats(v: torch.Tensor, m: torch.Tensor | None, s: Settings) -> dict[str, torch.Tensor]:
    return dict(
        **index_set(v, s.p, s.q, s.si_q, mask=m),  # pq_index, sparsity_index, teacher_sparsity_index, si_implied_size
        gini=gini_index(v, mask=m),
        keep=required_terms(v, s.s1_q, list(s.eps), mask=m),
        sap_prune=sap_prune_counts(v, s.p, s.q, s.eta, s.gamma, s.beta, mask=m),
    )


def measure_units(weights: dict[str, torch.Tensor], settings: Settings | None = None, mask=None) -> Units:
    """Indices and budgets of every unit of ``weights`` (name → tensor, rows = units), batched per block
    of equal row width. ``mask`` (name → bool tensor, True = alive) excludes pruned entries."""
    s = settings or Settings()
    view = unit_view(weights, "neuron", mask)
    per = [_block_stats(v, None if mask is None else mk, s) for v, mk in view.blocks]
    cat = {k: torch.cat([b[k] for b in per], dim=-1) for k in per[0]}
    d = view.alive_counts()
    layer = view.layer
    starts = torch.zeros(len(view.names), dtype=torch.long, device=layer.device)
    counts = torch.bincount(layer, minlength=len(view.names))
    starts[1:] = counts.cumsum(0)[:-1]
    row = torch.arange(layer.numel(), device=layer.device) - starts[layer]
    return Units(names=view.names, layer=layer, row=row, d=d, eps=s.eps, **cat)


def needed_terms(w: torch.Tensor, eps, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The smallest ``s`` with ``σ_s(w)_1 <= ε ||w||_1`` for every row and every ε: ``(len(eps), rows)``.

    The exact count the S1 guarantee (:func:`lqtheory.theory.approximation.required_terms`) upper-bounds, from
    one stable sort of the magnitudes (:func:`lqtheory.theory.norms.sort_magnitudes`): position ``k`` is needed
    while the mass after the top ``k`` still exceeds ``ε ||w||_1``."""
    mags = sort_magnitudes(w, -1, mask)[0].double()
    total = mags.sum(-1, keepdim=True)
    after = total - mags.cumsum(-1) + mags  # mass from position k on (ties included: σ_k counts k..d-1)
    return torch.stack([(after > float(e) * (1 + 1e-12) * total).sum(-1) for e in eps])  # a loop over ε only
