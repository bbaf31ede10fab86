"""Offline-first data files: the IDX and CIFAR readers, where data lives, and image files as a Dataset.

The registry and the resolution order (root, environment, data folder, Debian, download) live in
:mod:`lqtheory.engine.data`, which re-exports the public readers.

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""


from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from lqtheory.common.vocabulary import ENV_DATA
from lqtheory.engine.dataset import DataFileError, Dataset

__all__ = [
    "read_idx",
    "IDX_STEMS",
    "read_cifar_batch",
    "data_dir",
    "idx_files",
    "image_dataset",
    "load_idx_folder",
    "cifar_folder",
    "cifar_missing",
    "load_cifar_folder",
]


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


IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The four IDX files in ``folder`` (raw preferred over .gz; LeCun's ``train-images.idx3-ubyte``
    spelling accepted too) and the list of those missing."""
    found, missing = {}, []
    for key, stem in IDX_STEMS.items():
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


def image_dataset(name, xtr, ytr, xte, yte, source) -> Dataset:
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


def load_idx_folder(folder: Path, name: str) -> tuple[np.ndarray, ...]:
    files, missing = idx_files(folder)
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


def cifar_folder(folder: Path) -> Path | None:
    """``folder`` itself or its ``cifar-10-batches-py`` child, whichever holds all six batches."""
    for cand in (folder, folder / "cifar-10-batches-py"):
        if all((cand / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST)):
            return cand
    return None


def cifar_missing(folder: Path) -> list[str]:
    """The CIFAR-10 batches missing from ``folder`` (or from its ``cifar-10-batches-py`` child, if any)."""
    child = folder / "cifar-10-batches-py"
    where = child if child.is_dir() else folder
    return [f for f in (*_CIFAR_TRAIN, _CIFAR_TEST) if not (where / f).is_file()]


def load_cifar_folder(folder: Path) -> tuple[np.ndarray, ...]:
    train = [read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    xte, yte = read_cifar_batch(folder / _CIFAR_TEST)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xte, yte
