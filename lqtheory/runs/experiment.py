"""Iterative prune → rewind → retrain runs (THEORY.md §3, E2, E3), hashed run folders, exact resume.

One run (:func:`run_experiment`) [paper: 2022 code and ICLR 2023 Algorithm 1]:

* build the model from a seed and keep its initial state ``w_init`` (weights, biases, BN buffers);
* ``t = 0``: the *dense trained* weights, from the dense stage (:func:`ensure_dense`): the model trained
  ``dense_epochs`` epochs (default: ``epochs``), a content-addressed artifact ``<out>/dense/<dense_id>/``
  trained once per (data, model, seed, training settings, dense length) and shared by every method and
  scope that starts from it; never retrained;
* ``t = 1..T``: ``prune_step`` on the latest trained weights (One-Shot ranks by the dense trained
  weights), evaluate the *just-pruned* model (latest trained weights under the new mask), rewind every
  surviving weight, every bias and the BN state to ``w_init``, retrain ``epochs`` epochs under the
  mask, evaluate the *retrained* model.

Each iteration appends one record (see :data:`COLUMNS`): test accuracy/loss of the retrained and the
just-pruned model, remaining weights (per layer and total), PQ Index / SI / Gini means at neuron, layer
and global scope for both, the fraction pruned this iteration, the compression ratio and the
theoretical speed-up. Masks simulate sparsity: no wall-clock speed-up is implied.

Run folders (OpenLTH style). ``<out>/<run_id>/`` where ``run_id`` is a short hash of the
hyper-parameters that differ from their defaults (plus the required ones), so re-running a finished
configuration is free and adding a new field with a default keeps old run ids valid. The device is
part of the hash through its *type* only, and only when it is not the CPU: results from a CPU and a
GPU differ numerically and must not share a folder, while ``device="auto"`` and ``"cpu"`` on a
machine without GPU name the same run. The folder holds:

* ``config.json`` — the configuration, run id, versions and device (written once);
* ``checkpoint.pt`` — everything needed to resume: ``w_init``, the dense trained and the latest
  weights, the mask, the records. It is the commit point of an iteration. Per-iteration seeds are
  derived from ``(seed, t)`` (not drawn from one running stream), so no RNG state needs saving and a
  resumed run is bit-identical to an uninterrupted one on the same device;
* ``mask_<t>.pt`` — the mask after iteration ``t`` (:meth:`lqtheory.engine.masks.Mask.save` format);
* ``results.json`` — the records, the metadata and the SHA-256 of every mask file. Standard JSON:
  a compression ratio or speed-up that is infinite (nothing remains) is written as ``null`` and read
  back as ``inf``; any other non-finite number is written as ``null`` (read back as ``None``).

Data identity: every run records the SHA-256 of the tensors it trained and tested on
(:func:`data_fingerprint`, after subsetting) in ``config.json``, ``results.json`` and the checkpoint, and
the dense artifact records it too. Reloading or resuming a run, or reusing a dense artifact, with data
whose fingerprint differs raises :class:`DataMismatchError` naming both fingerprints.

The control (``method="control"``) runs the same schedule with nothing pruned; see
:mod:`lqtheory.analysis.comparison` for effects against it and matched-fraction comparisons.

Every file is written atomically (temporary file + ``os.replace``). ``checkpoint.pt`` and
``results.json`` carry a SHA-256 of their content and the mask files' digests are listed in both, so a
corrupt, truncated or foreign file raises :class:`CorruptRunError` naming it; it is never silently
read or silently recomputed. Loading a finished run checks every file (:func:`verify_run`), and the
temporary files left by a killed write are removed when the run is resumed. A run is computed under the
folder's claim (:mod:`lqtheory.runs.lease`, the lock file ``.claim``): a second process asking for the same run
waits for it and loads or resumes it, and the claim of a process that died is taken over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lqtheory.common.atomic import atomic_write_bytes
from lqtheory.engine.device import resolve_device
from lqtheory.engine.masks import SCOPES, Mask
from lqtheory.engine.training import Callback, TrainConfig, evaluate, progress_enabled, train

__all__ = [
    "COLUMNS",
    "CorruptRunError",
    "DataMismatchError",
    "ExperimentConfig",
    "Results",
    "data_fingerprint",
    "dense_id",
    "derive_seed",
    "ensure_dense",
    "load_dense",
    "load_checkpoint",
    "load_results",
    "load_run",
    "run_experiment",
    "run_experiments",
    "verify_run",
]

FORMAT_VERSION = 1
_CKPT_MAGIC = b"LQTCKPT1"
_HASH_LEN = 12

#: The columns of a record, as returned by :func:`load_results` (per-layer columns are
#: ``"<layer>/<key>"`` for the keys marked "per layer").
COLUMNS: dict[str, str] = {
    "iteration": "t: 0 = dense, t >= 1 after the t-th pruning step",
    "accuracy": "test accuracy of the retrained model (t = 0: the dense trained model)",
    "loss": "test loss of the retrained model",
    "pruned_accuracy": "test accuracy right after pruning, before rewinding (NaN at t = 0)",
    "pruned_loss": "test loss right after pruning (NaN at t = 0)",
    "train_loss": "mean training loss of the last epoch",
    "remaining": "alive prunable weights (per layer too)",
    "total": "prunable weights (per layer too)",
    "remaining_percent": "100 · remaining / total (per layer too)",
    "prune_rate": "fraction of the previously remaining weights removed this iteration (0 at t = 0)",
    "compression": "compression ratio total / remaining (inf when nothing remains; null in results.json)",
    "multiply_adds": "multiply-adds of the masked model for one input",
    "speedup": "theoretical speed-up: dense / remaining multiply-adds (inf when none remain; null in results.json)",
    "pqi_<scope>, si_<scope>, gini_<scope>": (
        "mean PQ Index I_{p,q}, SI_{si_q}, Gini over the units of scope neuron/layer/global of the retrained "
        "weights (per layer too, for neuron and layer scope)"
    ),
    "pruned_pqi_<scope>, ...": "the same indices of the just-pruned weights (NaN at t = 0)",
    "wall_time": "seconds spent on the iteration (pruning, evaluation, retraining)",
}


class CorruptRunError(RuntimeError):
    """A run folder holds a file that is corrupt, truncated, foreign or inconsistent with the others."""


class DataMismatchError(CorruptRunError):
    """A stored run or dense artifact was made on other data than the data loaded now (its data
    fingerprint differs, or it has none). The message names both fingerprints."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _canonical_dataset(name: str) -> str:
    from lqtheory.engine.data import DATASETS, _canonical

    key = _canonical(name)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return key


def _canonical_model(name: str) -> str:
    from lqtheory.engine.models import MODEL_PATTERNS, MODELS

    if not isinstance(name, str):
        raise TypeError(f"model must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key in MODELS or any(p.regex.fullmatch(key) for p in MODEL_PATTERNS):
        return key
    forms = [*sorted(MODELS), *(p.form for p in MODEL_PATTERNS)]
    raise ValueError(f"unknown model {name!r}; known forms: {', '.join(forms)} (e.g. mlp-128-1-2-relu)")


def _int_field(value, name: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """All hyper-parameters of one prune → rewind → retrain run, validated on construction.

    Pruning (see :class:`lqtheory.engine.pruning.PruneConfig`): ``method``, ``scope``, ``p``, ``q``, ``eta``,
    ``gamma``, ``beta``, ``rate``. Schedule: ``iterations`` T (pruning steps after the dense run) and
    ``epochs`` E per iteration. Training (see :class:`lqtheory.engine.training.TrainConfig`): ``lr``,
    ``momentum``, ``nesterov``, ``weight_decay``, ``schedule``, ``grad_clip``, ``batch_size``,
    ``l1_penalty``. Data: ``n_train``/``n_test`` keep a class-balanced subset chosen by ``data_seed``
    (the data are part of the problem, so they do not vary with ``seed``). ``seed`` drives the
    initialisation, the batch orders and random pruning. Statistics: the recorded PQ Index uses
    ``(stat_p, stat_q)`` and SI uses ``si_q`` whatever the method's own exponents, so runs of different
    methods are comparable. ``device``: ``auto``, ``cpu``, ``cuda``, ... (see module docstring for its
    role in the run id). Dataset and model names are canonicalised (``FashionMNIST`` →
    ``fashion-mnist``), numbers stored as floats where the field is real-valued.
    """

    dataset: str
    model: str
    method: str
    scope: str = "neuron"
    p: float = 0.5
    q: float = 1.0
    eta: float = 0.0
    gamma: float = 1.0
    beta: float = 0.9
    rate: float = 0.2
    iterations: int = 10
    epochs: int = 5
    seed: int = 0
    lr: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    batch_size: int = 250
    l1_penalty: float = 0.0
    n_train: int | None = None
    n_test: int | None = None
    data_seed: int = 0
    stat_p: float = 0.5
    stat_q: float = 1.0
    si_q: float = 0.5
    device: str = "auto"
    dense_epochs: int | None = None

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("dataset", _canonical_dataset(self.dataset))
        set_("model", _canonical_model(self.model))
        if not isinstance(self.method, str) or not isinstance(self.scope, str):
            raise TypeError("method and scope must be strings")
        set_("method", self.method.strip().lower())
        set_("scope", self.scope.strip().lower())
        _int_field(self.iterations, "iterations", 0)
        _int_field(self.epochs, "epochs", 0)
        if self.dense_epochs is not None:
            _int_field(self.dense_epochs, "dense_epochs", 0)
        _int_field(self.seed, "seed", 0)
        _int_field(self.data_seed, "data_seed", 0)
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None:
                _int_field(getattr(self, name), name, 1)
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string, got {type(self.device).__name__}")
        set_("device", self.device.strip().lower())
        if self.method == "control":
            # Nothing is pruned, so the pruning hyper-parameters have no effect: one control run (one
            # run id) serves every method and scope of a seed.
            for f in dataclasses.fields(self):
                if f.name in ("scope", "p", "q", "eta", "gamma", "beta", "rate"):
                    set_(f.name, f.default)
        prune = self.prune_config()  # validates method, scope, p, q, eta, gamma, beta, rate
        for name in ("p", "q", "eta", "gamma", "beta", "rate"):
            set_(name, getattr(prune, name))
        train_cfg = self.train_config()  # validates the training fields
        for name in ("lr", "momentum", "weight_decay", "l1_penalty"):
            set_(name, float(getattr(train_cfg, name)))
        if self.grad_clip is not None:
            set_("grad_clip", float(self.grad_clip))
        from lqtheory.common.checks import check_exponent

        set_("stat_p", check_exponent(self.stat_p, "stat_p", high=1e6))
        set_("stat_q", check_exponent(self.stat_q, "stat_q", high=1e6))
        set_("si_q", check_exponent(self.si_q, "si_q", high=1.0, high_inclusive=False))
        if not self.stat_p < self.stat_q:
            raise ValueError(f"stat_p must be smaller than stat_q, got {self.stat_p:g} and {self.stat_q:g}")

    # Derived configurations ------------------------------------------------------------------------
    def prune_config(self):
        """The :class:`lqtheory.engine.pruning.PruneConfig` of this run."""
        from lqtheory.engine.pruning import PruneConfig

        return PruneConfig(
            self.method, scope=self.scope, p=self.p, q=self.q, eta=self.eta, gamma=self.gamma, beta=self.beta,
            rate=self.rate,
        )

    @property
    def resolved_dense_epochs(self) -> int:
        """Epochs of the dense training (t = 0): ``dense_epochs``, or ``epochs`` when it is None."""
        return self.epochs if self.dense_epochs is None else self.dense_epochs

    def dense_train_config(self) -> TrainConfig:
        """The :class:`lqtheory.engine.training.TrainConfig` of the dense training (``resolved_dense_epochs``)."""
        return dataclasses.replace(self.train_config(), epochs=self.resolved_dense_epochs)

    def train_config(self) -> TrainConfig:
        """The :class:`lqtheory.engine.training.TrainConfig` of every iteration's retraining (``epochs``)."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
            nesterov=self.nesterov, weight_decay=self.weight_decay, schedule=self.schedule,
            grad_clip=self.grad_clip, l1_penalty=self.l1_penalty,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown ExperimentConfig field(s): {sorted(unknown)}")
        return cls(**values)

    def replace(self, **changes) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)

    # Naming ----------------------------------------------------------------------------------------
    def device_type(self) -> str:
        """The type (``cpu``, ``cuda``, ``mps``) of the device this run uses on this machine."""
        return resolve_device(self.device).type

    def hashed_fields(self) -> dict[str, Any]:
        """What the run id hashes: required fields, every field that differs from its default, and
        the device type when it is not ``cpu`` (``device`` itself is left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "device":
                continue
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or value != f.default:
                out[f.name] = value
        device_type = self.device_type()
        if device_type != "cpu":
            out["device_type"] = device_type
        return out

    def run_id(self) -> str:
        """Short hash (12 hex digits) of :meth:`hashed_fields` (OpenLTH style)."""
        payload = json.dumps({"format": FORMAT_VERSION, **self.hashed_fields()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:_HASH_LEN]

    def run_dir(self, out_root: str | os.PathLike = "runs") -> Path:
        """``<out_root>/<run_id>``."""
        return Path(out_root) / self.run_id()

    def describe(self) -> str:
        """One line naming the run's main settings, for logs and tables."""
        bits = [f"{self.dataset}", self.model, f"{self.method}/{self.scope}", f"T={self.iterations}",
                f"E={self.epochs}", f"seed={self.seed}"]
        if self.dense_epochs is not None:
            bits.insert(5, f"dense E={self.dense_epochs}")
        if self.method in ("sap", "si-adaptive"):
            bits.insert(3, f"p={self.p:g} q={self.q:g} eta={self.eta:g} gamma={self.gamma:g}")
        else:
            bits.insert(3, f"rate={self.rate:g}")
        return " ".join(bits)


@contextlib.contextmanager
def _torch_threads(threads: int):
    """torch's CPU thread count set to ``threads`` for the block, restored afterwards."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and a path of parts (e.g. ``(seed, 3, "train")``) by SHA-256.

    Each iteration's streams depend only on ``(seed, t)``, so a resumed run draws exactly what an
    uninterrupted run draws.
    """
    text = "/".join(str(x) for x in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & (2**63 - 1)


# --------------------------------------------------------------------------------------------------
# Atomic, checksummed files
# --------------------------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()




def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


#: Record fields whose value is infinite when nothing remains (``total / 0``): written as JSON ``null``
#: (standard JSON has no Infinity) and read back as ``math.inf``.
INFINITE_WHEN_NULL = ("compression", "speedup")


def _json_safe(value, key: str | None = None):
    """``value`` with every non-finite float replaced by ``None`` (JSON ``null``), recursively.

    ``compression`` / ``speedup`` of a run with nothing left are ``inf`` (see :data:`INFINITE_WHEN_NULL`);
    any other non-finite number means "no finite value" and is read back as ``None``.
    """
    if isinstance(value, dict):
        return {k: _json_safe(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records_from_json(records: list) -> list:
    """Inverse of :func:`_json_safe` on records: ``null`` compression / speed-up is ``inf`` again."""
    for record in records:
        for key in INFINITE_WHEN_NULL:
            if key in record and record[key] is None:
                record[key] = math.inf
    return records


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _write_checked_json(path: Path, body: dict) -> None:
    body = _json_safe(body)
    body = {**body, "sha256": _sha256(_canonical_json(body).encode())}
    # The checksum is over the canonical (sorted) form; the file keeps the records' key order.
    atomic_write_bytes(path, (json.dumps(body, indent=1, allow_nan=False) + "\n").encode())


def _read_checked_json(path: Path) -> dict:
    try:  # strict: standard JSON only (NaN / Infinity are not JSON)
        body = json.loads(path.read_text(), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptRunError(f"{path} is not readable JSON (corrupt or truncated): {err}") from err
    if not isinstance(body, dict) or "sha256" not in body:
        raise CorruptRunError(f"{path} has no checksum: not written by lqtheory.runs.experiment")
    digest = body.pop("sha256")
    if _sha256(_canonical_json(body).encode()) != digest:
        raise CorruptRunError(f"{path} does not match its checksum: the file was modified or damaged")
    return body


def _write_checkpoint(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, _CKPT_MAGIC + hashlib.sha256(payload).digest() + payload)


def _verified_checkpoint_payload(path: Path, data: bytes | None = None) -> bytes:
    """The pickled payload of a checkpoint file after checking its header and SHA-256."""
    data = path.read_bytes() if data is None else data
    head = len(_CKPT_MAGIC) + 32
    if len(data) < head or data[: len(_CKPT_MAGIC)] != _CKPT_MAGIC:
        raise CorruptRunError(f"{path} is not an lqtheory checkpoint (bad header)")
    payload = data[head:]
    if hashlib.sha256(payload).digest() != data[len(_CKPT_MAGIC) : head]:
        raise CorruptRunError(f"{path} does not match its checksum: truncated or damaged")
    return payload


def _read_checkpoint(path: Path) -> dict:
    data = path.read_bytes()
    payload = _verified_checkpoint_payload(path, data)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # the checksum matched, so this is a foreign or incompatible payload
        raise CorruptRunError(f"{path} could not be unpickled: {err}") from err


def _mask_path(run_dir: Path, t: int) -> Path:
    return run_dir / f"mask_{t}.pt"


def _config_path(run_dir: Path) -> Path:
    return run_dir / "config.json"


def _results_path(run_dir: Path) -> Path:
    return run_dir / "results.json"


def _checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoint.pt"


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


def _flatten(record: dict) -> dict:
    """One flat row: per-layer values under ``"<layer>/<key>"``, ``None`` (not applicable) as NaN."""
    flat = {k: v for k, v in record.items() if k != "layers"}
    for layer, values in record.get("layers", {}).items():
        for key, value in values.items():
            flat[f"{layer}/{key}"] = value
    return {k: (math.nan if v is None else v) for k, v in flat.items()}


@dataclasses.dataclass(frozen=True)
class Results:
    """A run's records and metadata. ``records[t]`` is iteration ``t`` (nested ``layers`` dict)."""

    config: ExperimentConfig
    run_dir: Path
    records: list[dict]
    metadata: dict
    complete: bool
    data_fingerprint: str | None = None

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def layers(self) -> list[str]:
        return list(self.records[0]["layers"]) if self.records else []

    @property
    def dense_accuracy(self) -> float:
        """Test accuracy of the dense trained model (iteration 0)."""
        return self.records[0]["accuracy"]

    def frame(self, *, with_config: bool = True):
        """The records as a pandas DataFrame, one row per iteration; per-layer values in columns
        ``"<layer>/<key>"``; with ``with_config`` also the run id and the main settings, so frames of
        several runs concatenate into one tidy table."""
        import pandas as pd

        df = pd.DataFrame([_flatten(r) for r in self.records])
        if with_config:
            cfg = self.config
            extra = {
                "run_id": self.run_id, "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
                "scope": cfg.scope, "seed": cfg.seed, "p": cfg.p, "q": cfg.q, "eta": cfg.eta, "gamma": cfg.gamma,
                "rate": cfg.rate, "epochs": cfg.epochs, "dense_epochs": cfg.resolved_dense_epochs,
                "iterations": cfg.iterations,
            }
            for i, (k, v) in enumerate(extra.items()):
                df.insert(i, k, v)
        return df

    def mask(self, t: int, *, device: str | torch.device | None = None) -> Mask:
        """The mask after iteration ``t``, checked against the digest recorded in ``results.json``."""
        expected = self.metadata.get("mask_sha256", {}).get(str(t))
        if expected is None:
            raise KeyError(f"run {self.run_id} has no mask for iteration {t}")
        return Mask.load(_checked_mask_file(self.run_dir, t, expected), device=device)


def _checked_mask_file(run_dir: Path, t: int, expected: str) -> Path:
    """``mask_<t>.pt`` after checking it against the digest recorded in ``results.json``."""
    path = _mask_path(run_dir, t)
    if not path.is_file():
        raise CorruptRunError(f"{path} is missing")
    if _sha256(path.read_bytes()) != expected:
        raise CorruptRunError(f"{path} does not match the digest recorded in results.json")
    return path


def load_run(run_dir: str | os.PathLike) -> Results:
    """Read a run folder's ``results.json`` (checksum verified) into :class:`Results`."""
    run_dir = Path(run_dir)
    path = _results_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {run_dir} (not a run folder, or the run has not finished t=0)")
    body = _read_checked_json(path)
    try:
        config = ExperimentConfig.from_dict(body["config"])
        records = body["records"]
        metadata = body["metadata"]
        complete = bool(body["complete"])
        records = _records_from_json(records)
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptRunError(f"{path} is not a results file of this version: {err}") from err
    return Results(config=config, run_dir=run_dir, records=records, metadata=metadata, complete=complete,
                   data_fingerprint=body.get("data_fingerprint"))


def verify_run(run_dir: str | os.PathLike) -> Results:
    """Load a run folder and check every file in it against its recorded digest; return the results.

    ``results.json`` and ``config.json`` against their own checksums, ``checkpoint.pt`` against its
    header and SHA-256, and every ``mask_<t>.pt`` (one per record) against the digest listed in
    ``results.json``. A missing, truncated or altered file raises :class:`CorruptRunError` naming it.
    """
    run_dir = Path(run_dir)
    results = load_run(run_dir)
    if _config_path(run_dir).is_file():
        _read_checked_json(_config_path(run_dir))
    else:
        raise CorruptRunError(f"{_config_path(run_dir)} is missing")
    ckpt = _checkpoint_path(run_dir)
    if not ckpt.is_file():
        raise CorruptRunError(f"{ckpt} is missing")
    _verified_checkpoint_payload(ckpt)
    digests = results.metadata.get("mask_sha256", {})
    for t in range(len(results.records)):
        expected = digests.get(str(t))
        if expected is None:
            raise CorruptRunError(f"{_results_path(run_dir)} lists no digest for {_mask_path(run_dir, t).name}")
        _checked_mask_file(run_dir, t, expected)
    return results


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files (``.<name>.*.tmp``) of atomic writes that a killed process left."""
    if run_dir.is_dir():
        for tmp in run_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The verified contents of a run's ``checkpoint.pt`` (CPU tensors): ``w_init``, ``dense`` (weights
    trained at t = 0), ``latest`` (weights after the last committed iteration), ``mask``, ``records``
    (JSON text), ``mask_sha256``, ``complete``."""
    path = _checkpoint_path(Path(run_dir))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint.pt in {run_dir}")
    return _read_checkpoint(path)


def load_results(run_dir: str | os.PathLike):
    """The records of a run folder as a pandas DataFrame (see :meth:`Results.frame`)."""
    return load_run(run_dir).frame()


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _full_dataset(name: str):
    from lqtheory.engine.data import load_dataset

    return load_dataset(name, device="cpu")


def data_fingerprint(data) -> str:
    """SHA-256 (hex) of the tensors a run trains and tests on: ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` of a :class:`lqtheory.engine.data.Dataset` (after subsetting), each with its name, dtype and shape.

    It identifies the data by content, not by path: the same IDX files read from another folder give
    the same fingerprint, other files (or another split) give another. Computed on CPU copies, so it
    does not depend on the device.
    """
    h = hashlib.sha256(b"lqtheory-data-v1")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        t = getattr(data, name).detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


@functools.lru_cache(maxsize=4)
def _subset_and_fingerprint(dataset: str, n_train, n_test, data_seed: int):
    # Cached per process: a notebook runs many seeds/methods on one subset, hashed once.
    data = _full_dataset(dataset).subset(n_train, n_test, seed=data_seed)
    return data, data_fingerprint(data)


def _load_data(config: ExperimentConfig, device: torch.device):
    """``(dataset on device, data fingerprint)`` of the run's subset."""
    data, fingerprint = _subset_and_fingerprint(config.dataset, config.n_train, config.n_test, config.data_seed)
    return data.to(device), fingerprint


def _check_fingerprint(stored: str | None, current: str, where: Path) -> None:
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


# --------------------------------------------------------------------------------------------------
# The dense stage: one content-addressed artifact per (data, model, seed, training settings)
# --------------------------------------------------------------------------------------------------

DENSE_FORMAT = 1
_DENSE_FIELDS = ("dataset", "model", "seed", "data_seed", "n_train", "n_test", "lr", "momentum", "nesterov",
                 "weight_decay", "schedule", "grad_clip", "batch_size", "l1_penalty")


def dense_identity(config: ExperimentConfig) -> dict[str, Any]:
    """What the dense trained model depends on: the data identity (dataset, subset sizes, data seed),
    the model and its seed, the training settings, the dense length and the device type. The pruning
    method, scope, exponents, iterations and retraining epochs are not part of it."""
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    out = {name: getattr(config, name) for name in _DENSE_FIELDS}
    out["dense_epochs"] = config.resolved_dense_epochs
    out["device_type"] = config.device_type()
    return out


def dense_id(config: ExperimentConfig) -> str:
    """Short hash (16 hex digits) of :func:`dense_identity`: the name of the dense artifact
    ``<out>/dense/<dense_id>/`` shared by every run that starts from the same dense trained model."""
    payload = _canonical_json({"format": DENSE_FORMAT, **dense_identity(config)})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _dense_dir(config: ExperimentConfig, out) -> Path:
    return Path(out) / "dense" / dense_id(config)


def _build_model(config: ExperimentConfig, data, device: torch.device):
    from lqtheory.engine.models import build_model

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
    info = _read_checked_json(info_path)
    if info.get("format") != DENSE_FORMAT or info.get("dense_id") != path.name:
        raise CorruptRunError(f"{info_path} belongs to another dense artifact or format")
    if _sha256(weights_path.read_bytes()) != info.get("weights_sha256"):
        raise CorruptRunError(f"{weights_path} does not match the digest recorded in {info_path}")
    weights = _read_checkpoint(weights_path)
    if weights.get("dense_id") != path.name:
        raise CorruptRunError(f"{weights_path} belongs to another dense artifact")
    if fingerprint is not None:
        _check_fingerprint(info.get("data_fingerprint"), fingerprint, path)
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
    Training holds the artifact's claim (``<out>/dense/.<dense_id>.claim``, :mod:`lqtheory.runs.lease`): a
    concurrent caller waits for it, then loads the finished model instead of training it again. An existing
    artifact is verified (checksums, data fingerprint) and used, never retrained; a corrupt one raises
    :class:`CorruptRunError`. ``callbacks`` see the dense training when this call performs it.
    """
    if threads is not None:
        with _torch_threads(threads):
            return ensure_dense(config, out, progress=progress, callbacks=callbacks)
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    final = _dense_dir(config, out)
    data, fingerprint = _load_data(config, device)
    if final.exists():
        load_dense(final, fingerprint=fingerprint)
        return final
    from lqtheory.runs.lease import claim

    final.parent.mkdir(parents=True, exist_ok=True)
    # One trainer per artifact: a concurrent caller waits for the claim, then finds the folder and loads it.
    with claim(final.parent / f".{final.name}.claim", label=f"dense {final.name}") as held:
        if not final.exists():
            _train_dense(config, data, fingerprint, final, device, progress, callbacks)
            held.log("trained")
    load_dense(final, fingerprint=fingerprint)
    return final


def _train_dense(config, data, fingerprint, final: Path, device, progress, callbacks) -> None:
    """Train the dense model of ``config`` into a temporary folder and rename it to ``final`` (atomic)."""
    import shutil
    import uuid

    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        started = time.perf_counter()
        model = _build_model(config, data, device)
        w_init = _clone_state(model)
        history = train(
            model, data, config.dense_train_config(), device=device, seed=derive_seed(config.seed, 0, "train"),
            callbacks=callbacks, progress=progress_enabled(progress), desc="dense",
        )
        if history:
            acc, loss = history[-1]["test_accuracy"], history[-1]["test_loss"]
        else:
            acc, loss = evaluate(model, data.x_test, data.y_test, task=data.task)
        _write_checkpoint(tmp / "dense.pt", {"format": DENSE_FORMAT, "dense_id": final.name,
                                             "w_init": _to_cpu(w_init), "dense": _to_cpu(_clone_state(model))})
        _write_checked_json(tmp / "dense.json", {
            "format": DENSE_FORMAT,
            "dense_id": final.name,
            "identity": dense_identity(config),
            "data_fingerprint": fingerprint,
            "accuracy": acc,
            "loss": loss,
            "train_loss": history[-1]["train_loss"] if history else None,
            "history": history,
            "seconds": time.perf_counter() - started,
            "metadata": _metadata(device),
            "weights_sha256": _sha256((tmp / "dense.pt").read_bytes()),
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


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _to_device(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in state.items()}


def _statistics(weights: dict[str, torch.Tensor], mask: Mask, config: ExperimentConfig, prefix: str):
    from lqtheory.engine.pruning import unit_statistics

    flat: dict[str, float] = {}
    layers: dict[str, dict[str, float]] = {name: {} for name in mask}
    for scope in SCOPES:
        stats = unit_statistics(weights, mask, scope, p=config.stat_p, q=config.stat_q, si_q=config.si_q)
        for key in ("pqi", "si", "gini"):
            flat[f"{prefix}{key}_{scope}"] = stats["global"][key]
            if scope != "global":
                for name in mask:
                    layers[name][f"{prefix}{key}_{scope}"] = stats["layers"][name][key]
    return flat, layers


def _empty_statistics(mask: Mask, prefix: str):
    flat = {f"{prefix}{key}_{scope}": None for scope in SCOPES for key in ("pqi", "si", "gini")}
    layers = {
        name: {f"{prefix}{key}_{scope}": None for scope in SCOPES if scope != "global" for key in ("pqi", "si", "gini")}
        for name in mask
    }
    return flat, layers


def _metadata(device: torch.device) -> dict:
    import lqtheory

    meta = {
        "format": FORMAT_VERSION,
        "lqtheory": getattr(lqtheory, "__version__", "unknown"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        meta["device_name"] = torch.cuda.get_device_name(device)
    return meta


class _Run:
    """State of a run in progress; one method per step of the loop."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, device: torch.device, out: Path):
        from lqtheory.engine.models import count_multiply_adds, prunable_parameters

        self.config = config
        self.run_dir = run_dir
        self.out = out
        self.device = device
        self.data, self.fingerprint = _load_data(config, device)
        self.model = _build_model(config, self.data, device)
        self.prunable = lambda: {n: p.detach() for n, p in prunable_parameters(self.model).items()}
        self.macs = lambda mask: count_multiply_adds(self.model, self.data.input_shape, mask)
        self.w_init = _clone_state(self.model)
        self.dense: dict[str, torch.Tensor] | None = None
        self.latest: dict[str, torch.Tensor] | None = None
        self.mask = Mask.ones_like(self.model)
        self.records: list[dict] = []
        self.mask_sha: dict[str, str] = {}
        self.dense_macs = sum(self.macs(None).values())

    # persistence ---------------------------------------------------------------------------------
    def restore(self, ckpt: dict) -> None:
        c = ckpt
        if c.get("run_id") != self.run_dir.name or c.get("format") != FORMAT_VERSION:
            raise CorruptRunError(f"{_checkpoint_path(self.run_dir)} belongs to another run or format")
        _check_fingerprint(c.get("data_fingerprint"), self.fingerprint, _checkpoint_path(self.run_dir))
        w_init = c["w_init"]
        if set(w_init) != set(self.w_init) or any(w_init[k].shape != v.shape for k, v in self.w_init.items()):
            raise CorruptRunError(f"{_checkpoint_path(self.run_dir)} holds a different model")
        if any(not torch.equal(w_init[k], v.cpu()) for k, v in self.w_init.items()):
            # Same seed, same code, same device type must rebuild the same initial weights.
            raise CorruptRunError(
                f"{_checkpoint_path(self.run_dir)}: the model rebuilt from the seed differs from the saved w_init "
                "(was the run started with another torch version or model code?); delete the folder to start over"
            )
        self.dense = _to_device(c["dense"], self.device) if c["dense"] is not None else None
        self.latest = _to_device(c["latest"], self.device) if c["latest"] is not None else None
        self.mask = Mask(_to_device(c["mask"], self.device), reference=self.model)
        self.records = json.loads(c["records"])
        self.mask_sha = dict(c["mask_sha256"])
        for t, digest in self.mask_sha.items():
            path = _mask_path(self.run_dir, int(t))
            if not path.is_file() or _sha256(path.read_bytes()) != digest:
                raise CorruptRunError(f"{path} is missing or does not match the digest in the checkpoint")

    def commit(self, t: int, complete: bool, metadata: dict) -> None:
        """Write mask_t, then the checkpoint (the commit point), then results.json."""
        path = _mask_path(self.run_dir, t)
        self.mask.save(path)
        self.mask_sha[str(t)] = _sha256(path.read_bytes())
        _write_checkpoint(
            _checkpoint_path(self.run_dir),
            {
                "format": FORMAT_VERSION,
                "run_id": self.run_dir.name,
                "data_fingerprint": self.fingerprint,
                "w_init": _to_cpu(self.w_init),
                "dense": _to_cpu(self.dense) if self.dense is not None else None,
                "latest": _to_cpu(self.latest) if self.latest is not None else None,
                "mask": {k: v.cpu() for k, v in self.mask.items()},
                "records": json.dumps(self.records),
                "mask_sha256": dict(self.mask_sha),
                "complete": complete,
            },
        )
        self.write_results(complete, metadata)

    def write_results(self, complete: bool, metadata: dict) -> None:
        _write_checked_json(
            _results_path(self.run_dir),
            {
                "format": FORMAT_VERSION,
                "run_id": self.run_dir.name,
                "config": self.config.to_dict(),
                "data_fingerprint": self.fingerprint,
                "dense_id": dense_id(self.config),
                "complete": complete,
                "metadata": {**metadata, "mask_sha256": dict(self.mask_sha)},
                "records": self.records,
            },
        )

    # one iteration ---------------------------------------------------------------------------------
    def _counts(self, mask: Mask) -> tuple[dict, dict]:
        alive, total = mask.alive_per_layer(), mask.total_per_layer()
        return alive, total

    def iteration(self, t: int, *, callbacks: Sequence[Callback], progress: bool) -> dict:
        cfg = self.config
        started = time.perf_counter()
        previous_alive = self.mask.count_alive()
        if t == 0:
            pruned_acc = pruned_loss = None
            pruned_flat, pruned_layers = _empty_statistics(self.mask, "pruned_")
        else:
            from lqtheory.engine.pruning import prune_step

            latest_w = {n: self.latest[n] for n in self.mask}
            dense_w = {n: self.dense[n] for n in self.mask}
            gen = torch.Generator(device="cpu").manual_seed(derive_seed(cfg.seed, t, "prune"))
            new_mask = prune_step(latest_w, self.mask, cfg.prune_config(), dense_weights=dense_w, generator=gen)
            if not new_mask.issubset(self.mask):
                raise RuntimeError(f"prune_step revived weights at iteration {t}")  # a pruning-method bug
            self.mask = new_mask
            self.model.load_state_dict(self.latest)
            self.mask.apply_to(self.model)
            pruned_acc, pruned_loss = evaluate(
                self.model, self.data.x_test, self.data.y_test, task=self.data.task
            )
            pruned_flat, pruned_layers = _statistics(self.prunable(), self.mask, cfg, "pruned_")

        if t == 0:
            # the dense stage: a shared artifact, trained once (by this call or an earlier run), never retrained
            dense = load_dense(
                ensure_dense(cfg, self.out, progress=progress, callbacks=callbacks), fingerprint=self.fingerprint
            )
            if any(not torch.equal(dense["w_init"][k], v.cpu()) for k, v in self.w_init.items()):
                raise CorruptRunError(
                    f"dense artifact {dense['dense_id']}: its w_init differs from the model rebuilt from the seed "
                    "(another torch version or model code?); delete it to retrain"
                )
            self.model.load_state_dict(_to_device(dense["dense"], self.device))
            acc, loss = dense["accuracy"], dense["loss"]
            history = [{"train_loss": dense["train_loss"]}] if dense["train_loss"] is not None else []
        else:
            # rewind everything (weights, biases, BN buffers) to w_init, then retrain under the mask
            self.model.load_state_dict(self.w_init)
            history = train(
                self.model, self.data, cfg.train_config(), mask=self.mask, device=self.device,
                seed=derive_seed(cfg.seed, t, "train"), callbacks=callbacks, progress=progress,
                desc=f"iteration {t}",
            )
            if history:
                acc, loss = history[-1]["test_accuracy"], history[-1]["test_loss"]
            else:  # epochs = 0: the rewound model itself
                acc, loss = evaluate(self.model, self.data.x_test, self.data.y_test, task=self.data.task)
        self.latest = _clone_state(self.model)
        if t == 0:
            self.dense = self.latest
        flat, layers = _statistics(self.prunable(), self.mask, cfg, "")

        alive, total = self._counts(self.mask)
        remaining, n_total = sum(alive.values()), sum(total.values())
        macs = sum(self.macs(self.mask).values())
        record: dict[str, Any] = {
            "iteration": t,
            "accuracy": acc,
            "loss": loss,
            "pruned_accuracy": pruned_acc,
            "pruned_loss": pruned_loss,
            "train_loss": history[-1]["train_loss"] if history else None,
            "remaining": remaining,
            "total": n_total,
            "remaining_percent": 100.0 * remaining / n_total if n_total else 100.0,
            "prune_rate": 1.0 - remaining / previous_alive if previous_alive else 0.0,
            "compression": n_total / remaining if remaining else math.inf,
            "multiply_adds": macs,
            "speedup": self.dense_macs / macs if macs else math.inf,
            **flat,
            **pruned_flat,
        }
        record["layers"] = {
            name: {
                "remaining": alive[name],
                "total": total[name],
                "remaining_percent": 100.0 * alive[name] / total[name] if total[name] else 100.0,
                **layers[name],
                **pruned_layers[name],
            }
            for name in self.mask
        }
        record["wall_time"] = time.perf_counter() - started
        return record


def _check_config_file(run_dir: Path, config: ExperimentConfig) -> None:
    path = _config_path(run_dir)
    body = _read_checked_json(path)
    stored = body.get("config")
    if stored != json.loads(json.dumps(config.to_dict())):
        raise CorruptRunError(
            f"{path} holds a different configuration than the one requested for run {run_dir.name} "
            "(hash collision or a changed default); delete the folder or choose another --out"
        )


def run_experiment(
    config: ExperimentConfig,
    out: str | os.PathLike = "runs",
    *,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: bool = False,
    threads: int | None = None,
    on_record: Callable[[dict], None] | None = None,
    on_restore: Callable[[list[dict], bool], None] | None = None,
) -> Results:
    """Run (or resume, or just load) the prune → rewind → retrain experiment ``config``.

    The run lives in ``config.run_dir(out)``. A finished run is loaded, not recomputed. A run that
    stopped part-way (crash, Ctrl-C, an exception from a ``callbacks`` hook, which the tests use)
    resumes after its last committed iteration and gives exactly the records and masks an
    uninterrupted run gives on the same device (``wall_time`` aside). A corrupt or inconsistent file
    in the folder raises :class:`CorruptRunError`. ``progress``: tqdm bars over iterations and
    epochs (default: only when interactive, see :func:`lqtheory.engine.training.progress_enabled`).
    ``verbose`` prints one line per finished iteration to stdout and ``on_record(record)`` is called
    with each newly committed record (the CLI prints its table with it); ``on_restore(records, complete)``
    is called once, before any new iteration, with the records already committed in the folder (a finished
    run's, or those a resumed run restored from its checkpoint), if there are any. ``threads`` sets torch's CPU thread
    count for the duration of the run (restored afterwards); ``None`` leaves it alone. Small models
    train much faster on one thread, especially when other processes share the cores; the count
    used is recorded in the metadata (CPU results may differ in the last bits between counts).
    """
    if threads is not None:
        with _torch_threads(threads):
            return run_experiment(config, out, progress=progress, callbacks=callbacks, verbose=verbose,
                                  on_record=on_record, on_restore=on_restore)
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    device = resolve_device(config.device)  # a device that is not present fails before anything is claimed
    run_dir = config.run_dir(out)
    finished = _load_finished(config, run_dir, device, on_restore)
    if finished is not None:
        return finished
    # Compute under the run folder's claim (lqtheory.runs.lease): a second process asking for this run waits,
    # then loads or resumes it; a claim whose owner died is taken over.
    from lqtheory.runs.lease import claim_run

    with claim_run(run_dir) as claim:
        return _run_claimed(config, out, claim, progress=progress, callbacks=callbacks, verbose=verbose,
                            on_record=on_record, on_restore=on_restore)


def _load_finished(config, run_dir: Path, device, on_restore) -> Results | None:
    """The run's results if its folder holds a finished run, after checking the configuration, the data
    fingerprint (the data are part of the run's identity) and every file's digest; else None."""
    results_path, config_path = _results_path(run_dir), _config_path(run_dir)
    if not config_path.is_file() and not results_path.is_file():
        return None
    _, fingerprint = _load_data(config, device)  # cached per process
    if config_path.is_file():
        _check_config_file(run_dir, config)
        _check_fingerprint(_read_checked_json(config_path).get("data_fingerprint"), fingerprint, config_path)
    if results_path.is_file():
        done = load_run(run_dir)
        _check_fingerprint(done.data_fingerprint, fingerprint, results_path)
        if done.complete:
            done = verify_run(run_dir)  # a finished run: every file against its digest, nothing recomputed
            if on_restore is not None:
                on_restore(done.records, True)
            return done
    return None


def _run_claimed(config, out, claim, *, progress, callbacks, verbose, on_record, on_restore=None) -> Results:
    """:func:`run_experiment` once the run folder is claimed: look again (another process may have
    finished or advanced the run while we waited), then resume or start."""
    device = resolve_device(config.device)
    run_dir = config.run_dir(out)
    results_path, ckpt_path, config_path = _results_path(run_dir), _checkpoint_path(run_dir), _config_path(run_dir)
    finished = _load_finished(config, run_dir, device, on_restore)
    if finished is not None:
        return finished
    _, fingerprint = _load_data(config, device)
    if results_path.is_file() and not ckpt_path.is_file():
        raise CorruptRunError(f"{run_dir} has results.json but no checkpoint.pt to resume from; delete the folder")

    _remove_stale_temporaries(run_dir)
    metadata = _metadata(device)
    state = _Run(config, run_dir, device, Path(out))
    if ckpt_path.is_file():
        ckpt = _read_checkpoint(ckpt_path)
        state.restore(ckpt)
        if on_restore is not None and state.records:
            on_restore([dict(r) for r in state.records], bool(ckpt.get("complete")))
        if ckpt.get("complete"):
            # checkpoint committed but results.json not rewritten before a crash: finish the bookkeeping
            state.write_results(True, metadata)
            return load_run(run_dir)
    else:
        _write_checked_json(
            config_path,
            {"format": FORMAT_VERSION, "run_id": run_dir.name, "config": config.to_dict(),
             "hashed_fields": config.hashed_fields(), "data_fingerprint": fingerprint,
             "dense_id": dense_id(config), "metadata": metadata},
        )

    show = progress_enabled(progress)
    start = len(state.records)
    claim.log("start", iteration=start)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations + 1, initial=start, desc=f"run {run_dir.name}", file=sys.stderr)
    try:
        for t in range(start, config.iterations + 1):
            record = state.iteration(t, callbacks=callbacks, progress=show)
            state.records.append(record)
            claim.check()  # never commit into a folder another process has taken over
            state.commit(t, complete=t == config.iterations, metadata=metadata)
            if verbose:
                print(_verbose_line(record), flush=True)
            if on_record is not None:
                on_record(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(acc=f"{record['accuracy']:.3f}", rem=f"{record['remaining_percent']:.1f}%")
    finally:
        if bar is not None:
            bar.close()
    return load_run(run_dir)


def _verbose_line(record: dict) -> str:
    return (
        f"t={record['iteration']:>3}  remaining {record['remaining_percent']:7.3f}%  "
        f"accuracy {record['accuracy']:.4f}  just-pruned "
        + (f"{record['pruned_accuracy']:.4f}" if record["pruned_accuracy"] is not None else "   -  ")
        + f"  PQI {record['pqi_neuron']:.4f}"
    )


def run_experiments(
    configs: Sequence[ExperimentConfig],
    out: str | os.PathLike = "runs",
    *,
    progress: bool | None = None,
    threads: int | None = None,
    executor: str | None = None,
    scheduler=None,
    workers: int | None = None,
):
    """Run (or load) every configuration and return all records as one pandas DataFrame
    (:meth:`Results.frame` rows with the run id and main settings as columns, in the order given).
    Duplicate configurations run once. A tqdm bar over the runs is shown when interactive.

    Delegates to :func:`lqtheory.runs.grid.run_grid` (see there for ``executor``, ``scheduler``,
    ``workers``, ``threads``). What differs is the default executor: the grid goes to Dask when a
    scheduler is known (``scheduler``, or ``$LQTHEORY_SCHEDULER``, which ``lqtheory reproduce`` sets
    for its notebooks) or Dask is asked for (``executor="dask"``, ``$LQTHEORY_EXECUTOR=dask``, or
    ``workers``); otherwise the runs go one after another in this process, so a notebook executed on
    its own (Jupyter, nbval) never starts a cluster of its own. Results are identical either way (with
    the same ``threads``).
    """
    from lqtheory.runs.grid import resolve, run_grid

    executor, scheduler, _ = resolve(executor, scheduler, default="dask" if workers is not None else "serial")
    return run_grid(configs, out, executor=executor, scheduler=scheduler if executor == "dask" else None,
                    workers=workers, threads=threads, progress=progress)
