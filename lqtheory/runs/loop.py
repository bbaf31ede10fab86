"""The prune -> rewind -> retrain loop: one run's state and one method per step (:class:`RunLoop`).

Part of the runs room. ``t = 0`` takes the shared dense trained model; each ``t >= 1`` prunes the latest
trained weights, evaluates the just-pruned model, rewinds every surviving weight, bias and BN buffer to
``w_init``, retrains under the mask and evaluates again. :meth:`RunLoop.commit` writes ``mask_<t>.pt``,
then the checkpoint (the commit point), then ``results.json``. (Not to be confused with the notebook
session, :class:`lqtheory.workbench.session.Session`.)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lqtheory.common.digests import sha256_hex
from lqtheory.engine.bank import BankMember, train_bank
from lqtheory.engine.masks import SCOPES, Mask
from lqtheory.engine.models import count_multiply_adds, prunable_parameters
from lqtheory.engine.pruning import prune_step, unit_statistics
from lqtheory.engine.training import Callback, evaluate
from lqtheory.runs.config import FORMAT_VERSION, ExperimentConfig, derive_seed
from lqtheory.runs.dense import (
    build_run_model,
    clone_state,
    dense_id,
    ensure_dense,
    load_dense,
    state_to_cpu,
    state_to_device,
)
from lqtheory.runs.files import (
    CorruptRunError,
    checkpoint_file,
    mask_file,
    results_file,
    split_timings,
    timings_file,
    write_checked_json,
    write_checkpoint,
)
from lqtheory.runs.identity import check_fingerprint, load_run_data

__all__ = ['RunLoop']

def _statistics(weights: dict[str, torch.Tensor], mask: Mask, config: ExperimentConfig, prefix: str):
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


class RunLoop:
    """State of a run in progress; one method per step of the loop."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, device: torch.device, out: Path):
        self.config = config
        self.run_dir = run_dir
        self.out = out
        self.device = device
        self.data, self.fingerprint = load_run_data(config, device)
        self.model = build_run_model(config, self.data, device)
        self.prunable = lambda: {n: p.detach() for n, p in prunable_parameters(self.model).items()}
        self.macs = lambda mask: count_multiply_adds(self.model, self.data.input_shape, mask)
        self.w_init = clone_state(self.model)
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
            raise CorruptRunError(f"{checkpoint_file(self.run_dir)} belongs to another run or format")
        check_fingerprint(c.get("data_fingerprint"), self.fingerprint, checkpoint_file(self.run_dir))
        w_init = c["w_init"]
        if set(w_init) != set(self.w_init) or any(w_init[k].shape != v.shape for k, v in self.w_init.items()):
            raise CorruptRunError(f"{checkpoint_file(self.run_dir)} holds a different model")
        if any(not torch.equal(w_init[k], v.cpu()) for k, v in self.w_init.items()):
            # Same seed, same code, same device type must rebuild the same initial weights.
            raise CorruptRunError(
                f"{checkpoint_file(self.run_dir)}: the model rebuilt from the seed differs from the saved w_init "
                "(was the run started with another torch version or model code?); delete the folder to start over"
            )
        self.dense = state_to_device(c["dense"], self.device) if c["dense"] is not None else None
        self.latest = state_to_device(c["latest"], self.device) if c["latest"] is not None else None
        self.mask = Mask(state_to_device(c["mask"], self.device), reference=self.model)
        self.records = json.loads(c["records"])
        self.mask_sha = dict(c["mask_sha256"])
        for t, digest in self.mask_sha.items():
            path = mask_file(self.run_dir, int(t))
            if not path.is_file() or sha256_hex(path.read_bytes()) != digest:
                raise CorruptRunError(f"{path} is missing or does not match the digest in the checkpoint")

    def commit(self, t: int, complete: bool, metadata: dict) -> None:
        """Write mask_t, then the checkpoint (the commit point), then results.json."""
        path = mask_file(self.run_dir, t)
        self.mask.save(path)
        self.mask_sha[str(t)] = sha256_hex(path.read_bytes())
        write_checkpoint(
            checkpoint_file(self.run_dir),
            {
                "format": FORMAT_VERSION,
                "run_id": self.run_dir.name,
                "data_fingerprint": self.fingerprint,
                "w_init": state_to_cpu(self.w_init),
                "dense": state_to_cpu(self.dense) if self.dense is not None else None,
                "latest": state_to_cpu(self.latest) if self.latest is not None else None,
                "mask": {k: v.cpu() for k, v in self.mask.items()},
                "records": json.dumps(self.records),
                "mask_sha256": dict(self.mask_sha),
                "complete": complete,
            },
        )
        self.write_results(complete, metadata)

    def write_results(self, complete: bool, metadata: dict) -> None:
        records, timings = split_timings(self.records)  # results.json: no clock readings, identical bytes
        write_checked_json(timings_file(self.run_dir), {"run_id": self.run_dir.name, "records": timings})
        write_checked_json(
            results_file(self.run_dir),
            {
                "format": FORMAT_VERSION,
                "run_id": self.run_dir.name,
                "config": self.config.to_dict(),
                "data_fingerprint": self.fingerprint,
                "dense_id": dense_id(self.config),
                "complete": complete,
                "metadata": {**metadata, "mask_sha256": dict(self.mask_sha)},
                "records": records,
            },
        )

    # one iteration ---------------------------------------------------------------------------------
    def _counts(self, mask: Mask) -> tuple[dict, dict]:
        alive, total = mask.alive_per_layer(), mask.total_per_layer()
        return alive, total

    def iteration(self, t: int, *, callbacks: Sequence[Callback], progress: bool) -> dict:
        """One step of the loop alone: :meth:`prepare`, a bank of one, :meth:`finish`."""
        member = self.prepare(t, callbacks=callbacks)
        history, started = None, time.perf_counter()
        if member is not None:
            history = train_bank([member], device=self.device, precision=self.config.precision,
                                 progress=progress, desc=f"iteration {t}")[0]
        return self.finish(t, history, callbacks=callbacks, progress=progress,
                           bank_seconds=time.perf_counter() - started)

    def prepare(self, t: int, *, callbacks: Sequence[Callback] = ()) -> BankMember | None:
        """Everything of iteration ``t`` before its training: prune the latest trained weights, evaluate
        the just-pruned model and take its statistics, rewind to ``w_init``. Returns the
        :class:`lqtheory.engine.bank.BankMember` that retrains this run (``None`` at ``t = 0``, whose
        weights come from the dense stage); :meth:`finish` takes its history."""
        cfg = self.config
        self._started = time.perf_counter()
        self._previous_alive = self.mask.count_alive()
        if t == 0:
            self._pruned = (None, None, *_empty_statistics(self.mask, "pruned_"))
            self._prepared = time.perf_counter() - self._started
            return None
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
        self._pruned = (pruned_acc, pruned_loss, *_statistics(self.prunable(), self.mask, cfg, "pruned_"))
        # rewind everything (weights, biases, BN buffers) to w_init; the bank retrains under the mask
        self.model.load_state_dict(self.w_init)
        self._prepared = time.perf_counter() - self._started
        return BankMember(model=self.model, data=self.data, config=cfg.train_config(), mask=self.mask,
                          seed=derive_seed(cfg.seed, t, "train"), callbacks=tuple(callbacks),
                          label=f"run {self.run_dir.name}")

    def finish(self, t: int, history: list[dict] | None, *, callbacks: Sequence[Callback] = (),
               progress: bool = False, bank_seconds: float = 0.0) -> dict:
        """Iteration ``t``'s record once the model is trained (``history``: its bank history; ``None``
        at ``t = 0``, where the dense stage is loaded). ``bank_seconds``: this run's share of the bank's
        training time, added to the record's wall time (a bank of one is timed here)."""
        cfg = self.config
        finishing = time.perf_counter()
        pruned_acc, pruned_loss, pruned_flat, pruned_layers = self._pruned
        previous_alive = self._previous_alive
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
            self.model.load_state_dict(state_to_device(dense["dense"], self.device))
            acc, loss = dense["accuracy"], dense["loss"]
            history = [{"train_loss": dense["train_loss"]}] if dense["train_loss"] is not None else []
        else:
            if history is None:
                raise ValueError(f"iteration {t} needs the history of its training")
            if history:
                acc, loss = history[-1]["test_accuracy"], history[-1]["test_loss"]
            else:  # epochs = 0: the rewound model itself
                acc, loss = evaluate(self.model, self.data.x_test, self.data.y_test, task=self.data.task)
        self.latest = clone_state(self.model)
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
        record["wall_time"] = self._prepared + bank_seconds + (time.perf_counter() - finishing)
        return record
