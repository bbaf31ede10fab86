"""The ``lqtheory`` command: ``lqtheory prune ...`` (one prune → rewind → retrain run) and
``lqtheory reproduce ...`` (execute the notebooks; see :mod:`lqtheory.workbench.reproduce`).

``lqtheory prune`` validates every option before anything runs (unknown data set, model, method or
scope, ``p >= q``, negative counts, a device that is not present: exit code 2 with a message), runs
or resumes the experiment in ``<out>/<run_id>/`` (a finished run is only loaded), prints one table row
per iteration and the run folder's path. Exit code 1 when the run itself fails (missing data, a
corrupt run folder).

Room: cli (the ``lqtheory`` command; nothing imports it).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from lqtheory.cli.prune_options import add_config_arguments, config_kwargs
from lqtheory.common.checks import positive_int_argument
from lqtheory.common.version import VERSION
from lqtheory.engine.data import DataNotFoundError, dataset_task
from lqtheory.engine.device import resolve_device
from lqtheory.engine.training import TrainingDivergedError
from lqtheory.runs import lease
from lqtheory.runs.config import ExperimentConfig
from lqtheory.runs.files import CorruptRunError
from lqtheory.runs.folder import load_run
from lqtheory.runs.grid import GridError, resolve, run_grid
from lqtheory.runs.grid.cluster import check_address
from lqtheory.runs.grid.options import add_executor_arguments
from lqtheory.runs.runner import run_experiment

USAGE_ERROR = 2

_PRUNE_DESCRIPTION = """\
Run one iterative prune -> rewind -> retrain experiment (THEORY.md section 3): train the dense model,
then for each of T iterations prune, rewind the survivors and biases to their initial values and
retrain E epochs under the mask. Results (records, masks, checkpoint) go to OUT/<run_id>/, named by a
hash of the non-default options; re-running a finished configuration only loads it, and an
interrupted run resumes where it stopped. Masks simulate sparsity: the speed-up column is the
theoretical ratio of multiply-adds, not a wall-clock gain."""

def _metric_columns(task: str):
    """The test metric of the table: accuracy for classification, mean squared error for regression."""
    if task == "regression":
        return [
            ("MSE retrained", 13, lambda r, s: f"{r['loss']:.4g}"),
            ("MSE just-pruned", 15, lambda r, s: "-" if r["pruned_loss"] is None else f"{r['pruned_loss']:.4g}"),
        ]
    return [
        ("acc retrained", 13, lambda r, s: f"{r['accuracy']:.4f}"),
        ("acc just-pruned", 15, lambda r, s: "-" if r["pruned_accuracy"] is None else f"{r['pruned_accuracy']:.4f}"),
    ]


def _table(task: str):
    """Columns: (header, width, formatter(record, scope))."""
    return [
        ("iter", 4, lambda r, s: f"{r['iteration']:d}"),
        ("remaining %", 11, lambda r, s: f"{r['remaining_percent']:.2f}"),
        *_metric_columns(task),
        ("PQI", 6, lambda r, s: f"{r[f'pqi_{s}']:.4f}"),
        ("compression", 11, lambda r, s: f"{r['compression']:.2f}x"),
        ("speed-up", 8, lambda r, s: f"{r['speedup']:.2f}x"),
    ]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends "(default: ...)" unless the help text already says what the default is; keeps the
    description's and the examples' line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


_PRUNE_EPILOG = """examples:
  lqtheory prune --dataset fashion-mnist --model mlp-128-1-2-relu --method sap --scope neuron -T 10 -E 5
  lqtheory prune --dataset digits --model mlp-64-1-2-relu --method lottery-ticket --scope global -T 5 -E 3
  lqtheory prune --method si-adaptive --p 0.5 --gamma 3     # SI-adaptive with q = 0.5, c = 3
"""


def _table_header(table) -> str:
    return "  ".join(h.rjust(w) for h, w, _ in table)


def _table_row(table, record: dict, scope: str) -> str:
    return "  ".join(fmt(record, scope).rjust(w) for _, w, fmt in table)


def _add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    data = add_config_arguments(parser)["data"]  # one option per ExperimentConfig field
    data.add_argument("--threads", type=positive_int_argument, default=None,
                      help="torch CPU threads during the run (default: torch's choice; 1 is fastest for small "
                           "models on shared cores)")
    data.add_argument("--out", default="runs", help="root folder of the run folders")
    data.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="always show progress bars (default: only on a terminal)")
    data.add_argument("--no-progress", dest="progress", action="store_false",
                      help="never show progress bars (default: see --progress)")
    add_executor_arguments(
        parser.add_argument_group("where to run (Dask; README: Running a grid on a cluster)"),
        local_default="this process, unless a scheduler is given or --workers asks for a local Dask cluster; "
                      "a run another process is computing in the same --out is waited for, not repeated",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``lqtheory`` parser. ``reproduce``'s options are added only when that command is used, so
    ``lqtheory prune`` never imports the notebook machinery."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="lqtheory",
        description="Neural-network compression through sparse linear approximation, reproduced.",
    )
    parser.add_argument("--version", action="version", version=f"lqtheory {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    prune = sub.add_parser(
        "prune",
        help="run one prune -> rewind -> retrain experiment and print its table",
        description=_PRUNE_DESCRIPTION,
        epilog=_PRUNE_EPILOG,
        formatter_class=_HelpFormatter,
    )
    _add_prune_arguments(prune)
    reproduce = sub.add_parser(
        "reproduce",
        help="execute the notebooks with papermill (figures, tables, claims); see `lqtheory reproduce --help`",
        add_help=False,
    )
    reproduce.add_argument("rest", nargs=argparse.REMAINDER)
    profile = sub.add_parser(
        "profile",
        help="how compressible is any PyTorch model, how far can it be pruned; see `lqtheory profile --help`",
        add_help=False,
    )
    profile.add_argument("rest", nargs=argparse.REMAINDER)
    allocate = sub.add_parser(
        "allocate",
        help="per-unit pruning budgets by OWL, AlphaPruning, Wanda and the lq rules; see `lqtheory allocate --help`",
        add_help=False,
    )
    allocate.add_argument("rest", nargs=argparse.REMAINDER)
    return parser, prune


def _config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Build and validate the :class:`ExperimentConfig`; every problem is a usage error (exit 2)."""
    if not args.p < args.q:
        parser.error(f"--p must be smaller than --q (0 < p < q), got p={args.p:g}, q={args.q:g}")
    try:
        resolve_device(args.device)
    except (ValueError, TypeError) as err:
        parser.error(f"--device: {err}")
    try:
        return ExperimentConfig(**config_kwargs(args))
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    raise AssertionError("unreachable")  # parser.error exits


def _check_out(out_arg: str, parser: argparse.ArgumentParser) -> None:
    """``--out`` must be (or be creatable as) a writable folder: checked before any data is loaded."""
    out = Path(out_arg).expanduser()
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        parser.error(f"--out {out_arg}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        parser.error(f"--out {out_arg}: no permission to write in {probe}")


def _run_prune(args: argparse.Namespace, parser: argparse.ArgumentParser, out) -> int:
    config = _config_from_args(args, parser)
    _check_out(args.out, parser)
    if args.scheduler is not None:  # a bad address fails here, not after a Client hung 120 s
        try:
            check_address(args.scheduler)
        except ValueError as err:
            parser.error(f"--scheduler: {err}")
    run_dir = config.run_dir(args.out)
    print(f"run {config.run_id()}: {config.describe()}", file=out)
    print(f"folder: {run_dir}", file=out)
    task = dataset_task(config.dataset)
    table = _table(task)
    printed = 0  # rows printed; the header goes out with the first row, so errors never follow it
    finished = False

    def print_row(record: dict) -> None:
        nonlocal printed
        if printed == 0:
            print(_table_header(table), file=out, flush=True)
        print(_table_row(table, record, config.scope), file=out, flush=True)
        printed = record["iteration"] + 1

    def on_restore(records: list[dict], complete: bool) -> None:
        nonlocal finished
        finished = complete
        if not complete:
            print(f"resuming at iteration {len(records)} (iterations 0-{len(records) - 1} restored from the "
                  "checkpoint)", file=out, flush=True)
        for record in records:
            print_row(record)

    def on_record(record: dict) -> None:
        if record["iteration"] >= printed:
            print_row(record)

    try:
        results = _compute(config, args, on_record, on_restore)
        for record in results.records[printed:]:  # computed by another process while we waited for it
            on_record(record)
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume from {run_dir}", file=sys.stderr, flush=True)
        return 130
    except GridError as err:  # the worker's traceback is already on stderr
        print(f"lqtheory prune: error: {err.failures[0].describe()}", file=sys.stderr, flush=True)
        return 1
    except DataNotFoundError as err:
        print(f"lqtheory prune: error: {err.cli_message}", file=sys.stderr, flush=True)
        return 1
    except TrainingDivergedError as err:
        print(f"lqtheory prune: error: {err} (try a smaller --lr, or keep --grad-clip on)", file=sys.stderr,
              flush=True)
        return 1
    except (CorruptRunError, FileNotFoundError, RuntimeError, ValueError, OSError) as err:
        print(f"lqtheory prune: error: {err}", file=sys.stderr, flush=True)
        return 1
    if finished:
        print("(a finished run: loaded from its folder, nothing recomputed)", file=out)
    first, last = results.records[0], results.records[-1]
    if task == "regression":
        dense, after = f"dense test MSE {first['loss']:.4g}", f"test MSE {last['loss']:.4g}"
    else:
        dense, after = f"dense accuracy {first['accuracy']:.4f}", f"accuracy {last['accuracy']:.4f}"
    print(
        f"{dense}; after {config.iterations} iteration(s): {after} with {last['remaining_percent']:.2f}% of "
        f"{last['total']:,} weights (compression {last['compression']:.2f}x, "
        f"theoretical speed-up {last['speedup']:.2f}x)",
        file=out,
    )
    print(f"results: {run_dir}", file=out, flush=True)
    return 0


def _compute(config, args: argparse.Namespace, on_record, on_restore=None):
    """Run ``config``: in this process (the default), or as a Dask task when a scheduler is known or
    --executor dask / --workers ask for it; rows are printed as the run folder records them."""
    executor, scheduler, _ = resolve(args.executor, args.scheduler,
                                     default="dask" if args.workers is not None else "serial")
    run_dir = config.run_dir(args.out)
    if executor == "serial":
        if args.workers is not None:
            raise ValueError("--workers sizes a local Dask cluster; drop it or --executor serial")
        holder = lease.read_lease(run_dir / lease.LEASE_FILE)
        if holder is not None:
            print(f"run {run_dir.name} is claimed by {holder.describe()}: waiting for it (a dead owner's claim "
                  "is taken over)", file=sys.stderr, flush=True)
        return run_experiment(config, args.out, progress=args.progress, threads=args.threads, on_record=on_record,
                              on_restore=on_restore)

    done = threading.Event()

    def follow() -> None:  # the run folder is the progress report: print records as they are committed
        seen = 0
        while not done.wait(0.5):
            try:
                records = load_run(run_dir).records
            except (FileNotFoundError, OSError, ValueError):
                continue
            for record in records[seen:]:
                on_record(record)
            seen = len(records)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        run_grid([config], args.out, executor="dask", scheduler=scheduler, workers=args.workers,
                 threads=args.threads or 1, progress=False, bank_size=args.bank_size)
    finally:
        done.set()
        watcher.join()
    return load_run(run_dir)


def _run_reproduce(rest: Sequence[str]) -> int:
    from lqtheory.workbench import reproduce  # only here: `prune` needs no papermill/nbconvert

    parser = argparse.ArgumentParser(prog="lqtheory reproduce", description=(reproduce.__doc__ or "").split("\n\n")[0])
    reproduce.add_arguments(parser)
    return reproduce.run(parser.parse_args(list(rest)))


def main(argv: Sequence[str] | None = None, *, out=None) -> int:
    """Entry point of the ``lqtheory`` command; returns the exit code (argparse usage errors exit 2)."""
    out = out if out is not None else sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "reproduce":  # its own parser, so `lqtheory reproduce --help` shows its options
        return _run_reproduce(argv[1:])
    if argv and argv[0] == "profile":  # its own parser (lqtheory.profiler.cli)
        from lqtheory.profiler.cli import main as profile_main

        return profile_main(argv[1:], out)
    if argv and argv[0] == "allocate":  # its own parser (lqtheory.allocation.cli)
        from lqtheory.allocation.cli import main as allocate_main

        return allocate_main(argv[1:], out)
    parser, prune_parser = _build()
    args = parser.parse_args(argv)
    if args.command == "reproduce":  # e.g. `lqtheory --some-flag reproduce`: not reached with valid input
        return _run_reproduce(args.rest)
    return _run_prune(args, prune_parser, out)


if __name__ == "__main__":
    sys.exit(main())
