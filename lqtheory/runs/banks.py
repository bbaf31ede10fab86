"""Runs advanced together: the runs of a grid that share data, model and schedule, each iteration
retrained as one bank (:func:`lqtheory.engine.bank.train_bank`); the grids' unit of work.

Part of the runs room. :func:`run_bank` groups its configurations by what a bank must share
(:func:`bank_key`), leases every unfinished run folder in sorted run-id order (so two processes asking
for overlapping banks never deadlock), restores or starts each run as :func:`lqtheory.runs.runner.run_experiment`
does, and then, for ``t = 0, 1, ...``: every run with ``t`` committed iterations prepares iteration ``t``
(:meth:`lqtheory.runs.loop.RunLoop.prepare`: prune, evaluate the just-pruned model, rewind), the runs
retrain as one bank, and each run finishes, checks its lease and commits its iteration exactly as a lone
run does. A run whose iterations are done leaves the bank. A bank's member computes what it computes
alone (the bank's guarantee), so a run's records do not depend on the bank it ran in.

A bank interrupted mid-iteration resumes: the runs restore their last committed iteration, prepare the
same members again, and the bank resumes from its epoch-boundary checkpoint
``<out>/.banks/<digest of the members' run ids>-t<t>.pt``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lqtheory.common.digests import sha256_hex
from lqtheory.engine.bank import BankDivergedError, train_bank
from lqtheory.engine.device import resolve_device
from lqtheory.engine.training import Callback, TrainingDivergedError, progress_enabled
from lqtheory.runs.config import ExperimentConfig, torch_threads
from lqtheory.runs.folder import Results, load_run
from lqtheory.runs.lease import lease_run
from lqtheory.runs.runner import load_finished, open_leased

__all__ = ["BANK_FOLDER", "bank_checkpoint", "bank_key", "run_bank"]

#: the folder of ``out`` that holds the epoch-boundary checkpoints of banks in progress
BANK_FOLDER = ".banks"


def bank_key(config: ExperimentConfig) -> tuple:
    """What the runs of one bank must share: the data (dataset, subset sizes, data seed), the model,
    the retraining schedule (:meth:`ExperimentConfig.train_config`), the device and the precision."""
    return (config.dataset, config.model, config.n_train, config.n_test, config.data_seed, config.train_config(),
            str(resolve_device(config.device)), config.precision)


def bank_checkpoint(out: str | os.PathLike, run_ids: Sequence[str], t: int) -> Path:
    """The checkpoint file of the bank of ``run_ids`` at iteration ``t``."""
    digest = sha256_hex("/".join(sorted(run_ids)).encode())[:16]
    return Path(out) / BANK_FOLDER / f"{digest}-t{t}.pt"


def run_bank(
    configs: Sequence[ExperimentConfig],
    out: str | os.PathLike = "runs",
    *,
    threads: int | None = None,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[Results]:
    """Run (or resume, or load) every configuration, the runs of each :func:`bank_key` group retrained
    together; return their :class:`Results` in the order given (duplicates are one run).

    Records, masks and weights are those :func:`lqtheory.runs.runner.run_experiment` gives each run
    alone (``wall_time`` aside: a run's share of its bank's time). ``threads`` sets torch's CPU thread
    count for the call (restored afterwards). ``callbacks`` see every member's training (each with its
    own :class:`lqtheory.engine.training.TrainState`) and the dense stage when it is trained here. A
    member that diverges leaves its bank, the others finish, and its error is raised at the end.
    """
    if threads is not None:
        with torch_threads(threads):
            return run_bank(configs, out, progress=progress, callbacks=callbacks)
    if isinstance(configs, ExperimentConfig):
        raise TypeError("configs must be a sequence of ExperimentConfig")
    configs = list(configs)
    for cfg in configs:
        if not isinstance(cfg, ExperimentConfig):
            raise TypeError(f"configs must hold ExperimentConfig objects, got {type(cfg).__name__}")
    by_id = {cfg.run_id(): cfg for cfg in configs}
    groups: dict[tuple, list[ExperimentConfig]] = {}
    for run_id in sorted(by_id):
        groups.setdefault(bank_key(by_id[run_id]), []).append(by_id[run_id])
    results: dict[str, Results] = {}
    errors: list[BaseException] = []
    for members in groups.values():
        results.update(_run_group(members, Path(out), progress=progress, callbacks=callbacks, errors=errors))
    if errors:
        raise errors[0]
    return [results[cfg.run_id()] for cfg in configs]


def _run_group(configs, out: Path, *, progress, callbacks, errors) -> dict[str, Results]:
    """One group of :func:`bank_key`-equal runs (sorted by run id)."""
    results: dict[str, Results] = {}
    pending = []
    for cfg in configs:  # finished runs load without a lease, as run_experiment does
        done = load_finished(cfg, cfg.run_dir(out), resolve_device(cfg.device), None)
        if done is not None:
            results[cfg.run_id()] = done
        else:
            pending.append(cfg)
    if not pending:
        return results
    show = progress_enabled(progress)
    with contextlib.ExitStack() as stack:
        leases = {cfg.run_id(): stack.enter_context(lease_run(cfg.run_dir(out))) for cfg in pending}  # sorted ids
        active = {}  # run id -> (config, loop, metadata)
        for cfg in pending:
            opened = open_leased(cfg, out)
            if isinstance(opened, Results):
                results[cfg.run_id()] = opened
                continue
            loop, metadata = opened
            leases[cfg.run_id()].log("start", iteration=len(loop.records))
            active[cfg.run_id()] = (cfg, loop, metadata)
        bar = None
        if show and active:
            from tqdm.auto import tqdm  # only when drawn: importing it in a kernel without ipywidgets warns

            total = max(cfg.iterations for cfg, _, _ in active.values()) + 1
            bar = tqdm(total=total, initial=min(len(lp.records) for _, lp, _ in active.values()),
                       desc=f"bank of {len(active)}", file=sys.stderr)
        try:
            t = min((len(lp.records) for _, lp, _ in active.values()), default=0)
            while active:
                now = sorted(rid for rid, (_, lp, _) in active.items() if len(lp.records) == t)
                _iteration(t, [active[rid] for rid in now], out, leases, show, callbacks, errors, active)
                for rid in list(active):
                    cfg, lp, _ = active[rid]
                    if len(lp.records) > cfg.iterations:
                        del active[rid]
                        results[rid] = load_run(cfg.run_dir(out))
                t += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return results


def _iteration(t, runs, out: Path, leases, show, callbacks, errors, active) -> None:
    """Iteration ``t`` of ``runs`` (each with ``t`` committed iterations): prepare, one bank, finish, commit."""
    if not runs:
        return
    members = [(cfg, lp, meta, lp.prepare(t, callbacks=callbacks)) for cfg, lp, meta in runs]
    training = [(cfg, m) for cfg, _, _, m in members if m is not None]
    histories: dict[str, list[dict] | None] = {}
    started = time.perf_counter()
    if training:
        cfg0 = training[0][0]
        ids = [cfg.run_id() for cfg, _ in training]
        try:
            trained = train_bank([m for _, m in training], device=resolve_device(cfg0.device),
                                 precision=cfg0.precision, checkpoint=bank_checkpoint(out, ids, t),
                                 progress=show, desc=f"iteration {t}")
        except BankDivergedError as err:  # the diverged members leave; the others are committed
            trained = err.histories
            for k, e in sorted(err.errors.items()):
                rid = ids[k]
                del active[rid]
                errors.append(TrainingDivergedError(f"run {rid} ({training[k][0].describe()}): {e}"))
        histories = {rid: h for rid, h in zip(ids, trained, strict=True)}
    share = (time.perf_counter() - started) / max(len(training), 1)
    for cfg, lp, meta, member in members:
        rid = cfg.run_id()
        if member is not None and histories.get(rid) is None:
            continue  # diverged
        record = lp.finish(t, histories.get(rid), callbacks=callbacks, progress=show,
                           bank_seconds=share if member is not None else 0.0)
        lp.records.append(record)
        leases[rid].check()  # never commit into a folder another process has taken over
        lp.commit(t, complete=t == cfg.iterations, metadata=meta)
