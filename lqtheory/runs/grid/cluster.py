"""Dask clusters for grids: the embedded local cluster (one single-threaded worker process per core,
or one per GPU), connecting to an existing scheduler, and keeping distributed's logging quiet.

Only imported when a grid runs on Dask, so the serial path never imports ``distributed``.

Room: runs (run folders, the loop, leases, the grid executor).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator

from lqtheory.common.environment import EnvironmentPatch, patched_environ
from lqtheory.runs.grid.settings import ENV_EXECUTOR, ENV_SCHEDULER, resolve

__all__ = [
    "connect",
    "default_workers",
    "gpu_count",
    "gpu_worker_env",
    "local_cluster",
    "scheduler_address",
    "silence_logs",
]

LOG_LEVEL = logging.ERROR
_LOGGERS = ("distributed", "dask", "tornado", "bokeh")


def silence_logs() -> None:
    """Raise distributed's (and its helpers') loggers in this process to ERROR: their INFO/WARNING lines
    would otherwise reach stderr, and from there notebook outputs that nbval compares. Workers and
    schedulers started by :func:`local_cluster` get the same level."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < LOG_LEVEL:
            logger.setLevel(LOG_LEVEL)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    silence_logs()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"distributed(\..*)?")
        warnings.filterwarnings("ignore", message=r".*[Dd]ashboard.*")
        yield


def default_workers() -> int:
    """Cores this process may use (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def gpu_count() -> int:
    """CUDA devices visible here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_worker_env(n_gpus: int, visible: str | None = None) -> list[dict[str, str]]:
    """The environment of each of ``n_gpus`` GPU workers: worker ``i`` sees only the ``i``-th visible
    device (``CUDA_VISIBLE_DEVICES`` of this process, if set, is respected), so inside a worker the
    GPU is ``cuda`` / ``cuda:0`` and ``device="auto"`` picks it."""
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1:
        raise ValueError(f"n_gpus must be a positive int, got {n_gpus!r}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(n_gpus)]
    if len(ids) < n_gpus:
        raise ValueError(f"{n_gpus} GPU workers asked for but CUDA_VISIBLE_DEVICES lists {len(ids)}: {visible!r}")
    return [{"CUDA_VISIBLE_DEVICES": ids[i]} for i in range(n_gpus)]


def dashboard_available() -> bool:
    return importlib.util.find_spec("bokeh") is not None


#: Imported once by the fork server that starts (and restarts) local workers, instead of by each worker.
FORKSERVER_PRELOAD = ("dask", "distributed", "numpy", "pandas", "torch", "sklearn.datasets", "lqtheory.runs.runner",
                      "lqtheory.runs.grid.tasks")


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """distributed's pre-spawn environment for local workers, minus ``MALLOC_TRIM_THRESHOLD_``, exported
    into this process up front and restored on exit.

    With ``MALLOC_TRIM_THRESHOLD_`` set, glibc keeps a fixed mmap threshold, so every activation and
    gradient buffer of a training step is mapped and page-faulted afresh: runs trained 1.6-1.8x slower in
    workers than in a plain process (measured on the default profile). The nanny also exports the
    variables (``OMP_NUM_THREADS=1``...) into *this* process when each worker starts, in the background,
    so children started meanwhile (the notebook kernels of ``lqtheory reproduce``) would see them or not
    depending on timing, and compute with a varying thread count. Exporting them here first makes every
    child see the same values.
    """
    import dask

    spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ"), "MALLOC_TRIM_THRESHOLD_": None}
    exported = {k: os.environ.get(k, str(v)) for k, v in spawn.items() if v is not None}  # the nanny's rule
    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        exported["PYTHONHASHSEED"] = "6640"  # what the nanny sets (distributed#8400)
    with patched_environ(exported), dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
        yield


@contextlib.contextmanager
def _fork_server() -> Iterator[None]:
    """Start local workers from a fork server that has imported torch and lqtheory once.

    With distributed's default ("spawn") every worker imports torch and lqtheory itself: seconds each
    on a quiet machine, a minute on a loaded one, again after every worker restart. The fork server
    imports them once (it never runs torch code, so forking it is safe) and forks the workers. Where
    the start method does not exist (Windows), workers are spawned as usual.
    """
    import multiprocessing

    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield
        return
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(list(FORKSERVER_PRELOAD))  # after distributed set its own
        yield


MAIN_GUARD_HELP = (
    "Local Dask workers start by re-importing your script, which then starts its grid again in every worker "
    "(tracebacks from the nanny, then a hang). Put the call under the main guard:\n\n"
    "    if __name__ == \"__main__\":\n"
    "        run_experiments(configs, out, workers=2)\n\n"
    "or pass executor=\"serial\", or a scheduler= address of a cluster you started."
)


def _is_main_test(node: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either order)."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
        return False
    sides = [node.left, node.comparators[0]]
    return (any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
            and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides))


def unguarded_main_call() -> tuple[str, int] | None:
    """``(script, line)`` when this call comes from the module-level code of the ``__main__`` script
    outside an ``if __name__ == "__main__":`` block (what worker processes would re-run), else None.
    Notebooks, ``python -c`` and interactive sessions have no script file: None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or 0):
            return None
    return path, line


def check_main_guard() -> None:
    """Raise one clear ``RuntimeError`` (showing the guard) when local workers would re-import an
    unguarded script: see :func:`unguarded_main_call`."""
    where = unguarded_main_call()
    if where is not None:
        raise RuntimeError(f"{where[0]}, line {where[1]}: a grid on a local Dask cluster was started at the top "
                           f"level of a script without the main guard. {MAIN_GUARD_HELP}")


_ADDRESS = re.compile(r"(?:(?:tcp|tls|ws|wss)://)?(?:\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+):\d{1,5}/?")


def check_address(text: str) -> str:
    """``text`` if it is a Dask scheduler address (``[tcp://]host:port``, ``tls://``, ``ws(s)://``,
    ``inproc://``, ``ucx://``); else ``ValueError``, before any ``Client`` is built (a failed
    ``Client`` hangs 120 s in its ``__del__``)."""
    text = text.strip()
    if re.match(r"(inproc|ucx)://\S+$", text) or _ADDRESS.fullmatch(text):
        return text
    raise ValueError(f"{text!r} is not a Dask scheduler address: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)")


@contextlib.contextmanager
def local_cluster(workers: int | None = None, *, gpus: int = 0, announce: bool = True, **options):
    """A ``LocalCluster`` of single-threaded worker processes: ``workers`` of them (default: one per
    core), or with ``gpus > 0`` one per GPU (``min(workers, gpus)`` when ``workers`` is given), each
    seeing its own device through ``CUDA_VISIBLE_DEVICES``. The dashboard is served on a free port when
    ``bokeh`` is installed (its address printed to stderr when ``announce``). ``options`` go to
    ``LocalCluster`` (e.g. ``preload``, ``env``). Workers are forked from a fork server that has
    imported torch and lqtheory (see :func:`_fork_server`); they start in the background, so the
    cluster's address is usable at once. Closed on exit."""
    from distributed import LocalCluster

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    check_main_guard()
    dashboard = ":0" if dashboard_available() else None
    options = dict(dict(threads_per_worker=1, processes=True, dashboard_address=dashboard, silence_logs=LOG_LEVEL),
                   **options)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_worker_environment())
        stack.enter_context(_fork_server())
        with _quiet():
            # The scheduler is up when the constructor returns; workers start in the background
            # (scale does not wait), and tasks submitted meanwhile queue until they join.
            if gpus:
                envs = gpu_worker_env(min(workers, gpus) if workers else gpus)
                cluster = _gpu_cluster_class()(envs, **options)
                cluster.scale(len(envs))
            else:
                cluster = LocalCluster(n_workers=0, **options)
                cluster.scale(workers or default_workers())
        try:
            if announce and dashboard is not None:
                print(f"Dask dashboard: {cluster.dashboard_link}", file=sys.stderr, flush=True)
            yield cluster
        finally:
            with _quiet():
                cluster.close()


def _gpu_cluster_class():
    from distributed import LocalCluster

    class GPULocalCluster(LocalCluster):
        """A LocalCluster whose workers each get their own ``CUDA_VISIBLE_DEVICES`` (named ``gpu-<id>``)."""

        def __init__(self, envs: list[dict[str, str]], **options):
            self._gpu_envs = envs
            super().__init__(n_workers=0, **options)

        def new_worker_spec(self):
            base = self.new_spec
            for env in self._gpu_envs:
                name = f"gpu-{env['CUDA_VISIBLE_DEVICES']}"
                if name not in self.worker_spec:
                    worker_options = {**base["options"], "env": {**(base["options"].get("env") or {}), **env}}
                    return {name: {"cls": base["cls"], "options": worker_options}}
            raise ValueError(f"every one of the {len(self._gpu_envs)} GPUs already has a worker")

    return GPULocalCluster


def scheduler_address(scheduler) -> str:
    """An address string from an address or any object with ``scheduler_address`` (a ``LocalCluster``,
    a dask-jobqueue ``SLURMCluster``, a ``Client``)."""
    if isinstance(scheduler, str):
        text = scheduler.strip()
        if not text:
            raise ValueError("scheduler address is empty")
        return check_address(text)
    address = getattr(scheduler, "scheduler_address", None)
    if isinstance(address, str):
        return address
    raise TypeError(f"scheduler must be an address such as tcp://host:8786 or a cluster, "
                    f"got {type(scheduler).__name__}")


@contextlib.contextmanager
def connect(scheduler=None, *, workers: int | None = None, gpus: int = 0, timeout: float = 60):
    """A ``Client`` to ``scheduler`` (see :func:`scheduler_address`), or to a :func:`local_cluster`
    started for the duration of the block when ``scheduler`` is None. Quiet either way."""
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            address = stack.enter_context(local_cluster(workers, gpus=gpus)).scheduler_address
        else:
            address = scheduler_address(scheduler)
        with _quiet():
            client = Client(address, set_as_default=False, timeout=timeout)
        try:
            yield client
        finally:
            with _quiet():
                client.close()


class SharedCluster:
    """One Dask cluster for a batch of notebooks (``lqtheory reproduce``), handed to their kernels
    through the environment: ``$LQTHEORY_SCHEDULER`` (so ``run_experiments`` in every notebook sends its
    grid there and none starts a cluster of its own), or ``$LQTHEORY_EXECUTOR=serial`` when the serial
    executor is asked for. Started by :meth:`start` (idempotent; nothing is started for a batch that
    runs no notebook); :meth:`close` shuts a cluster it started and restores the environment.
    """

    def __init__(self, executor: str | None = None, scheduler=None, workers: int | None = None, gpus: int = 0):
        self.executor, self.scheduler, _ = resolve(executor, scheduler)
        if self.executor == "serial" and workers is not None:
            raise ValueError("--workers sizes a local Dask cluster; it has no meaning with the serial executor")
        self.workers, self.gpus = workers, gpus
        self._stack = contextlib.ExitStack()
        self._environment: EnvironmentPatch | None = None  # what start() exported for the kernels

    @property
    def started(self) -> bool:
        return self._environment is not None

    def _export(self, updates: dict[str, str]) -> None:
        self._environment = EnvironmentPatch(updates)
        self._environment.apply()

    def start(self) -> str:
        """Start (or connect to nothing: the address is only passed on) and export; returns one line
        saying what the notebooks will use."""
        if self.started:
            return ""
        if self.executor == "serial":
            self._export({ENV_EXECUTOR: "serial"})
            return "grids: serial (in each notebook's kernel)"
        if self.scheduler is not None:
            address = scheduler_address(self.scheduler)
            self._export({ENV_SCHEDULER: address, ENV_EXECUTOR: "dask"})
            return f"grids: Dask scheduler {address}"
        cluster = self._stack.enter_context(local_cluster(self.workers, gpus=self.gpus))
        n = len(cluster.worker_spec)
        self._export({ENV_SCHEDULER: cluster.scheduler_address, ENV_EXECUTOR: "dask"})
        kind = "one per GPU" if self.gpus else "single-threaded"
        return f"grids: local Dask cluster, {n} worker(s) ({kind}), shared by the notebooks"

    def __enter__(self) -> SharedCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            if self._environment is not None:
                self._environment.restore()
                self._environment = None
