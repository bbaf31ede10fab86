"""Tests for lqtheory.engine.data: file readers, the resolution order, subsetting, the offline data sets.

Fake IDX files and CIFAR pickles are written into tmp_path and loaded through the whole resolution
path. No test downloads anything: torchvision's data set classes are replaced by ones that fail.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from hypothesis import given, settings
from hypothesis import strategies as st

from lqtheory.engine import data
from lqtheory.engine.data import DataFileError, Dataset, load_dataset, read_cifar_batch, read_idx, subset_indices

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class _NoNetwork:
    """Stands in for torchvision's data set classes: any download attempt fails like a dead network."""

    calls: list = []

    def __init__(self, root, train=True, download=False, **kwargs):
        _NoNetwork.calls.append((root, train, download))
        raise RuntimeError("Error downloading: <urlopen error [Errno -2] Name or service not known>")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Empty data folder, no data env vars, no Debian copy, and no way to download."""
    monkeypatch.setenv("LQTHEORY_DATA", str(tmp_path / "data"))
    for var in ("LQTHEORY_FASHION_MNIST", "LQTHEORY_MNIST", "LQTHEORY_CIFAR10"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")
    _NoNetwork.calls = []
    for cls in ("FashionMNIST", "MNIST", "CIFAR10"):
        monkeypatch.setattr(torchvision.datasets, cls, _NoNetwork)
    return tmp_path


# --------------------------------------------------------------------------------------------------
# helpers that write files in the real formats (independent of the package's readers)
# --------------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x00000800 | array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    payload = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def fake_mnist_arrays(n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    yte = (np.arange(n_test) * 3 % 10).astype(np.uint8)
    return xtr, ytr, xte, yte


def write_fake_idx_folder(folder: Path, gz: bool, seed=0, n_train=50, n_test=20):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = fake_mnist_arrays(n_train, n_test, seed)
    for stem, arr in zip(STEMS, arrays, strict=True):
        write_idx(folder / stem, arr, gz)
    return arrays


def expected_standardised(xtr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Oracle: float64 per-channel standardisation of x/255 with xtr's statistics (N, C, H, W)."""
    f = xtr.astype(np.float64) / 255
    mean = f.mean(axis=(0, 2, 3), keepdims=True)
    std = f.std(axis=(0, 2, 3), keepdims=True)
    return (x.astype(np.float64) / 255 - mean) / std


def write_fake_cifar(folder: Path, n_per_batch=12, protocol=2, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        # Like the real files: bytes keys, a list of labels, plus metadata keys we ignore.
        obj = {b"batch_label": name.encode(), b"labels": y, b"data": x, b"filenames": [b"a.png"] * n_per_batch}
        with (folder / name).open("wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
        batches[name] = (x, np.array(y))
    return batches


# --------------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "img", images, gz))
    got_labels = read_idx(write_idx(tmp_path / "lab", labels, gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable  # torch.from_numpy must not warn about read-only memory


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-no-suffix"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00\x00", "trailing"),
        (lambda b: b"\x00\x00\x08\x02" + b[4:], "magic"),  # a 2-D ubyte array: not a label or image file
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "magic"),  # float data
        (lambda b: b[:10], "header"),
        (lambda b: b[:2], "too short"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_malformed(tmp_path, mutate, message, gz):
    good = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    bad = mutate(good)
    path = tmp_path / "bad-images"
    path.write_bytes(gzip.compress(bad) if gz else bad)
    with pytest.raises(DataFileError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataFileError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST / MNIST resolution order
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_from_env_var_matches_oracle(offline, monkeypatch, gz):
    folder = offline / "fm-env"
    xtr, ytr, xte, yte = write_fake_idx_folder(folder, gz)
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(folder))
    ds = load_dataset("fashion-mnist")
    assert ds.source == f"env:LQTHEORY_FASHION_MNIST:{folder}"
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and ds.task == "classification"
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert (ds.n_train, ds.n_test) == (50, 20)
    np.testing.assert_array_equal(ds.y_train.numpy(), ytr)
    np.testing.assert_array_equal(ds.y_test.numpy(), yte)
    xtr4, xte4 = xtr[:, None], xte[:, None]
    np.testing.assert_allclose(ds.x_train.numpy(), expected_standardised(xtr4, xtr4), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.x_test.numpy(), expected_standardised(xtr4, xte4), rtol=0, atol=1e-6)
    assert "mean=" in ds.preprocessing and "std=" in ds.preprocessing
    assert _NoNetwork.calls == []


def test_root_argument_wins_over_env(offline, monkeypatch):
    env_folder, root_folder = offline / "env", offline / "root"
    write_fake_idx_folder(env_folder, gz=True, seed=1)
    _, ytr, _, _ = write_fake_idx_folder(root_folder, gz=False, seed=2, n_train=30)
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(env_folder))
    ds = load_dataset("fashion-mnist", root=root_folder)
    assert ds.source == f"root:{root_folder}"
    assert ds.n_train == 30
    np.testing.assert_array_equal(ds.y_train.numpy(), ytr)


@pytest.mark.parametrize("sub", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_from_data_folder(offline, sub):
    folder = offline / "data" / sub
    write_fake_idx_folder(folder, gz=True)
    ds = load_dataset("fashion-mnist")
    assert ds.source == f"data:{folder}"


def test_data_folder_before_debian(offline, monkeypatch):
    debian = offline / "debian"
    write_fake_idx_folder(debian, gz=True, n_train=40)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    assert load_dataset("fashion-mnist").source == f"debian:{debian}"
    write_fake_idx_folder(offline / "data" / "fashion-mnist", gz=True, n_train=30)
    ds = load_dataset("fashion-mnist")
    assert ds.source.startswith("data:") and ds.n_train == 30


def test_incomplete_data_folder_is_skipped_but_explicit_folder_is_an_error(offline, monkeypatch):
    partial = offline / "data" / "fashion-mnist"
    write_fake_idx_folder(partial, gz=True)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    debian = offline / "debian"
    write_fake_idx_folder(debian, gz=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    assert load_dataset("fashion-mnist").source == f"debian:{debian}"
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(partial))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist")


def test_corrupt_file_raises_instead_of_falling_through(offline, monkeypatch):
    folder = offline / "data" / "fashion-mnist"
    write_fake_idx_folder(folder, gz=True)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated download
    debian = offline / "debian"
    write_fake_idx_folder(debian, gz=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist")


def test_mismatched_image_and_label_counts(offline, monkeypatch):
    folder = offline / "fm"
    write_fake_idx_folder(folder, gz=False)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(49, dtype=np.uint8), gz=False)
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(folder))
    with pytest.raises(DataFileError, match="50 images but 49 labels"):
        load_dataset("fashion-mnist")


def test_wrong_image_size_rejected(offline, monkeypatch):
    folder = offline / "fm"
    write_fake_idx_folder(folder, gz=False)
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((50, 32, 32), dtype=np.uint8), gz=False)
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(folder))
    with pytest.raises(DataFileError, match="28×28"):
        load_dataset("fashion-mnist")


def test_missing_everywhere_download_fails(offline):
    with pytest.raises(RuntimeError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    # the download error itself, and every way to get the data
    assert "Name or service not known" in msg
    assert "LQTHEORY_FASHION_MNIST" in msg and "root=" in msg
    assert str(offline / "data" / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "internet" in msg
    assert isinstance(info.value.__cause__, RuntimeError)
    assert _NoNetwork.calls and _NoNetwork.calls[0][2] is True  # a download was really attempted


def test_download_false_never_calls_torchvision(offline):
    with pytest.raises(RuntimeError, match="download=False") as info:
        load_dataset("fashion-mnist", download=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert _NoNetwork.calls == []


def test_download_path_reads_what_torchvision_wrote(offline, monkeypatch):
    """Step 4 end to end: a stand-in for torchvision 'downloads' into <data>/MNIST/raw."""

    class FakeDownload:
        def __init__(self, root, train=True, download=False):
            assert download is True
            write_fake_idx_folder(Path(root) / "MNIST" / "raw", gz=False, seed=5)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeDownload)
    ds = load_dataset("mnist")
    assert ds.source == f"download:{offline / 'data' / 'MNIST' / 'raw'}"
    np.testing.assert_array_equal(ds.y_train.numpy(), fake_mnist_arrays(seed=5)[1])


def test_download_that_leaves_no_files_is_an_error(offline, monkeypatch):
    class SilentDownload:
        def __init__(self, root, train=True, download=False):
            pass

    monkeypatch.setattr(torchvision.datasets, "MNIST", SilentDownload)
    with pytest.raises(RuntimeError, match="files are not there"):
        load_dataset("mnist")


def test_mnist_env_and_error(offline, monkeypatch):
    with pytest.raises(RuntimeError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    assert "LQTHEORY_MNIST" in msg and "apt-get" not in msg and "Name or service not known" in msg
    folder = offline / "mnist-files"
    write_fake_idx_folder(folder, gz=True)
    write_fake_idx_folder(offline / "fm-files", gz=True, n_train=30)
    monkeypatch.setenv("LQTHEORY_MNIST", str(folder))
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(offline / "fm-files"))
    assert load_dataset("mnist").n_train == 50
    assert load_dataset("fashion-mnist").n_train == 30


def test_lecun_dotted_file_names_accepted(offline, monkeypatch):
    folder = offline / "lecun"
    write_fake_idx_folder(folder, gz=False)
    for stem in STEMS:
        (folder / stem).rename(folder / stem.replace("-idx", ".idx"))
    monkeypatch.setenv("LQTHEORY_MNIST", str(folder))
    assert load_dataset("mnist").n_test == 20


# --------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_from_env_matches_oracle(offline, monkeypatch, protocol):
    folder = offline / "cifar" / "cifar-10-batches-py"
    batches = write_fake_cifar(folder, protocol=protocol)
    monkeypatch.setenv("LQTHEORY_CIFAR10", str(folder.parent))  # the parent folder is accepted too
    ds = load_dataset("cifar10")
    assert ds.source == f"env:LQTHEORY_CIFAR10:{folder}"
    assert ds.input_shape == (3, 32, 32) and (ds.n_train, ds.n_test) == (60, 12)
    xtr = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    ytr = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    xte, yte = batches["test_batch"]
    # channel-major rows: the first 1024 bytes are red, row by row
    xtr4 = np.stack([xtr[:, c * 1024 : (c + 1) * 1024].reshape(-1, 32, 32) for c in range(3)], axis=1)
    xte4 = np.stack([xte[:, c * 1024 : (c + 1) * 1024].reshape(-1, 32, 32) for c in range(3)], axis=1)
    np.testing.assert_array_equal(ds.y_train.numpy(), ytr)
    np.testing.assert_array_equal(ds.y_test.numpy(), yte)
    np.testing.assert_allclose(ds.x_train.numpy(), expected_standardised(xtr4, xtr4), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ds.x_test.numpy(), expected_standardised(xtr4, xte4), rtol=0, atol=1e-5)
    per_channel = ds.x_train.double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(per_channel, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_cifar_from_data_folder_and_missing(offline):
    with pytest.raises(RuntimeError) as info:
        load_dataset("cifar10")
    assert "LQTHEORY_CIFAR10" in str(info.value) and "data_batch_1" in str(info.value)
    write_fake_cifar(offline / "data" / "cifar-10-batches-py")
    assert load_dataset("cifar10").source.startswith("data:")


def test_cifar_refuses_code_in_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataFileError, match="refusing"):
        read_cifar_batch(path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
        ({b"labels": [0]}, "lacks"),
        ([1, 2, 3], "dict"),
    ],
)
def test_cifar_rejects_malformed(tmp_path, obj, message):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataFileError, match=message):
        read_cifar_batch(path)


def test_cifar_truncated_pickle(tmp_path):
    path = tmp_path / "batch"
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFileError, match=str(path)):
        read_cifar_batch(path)


# --------------------------------------------------------------------------------------------------
# digits and mnist1d (offline, real)
# --------------------------------------------------------------------------------------------------


def test_digits_split_shapes_and_content():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and (ds.n_train, ds.n_test) == (1437, 360)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [36] * 10
    # the two splits together are exactly sklearn's 1797 images, each once, with their labels
    bunch = load_digits()
    ref = np.concatenate([bunch.images.reshape(-1, 64) / 16.0, bunch.target[:, None]], axis=1)
    ours = np.concatenate(
        [
            torch.cat([ds.x_train, ds.x_test]).reshape(-1, 64).double().numpy(),
            torch.cat([ds.y_train, ds.y_test]).double().numpy()[:, None],
        ],
        axis=1,
    )
    np.testing.assert_allclose(ours[np.lexsort(ours.T[::-1])], ref[np.lexsort(ref.T[::-1])], atol=1e-7)


def test_digits_deterministic_and_independent_of_seed():
    a, b = load_dataset("digits"), load_dataset("digits", seed=7)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def _rng_states():
    return random.getstate(), np.random.get_state()  # noqa: NPY002


def test_mnist1d_matches_generator_and_keeps_global_rng(offline):
    random.seed(123)
    np.random.seed(456)  # noqa: NPY002
    before = _rng_states()
    ds = load_dataset("mnist1d")
    after = _rng_states()
    assert before[0] == after[0]
    assert before[1][0] == after[1][0] and np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
    assert ds.input_shape == (40,) and (ds.n_train, ds.n_test) == (4000, 1000)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.source == "mnist1d.make_dataset"

    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())  # oracle: the package's own generator, default args
    np.testing.assert_array_equal(ds.x_train.numpy(), ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test.numpy(), ref["y_test"])

    cached = load_dataset("mnist1d")
    assert "cache" in cached.source and (offline / "data" / "mnist1d.npz").is_file()
    assert torch.equal(cached.x_train, ds.x_train) and torch.equal(cached.y_train, ds.y_train)
    assert torch.equal(cached.x_test, ds.x_test) and torch.equal(cached.y_test, ds.y_test)


def test_mnist1d_stale_or_corrupt_cache_is_regenerated(offline, monkeypatch):
    cache_dir = offline / "cache"
    cache_dir.mkdir()
    cache = cache_dir / "mnist1d.npz"
    z = np.zeros((2, 40))
    np.savez(cache, key=np.array("old-args"), x=z, y=np.zeros(2, int), x_test=z, y_test=np.zeros(2, int))
    ds = load_dataset("mnist1d", root=cache_dir)
    assert ds.n_train == 4000 and ds.source == "mnist1d.make_dataset"
    cache.write_bytes(b"not an npz")
    assert load_dataset("mnist1d", root=cache_dir).n_train == 4000
    assert "cache" in load_dataset("mnist1d", root=cache_dir).source
    assert not list(cache_dir.glob("*.tmp"))  # atomic write leaves no temporaries


# --------------------------------------------------------------------------------------------------
# subsetting
# --------------------------------------------------------------------------------------------------


def test_n_train_n_test_subsets(offline):
    full = load_dataset("digits")
    a = load_dataset("digits", n_train=105, n_test=33, seed=3)
    b = load_dataset("digits", n_train=105, n_test=33, seed=3)
    c = load_dataset("digits", n_train=105, n_test=33, seed=4)
    assert (a.n_train, a.n_test) == (105, 33)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train) or not torch.equal(a.x_train, c.x_train)
    counts = torch.bincount(a.y_train, minlength=10)
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 105
    # every kept row is the row of the full set at some index, with its label
    flat_full = full.x_train.reshape(full.n_train, -1)
    match = (a.x_train.reshape(a.n_train, 1, -1) == flat_full[None]).all(-1)
    idx = match.float().argmax(1)
    assert bool(match.any(1).all())
    assert torch.equal(full.y_train[idx], a.y_train)
    assert len(set(idx.tolist())) == 105
    only_train = load_dataset("digits", n_train=10)
    assert only_train.n_test == 360


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "10"])
def test_n_train_validation(bad):
    with pytest.raises((ValueError, TypeError), match="n_train"):
        load_dataset("digits", n_train=bad)


def test_n_train_too_large():
    with pytest.raises(ValueError, match="n_test=361 is larger than the 360"):
        load_dataset("digits", n_test=361)


@settings(max_examples=150, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=80),
    frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**31),
)
def test_subset_indices_balanced_property(labels, frac, seed):
    y = np.array(labels)
    n = max(1, int(round(frac * len(y))))
    idx = subset_indices(len(y), n, seed=seed, labels=y)
    assert idx.shape == (n,) and np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < len(y)
    np.testing.assert_array_equal(idx, subset_indices(len(y), n, seed=seed, labels=y))
    avail = np.bincount(y, minlength=6)
    got = np.bincount(y[idx], minlength=6)
    # round robin: a class that still has unused items is never more than one behind any other class
    for a in range(6):
        if got[a] < avail[a]:
            assert np.all(got <= got[a] + 1), (got, avail)
    plain = subset_indices(len(y), n, seed=seed)
    assert plain.shape == (n,) and len(np.unique(plain)) == n


def test_subset_indices_uniform_and_streams():
    a = subset_indices(1000, 100, seed=0, stream=0)
    b = subset_indices(1000, 100, seed=0, stream=1)
    assert not np.array_equal(a, b)
    # crude uniformity check across many seeds: each index is picked about 10% of the time
    hits = np.zeros(1000)
    for s in range(200):
        hits[subset_indices(1000, 100, seed=s)] += 1
    assert abs(hits.mean() - 20) < 1e-9 and hits.max() < 45 and hits.min() > 3


# --------------------------------------------------------------------------------------------------
# registry and the Dataset container
# --------------------------------------------------------------------------------------------------


def test_unknown_name_lists_known():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in ("digits", "mnist1d", "fashion-mnist", "mnist", "cifar10"):
        assert name in str(info.value)
    with pytest.raises(TypeError):
        load_dataset(3)


def test_name_aliases(offline, monkeypatch):
    write_fake_idx_folder(offline / "fm", gz=True)
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(offline / "fm"))
    assert load_dataset("Fashion_MNIST").name == "fashion-mnist"
    teachers = {"teacher-normal", "teacher-student-t", "teacher-cauchy"}
    assert set(data.DATASETS) == {"digits", "mnist1d", "fashion-mnist", "mnist", "cifar10"} | teachers


@pytest.mark.parametrize("distribution", ["normal", "student-t", "cauchy"])
def test_teacher_data_sets_are_the_e1_teachers_outputs(distribution):
    from lqtheory.theory.teacher import make_teacher, relu_mlp_module

    ds = load_dataset(f"teacher-{distribution}")
    spec = data.TEACHER_DATA
    assert ds.task == "regression" and ds.num_classes == 1 and ds.input_shape == (spec["input_dim"],)
    assert (len(ds.x_train), len(ds.x_test)) == (spec["n_train"], spec["n_test"])
    # oracle: the same teacher rebuilt as a plain torch module, in float64, standardised by hand
    teacher = make_teacher(spec["input_dim"], spec["depth"], spec["width"], spec["c"], distribution, seed=0,
                           dtype=torch.float64)
    module = relu_mlp_module(teacher.weights, teacher.biases)
    with torch.no_grad():
        raw_train = module(ds.x_train.double()).reshape(-1)
        raw_test = module(ds.x_test.double()).reshape(-1)
    mean, std = raw_train.mean(), raw_train.std()
    assert torch.allclose(ds.y_train.double(), (raw_train - mean) / std, atol=1e-4)
    assert torch.allclose(ds.y_test.double(), (raw_test - mean) / std, atol=1e-4)
    assert float(raw_train.std()) > 0.1  # a real regression target, not a near-constant output
    assert f"{float(mean):.6g}" in ds.preprocessing
    # fixed seeds: the data set is the same on every load, and train and test inputs differ
    again = load_dataset(f"teacher_{distribution}", n_train=100, seed=3)
    assert torch.equal(again.x_test, ds.x_test) and not torch.equal(ds.x_train[:5], ds.x_test[:5])


def test_teacher_data_sets_cover_every_teacher_distribution():
    from lqtheory.theory.teacher import DISTRIBUTIONS

    assert {f"teacher-{d}" for d in DISTRIBUTIONS} == {n for n in data.DATASETS if n.startswith("teacher-")}


def test_dataset_task_without_loading():
    assert data.dataset_task("teacher_cauchy") == "regression"
    assert data.dataset_task("Fashion-MNIST") == "classification"
    with pytest.raises(ValueError, match="unknown data set"):
        data.dataset_task("imagenet")


def test_teacher_data_trains_a_student_with_the_project_loop():
    from lqtheory.engine.models import build_model
    from lqtheory.engine.training import TrainConfig, train

    ds = load_dataset("teacher-normal", n_train=2000, n_test=500)
    model = build_model("mlp-64-1-2-relu", ds.input_shape, ds.num_classes)
    history = train(model, ds, TrainConfig(epochs=3, lr=0.01), progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_loss"] < 1.0  # below the variance of the standardised targets


def _tiny(**over):
    fields = dict(
        name="t",
        x_train=torch.zeros(4, 2),
        y_train=torch.tensor([0, 1, 2, 1]),
        x_test=torch.zeros(2, 2),
        y_test=torch.tensor([0, 2]),
        num_classes=3,
        input_shape=(2,),
    )
    fields.update(over)
    return Dataset(**fields)


def test_dataset_validation():
    ds = _tiny()
    assert (ds.n_train, ds.n_test, ds.device.type) == (4, 2, "cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "x"
    with pytest.raises(TypeError, match="x_train must be float32"):
        _tiny(x_train=torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="int64"):
        _tiny(y_train=torch.tensor([0.0, 1, 2, 1]))
    with pytest.raises(ValueError, match="labels outside"):
        _tiny(y_test=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="rows"):
        _tiny(y_train=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        _tiny(input_shape=(3,))
    with pytest.raises(ValueError, match="task"):
        _tiny(task="ranking")
    reg = _tiny(
        task="regression",
        num_classes=1,
        y_train=torch.zeros(4),
        y_test=torch.zeros(2),
    )
    assert reg.subset(n_train=2, seed=1).n_train == 2
    with pytest.raises(TypeError, match="float32"):
        _tiny(task="regression", num_classes=1, y_train=torch.zeros(4, dtype=torch.int64), y_test=torch.zeros(2))
    with pytest.raises(ValueError, match="expected"):
        _tiny(task="regression", num_classes=2, y_train=torch.zeros(4, 3), y_test=torch.zeros(2, 3))


def test_dataset_to_device_cpu():
    ds = load_dataset("digits", device="cpu", n_train=20, n_test=10)
    moved = ds.to("cpu")
    assert moved.device.type == "cpu" and torch.equal(moved.x_train, ds.x_train)
    with pytest.raises(ValueError):
        ds.to("no-such-device")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dataset_on_cuda():
    ds = load_dataset("digits", device="cuda", n_train=50, n_test=20, seed=1)
    cpu = load_dataset("digits", n_train=50, n_test=20, seed=1)
    assert ds.x_train.is_cuda and ds.y_test.is_cuda
    assert torch.equal(ds.x_train.cpu(), cpu.x_train)


# --------------------------------------------------------------------------------------------------
# the real Fashion-MNIST (Debian package); CI sets LQTHEORY_REQUIRE_FASHION_MNIST=1
# --------------------------------------------------------------------------------------------------


def test_real_fashion_mnist_from_debian(monkeypatch):
    if not REAL_FASHION.is_dir():
        if os.environ.get("LQTHEORY_REQUIRE_FASHION_MNIST") == "1":
            pytest.fail(f"{REAL_FASHION} is missing: apt-get install dataset-fashion-mnist (required here)")
        pytest.skip(f"{REAL_FASHION} not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", REAL_FASHION)
    ds = load_dataset("fashion-mnist")
    assert ds.source == f"debian:{REAL_FASHION}"
    assert (ds.n_train, ds.n_test) == (60000, 10000)
    assert tuple(ds.x_train.shape) == (60000, 1, 28, 28) and tuple(ds.x_test.shape) == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert abs(float(ds.x_train.double().mean())) < 1e-6 and abs(float(ds.x_train.double().std()) - 1) < 1e-4
    # independent reader: gzip + fixed offsets, as in the data set's own README
    with gzip.open(REAL_FASHION / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(REAL_FASHION / "t10k-labels-idx1-ubyte.gz", "rb") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    np.testing.assert_array_equal(ds.y_test.numpy(), labels)
    mean, std = 0.2860, 0.3530  # Fashion-MNIST's published training statistics
    np.testing.assert_allclose(ds.x_test[:100, 0].numpy() * std + mean, raw[:100] / 255.0, atol=2e-4)


# --------------------------------------------------------------------------------------------------
# Messages (issue #14 item 9)
# --------------------------------------------------------------------------------------------------


def test_explicit_folder_missing_one_file_names_it(offline, monkeypatch):
    folder = offline / "fm"
    write_fake_idx_folder(folder, gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(folder))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    assert "lacks t10k-labels-idx1-ubyte[.gz]" in msg and "train-images" not in msg.split("(expected")[0]
    cifar = offline / "cifar" / "cifar-10-batches-py"
    write_fake_cifar(cifar)
    (cifar / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_3 "):
        load_dataset("cifar10", root=cifar.parent)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", root=offline / "nowhere")


def test_not_found_error_speaks_cli_words_too(offline):
    with pytest.raises(data.DataNotFoundError) as info:
        load_dataset("fashion-mnist")
    api, cli = str(info.value), info.value.cli_message
    assert "root=" in api and "download=True" in api
    assert "root=" not in cli and "download=" not in cli and "load_dataset" not in cli
    assert "LQTHEORY_FASHION_MNIST" in cli and "apt-get install dataset-fashion-mnist" in cli
    assert "internet" in cli and "Name or service not known" in cli
    with pytest.raises(data.DataNotFoundError) as info:
        load_dataset("fashion-mnist", download=False)
    assert "download=False" in str(info.value) and "download=" not in info.value.cli_message


def test_failed_download_leaves_no_empty_folders(offline, monkeypatch):
    class HalfDownload:
        def __init__(self, root, train=True, download=False):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            (raw / "train-images-idx3-ubyte.gz.part").write_bytes(b"partial")
            raise RuntimeError("Error downloading: connection reset")

    monkeypatch.setattr(torchvision.datasets, "MNIST", HalfDownload)
    with pytest.raises(RuntimeError, match="connection reset"):
        load_dataset("mnist")
    base = offline / "data"
    assert not (base / "MNIST").exists()
    assert not base.exists()  # the data folder was created by the attempt and is empty again
    # a data folder that existed before (holding other things) is kept, only MNIST/ goes
    base.mkdir()
    (base / "keep.txt").write_text("other data")
    with pytest.raises(RuntimeError):
        load_dataset("mnist")
    assert sorted(p.name for p in base.iterdir()) == ["keep.txt"]


def test_class_balanced_subset_smaller_than_the_classes_is_an_error(offline, monkeypatch):
    folder = offline / "fm"
    write_fake_idx_folder(folder, gz=False)
    monkeypatch.setenv("LQTHEORY_FASHION_MNIST", str(folder))
    with pytest.raises(ValueError, match="n_train=5 is smaller than the 10 classes"):
        load_dataset("fashion-mnist", n_train=5)
    with pytest.raises(ValueError, match="n_test=9 is smaller than the 10 classes"):
        load_dataset("fashion-mnist", n_test=9)
    assert load_dataset("fashion-mnist", n_train=10).n_train == 10
