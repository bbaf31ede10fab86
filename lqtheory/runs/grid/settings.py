"""Which executor and scheduler a grid uses: arguments, else the environment, else the default.

Part of the runs room's grid executor; kept apart from :mod:`~lqtheory.runs.grid.executor` so that the
cluster code and the command-line options can read it without importing the executor.
"""

from __future__ import annotations

import os

from lqtheory.common.vocabulary import ENV_BANK_SIZE, ENV_EXECUTOR, ENV_SCHEDULER

__all__ = ["ENV_BANK_SIZE", "ENV_EXECUTOR", "ENV_SCHEDULER", "EXECUTORS", "resolve", "resolve_bank_size"]

EXECUTORS = ("dask", "serial")


def _env_executor() -> str | None:
    value = os.environ.get(ENV_EXECUTOR, "").strip().lower()
    if value and value not in EXECUTORS:
        raise ValueError(f"${ENV_EXECUTOR} must be one of {', '.join(EXECUTORS)}, got {value!r}")
    return value or None


def resolve(executor: str | None, scheduler, *, default: str = "dask") -> tuple[str, object, bool]:
    """``(executor, scheduler, explicit)``: the executor asked for (argument, else ``$LQTHEORY_EXECUTOR``,
    else "dask" when a scheduler is known, else ``default``), the scheduler (argument, else
    ``$LQTHEORY_SCHEDULER``), and whether the executor was asked for rather than defaulted."""
    if executor is not None:
        if not isinstance(executor, str) or executor.strip().lower() not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)} or None, got {executor!r}")
        executor = executor.strip().lower()
        if executor == "serial" and scheduler is not None:
            raise ValueError("executor='serial' runs in this process: it cannot use a scheduler")
    if scheduler is None:
        scheduler = os.environ.get(ENV_SCHEDULER, "").strip() or None
    explicit = executor is not None
    if executor is None:
        executor = _env_executor()
        explicit = executor is not None
    if executor is None:
        executor = "dask" if scheduler is not None else default
    return executor, scheduler, explicit


def resolve_bank_size(bank_size: int | None) -> int | None:
    """The runs per bank asked for: the argument, else ``$LQTHEORY_BANK_SIZE`` (which ``lqtheory
    reproduce --bank-size`` sets for its notebooks), else None (the device's default)."""
    if bank_size is not None:
        return bank_size
    text = os.environ.get(ENV_BANK_SIZE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${ENV_BANK_SIZE} must be a positive whole number, got {text!r}")
    return int(text)
