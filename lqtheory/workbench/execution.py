"""Executing notebooks for ``lqtheory reproduce`` (workbench room): one papermill run per :class:`Task`,
in parallel processes, with the kernels' environment, progress lines and the committed copies' cleaning.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lqtheory.common.atomic import atomic_write_text
from lqtheory.common.environment import patched_environ
from lqtheory.common.vocabulary import ENV_BATCH, ENV_CLAIMS, ENV_FIGURES, ENV_KERNEL_LOG, ENV_PROGRESS
from lqtheory.workbench.records import record_json_text

__all__ = [
    "KERNEL",
    "Console",
    "Outcome",
    "Task",
    "clean_executed",
    "execute",
    "kernel_environment",
    "report_outcome",
    "run_tasks",
    "write_committed",
]


KERNEL = "python3"


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
            log = os.environ.get(ENV_KERNEL_LOG)
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
    try:
        record = json.loads(claims.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(record, dict):
        record["interrupted"] = True
        atomic_write_text(claims, record_json_text(record))


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
    os.environ[ENV_KERNEL_LOG] = str(task.output.with_suffix(".kernel.log"))
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
def kernel_environment(figures_root: Path | None, registry: Path | None = None):
    """Variables the kernels inherit: batch mode (stable outputs), the figures root if overridden, and the
    claims registry next to the notebooks (``$LQTHEORY_CLAIMS``) when there is one."""
    updates = {ENV_BATCH: "1", ENV_PROGRESS: "0"}
    if figures_root is not None:
        updates[ENV_FIGURES] = str(figures_root)
    if registry is not None and registry.is_file():
        updates[ENV_CLAIMS] = str(registry)
    with patched_environ(updates):
        yield


class Console:
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


def report_outcome(console: Console, task: Task, outcome: Outcome) -> None:
    if outcome.status == "done":
        console.line(f"{task.position} {task.name}: done in {outcome.elapsed:.1f}s")
    else:
        console.line(f"{task.position} {task.name}: FAILED after {outcome.elapsed:.1f}s")
        for detail in outcome.details:
            console.line(f"    {detail}")
    console.step()


def run_tasks(tasks: list[Task], jobs: int, console: Console) -> list[Outcome]:
    if not tasks:
        return []
    if jobs <= 1 or len(tasks) == 1:
        outcomes = []
        for task in tasks:
            console.line(f"{task.position} {task.name}: started")
            outcome = execute(task)
            report_outcome(console, task, outcome)
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
            report_outcome(console, task, outcome)
            outcomes.append(outcome)
        return outcomes


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
    atomic_write_text(target, nbformat.writes(nb) + "\n")
