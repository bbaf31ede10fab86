"""Turn what the user holds into an ``nn.Module``: a pickled module (only with ``trust_pickle``), TorchScript,
a state dict with an architecture, a run folder of this project, or a local Hugging Face /
sentence-transformers directory.

Every problem with the input raises :class:`ProfileInputError` (a ``ValueError``) with a one-line
message; the CLI prints it and exits with code 2.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lqtheory.engine.data import load_dataset
from lqtheory.engine.models import build_model
from lqtheory.runs import CorruptRunError, load_checkpoint, verify_run

__all__ = ["ProfileInputError", "Loaded", "load_model", "build_arch", "STATE_DICT_SUFFIXES"]

STATE_DICT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin")


class ProfileInputError(ValueError):
    """Bad input to the profiler (unknown format, missing --arch, weights that do not fit, nothing to profile)."""


@dataclass
class Loaded:
    """A loaded model: ``model`` (eval mode, CPU), what it was (``source``), how to feed it (``modality``:
    ``tensor`` or ``text``), an optional ``encode(list[str]) -> Tensor`` for text models, the run folder's
    ``mask`` and ``dataset`` when it came from one, and a short ``label``."""

    model: nn.Module
    source: str
    label: str
    modality: str = "tensor"
    encode: object = None
    mask: dict | None = None
    dataset: str | None = None
    input_shape: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict)


def _fail(msg: str):
    raise ProfileInputError(msg)


def _first_and_last(state: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    mats = [t for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 1]
    return (mats[0], mats[-1]) if mats else (None, None)


def build_arch(arch: str, state: dict | None = None, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """An untrained module from an architecture name: ``torchvision:NAME``, a model of the registry
    (:data:`lqtheory.engine.models.MODELS`, e.g. ``mlp-128-1-2-relu``; input size and classes are read from
    ``state``'s first and last weights, or ``input_shape``), or ``package.module:callable``."""
    if not isinstance(arch, str) or not arch.strip():
        _fail("--arch must be a non-empty name")
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        try:
            return torchvision.models.get_model(name, weights=None)
        except (ValueError, KeyError) as err:
            _fail(f"--arch {arch}: torchvision has no model {name!r} ({err})")
    if ":" in arch:
        module_name, _, attr = arch.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            _fail(f"--arch {arch}: cannot import {attr!r} from {module_name!r} ({err})")
        model = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
        if not isinstance(model, nn.Module):
            _fail(f"--arch {arch}: calling it gave a {type(model).__name__}, not an nn.Module")
        return model
    first, last = _first_and_last(state or {})
    if input_shape is None:
        if first is None:
            _fail(f"--arch {arch}: cannot infer the input size (the state dict holds no weight matrix)")
        input_shape = (first.shape[1],) if first.dim() == 2 else (first.shape[1], 32, 32)
    classes = last.shape[0] if last is not None else 10
    try:
        return build_model(arch, tuple(input_shape), int(classes))
    except ValueError as err:
        _fail(f"--arch: {err}")


def _fit(model: nn.Module, state: dict, what: str) -> nn.Module:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        _fail(f"the weights in {what} do not fit the architecture: " + "; ".join(parts))
    model.load_state_dict(state)
    return model


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def _torch_load(path: Path, trust_pickle: bool):
    """``torch.load`` with ``weights_only=True``; full unpickling (which can run any code the file holds)
    only when the user opted in with ``trust_pickle`` and no ``--arch`` declared the file a state dict."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if not isinstance(err, pickle.UnpicklingError):
            _fail(f"{path}: not a PyTorch file torch.load can read ({type(err).__name__}: {_first_line(err)})")
        if not trust_pickle:
            _fail(f"{path}: holds pickled Python objects beyond tensors (e.g. a whole nn.Module), which "
                  "weights_only loading refuses; unpickling them can run arbitrary code: if you trust the file, "
                  "pass --trust-pickle (trust_pickle=True), else save a state dict and name its --arch")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        _fail(f"{path}: not a PyTorch file torch.load can read ({type(err).__name__}: {_first_line(err)})")


def _load_file(path: Path, arch: str | None, input_shape, trust_pickle: bool = False) -> Loaded:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # SafetensorError: truncated, empty, header too small, invalid JSON
            _fail(f"{path}: not a readable .safetensors file ({type(err).__name__}: {_first_line(err)})")
    elif suffix in (".pt", ".pth", ".bin", ".ts", ".jit"):
        if _is_torchscript(path):
            model = torch.jit.load(str(path), map_location="cpu")
            return Loaded(model.eval(), "torchscript", path.name)
        obj = _torch_load(path, trust_pickle=trust_pickle and not arch)
        if isinstance(obj, nn.Module):
            return Loaded(obj.eval(), "pickled nn.Module", path.name)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            _fail(f"{path}: holds a {type(obj).__name__}, neither an nn.Module nor a state dict of tensors")
        state = obj
    else:
        _fail(f"{path}: unknown file format {suffix or '(no suffix)'!r}; expected .pt/.pth (module, TorchScript "
              "or state dict), .safetensors, or a directory (run folder, Hugging Face model)")
    if not arch:
        _fail(f"{path} is a state dict ({len(state)} tensors): name its architecture with --arch "
              "(torchvision:NAME, a registry model such as mlp-128-1-2-relu, or package.module:callable)")
    model = build_arch(arch, state, input_shape)
    return Loaded(_fit(model, state, path.name).eval(), f"state dict + {arch}", path.name)


def _load_run(path: Path) -> Loaded:
    try:
        results = verify_run(path)  # every file against its digest, as `lqtheory prune` does
        ckpt = load_checkpoint(path)
    except (CorruptRunError, FileNotFoundError) as err:
        _fail(f"{path}: not a readable run folder ({err})")
    cfg = results.config
    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model = _fit(model, ckpt["latest"], f"run {path.name}")
    mask = {k: v.bool() for k, v in ckpt["mask"].items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in mask:
                p.mul_(mask[name])
    it = len(results.records) - 1
    return Loaded(model.eval(), f"run folder (iteration {it}, {cfg.method}/{cfg.scope})", f"{path.name}@{it}",
                  mask=mask, dataset=cfg.dataset, input_shape=tuple(data.input_shape),
                  meta=dict(run_id=path.name, iteration=it, model=cfg.model, dataset=cfg.dataset))


def _load_hf_dir(path: Path) -> Loaded:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # no "Loading weights" progress bar on stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    if (path / "modules.json").is_file():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            _fail(f"{path} is a sentence-transformers model: pip install sentence-transformers (or .[models])")
        st = SentenceTransformer(str(path), device="cpu").eval()

        def encode(texts, _st=st):
            return _st.encode(list(texts), convert_to_tensor=True, batch_size=64, show_progress_bar=False).float()

        return Loaded(st, "sentence-transformers directory", path.name, modality="text", encode=encode)
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        _fail(f"{path} is a Hugging Face model directory: pip install transformers (or .[models])")
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    def encode(texts, _m=model, _t=tok):
        batch = _t(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = _m(**batch).last_hidden_state
        w = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * w).sum(1) / w.sum(1)  # mean pooling

    return Loaded(model, "Hugging Face directory", path.name, modality="text", encode=encode)


def load_model(model, arch: str | None = None, input_shape: tuple[int, ...] | None = None,
               trust_pickle: bool = False) -> Loaded:
    """Load ``model`` (an ``nn.Module``, or a path: see the module docstring) as a :class:`Loaded`.
    ``trust_pickle``: allow full unpickling of a ``.pt`` file that is not a plain state dict (a whole
    pickled module); unpickling can run arbitrary code, so only for files you trust."""
    if isinstance(model, Loaded):
        return model
    if isinstance(model, nn.Module):
        label = type(model).__name__
        if getattr(model, "encode", None) is not None and type(model).__name__ == "SentenceTransformer":
            def encode(texts, _st=model):
                return _st.encode(list(texts), convert_to_tensor=True, show_progress_bar=False).float()
            return Loaded(model.eval(), "nn.Module", label, modality="text", encode=encode)
        return Loaded(model.eval(), "nn.Module", label, input_shape=input_shape)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be an nn.Module or a path, got {type(model).__name__}")
    path = Path(model)
    if not path.exists():
        _fail(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "results.json").is_file() and (path / "checkpoint.pt").is_file():
            return _load_run(path)
        if (path / "config.json").is_file():
            try:
                json.loads((path / "config.json").read_text())
            except json.JSONDecodeError as err:
                _fail(f"{path}/config.json is not JSON ({err})")
            loaded = _load_hf_dir(path)
            if path.name in ("model", "models") and path.parent.name:  # e.g. <package>/model
                loaded.label = path.parent.name
            return loaded
        _fail(f"{path}: a directory that is neither a run folder (results.json + checkpoint.pt) nor a Hugging Face "
              "model (config.json)")
    loaded = _load_file(path, arch, input_shape, trust_pickle)
    if input_shape is not None:
        loaded.input_shape = tuple(input_shape)
    return loaded
