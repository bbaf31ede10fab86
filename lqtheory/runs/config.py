"""The run configuration: every hyper-parameter of one prune -> rewind -> retrain run, and its run id.

Part of the runs room. :class:`ExperimentConfig` validates and canonicalises on construction;
:meth:`ExperimentConfig.run_id` is a short SHA-256 of the fields that differ from their defaults (plus the
required ones and the device type when it is not the CPU), so adding a field with a default keeps old run
ids valid. :func:`derive_seed` gives every iteration its own seed from ``(seed, t)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import torch

from lqtheory.common.checks import check_exponent
from lqtheory.common.digests import sha256_bytes, sha256_hex, sorted_json
from lqtheory.engine.bank import PRECISIONS
from lqtheory.engine.data import DATASETS, canonical_name
from lqtheory.engine.device import resolve_device
from lqtheory.engine.models import MODEL_PATTERNS, MODELS
from lqtheory.engine.pruning import PruneConfig
from lqtheory.engine.training import TrainConfig

__all__ = ['FORMAT_VERSION', 'ExperimentConfig', 'derive_seed', 'torch_threads']

FORMAT_VERSION = 1
_HASH_LEN = 12
#: fields added after run folders were first written: stored (to_dict) only when not their default
_LATE_FIELDS = ("precision",)


def _canonical_dataset(name: str) -> str:
    key = canonical_name(name)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return key



def _canonical_model(name: str) -> str:
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
    methods are comparable. ``precision``: ``float32`` (default) or ``bfloat16`` (autocast for the
    products of training, fp32 master weights; :mod:`lqtheory.engine.bank`), hashed only when not the
    default, so existing run ids stay. ``device``: ``auto``, ``cpu``, ``cuda``, ... (see module docstring for its
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
    precision: str = "float32"

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
        if not isinstance(self.precision, str):
            raise TypeError(f"precision must be a string, got {type(self.precision).__name__}")
        set_("precision", self.precision.strip().lower())
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
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
        set_("stat_p", check_exponent(self.stat_p, "stat_p", high=1e6))
        set_("stat_q", check_exponent(self.stat_q, "stat_q", high=1e6))
        set_("si_q", check_exponent(self.si_q, "si_q", high=1.0, high_inclusive=False))
        if not self.stat_p < self.stat_q:
            raise ValueError(f"stat_p must be smaller than stat_q, got {self.stat_p:g} and {self.stat_q:g}")

    # Derived configurations ------------------------------------------------------------------------
    def prune_config(self):
        """The :class:`lqtheory.engine.pruning.PruneConfig` of this run."""
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
        """The fields as a dict; a field of :data:`_LATE_FIELDS` only when it is not its default, so the
        ``config.json`` / ``results.json`` of runs stored before it existed still match their config."""
        out = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in _LATE_FIELDS and out[f.name] == f.default:
                del out[f.name]
        return out

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
        payload = sorted_json({"format": FORMAT_VERSION, **self.hashed_fields()})
        return sha256_hex(payload.encode())[:_HASH_LEN]

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
def torch_threads(threads: int):
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
    return int.from_bytes(sha256_bytes(text.encode())[:8], "big") & (2**63 - 1)
