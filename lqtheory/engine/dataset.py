"""The Dataset container (a train/test split as device-resident tensors), its errors and deterministic subsetting.

The loaders and the registry live in :mod:`lqtheory.engine.data`, which re-exports these names.

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""


from __future__ import annotations

import dataclasses

import numpy as np
import torch

from lqtheory.engine.device import resolve_device

__all__ = ["TASKS", "DataFileError", "DataNotFoundError", "Dataset", "check_seed", "subset_indices"]

TASKS = ("classification", "regression")


class DataFileError(ValueError):
    """A data file exists but is corrupt, truncated or not in the expected format."""


class DataNotFoundError(RuntimeError):
    """A data set is not found locally and could not (or may not) be downloaded.

    ``str(err)`` names every way to obtain it in the Python API's terms (``root=``, ``download=True``);
    ``err.cli_message`` says the same for the ``lqtheory`` command line (environment variables, folders,
    running again with internet access).
    """

    def __init__(self, message: str, cli_message: str):
        super().__init__(message)
        self.cli_message = cli_message


# --------------------------------------------------------------------------------------------------
# The Dataset container
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as tensors on one device.

    ``x_*`` are float32 of shape ``(n, *input_shape)``. For ``task="classification"`` the targets are
    int64 class indices in ``[0, num_classes)``; for ``task="regression"`` they are float32 of shape
    ``(n,)`` or ``(n, num_classes)`` (``num_classes`` is then the number of outputs). ``source`` says
    where the data came from (e.g. ``"debian:/usr/share/datasets/fashion-mnist"``) and
    ``preprocessing`` what was done to the raw values.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    task: str = "classification"
    source: str = ""
    preprocessing: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {self.input_shape}")
        tensors = {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}
        for key, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{key} must be a torch.Tensor, got {type(t).__name__}")
        devices = {t.device for t in tensors.values()}
        if len(devices) != 1:
            raise ValueError(f"all tensors must live on one device, got {sorted(map(str, devices))}")
        for split in ("train", "test"):
            x, y = tensors[f"x_{split}"], tensors[f"y_{split}"]
            if x.dtype != torch.float32:
                raise TypeError(f"x_{split} must be float32, got {x.dtype}")
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(f"x_{split} has shape {tuple(x.shape)}, expected (n, *{self.input_shape})")
            if y.shape[:1] != x.shape[:1]:
                raise ValueError(f"y_{split} has {y.shape[0] if y.dim() else 0} rows but x_{split} has {x.shape[0]}")
            if self.task == "classification":
                if y.dtype != torch.int64 or y.dim() != 1:
                    raise TypeError(f"y_{split} must be a 1-D int64 tensor of class indices for classification")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                    raise ValueError(f"y_{split} has labels outside [0, {self.num_classes})")
            else:
                if y.dtype != torch.float32:
                    raise TypeError(f"y_{split} must be float32 for regression, got {y.dtype}")
                if not (y.dim() == 1 and self.num_classes == 1) and tuple(y.shape[1:]) != (self.num_classes,):
                    raise ValueError(f"y_{split} has shape {tuple(y.shape)}; expected (n,) or (n, {self.num_classes})")

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> Dataset:
        """The same data on ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ...)."""
        dev = resolve_device(device)
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(dev),
            y_train=self.y_train.to(dev),
            x_test=self.x_test.to(dev),
            y_test=self.y_test.to(dev),
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
        """A deterministic, class-balanced (classification) or uniform (regression) subset of each split.

        See :func:`subset_indices`. Train and test draw from independent streams of ``seed``.
        """
        seed = check_seed(seed)
        changes = {}
        for split, n, stream in (("train", n_train, 0), ("test", n_test, 1)):
            if n is None:
                continue
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            labels = y.cpu().numpy() if self.task == "classification" else None
            if labels is not None and not isinstance(n, bool) and isinstance(n, (int, np.integer)) \
                    and 0 < n < self.num_classes <= x.shape[0]:
                raise ValueError(
                    f"n_{split}={n} is smaller than the {self.num_classes} classes: a class-balanced subset "
                    f"needs at least one example of every class (use n_{split} >= {self.num_classes})"
                )
            idx = subset_indices(x.shape[0], n, seed=seed, labels=labels, stream=stream, name=f"n_{split}")
            idx_t = torch.as_tensor(idx, device=x.device)
            changes[f"x_{split}"] = x.index_select(0, idx_t)
            changes[f"y_{split}"] = y.index_select(0, idx_t)
        return dataclasses.replace(self, **changes) if changes else self

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, task={self.task!r}, "
            f"device={str(self.device)!r}, source={self.source!r})"
        )


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


def subset_indices(
    n_available: int,
    n: int,
    *,
    seed: int = 0,
    labels: np.ndarray | None = None,
    stream: int = 0,
    name: str = "n",
) -> np.ndarray:
    """Sorted indices of a deterministic subset of size ``n`` out of ``n_available`` items.

    Without ``labels``: a uniform random subset. With ``labels``: round-robin over classes in a
    random order, i.e. draw a random permutation, rank every item within its class in that order,
    and keep the ``n`` items of smallest (rank, position). Class counts then differ by at most one
    (as far as each class has items). The permutation comes from NumPy's PCG64 seeded with
    ``(seed, stream)``, so it is the same on every machine. [derived]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be a positive int, got {n}")
    if n > n_available:
        raise ValueError(f"{name}={n} is larger than the {n_available} examples available")
    seed = check_seed(seed)
    rng = np.random.Generator(np.random.PCG64([seed, int(stream)]))
    # argsort of uniform doubles: a permutation whose stream does not depend on NumPy's shuffle code.
    order = np.argsort(rng.random(n_available), kind="stable")
    if labels is None:
        return np.sort(order[:n])
    labels = np.asarray(labels)
    if labels.shape != (n_available,):
        raise ValueError(f"labels must have shape ({n_available},), got {labels.shape}")
    permuted = labels[order]
    by_class = np.argsort(permuted, kind="stable")  # positions grouped by class, permuted order kept
    sorted_labels = permuted[by_class]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(n_available, dtype=np.int64)
    rank[by_class] = np.arange(n_available) - starts
    chosen = np.lexsort((np.arange(n_available), rank))[:n]  # primary key rank, then permuted position
    return np.sort(order[chosen])

