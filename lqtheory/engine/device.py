"""Device selection and determinism, shared by the CLI, the training loop and the notebooks.

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a present ``torch.device``.

    ``"auto"`` picks CUDA when a GPU is present and the CPU otherwise. Asking for a device that is not
    present is an error at once, not a silent fallback, so a GPU run never quietly becomes a CPU run.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a device name (use auto, cpu, cuda, cuda:N, mps)") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but no CUDA GPU is present; use device='cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are present"
            )
    elif resolved.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} requested but MPS is not available on this machine")
    elif resolved.type != "cpu":
        raise ValueError(f"device {device!r} is not supported (use auto, cpu, cuda, cuda:N, mps)")
    return resolved


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) and ask torch for deterministic kernels.

    Results are reproducible given a seed on one device; CPU and GPU runs may still differ in the
    last bits (PyTorch does not promise cross-device reproducibility).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeds the legacy global RNG other libraries draw from
    torch.manual_seed(seed)
    # cuBLAS needs a fixed workspace for deterministic matmuls on older CUDA stacks.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
