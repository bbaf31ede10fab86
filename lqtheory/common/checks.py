"""Input validation shared by every public routine: errors name the offending argument.

Room: common (mechanisms every layer shares; imports nothing else of lqtheory).
"""

from __future__ import annotations

import argparse
import math

import torch


def check_tensor(x, name: str, *, allow_empty: bool = True) -> torch.Tensor:
    """A floating tensor with only finite entries."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} is empty")
    # A NaN/Inf entry makes the sum non-finite; a finite sum proves every entry finite. The sum is one
    # vectorised pass without a temporary (isfinite().all() writes a bool copy: ~30x slower at 64M
    # entries); only a non-finite sum (a bad entry, or an overflow of huge values) pays the exact scan.
    if x.numel() and not bool(torch.isfinite(x.detach().sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def check_dim(x: torch.Tensor, dim: int, name: str = "w") -> int:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension to reduce over")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for {name} with {x.dim()} dimension(s)")
    return dim


def check_mask(mask, x: torch.Tensor, name: str = "mask") -> torch.Tensor | None:
    """``None`` or a boolean tensor of exactly ``x``'s shape, moved to ``x``'s device."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a boolean torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype}")
    if mask.shape != x.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but the weights have shape {tuple(x.shape)}")
    return mask.to(x.device)


def check_exponent(value, name: str, *, low: float = 0.0, high: float = 1.0, high_inclusive: bool = True) -> float:
    """A real number in ``(low, high]`` (or ``(low, high)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    upper_ok = value <= high if high_inclusive else value < high
    if not (math.isfinite(value) and value > low and upper_ok):
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in ({low:g}, {high:g}{bracket}, got {value:g}")
    return value


def check_real(value, name: str) -> float:
    """A finite real number (bools are refused: ``True`` as a hyper-parameter is always a slip)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value:g}")
    return value


def check_p_less_than_q(p: float, q: float) -> None:
    if not p < q:
        raise ValueError(f"p must be smaller than q (0 < p < q), got p={p:g}, q={q:g}")


def check_unit_counts(value, name: str, shape, device) -> torch.Tensor:
    """A non-negative int, or an integer-valued tensor broadcastable to the units' ``shape``, as a LongTensor.

    Per-unit counts (budgets ``s``, numbers of weights to prune) share this one parser.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be an int or an integer tensor, got dtype {value.dtype}")
        if value.is_floating_point():
            if value.numel() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} contains NaN or Inf entries")
            if not bool((value == value.round()).all()):
                raise ValueError(f"{name} must hold whole numbers")
        try:
            value = torch.broadcast_to(value.to(device=device, dtype=torch.long), tuple(shape))
        except RuntimeError as err:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the units' shape {tuple(shape)}"
            ) from err
    elif isinstance(value, int) and not isinstance(value, bool):
        value = torch.full(tuple(shape), value, dtype=torch.long, device=device)
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(value).__name__}")
    if value.numel() and bool((value < 0).any()):
        raise ValueError(f"{name} must be >= 0")
    return value


# Command-line whole numbers (argparse types), shared by every subcommand


def nonnegative_int_argument(text: str) -> int:
    """An argparse ``type``: a whole number >= 0 (one line on stderr and exit 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int_argument(text: str) -> int:
    """An argparse ``type``: a whole number >= 1."""
    value = nonnegative_int_argument(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
