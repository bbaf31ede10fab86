"""Model registry and the per-layer facts pruning needs (prunable tensors, multiply-adds).

``build_model(name, input_shape, num_classes)`` looks ``name`` up in :data:`MODELS` (fixed names) or
matches it against :data:`MODEL_PATTERNS` (parametrised names); never ``eval``. Names:

* ``linear``: flatten → Linear(in, classes).
* ``mlp-{width}-1-{depth}-relu``: flatten → ``depth`` blocks Linear+ReLU of constant ``width`` →
  Linear head [paper: 2022 code, E2]. The ``1`` is the authors' width scale factor between blocks
  (only 1, constant width, is used in the paper and supported here). ``mlp-128-1-2-relu`` on 28×28
  inputs has 784·128 + 128·128 + 128·10 = 118,016 weights, the count in the authors' run log.
* ``pqi-mlp``: flatten → 128 → 256 → classes with ReLU [paper: ICLR 2023, E3].
* ``cnn4``: 4 blocks conv3×3(pad 1)–BN–ReLU, widths 64/128/256/512, MaxPool(2) after each of the
  first three while the spatial size is ≥ 2, then global average pool and a Linear head
  [paper: ICLR 2023, E3]. Works on 8×8 digits as well as 28×28 and 32×32 inputs.
* ``resnet18``: torchvision's ResNet-18 for small images: 3×3 stride-1 first conv taking the
  input's channels, no max-pool, ``num_classes`` outputs.

Initialisation is PyTorch's default (torchvision's for ResNet-18; Kaiming-normal fan-out for the
convolutions of ``cnn4``), so it is deterministic given ``torch.manual_seed``.

Room: engine (models, data, masks, pruning, training; knows nothing of run folders).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "MODELS",
    "MODEL_PATTERNS",
    "build_model",
    "count_multiply_adds",
    "mlp_biases",
    "mlp_weights",
    "prunable_parameters",
]

Builder = Callable[[tuple[int, ...], int], nn.Module]


def _check_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, int) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    return shape


def _check_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (channels, height, width), got input_shape {input_shape}")
    return input_shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------------


def _mlp(input_shape: tuple[int, ...], hidden: list[int], num_classes: int) -> nn.Sequential:
    """flatten → [Linear + ReLU] per hidden width → Linear head, with readable parameter names
    (``fc1.weight``, ..., ``head.weight``)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = math.prod(input_shape)
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)
        layers[f"relu{i}"] = nn.ReLU()
        width = h
    layers["head"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)


class CNN4(nn.Module):
    """E3's CNN: ``block{i}`` = conv3×3(pad 1)–BN–ReLU[–MaxPool(2)], GAP, Linear head.

    As in the authors' code, the last block has no pool (global average pooling follows) and the
    convolutions keep their bias. A pool is only inserted while the feature map is at least 2×2, so
    8×8 inputs work: 8 → 4 → 2 → 1.
    """

    widths = (64, 128, 256, 512)

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        side = min(height, width)
        for i, w in enumerate(self.widths, start=1):
            block: OrderedDict[str, nn.Module] = OrderedDict(
                conv=nn.Conv2d(channels, w, kernel_size=3, stride=1, padding=1),
                bn=nn.BatchNorm2d(w),
                relu=nn.ReLU(inplace=True),
            )
            if i < len(self.widths) and side >= 2:
                block["pool"] = nn.MaxPool2d(2)
                side //= 2
            self.add_module(f"block{i}", nn.Sequential(block))
            channels = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, len(self.widths) + 1):
            x = getattr(self, f"block{i}")(x)
        return self.head(self.flatten(self.pool(x)))


def _resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    channels, _, _ = _image_shape("resnet18", input_shape)
    model = resnet18(weights=None, num_classes=num_classes)
    # Small images: a 7×7 stride-2 stem and a max-pool would shrink 32×32 to 8×8 before layer1.
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


#: Fixed model names → builder(input_shape, num_classes).
MODELS: dict[str, Builder] = {
    "linear": lambda shape, k: _mlp(shape, [], k),
    "pqi-mlp": lambda shape, k: _mlp(shape, [128, 256], k),
    "cnn4": lambda shape, k: CNN4(_image_shape("cnn4", shape), k),
    "resnet18": _resnet18,
}


class _Pattern(NamedTuple):
    form: str
    regex: re.Pattern
    build: Callable[[re.Match, tuple[int, ...], int], nn.Module]


def _build_mlp_match(match: re.Match, shape: tuple[int, ...], k: int) -> nn.Module:
    width, scale, depth, act = match.group("width", "scale", "depth", "act")
    name = match.group(0)
    if scale != "1":
        raise ValueError(f"model {name!r}: only width scale factor 1 (constant width) is supported, got {scale}")
    if act != "relu":
        raise ValueError(f"model {name!r}: only the relu activation is supported, got {act!r}")
    width, depth = int(width), int(depth)
    if width < 1 or depth < 1:
        raise ValueError(f"model {name!r}: width and depth must be >= 1")
    return _mlp(shape, [width] * depth, k)


#: Parametrised model names: (human-readable form, regex, builder(match, input_shape, num_classes)).
MODEL_PATTERNS: list[_Pattern] = [
    _Pattern(
        "mlp-{width}-1-{depth}-relu",
        re.compile(r"mlp-(?P<width>\d+)-(?P<scale>[0-9.]+)-(?P<depth>\d+)-(?P<act>[a-z]+)"),
        _build_mlp_match,
    ),
]


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised model ``name`` for inputs of shape ``input_shape`` (without batch) and
    ``num_classes`` outputs. Unknown or malformed names raise ``ValueError`` listing the forms."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    shape = _check_shape(input_shape)
    k = _check_classes(num_classes)
    key = name.strip().lower()
    if key in MODELS:
        return MODELS[key](shape, k)
    for pattern in MODEL_PATTERNS:
        match = pattern.regex.fullmatch(key)
        if match:
            return pattern.build(match, shape, k)
    forms = [*sorted(MODELS), *(p.form for p in MODEL_PATTERNS)]
    raise ValueError(f"unknown model {name!r}; known forms: {', '.join(forms)} (e.g. mlp-128-1-2-relu)")


# --------------------------------------------------------------------------------------------------
# Facts about a model
# --------------------------------------------------------------------------------------------------


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The prunable tensors: parameters with ``dim > 1`` (Linear and Conv weights; never biases or
    BatchNorm affine parameters), keyed by name, in ``named_parameters`` order. [paper]"""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {name: p for name, p in model.named_parameters() if p.dim() > 1}


def mlp_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a plain MLP ``Sequential([Flatten], Linear, (ReLU, Linear)*)``."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"expected a plain MLP (nn.Sequential of Flatten/Linear/ReLU), got {type(model).__name__}")
    children = list(model)
    if children and isinstance(children[0], nn.Flatten):
        children = children[1:]
    ok = len(children) % 2 == 1 and all(
        isinstance(m, nn.Linear) if i % 2 == 0 else type(m) is nn.ReLU for i, m in enumerate(children)
    )
    if not ok:
        kinds = ", ".join(type(m).__name__ for m in model)
        raise ValueError(f"expected a plain MLP [Flatten], Linear, (ReLU, Linear)*; got layers: {kinds}")
    return children[::2]


def mlp_weights(model: nn.Module) -> list[torch.Tensor]:
    """``[W_1, ..., W_L, V]`` of a plain ReLU MLP, hidden layers in order and the head last (the
    ``W_l`` and ``V`` of THEORY.md S4). Raises ``ValueError`` for any other model. [derived]"""
    return [lin.weight for lin in mlp_linears(model)]


def mlp_biases(model: nn.Module) -> list[torch.Tensor]:
    """``[b_1, ..., b_L, c]`` matching :func:`mlp_weights`; a layer without bias gives zeros."""
    return [lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features) for lin in mlp_linears(model)]


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_multiply_adds(
    model: nn.Module,
    input_shape: tuple[int, ...],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, int]:
    """Multiply-adds per prunable tensor for one input of shape ``input_shape``.

    Every weight entry is used once per output position of its layer, so a layer costs
    ``(#weights) × positions``: Linear ``in·out`` (× any extra leading positions), Conv
    ``out_h·out_w · k·k · c_in/groups · c_out`` (zero-padded borders count as full windows).
    With ``masks`` (name → bool tensor, True = alive) only alive weights count; layers absent from
    ``masks`` count densely. Positions are measured with forward hooks on a zero input in eval mode;
    the model's mode is restored. The theoretical speed-up is ``sum(dense) / sum(masked)``. [derived]
    """
    params = prunable_parameters(model)
    shape = _check_shape(input_shape)
    modules = dict(model.named_modules())
    layer_of: dict[str, nn.Module] = {}
    for name in params:
        owner_name = name.rpartition(".")[0]
        owner = modules[owner_name]
        if not isinstance(owner, (nn.Linear, *_CONVS)):
            raise TypeError(f"cannot count multiply-adds of {name!r}: owned by a {type(owner).__name__}")
        layer_of[name] = owner
    if masks is not None:
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a mapping name → bool tensor, got {type(masks).__name__}")
        for name, mask in masks.items():
            if name not in params:
                raise ValueError(f"masks has key {name!r}, which is not a prunable parameter of the model")
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"masks[{name!r}] must be a bool tensor")
            if mask.shape != params[name].shape:
                raise ValueError(
                    f"masks[{name!r}] has shape {tuple(mask.shape)}, the weight has {tuple(params[name].shape)}"
                )

    positions: dict[nn.Module, int] = dict.fromkeys(layer_of.values(), 0)

    def hook(module, inputs, output):
        # one sample: positions = output entries per output feature/channel
        per_unit = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        positions[module] += output.numel() // per_unit  # summed: a module may be called twice

    if not params:
        return {}
    ref = next(iter(params.values()))
    x = torch.zeros((1, *shape), device=ref.device, dtype=ref.dtype)
    handles = [m.register_forward_hook(hook) for m in positions]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    out = {}
    for name, p in params.items():
        alive = p.numel() if masks is None or name not in masks else int(masks[name].sum())
        out[name] = alive * positions[layer_of[name]]
    return out
