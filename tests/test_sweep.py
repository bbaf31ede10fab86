"""Grids on Dask (lqtheory.runs.grid): the task graph, bit-identical results to the serial loop, a worker
killed mid-run, failures reported while the other runs finish, executor resolution, GPU workers, and
two concurrent `lqtheory prune` processes sharing one run store.

One 2-worker LocalCluster (processes, forked from a fork server that imported torch once) serves the
module; its workers preload tests/_worker_hooks.py, which stalls one run when a test arms it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lqtheory.runs import ExperimentConfig, banks, dense, folder, grid, lease, load_run
from lqtheory.runs.grid import GridError, plan_grid, resolve, run_grid
from lqtheory.runs.grid.cluster import SharedCluster, gpu_worker_env, local_cluster

ROOT = Path(__file__).resolve().parent.parent
TINY = {"dataset": "digits", "model": "mlp-16-1-1-relu", "n_train": 300, "n_test": 120, "epochs": 1,
        "batch_size": 50, "lr": 0.1, "device": "cpu", "iterations": 3}


def tiny(method="lottery-ticket", **kw) -> ExperimentConfig:
    return ExperimentConfig(**{**TINY, "method": method, **kw})


GRID = [tiny(m, scope=s, seed=sd) for m, s in (("sap", "neuron"), ("lottery-ticket", "global")) for sd in (0, 1)]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("LQTHEORY_SCHEDULER", raising=False)
    monkeypatch.delenv("LQTHEORY_EXECUTOR", raising=False)


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hooks")


@pytest.fixture(scope="module")
def cluster(hook_dir):
    with local_cluster(2, announce=False, preload=[str(ROOT / "tests" / "_worker_hooks.py")],
                       env={"LQTHEORY_TEST_HOOK_DIR": str(hook_dir), "PYTHONPATH": str(ROOT)}) as c:
        yield c


@pytest.fixture(scope="module")
def serial_out(tmp_path_factory):
    """The grid run by the serial in-process loop with one thread: the reference."""
    out = tmp_path_factory.mktemp("serial")
    before = torch.get_num_threads()
    try:
        run_grid(GRID, out, executor="serial", threads=1)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def serial_reference(serial_out):
    return run_grid(GRID, serial_out, executor="serial", threads=1)  # loaded, not recomputed


def same_records(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns="wall_time"), b.drop(columns="wall_time"), check_exact=True)


# --------------------------------------------------------------------------------------------------
# The task graph


def test_plan_without_dense_stage(tmp_path, monkeypatch):
    monkeypatch.delattr(dense, "dense_id", raising=False)
    auto = tiny("sap", device="auto")  # names the same run folder as device="cpu" on a CPU-only machine
    plan = plan_grid([GRID[0], GRID[1], GRID[0], GRID[2]], tmp_path)
    assert [r.config for r in plan.runs] == GRID[:3] and plan.dense == ()
    assert [rid for _, rid in plan.order] == [c.run_id() for c in GRID[:3]]
    assert all(r.dense is None and r.run_id in r.key for r in plan.runs)
    assert len({r.key for r in plan.runs}) == 3
    assert plan_grid([GRID[0]], tmp_path / "other").runs[0].key != plan.runs[0].key  # another store
    if not torch.cuda.is_available():
        two = plan_grid([tiny("sap"), auto], tmp_path)
        assert len(two.runs) == 1 and len(two.order) == 2


def test_plan_with_dense_stage_makes_runs_depend_on_their_dense_task(tmp_path, monkeypatch):
    monkeypatch.setattr(dense, "dense_id", lambda cfg: f"dense-seed{cfg.seed}", raising=False)
    monkeypatch.setattr(dense, "ensure_dense", lambda cfg, out: Path(out), raising=False)
    configs = [tiny(m, scope=s, seed=sd) for m in ("sap", "random") for s in ("neuron", "global") for sd in (0, 1)]
    plan = plan_grid(configs, tmp_path)
    assert sorted(d.dense_id for d in plan.dense) == ["dense-seed0", "dense-seed1"]
    by_key = {d.key: d for d in plan.dense}
    for run in plan.runs:
        dense_task = by_key[run.dense]
        assert dense_task.dense_id == f"dense-seed{run.config.seed}"
        assert run.run_id in dense_task.runs
    assert sum(len(d.runs) for d in plan.dense) == len(plan.runs) == 8


def test_dense_tasks_run_once_and_before_the_runs_that_need_them(tmp_path, monkeypatch):
    from distributed import LocalCluster

    calls, lock = [], threading.Lock()

    def ensure_dense(cfg, out):
        with lock:
            calls.append(("dense", dense.dense_id(cfg)))
        time.sleep(0.2)  # a run that did not wait for it would overtake it
        path = Path(out) / "dense" / dense.dense_id(cfg)
        path.mkdir(parents=True)  # fails if trained twice
        return path

    class Done:
        def __init__(self, cfg):
            self.cfg = cfg

        def frame(self):
            return pd.DataFrame({"run_id": [self.cfg.run_id()], "seed": [self.cfg.seed], "wall_time": [0.0]})

    def run_bank(cfgs, out, **kwargs):
        done = []
        for cfg in cfgs:
            did = dense.dense_id(cfg)
            assert (Path(out) / "dense" / did).is_dir(), f"run {cfg.run_id()} started before its dense stage {did}"
            with lock:
                calls.append(("run", did))
            done.append(Done(cfg))
        return done

    monkeypatch.setattr(dense, "dense_id", lambda cfg: f"dense-seed{cfg.seed}", raising=False)
    monkeypatch.setattr(dense, "ensure_dense", ensure_dense, raising=False)
    monkeypatch.setattr(banks, "run_bank", run_bank)
    configs = [tiny(m, seed=sd) for m in ("sap", "random", "one-shot") for sd in (0, 1)]
    # threads in this process, so the stand-ins above are what the tasks call; banks of 2, so that a
    # bank can hold runs of two dense models (it waits for both)
    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as c:
        df = run_grid(configs, tmp_path, scheduler=c, progress=False, bank_size=2)
    assert df.run_id.tolist() == [cfg.run_id() for cfg in configs]
    assert sorted(c for c in calls if c[0] == "dense") == [("dense", "dense-seed0"), ("dense", "dense-seed1")]
    for did in ("dense-seed0", "dense-seed1"):
        assert calls.index(("dense", did)) < min(i for i, c in enumerate(calls) if c == ("run", did))


# --------------------------------------------------------------------------------------------------
# On a 2-worker LocalCluster


def test_dask_grid_is_bit_identical_to_the_serial_loop(cluster, serial_reference, serial_out, tmp_path):
    df = run_grid(GRID + GRID[:1], tmp_path, scheduler=cluster, progress=False)
    same_records(df, serial_reference)
    for cfg in GRID:
        res, ref = load_run(cfg.run_dir(tmp_path)), load_run(cfg.run_dir(serial_out))
        assert res.metadata["threads"] == 1 and res.metadata["platform"] == ref.metadata["platform"]
        assert res.metadata["mask_sha256"] == ref.metadata["mask_sha256"]  # byte-identical masks
        a, b = folder.load_checkpoint(res.run_dir), folder.load_checkpoint(ref.run_dir)
        assert all(torch.equal(a["latest"][k], b["latest"][k]) for k in a["latest"])  # identical weights
        log = lease.read_log(cfg.run_dir(tmp_path) / lease.LEASE_FILE)
        assert log[0]["pid"] != os.getpid()  # computed by a worker process, not here
    assert not any(p.name == lease.LEASE_FILE for p in tmp_path.rglob("*"))  # every claim released


def test_killed_worker_is_replaced_and_its_run_resumes_from_the_checkpoint(cluster, serial_reference, tmp_path,
                                                                          hook_dir):
    (hook_dir / "arm").touch()
    stalled = hook_dir / "stalled"
    outcome = {}

    def run():
        try:
            outcome["df"] = run_grid(GRID, tmp_path, scheduler=cluster, progress=False)
        except BaseException as err:  # noqa: BLE001 - re-raised below
            outcome["err"] = err

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not (stalled.is_file() and stalled.read_text().strip()):
            assert time.monotonic() < deadline and thread.is_alive(), "no run reached iteration 2"
            time.sleep(0.05)
        pid = int(stalled.read_text())
        os.kill(pid, signal.SIGKILL)  # the worker dies mid-run: iterations 0 and 1 are committed
    finally:
        thread.join(timeout=180)
        (hook_dir / "arm").unlink()
    assert not thread.is_alive()
    if "err" in outcome:
        raise outcome["err"]
    same_records(outcome["df"], serial_reference)
    logs = {cfg.run_id(): lease.read_log(cfg.run_dir(tmp_path) / lease.LEASE_FILE) for cfg in GRID}
    taken = {rid: log for rid, log in logs.items() if any(e["event"] == "took over" for e in log)}
    # the grid's 4 runs went as banks (one per worker); the killed worker's bank, and only it, was retried
    killed_bank = {rid for rid, log in logs.items() if log[0]["pid"] == pid}
    assert killed_bank and set(taken) == killed_bank, logs
    assert len(killed_bank) == 2  # 4 runs of one bank key, cut into one bank per worker of the 2
    for log in taken.values():
        over = next(i for i, e in enumerate(log) if e["event"] == "took over")
        assert log[over]["previous"]["pid"] == pid
        starts = [e["iteration"] for e in log if e["event"] == "start"]
        assert starts == [0, 2]  # started once from scratch, resumed once after the two committed iterations
        assert log[over + 1]["event"] == "start" and log[over + 1]["iteration"] == 2


def test_a_failing_run_is_reported_and_the_others_finish(cluster, tmp_path, capsys):
    bad = tiny("sap", n_train=100_000)  # more examples than digits has: fails inside the worker
    good = GRID[:2]
    with pytest.raises(GridError) as info:
        run_grid([good[0], bad, good[1]], tmp_path, scheduler=cluster, progress=False)
    err = info.value
    assert [f.run_id for f in err.failures] == [bad.run_id()]
    failure = err.failures[0]
    assert failure.config == bad and "n_train=100000" in failure.error and "subset" in failure.traceback
    assert sorted(err.frame.run_id.unique()) == sorted(c.run_id() for c in good)
    assert all(load_run(c.run_dir(tmp_path)).complete for c in good)
    assert f"run {bad.run_id()}" in capsys.readouterr().err  # reported as it failed, with its traceback


def test_local_cluster_environment_is_exported_up_front_and_restored(monkeypatch):
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(k, raising=False)
    with local_cluster(1, announce=False) as c:
        # already set when the context opens, before any worker has started: children see no race
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
        from distributed import Client

        with Client(c) as client:
            seen = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
        assert list(seen.values()) == [(None, "1")]  # no malloc trimming in workers (1.6-1.8x slower training)
    assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ)


def test_a_finished_grid_is_loaded_without_any_cluster(tmp_path, serial_reference):
    run_grid(GRID[:2], tmp_path, executor="serial", threads=1)
    # an address nobody listens on: nothing is sent because every run is finished
    df = run_grid(GRID[:2], tmp_path, scheduler="tcp://127.0.0.1:9", progress=False)
    same_records(df, serial_reference[serial_reference.run_id.isin([c.run_id() for c in GRID[:2]])]
                 .reset_index(drop=True))


# --------------------------------------------------------------------------------------------------
# Choosing the executor


def test_executor_resolution(monkeypatch):
    assert resolve(None, None) == ("dask", None, False)
    assert resolve(None, None, default="serial") == ("serial", None, False)
    assert resolve(None, "tcp://h:1", default="serial") == ("dask", "tcp://h:1", False)
    monkeypatch.setenv("LQTHEORY_SCHEDULER", "tcp://env:2")
    assert resolve(None, None, default="serial") == ("dask", "tcp://env:2", False)
    monkeypatch.setenv("LQTHEORY_EXECUTOR", "serial")
    assert resolve(None, None) == ("serial", "tcp://env:2", True)
    assert resolve("dask", None) == ("dask", "tcp://env:2", True)
    monkeypatch.setenv("LQTHEORY_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="LQTHEORY_EXECUTOR"):
        resolve(None, None)
    with pytest.raises(ValueError, match="executor"):
        resolve("pool", None)
    with pytest.raises(ValueError, match="serial"):
        resolve("serial", "tcp://h:1")


def test_run_grid_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        run_grid([], tmp_path)
    with pytest.raises(TypeError, match="ExperimentConfig"):
        run_grid(GRID[0], tmp_path)
    with pytest.raises(TypeError, match="ExperimentConfig"):
        run_grid([{"method": "sap"}], tmp_path)
    with pytest.raises(ValueError, match="workers"):
        run_grid(GRID, tmp_path, workers=0)
    with pytest.raises(ValueError, match="threads"):
        run_grid(GRID, tmp_path, threads=0)
    with pytest.raises(ValueError, match="workers"):
        run_grid(GRID, tmp_path, executor="serial", workers=2)


def test_run_experiments_without_a_scheduler_runs_in_process(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("lqtheory.runs.grid.executor._dask", lambda *a, **k: seen.append("dask"))
    monkeypatch.setattr("lqtheory.runs.grid.executor._serial", lambda configs, *a, **k: seen.append(len(configs)))
    grid.run_experiments(GRID + GRID[:1], tmp_path)
    assert seen == [4]  # nbval/Jupyter: no cluster of its own
    grid.run_experiments(GRID, tmp_path, scheduler="tcp://h:1")
    monkeypatch.setenv("LQTHEORY_SCHEDULER", "tcp://from-reproduce:1")
    grid.run_experiments(GRID, tmp_path)
    monkeypatch.setenv("LQTHEORY_EXECUTOR", "serial")
    grid.run_experiments(GRID, tmp_path)
    assert seen == [4, "dask", "dask", 4]


def test_shared_cluster_exports_its_choice_and_restores_the_environment(monkeypatch):
    with SharedCluster(scheduler="tcp://sched:8786") as grid:
        assert not grid.started and "LQTHEORY_SCHEDULER" not in os.environ
        assert "tcp://sched:8786" in grid.start()
        assert os.environ["LQTHEORY_SCHEDULER"] == "tcp://sched:8786"
    assert "LQTHEORY_SCHEDULER" not in os.environ
    with SharedCluster(executor="serial") as grid:
        grid.start()
        assert os.environ["LQTHEORY_EXECUTOR"] == "serial"
    assert "LQTHEORY_EXECUTOR" not in os.environ
    with pytest.raises(ValueError, match="workers"):
        SharedCluster(executor="serial", workers=2)


# --------------------------------------------------------------------------------------------------
# GPUs: one worker per device


def test_gpu_worker_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_worker_env(2) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert gpu_worker_env(2, visible="3, 5") == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    with pytest.raises(ValueError, match="lists 1"):
        gpu_worker_env(2, visible="4")
    with pytest.raises(ValueError, match="n_gpus"):
        gpu_worker_env(0)


def test_gpu_workers_each_see_their_own_device(monkeypatch):
    """The per-GPU cluster on any machine: each worker process gets its own CUDA_VISIBLE_DEVICES."""
    from distributed import Client

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with local_cluster(gpus=2, announce=False) as c, Client(c, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert sorted(seen.values()) == ["0", "1"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_grid_runs_one_worker_per_gpu(tmp_path):
    configs = [tiny("sap", device="cuda", seed=s) for s in range(2)]
    df = run_grid(configs, tmp_path, executor="dask", progress=False)
    assert sorted(df.run_id.unique()) == sorted(c.run_id() for c in configs)
    for cfg in configs:
        assert load_run(cfg.run_dir(tmp_path)).metadata["device_type"] == "cuda"


# --------------------------------------------------------------------------------------------------
# Two `lqtheory prune` processes, one configuration, one --out


def race_for_claim(held, argv: list[str], what: str) -> list[tuple[str, str]]:
    """Start two processes ``argv`` while ``held`` (an acquired claim) blocks them; once both wait, release
    it so they race for it. Returns their (stdout, stderr), after asserting both exited 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while sum(e["event"] == "waiting" for e in lease.read_log(held.path)) < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), f"{what} did not wait"
            time.sleep(0.05)
    finally:
        held.release()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    return outputs


def test_concurrent_prune_processes_compute_a_run_once(tmp_path):
    out = tmp_path / "runs"
    args = ["--dataset", "digits", "--model", "mlp-16-1-1-relu", "--method", "sap", "-T", "2", "-E", "1",
            "--n-train", "300", "--n-test", "120", "--batch-size", "50", "--lr", "0.1", "--device", "cpu",
            "--threads", "1", "--out", str(out), "--no-progress"]
    cfg = tiny("sap", iterations=2, scope="neuron")
    claim_path = cfg.run_dir(out) / lease.LEASE_FILE
    # Hold the run's claim, so both processes find it taken and must wait; then let them race for it.
    held = lease.lease_run(cfg.run_dir(out))
    held.acquire()
    outputs = race_for_claim(held, [sys.executable, "-m", "lqtheory", "prune", *args], "prune")
    tables = [[ln for ln in o.splitlines() if ln.strip()[:1].isdigit()] for o, _ in outputs]
    assert len(tables[0]) == 3 and tables[0] == tables[1]  # the same three rows, t = 0, 1, 2
    assert all("waiting for it" in e for _, e in outputs)
    log = lease.read_log(claim_path)
    assert [e["iteration"] for e in log if e["event"] == "start"] == [0]  # trained once, by one of them
    res = load_run(cfg.run_dir(out))
    assert res.complete and len(res.records) == 3 and not claim_path.exists()
    assert {p.name for p in cfg.run_dir(out).iterdir() if not p.name.startswith(".")} == {
        "config.json", "checkpoint.pt", "results.json", "timings.json", "mask_0.pt", "mask_1.pt", "mask_2.pt"}


def test_concurrent_processes_train_a_dense_model_once(tmp_path):
    out = tmp_path / "runs"
    cfg = tiny("sap")
    dense_dir = dense.dense_dir(cfg, out)
    claim_path = dense_dir.parent / f".{dense_dir.name}.claim"
    dense_dir.parent.mkdir(parents=True)
    code = (f"from lqtheory.runs import ExperimentConfig, ensure_dense\n"
            f"print(ensure_dense(ExperimentConfig(**{cfg.to_dict()!r}), {str(out)!r}, progress=False))")
    # Hold the artifact's claim, so both processes find it taken and must wait; then let them race for it.
    held = lease.lease(claim_path)
    held.acquire()
    outputs = race_for_claim(held, [sys.executable, "-c", code], "ensure_dense")
    assert [o.strip() for o, _ in outputs] == [str(dense_dir)] * 2
    assert [e["event"] for e in lease.read_log(claim_path)].count("trained") == 1  # one trained, one loaded
    assert not claim_path.exists() and not list(dense_dir.parent.glob(".tmp-*"))


# --------------------------------------------------------------------------------------------------
# `lqtheory reproduce`: one cluster, its address handed to the notebook kernels

GRID_NOTEBOOK = '''# %% [markdown]
# # 01_grid
#
# Claims [derived] for the tests of lqtheory.workbench.reproduce with a Dask cluster.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
seed = 0

# %%
from lqtheory.workbench.session import setup
PROFILES = {"ci": {}, "default": {}, "paper": {}}
run = setup("01_grid", globals(), profiles=PROFILES)

# %%
import os
from lqtheory.runs import lease
from lqtheory.runs import ExperimentConfig
from lqtheory.runs.grid import run_experiments
OUT = os.environ["GRID_OUT"]
TINY = dict(dataset="digits", model="mlp-16-1-1-relu", n_train=300, n_test=120, epochs=1, batch_size=50, lr=0.1,
            device="cpu", iterations=1)
configs = [ExperimentConfig(method="sap", seed=s, **TINY) for s in range(2)]
df = run_experiments(configs, OUT, threads=1)
pids = {lease.read_log(c.run_dir(OUT) / lease.LEASE_FILE)[0]["pid"] for c in configs}
print("scheduler given:", "LQTHEORY_SCHEDULER" in os.environ, "| rows:", len(df),
      "| computed in this kernel:", os.getpid() in pids)
run.claim("G1", measured={"rows": len(df)}, holds=len(df) == 4)
'''

GRID_REGISTRY = '''
[[claim]]
id = "G1"
notebook = "01_grid"
statement = "the grid ran"
provenance = "derived"
kind = "theorem"
'''


def test_reproduce_hands_one_cluster_to_the_notebooks(tmp_path, monkeypatch):
    import argparse
    import io

    import nbformat

    from lqtheory.workbench import reproduce
    from lqtheory.workbench.linter import percent_to_notebook

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(percent_to_notebook(GRID_NOTEBOOK), notebooks / "01_grid.ipynb")
    (notebooks / "claims.toml").write_text(GRID_REGISTRY)
    monkeypatch.setenv("GRID_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    parser = reproduce.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--notebooks-dir", str(notebooks), "--build-dir", str(tmp_path / "build"),
                              "--figures-dir", str(tmp_path / "figures"), "--profile", "ci", "--workers", "2"])
    out = io.StringIO()
    code = reproduce.run(args, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "grids: local Dask cluster, 2 worker(s)" in text
    executed = nbformat.read(tmp_path / "build" / "ci" / "01_grid.ipynb", as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "scheduler given: True | rows: 4 | computed in this kernel: False" in outputs
    streams = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"]
    assert not streams, streams  # nothing from Dask leaked into the notebook
    assert "LQTHEORY_SCHEDULER" not in os.environ  # restored after the reproduction


def _script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    path = tmp_path / "grid_script.py"
    path.write_text(body)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("LQTHEORY_EXECUTOR", None)
    env.pop("LQTHEORY_SCHEDULER", None)
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=150)


def test_an_unguarded_grid_script_gets_one_clear_error_not_a_hang(tmp_path):
    # issue #22 item 4: ~130 lines of nanny tracebacks, then a hang (workers re-import the script)
    result = _script(tmp_path, f"""
from lqtheory.runs import ExperimentConfig
from lqtheory.runs.grid import run_experiments
configs = [ExperimentConfig(**{{**{TINY!r}, "method": "sap", "seed": s}}) for s in (0, 1)]
run_experiments(configs, "runs", workers=2)
""")
    assert result.returncode == 1, result.stderr
    assert 'if __name__ == "__main__":' in result.stderr and "grid_script.py, line 5" in result.stderr
    assert "RuntimeError: " in result.stderr
    assert "distributed.nanny" not in result.stderr and len(result.stderr.splitlines()) < 40, result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_main_guard_is_recognised(tmp_path):
    result = _script(tmp_path, """
from lqtheory.runs.grid.cluster import unguarded_main_call
def inside():
    return unguarded_main_call()
print("top", unguarded_main_call() is not None)
if __name__ == "__main__":
    print("guarded", unguarded_main_call() is not None, inside() is not None)
""")
    assert result.stdout.split() == ["top", "True", "guarded", "False", "False"], result.stderr


def test_a_bad_scheduler_address_fails_fast_with_one_line(tmp_path, capsys):
    from lqtheory.cli import main

    with pytest.raises(SystemExit) as info:
        main(["prune", "--dataset", "digits", "--model", "mlp-8-1-1-relu", "--iterations", "1", "--epochs", "1",
              "--out", str(tmp_path / "runs"), "--scheduler", "not-an-address"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--scheduler: 'not-an-address' is not a Dask scheduler address" in err and "Traceback" not in err
    from lqtheory.runs.grid.cluster import check_address

    for good in ("tcp://127.0.0.1:8786", "10.0.0.5:8786", "tls://host.example:9000", "inproc://1.2.3/7/1",
                 "tcp://[::1]:8786"):
        assert check_address(good) == good
    for bad in ("not-an-address", "tcp://host", "http//x:1", "host:port"):
        with pytest.raises(ValueError):
            check_address(bad)
