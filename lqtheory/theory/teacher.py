"""Teacher networks of experiment E1: random ReLU MLPs whose rows have a chosen tail heaviness.

Every row of every layer (the scalar output layer included) is ``w_{j,i} = c a_i / Σ_k |a_k|`` with
``a_i`` i.i.d. Normal, Student-t (``df``) or Cauchy, so ``Σ_i |w_{j,i}| = c`` for every row; biases are
N(0, 1); inputs ``x ~ N(0, I_p)`` [paper: draft simulation section, E1]. Heavier tails concentrate a row's
ℓ1 mass on few entries, i.e. make it softly sparser: a higher teacher sparsity index
``TSI = ||w||_1 / ||w||_q`` (see :func:`lqtheory.theory.norms.teacher_sparsity_index`).

Teachers are drawn on the CPU in float64 from a seeded ``torch.Generator`` and then moved to the
requested device and dtype, so the same seed gives the same teacher on every device.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import scipy.special
import torch
from torch import nn

from lqtheory.theory.norms import teacher_sparsity_index

__all__ = [
    "DISTRIBUTIONS",
    "Teacher",
    "TeacherTrace",
    "make_teacher",
    "sample_teacher_data",
    "teacher_tsi",
    "draw_rows",
]

DISTRIBUTIONS = ("normal", "student-t", "cauchy")
_ALIASES = {
    "normal": "normal",
    "gaussian": "normal",
    "student-t": "student-t",
    "student_t": "student-t",
    "studentt": "student-t",
    "t": "student-t",
    "cauchy": "cauchy",
}


def _generator(seed) -> torch.Generator:
    """A CPU generator from an int seed or a ``torch.Generator`` (used as given)."""
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError("seed generator must be a CPU torch.Generator (teachers are drawn on the CPU)")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _distribution(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"distribution must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS} (or an alias), got {name!r}")
    return _ALIASES[key]


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value:g}")
    return value


def draw_rows(shape, distribution: str = "normal", df: float = 3.0, generator=None) -> torch.Tensor:
    """I.i.d. draws ``a`` of the named distribution, float64 on the CPU, the whole block at once.

    Student-t uses the inverse CDF (``scipy.special.stdtrit``) of seeded uniforms, so any real
    ``df > 0`` is exact and reproducible; Cauchy uses ``Tensor.cauchy_`` with the same generator.
    """
    dist = _distribution(distribution)
    g = _generator(0 if generator is None else generator)
    if dist == "normal":
        return torch.randn(shape, generator=g, dtype=torch.float64)
    if dist == "cauchy":
        return torch.empty(shape, dtype=torch.float64).cauchy_(generator=g)
    df = _positive(df, "df")
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    u = u.clamp(min=torch.finfo(torch.float64).tiny)  # rand can return exactly 0 (the -inf quantile)
    return torch.from_numpy(scipy.special.stdtrit(df, u.numpy()))


@dataclass
class TeacherTrace:
    """One forward pass: ``pre[l]`` the pre-activations of layer l+1 (``pre[-1]`` the output, (n,)),
    ``post[l]`` the outputs of layer l with ``post[0] = x`` (length = depth + 1)."""

    pre: list[torch.Tensor]
    post: list[torch.Tensor]


@dataclass
class Teacher:
    """A ReLU MLP ``x -> W_1 -> ReLU -> ... -> W_L -> ReLU -> V -> y`` with a scalar output.

    ``weights[l]`` has shape ``(out, in)`` like ``nn.Linear.weight``; ``weights[-1]`` is the output row
    ``(1, width)``. ``depth`` counts hidden layers.
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    c: float = 1.0
    distribution: str = "normal"
    df: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return len(self.weights) - 1

    @property
    def input_dim(self) -> int:
        return self.weights[0].shape[1]

    @property
    def widths(self) -> list[int]:
        return [w.shape[0] for w in self.weights[:-1]]

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point torch.Tensor")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must have shape (n, {self.input_dim}), got {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)

    def hidden(self, x: torch.Tensor) -> TeacherTrace:
        """All pre-activations and activations on inputs ``x (n, input_dim)``."""
        h = self._check_x(x)
        pre, post = [], [h]
        for W, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            a = torch.addmm(b, h, W.T)
            pre.append(a)
            h = torch.relu(a)
            post.append(h)
        pre.append(torch.addmm(self.biases[-1], h, self.weights[-1].T).squeeze(1))
        return TeacherTrace(pre, post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher output ``(n,)``."""
        return self.hidden(x).pre[-1]

    __call__ = forward

    def to_module(self) -> nn.Sequential:
        """The same network as ``nn.Sequential(Linear, ReLU, ..., Linear)``; its output is ``(n, 1)``."""
        return relu_mlp_module(self.weights, self.biases)

    def to(self, device=None, dtype=None) -> Teacher:
        """A copy on another device / dtype."""
        move = dict(device=device, dtype=dtype)
        return Teacher(
            [w.to(**move) for w in self.weights], [b.to(**move) for b in self.biases],
            self.c, self.distribution, self.df, dict(self.meta),
        )


def make_teacher(
    input_dim: int = 20,
    depth: int = 5,
    width: int | Sequence[int] = 100,
    c: float = 1.0,
    distribution: str = "normal",
    df: float = 3.0,
    seed: int | torch.Generator = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Teacher:
    """Draw an E1 teacher [paper]: rows ``w_{j,i} = c a_i / Σ_k |a_k|``, biases N(0, 1), ReLU, scalar output.

    ``width`` is one int (equal widths) or one int per hidden layer. ``df`` is used by Student-t only.
    ``seed``: an int or a CPU ``torch.Generator`` (consumed). Drawn in float64 on the CPU, then moved.
    """
    for name, v in (("input_dim", input_dim), ("depth", depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if isinstance(width, int) and not isinstance(width, bool):
        widths = [width] * depth
    else:
        widths = list(width)
        if len(widths) != depth:
            raise ValueError(f"width must be an int or have one entry per hidden layer ({depth}), got {len(widths)}")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be ints >= 1, got {widths}")
    c = _positive(c, "c")
    dist = _distribution(distribution)
    df = _positive(df, "df") if dist == "student-t" else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    g = _generator(seed)
    weights, biases = [], []
    fan_in = input_dim
    for out in [*widths, 1]:
        a = draw_rows((out, fan_in), dist, 3.0 if df is None else df, g)
        weights.append(c * a / a.abs().sum(1, keepdim=True))
        biases.append(torch.randn(out, generator=g, dtype=torch.float64))
        fan_in = out
    teacher = Teacher(weights, biases, c, dist, df, {"seed": seed if isinstance(seed, int) else None})
    return teacher.to(device=torch.device(device), dtype=dtype)


def sample_teacher_data(
    teacher: Teacher, n: int, seed: int | torch.Generator = 0, noise_std: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x ~ N(0, I_p)`` ``(n, p)`` and targets ``y = teacher(x) + noise_std * N(0, 1)`` ``(n,)``.

    Drawn on the CPU in float64 from the seed, then moved to the teacher's device and dtype.
    """
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not (
        math.isfinite(noise_std) and noise_std >= 0
    ):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    g = _generator(seed)
    x = torch.randn(n, teacher.input_dim, generator=g, dtype=torch.float64)
    noise = torch.randn(n, generator=g, dtype=torch.float64) * noise_std
    x = x.to(device=teacher.device, dtype=teacher.dtype)
    y = teacher(x) + noise.to(device=teacher.device, dtype=teacher.dtype)
    return x, y


def teacher_tsi(
    teacher: Teacher, q_values: float | Sequence[float] = (0.1, 0.3, 0.5), include_output: bool = True
) -> dict:
    """Teacher sparsity index ``TSI = ||w||_1 / ||w||_q`` per node, per layer and for the network [paper].

    Returns ``{q: {"node": [tensor (width_l,) per layer], "layer": tensor (layers,), "network": float}}``:
    a node's TSI is that of its incoming weight row, a layer's is the mean over its nodes and the
    network's the mean over layers. Layers are the hidden layers in order, then (``include_output``)
    the scalar output layer.
    """
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
    qs = [q_values] if isinstance(q_values, (int, float)) else list(q_values)
    if not qs:
        raise ValueError("q_values must not be empty")
    mats = teacher.weights if include_output else teacher.weights[:-1]
    out = {}
    for q in qs:
        node = [teacher_sparsity_index(W, q=q, dim=-1) for W in mats]
        layer = torch.stack([v.mean() for v in node])
        out[q] = {"node": node, "layer": layer, "network": float(layer.mean())}
    return out


def relu_mlp_module(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> nn.Sequential:
    """``nn.Sequential(Linear, ReLU, ..., Linear)`` holding copies of the given weights and biases.

    Shared by teachers and their backward-approximated students; a layer may have zero nodes (a student
    that kept none), which gives a zero-sized Linear.
    """
    layers: list[nn.Module] = []
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        with warnings.catch_warnings():  # zero-sized layers: nothing to initialise
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            lin = nn.Linear(W.shape[1], W.shape[0], device=W.device, dtype=W.dtype)
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(b)
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
