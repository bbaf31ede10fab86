"""A run folder read back: :class:`Results`, :func:`load_run`, :func:`verify_run`, the record columns.

Part of the runs room. ``<out>/<run_id>/`` holds ``config.json`` (written once), ``checkpoint.pt`` (the
commit point of an iteration: everything needed to resume), ``mask_<t>.pt`` (the mask after iteration
``t``, :meth:`lqtheory.engine.masks.Mask.save` format) and ``results.json`` (the records, the metadata and
the SHA-256 of every mask file; no clock readings, so its bytes do not depend on the machine's speed) and
``timings.json`` (each record's ``wall_time``). Loading a finished run checks every file against its digest.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch

from lqtheory.common.digests import sha256_hex
from lqtheory.engine.masks import Mask
from lqtheory.runs.config import ExperimentConfig
from lqtheory.runs.files import (
    CorruptRunError,
    checkpoint_file,
    config_file,
    mask_file,
    merge_timings,
    read_checked_json,
    read_checkpoint,
    records_from_json,
    results_file,
    timings_file,
    verified_checkpoint_payload,
)

__all__ = ['COLUMNS', 'Results', 'load_checkpoint', 'load_results', 'load_run', 'verify_run']

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
        import pandas as pd  # only when a frame is asked for: `import lqtheory` stays free of pandas

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
    path = mask_file(run_dir, t)
    if not path.is_file():
        raise CorruptRunError(f"{path} is missing")
    if sha256_hex(path.read_bytes()) != expected:
        raise CorruptRunError(f"{path} does not match the digest recorded in results.json")
    return path


def load_run(run_dir: str | os.PathLike) -> Results:
    """Read a run folder's ``results.json`` (checksum verified) into :class:`Results`."""
    run_dir = Path(run_dir)
    path = results_file(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {run_dir} (not a run folder, or the run has not finished t=0)")
    body = read_checked_json(path)
    try:
        config = ExperimentConfig.from_dict(body["config"])
        records = body["records"]
        metadata = body["metadata"]
        complete = bool(body["complete"])
        records = records_from_json(records)
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptRunError(f"{path} is not a results file of this version: {err}") from err
    timings = timings_file(run_dir)
    if timings.is_file():  # wall times live beside results.json (older folders: inline in the records)
        merge_timings(records, read_checked_json(timings).get("records", []))
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
    if config_file(run_dir).is_file():
        read_checked_json(config_file(run_dir))
    else:
        raise CorruptRunError(f"{config_file(run_dir)} is missing")
    ckpt = checkpoint_file(run_dir)
    if not ckpt.is_file():
        raise CorruptRunError(f"{ckpt} is missing")
    verified_checkpoint_payload(ckpt)
    digests = results.metadata.get("mask_sha256", {})
    for t in range(len(results.records)):
        expected = digests.get(str(t))
        if expected is None:
            raise CorruptRunError(f"{results_file(run_dir)} lists no digest for {mask_file(run_dir, t).name}")
        _checked_mask_file(run_dir, t, expected)
    return results


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The verified contents of a run's ``checkpoint.pt`` (CPU tensors): ``w_init``, ``dense`` (weights
    trained at t = 0), ``latest`` (weights after the last committed iteration), ``mask``, ``records``
    (JSON text), ``mask_sha256``, ``complete``."""
    path = checkpoint_file(Path(run_dir))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint.pt in {run_dir}")
    return read_checkpoint(path)


def load_results(run_dir: str | os.PathLike):
    """The records of a run folder as a pandas DataFrame (see :meth:`Results.frame`)."""
    return load_run(run_dir).frame()
