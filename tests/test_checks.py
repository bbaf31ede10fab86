"""Tests of lqtheory.common.checks.check_tensor: the sum shortcut must never let a non-finite entry through."""

from __future__ import annotations

import pytest
import torch

from lqtheory.common.checks import check_tensor


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_tensor_finds_one_bad_entry_anywhere(dtype, bad):
    for position in (0, 517, 4095):
        x = torch.randn(4096, dtype=torch.float64).to(dtype)
        x[position] = bad
        with pytest.raises(ValueError, match="x contains NaN or Inf"):
            check_tensor(x, "x")


def test_check_tensor_inf_and_minus_inf_together():
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_tensor(torch.tensor([float("inf"), float("-inf"), 1.0]), "x")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_check_tensor_accepts_finite_values_whose_sum_overflows(dtype):
    big = torch.finfo(dtype).max
    x = torch.full((64,), big, dtype=dtype)  # the sum overflows to inf, every entry is finite
    assert not torch.isfinite(x.sum())
    assert check_tensor(x, "x") is x


def test_check_tensor_types_and_empty():
    assert check_tensor(torch.zeros(0), "x").numel() == 0
    with pytest.raises(ValueError, match="empty"):
        check_tensor(torch.zeros(0), "x", allow_empty=False)
    with pytest.raises(TypeError, match="floating"):
        check_tensor(torch.ones(3, dtype=torch.long), "x")
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_tensor([1.0], "x")


def test_check_tensor_leaves_autograd_alone():
    x = torch.randn(5, requires_grad=True)
    check_tensor(x, "x")
    assert x.grad is None and x.grad_fn is None
