"""Data sets: a registry of offline-first loaders returning device-resident tensors.

``load_dataset(name)`` looks ``name`` up in :data:`DATASETS` (no ``eval``) and returns a frozen
:class:`Dataset`. Every loader resolves local copies first, then (where a download exists) asks
torchvision to download, then fails with a message naming every way to obtain the data. A failed
download is never swallowed.

Data sets and their preprocessing (also recorded in ``Dataset.preprocessing``):

=================  ==============  =============  =================================================
name               input_shape     train / test   preprocessing
=================  ==============  =============  =================================================
``digits``         (1, 8, 8)       1437 / 360     pixels / 16, in [0, 1]; fixed class-balanced split
``mnist1d``        (40,)           4000 / 1000    as generated (mnist1d standardises to mean 0, sd 1)
``fashion-mnist``  (1, 28, 28)     60000 / 10000  pixels / 255, then (x - mean) / std
``mnist``          (1, 28, 28)     60000 / 10000  pixels / 255, then (x - mean) / std
``cifar10``        (3, 32, 32)     50000 / 10000  pixels / 255, then per channel (x - mean) / std
``teacher-*``      (20,)           10000 / 2000   x ~ N(0, I_20) as drawn; y = teacher(x), then (y - mean) / std
=================  ==============  =============  =================================================

``teacher-normal``, ``teacher-student-t`` and ``teacher-cauchy`` are the synthetic regression data of
E1 (THEORY.md): a fixed ``lqtheory.theory.teacher.make_teacher`` network (depth 5, width 100, c = 10, rows of
that distribution, seed 0) and its noiseless outputs on standard normal inputs drawn from fixed seeds,
standardised with the train split's mean and std (the raw output scale differs ~400x between the
Normal and the Cauchy teacher; with c = 1 the outputs are nearly constant: std ~1e-6 at depth 5).
Other teachers: ``make_teacher`` and ``sample_teacher_data`` directly (notebook 08).

Means and standard deviations are those of the data set's full training split (per channel), computed
from the files at load time, so they are exact for the files actually read.

Where files are looked for (first hit wins):

* ``fashion-mnist``: ``root`` argument, else ``$LQTHEORY_FASHION_MNIST``; ``<data>/fashion-mnist/``
  (or torchvision's ``<data>/FashionMNIST/raw/``); Debian's ``/usr/share/datasets/fashion-mnist/``
  (``apt-get install dataset-fashion-mnist``); torchvision download into ``<data>/``.
* ``mnist``: ``root`` / ``$LQTHEORY_MNIST``; ``<data>/mnist/`` (or ``<data>/MNIST/raw/``); download.
* ``cifar10``: ``root`` / ``$LQTHEORY_CIFAR10``; ``<data>/cifar-10-batches-py/``; download.
* ``mnist1d``: generated locally with ``mnist1d.data.make_dataset`` (never its downloading
  ``get_dataset``); cached in ``<data>/mnist1d.npz`` (or ``root``), keyed by the generation arguments.
* ``digits``: ships inside the scikit-learn wheel; ``teacher-*``: generated at load time.

``<data>`` is ``$LQTHEORY_DATA`` when set, else the repository's ``data/`` folder.

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import pickle
import random
import shutil
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lqtheory.common.atomic import atomic_open
from lqtheory.common.digests import sha256_hex, sorted_json
from lqtheory.common.vocabulary import ENV_DATA
from lqtheory.engine.device import resolve_device
from lqtheory.theory.teacher import make_teacher, sample_teacher_data

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "DataFileError",
    "DataNotFoundError",
    "Dataset",
    "data_dir",
    "dataset_task",
    "describe_sources",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
    "subset_indices",
]

#: Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files here.
#: (Its .gz files are recompressed, so torchvision's MD5 check on them fails: we read them ourselves.)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

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
        seed = _check_seed(seed)
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


def _check_seed(seed) -> int:
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
    seed = _check_seed(seed)
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


# --------------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------------

_IDX_MAGICS = {0x00000801: 1, 0x00000803: 3}  # unsigned-byte vectors (labels) and 3-D arrays (images)


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # decide by content, not by file name
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataFileError(f"{path}: corrupt or truncated gzip stream ({exc}); delete it and re-obtain it") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) of unsigned bytes as a ``uint8`` array.

    IDX layout (LeCun's MNIST format): a big-endian ``uint32`` magic ``0x00000801`` (1-D, labels) or
    ``0x00000803`` (3-D, images), one big-endian ``uint32`` per dimension, then exactly
    ``prod(dims)`` bytes. Anything else (bad magic, short header, truncated or over-long body, broken
    gzip) raises :class:`DataFileError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    buf = _read_maybe_gzip(path)
    if len(buf) < 4:
        raise DataFileError(f"{path}: only {len(buf)} bytes, too short for an IDX header")
    magic = int.from_bytes(buf[:4], "big")
    if magic not in _IDX_MAGICS:
        raise DataFileError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x00000801 for labels or 0x00000803 for images)"
        )
    ndim = _IDX_MAGICS[magic]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataFileError(f"{path}: truncated IDX header ({len(buf)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(buf) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataFileError(f"{path}: IDX file {what}: header says dims {dims} = {expected} bytes, body has {body}")
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims).copy()


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays: a CIFAR batch needs nothing else, and pickles from
    an arbitrary folder must not be able to run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: images ``uint8 (n, 3, 32, 32)`` and labels ``int64 (n,)``.

    The file is a pickled dict with ``data`` (``n × 3072`` bytes: 1024 red, 1024 green, 1024 blue
    values, row-major) and ``labels``. Only NumPy objects are unpickled. Malformed content raises
    :class:`DataFileError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch not found: {path}")
    try:
        with path.open("rb") as fh:
            obj = _CifarUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataFileError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataFileError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in obj or "labels" not in obj:
        raise DataFileError(f"{path}: CIFAR batch lacks 'data' or 'labels' (keys: {sorted(map(str, obj))})")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(f"{path}: 'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataFileError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """The data folder: ``$LQTHEORY_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data"


_IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The four IDX files in ``folder`` (raw preferred over .gz; LeCun's ``train-images.idx3-ubyte``
    spelling accepted too) and the list of those missing."""
    found, missing = {}, []
    for key, stem in _IDX_STEMS.items():
        dotted = stem.replace("-idx", ".idx")
        for cand in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (folder / cand).is_file():
                found[key] = folder / cand
                break
        else:
            missing.append(stem + "[.gz]")
    return found, missing


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of ``x/255`` for uint8 images (N, C, H, W), from a 256-bin
    histogram per channel (no float copy of the whole training set)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.empty(x.shape[1]), np.empty(x.shape[1])
    for c in range(x.shape[1]):  # at most 3 channels
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean[c] = counts @ values / total
        std[c] = np.sqrt(counts @ (values - mean[c]) ** 2 / total)
    std = np.where(std > 0, std, 1.0)  # a constant channel stays constant instead of becoming NaN
    return mean, std


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 ``(x/255 − mean_c)/std_c`` through a 256-entry lookup table per channel (computed in
    float64, rounded once)."""
    out = np.empty(x.shape, dtype=np.float32)
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(x.shape[1]):
        out[:, c] = ((values - mean[c]) / std[c]).astype(np.float32)[x[:, c]]
    return out


def _image_dataset(name, xtr, ytr, xte, yte, source) -> Dataset:
    """uint8 (N, C, H, W) images → float32 standardised with the train split's per-channel stats."""
    mean, std = _channel_stats(xtr)
    fmt = ", ".join
    return Dataset(
        name=name,
        x_train=torch.from_numpy(_normalise(xtr, mean, std)),
        y_train=torch.from_numpy(ytr.astype(np.int64)),
        x_test=torch.from_numpy(_normalise(xte, mean, std)),
        y_test=torch.from_numpy(yte.astype(np.int64)),
        num_classes=10,
        input_shape=tuple(xtr.shape[1:]),
        source=source,
        preprocessing=(
            f"x/255, then (x - mean)/std per channel with the training split's mean=({fmt(f'{m:.4f}' for m in mean)}) "
            f"and std=({fmt(f'{s:.4f}' for s in std)})"
        ),
    )


def _load_idx_folder(folder: Path, name: str) -> tuple[np.ndarray, ...]:
    files, missing = _idx_files(folder)
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}")
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataFileError(f"{files[f'{split}_images']}: expected 28×28 images, got shape {images.shape}")
        if labels.ndim != 1:
            raise DataFileError(f"{files[f'{split}_labels']}: expected a label vector, got shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DataFileError(
                f"{name} {split} split: {images.shape[0]} images but {labels.shape[0]} labels "
                f"({files[f'{split}_images'].name}, {files[f'{split}_labels'].name})"
            )
        if labels.size and labels.max() > 9:
            raise DataFileError(f"{files[f'{split}_labels']}: labels outside 0..9 (max {labels.max()})")
    return (
        arrays["train_images"][:, None],
        arrays["train_labels"],
        arrays["test_images"][:, None],
        arrays["test_labels"],
    )


_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


def _cifar_folder(folder: Path) -> Path | None:
    """``folder`` itself or its ``cifar-10-batches-py`` child, whichever holds all six batches."""
    for cand in (folder, folder / "cifar-10-batches-py"):
        if all((cand / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST)):
            return cand
    return None


def _cifar_missing(folder: Path) -> list[str]:
    """The CIFAR-10 batches missing from ``folder`` (or from its ``cifar-10-batches-py`` child, if any)."""
    child = folder / "cifar-10-batches-py"
    where = child if child.is_dir() else folder
    return [f for f in (*_CIFAR_TRAIN, _CIFAR_TEST) if not (where / f).is_file()]


def _load_cifar_folder(folder: Path) -> tuple[np.ndarray, ...]:
    train = [read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    xte, yte = read_cifar_batch(folder / _CIFAR_TEST)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xte, yte


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How to find one downloadable data set."""

    name: str
    env: str
    data_subdirs: tuple[str, ...]  # relative to data_dir()
    torchvision_class: str  # attribute of torchvision.datasets
    is_complete: Callable[[Path], Path | None]  # folder → folder holding the files, or None
    missing: Callable[[Path], list[str]]  # folder → the expected files it lacks
    read: Callable[[Path], tuple[np.ndarray, ...]]
    files_hint: str
    debian: bool = False  # also look in DEBIAN_FASHION_MNIST (read at call time so tests can move it)


def _idx_complete(folder: Path) -> Path | None:
    return folder if folder.is_dir() and not _idx_files(folder)[1] else None


def _resolve(spec: _Spec, root, download: bool) -> Dataset:
    """Steps 1–4 of the module docstring: explicit folder, data/, Debian, torchvision download."""
    explicit = None
    if root is not None:
        explicit = ("root", Path(root).expanduser())
    elif os.environ.get(spec.env):
        explicit = (f"env:{spec.env}", Path(os.environ[spec.env]).expanduser())
    if explicit is not None:
        label, folder = explicit
        # An explicitly named folder must hold the data: falling through would hide the user's mistake.
        hit = spec.is_complete(folder)
        if hit is None:
            if not folder.is_dir():
                what = "which does not exist" if not folder.exists() else "which is not a folder"
            else:
                what = f"which lacks {', '.join(spec.missing(folder))}"
            raise FileNotFoundError(
                f"{spec.name}: {label} points to {folder}, {what} (expected {spec.files_hint})"
            )
        return _image_dataset(spec.name, *spec.read(hit), source=f"{label}:{hit}")

    base = data_dir()
    for sub in spec.data_subdirs:
        hit = spec.is_complete(base / sub)
        if hit is not None:
            return _image_dataset(spec.name, *spec.read(hit), source=f"data:{hit}")
    if spec.debian:
        hit = spec.is_complete(DEBIAN_FASHION_MNIST)
        if hit is not None:
            return _image_dataset(spec.name, *spec.read(hit), source=f"debian:{hit}")

    def how(for_cli: bool) -> str:
        options = [
            f"set ${spec.env} to a folder holding {spec.files_hint}"
            if for_cli
            else f"pass root=<folder> or set ${spec.env} to a folder holding {spec.files_hint}",
            f"put the files in {base / spec.data_subdirs[0]} (the data folder is ${{LQTHEORY_DATA}} or the "
            "repo's data/)",
        ]
        if spec.debian:
            options.append(
                f"on Debian/Ubuntu: apt-get install dataset-fashion-mnist (installs {DEBIAN_FASHION_MNIST})"
            )
        options.append(
            "run the command again with internet access: the data set is then downloaded (torchvision)"
            if for_cli
            else f"connect to the internet and call load_dataset({spec.name!r}, download=True) (torchvision)"
        )
        return "; ".join(f"({i + 1}) {o}" for i, o in enumerate(options))

    if not download:
        raise DataNotFoundError(
            f"{spec.name} not found locally and download=False. To get it: {how(False)}",
            f"{spec.name} not found locally. To get it: {how(True)}",
        )
    created = [p for p in (base, base / spec.torchvision_class) if not p.exists()]
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, spec.torchvision_class)
        base.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(root=str(base), train=train, download=True)
    except Exception as exc:  # any download failure: report it together with every alternative
        # Remove what the failed attempt created (an empty <data>/MNIST/raw/, partial archives), so that
        # nothing half-made is left to be mistaken for a data set.
        for path in reversed(created):
            if path == base:
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if empty: the data folder may hold other data sets
            else:
                shutil.rmtree(path, ignore_errors=True)
        failure = f"{spec.name} not found locally and the torchvision download into {base} failed: " \
                  f"{type(exc).__name__}: {exc}."
        raise DataNotFoundError(f"{failure} To get it: {how(False)}", f"{failure} To get it: {how(True)}") from exc
    for sub in spec.data_subdirs:
        hit = spec.is_complete(base / sub)
        if hit is not None:
            return _image_dataset(spec.name, *spec.read(hit), source=f"download:{hit}")
    raise RuntimeError(f"{spec.name}: torchvision reported a download into {base} but the files are not there")


_FASHION = _Spec(
    name="fashion-mnist",
    env="LQTHEORY_FASHION_MNIST",
    data_subdirs=("fashion-mnist", "FashionMNIST/raw"),
    torchvision_class="FashionMNIST",
    is_complete=_idx_complete,
    missing=lambda folder: _idx_files(folder)[1],
    read=lambda folder: _load_idx_folder(folder, "fashion-mnist"),
    files_hint=", ".join(s + "[.gz]" for s in _IDX_STEMS.values()),
    debian=True,
)
_MNIST = _Spec(
    name="mnist",
    env="LQTHEORY_MNIST",
    data_subdirs=("mnist", "MNIST/raw"),
    torchvision_class="MNIST",
    is_complete=_idx_complete,
    missing=lambda folder: _idx_files(folder)[1],
    read=lambda folder: _load_idx_folder(folder, "mnist"),
    files_hint=", ".join(s + "[.gz]" for s in _IDX_STEMS.values()),
)
_CIFAR10 = _Spec(
    name="cifar10",
    env="LQTHEORY_CIFAR10",
    data_subdirs=("cifar-10-batches-py",),
    torchvision_class="CIFAR10",
    is_complete=_cifar_folder,
    missing=lambda folder: _cifar_missing(folder),
    read=_load_cifar_folder,
    files_hint="the CIFAR-10 python batches data_batch_1..5 and test_batch (or their cifar-10-batches-py/ folder)",
)


# --------------------------------------------------------------------------------------------------
# Loaders and the registry
# --------------------------------------------------------------------------------------------------

Loader = Callable[..., Dataset]
#: name → loader(root=None|path, download=bool) returning a CPU :class:`Dataset` of the full splits.
DATASETS: dict[str, Loader] = {}


def _register(name: str):
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn

    return deco


_DIGITS_TEST = 360
_DIGITS_SPLIT_SEED = 20220611  # fixed: the split is part of the data set, not of an experiment's seed


@_register("digits")
def _load_digits(root=None, download=True) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images, from the wheel) scaled to [0, 1]; a fixed
    class-balanced 1437/360 train/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float64) / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    test = subset_indices(len(y), _DIGITS_TEST, seed=_DIGITS_SPLIT_SEED, labels=y)
    train = np.setdiff1d(np.arange(len(y)), test)
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(x[train]),
        y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(x[test]),
        y_test=torch.from_numpy(y[test]),
        num_classes=10,
        input_shape=(1, 8, 8),
        source="sklearn.datasets.load_digits",
        preprocessing="x/16, in [0, 1]",
    )


def _mnist1d_args() -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # never used: we generate, never download
    return args


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """Run mnist1d's generator, which reseeds the global ``random`` and ``np.random``: their states
    are saved and restored so loading data never perturbs a caller's random streams."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (mnist1d uses the legacy global)
    try:
        raw = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    return {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}


def _atomic_save_npz(path: Path, **arrays) -> None:
    with atomic_open(path) as fh:
        np.savez(fh, **arrays)


@_register("mnist1d")
def _load_mnist1d(root=None, download=True) -> Dataset:
    """MNIST-1D (Greydanus 2020) with its default arguments, generated locally (4000/1000, length 40).

    Cached in ``<root or data>/mnist1d.npz`` with a key hashing the generation arguments; a stale or
    unreadable cache is regenerated, and a cache that cannot be written only warns."""
    args = _mnist1d_args()
    key = sha256_hex(sorted_json(args).encode())
    cache = (Path(root).expanduser() if root is not None else data_dir()) / "mnist1d.npz"
    arrays = None
    source = "mnist1d.make_dataset"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as npz:
                if str(npz["key"]) == key:
                    arrays = {k: npz[k] for k in ("x", "y", "x_test", "y_test")}
                    source = f"mnist1d.make_dataset (cache {cache})"
        except (OSError, ValueError, KeyError, zlib.error):
            arrays = None  # unreadable cache: regenerate below and overwrite it
    if arrays is None:
        arrays = _generate_mnist1d(args)
        try:
            _atomic_save_npz(cache, key=np.array(key), **arrays)
        except OSError as exc:
            warnings.warn(f"could not write the mnist1d cache {cache}: {exc}", stacklevel=2)
    return Dataset(
        name="mnist1d",
        x_train=torch.from_numpy(arrays["x"].astype(np.float32)),
        y_train=torch.from_numpy(arrays["y"].astype(np.int64)),
        x_test=torch.from_numpy(arrays["x_test"].astype(np.float32)),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
        input_shape=(int(arrays["x"].shape[1]),),
        source=source,
        preprocessing="as generated by mnist1d (standardised to mean 0, sd 1 over all 5000 signals)",
    )


TEACHER_DATA = {"input_dim": 20, "depth": 5, "width": 100, "c": 10.0, "n_train": 10_000, "n_test": 2_000}
_TEACHER_SEEDS = {"teacher": 0, "train": 1, "test": 2}  # fixed: the data set, not an experiment's seed


def _load_teacher(distribution: str) -> Dataset:
    spec = TEACHER_DATA
    teacher = make_teacher(
        spec["input_dim"], spec["depth"], spec["width"], spec["c"], distribution, seed=_TEACHER_SEEDS["teacher"]
    )
    x_train, y_train = sample_teacher_data(teacher, spec["n_train"], seed=_TEACHER_SEEDS["train"])
    x_test, y_test = sample_teacher_data(teacher, spec["n_test"], seed=_TEACHER_SEEDS["test"])
    mean, std = float(y_train.double().mean()), float(y_train.double().std())
    return Dataset(
        name=f"teacher-{distribution}",
        x_train=x_train,
        y_train=((y_train.double() - mean) / std).float(),
        x_test=x_test,
        y_test=((y_test.double() - mean) / std).float(),
        num_classes=1,
        input_shape=(spec["input_dim"],),
        task="regression",
        source=f"lqtheory.theory.teacher.make_teacher({distribution!r}, seed={_TEACHER_SEEDS['teacher']}), generated",
        preprocessing=f"x as drawn; y standardised with the train split's mean {mean:.6g} and std {std:.6g}",
    )


_TEACHER_DISTRIBUTIONS = ("normal", "student-t", "cauchy")  # lqtheory.theory.teacher.DISTRIBUTIONS (checked in tests)
for _distribution in _TEACHER_DISTRIBUTIONS:
    _register(f"teacher-{_distribution}")(
        lambda root=None, download=True, _d=_distribution: _load_teacher(_d)  # noqa: ARG005 (generated: no files)
    )
_REGRESSION = {f"teacher-{d}" for d in _TEACHER_DISTRIBUTIONS}


def dataset_task(name: str) -> str:
    """``"classification"`` or ``"regression"``: the task of data set ``name``, without loading it."""
    key = canonical_name(name)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return "regression" if key in _REGRESSION else "classification"


@_register("fashion-mnist")
def _load_fashion_mnist(root=None, download=True) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017), 28×28 grey, 60000/10000."""
    return _resolve(_FASHION, root, download)


@_register("mnist")
def _load_mnist(root=None, download=True) -> Dataset:
    """MNIST (LeCun et al.), 28×28 grey, 60000/10000."""
    return _resolve(_MNIST, root, download)


@_register("cifar10")
def _load_cifar10(root=None, download=True) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009), 32×32 RGB, 50000/10000."""
    return _resolve(_CIFAR10, root, download)


def canonical_name(name) -> str:
    """The registry key of a data set name: lower case, dashes, known aliases (``FashionMNIST``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "mnist-1d": "mnist1d"}
    return aliases.get(key, key)


def load_dataset(
    name: str,
    *,
    device: str | torch.device = "cpu",
    root: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load data set ``name`` from :data:`DATASETS` onto ``device``.

    ``root`` names the folder holding the files (it overrides the data set's environment variable).
    ``n_train`` / ``n_test`` keep a deterministic class-balanced subset of that size (chosen by
    ``seed``; see :func:`subset_indices`); the data set itself and its normalisation statistics do
    not depend on ``seed``. ``download=False`` forbids a network download: a data set that is not
    found locally is then an immediate ``RuntimeError`` naming every way to obtain it.
    """
    key = canonical_name(name)
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    dev = resolve_device(device)
    seed = _check_seed(seed)
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{arg} must be a positive int or None, got {value!r}")
    ds = DATASETS[key](root=root, download=download)
    ds = ds.subset(n_train=n_train, n_test=n_test, seed=seed)
    return ds.to(dev)


def describe_sources() -> str:
    """Human-readable summary of where each downloadable data set is looked for (for the CLI/README)."""
    out = io.StringIO()
    for spec in (_FASHION, _MNIST, _CIFAR10):
        steps = [f"${spec.env}", *(str(data_dir() / s) for s in spec.data_subdirs)]
        if spec.debian:
            steps.append(str(DEBIAN_FASHION_MNIST))
        steps.append("torchvision download")
        out.write(f"{spec.name}: {' → '.join(steps)}\n")
    return out.getvalue()
