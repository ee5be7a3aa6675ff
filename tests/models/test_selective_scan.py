"""Selective scan: chunked == sequential in values and gradients (cmu-net.md), Mamba block and MambaLayer shapes."""

import pytest
import torch

from medrun.models import selective_scan as ss
from medrun.models.selective_scan import (
    Mamba,
    MambaLayer,
    segment_sum,
    selective_scan,
    selective_scan_chunked,
    selective_scan_sequential,
)


def _inputs(batch=2, channels=5, state=4, length=37, dtype=torch.float32, decay_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return {
        "u": r(batch, channels, length),
        "delta": r(batch, channels, length),
        "A": -torch.rand(state, generator=g, dtype=dtype).add(0.1).repeat(channels, 1) * decay_scale * torch.rand(
            channels, 1, generator=g, dtype=dtype
        ).add(0.5),
        "B": r(batch, state, length),
        "C": r(batch, state, length),
        "D": r(channels),
        "z": r(batch, channels, length),
        "delta_bias": r(channels),
    }


def _leafs(inputs):
    return {k: v.clone().requires_grad_(True) for k, v in inputs.items()}


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
def test_chunked_matches_sequential_values_and_gradients_float32(chunk_size):
    base = _inputs()
    a, b = _leafs(base), _leafs(base)
    y_ref, h_ref = selective_scan_sequential(**a, delta_softplus=True, return_last_state=True)
    y, h = selective_scan_chunked(**b, delta_softplus=True, return_last_state=True, chunk_size=chunk_size)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-4)
    weights = torch.randn_like(y_ref)
    (y_ref * weights).sum().backward()
    (y * weights).sum().backward()
    for name in base:
        torch.testing.assert_close(b[name].grad, a[name].grad, atol=1e-4, rtol=1e-4, msg=name)


def test_chunked_matches_sequential_float64_tightly():
    base = _inputs(dtype=torch.float64, length=50)
    a, b = _leafs(base), _leafs(base)
    y_ref = selective_scan_sequential(**a, delta_softplus=True)
    y = selective_scan_chunked(**b, delta_softplus=True, chunk_size=16)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    y_ref.sum().backward()
    y.sum().backward()
    for name in base:
        torch.testing.assert_close(b[name].grad, a[name].grad, atol=1e-10, rtol=1e-10, msg=name)


def test_strong_decay_stays_finite_and_matches():
    # A down to about -24 and delta up to several units: per-step decays of -100 and more.
    base = _inputs(decay_scale=20.0, length=70)
    base["delta"] = base["delta"].abs() * 4
    base["delta_bias"] = base["delta_bias"].abs()  # keep delta >= 0 so that every step decays
    a, b = _leafs(base), _leafs(base)
    y_ref = selective_scan_sequential(**a)
    y = selective_scan_chunked(**b, chunk_size=32)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    y.sum().backward()
    y_ref.sum().backward()
    for name in base:
        assert torch.isfinite(b[name].grad).all(), name
        torch.testing.assert_close(b[name].grad, a[name].grad, atol=1e-4, rtol=1e-4, msg=name)


def test_optional_arguments_may_be_absent():
    base = _inputs()
    args = {k: base[k] for k in ("u", "delta", "A", "B", "C")}
    torch.testing.assert_close(selective_scan_chunked(**args), selective_scan_sequential(**args), atol=1e-4, rtol=1e-4)


def test_segment_sum():
    a = torch.tensor([1.0, 2.0, 3.0])
    seg = segment_sum(a)
    inf = float("-inf")
    expected = torch.tensor([[0.0, inf, inf], [2.0, 0.0, inf], [5.0, 3.0, 0.0]])
    assert torch.equal(seg, expected)


def test_dispatch_uses_chunked_on_cpu_and_mamba_ssm_on_cuda(monkeypatch):
    base = _inputs()
    calls = []

    def fake_kernel(*args):
        calls.append(len(args))
        return "kernel"

    monkeypatch.setattr(ss, "_mamba_selective_scan", fake_kernel)
    out = selective_scan(**base)  # CPU tensors: never the kernel
    assert isinstance(out, torch.Tensor) and not calls

    class CudaLike(torch.Tensor):
        @property
        def is_cuda(self):
            return True

    u = base.pop("u").as_subclass(CudaLike)
    assert selective_scan(u, **base) == "kernel"
    assert calls == [10]


def test_mamba_block_chunked_equals_sequential():
    torch.manual_seed(0)
    block = Mamba(16, d_state=4, scan="chunked", chunk_size=8)
    tokens = torch.randn(2, 30, 16)
    out = block(tokens)
    block.scan = "sequential"
    torch.testing.assert_close(out, block(tokens), atol=1e-5, rtol=1e-5)
    assert out.shape == tokens.shape


def test_mamba_initialisation_follows_card():
    block = Mamba(32, d_state=16)
    assert block.d_inner == 64 and block.dt_rank == 2
    assert torch.allclose(block.A_log[3], torch.arange(1, 17).float().log())
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 - 1e-6 and dt.max() <= 1e-1 + 1e-6
    assert torch.equal(block.D, torch.ones(64))


def test_mamba_is_causal():
    torch.manual_seed(0)
    block = Mamba(8, d_state=4)
    tokens = torch.randn(1, 20, 8)
    changed = tokens.clone()
    changed[:, 12:] += 1.0
    torch.testing.assert_close(block(tokens)[:, :12], block(changed)[:, :12])


@pytest.mark.parametrize("shape", [(2, 8, 6, 5), (1, 8, 4, 3, 5)])
@pytest.mark.parametrize("residual", [False, True])
def test_mamba_layer_shapes_2d_3d(shape, residual):
    layer = MambaLayer(8, d_state=4, residual=residual)
    x = torch.randn(shape)
    y = layer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
