"""Run-folder leases (part of the runs room): one process at a time computes a run folder (or a dense
artifact), safely across processes and machines that share the store.

A *lease* (not to be confused with a paper's claim, :mod:`lqtheory.workbench.claims`) is an
exclusive lock file (``<run_dir>/.claim``: the on-disk name predates the word) created atomically
(``os.link`` of a fully written temporary file, which fails if the lease exists; ``O_EXCL`` where
links are not supported).
It names its owner: a random token, the process id, the host name and the PID namespace, the time it
was taken and a heartbeat the owner refreshes every :data:`HEARTBEAT_SECONDS` seconds from a
background thread.

Someone who asks for a leased run waits (polling) until the owner releases it, then looks again: a
finished run is loaded, an unfinished one is leased and resumed from its last checkpoint. A lease is
*stale*, and is taken over, when

* its owner runs on the same host (same host name and PID namespace) and its process is gone (a
  killed Dask worker, a crashed ``lqtheory prune``): taken over at once;
* otherwise (another machine), when its content (the heartbeat) has not changed for
  :data:`STALE_SECONDS` seconds *as seen by the waiter's own monotonic clock*, so clocks of different
  machines never need to agree.

Taking over, heart-beating and releasing go through a short-lived second lock file (``.claim.break``)
so that a takeover never removes a lease that was refreshed after it was judged stale. An owner that
finds its lease gone or replaced (it stalled for longer than :data:`STALE_SECONDS` and was taken over)
stops: :meth:`Lease.check` raises :class:`LeaseLostError` before the next commit, so two writers never
commit into one folder.

Every event (acquired, waited, took over, released, lost, plus notes such as the iteration a run
started from) is appended as one JSON line to ``<lease file>.log`` (``<run_dir>/.claim.log``): a
trace of who computed what.

Requirements: every process using a store must see it at the same path on a file system with atomic
``rename``/``link``/``O_EXCL`` (local disks; NFSv3+, Lustre, GPFS, BeeGFS on a cluster). Host names
must tell machines apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LEASE_FILE",
    "HEARTBEAT_SECONDS",
    "STALE_SECONDS",
    "Lease",
    "LeaseInfo",
    "LeaseLostError",
    "LeaseTimeout",
    "lease",
    "lease_run",
    "read_lease",
    "read_log",
]

LEASE_FILE = ".claim"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
_BREAK_STALE_SECONDS = 10.0  # the break lock is held for milliseconds; a dead holder is cleared after this
#: a claim file that is not a claim (garbage, truncated) and stays so this long is taken over: a writer
#: without os.link (O_EXCL fallback) fills its file within milliseconds
UNREADABLE_STALE_SECONDS = 2.0

_LIVE: set[str] = set()  # tokens of the leases this process holds or is acquiring right now
_LIVE_LOCK = threading.Lock()


class LeaseLostError(RuntimeError):
    """This process's lease was taken over (it looked dead to another process); stop writing."""


class LeaseTimeout(TimeoutError):
    """A lease held by a live owner was not released within the time asked for."""


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


_HOST = socket.gethostname()
_PIDNS = _pid_namespace()


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file says about its owner."""

    owner: str
    pid: int
    host: str
    pidns: int | None
    started: float
    heartbeat: float
    beat: int
    label: str = ""

    @classmethod
    def parse(cls, raw: bytes) -> LeaseInfo | None:
        try:
            body = json.loads(raw)
            return cls(owner=str(body["owner"]), pid=int(body["pid"]), host=str(body["host"]),
                       pidns=body.get("pidns"), started=float(body["started"]), heartbeat=float(body["heartbeat"]),
                       beat=int(body["beat"]), label=str(body.get("label", "")))
        except (ValueError, KeyError, TypeError):
            return None  # being written (O_EXCL fallback) or foreign: judged by observation only

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

    def same_machine(self) -> bool:
        """The owner's PID can be checked here: same host name and same PID namespace."""
        return self.host == _HOST and self.pidns == _PIDNS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process not yet reaped by its parent is a zombie: dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _read_raw(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_lease(path: str | os.PathLike) -> LeaseInfo | None:
    """The owner of the lease file ``path`` (``<run_dir>/.claim``), or None when free or unreadable."""
    raw = _read_raw(Path(path))
    return LeaseInfo.parse(raw) if raw is not None else None


def read_log(path: str | os.PathLike) -> list[dict]:
    """The events appended to the lease's log (``<lease file>.log``), oldest first."""
    log = Path(str(path) + ".log")
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; readers never see it half written."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: O_EXCL (a reader may briefly see an empty file)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _break_lock(path: Path) -> Iterator[None]:
    """The short critical section in which a lease is judged, replaced or removed."""
    lock = path.with_name(path.name + ".break")
    body = json.dumps({"pid": os.getpid(), "host": _HOST, "pidns": _PIDNS}).encode()
    seen, since = None, time.monotonic()
    while not _create_exclusive(lock, body):
        raw = _read_raw(lock)
        if raw is None:
            continue
        if raw != seen:
            seen, since = raw, time.monotonic()
        try:
            holder = json.loads(raw)
            dead = holder["host"] == _HOST and holder.get("pidns") == _PIDNS and not _pid_alive(int(holder["pid"]))
        except (ValueError, KeyError, TypeError):
            dead = False
        if dead or time.monotonic() - since > _BREAK_STALE_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                if _read_raw(lock) == raw:
                    lock.unlink()
            continue
        time.sleep(0.005)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


class Lease:
    """An exclusive lease on ``path`` (a lock file). Use as a context manager, or :meth:`acquire` /
    :meth:`release`.

    ``wait``: block while a live owner holds it (else :meth:`acquire` returns False); ``timeout``:
    seconds to wait at most (:class:`LeaseTimeout`), None for no limit; ``poll``: seconds between
    looks; ``on_wait(info)``: called once when the lease is found held by a live owner;
    ``heartbeat``/``stale_after``: see the module docstring. ``label`` names the lease in its file.
    """

    def __init__(self, path: str | os.PathLike, *, wait: bool = True, timeout: float | None = None,
                 poll: float = 0.2, heartbeat: float = HEARTBEAT_SECONDS, stale_after: float = STALE_SECONDS,
                 on_wait: Callable[[LeaseInfo | None], None] | None = None, label: str = ""):
        if heartbeat <= 0 or stale_after <= heartbeat:
            raise ValueError(f"need 0 < heartbeat < stale_after, got heartbeat={heartbeat}, stale_after={stale_after}")
        if poll <= 0:
            raise ValueError(f"poll must be > 0, got {poll}")
        self.path = Path(path)
        self.wait, self.timeout, self.poll = wait, timeout, poll
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.on_wait, self.label = on_wait, label
        self.token = uuid.uuid4().hex
        self.started = 0.0
        self._beat = 0
        self._held = False
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # file content ----------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return json.dumps({"owner": self.token, "pid": os.getpid(), "host": _HOST, "pidns": _PIDNS,
                           "started": self.started, "heartbeat": time.time(), "beat": self._beat,
                           "label": self.label}).encode()

    def log(self, event: str, **fields) -> None:
        """Append one event to the lease's log (best effort: the log is a trace, not a commit point)."""
        line = json.dumps({"event": event, "owner": self.token, "pid": os.getpid(), "host": _HOST,
                           "time": time.time(), **fields}, default=str)
        with contextlib.suppress(OSError), open(str(self.path) + ".log", "a") as fh:
            fh.write(line + "\n")

    # acquiring -------------------------------------------------------------------------------------
    def _stale(self, info: LeaseInfo | None, unchanged_for: float) -> bool:
        if info is not None and info.same_machine():
            if info.pid == os.getpid():
                with _LIVE_LOCK:
                    return info.owner not in _LIVE  # left by an earlier process that had our pid
            return not _pid_alive(info.pid)
        if info is None:  # unreadable: no owner can ever refresh it into a heartbeat
            return unchanged_for > min(UNREADABLE_STALE_SECONDS, self.stale_after)
        return unchanged_for > self.stale_after

    def acquire(self) -> bool:
        if self._held:
            raise RuntimeError(f"lease {self.path} is already held by this object")
        # Registered before our lease file can exist: another thread of this process that reads it must
        # never judge it left over by an earlier process with our pid (and take it over).
        with _LIVE_LOCK:
            _LIVE.add(self.token)
        won = False
        try:
            won = self._take()
            return won
        finally:
            if not won:
                with _LIVE_LOCK:
                    _LIVE.discard(self.token)

    def _take(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        seen, since, waited = None, time.monotonic(), False
        while True:
            self.started = time.time()
            if _create_exclusive(self.path, self._body()):
                self._start("acquired", waited=waited)
                return True
            raw = _read_raw(self.path)
            if raw is None:
                continue  # released between our two looks
            if raw != seen:
                seen, since = raw, time.monotonic()
            info = LeaseInfo.parse(raw)
            if self._stale(info, time.monotonic() - since):
                with _break_lock(self.path):
                    taken = _read_raw(self.path) == raw
                    if taken:
                        self.path.unlink()
                        taken = _create_exclusive(self.path, self._body())
                if taken:
                    previous = ("unreadable claim file" if info is None
                                else {"owner": info.owner, "pid": info.pid, "host": info.host})
                    self._start("took over", previous=previous, waited=waited)
                    return True
                continue
            if not self.wait:
                return False
            if not waited:
                waited = True
                self.log("waiting", holder=None if info is None else info.describe())
                if self.on_wait is not None:
                    self.on_wait(info)
            if deadline is not None and time.monotonic() > deadline:
                raise LeaseTimeout(f"{self.path} is still held by "
                                   f"{info.describe() if info else 'an unknown owner'} after {self.timeout}s")
            time.sleep(self.poll)

    def _start(self, event: str, **fields) -> None:
        self._held, self._lost = True, False
        self.log(event, **fields)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat_loop, name=f"lease-heartbeat {self.path}", daemon=True)
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with _break_lock(self.path):
                info = read_lease(self.path)
                if info is None or info.owner != self.token:
                    self._lost = True
                    return
                self._beat += 1
                tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
                tmp.write_bytes(self._body())
                os.replace(tmp, self.path)

    # holding ---------------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._held

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless this lease is still ours (call before every commit)."""
        if not self._held:
            raise LeaseLostError(f"{self.path} is not held")
        info = read_lease(self.path)
        if self._lost or info is None or info.owner != self.token:
            self._lost = True
            holder = info.describe() if info is not None else "nobody"
            self.log("lost", holder=holder)
            raise LeaseLostError(f"{self.path} was taken over (now held by {holder}): this process stalled "
                                 f"for more than {self.stale_after:g}s; its work is left to the new owner")

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _break_lock(self.path):
            info = read_lease(self.path)
            if info is not None and info.owner == self.token:
                self.path.unlink()
        with _LIVE_LOCK:
            _LIVE.discard(self.token)
        self._held = False
        self.log("released")

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lease(path: str | os.PathLike, **options) -> Lease:
    """A :class:`Lease` on the lock file ``path`` (not yet acquired: use ``with lease(path) as c:``)."""
    return Lease(path, **options)


def lease_run(run_dir: str | os.PathLike, **options) -> Lease:
    """A :class:`Lease` on a run folder: the lock file ``<run_dir>/.claim`` (the folder is created)."""
    run_dir = Path(run_dir)
    options.setdefault("label", run_dir.name)
    return Lease(run_dir / LEASE_FILE, **options)
