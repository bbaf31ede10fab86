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
import io
import os
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
from lqtheory.engine.data_files import (
    IDX_STEMS,
    cifar_folder,
    cifar_missing,
    data_dir,
    idx_files,
    image_dataset,
    load_cifar_folder,
    load_idx_folder,
    read_cifar_batch,
    read_idx,
)
from lqtheory.engine.dataset import DataFileError, DataNotFoundError, Dataset, check_seed, subset_indices
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
    return folder if folder.is_dir() and not idx_files(folder)[1] else None


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
        return image_dataset(spec.name, *spec.read(hit), source=f"{label}:{hit}")

    base = data_dir()
    for sub in spec.data_subdirs:
        hit = spec.is_complete(base / sub)
        if hit is not None:
            return image_dataset(spec.name, *spec.read(hit), source=f"data:{hit}")
    if spec.debian:
        hit = spec.is_complete(DEBIAN_FASHION_MNIST)
        if hit is not None:
            return image_dataset(spec.name, *spec.read(hit), source=f"debian:{hit}")

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
            return image_dataset(spec.name, *spec.read(hit), source=f"download:{hit}")
    raise RuntimeError(f"{spec.name}: torchvision reported a download into {base} but the files are not there")


_FASHION = _Spec(
    name="fashion-mnist",
    env="LQTHEORY_FASHION_MNIST",
    data_subdirs=("fashion-mnist", "FashionMNIST/raw"),
    torchvision_class="FashionMNIST",
    is_complete=_idx_complete,
    missing=lambda folder: idx_files(folder)[1],
    read=lambda folder: load_idx_folder(folder, "fashion-mnist"),
    files_hint=", ".join(s + "[.gz]" for s in IDX_STEMS.values()),
    debian=True,
)
_MNIST = _Spec(
    name="mnist",
    env="LQTHEORY_MNIST",
    data_subdirs=("mnist", "MNIST/raw"),
    torchvision_class="MNIST",
    is_complete=_idx_complete,
    missing=lambda folder: idx_files(folder)[1],
    read=lambda folder: load_idx_folder(folder, "mnist"),
    files_hint=", ".join(s + "[.gz]" for s in IDX_STEMS.values()),
)
_CIFAR10 = _Spec(
    name="cifar10",
    env="LQTHEORY_CIFAR10",
    data_subdirs=("cifar-10-batches-py",),
    torchvision_class="CIFAR10",
    is_complete=cifar_folder,
    missing=lambda folder: cifar_missing(folder),
    read=load_cifar_folder,
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
    seed = check_seed(seed)
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
