"""Iterative prune → rewind → retrain runs (THEORY.md §3, E2, E3), hashed run folders, exact resume.

One run (:func:`run_experiment`, this module, part of the runs room) [paper: 2022 code and ICLR 2023 Algorithm 1]:

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
folder's lease (:mod:`lqtheory.runs.lease`, the lock file ``.claim``): a second process asking for the same run
waits for it and loads or resumes it, and the lease of a process that died is taken over.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lqtheory.engine.device import resolve_device
from lqtheory.engine.training import Callback, progress_enabled
from lqtheory.runs.config import FORMAT_VERSION, ExperimentConfig, torch_threads
from lqtheory.runs.dense import dense_id, run_metadata
from lqtheory.runs.files import (
    CorruptRunError,
    checkpoint_file,
    config_file,
    read_checked_json,
    read_checkpoint,
    remove_stale_temporaries,
    results_file,
    write_checked_json,
)
from lqtheory.runs.folder import Results, load_run, verify_run
from lqtheory.runs.identity import check_fingerprint, load_run_data
from lqtheory.runs.lease import lease_run
from lqtheory.runs.loop import RunLoop

__all__ = ['run_experiment']

def _check_config_file(run_dir: Path, config: ExperimentConfig) -> None:
    path = config_file(run_dir)
    body = read_checked_json(path)
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
        with torch_threads(threads):
            return run_experiment(config, out, progress=progress, callbacks=callbacks, verbose=verbose,
                                  on_record=on_record, on_restore=on_restore)
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    device = resolve_device(config.device)  # a device that is not present fails before anything is leaseed
    run_dir = config.run_dir(out)
    finished = load_finished(config, run_dir, device, on_restore)
    if finished is not None:
        return finished
    # Compute under the run folder's lease (lqtheory.runs.lease): a second process asking for this run waits,
    # then loads or resumes it; a lease whose owner died is taken over.
    with lease_run(run_dir) as lease:
        return _run_leased(config, out, lease, progress=progress, callbacks=callbacks, verbose=verbose,
                            on_record=on_record, on_restore=on_restore)


def load_finished(config, run_dir: Path, device, on_restore) -> Results | None:
    """The run's results if its folder holds a finished run, after checking the configuration, the data
    fingerprint (the data are part of the run's identity) and every file's digest; else None."""
    results_path, config_path = results_file(run_dir), config_file(run_dir)
    if not config_path.is_file() and not results_path.is_file():
        return None
    _, fingerprint = load_run_data(config, device)  # cached per process
    if config_path.is_file():
        _check_config_file(run_dir, config)
        check_fingerprint(read_checked_json(config_path).get("data_fingerprint"), fingerprint, config_path)
    if results_path.is_file():
        done = load_run(run_dir)
        check_fingerprint(done.data_fingerprint, fingerprint, results_path)
        if done.complete:
            done = verify_run(run_dir)  # a finished run: every file against its digest, nothing recomputed
            if on_restore is not None:
                on_restore(done.records, True)
            return done
    return None


def open_leased(config, out, *, on_restore=None) -> Results | tuple[RunLoop, dict]:
    """A leased run folder made ready to advance: its :class:`Results` if it is finished (by another
    process while we waited, or a crash after the last commit), else ``(loop, metadata)`` with the
    loop restored from the checkpoint or new (``config.json`` written). Shared by the single-run path
    and the banks (:mod:`lqtheory.runs.banks`)."""
    device = resolve_device(config.device)
    run_dir = config.run_dir(out)
    results_path, ckpt_path, config_path = results_file(run_dir), checkpoint_file(run_dir), config_file(run_dir)
    finished = load_finished(config, run_dir, device, on_restore)
    if finished is not None:
        return finished
    _, fingerprint = load_run_data(config, device)
    if results_path.is_file() and not ckpt_path.is_file():
        raise CorruptRunError(f"{run_dir} has results.json but no checkpoint.pt to resume from; delete the folder")

    remove_stale_temporaries(run_dir)
    metadata = run_metadata(device)
    state = RunLoop(config, run_dir, device, Path(out))
    if ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        state.restore(ckpt)
        if on_restore is not None and state.records:
            on_restore([dict(r) for r in state.records], bool(ckpt.get("complete")))
        if ckpt.get("complete"):
            # checkpoint committed but results.json not rewritten before a crash: finish the bookkeeping
            state.write_results(True, metadata)
            return load_run(run_dir)
    else:
        write_checked_json(
            config_path,
            {"format": FORMAT_VERSION, "run_id": run_dir.name, "config": config.to_dict(),
             "hashed_fields": config.hashed_fields(), "data_fingerprint": fingerprint,
             "dense_id": dense_id(config), "metadata": metadata},
        )

    return state, metadata


def _run_leased(config, out, lease, *, progress, callbacks, verbose, on_record, on_restore=None) -> Results:
    """:func:`run_experiment` once the run folder is leaseed: look again (another process may have
    finished or advanced the run while we waited), then resume or start."""
    opened = open_leased(config, out, on_restore=on_restore)
    if isinstance(opened, Results):
        return opened
    state, metadata = opened
    run_dir = state.run_dir
    show = progress_enabled(progress)
    start = len(state.records)
    lease.log("start", iteration=start)
    bar = None
    if show:
        # tqdm.auto only when a bar is drawn: importing it in a kernel without ipywidgets warns on stderr
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations + 1, initial=start, desc=f"run {run_dir.name}", file=sys.stderr)
    try:
        for t in range(start, config.iterations + 1):
            record = state.iteration(t, callbacks=callbacks, progress=show)
            state.records.append(record)
            lease.check()  # never commit into a folder another process has taken over
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
