"""The math libraries' CPU code paths, pinned before torch initialises (common room).

MKL and ATen pick kernels per CPU (AVX-512, AMX, AVX2...), and kernels of different widths sum in
different orders: the same training gives different weights, and so different figures and verdicts,
on two x86-64 machines. :func:`pin_kernels` sets, before torch is imported,

* ``ATEN_CPU_CAPABILITY=avx2``: ATen's vectorised kernels at AVX2 width;
* ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility, AVX2 code path;
* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN (mkldnn) kernels at most AVX2,

so fp32 results are bit-identical on every x86-64 CPU with AVX2 (threads: the grids' workers and
``lqtheory prune`` run single-threaded). They override values the environment already has (an emulated
``ATEN_CPU_CAPABILITY=default`` must not change the numbers either). Cost, measured: about 6% on fp32
training; bfloat16 products lose AMX (see README). ``LQTHEORY_PIN_KERNELS=0`` leaves everything as the
machine chooses. Other architectures (aarch64) are left alone: these variables do not apply there.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings

from lqtheory.common.vocabulary import ENV_PIN_KERNELS

__all__ = ["KERNEL_PINS", "check_pinned", "kernel_pins", "pin_kernels", "pins_enabled"]

#: The variables :func:`pin_kernels` sets and their values.
KERNEL_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

_X86 = ("x86_64", "amd64", "x86-64", "i686", "i386")


def pins_enabled(environ=None) -> bool:
    """Whether this process pins the kernels: on x86-64, unless ``LQTHEORY_PIN_KERNELS=0``."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_PIN_KERNELS, "1").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"{ENV_PIN_KERNELS} must be 0 or 1, got {value!r}")
    return value != "0" and platform.machine().lower() in _X86


def pin_kernels(environ=None) -> dict[str, str]:
    """Set :data:`KERNEL_PINS` in ``environ`` (default ``os.environ``) when :func:`pins_enabled`; returns
    what was set. Child processes (Dask workers, notebook kernels) inherit the environment, and each
    pins again when it imports lqtheory."""
    environ = os.environ if environ is None else environ
    if not pins_enabled(environ):
        return {}
    environ.update(KERNEL_PINS)
    return dict(KERNEL_PINS)


def kernel_pins() -> dict:
    """What a run records about the code paths: whether they were pinned, and the variables' values."""
    pinned = pins_enabled() and all(os.environ.get(k) == v for k, v in KERNEL_PINS.items())
    return {"pinned": pinned, **{k: os.environ.get(k) for k in KERNEL_PINS}}


def check_pinned() -> None:
    """Warn when torch already chose its kernels before the pins were set (torch imported and used before
    lqtheory): ATen's capability is fixed at its first dispatch, and the numbers may depend on this CPU."""
    if not pins_enabled() or "torch" not in sys.modules:
        return
    import torch

    chosen = torch.backends.cpu.get_cpu_capability()  # reads ATEN_CPU_CAPABILITY unless already fixed
    if chosen.lower() != KERNEL_PINS["ATEN_CPU_CAPABILITY"]:
        warnings.warn(
            f"torch ran {chosen} kernels before lqtheory was imported, so its code paths are not pinned: import "
            f"lqtheory first, or set {', '.join(f'{k}={v}' for k, v in KERNEL_PINS.items())} in the environment, "
            f"for numbers that do not depend on this CPU ({ENV_PIN_KERNELS}=0 silences this)",
            RuntimeWarning, stacklevel=3)
