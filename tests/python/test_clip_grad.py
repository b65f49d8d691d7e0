"""steadystep.get_total_norm against torch.nn.utils.get_total_norm itself."""

import math

import pytest
import torch

import steadystep
from conftest import devices

NORMS = [0.5, 1.0, 2.0, 3.0, math.inf]
# Relative tolerance against torch, by dtype. fp32/fp64: both sides accumulate in their
# precision over at most ~1e6 elements in blocks, so rounding stays near 1e-7 (fp32) and 1e-15
# (fp64). fp16/bf16: torch rounds each per-tensor norm to the input dtype before combining,
# we round once at the end: the results differ by a few output ulps (2^-11, 2^-8).
RTOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def random_tensors(n, dtype, device, gen):
    """`n` tensors of odd sizes (empty, 1-element, unaligned, > one chunk) and odd layouts."""
    sizes = [17, 0, 1, 2, 3, 5, 255, 1023, 4097, 70_001]
    out = []
    for i in range(n):
        size = sizes[i % len(sizes)] if i < len(sizes) else int(torch.randint(1, 5000, (1,), generator=gen))
        kind = i % 4
        if kind == 0 or size < 4:
            t = torch.randn(size, generator=gen, dtype=torch.float64)
        elif kind == 1:  # offset view: data pointer not 16-byte aligned
            t = torch.randn(size + 1, generator=gen, dtype=torch.float64)[1:]
        elif kind == 2:  # transposed: dense but not contiguous
            t = torch.randn(size // 2, 2, generator=gen, dtype=torch.float64).t()
        else:  # strided slice: not dense
            t = torch.randn(size, 2, generator=gen, dtype=torch.float64)[:, 0]
        out.append((t * float(torch.rand(1, generator=gen)) * 3).to(device=device, dtype=dtype))
    return out


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("count", [1, 7, 300])
def test_get_total_norm_matches_torch(device, dtype, norm_type, count):
    gen = torch.Generator().manual_seed(count * 1000 + int(norm_type * 10 if math.isfinite(norm_type) else 99))
    tensors = random_tensors(count, dtype, device, gen)
    ours = steadystep.get_total_norm(tensors, norm_type)
    # torch's foreach inf-norm refuses empty tensors (see test_inf_norm_skips_empty_tensors).
    theirs = torch.nn.utils.get_total_norm([t for t in tensors if t.numel() or norm_type != math.inf], norm_type)
    assert ours.shape == () and ours.dtype == theirs.dtype and ours.device == theirs.device
    # For p < 1 the final x**(1/p) amplifies relative error by 1/p, and torch's two-level
    # combination (per-tensor norms, then their norm) does it twice: torch's own fp32 result
    # is then off by more than 1e-6, so the bound against torch widens by 2/p there.
    widen = max(1.0, 2.0 / norm_type)
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=RTOL[dtype] * widen, atol=0)
    if dtype in (torch.float32, torch.float64):
        # Against the exact answer (fp64 over the same values) the 1e-6 / 1e-12 bound holds.
        exact = torch.nn.utils.get_total_norm([t.double() for t in tensors if t.numel()], norm_type)
        torch.testing.assert_close(ours.double(), exact.to(dtype).double(), rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("device", devices())
def test_get_total_norm_many_tensors(device):
    gen = torch.Generator().manual_seed(7)
    tensors = random_tensors(3000, torch.float32, device, gen)
    torch.testing.assert_close(
        steadystep.get_total_norm(tensors), torch.nn.utils.get_total_norm(tensors), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("device", devices())
def test_get_total_norm_mixed_dtypes(device):
    gen = torch.Generator().manual_seed(3)
    tensors = [t.to(dtype) for t, dtype in zip(random_tensors(8, torch.float32, device, gen),
                                              [torch.float16, torch.bfloat16, torch.float32] * 3)]
    ours, theirs = steadystep.get_total_norm(tensors, 2.0), torch.nn.utils.get_total_norm(tensors, 2.0)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=4e-3, atol=0)


def test_inf_norm_skips_empty_tensors():
    # torch.nn.utils.get_total_norm raises for an empty tensor with norm_type=inf ("no identity");
    # a parameter with an empty gradient is legitimate, so ours leaves it out, as every finite p
    # does (max |x| over nothing contributes nothing; |x| >= 0, so 0 is the identity).
    tensors = [torch.randn(10), torch.empty(0)]
    with pytest.raises(RuntimeError):
        torch.nn.utils.get_total_norm(tensors, math.inf)
    assert steadystep.get_total_norm(tensors, math.inf).item() == tensors[0].abs().max().item()
    assert steadystep.get_total_norm([torch.empty(0)], math.inf).item() == 0.0


def test_get_total_norm_empty_list():
    ours = steadystep.get_total_norm([])
    theirs = torch.nn.utils.get_total_norm([])
    assert ours.item() == theirs.item() == 0.0 and ours.dtype == theirs.dtype


def test_get_total_norm_single_tensor_and_generator():
    t = torch.randn(100)
    assert torch.equal(steadystep.get_total_norm(t), steadystep.get_total_norm(x for x in [t]))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_get_total_norm_nonfinite(device, norm_type):
    for bad in [math.nan, math.inf]:
        tensors = [torch.randn(1000, device=device), torch.randn(10, device=device)]
        tensors[0][123] = bad
        ours = steadystep.get_total_norm(tensors, norm_type)
        theirs = torch.nn.utils.get_total_norm(tensors, norm_type)
        assert (ours.isnan().item(), ours.isinf().item()) == (theirs.isnan().item(), theirs.isinf().item())
        with pytest.raises(RuntimeError, match="non-finite"):
            steadystep.get_total_norm(tensors, norm_type, error_if_nonfinite=True)


def test_get_total_norm_other_orders_fall_back_to_torch():
    tensors = [torch.randn(50), torch.randn(7)]
    for p in [0.0, -1.0, -math.inf]:
        torch.testing.assert_close(steadystep.get_total_norm(tensors, p), torch.nn.utils.get_total_norm(tensors, p))


def test_get_total_norm_rejects_sparse():
    with pytest.raises(RuntimeError, match="strided"):
        steadystep.get_total_norm([torch.eye(3).to_sparse()])
