"""Tests for lqtheory.engine.models: registry, architectures, prunable tensors, multiply-add counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lqtheory.engine.models import (
    MODELS,
    build_model,
    count_multiply_adds,
    mlp_biases,
    mlp_weights,
    prunable_parameters,
)

NAMES = ["linear", "mlp-128-1-2-relu", "mlp-256-1-4-relu", "pqi-mlp", "cnn4", "resnet18"]
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    model.train()
    out = model(torch.randn(2, *shape))  # batch of 2: BatchNorm in train mode needs > 1 value
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    if name != "resnet18":  # keep the suite fast on 2 shared cores; resnet18 is torchvision's own code
        out.sum().backward()
        assert all(p.grad is not None for p in prunable_parameters(model).values())


@pytest.mark.parametrize("name", ["linear", "mlp-128-1-2-relu", "pqi-mlp"])
def test_mlps_accept_vector_inputs(name):
    model = build_model(name, (40,), 10)  # mnist1d
    assert model(torch.randn(5, 40)).shape == (5, 10)


@pytest.mark.parametrize("name", ["cnn4", "resnet18"])
def test_conv_models_need_images(name):
    with pytest.raises(ValueError, match="channels, height, width"):
        build_model(name, (40,), 10)


def test_mlp_structure_matches_theory_e2():
    """mlp-128-1-2-relu on 28×28: 784→128→128→10, i.e. 118,016 weights as in the authors' run log."""
    model = build_model("mlp-128-1-2-relu", (1, 28, 28), 10)
    shapes = [tuple(w.shape) for w in mlp_weights(model)]
    assert shapes == [(128, 784), (128, 128), (10, 128)]
    assert sum(p.numel() for p in prunable_parameters(model).values()) == 118_016
    assert list(prunable_parameters(model)) == ["fc1.weight", "fc2.weight", "head.weight"]
    deep = build_model("mlp-256-1-4-relu", (1, 28, 28), 10)
    assert [tuple(w.shape) for w in mlp_weights(deep)] == [(256, 784)] + [(256, 256)] * 3 + [(10, 256)]
    relus = [m for m in deep.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 4


def test_pqi_mlp_and_linear_structure():
    pqi = build_model("pqi-mlp", (1, 28, 28), 10)
    assert [tuple(w.shape) for w in mlp_weights(pqi)] == [(128, 784), (256, 128), (10, 256)]
    lin = build_model("linear", (3, 32, 32), 10)
    assert [tuple(w.shape) for w in mlp_weights(lin)] == [(10, 3072)]


def _feature_map_sides(model: nn.Module, shape) -> list[int]:
    """Spatial side of each block's output, via hooks (independent of the builder's bookkeeping)."""
    sides = []
    hooks = [
        getattr(model, f"block{i}").register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
        for i in range(1, 5)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return sides


@pytest.mark.parametrize(
    "shape, sides",
    [((1, 8, 8), [4, 2, 1, 1]), ((1, 28, 28), [14, 7, 3, 3]), ((3, 32, 32), [16, 8, 4, 4])],
)
def test_cnn4_blocks(shape, sides):
    model = build_model("cnn4", shape, 10)
    assert _feature_map_sides(model, shape) == sides
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    assert convs[0].in_channels == shape[0]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    assert model.head.in_features == 512


def test_resnet18_small_input_stem():
    model = build_model("resnet18", (1, 28, 28), 10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    cifar = build_model("resnet18", (3, 32, 32), 10)
    # the CIFAR ResNet-18 parameter count (3×3 stem, 1×1 projection shortcuts): 11,173,962
    assert sum(p.numel() for p in cifar.parameters()) == 11_173_962


def test_prunable_parameters_excludes_biases_and_bn():
    model = build_model("cnn4", (3, 32, 32), 10)
    prunable = prunable_parameters(model)
    assert list(prunable) == [f"block{i}.conv.weight" for i in range(1, 5)] + ["head.weight"]
    assert all(isinstance(p, nn.Parameter) for p in prunable.values())
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    biases = {id(m.bias) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert not ({id(p) for p in prunable.values()} & (bn_params | biases))
    # the prunable tensors are the model's own Parameters (pruning writes into them)
    assert prunable["head.weight"] is model.head.weight

    resnet = prunable_parameters(build_model("resnet18", (3, 32, 32), 10))
    # 1 stem + 16 block convs + 3 projection shortcuts + fc
    assert len(resnet) == 21
    assert all(not n.endswith("bias") and ".bn" not in n for n in resnet)
    assert list(resnet)[-1] == "fc.weight"


def test_prunable_parameters_type_error():
    with pytest.raises(TypeError):
        prunable_parameters("model")


def test_deterministic_init():
    for name in NAMES:
        torch.manual_seed(11)
        a = build_model(name, (1, 8, 8), 10).state_dict()
        torch.manual_seed(11)
        b = build_model(name, (1, 8, 8), 10).state_dict()
        torch.manual_seed(12)
        c = build_model(name, (1, 8, 8), 10).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()), name


@pytest.mark.parametrize(
    "name",
    [
        "mlp-128-2-2-relu",  # width scale factor other than 1
        "mlp-128-1-2-tanh",
        "mlp-0-1-2-relu",
        "mlp-128-1-0-relu",
        "mlp-128-1-relu",
        "mlp-128",
        "mlp-abc-1-2-relu",
        "resnet50",
        "",
        "cnn4 extra",
    ],
)
def test_malformed_names(name):
    with pytest.raises(ValueError, match="mlp"):
        build_model(name, (1, 28, 28), 10)


def test_unknown_name_lists_forms():
    with pytest.raises(ValueError) as info:
        build_model("vgg16", (3, 32, 32), 10)
    for form in [*MODELS, "mlp-{width}-1-{depth}-relu"]:
        assert form in str(info.value)


@pytest.mark.parametrize(
    "shape, classes, exc",
    [
        ((), 10, ValueError),
        ((1, 0, 8), 10, ValueError),
        (28, 10, TypeError),
        ((1, 8, 8), 0, ValueError),
        ((1, 8, 8), 2.5, ValueError),
        ((1.0, 8, 8), 10, ValueError),
    ],
)
def test_bad_shape_or_classes(shape, classes, exc):
    with pytest.raises(exc):
        build_model("linear", shape, classes)
    with pytest.raises(TypeError):
        build_model(None, (1, 8, 8), 10)


# --------------------------------------------------------------------------------------------------
# mlp_weights / mlp_biases
# --------------------------------------------------------------------------------------------------


def test_mlp_weights_and_biases_follow_forward():
    """Recompute the forward pass from the returned lists: h = relu(W h + b), f = V h + c."""
    torch.manual_seed(0)
    model = build_model("mlp-16-1-3-relu", (1, 4, 4), 5)
    ws, bs = mlp_weights(model), mlp_biases(model)
    assert len(ws) == len(bs) == 4
    x = torch.randn(6, 1, 4, 4)
    h = x.reshape(6, -1)
    for w, b in zip(ws[:-1], bs[:-1], strict=True):
        h = torch.relu(h @ w.T + b)
    torch.testing.assert_close(h @ ws[-1].T + bs[-1], model(x))
    assert ws[0] is model.fc1.weight and bs[-1] is model.head.bias


def test_mlp_biases_zero_when_absent():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2))
    bs = mlp_biases(model)
    assert torch.equal(bs[0], torch.zeros(4)) and bs[1] is model[2].bias


@pytest.mark.parametrize(
    "model",
    [
        build_model("cnn4", (1, 8, 8), 10),
        build_model("resnet18", (1, 8, 8), 10),
        nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU()),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2)),
    ],
)
def test_mlp_weights_rejects_non_mlps(model):
    with pytest.raises(ValueError, match="MLP"):
        mlp_weights(model)
    with pytest.raises(ValueError, match="MLP"):
        mlp_biases(model)


# --------------------------------------------------------------------------------------------------
# multiply-adds
# --------------------------------------------------------------------------------------------------


def test_macs_small_mlp_by_hand():
    model = build_model("mlp-3-1-2-relu", (1, 2, 2), 10)
    assert count_multiply_adds(model, (1, 2, 2)) == {"fc1.weight": 4 * 3, "fc2.weight": 3 * 3, "head.weight": 3 * 10}


def test_macs_small_conv_by_hand():
    # 2×7×7 input → conv3×3 pad 1 (2→3) at 7×7 → conv3×3 stride 2 (3→4) at 3×3 → grouped 1×1 conv
    # (4→4, groups 2) at 3×3 → flatten 36 → Linear(36, 5)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2),
        nn.Conv2d(4, 4, 1, groups=2),
        nn.Flatten(),
        nn.Linear(36, 5),
    )
    macs = count_multiply_adds(model, (2, 7, 7))
    assert macs == {
        "0.weight": 7 * 7 * 3 * 3 * 2 * 3,
        "3.weight": 3 * 3 * 3 * 3 * 3 * 4,
        "4.weight": 3 * 3 * 1 * 1 * (4 // 2) * 4,
        "6.weight": 36 * 5,
    }


def test_macs_conv1d_and_shared_module():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 8, 4), shared, nn.ReLU(), shared)
    macs = count_multiply_adds(model, (1, 10))
    # the shared Linear runs twice per input; named_parameters lists it once (as "3.weight")
    assert macs == {"0.weight": 8 * 3 * 1 * 2, "2.weight": 16 * 4, "3.weight": 2 * 16}


def test_macs_cnn4_and_resnet18_by_hand():
    cnn = build_model("cnn4", (1, 8, 8), 10)
    assert count_multiply_adds(cnn, (1, 8, 8)) == {
        "block1.conv.weight": 8 * 8 * 9 * 1 * 64,
        "block2.conv.weight": 4 * 4 * 9 * 64 * 128,
        "block3.conv.weight": 2 * 2 * 9 * 128 * 256,
        "block4.conv.weight": 1 * 1 * 9 * 256 * 512,
        "head.weight": 512 * 10,
    }
    resnet = build_model("resnet18", (3, 32, 32), 10)
    stem = 32 * 32 * 9 * 3 * 64
    layer1 = 4 * 32 * 32 * 9 * 64 * 64
    later = 0
    for side, c_in, c_out in ((16, 64, 128), (8, 128, 256), (4, 256, 512)):
        later += side * side * (9 * c_in * c_out + 3 * 9 * c_out * c_out + c_in * c_out)
    assert sum(count_multiply_adds(resnet, (3, 32, 32)).values()) == stem + layer1 + later + 512 * 10


def test_macs_with_masks_and_mode_restored():
    torch.manual_seed(0)
    model = build_model("cnn4", (1, 8, 8), 10)
    model.train()
    params = prunable_parameters(model)
    dense = count_multiply_adds(model, (1, 8, 8))
    gen = torch.Generator().manual_seed(1)
    masks = {name: torch.rand(p.shape, generator=gen) < 0.3 for name, p in params.items() if "block" in name}
    sparse = count_multiply_adds(model, (1, 8, 8), masks)
    positions = {
        "block1.conv.weight": 64,
        "block2.conv.weight": 16,
        "block3.conv.weight": 4,
        "block4.conv.weight": 1,
        "head.weight": 1,
    }
    for name in params:
        alive = int(masks[name].sum()) if name in masks else params[name].numel()
        assert sparse[name] == alive * positions[name]
        assert dense[name] == params[name].numel() * positions[name]
    assert model.training  # mode restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_multiply_adds(model, (1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    all_dead = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in params.items()}
    assert sum(count_multiply_adds(model, (1, 8, 8), all_dead).values()) == 0


def test_macs_mask_validation():
    model = build_model("mlp-3-1-1-relu", (4,), 2)
    with pytest.raises(ValueError, match="not a prunable"):
        count_multiply_adds(model, (4,), {"fc1.bias": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        count_multiply_adds(model, (4,), {"fc1.weight": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        count_multiply_adds(model, (4,), {"fc1.weight": torch.ones(3, 4)})
    with pytest.raises(TypeError):
        count_multiply_adds(model, (4,), [1, 2])
    assert count_multiply_adds(nn.Sequential(nn.ReLU()), (4,)) == {}


def test_macs_speedup_ratio_of_uniform_pruning():
    """Keeping exactly a fraction of every layer's weights gives speed-up = 1/fraction."""
    model = build_model("mlp-64-1-2-relu", (1, 8, 8), 10)
    params = prunable_parameters(model)
    masks = {}
    for name, p in params.items():
        m = torch.zeros(p.numel(), dtype=torch.bool)
        m[: p.numel() // 4] = True
        masks[name] = m.reshape(p.shape)
    dense = sum(count_multiply_adds(model, (1, 8, 8)).values())
    sparse = sum(count_multiply_adds(model, (1, 8, 8), masks).values())
    assert math.isclose(dense / sparse, 4.0, rel_tol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_models_on_cuda():
    model = build_model("cnn4", (1, 8, 8), 10).cuda()
    assert model(torch.randn(2, 1, 8, 8, device="cuda")).shape == (2, 10)
    assert count_multiply_adds(model, (1, 8, 8)) == count_multiply_adds(model.cpu(), (1, 8, 8))
