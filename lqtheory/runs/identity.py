"""Data identity: the SHA-256 fingerprint of the tensors a run trains and tests on, and its checks.

Part of the runs room. Every run and dense artifact records :func:`data_fingerprint` of its subset;
reloading or resuming with data whose fingerprint differs raises
:class:`~lqtheory.runs.files.DataMismatchError` naming both fingerprints.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from lqtheory.common.digests import sha256_stream
from lqtheory.engine.data import load_dataset
from lqtheory.runs.config import ExperimentConfig
from lqtheory.runs.files import DataMismatchError

__all__ = ['check_fingerprint', 'data_fingerprint', 'full_dataset', 'load_run_data', 'subset_and_fingerprint']

@functools.lru_cache(maxsize=2)
def full_dataset(name: str):
    return load_dataset(name, device="cpu")


def data_fingerprint(data) -> str:
    """SHA-256 (hex) of the tensors a run trains and tests on: ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` of a :class:`lqtheory.engine.data.Dataset` (after subsetting), each with its name, dtype and shape.

    It identifies the data by content, not by path: the same IDX files read from another folder give
    the same fingerprint, other files (or another split) give another. Computed on CPU copies, so it
    does not depend on the device.
    """
    h = sha256_stream(b"lqtheory-data-v1")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        t = getattr(data, name).detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


@functools.lru_cache(maxsize=4)
def subset_and_fingerprint(dataset: str, n_train, n_test, data_seed: int):
    # Cached per process: a notebook runs many seeds/methods on one subset, hashed once.
    data = full_dataset(dataset).subset(n_train, n_test, seed=data_seed)
    return data, data_fingerprint(data)


def load_run_data(config: ExperimentConfig, device: torch.device):
    """``(dataset on device, data fingerprint)`` of the run's subset."""
    data, fingerprint = subset_and_fingerprint(config.dataset, config.n_train, config.n_test, config.data_seed)
    return data.to(device), fingerprint


def check_fingerprint(stored: str | None, current: str, where: Path) -> None:
    if stored == current:
        return
    if stored is None:
        raise DataMismatchError(
            f"{where} records no data fingerprint (written before runs recorded the data they used), so it "
            f"cannot be checked against the data loaded now (fingerprint {current}); delete it to recompute"
        )
    raise DataMismatchError(
        f"{where} was computed on other data: stored data fingerprint {stored}, data loaded now {current} "
        "(another data folder, file or split?); point the loader at the original data or delete the folder"
    )
