"""Preloaded into the Dask workers of tests/test_sweep.py (distributed's ``preload`` option).

Inactive unless ``$LQTHEORY_TEST_HOOK_DIR/arm`` exists. When armed, the first bank (of one run or
several, :mod:`lqtheory.runs.banks`) to start training iteration 2 writes this worker's pid into
``<dir>/stalled`` and stalls, so the test can kill the
worker process mid-run (iterations 0 and 1 committed); every later call, including the retried task on
the restarted or the other worker, trains normally.
"""

import os
import time
from pathlib import Path

from lqtheory.runs import banks, loop

HOOK_DIR = Path(os.environ["LQTHEORY_TEST_HOOK_DIR"])
_train = getattr(loop, "_unhooked_train_bank", loop.train_bank)  # idempotent: preload may run twice
loop._unhooked_train_bank = _train


def _stall_once() -> None:
    marker = HOOK_DIR / "stalled"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(300)  # until the test kills this process


def train_bank(*args, **kwargs):
    if kwargs.get("desc") == "iteration 2" and (HOOK_DIR / "arm").exists():
        _stall_once()
    return _train(*args, **kwargs)


loop.train_bank = banks.train_bank = train_bank
