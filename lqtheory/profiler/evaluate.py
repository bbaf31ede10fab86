"""Data for verification, and measuring what pruning by the predicted budgets does to a model.

``--data NAME|PATH`` resolves to inputs (and labels when there are any):

* a data set of the registry (``digits``, ``fashion-mnist``, ``mnist1d``, ...): its test split, labelled;
* ``english``: English prose that ships with every CPython, the reference documentation topics in the
  standard library module ``pydoc_data.topics`` (≈465k characters of the Python Language Reference),
  cut into sentences. It is real edited English, needs no download and no extra package, and is the
  same text on every machine with the same Python minor version;
* ``sample-images``: 224×224 crops (ImageNet normalisation) of the two photographs scikit-learn ships
  (``load_sample_images``: a temple in China and a flower); unlabelled, so ImageNet models are measured
  by output drift and top-1 agreement with the dense model, not accuracy;
* a ``.txt`` file (one text per line) or a ``.pt`` file holding a tensor ``x`` or a dict ``{"x", "y"}``.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lqtheory.engine.data import DATASETS, load_dataset
from lqtheory.profiler.loading import Loaded, ProfileInputError

__all__ = ["Batch", "resolve_data", "english_corpus", "sample_images", "Evaluator"]


@dataclass
class Batch:
    """Inputs ``x`` (a tensor, or a list of strings for text models), optional labels ``y``, a description."""

    x: object
    y: torch.Tensor | None
    name: str

    def __len__(self):
        return len(self.x)


def english_corpus(n: int = 256, min_words: int = 6, max_words: int = 40) -> list[str]:
    """``n`` English sentences from the standard library's ``pydoc_data.topics`` (deterministic order)."""
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))
    text = re.sub(r"\s+", " ", re.sub(r"[*`=~^]+|\.\. \w+::", " ", text))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)]
    keep = [s for s in sentences if min_words <= len(s.split()) <= max_words and re.match(r"[A-Z][a-z]", s)]
    if len(keep) < n:
        raise ProfileInputError(f"english: only {len(keep)} sentences available, {n} requested")
    step = len(keep) / n  # spread over the whole text
    return [keep[int(i * step)] for i in range(n)]


def sample_images(n: int = 32, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``n`` random ``size``-square crops (with flips) of scikit-learn's two sample photographs,
    ImageNet-normalised, shape ``(n, 3, size, size)``."""
    from sklearn.datasets import load_sample_images

    imgs = [torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255 for im in load_sample_images().images]
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for i in range(n):
        im = imgs[i % len(imgs)]
        scale = float(torch.empty(1).uniform_(1.0, 2.0, generator=g))
        crop = int(min(im.shape[1:]) / scale)
        top = int(torch.randint(0, im.shape[1] - crop + 1, (1,), generator=g))
        left = int(torch.randint(0, im.shape[2] - crop + 1, (1,), generator=g))
        patch = im[:, top : top + crop, left : left + crop].unsqueeze(0)
        patch = torch.nn.functional.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0]
        if i % 3 == 1:
            patch = patch.flip(-1)
        out.append((patch - mean) / std)
    return torch.stack(out)


def resolve_data(data, loaded: Loaded, n: int = 256) -> Batch | None:
    """The verification batch for ``loaded`` (see the module docstring); None when there is no data."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProfileInputError(f"--n-data must be a positive number of inputs, got {n!r}")
    if data is None and loaded.dataset is not None:
        data = loaded.dataset
    if data is None:
        return None
    if isinstance(data, Batch):
        return data
    if isinstance(data, torch.Tensor):
        return Batch(data[:n], None, "tensor")
    if isinstance(data, tuple) and len(data) == 2:
        return Batch(data[0][:n], None if data[1] is None else data[1][:n], "tensors")
    if isinstance(data, list) and all(isinstance(s, str) for s in data):
        return Batch(data[:n], None, "texts")
    if not isinstance(data, (str, Path)):
        raise TypeError(
            f"data must be a name, a path, a tensor, (x, y) or a list of strings; got {type(data).__name__}"
        )
    name = str(data)
    if name == "english":
        return Batch(english_corpus(n), None, f"english: {n} sentences of the stdlib's pydoc_data.topics")
    if name == "sample-images":
        m = min(n, 64)
        return Batch(sample_images(m), None, f"sample-images: {m} crops of scikit-learn's two sample photographs")
    if name in DATASETS:
        ds = load_dataset(name)
        return Batch(ds.x_test[:n], ds.y_test[:n] if ds.task == "classification" else None, f"{name}: test split")
    path = Path(name)
    if not path.exists():
        known = ", ".join(["english", "sample-images", *sorted(DATASETS)])
        raise ProfileInputError(f"--data {name}: neither a file nor a known data set ({known})")
    if path.suffix == ".txt":
        lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        return Batch(lines[:n], None, f"{path.name}: {min(n, len(lines))} lines")
    if path.suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, torch.Tensor):
            return Batch(obj[:n], None, path.name)
        if isinstance(obj, dict) and "x" in obj:
            y = obj.get("y")
            return Batch(obj["x"][:n], None if y is None else y[:n], path.name)
    raise ProfileInputError(f"--data {name}: expected a .txt file (one text per line) or a .pt file with a tensor "
                            "or a dict {'x': ..., 'y': ...}")


class Evaluator:
    """Runs a model on a batch; compares outputs of the pruned and the dense model."""

    def __init__(self, loaded: Loaded, batch: Batch, batch_size: int = 64):
        self.loaded, self.batch, self.batch_size = loaded, batch, batch_size
        y = batch.y
        if y is not None and (not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(batch.x)):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ProfileInputError(f"--data {batch.name}: the labels y must be one per input: length {len(batch.x)}"
                                    f" expected, got shape {shape}")
        if loaded.modality == "text" and not isinstance(batch.x, list):
            raise ProfileInputError(f"{loaded.label} is a text model; --data must be texts (english, a .txt file)")
        if loaded.modality != "text" and isinstance(batch.x, list):
            raise ProfileInputError(f"{loaded.label} takes tensors; --data {batch.name} holds texts")

    @torch.no_grad()
    def outputs(self) -> torch.Tensor:
        if self.loaded.modality == "text":
            return self.loaded.encode(self.batch.x).float().cpu()
        model, x = self.loaded.model, self.batch.x
        ref = next(iter(model.parameters()), None)
        dtype = ref.dtype if ref is not None else torch.float32
        outs = []
        for i in range(0, len(x), self.batch_size):
            try:
                out = model(x[i : i + self.batch_size].to(dtype))
            except (RuntimeError, ValueError, TypeError, IndexError) as err:  # e.g. x of the wrong width
                first = (str(err).strip().splitlines() or [""])[0]
                raise ProfileInputError(f"--data {self.batch.name}: the model cannot run on its input of shape "
                                        f"{tuple(x.shape[1:])} per sample ({type(err).__name__}: {first})") from err
            if isinstance(out, (tuple, list)):
                out = out[0]
            if hasattr(out, "logits"):
                out = out.logits
            outs.append(out.float().reshape(out.shape[0], -1))
        out = torch.cat(outs)
        self._check_labels(out.shape[1])
        return out

    def _check_labels(self, classes: int) -> None:
        """Labels must be class indices of the model's outputs: else every accuracy reads as 0 and
        every accuracy drop as a harmless 0."""
        y = self.batch.y
        if y is None or classes <= 1:
            return
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ProfileInputError(f"--data {self.batch.name}: labels y must be class indices, got fractional values")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ProfileInputError(f"--data {self.batch.name}: labels y range over [{low}, {high}], outside the "
                                    f"model's {classes} classes [0, {classes - 1}]")

    def compare(self, dense: torch.Tensor, pruned: torch.Tensor) -> dict[str, float]:
        """Degradation measures: relative output drift ``‖f̃ − f‖₂ / ‖f‖₂`` (mean over inputs); for text
        embeddings ``1 − cos``; for logits the top-1 agreement with the dense model and, with labels,
        the accuracy."""
        out = {"drift": float(((pruned - dense).norm(dim=1) / dense.norm(dim=1).clamp_min(1e-12)).mean())}
        if self.loaded.modality == "text":
            out["cosine_drift"] = float(1 - torch.nn.functional.cosine_similarity(pruned, dense, dim=1).mean())
        elif dense.shape[1] > 1:
            out["top1_agreement"] = float((pruned.argmax(1) == dense.argmax(1)).float().mean())
            if self.batch.y is not None:
                out["accuracy"] = float((pruned.argmax(1) == self.batch.y).float().mean())
        return out

    def degradation_key(self) -> str:
        if self.loaded.modality == "text":
            return "cosine_drift"
        return "accuracy_drop" if self.batch.y is not None else "drift"
