"""Pruning masks and weight dicts seen by unit (engine room; THEORY.md §1, §3). The per-tensor selection
rules (:func:`~lqtheory.theory.selection.magnitude_prune`, :func:`~lqtheory.theory.selection.sap_prune_counts`)
live in the theory room.

* :class:`Mask` — OpenLTH style: a validated, read-only mapping from prunable parameter name to a
  boolean tensor (True = alive). It saves/loads as a plain ``dict[str, BoolTensor]`` and converts to and
  from ``torch.nn.utils.prune`` re-parametrisations.
* :func:`unit_view` / :class:`UnitView` — any weight dict seen at a scope (``neuron``, ``layer``,
  ``global``) as one 2-D ``(units, entries)`` tensor plus a mask, and back, so every pruning method shares
  one batched code path; :func:`global_magnitude_prune` is a thin helper on top of it.

Conventions (docs/ARCHITECTURE.md): a *prunable* tensor is a floating tensor with ``dim > 1`` (biases and
norm-layer scales are never pruned). Masked entries are never revived. Ties between equal magnitudes
are broken by position, identically on every device: the lower index is kept first, i.e. among equal
magnitudes the higher index is removed first (a threshold from a sort, ties settled by index; never
``torch.topk``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lqtheory.common.atomic import atomic_open
from lqtheory.common.checks import (
    check_mask,
    check_tensor,
    check_unit_counts,
)
from lqtheory.theory.norms import count_true
from lqtheory.theory.selection import magnitude_prune

__all__ = [
    "Mask",
    "SCOPES",
    "UnitView",
    "unit_view",
    "prunable_tensors",
    "global_magnitude_prune",
]

SCOPES = ("neuron", "layer", "global")


# --------------------------------------------------------------------------------------------------
# Prunable tensors of a model or a weight dict
# --------------------------------------------------------------------------------------------------


def _is_prunable(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() > 1


def prunable_tensors(reference) -> dict[str, torch.Tensor]:
    """The prunable tensors of a model or a weight dict: floating tensors with ``dim > 1``, by name.

    For an ``nn.Module`` the names are those of ``named_parameters()``; a parameter that
    ``torch.nn.utils.prune`` re-parametrised (``fc.weight_orig`` with a ``fc.weight_mask`` buffer) is
    reported under its original name ``fc.weight`` (the tensor returned is the ``_orig`` parameter).
    For a mapping, non-tensor values raise ``TypeError``; 0-/1-D and integer tensors are skipped.
    """
    if isinstance(reference, nn.Module):
        out = {}
        for module_name, module in reference.named_modules():
            buffers = dict(module.named_buffers(recurse=False))
            for attr, param in module.named_parameters(recurse=False):
                if attr.endswith("_orig") and f"{attr[:-5]}_mask" in buffers:
                    attr = attr[:-5]
                if _is_prunable(param):
                    out[f"{module_name}.{attr}" if module_name else attr] = param
        return out
    if isinstance(reference, Mapping):
        out = {}
        for name, t in reference.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"weights[{name!r}] must be a torch.Tensor, got {type(t).__name__}")
            if _is_prunable(t):
                out[name] = t
        return out
    raise TypeError(f"reference must be an nn.Module or a mapping of name -> tensor, got {type(reference).__name__}")


def _split_name(name: str) -> tuple[str, str]:
    module_name, _, attr = name.rpartition(".")
    return module_name, attr


# --------------------------------------------------------------------------------------------------
# Mask
# --------------------------------------------------------------------------------------------------


class Mask(Mapping[str, torch.Tensor]):
    """A read-only mapping from prunable parameter name to a boolean tensor (True = alive).

    ``Mask(masks, reference=None)``: ``masks`` maps names (non-empty strings) to ``torch.bool`` tensors
    of at least one dimension. With a ``reference`` (an ``nn.Module`` or a dict of weights) every name
    must be one of its prunable tensors (:func:`prunable_tensors`) and every shape must match; names of
    the reference that the mask omits are simply not pruned. Tensors are stored as given (detached, on
    their device), not copied. Masks are cumulative by convention: pruning returns a new ``Mask`` whose
    alive set is a subset of the old one (see :meth:`issubset`).
    """

    __slots__ = ("_masks",)

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None, *, reference=None):
        masks = {} if masks is None else masks
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a mapping of name -> bool tensor, got {type(masks).__name__}")
        shapes = None if reference is None else {n: t.shape for n, t in prunable_tensors(reference).items()}
        checked = {}
        for name, m in masks.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"mask names must be non-empty strings, got {name!r}")
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"mask[{name!r}] must be a torch.Tensor, got {type(m).__name__}")
            if m.dtype != torch.bool:
                raise TypeError(f"mask[{name!r}] must have dtype torch.bool, got {m.dtype}")
            if m.dim() == 0:
                raise ValueError(f"mask[{name!r}] must have at least one dimension")
            if shapes is not None:
                if name not in shapes:
                    known = ", ".join(shapes) or "none"
                    raise ValueError(f"mask[{name!r}] names no prunable tensor of the reference (prunable: {known})")
                if m.shape != shapes[name]:
                    raise ValueError(
                        f"mask[{name!r}] has shape {tuple(m.shape)} but the reference tensor has "
                        f"shape {tuple(shapes[name])}"
                    )
            checked[name] = m.detach()
        self._masks = checked

    # Mapping protocol ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    # Construction ----------------------------------------------------------------------------------
    @classmethod
    def ones_like(cls, reference) -> Mask:
        """An all-alive mask over every prunable tensor of a model or weight dict, on its device."""
        return cls(
            {n: torch.ones(t.shape, dtype=torch.bool, device=t.device) for n, t in prunable_tensors(reference).items()},
            reference=reference,
        )

    @classmethod
    def from_torch_prune(cls, model: nn.Module) -> Mask:
        """Read the ``<name>_mask`` buffers that ``torch.nn.utils.prune`` registered on ``model``.

        Only buffers paired with a ``<name>_orig`` parameter count. A model without any raises
        ``ValueError`` (an empty mask would silently mean "nothing pruned").
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        masks = {}
        for module_name, module in model.named_modules():
            params = dict(module.named_parameters(recurse=False))
            for buffer_name, buffer in module.named_buffers(recurse=False):
                if buffer_name.endswith("_mask") and f"{buffer_name[:-5]}_orig" in params:
                    attr = buffer_name[:-5]
                    masks[f"{module_name}.{attr}" if module_name else attr] = buffer != 0
        if not masks:
            raise ValueError("model carries no torch.nn.utils.prune masks (no '<name>_mask' buffers)")
        return cls(masks, reference=model)

    # Persistence -----------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write ``{name: BoolTensor}`` (on the CPU) with ``torch.save``, atomically.

        The file is written to a temporary file in the same folder and moved into place with
        ``os.replace``, so a crash never leaves a half-written mask under ``path``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {name: m.cpu() for name, m in self._masks.items()}
        with atomic_open(path) as fh:
            torch.save(payload, fh)

    @classmethod
    def load(cls, path, *, reference=None, device: str | torch.device | None = None) -> Mask:
        """Read a mask written by :meth:`save` (``weights_only`` unpickling, so no code runs).

        A file that cannot be unpickled, or that does not hold a ``dict[str, BoolTensor]``, raises
        ``ValueError`` naming the file; a missing file raises ``FileNotFoundError``. With ``reference``
        the names and shapes are validated as in the constructor; ``device`` moves the tensors.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no mask file at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for truncated/foreign files
            raise ValueError(
                f"{path} is not a readable mask file (corrupt, or not written by Mask.save); "
                f"torch.load raised {type(err).__name__}"
            ) from err
        if not isinstance(payload, dict):
            raise ValueError(f"{path} does not hold a dict of name -> bool tensor (found {type(payload).__name__})")
        for name, m in payload.items():
            if not isinstance(name, str) or not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise ValueError(f"{path} is not a mask file: entry {name!r} is not a bool tensor")
        mask = cls(payload, reference=reference)
        return mask if device is None else mask.to(device)

    def to(self, device: str | torch.device) -> Mask:
        """The same mask with every tensor on ``device``."""
        return Mask({name: m.to(device) for name, m in self._masks.items()})

    # Counting --------------------------------------------------------------------------------------
    def alive_per_layer(self) -> dict[str, int]:
        """Number of alive (True) entries of every tensor."""
        return {name: int(m.sum()) for name, m in self._masks.items()}

    def total_per_layer(self) -> dict[str, int]:
        """Number of entries of every tensor."""
        return {name: m.numel() for name, m in self._masks.items()}

    def fraction_alive_per_layer(self) -> dict[str, float]:
        """Alive / total of every tensor (1.0 for an empty tensor)."""
        return {name: (int(m.sum()) / m.numel() if m.numel() else 1.0) for name, m in self._masks.items()}

    def count_alive(self) -> int:
        """Alive entries over all tensors."""
        return sum(self.alive_per_layer().values())

    def count_total(self) -> int:
        """Entries over all tensors."""
        return sum(m.numel() for m in self._masks.values())

    def fraction_alive(self) -> float:
        """Alive entries as a fraction of the *total* (not of the previous mask); 1.0 for an empty mask."""
        total = self.count_total()
        return self.count_alive() / total if total else 1.0

    # Set relations ---------------------------------------------------------------------------------
    def issubset(self, other: Mask) -> bool:
        """True when both masks have the same names and shapes and every alive entry here is alive in ``other``."""
        if set(self) != set(other):
            return False
        for name, m in self._masks.items():
            o = other[name]
            if o.shape != m.shape or bool((m & ~o.to(m.device)).any()):
                return False
        return True

    def __and__(self, other: Mask) -> Mask:
        """Entry-wise AND of two masks over the same names."""
        if not isinstance(other, Mask):
            return NotImplemented
        if set(self) != set(other):
            raise ValueError(f"masks cover different names: {sorted(set(self) ^ set(other))}")
        return Mask({name: m & other[name].to(m.device) for name, m in self._masks.items()})

    def __eq__(self, other) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        if set(self) != set(other):
            return False
        return all(
            m.shape == other[name].shape and torch.equal(m.cpu(), other[name].cpu()) for name, m in self._masks.items()
        )

    __hash__ = None  # mutable tensors inside: not hashable

    def __repr__(self) -> str:
        layers = ", ".join(f"{name}: {frac:.2%}" for name, frac in self.fraction_alive_per_layer().items())
        return f"Mask({self.fraction_alive():.2%} alive of {self.count_total():,}; {layers})"

    # Models ----------------------------------------------------------------------------------------
    def _model_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        Mask(self._masks, reference=model)  # validates names and shapes against this model
        tensors = prunable_tensors(model)
        return {name: tensors[name] for name in self._masks}

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> nn.Module:
        """Zero the pruned entries of ``model``'s parameters in place and return ``model``.

        For a parameter re-parametrised by ``torch.nn.utils.prune`` the ``_orig`` tensor is zeroed.
        """
        for name, param in self._model_tensors(model).items():
            param.masked_fill_(~self._masks[name].to(param.device), 0)
        return model

    def to_torch_prune(self, model: nn.Module) -> nn.Module:
        """Apply the mask with ``torch.nn.utils.prune.custom_from_mask`` and return ``model``.

        Afterwards the standard API works: ``<name>_orig`` / ``<name>_mask`` in the state dict, gradients
        zero on pruned entries, ``prune.remove(module, attr)`` to make it permanent. On a parameter
        that is already pruned, torch composes the masks (their product), as for any repeated prune.
        """
        from torch.nn.utils import prune

        for name, param in self._model_tensors(model).items():
            module_name, attr = _split_name(name)
            module = model.get_submodule(module_name) if module_name else model
            prune.custom_from_mask(module, attr, self._masks[name].to(param.device))
        return model


# --------------------------------------------------------------------------------------------------
# Scopes: a weight dict as one 2-D (units x entries) tensor
# --------------------------------------------------------------------------------------------------


def _check_scope(scope) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return scope


def _as_mask_dict(mask, weights: Mapping[str, torch.Tensor], name: str = "mask") -> dict[str, torch.Tensor]:
    if not isinstance(mask, Mapping):
        raise TypeError(f"{name} must be a Mask or a mapping of name -> bool tensor, got {type(mask).__name__}")
    out = {}
    for key, m in mask.items():
        if key not in weights:
            raise ValueError(f"{name}[{key!r}] has no tensor of that name in the weights")
        out[key] = check_mask(m, weights[key], f"{name}[{key!r}]")
    return out


@dataclass(frozen=True)
class UnitView:
    """A weight dict at a scope as rows of units: one row per unit, in blocks of equal row width.

    Rows: ``neuron`` — each tensor's rows ``w.flatten(1)`` (a Linear row, a Conv output filter; a 1-D
    tensor is one row), tensors in ``names`` order; ``layer`` — one row per tensor ``w.flatten()``;
    ``global`` — one row, all tensors flattened and concatenated in ``names`` order (so "lower index"
    means earlier in that order). ``layer[u]`` is the index in ``names`` of the tensor that unit ``u``
    comes from (``-1`` for the single unit of the global scope).

    ``blocks``: ``(values, mask)`` pairs, one per run of consecutive tensors whose rows have the same
    width, unpadded (``mask`` False on pruned entries); their rows, in order, are the units. Batched
    routines run once per block (:meth:`per_unit`, :meth:`blocks_to_dict`), so rows of different widths
    are never padded. ``values`` / ``mask``: the whole view as one ``(units, widest)`` tensor, shorter
    rows padded with masked zeros — built on first use, a copy that can be many times the weights
    when row widths differ widely.
    """

    blocks: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    block_of: tuple[int, ...]  # the block holding each tensor's rows (names order)
    layer: torch.Tensor
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    scope: str

    @property
    def units(self) -> int:
        return sum(v.shape[0] for v, _ in self.blocks)

    @property
    def width(self) -> int:
        return max(v.shape[1] for v, _ in self.blocks)

    @functools.cached_property
    def values(self) -> torch.Tensor:
        return torch.cat([F.pad(v, (0, self.width - v.shape[1])) for v, _ in self.blocks])

    @functools.cached_property
    def mask(self) -> torch.Tensor:
        return torch.cat([F.pad(m, (0, self.width - m.shape[1]), value=False) for _, m in self.blocks])

    def per_unit(self, fn) -> torch.Tensor:
        """``fn(values, mask)`` of every block (one value per row), concatenated: one value per unit."""
        parts = [fn(v, m) for v, m in self.blocks]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def split_units(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A tensor with one leading entry per unit, split into the blocks' units."""
        return list(torch.split(x, [v.shape[0] for v, _ in self.blocks]))

    def alive_counts(self) -> torch.Tensor:
        """``d`` of every unit (LongTensor ``(units,)``): its alive entries."""
        return self.per_unit(lambda _, m: count_true(m, 1))

    def blocks_to_dict(self, xs) -> dict[str, torch.Tensor]:
        """Inverse of :func:`unit_view` for tensors laid out like ``blocks`` (one per block)."""
        xs = list(xs)
        expected = [tuple(v.shape) for v, _ in self.blocks]
        if [tuple(x.shape[:2]) for x in xs] != expected:
            raise ValueError(f"expected one tensor per block, of shapes {expected}; got {[tuple(x.shape) for x in xs]}")
        out, offsets = {}, [0] * len(xs)
        for name, shape, (rows, width), b in zip(
            self.names, self.shapes, _rows_and_widths(self.shapes, self.scope), self.block_of, strict=True
        ):
            if self.scope == "global":  # one row: the tensors side by side
                out[name] = xs[b][0, offsets[b] : offsets[b] + width].reshape(shape)
                offsets[b] += width
            else:
                out[name] = xs[b][offsets[b] : offsets[b] + rows].reshape(shape)
                offsets[b] += rows
        return out

    def to_dict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :func:`unit_view` for any tensor laid out like ``values`` (padding dropped)."""
        if tuple(x.shape[:2]) != (self.units, self.width):
            raise ValueError(f"x has shape {tuple(x.shape)}, expected the view's {(self.units, self.width)}")
        parts = self.split_units(x)
        return self.blocks_to_dict(part[:, : v.shape[1]] for part, (v, _) in zip(parts, self.blocks, strict=True))


def _rows_and_widths(shapes, scope: str) -> list[tuple[int, int]]:
    """``(rows, width)`` of every tensor at ``scope`` (the global scope's tensors are one row each here)."""
    out = []
    for shape in shapes:
        numel = math.prod(shape)
        if scope == "neuron":
            rows = shape[0] if len(shape) > 1 else 1
            out.append((rows, numel // rows if rows else 0))
        else:
            out.append((1, numel))
    return out


def unit_view(weights: Mapping[str, torch.Tensor], scope: str = "neuron", mask=None) -> UnitView:
    """View ``weights`` at ``scope`` as rows of units — see :class:`UnitView`; inverse ``blocks_to_dict``.

    The tensors viewed are the names of ``mask`` when it is given (each must be in ``weights`` with the
    same shape), otherwise the prunable tensors (:func:`prunable_tensors`) of ``weights``; all on one
    device. Costs one copy of the weights (the blocks); the padded ``values``/``mask`` only if used.
    """
    _check_scope(scope)
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of name -> tensor, got {type(weights).__name__}")
    if mask is None:
        tensors = prunable_tensors(weights)
        masks = {name: None for name in tensors}
    else:
        masks = _as_mask_dict(mask, weights)
        tensors = {name: weights[name] for name in masks}
    for name, t in tensors.items():
        check_tensor(t, f"weights[{name!r}]")
        if t.dim() == 0:
            raise ValueError(f"weights[{name!r}] must have at least one dimension")
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(f"weights live on several devices {sorted(map(str, devices))}; move them to one")
    device = devices.pop() if devices else torch.device("cpu")
    dtypes = [t.dtype for t in tensors.values()] or [torch.get_default_dtype()]
    dtype = functools.reduce(torch.promote_types, dtypes)

    names = tuple(tensors)
    shapes = tuple(t.shape for t in tensors.values())
    rows_widths = _rows_and_widths(shapes, scope)
    if not tensors:  # an empty dict: one empty block
        rows = 1 if scope == "global" else 0
        empty = (
            torch.zeros(rows, 0, dtype=dtype, device=device),
            torch.zeros(rows, 0, dtype=torch.bool, device=device),
        )
        layer = torch.full((rows,), -1, dtype=torch.long, device=device)
        return UnitView((empty,), (), layer, names, shapes, scope)
    parts = []  # (values, alive) of shape (rows, width) per tensor
    for (name, t), (rows, width) in zip(tensors.items(), rows_widths, strict=True):
        m = masks[name]
        m = torch.ones(t.shape, dtype=torch.bool, device=device) if m is None else m
        parts.append((t.reshape(rows, width).to(dtype), m.reshape(rows, width)))
    if scope == "global":
        values = torch.cat([v.reshape(1, -1) for v, _ in parts], dim=1)
        alive = torch.cat([m.reshape(1, -1) for _, m in parts], dim=1)
        layer = torch.full((1,), -1, dtype=torch.long, device=device)
        return UnitView(((values, alive),), (0,) * len(names), layer, names, shapes, scope)
    # Consecutive tensors of equal row width share a block.
    block_of = [0]
    for prev, part in zip(parts, parts[1:], strict=False):
        block_of.append(block_of[-1] + (part[0].shape[1] != prev[0].shape[1]))
    runs = [[part for part, b in zip(parts, block_of, strict=True) if b == i] for i in range(block_of[-1] + 1)]
    blocks = tuple(
        (torch.cat([v for v, _ in run]), torch.cat([m for _, m in run])) if len(run) > 1 else run[0] for run in runs
    )
    counts = torch.tensor([rows for rows, _ in rows_widths], dtype=torch.long, device=device)
    layer = torch.repeat_interleave(torch.arange(len(names), device=device), counts)
    return UnitView(blocks, tuple(block_of), layer, names, shapes, scope)


# --------------------------------------------------------------------------------------------------
# Batched pruning rules
# --------------------------------------------------------------------------------------------------


def global_magnitude_prune(
    weights: Mapping[str, torch.Tensor], n_prune: int, mask=None, scope: str = "global"
) -> dict[str, torch.Tensor]:
    """Magnitude pruning over a weight dict at ``scope`` (default: all tensors as one unit).

    Removes ``n_prune`` (an int, or at neuron/layer scope an integer tensor with one count per unit of
    :func:`unit_view`) smallest-magnitude alive entries per unit with one sort over the view; at global
    scope ties are broken by global position (tensor order, then flat index). ``mask`` (a :class:`Mask`
    or a dict of bool tensors) selects the tensors and the alive entries. Returns ``{name: BoolTensor}``.
    """
    view = unit_view(weights, scope, mask)
    if isinstance(n_prune, torch.Tensor) and n_prune.dim() > 0:
        n_prune = check_unit_counts(n_prune, "n_prune", (view.units,), view.layer.device)
        counts = view.split_units(n_prune)
    else:
        counts = [n_prune] * len(view.blocks)
    keep = [magnitude_prune(v, n, mask=m) for (v, m), n in zip(view.blocks, counts, strict=True)]
    return view.blocks_to_dict(keep)
