"""The dense stage: one content-addressed dense trained model per (data, model, seed, training settings).

Part of the runs room. ``<out>/dense/<dense_id>/`` is trained once (under its lease) and shared by every
method and scope that starts from it; :func:`ensure_dense` trains or verifies it, :func:`load_dense`
reads it back checked.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lqtheory.common.digests import canonical_json, sha256_hex
from lqtheory.common.kernels import kernel_pins
from lqtheory.common.version import VERSION
from lqtheory.engine.bank import BankMember, train_bank
from lqtheory.engine.device import resolve_device
from lqtheory.engine.models import build_model
from lqtheory.engine.training import Callback, evaluate, progress_enabled
from lqtheory.runs.config import FORMAT_VERSION, ExperimentConfig, derive_seed, torch_threads
from lqtheory.runs.files import (
    CorruptRunError,
    read_checked_json,
    read_checkpoint,
    write_checked_json,
    write_checkpoint,
)
from lqtheory.runs.identity import check_fingerprint, load_run_data
from lqtheory.runs.lease import lease

__all__ = [
    "DENSE_FORMAT",
    "build_run_model",
    "clone_state",
    "dense_dir",
    "dense_id",
    "dense_identity",
    "ensure_dense",
    "load_dense",
    "run_metadata",
    "state_to_cpu",
    "state_to_device",
]

DENSE_FORMAT = 1
_DENSE_FIELDS = ("dataset", "model", "seed", "data_seed", "n_train", "n_test", "lr", "momentum", "nesterov",
                 "weight_decay", "schedule", "grad_clip", "batch_size", "l1_penalty")


def dense_identity(config: ExperimentConfig) -> dict[str, Any]:
    """What the dense trained model depends on: the data identity (dataset, subset sizes, data seed),
    the model and its seed, the training settings, the dense length, the device type and the precision
    (when not float32). The pruning
    method, scope, exponents, iterations and retraining epochs are not part of it."""
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    out = {name: getattr(config, name) for name in _DENSE_FIELDS}
    out["dense_epochs"] = config.resolved_dense_epochs
    out["device_type"] = config.device_type()
    if config.precision != "float32":  # only when not the default, so existing dense ids stay
        out["precision"] = config.precision
    return out


def dense_id(config: ExperimentConfig) -> str:
    """Short hash (16 hex digits) of :func:`dense_identity`: the name of the dense artifact
    ``<out>/dense/<dense_id>/`` shared by every run that starts from the same dense trained model."""
    payload = canonical_json({"format": DENSE_FORMAT, **dense_identity(config)})
    return sha256_hex(payload.encode())[:16]


def dense_dir(config: ExperimentConfig, out) -> Path:
    return Path(out) / "dense" / dense_id(config)


def build_run_model(config: ExperimentConfig, data, device: torch.device):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(config.seed, "init"))
        return build_model(config.model, data.input_shape, data.num_classes).to(device)


def load_dense(path: str | os.PathLike, *, fingerprint: str | None = None) -> dict:
    """The verified contents of a dense artifact folder (see :func:`ensure_dense`).

    Returns ``dense.json``'s fields (``dense_id``, ``identity``, ``data_fingerprint``, ``accuracy``,
    ``loss``, ``train_loss``, ``history``, ``metadata``) plus ``w_init`` and ``dense`` (CPU state
    dicts). Both files' checksums are checked, and ``dense.pt`` against the digest in ``dense.json``
    (:class:`CorruptRunError` otherwise); with ``fingerprint``, a different data fingerprint raises
    :class:`DataMismatchError` naming both.
    """
    path = Path(path)
    info_path, weights_path = path / "dense.json", path / "dense.pt"
    if not info_path.is_file() or not weights_path.is_file():
        raise CorruptRunError(f"{path} is not a complete dense artifact (dense.json and dense.pt expected)")
    info = read_checked_json(info_path)
    if info.get("format") != DENSE_FORMAT or info.get("dense_id") != path.name:
        raise CorruptRunError(f"{info_path} belongs to another dense artifact or format")
    if sha256_hex(weights_path.read_bytes()) != info.get("weights_sha256"):
        raise CorruptRunError(f"{weights_path} does not match the digest recorded in {info_path}")
    weights = read_checkpoint(weights_path)
    if weights.get("dense_id") != path.name:
        raise CorruptRunError(f"{weights_path} belongs to another dense artifact")
    if fingerprint is not None:
        check_fingerprint(info.get("data_fingerprint"), fingerprint, path)
    return {**info, "w_init": weights["w_init"], "dense": weights["dense"]}


def ensure_dense(
    config: ExperimentConfig,
    out: str | os.PathLike = "runs",
    *,
    progress: bool | None = None,
    threads: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """The dense trained model of ``config``: train it once, then reuse it. Returns its folder.

    ``<out>/dense/<dense_id>/`` (:func:`dense_id`) holds ``dense.pt`` (``w_init`` and the dense trained
    state, checksummed) and ``dense.json`` (its test accuracy / loss, last training loss, per-epoch
    history, the data fingerprint, the identity, versions, and the digest of ``dense.pt``). The model is
    built from ``derive_seed(seed, "init")`` and trained ``resolved_dense_epochs`` epochs with
    ``derive_seed(seed, 0, "train")``, exactly what ``t = 0`` of a run did before the dense stage was
    separate, so with ``dense_epochs=None`` old runs keep their numbers. It is trained into a temporary
    folder and moved into place with one ``os.rename`` (atomic), so a crash leaves no partial artifact.
    Training holds the artifact's lease (``<out>/dense/.<dense_id>.claim``, :mod:`lqtheory.runs.lease`): a
    concurrent caller waits for it, then loads the finished model instead of training it again. An existing
    artifact is verified (checksums, data fingerprint) and used, never retrained; a corrupt one raises
    :class:`CorruptRunError`. ``callbacks`` see the dense training when this call performs it.
    """
    if threads is not None:
        with torch_threads(threads):
            return ensure_dense(config, out, progress=progress, callbacks=callbacks)
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    final = dense_dir(config, out)
    data, fingerprint = load_run_data(config, device)
    if final.exists():
        load_dense(final, fingerprint=fingerprint)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # One trainer per artifact: a concurrent caller waits for the lease, then finds the folder and loads it.
    with lease(final.parent / f".{final.name}.claim", label=f"dense {final.name}") as held:
        if not final.exists():
            _train_dense(config, data, fingerprint, final, device, progress, callbacks)
            held.log("trained")
    load_dense(final, fingerprint=fingerprint)
    return final


def _train_dense(config, data, fingerprint, final: Path, device, progress, callbacks) -> None:
    """Train the dense model of ``config`` into a temporary folder and rename it to ``final`` (atomic)."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        started = time.perf_counter()
        model = build_run_model(config, data, device)
        w_init = clone_state(model)
        member = BankMember(model=model, data=data, config=config.dense_train_config(),
                            seed=derive_seed(config.seed, 0, "train"), callbacks=tuple(callbacks), label="dense")
        history = train_bank([member], device=device, precision=config.precision,
                             progress=progress_enabled(progress), desc="dense")[0]
        if history:
            acc, loss = history[-1]["test_accuracy"], history[-1]["test_loss"]
        else:
            acc, loss = evaluate(model, data.x_test, data.y_test, task=data.task)
        write_checkpoint(tmp / "dense.pt", {"format": DENSE_FORMAT, "dense_id": final.name,
                                             "w_init": state_to_cpu(w_init), "dense": state_to_cpu(clone_state(model))})
        write_checked_json(tmp / "dense.json", {
            "format": DENSE_FORMAT,
            "dense_id": final.name,
            "identity": dense_identity(config),
            "data_fingerprint": fingerprint,
            "accuracy": acc,
            "loss": loss,
            "train_loss": history[-1]["train_loss"] if history else None,
            "history": history,
            "seconds": time.perf_counter() - started,
            "metadata": run_metadata(device),
            "weights_sha256": sha256_hex((tmp / "dense.pt").read_bytes()),
        })
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # another process finished the same artifact first: use theirs (verified below)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def state_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def state_to_device(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in state.items()}


def run_metadata(device: torch.device) -> dict:
    meta = {
        "format": FORMAT_VERSION,
        "lqtheory": VERSION,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "kernel_pins": kernel_pins(),  # the CPU code paths (lqtheory.common.kernels)
    }
    if device.type == "cuda":
        meta["device_name"] = torch.cuda.get_device_name(device)
    return meta
