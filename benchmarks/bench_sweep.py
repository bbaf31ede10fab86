"""Grid executor benchmark: the E2 grid on a 2-worker vs a 1-worker Dask LocalCluster, and the
scheduling overhead per task against a ci-sized run.

    python benchmarks/bench_sweep.py                 # E2 at the ci profile: 18 runs (3 methods x 3 scopes
                                                     # x 2 seeds, 6 iterations x 3 epochs, digits, mlp-64x2)
    python benchmarks/bench_sweep.py --quick         # 6 runs of 2 iterations x 1 epoch (shows it works)
    python benchmarks/bench_sweep.py --json sweep.json

Cases, each into a fresh run store, in one process, one after another:

* ``serial``: ``run_grid(..., executor="serial", threads=1)``, the in-process loop;
* ``dask-1``: a LocalCluster with 1 single-threaded worker (started and warmed up beforehand: torch,
  lqtheory and the data set loaded), the grid submitted and gathered;
* ``dask-2``: the same with 2 workers.

Reported: wall time of each case, the speed-up ``dask-1 / dask-2`` (target: >= 1.7x on a quiet 2-core
machine), and the scheduling overhead per task ``(dask-1 - serial) / serial`` (the extra time the
1-worker cluster spends per run, as a fraction of a run; target <= 5%), next to the round trip of an
empty task (``client.submit(noop).result()``, median of 20) divided by the mean run time. Cluster
start-up is reported separately (it is paid once per reproduction, not per task).

Ratios come from one run of each case: on a loaded machine they are noisy (the cases do not run at
the same time, so a load change between them moves the ratio). The JSON records the load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script: make `benchmarks` and `lqtheory` importable
    sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402

from benchmarks.harness import environment  # noqa: E402

# E2 (notebooks/05_iterative_pruning.ipynb), profile "ci"
E2_CI = dict(dataset="digits", model="mlp-64-1-2-relu", iterations=6, epochs=3, lr=0.2, batch_size=64, seeds=2)
QUICK = dict(dataset="digits", model="mlp-64-1-2-relu", iterations=2, epochs=1, lr=0.2, batch_size=64, seeds=1)
METHODS = ("one-shot", "lottery-ticket", "si-adaptive")
SCOPES = ("neuron", "layer", "global")
TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD = 0.05


def grid(sizes: dict, methods=METHODS, scopes=SCOPES):
    from lqtheory.runs import ExperimentConfig

    return [
        ExperimentConfig(dataset=sizes["dataset"], model=sizes["model"], method=m, scope=s, p=0.5, q=1.0, gamma=1.0,
                         iterations=sizes["iterations"], epochs=sizes["epochs"], seed=seed, lr=sizes["lr"],
                         batch_size=sizes["batch_size"], device="cpu")
        for m in methods for s in scopes for seed in range(sizes["seeds"])
    ]


def _warm(config, root: str) -> int:
    """A one-iteration run in a worker, into a folder of its own: the data set is loaded and torch's
    first-call costs are paid before the clock starts, as the serial case's warm-up run does."""
    from lqtheory.runs import run_experiment

    run_experiment(config.replace(iterations=0), Path(root) / f"warm-{os.getpid()}", threads=1)
    return os.getpid()


def _noop() -> None:
    return None


def time_serial(configs, root: Path) -> float:
    from lqtheory.runs.grid import run_grid

    run_grid([configs[0].replace(iterations=0)], root / "warm-serial", executor="serial", threads=1)  # as _warm
    start = time.perf_counter()
    run_grid(configs, root / "serial", executor="serial", threads=1)
    return time.perf_counter() - start


def time_dask(configs, root: Path, workers: int) -> dict:
    from distributed import Client

    from lqtheory.runs.grid import run_grid
    from lqtheory.runs.grid.cluster import local_cluster

    start = time.perf_counter()
    with local_cluster(workers, announce=False) as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=600)
        client.run(_warm, configs[0], str(root))
        started = time.perf_counter() - start
        trips = []
        for _ in range(20):
            t0 = time.perf_counter()
            client.submit(_noop, pure=False).result()
            trips.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_grid(configs, root / f"dask-{workers}", scheduler=cluster, progress=False)
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "startup_seconds": started, "noop_round_trip": statistics.median(trips)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 small runs instead of the E2 ci grid")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the numbers (default: benchmarks/results-sweep[-quick].json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = QUICK if args.quick else E2_CI
    configs = grid(sizes, scopes=("neuron", "global") if args.quick else SCOPES)
    env = environment(torch.device("cpu"))
    print(f"{len(configs)} runs: {sizes}; load average {env.get('loadavg_start')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        serial = time_serial(configs, root)
        print(f"serial loop:       {serial:8.2f} s", flush=True)
        one = time_dask(configs, root, 1)
        print(f"dask, 1 worker:    {one['seconds']:8.2f} s  (cluster start-up {one['startup_seconds']:.1f} s)",
              flush=True)
        two = time_dask(configs, root, 2)
        print(f"dask, 2 workers:   {two['seconds']:8.2f} s  (cluster start-up {two['startup_seconds']:.1f} s)",
              flush=True)
    run_time = serial / len(configs)
    speedup = one["seconds"] / two["seconds"]
    overhead = (one["seconds"] - serial) / serial
    trip = one["noop_round_trip"] / run_time
    try:
        env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    print(f"speed-up 2 vs 1 worker: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x on a quiet 2-core machine)")
    print(f"overhead per task: {100 * overhead:+.1f}% of a run ({run_time:.2f} s) (target <= "
          f"{100 * TARGET_OVERHEAD:.0f}%); empty-task round trip {1e3 * one['noop_round_trip']:.1f} ms = "
          f"{100 * trip:.2f}% of a run")
    print(f"load average: {env.get('loadavg_start')} -> {env.get('loadavg_end')}")
    payload = {
        "environment": env, "grid": {**sizes, "runs": len(configs)}, "serial_seconds": serial, "dask_1": one,
        "dask_2": two, "mean_run_seconds": run_time, "speedup_2_vs_1": speedup, "overhead_per_task": overhead,
        "noop_round_trip_fraction": trip,
        "targets": {"speedup_2_vs_1": TARGET_SPEEDUP, "overhead_per_task": TARGET_OVERHEAD},
    }
    out = args.json or _HERE / ("results-sweep-quick.json" if args.quick else "results-sweep.json")
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
