"""``lqtheory reproduce`` (workbench room): execute the notebooks with papermill, with caching and a claims summary.

Every notebook in ``notebooks/`` (sorted by name; the aggregators ``99_*`` such as the claims ledger
run last, after all others have finished) is executed with papermill at one profile. Executed copies
go to ``build/notebooks/<profile>/``; figures, tables and claims go wherever the notebooks'
``run.save_*``/``run.claim`` put them (``figures/`` for the default profile, ``figures/<profile>/``
otherwise). A notebook whose inputs are unchanged (its source cells, the parameters, the package's
``lqtheory/**/*.py``, its entries of the claims registry ``notebooks/claims.toml``, and for aggregators
the other notebooks' claims files) is skipped unless ``--force``.

Exit code: 0 when every notebook ran and every theorem claim holds; 1 when a notebook failed or a
theorem claim is violated (or, with ``--strict``, an empirical claim of the paper is contradicted, or
reads "no practical difference" against the paper within its registered margin; a contradicted
[derived] conjecture or an inconclusive claim never fails the run); 2 for a
usage error found before anything ran (unknown notebook, unknown parameter, malformed notebook).

Grids of runs: one Dask cluster serves the whole reproduction. Unless ``--scheduler`` (or
``$LQTHEORY_SCHEDULER``) names an existing one, a local cluster of ``--workers`` single-threaded worker
processes (default: one per core) is started before the first notebook and shut down at the end; its
address reaches the notebook kernels as ``$LQTHEORY_SCHEDULER``, so every ``run_experiments`` call
sends its runs there and notebooks running side by side (``--jobs``) share the workers.
``--executor serial`` keeps every grid inside its notebook's kernel.

``--update-notebooks`` re-executes the selected notebooks at the ``ci`` profile with their own
defaults and writes them back into ``notebooks/`` without papermill's volatile metadata: how the
committed outputs that nbval compares are refreshed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lqtheory.common.environment import patched_environ
from lqtheory.common.vocabulary import ENV_BANK_SIZE, ENV_FIGURES, NO_PRACTICAL_DIFFERENCE, PROFILES
from lqtheory.engine.device import resolve_device
from lqtheory.runs.grid.cluster import SharedCluster, gpu_count
from lqtheory.runs.grid.options import add_executor_arguments
from lqtheory.workbench.cache import cache_key, cache_valid, package_digest, registry_digest
from lqtheory.workbench.claims import load_registry
from lqtheory.workbench.execution import Console, Outcome, Task, kernel_environment, run_tasks, write_committed
from lqtheory.workbench.linter import check_notebook
from lqtheory.workbench.parameters import coerce_override, literal_value, papermill_parameters, parameters_cell
from lqtheory.workbench.paths import claims_path, figures_dir, is_aggregator, repo_root
from lqtheory.workbench.records import READS_AGAINST, READS_FOR, read_claims, record_reads
from lqtheory.workbench.report import build_report, default_report_path

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


class UsageError(ValueError):
    """A problem found before executing anything (reported with exit code 2)."""


def list_notebooks(notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks of a folder: sorted by name, aggregators (``99_*``) last."""
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise UsageError(f"notebooks folder {folder} does not exist")
    paths = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    return [p for p in paths if not is_aggregator(p.stem)] + [p for p in paths if is_aggregator(p.stem)]


def select_notebooks(paths: Sequence[Path], only: Iterable[str] | None) -> list[Path]:
    """Paths named by ``only`` (file stem, file name, or a unique prefix such as ``01``); all if None."""
    if not only:
        return list(paths)
    by_name = {p.stem: p for p in paths}
    chosen: list[Path] = []
    for raw in only:
        name = Path(raw).name.removesuffix(".ipynb")
        if name in by_name:
            hit = [by_name[name]]
        else:
            hit = [p for s, p in by_name.items() if s.startswith(name)] if name else []
        if len(hit) != 1:
            reason = "is ambiguous" if hit else "is not a notebook"
            raise UsageError(f"{raw!r} {reason}; notebooks: {', '.join(by_name) or '(none)'}")
        if hit[0] not in chosen:
            chosen.append(hit[0])
    return [p for p in paths if p in chosen]  # keep the run order


def notebook_title(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            return cell.source.strip().splitlines()[0].lstrip("# ").strip()
    return ""


def declared_parameters(path: Path) -> dict[str, Any]:
    """Parameter names and default source text: papermill's inference, plus any line it cannot parse.

    papermill skips lines holding more than one ``=`` (``tests/test_notebook_infra.py`` flags them);
    papermill still injects such names correctly, so they count as declared.
    """
    import nbformat

    declared = papermill_parameters(path)
    found = parameters_cell(nbformat.read(path, as_version=4))
    for name, value in (found[1] if found else {}).items():
        declared.setdefault(name, repr(value))
    return declared


def profile_table(path: Path) -> dict[str, dict[str, Any]] | None:
    """The literal ``profiles=`` table a notebook passes to ``setup`` (None when it is not a literal)."""
    import nbformat

    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or "setup(" not in cell.source:
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            return None
        assigned = {n.targets[0].id: n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "setup":
                prof = next((k.value for k in node.keywords if k.arg == "profiles"), None)
                prof = assigned.get(prof.id) if isinstance(prof, ast.Name) else prof
                try:
                    table = literal_value(prof) if prof is not None else None
                except (ValueError, TypeError, SyntaxError):
                    return None
                return table if isinstance(table, dict) else None
    return None


def preflight(paths: Sequence[Path], parameters: dict[str, Any]) -> None:
    """Refuse, before executing anything, malformed notebooks, parameters they do not declare, and
    values of the wrong type for a parameter (checked as ``setup`` would, against the profile's value)."""
    problems = []
    for path in paths:
        for problem in check_notebook(path, committed=False):
            problems.append(f"{path.stem}: {problem}")
        if parameters:
            declared = declared_parameters(path)
            unknown = sorted(set(parameters) - set(declared))
            if unknown:
                problems.append(f"{path.stem}: unknown parameter(s) {', '.join(unknown)}; it declares "
                                f"{', '.join(declared) or 'none (no cell tagged parameters)'}")
            table = profile_table(path) or {}
            reference = table.get(parameters.get("profile", "default"), {})
            for name in sorted(set(parameters) & set(reference)):
                try:
                    coerce_override(name, parameters[name], reference[name])
                except TypeError as err:
                    problems.append(f"{path.stem}: {err}")
    if problems:
        raise UsageError("\n  ".join(["notebook check failed:", *problems]))


def _reads_against(claim: dict) -> bool:
    """A contradicted claim, or a "no practical difference" that reads against the claim."""
    return claim["verdict"] == "contradicted" or (claim["verdict"] == NO_PRACTICAL_DIFFERENCE
                                                   and record_reads(claim) == READS_AGAINST)


def _verdict_word(claim: dict) -> str:
    """The summary's word: the verdict, with how a "no practical difference" reads (for / against the
    paper, or our conjecture for a [derived] claim)."""
    if claim["verdict"] != NO_PRACTICAL_DIFFERENCE:
        return claim["verdict"]
    side = "for" if record_reads(claim) == READS_FOR else "against"
    whose = "the paper" if claim.get("provenance") == "paper" else "our conjecture"
    return f"{NO_PRACTICAL_DIFFERENCE} ({side} {whose})"


def _claims_summary(name: str, path: Path) -> tuple[str, list[dict], list[dict]]:
    """``"T/T hold; S supported, C contradicted, I inconclusive"``, the violated theorems, the claims read
    against (contradicted, or no practical difference against the claim)."""
    try:
        claims = read_claims(path)["claims"]
    except (OSError, ValueError):
        return "-", [], []
    if not claims:
        return "none", [], []
    theorems = [c for c in claims if c["kind"] == "theorem"]
    empirical = [c for c in claims if c["kind"] == "empirical"]
    broken = [c for c in theorems if c["verdict"] != "holds"]
    contradicted = [c for c in empirical if _reads_against(c)]
    parts = []
    if theorems:
        parts.append(f"{len(theorems) - len(broken)}/{len(theorems)} hold")
    if empirical:
        npd = [f"{NO_PRACTICAL_DIFFERENCE} ({side} {whose})" for side in ("for", "against")
               for whose in ("the paper", "our conjecture")]
        words = ("supported", *npd[:2], "contradicted", *npd[2:], "inconclusive")
        counts = {v: sum(_verdict_word(c) == v for c in empirical) for v in words}
        parts.append(", ".join(f"{n} {v}" for v, n in counts.items() if n))
    return "; ".join(parts), broken, contradicted


def _print_summary(rows: list[list[str]], out) -> None:
    headers = ["notebook", "status", "time", "claims", "note"]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print("", file=out)
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE a Python literal (``3``, ``0.5``, ``[1, 2]``, ``'x'``) or a bare string."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``lqtheory reproduce``'s options to ``parser`` (the CLI calls this, then :func:`run`)."""
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="problem sizes: ci (minutes on 2 CPU cores), default (laptop CPU; the default), "
                             "paper (the paper's settings, for a GPU)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="run only these notebooks (file stem, or a unique prefix such as 01)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    parser.add_argument("--seed", type=int, default=None, help="seed passed to every notebook (default: theirs)")
    parser.add_argument("-p", "--param", dest="params", action="append", type=parse_param, default=[],
                        metavar="NAME=VALUE", help="extra notebook parameter (repeatable; must be declared)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="notebooks run in parallel (default: 1)")
    parser.add_argument("--force", action="store_true", help="ignore the cache and run every selected notebook")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when an empirical claim of the paper is contradicted (or reads "
                             "'no practical difference' against the paper within its registered margin)")
    parser.add_argument("--list", action="store_true", help="list the notebooks and their parameters, then exit")
    parser.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds (default: none)")
    parser.add_argument("--update-notebooks", action="store_true",
                        help="execute at the ci profile and write the outputs back into the notebooks "
                             "(how committed outputs are refreshed)")
    add_executor_arguments(parser.add_argument_group("grids of runs (Dask; one cluster for the whole reproduction)"),
                           local_default="dask on a local cluster started for the reproduction")
    parser.add_argument("--notebooks-dir", type=Path, default=None, help="default: <repo>/notebooks")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="root of the executed copies (default: <repo>/build/notebooks)")
    parser.add_argument("--figures-dir", type=Path, default=None,
                        help=f"root of figures/tables/claims (default: ${ENV_FIGURES} or <repo>/figures)")
    parser.add_argument("--report", nargs="?", const=True, default=None, type=Path, metavar="FILE",
                        help="also write one self-contained HTML report of the executed notebooks "
                             "(default FILE: <repo>/build/report/<profile>/report.html)")
    return parser


def _quiet_interrupt(signum, frame):
    """Ctrl-C: silence the libraries' logging first (nbclient's "Kernel died while waiting", asyncio's
    "Task exception was never retrieved" while papermill unwinds), then interrupt as Python does."""
    logging.disable(logging.CRITICAL)
    signal.default_int_handler(signum, frame)


@contextlib.contextmanager
def _interrupt_quietly():
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, _quiet_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace, out=None) -> int:
    """Execute what ``args`` (from :func:`add_arguments`) asks for; returns the exit code."""
    out = out if out is not None else sys.stdout
    try:
        with _interrupt_quietly():
            return _run_with_bank_size(args, out)
    except UsageError as err:
        print(f"lqtheory reproduce: error: {err}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    except BrokenPipeError:  # `lqtheory reproduce --list | head`: the reader left, nothing to report
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        print("lqtheory reproduce: interrupted; the notebooks that were running have no cache entry and their "
              "claims records (if any) are marked \"interrupted\"; run the same command again to redo them",
              file=sys.stderr, flush=True)
        return INTERRUPTED


def _run_with_bank_size(args: argparse.Namespace, out) -> int:
    # the notebooks' grids read their bank size from the environment (run_experiments has no argument)
    bank_size = getattr(args, "bank_size", None)
    with patched_environ({ENV_BANK_SIZE: str(bank_size)} if bank_size is not None else {}):
        return _run(args, out)


def _run(args: argparse.Namespace, out) -> int:
    notebooks_dir = (args.notebooks_dir or repo_root() / "notebooks").resolve()
    build_root = (args.build_dir or repo_root() / "build" / "notebooks").resolve()
    figures_root = args.figures_dir.resolve() if args.figures_dir is not None else None
    paths = list_notebooks(notebooks_dir)

    if args.list:
        for path in paths:
            params = ", ".join(f"{k}={v}" for k, v in declared_parameters(path).items())
            print(f"{path.stem:28s} {notebook_title(path)}\n{'':28s} parameters: {params}", file=out)
        out.flush()  # a reader that left (`| head`) is noticed here, not at interpreter exit
        return 0
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")

    selected = select_notebooks(paths, args.only)
    extra = dict(args.params)
    if args.update_notebooks:
        if args.profile not in (None, "ci"):
            raise UsageError("--update-notebooks always runs the ci profile (committed outputs); drop --profile")
        if extra or args.seed is not None or args.device != "auto":
            raise UsageError("--update-notebooks runs the notebooks' own defaults; drop --param/--seed/--device")
        profile, parameters = "ci", {}
    else:
        profile = args.profile or "default"
        clash = sorted(set(extra) & {"profile", "device", "seed"})
        if clash:
            raise UsageError(f"use --{clash[0]} rather than --param {clash[0]}=...")
        parameters = {"profile": profile, "device": args.device}
        if args.seed is not None:
            parameters["seed"] = args.seed
        parameters.update(extra)
    if not selected:
        raise UsageError(f"no notebooks in {notebooks_dir}")
    registry = notebooks_dir / "claims.toml"
    if registry.is_file():  # a malformed registry fails here, not inside every notebook's kernel
        try:
            load_registry(registry)
        except (OSError, ValueError) as err:
            raise UsageError(" ".join(str(err).split())) from err
    preflight(selected, parameters)

    figures = figures_dir(profile, figures_root)
    build = build_root / ("ci-update" if args.update_notebooks else profile)
    package = package_digest()
    total = len(selected)
    console = Console(total, out)
    mode = "updating committed notebooks (ci profile)" if args.update_notebooks else f"profile {profile}"
    console.line(f"lqtheory reproduce: {total} notebook(s), {mode}, device {args.device}, jobs {args.jobs}")

    outcomes: dict[str, Outcome] = {}

    def make_task(i: int, path: Path) -> Task | None:
        name = path.stem
        claims = claims_path(name, profile, figures_root)
        task = Task(name=name, source=path, output=build / f"{name}.ipynb", parameters=parameters,
                    cwd=notebooks_dir, claims=claims, timeout=args.timeout, position=f"[{i + 1}/{total}]")
        if args.update_notebooks:
            return task
        extras = [p for p in claims.parent.glob("*.json") if p.stem != name] if is_aggregator(name) else []
        task.key = cache_key(path, parameters, figures, package + registry_digest(notebooks_dir, name), extras)
        task.stamp = build / f"{name}.cache.json"
        if not args.force and cache_valid(task.stamp, task.key, claims):
            outcomes[name] = Outcome(name, "cached")
            console.line(f"{task.position} {name}: skipped (cached)")
            console.step()
            return None
        return task

    indexed = list(enumerate(selected))
    grid = _grid_cluster(args)
    with kernel_environment(figures_root, notebooks_dir / "claims.toml"), grid:
        try:
            for phase in (False, True):  # regular notebooks, then aggregators
                tasks = [t for i, p in indexed if is_aggregator(p.stem) == phase if (t := make_task(i, p))]
                if tasks and not grid.started:
                    console.line(grid.start())  # exports the cluster's address to the kernels
                for outcome in run_tasks(tasks, args.jobs, console):
                    outcomes[outcome.name] = outcome
        finally:
            console.close()

    if args.update_notebooks:
        for path in selected:
            if outcomes[path.stem].status == "done":
                write_committed(build / f"{path.stem}.ipynb", path)

    rows, broken, contradicted = [], [], []
    for path in selected:
        o = outcomes[path.stem]
        summary, b, u = _claims_summary(path.stem, claims_path(path.stem, profile, figures_root))
        broken += [(path.stem, c) for c in b]
        contradicted += [(path.stem, c) for c in u]
        note = o.error if o.status == "FAILED" else ("written back" if args.update_notebooks and o.status == "done"
                                                     else "")
        elapsed = f"{o.elapsed:.1f}s" if o.status != "cached" else "-"
        rows.append([path.stem, o.status, elapsed, summary, note])
    _print_summary(rows, out)

    failed = [n for n, o in outcomes.items() if o.status == "FAILED"]
    paper = [(n, c) for n, c in contradicted if c["provenance"] == "paper"]
    print("", file=out)
    for name, c in broken:
        print(f"theorem VIOLATED: {name} [{c['id']}] {c['statement']} ({c['measured']})", file=out)
    for name, c in contradicted:
        ours = c["provenance"] != "paper"
        if c["verdict"] == NO_PRACTICAL_DIFFERENCE:
            what = f"{_verdict_word(c)} [{'derived' if ours else 'paper'}]"
        else:
            what = "contradicted (our conjecture) [derived]" if ours else "contradicted [paper]"
        print(f"{what}: {name} [{c['id']}] {c['statement']} ({c['measured']})", file=out)
    # Exit code: a violated theorem is a bug; a paper claim read against (contradicted, or no practical
    # difference against an ordering claim) fails only with --strict; a [derived] conjecture of ours read
    # against and an inconclusive claim are findings, never failures.
    code = 1 if failed or broken or (args.strict and paper) else 0

    def by_equivalence(found: list) -> str:
        k = sum(c["verdict"] == NO_PRACTICAL_DIFFERENCE for _, c in found)
        return f" ({k} of them by {NO_PRACTICAL_DIFFERENCE})" if k else ""

    ours = [(n, c) for n, c in contradicted if c["provenance"] != "paper"]
    print(f"{total - len(failed)}/{total} notebook(s) ok, {len(failed)} failed; {len(broken)} theorem claim(s) "
          f"violated, {len(paper)} paper claim(s) contradicted{by_equivalence(paper)}, {len(ours)} derived "
          f"conjecture(s) contradicted{by_equivalence(ours)}; executed copies in {build}", file=out)
    if not args.update_notebooks:
        print(f"figures and tables: {figures}", file=out)
    if getattr(args, "report", None) and not args.update_notebooks:
        code = max(code, _write_report(args.report, build, figures, profile, selected, outcomes, out))
    out.flush()
    return code


def _write_report(target, build: Path, figures: Path, profile: str, selected: Sequence[Path],
                  outcomes: dict, out) -> int:
    """``--report``: one HTML file from the executed copies of every notebook of this profile."""
    path = default_report_path(profile) if target is True else Path(target)
    names = [p.stem for p in selected if (build / f"{p.stem}.ipynb").is_file()]
    missing = [p.stem for p in selected if p.stem not in names]
    try:
        summary = build_report(build, path, figures=figures, profile=profile, names=names, missing=missing)
    except (OSError, ValueError) as err:
        print(f"report not written: {err}", file=out)
        return 1
    print(f"report: {summary['path']} ({summary['notebooks']} notebooks, {summary['figures']} figures, "
          f"{summary['claims']} claims)", file=out)
    if summary.get("warnings") or summary.get("math_failed"):  # left out of the report, listed beside it
        print(f"report: {summary.get('warnings', 0)} library warning(s) and {summary.get('math_failed', 0)} "
              f"formula(s) not typeset: see {Path(summary['path']).with_suffix('.log')}", file=out)
    return 0


def _grid_cluster(args: argparse.Namespace):
    """The one Dask cluster of the reproduction (not started yet): see the module docstring."""
    gpus = 0
    if args.executor != "serial" and args.scheduler is None and args.device != "cpu":
        try:
            gpus = gpu_count() if resolve_device(args.device).type == "cuda" else 0
        except ValueError:
            gpus = 0  # a missing device is the notebooks' error to report
    try:
        return SharedCluster(args.executor, args.scheduler, args.workers, gpus=gpus)
    except ValueError as err:
        raise UsageError(str(err)) from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lqtheory reproduce", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
