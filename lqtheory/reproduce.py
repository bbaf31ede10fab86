"""``lqtheory reproduce``: execute the notebooks with papermill, with caching and a claims summary.

Every notebook in ``notebooks/`` (sorted by name; the aggregators ``99_*`` such as the claims ledger
run last, after all others have finished) is executed with papermill at one profile. Executed copies
go to ``build/notebooks/<profile>/``; figures, tables and claims go wherever the notebooks'
``run.save_*``/``run.claim`` put them (``figures/`` for the default profile, ``figures/<profile>/``
otherwise). A notebook whose inputs are unchanged (its source cells, the parameters, the package's
``lqtheory/**/*.py``, its entries of the claims registry ``notebooks/claims.toml``, and for aggregators
the other notebooks' claims files) is skipped unless ``--force``.

Exit code: 0 when every notebook ran and every theorem claim holds; 1 when a notebook failed or a
theorem claim is violated (or, with ``--strict``, an empirical claim of the paper is contradicted; a
contradicted [derived] conjecture or an inconclusive claim never fails the run); 2 for a
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
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lqtheory.notebook import (
    ENV_BATCH,
    ENV_FIGURES,
    ENV_PROGRESS,
    KNOWN_PROFILES,
    check_notebook,
    claims_path,
    figures_dir,
    papermill_parameters,
    parameters_cell,
    read_claims,
    repo_root,
)

KERNEL = "python3"
AGGREGATOR_PREFIX = "99_"
USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
_ENV_KERNEL_LOG = "LQTHEORY_KERNEL_LOG"  # where a kernel's own stderr goes (see _kernel_manager_class)
PACKAGE_DIR = Path(__file__).resolve().parent


class UsageError(ValueError):
    """A problem found before executing anything (reported with exit code 2)."""


# ----------------------------------------------------------------------------------------------
# Discovery and selection


def list_notebooks(notebooks_dir: str | os.PathLike) -> list[Path]:
    """The notebooks of a folder: sorted by name, aggregators (``99_*``) last."""
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise UsageError(f"notebooks folder {folder} does not exist")
    paths = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    return [p for p in paths if not is_aggregator(p.stem)] + [p for p in paths if is_aggregator(p.stem)]


def is_aggregator(name: str) -> bool:
    """Aggregators read the other notebooks' results, so they run after all of them."""
    return name.startswith(AGGREGATOR_PREFIX)


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

    from lqtheory.notebook import _literal

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
                    table = _literal(prof) if prof is not None else None
                except (ValueError, TypeError, SyntaxError):
                    return None
                return table if isinstance(table, dict) else None
    return None


def preflight(paths: Sequence[Path], parameters: dict[str, Any]) -> None:
    """Refuse, before executing anything, malformed notebooks, parameters they do not declare, and
    values of the wrong type for a parameter (checked as ``setup`` would, against the profile's value)."""
    from lqtheory.notebook import _coerce_override

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
                    _coerce_override(name, parameters[name], reference[name])
                except TypeError as err:
                    problems.append(f"{path.stem}: {err}")
    if problems:
        raise UsageError("\n  ".join(["notebook check failed:", *problems]))


# ----------------------------------------------------------------------------------------------
# Cache keys


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def source_digest(path: str | os.PathLike) -> str:
    """Hash of a notebook's cells' types, sources and tags: outputs and metadata do not count."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [[c.cell_type, c.source, sorted(c.get("metadata", {}).get("tags", []))] for c in nb.cells]
    return _sha(json.dumps(cells, sort_keys=True).encode())


def package_digest(package_dir: str | os.PathLike | None = None) -> str:
    """Hash of every ``*.py`` file of the package (relative path and bytes)."""
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    parts = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts += [path.relative_to(root).as_posix().encode(), path.read_bytes()]
    return _sha(*parts)


def cache_key(path: Path, parameters: dict[str, Any], figures: Path, package: str,
              extra_files: Iterable[Path] = ()) -> str:
    """What decides whether a notebook must run again."""
    extra = [p.name.encode() + b"\0" + p.read_bytes() for p in sorted(extra_files) if p.is_file()]
    params = json.dumps(parameters, sort_keys=True, default=repr).encode()
    return _sha(source_digest(path).encode(), params, str(figures).encode(), package.encode(), *extra)


def _cache_valid(stamp: Path, key: str, claims: Path) -> bool:
    """The stamp matches and the outputs the notebook recorded still exist."""
    try:
        if json.loads(stamp.read_text())["key"] != key:
            return False
        record = read_claims(claims)
    except (OSError, ValueError, KeyError):
        return False
    return all((claims.parent.parent / name).exists() for name in record.get("artifacts", []))


# ----------------------------------------------------------------------------------------------
# Execution


@dataclass
class Task:
    name: str
    source: Path
    output: Path
    parameters: dict[str, Any]
    cwd: Path
    claims: Path
    stamp: Path | None = None
    key: str | None = None
    timeout: float | None = None
    position: str = ""


@dataclass
class Outcome:
    name: str
    status: str  # done | cached | FAILED
    elapsed: float = 0.0
    error: str = ""
    details: list[str] = field(default_factory=list)


def _excerpt(source: str, lines: int = 2, width: int = 100) -> list[str]:
    kept = [ln for ln in source.splitlines() if ln.strip()][:lines]
    return [ln if len(ln) <= width else ln[: width - 1] + "…" for ln in kept]


def _source_cell_number(task: Task, executed_index: int) -> int:
    """1-based number of the failing cell in the source notebook (papermill inserts one cell)."""
    if not task.parameters:
        return executed_index + 1
    import nbformat

    nb = nbformat.read(task.source, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    shift = 1 if tagged and executed_index > tagged[0] else 0
    return executed_index - shift + 1


@functools.cache
def _kernel_manager_class():
    """nbclient's kernel manager, asking for CurveZMQ keys when the kernel supports them.

    ipykernel >= 7.3 prints "Kernel is running over TCP without encryption" on every start over
    plain TCP: once per notebook in every reproduction. ``transport_encryption = "auto"`` provisions
    keys when the kernelspec declares support and silently keeps plain TCP otherwise (older
    jupyter_client versions ignore the attribute).
    """
    from jupyter_client.manager import AsyncKernelManager

    class EncryptedKernelManager(AsyncKernelManager):
        transport_encryption = "auto"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            # The kernel's own stderr (not cell output, which papermill records) goes to a log beside the
            # executed copy: a kernel shut down busy (Ctrl-C) prints ZMQ tracebacks the user need not see.
            log = os.environ.get(_ENV_KERNEL_LOG)
            if log and "stderr" not in kw:
                Path(log).parent.mkdir(parents=True, exist_ok=True)
                with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
                    return await super()._async_launch_kernel(kernel_cmd, stderr=fh, **kw)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return EncryptedKernelManager


def execute(task: Task, announce: bool = False) -> Outcome:
    """Run one notebook with papermill; never raises for a notebook's own failure.

    The notebook's previous claims record is moved aside while it runs (so a failure before
    ``setup()`` cannot pass an old record off as this run's) and put back if the run fails or is
    interrupted without writing a record of its own: a failed rerun never deletes the last good
    record (at the default profile it is tracked by git). The outcome then says so. A record the
    failed run did write (a violated theorem) replaces the old one.
    """
    previous = task.claims.with_name(f".{task.claims.name}.previous")
    kept = task.claims.is_file()
    if kept:
        os.replace(task.claims, previous)
    outcome = None
    try:
        outcome = _execute(task, announce)
    except KeyboardInterrupt:
        if task.claims.is_file():  # what this run recorded before the interrupt, said to be partial
            mark_interrupted(task.claims)
            kept = False  # the partial record stays, marked; the previous one is not restored over it
            previous.unlink(missing_ok=True)
        raise
    finally:
        if kept:
            if (outcome is not None and outcome.status == "done") or task.claims.is_file():
                previous.unlink(missing_ok=True)
            else:
                os.replace(previous, task.claims)
                if outcome is not None:
                    outcome.details.append(f"kept the previous claims record {task.claims} (from the last good run)")
    return outcome


def mark_interrupted(claims: Path) -> None:
    """Add ``"interrupted": true`` to a claims record a run wrote before it was interrupted."""
    from lqtheory.notebook import _json_text

    try:
        record = json.loads(claims.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(record, dict):
        record["interrupted"] = True
        tmp = claims.with_name(f".{claims.name}.tmp")
        tmp.write_text(_json_text(record), encoding="utf-8")
        os.replace(tmp, claims)


def _execute(task: Task, announce: bool = False) -> Outcome:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if announce:
        print(f"{task.position} {task.name}: started", flush=True)
    task.output.parent.mkdir(parents=True, exist_ok=True)
    if task.stamp is not None:
        task.stamp.unlink(missing_ok=True)
    task.claims.unlink(missing_ok=True)  # a failure before setup() must not leave stale claims (see execute)
    start = time.monotonic()
    os.environ[_ENV_KERNEL_LOG] = str(task.output.with_suffix(".kernel.log"))
    try:
        papermill.execute_notebook(
            str(task.source),
            str(task.output),
            parameters=task.parameters or None,
            kernel_name=KERNEL,
            cwd=str(task.cwd),
            progress_bar=False,
            log_output=False,
            start_timeout=180,
            execution_timeout=task.timeout,
            kernel_manager_class=_kernel_manager_class(),
        )
    except PapermillExecutionError as err:
        cell = _source_cell_number(task, err.cell_index)
        evalue = (err.evalue or "").strip().splitlines()
        message = f"{err.ename}: {evalue[0] if evalue else ''}".strip()
        details = [f"cell {cell} failed with {message}"] + [f"    > {ln}" for ln in _excerpt(err.source)]
        details.append(f"executed copy: {task.output}")
        return Outcome(task.name, "FAILED", time.monotonic() - start, f"cell {cell}: {message}", details)
    except Exception as err:  # noqa: BLE001 - kernel death, timeouts, missing kernel: report and go on
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        return Outcome(task.name, "FAILED", time.monotonic() - start, message, [message])
    if task.stamp is not None and task.key is not None:
        task.stamp.write_text(json.dumps({"key": task.key, "notebook": task.name}) + "\n")
    return Outcome(task.name, "done", time.monotonic() - start)


@contextmanager
def _kernel_environment(figures_root: Path | None, registry: Path | None = None):
    """Variables the kernels inherit: batch mode (stable outputs), the figures root if overridden, and the
    claims registry next to the notebooks (``$LQTHEORY_CLAIMS``) when there is one."""
    updates = {ENV_BATCH: "1", ENV_PROGRESS: "0"}
    if figures_root is not None:
        updates[ENV_FIGURES] = str(figures_root)
    if registry is not None and registry.is_file():
        updates["LQTHEORY_CLAIMS"] = str(registry)
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Console:
    """Progress lines on stdout and, when a terminal watches, a tqdm bar over notebooks on stderr."""

    def __init__(self, total: int, out):
        self.out = out
        self.lock = threading.Lock()
        self.bar = None
        if total > 1 and hasattr(sys.stderr, "isatty") and sys.stderr.isatty() and out is sys.stdout:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="notebook", leave=False)

    def line(self, text: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.write(text)
            else:
                print(text, file=self.out, flush=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(console: _Console, task: Task, outcome: Outcome) -> None:
    if outcome.status == "done":
        console.line(f"{task.position} {task.name}: done in {outcome.elapsed:.1f}s")
    else:
        console.line(f"{task.position} {task.name}: FAILED after {outcome.elapsed:.1f}s")
        for detail in outcome.details:
            console.line(f"    {detail}")
    console.step()


def _run_tasks(tasks: list[Task], jobs: int, console: _Console) -> list[Outcome]:
    if not tasks:
        return []
    if jobs <= 1 or len(tasks) == 1:
        outcomes = []
        for task in tasks:
            console.line(f"{task.position} {task.name}: started")
            outcome = execute(task)
            _report(console, task, outcome)
            outcomes.append(outcome)
        return outcomes
    # Processes, not threads: papermill changes the working directory of the whole process.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
        futures = [(task, pool.submit(execute, task, True)) for task in tasks]
        outcomes = []
        for task, fut in futures:
            try:
                outcome = fut.result()
            except Exception as err:  # noqa: BLE001 - a crashed worker is one failed notebook
                outcome = Outcome(task.name, "FAILED", 0.0, f"{type(err).__name__}: {err}",
                                  [f"worker crashed: {type(err).__name__}: {err}"])
            _report(console, task, outcome)
            outcomes.append(outcome)
        return outcomes


# ----------------------------------------------------------------------------------------------
# Committed copies


def clean_executed(nb):
    """Drop what differs run to run or machine to machine from an executed notebook (in place).

    Removes papermill's injected-parameters and error-marker cells, notebook- and cell-level
    ``papermill`` metadata and nbclient's per-cell ``execution`` timestamps.
    """
    drop = {"injected-parameters", "papermill-error-cell-tag"}
    nb.cells = [c for c in nb.cells if not drop & set(c.get("metadata", {}).get("tags", []))]
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if not cell.metadata.get("tags", True):
            cell.metadata.pop("tags")  # papermill adds empty tag lists
    return nb


def write_committed(executed: Path, target: Path) -> None:
    """Write an executed copy, cleaned, over the committed notebook ``target``."""
    import nbformat

    nb = clean_executed(nbformat.read(executed, as_version=4))
    text = nbformat.writes(nb) + "\n"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


# ----------------------------------------------------------------------------------------------
# Summary


def _claims_summary(name: str, path: Path) -> tuple[str, list[dict], list[dict]]:
    """``"T/T hold; S supported, C contradicted, I inconclusive"``, the violated theorems, the contradicted claims."""
    try:
        claims = read_claims(path)["claims"]
    except (OSError, ValueError):
        return "-", [], []
    if not claims:
        return "none", [], []
    theorems = [c for c in claims if c["kind"] == "theorem"]
    empirical = [c for c in claims if c["kind"] == "empirical"]
    broken = [c for c in theorems if c["verdict"] != "holds"]
    contradicted = [c for c in empirical if c["verdict"] == "contradicted"]
    parts = []
    if theorems:
        parts.append(f"{len(theorems) - len(broken)}/{len(theorems)} hold")
    if empirical:
        counts = {v: sum(c["verdict"] == v for c in empirical) for v in ("supported", "contradicted", "inconclusive")}
        parts.append(", ".join(f"{n} {v}" for v, n in counts.items() if n))
    return "; ".join(parts), broken, contradicted


def _registry_digest(notebooks_dir: Path, name: str) -> str:
    """Hash of the claims registered for ``name`` (all of them for an aggregator): a changed threshold reruns."""
    path = notebooks_dir / "claims.toml"
    if not path.is_file():
        return ""
    try:
        from lqtheory.claims import for_notebook, load_registry

        registry = load_registry(path)
    except (OSError, ValueError):
        return _sha(path.read_bytes())  # a broken registry: the notebook will report it when it runs
    entries = list(registry.values()) if is_aggregator(name) else for_notebook(registry, name)
    return _sha(json.dumps([c.as_dict() for c in entries], sort_keys=True).encode())


def _print_summary(rows: list[list[str]], out) -> None:
    headers = ["notebook", "status", "time", "claims", "note"]
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print("", file=out)
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


# ----------------------------------------------------------------------------------------------
# Entry points


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
    parser.add_argument("--profile", choices=KNOWN_PROFILES, default=None,
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
                        help="also fail when an empirical claim of the paper is contradicted")
    parser.add_argument("--list", action="store_true", help="list the notebooks and their parameters, then exit")
    parser.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds (default: none)")
    parser.add_argument("--update-notebooks", action="store_true",
                        help="execute at the ci profile and write the outputs back into the notebooks "
                             "(how committed outputs are refreshed)")
    from lqtheory.sweep.options import add_executor_arguments

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


def run(args: argparse.Namespace, out=None) -> int:
    """Execute what ``args`` (from :func:`add_arguments`) asks for; returns the exit code."""
    out = out if out is not None else sys.stdout
    try:
        return _run(args, out)
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
        from lqtheory.claims import load_registry

        try:
            load_registry(registry)
        except (OSError, ValueError) as err:
            raise UsageError(" ".join(str(err).split())) from err
    preflight(selected, parameters)

    figures = figures_dir(profile, figures_root)
    build = build_root / ("ci-update" if args.update_notebooks else profile)
    package = package_digest()
    total = len(selected)
    console = _Console(total, out)
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
        task.key = cache_key(path, parameters, figures, package + _registry_digest(notebooks_dir, name), extras)
        task.stamp = build / f"{name}.cache.json"
        if not args.force and _cache_valid(task.stamp, task.key, claims):
            outcomes[name] = Outcome(name, "cached")
            console.line(f"{task.position} {name}: skipped (cached)")
            console.step()
            return None
        return task

    indexed = list(enumerate(selected))
    grid = _grid_cluster(args)
    with _kernel_environment(figures_root, notebooks_dir / "claims.toml"), grid:
        try:
            for phase in (False, True):  # regular notebooks, then aggregators
                tasks = [t for i, p in indexed if is_aggregator(p.stem) == phase if (t := make_task(i, p))]
                if tasks and not grid.started:
                    console.line(grid.start())  # exports the cluster's address to the kernels
                for outcome in _run_tasks(tasks, args.jobs, console):
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
        what = "contradicted [paper]" if c["provenance"] == "paper" else "contradicted (our conjecture) [derived]"
        print(f"{what}: {name} [{c['id']}] {c['statement']} ({c['measured']})", file=out)
    # Exit code: a violated theorem is a bug; a contradicted paper claim fails only with --strict; a
    # contradicted [derived] conjecture of ours and an inconclusive claim are findings, never failures.
    code = 1 if failed or broken or (args.strict and paper) else 0
    print(f"{total - len(failed)}/{total} notebook(s) ok, {len(failed)} failed; {len(broken)} theorem claim(s) "
          f"violated, {len(paper)} paper claim(s) contradicted, {len(contradicted) - len(paper)} derived "
          f"conjecture(s) contradicted; executed copies in {build}", file=out)
    if not args.update_notebooks:
        print(f"figures and tables: {figures}", file=out)
    if getattr(args, "report", None) and not args.update_notebooks:
        code = max(code, _write_report(args.report, build, figures, profile, selected, outcomes, out))
    out.flush()
    return code


def _write_report(target, build: Path, figures: Path, profile: str, selected: Sequence[Path],
                  outcomes: dict, out) -> int:
    """``--report``: one HTML file from the executed copies of every notebook of this profile."""
    from lqtheory.report import build_report, default_report_path

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
    return 0


def _grid_cluster(args: argparse.Namespace):
    """The one Dask cluster of the reproduction (not started yet): see the module docstring."""
    from lqtheory.sweep.cluster import SharedCluster, gpu_count

    gpus = 0
    if args.executor != "serial" and args.scheduler is None and args.device != "cpu":
        from lqtheory.device import resolve_device

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
