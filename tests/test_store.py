"""Run-folder leases (lqtheory.runs.lease): exclusive, waited for, taken over when the owner is dead or silent,
never committed through once lost; and run_experiment computing a run once when asked twice at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lqtheory.runs import lease

LEASE_PY = Path(lease.__file__)


def helper(code: str) -> subprocess.Popen:
    """A Python process that loads lease.py alone (no torch: starts in a fraction of a second)."""
    prelude = textwrap.dedent(f"""
        import importlib.util, sys, time
        spec = importlib.util.spec_from_file_location("store_alone", {str(LEASE_PY)!r})
        lease = importlib.util.module_from_spec(spec); sys.modules[spec.name] = lease; spec.loader.exec_module(lease)
    """)
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def events(path) -> list[str]:
    return [e["event"] for e in lease.read_log(path)]


def test_claim_is_exclusive_and_released(tmp_path):
    path = tmp_path / "run" / ".claim"
    with lease.lease(path, label="run") as held:
        info = lease.read_lease(path)
        assert info.owner == held.token and info.pid == os.getpid() and info.label == "run"
        assert lease.Lease(path, wait=False).acquire() is False  # a live owner: not stale, not ours
        held.check()
    assert not path.exists() and lease.read_lease(path) is None
    assert events(path) == ["acquired", "released"]
    with pytest.raises(ValueError, match="heartbeat"):
        lease.Lease(path, heartbeat=5, stale_after=5)


def test_waiter_gets_the_claim_when_the_owner_releases_it(tmp_path):
    path = tmp_path / ".claim"
    proc = helper(f"""
        with lease.lease({str(path)!r}):
            print("held", flush=True)
            time.sleep(1.0)
    """)
    assert proc.stdout.readline().strip() == "held"
    seen = []
    with lease.lease(path, on_wait=seen.append, poll=0.05):
        pass
    assert proc.wait(timeout=20) == 0
    assert len(seen) == 1 and seen[0].pid == proc.pid  # it waited for the other process, then got it
    log = lease.read_log(path)
    assert [e["event"] for e in log] == ["acquired", "waiting", "released", "acquired", "released"]
    assert log[1]["pid"] == os.getpid() and log[2]["pid"] == proc.pid


def test_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    path = tmp_path / ".claim"
    proc = helper(f"""
        import os
        lease.lease({str(path)!r}).acquire()
        os._exit(0)   # dies holding the claim (like a killed worker)
    """)
    assert proc.wait(timeout=20) == 0
    dead = lease.read_lease(path)
    assert dead.pid == proc.pid
    start = time.monotonic()
    with lease.lease(path, stale_after=3600, heartbeat=1) as held:  # no waiting on the heartbeat
        assert time.monotonic() - start < 60
        took = lease.read_log(path)[-1]
        assert took["event"] == "took over" and took["previous"]["pid"] == proc.pid
        assert lease.read_lease(path).owner == held.token


def test_claim_left_by_an_earlier_process_with_our_pid_is_stale(tmp_path):
    path = tmp_path / ".claim"
    other = lease.Lease(path)
    path.write_bytes(other._body())  # our pid, a token no live claim of this process holds
    with lease.lease(path, wait=False, stale_after=3600, heartbeat=1) as held:
        assert held.held and events(path)[-1] == "took over"


def foreign_claim(path: Path, beat: int) -> None:
    body = {"owner": "elsewhere", "pid": 1, "host": "another-machine", "pidns": None, "started": 0.0,
            "heartbeat": 0.0, "beat": beat}
    tmp = path.with_name("foreign.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def test_remote_claim_is_stale_only_when_its_heartbeat_stops(tmp_path):
    path = tmp_path / ".claim"
    foreign_claim(path, 0)
    stop = threading.Event()

    def beating():  # a live owner on another machine: its heartbeat keeps changing the file
        beat = 0
        while not stop.wait(0.1):
            beat += 1
            foreign_claim(path, beat)

    thread = threading.Thread(target=beating)
    thread.start()
    try:
        with pytest.raises(lease.LeaseTimeout, match="another-machine"):
            lease.Lease(path, timeout=1.5, stale_after=0.6, heartbeat=0.2, poll=0.05).acquire()
    finally:
        stop.set()
        thread.join()
    assert lease.read_lease(path).owner == "elsewhere"  # never taken from a live owner
    # the heartbeat stopped: taken over once the content has not changed for stale_after seconds
    start = time.monotonic()
    with lease.lease(path, stale_after=0.6, heartbeat=0.2, poll=0.05) as held:
        assert time.monotonic() - start >= 0.6
        assert lease.read_lease(path).owner == held.token
        assert lease.read_log(path)[-1]["previous"]["host"] == "another-machine"


def test_heartbeat_refreshes_the_claim(tmp_path):
    path = tmp_path / ".claim"
    with lease.lease(path, heartbeat=0.05, stale_after=1.0):
        first = lease.read_lease(path)
        wait_for(lambda: lease.read_lease(path).beat >= first.beat + 2, what="two heartbeats")
        later = lease.read_lease(path)
        assert later.owner == first.owner and later.heartbeat >= first.heartbeat


def test_lost_claim_stops_commits_and_is_not_released_over_the_new_owner(tmp_path):
    path = tmp_path / ".claim"
    held = lease.lease(path, heartbeat=0.05, stale_after=1.0)
    held.acquire()
    foreign_claim(path, 0)  # taken over by someone who judged us dead
    with pytest.raises(lease.LeaseLostError, match="another-machine"):
        held.check()
    held.release()
    assert lease.read_lease(path).owner == "elsewhere"  # the new owner's claim is left alone
    assert "lost" in events(path)


def test_run_experiment_asked_twice_at_once_computes_once(tmp_path):
    import torch

    from lqtheory.runs import ExperimentConfig, run_experiment

    cfg = ExperimentConfig(dataset="digits", model="mlp-16-1-1-relu", method="lottery-ticket", iterations=2,
                           epochs=1, n_train=300, n_test=120, batch_size=50, lr=0.1, device="cpu")
    results, errors = [], []

    def worker():
        try:
            results.append(run_experiment(cfg, tmp_path))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    assert not errors, errors
    assert results[0].complete and results[0].records == results[1].records
    log = lease.read_log(cfg.run_dir(tmp_path) / lease.LEASE_FILE)
    starts = [e for e in log if e["event"] == "start"]
    assert len(starts) == 1 and starts[0]["iteration"] == 0  # trained once; the other waited and loaded
    assert not (cfg.run_dir(tmp_path) / lease.LEASE_FILE).exists()


def test_a_garbage_claim_file_is_taken_over_without_waiting_a_minute(tmp_path):
    # issue #22 6b: an unreadable .claim was judged by its (never changing) heartbeat: a silent 60 s stall
    path = tmp_path / "run" / ".claim"
    path.parent.mkdir()
    path.write_bytes(b"\x00garbage, not a claim")
    with lease.lease(path, timeout=10, poll=0.05) as c:  # old code: ClaimTimeout after 10 s
        assert c.held
    log = lease.read_log(path)
    took = [e for e in log if e["event"] == "took over"]
    assert took and took[0]["previous"] == "unreadable claim file"
