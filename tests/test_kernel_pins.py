"""The math libraries' CPU code paths are pinned before torch initialises (issue #20 item 4).

The end-to-end test emulates an older CPU (MKL limited to SSE4.2, ATen's scalar kernels) and requires
``lqtheory prune`` to write the same ``results.json`` bytes as on this CPU; the unpinned control run
under the same emulation must differ, or the test could not fail.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lqtheory.common.kernels import KERNEL_PINS, kernel_pins, pin_kernels, pins_enabled
from lqtheory.common.vocabulary import ENV_PIN_KERNELS

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86 = pytest.mark.skipif(not X86, reason="the pins apply to x86-64 only")

EMULATED = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"}  # an older CPU
PRUNE = ["--dataset", "digits", "--model", "mlp-64-1-2-relu", "--lr", "0.2", "--batch-size", "64",
         "--iterations", "1", "--epochs", "1", "--dense-epochs", "2", "--no-progress"]


@needs_x86
def test_pin_kernels_sets_and_overrides_the_variables():
    env = {"ATEN_CPU_CAPABILITY": "default", "OTHER": "x"}
    assert pin_kernels(env) == KERNEL_PINS
    assert {k: env[k] for k in KERNEL_PINS} == KERNEL_PINS and env["OTHER"] == "x"


def test_opting_out_leaves_the_environment_alone():
    env = {ENV_PIN_KERNELS: "0", "ATEN_CPU_CAPABILITY": "default"}
    assert pin_kernels(env) == {} and env == {ENV_PIN_KERNELS: "0", "ATEN_CPU_CAPABILITY": "default"}
    assert not pins_enabled(env)


def test_a_malformed_opt_out_is_an_error():
    with pytest.raises(ValueError, match=ENV_PIN_KERNELS):
        pins_enabled({ENV_PIN_KERNELS: "no"})


@needs_x86
def test_importing_lqtheory_pins_this_process():
    assert kernel_pins() == {"pinned": True, **KERNEL_PINS}
    probe = "import lqtheory, torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", probe],
                         env={**os.environ, **EMULATED}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"  # the emulated "default" is overridden


def _prune(out: Path, extra_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_PINS and k != ENV_PIN_KERNELS}
    subprocess.run([sys.executable, "-m", "lqtheory", "prune", *PRUNE, "--out", str(out)], env={**env, **extra_env},
                   check=True, capture_output=True, text=True)
    (results,) = out.glob("*/results.json")
    return {"bytes": results.read_bytes(), "body": json.loads(results.read_text())}


@needs_x86
def test_prune_writes_identical_results_on_an_emulated_older_cpu(tmp_path):
    here = _prune(tmp_path / "here", {})
    older = _prune(tmp_path / "older", EMULATED)
    assert here["bytes"] == older["bytes"]
    assert here["body"]["metadata"]["kernel_pins"]["pinned"] is True
    assert "wall_time" not in here["body"]["records"][-1]  # clock readings live in timings.json
    unpinned = _prune(tmp_path / "unpinned", {**EMULATED, ENV_PIN_KERNELS: "0"})
    assert unpinned["body"]["metadata"]["kernel_pins"]["pinned"] is False
    # the control: without the pins the emulated CPU computes other numbers (so the check above can fail)
    assert unpinned["body"]["records"] != here["body"]["records"]


def test_load_run_merges_the_wall_times_back(tmp_path):
    from lqtheory.runs import load_run

    out = tmp_path / "runs"
    subprocess.run([sys.executable, "-m", "lqtheory", "prune", *PRUNE, "--out", str(out)], check=True,
                   capture_output=True, text=True)
    (run_dir,) = [p for p in out.iterdir() if (p / "results.json").is_file()]
    assert (run_dir / "timings.json").is_file()
    frame = load_run(run_dir).frame()
    assert (frame.wall_time >= 0).all() and len(frame) == 2
