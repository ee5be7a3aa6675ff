"""Selective scan (Mamba, Gu & Dao 2023) in pure PyTorch, the Mamba block, and CMU-Net's ``MambaLayer``.

Source: ``cmu-net.md``, sections "Method" (Mamba block, MambaLayer) and "Reproduction plan" (CPU selective scan).

The scan (zero-order hold, diagonal A) for every channel e and state n:

    h_t = exp(delta_t * A) * h_{t-1} + (delta_t * B_t) * u_t,        y_t = <C_t, h_t> + D * u_t,

optionally followed by ``y * silu(z)``. Three implementations share one signature, which is the signature of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` so that the CUDA kernel is a drop-in:

- ``selective_scan_sequential``: the reference loop over the L steps.
- ``selective_scan_chunked``: the default on CPU. L is cut into chunks of T. Inside a chunk, with
  ``a_t = delta_t * A`` and the segment sums ``seg[t, s] = a_{s+1} + ... + a_t`` (s <= t, -inf above the diagonal),
  the states are ``h_t = sum_s exp(seg[t, s]) x_s + exp(a_1 + ... + a_t) h_0`` with ``x_s = delta_s B_s u_s``: one
  batched matmul per chunk, and the last state is carried to the next chunk. The segment sum is built from a masked
  cumulative sum of the a's themselves, never as a difference of two long prefix sums, so strong decays neither
  overflow ``exp`` nor lose precision by cancellation.
- ``selective_scan_ssd`` (added for cmu-net): every chunk at once, states inside a chunk in log space, the
  hand-over between chunks by a segment sum over the chunk totals; few large operations, the fastest on a CPU
  for CMU-Net's small channel counts (``scan="ssd"``).
- ``mamba_ssm``'s kernel, used by ``selective_scan`` when that package imports and the tensors are on CUDA.
  The import is guarded: on machines without it (or without CUDA) the chunked scan is used.

Shapes (as in mamba_ssm): u, delta, z: (batch, E, L); A: (E, N); B, C: (batch, N, L); D, delta_bias: (E,).

Choices where the card is silent: the dt_proj weight is initialised uniform in +-dt_rank^-0.5 (the Mamba
reference default); the chunk length that does not divide L leaves a shorter last chunk (no padding).
The card suggests T = 64; the default here is T = 8 because the intra-chunk work grows with T (E * N * T per
token, against E * N for the loop) and on the 2-core CPU only small chunks beat the sequential loop
(``benchmarks/bench_selective_scan.py``). Pass ``chunk_size`` to change it (larger T suits a GPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

try:  # optional CUDA fast path; any failure (missing package, no compiled extension) means "not available"
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_selective_scan
except Exception:  # noqa: BLE001 - ImportError, OSError from a missing .so, RuntimeError from CUDA init
    _mamba_selective_scan = None

__all__ = [
    "Mamba",
    "MambaLayer",
    "mamba_ssm_available",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "selective_scan_ssd",
]

_LOG_SPACE_LIMIT = 60.0  # exp(60) ~ 1e26: far from float32's overflow at exp(88)
DEFAULT_CHUNK = 8  # cmu-net.md suggests 64; on the 2-core CPU 8 is fastest (docs/performance.md)


def mamba_ssm_available() -> bool:
    """True when the ``mamba_ssm`` kernel imported and CUDA is usable."""
    return _mamba_selective_scan is not None and torch.cuda.is_available()


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Common front end: bias + softplus on delta; returns float32-or-wider working tensors."""
    dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_sequential(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """Reference: one step per position. Returns y (batch, E, L) [and the last state (batch, E, N)]."""
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    state = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        step = delta[:, :, t, None]  # (batch, E, 1)
        state = torch.exp(step * A) * state + step * B[:, None, :, t] * u[:, :, t, None]
        ys.append((state * C[:, None, :, t]).sum(-1))
    y = _finish(torch.stack(ys, dim=-1), u, D, z, out_dtype)
    return (y, state) if return_last_state else y


def segment_sum(a: torch.Tensor) -> torch.Tensor:
    """For a (..., T) return seg (..., T, T) with seg[t, s] = a[s+1] + ... + a[t] for s <= t and -inf above.

    Built as a cumulative sum down the rows of a matrix holding a[t] strictly below the diagonal, so every entry is
    a sum of the decays it spans and nothing else.
    """
    length = a.shape[-1]
    strictly_lower = torch.ones(length, length, dtype=torch.bool, device=a.device).tril(-1)
    rows = a[..., :, None].expand(*a.shape, length).masked_fill(~strictly_lower, 0.0)
    seg = rows.cumsum(dim=-2)
    lower = torch.ones(length, length, dtype=torch.bool, device=a.device).tril()
    return seg.masked_fill(~lower, float("-inf"))


def selective_scan_chunked(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Chunked parallel scan; same results as ``selective_scan_sequential`` (values and gradients)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    state = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for start in range(0, length, chunk_size):
        stop = min(start + chunk_size, length)
        dt = delta[:, :, start:stop]  # (batch, E, T)
        decay = dt[:, :, None, :] * A[None, :, :, None]  # a_t: (batch, E, N, T)
        inputs = dt[:, :, None, :] * B[:, None, :, start:stop] * u[:, :, None, start:stop]  # x_t: (batch, E, N, T)
        kernel = torch.exp(segment_sum(decay))  # (batch, E, N, T, T), zero above the diagonal
        states = (kernel @ inputs[..., None]).squeeze(-1)  # sum_s exp(seg[t, s]) x_s
        states = states + torch.exp(decay.cumsum(-1)) * state[..., None]  # carry h_0 into every step
        ys.append((states * C[:, None, :, start:stop]).sum(dim=2))  # <C_t, h_t>: (batch, E, T)
        state = states[..., -1]
    y = _finish(torch.cat(ys, dim=-1), u, D, z, out_dtype)
    return (y, state) if return_last_state else y


def _ssd_group(delta, B, u, C, A, state, T: int):
    """One group of G chunks of ``selective_scan_ssd``: (y (batch, E, G*T), state at its end)."""
    batch, channels, span = u.shape
    n, G = A.shape[1], span // T
    dt = delta.reshape(batch, channels, 1, G, T)
    decay = dt * A[None, :, :, None, None]  # a_t: (batch, E, N, G, T)
    inputs = dt * B.reshape(batch, 1, n, G, T) * u.reshape(batch, channels, 1, G, T)
    cum = decay.cumsum(-1)  # (batch, E, N, G, T), <= 0
    if T == 1:  # one step per chunk: from a zero start the state is the input itself
        intra = inputs
    elif float(cum[..., -1].detach().min()) >= -_LOG_SPACE_LIMIT:
        # states from a zero start, in log space: h_t = exp(S_t) * sum_{s<=t} exp(-S_s) x_s. exp(-S_s) <=
        # exp(limit) cannot overflow, and each term's rounding error stays below eps * |x_s|
        intra = torch.exp(cum) * (torch.exp(-cum) * inputs).cumsum(-1)
    else:  # cannot happen with the chunk length chosen above; kept as the exact (T x T per chunk) fallback
        intra = (torch.exp(segment_sum(decay)) @ inputs[..., None]).squeeze(-1)
    # state at the start of each chunk: chunk totals scanned by a segment sum over the chunks
    starts = torch.cat([state[..., None], intra[..., -1]], dim=-1)  # (batch, E, N, G + 1)
    totals = F.pad(cum[..., -1], (1, 0))  # (batch, E, N, G + 1), totals[c] = decay of chunk c - 1
    carried = (torch.exp(segment_sum(totals)) @ starts[..., None]).squeeze(-1)  # (batch, E, N, G + 1)
    states = intra + torch.exp(cum) * carried[..., :G, None]
    y = (states * C.reshape(batch, 1, n, G, T)).sum(2).reshape(batch, channels, G * T)
    return y, carried[..., G]


def selective_scan_ssd(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    chunk_size: int = 64,
    max_elements: int = 2**25,
):
    """Chunked scan with every chunk of a group computed at once (Mamba-2's "SSD" block decomposition).

    Added for cmu-net (its CPU training cost). Inside a chunk the states from a zero start are computed in log
    space, ``h_t = exp(S_t) * cumsum_s(exp(-S_s) x_s)`` with ``S_t`` the chunk's cumulative decay, which is
    safe while the chunk's total decay stays above -60 (``exp(60)`` is far from float32 overflow); the chunk length
    is shortened below ``chunk_size`` when the strongest per-step decay ``max(delta * |A|)`` requires it. Rather than a
    Python loop over chunks, all chunks of a group are done in one go and the states handed from chunk to chunk come
    from a segment sum over the chunks' total decays. Groups of chunks
    (sized so the (…, T, T) kernel stays under ``max_elements``) carry the last state to the next group. Far fewer,
    larger operations: on a CPU this is what makes small channel counts fast. The sequence is padded to a multiple
    of T with delta = 0 (decay 1, no input), which leaves the states unchanged.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    n = A.shape[1]
    # The log-space states need a chunk's total decay above -_LOG_SPACE_LIMIT: shorten the chunks when the
    # strongest per-step decay max(delta * |A|) would exceed it (S4D's A reaches -N, so d_state 16 often does)
    strongest = float((delta.detach().amax(dim=(0, 2)) * (-A.detach()).amax(dim=1)).max()) if length else 0.0
    T = max(1, min(chunk_size, int(_LOG_SPACE_LIMIT / strongest))) if strongest > 0 else chunk_size
    pad = (-length) % T
    if pad:
        u, delta, B, C = (F.pad(t, (0, pad)) for t in (u, delta, B, C))
    n_chunks = (length + pad) // T
    per_chunk = batch * channels * n  # a group of G chunks holds (G + 1)^2 hand-over and G * T state elements per row
    group = max(1, min(n_chunks, int(((T / 2) ** 2 + max_elements / per_chunk) ** 0.5 - T / 2)))
    state = u.new_zeros(batch, channels, n)
    # Each group runs under activation checkpointing when gradients are needed: only its inputs are kept and its
    # (batch, E, N, G, T) intermediates are recomputed in the backward pass, so memory stays O(batch E L + one
    # group) instead of O(batch E N L) (at 256² that is gigabytes per layer).
    saving = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C))
    ys = []
    for g0 in range(0, n_chunks, group):
        g1 = min(g0 + group, n_chunks)
        sl = slice(g0 * T, g1 * T)
        args = (delta[:, :, sl], B[:, :, sl], u[:, :, sl], C[:, :, sl], A, state, T)
        if saving:
            y_g, state = torch.utils.checkpoint.checkpoint(_ssd_group, *args, use_reentrant=False)
        else:
            y_g, state = _ssd_group(*args)
        ys.append(y_g)
    y = torch.cat(ys, dim=-1)[..., :length]
    y = _finish(y, u[..., :length], D, z[..., :length] if z is not None else None, out_dtype)
    return (y, state) if return_last_state else y


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Dispatch: ``mamba_ssm``'s CUDA kernel when it imported and ``u`` is on CUDA, else the chunked scan."""
    if _mamba_selective_scan is not None and u.is_cuda:
        return _mamba_selective_scan(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    return selective_scan_chunked(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size=chunk_size
    )


_SCANS = {
    "auto": selective_scan,
    "chunked": selective_scan_chunked,
    "sequential": selective_scan_sequential,
    "ssd": selective_scan_ssd,
}


class Mamba(nn.Module):
    """The Mamba block on tokens (batch, L, d_model) -> (batch, L, d_model), cmu-net.md "Mamba block".

    in_proj (no bias) -> (u, z); u -> depthwise causal Conv1d(k=d_conv) -> SiLU; x_proj (no bias) -> (delta, B, C);
    delta -> dt_proj -> softplus; selective scan with A = -exp(A_log) (S4D-real, A_log[e, n] = log(n + 1)) and D = 1;
    y * SiLU(z) -> out_proj (no bias). dt_proj's bias is set so that softplus(bias) is log-uniform in
    [dt_min, dt_max].

    ``scan`` picks the implementation: "auto" (mamba_ssm on CUDA, else chunked), "chunked", "ssd" or "sequential".
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        scan: str = "auto",
        chunk_size: int = DEFAULT_CHUNK,
    ):
        super().__init__()
        if scan not in _SCANS:
            raise ValueError(f"scan must be one of {sorted(_SCANS)}, got {scan!r}")
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan = scan
        self.chunk_size = chunk_size

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, padding=d_conv - 1, groups=self.d_inner)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        with torch.no_grad():
            bound = self.dt_rank**-0.5
            self.dt_proj.weight.uniform_(-bound, bound)
            log_dt = torch.empty(self.d_inner).uniform_(math.log(dt_min), math.log(dt_max))
            dt = log_dt.exp()
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a_init = torch.arange(1, d_state + 1, dtype=torch.float32).log()
        self.A_log = nn.Parameter(a_init.repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        u, z = self.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)  # each (batch, E, L)
        u = F.silu(self.conv1d(u)[..., :length])  # causal: keep the first L outputs
        delta, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (delta @ self.dt_proj.weight.T).transpose(1, 2)  # bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        kwargs = {"chunk_size": self.chunk_size} if self.scan != "sequential" else {}
        y = _SCANS[self.scan](
            u,
            delta,
            A,
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            **kwargs,
        )
        return self.out_proj(y.transpose(1, 2))


class MambaLayer(nn.Module):
    """CMU-Net's MambaLayer: (batch, C, *spatial) -> row-major tokens -> LayerNorm -> Mamba -> same shape.

    cmu-net.md states no residual, so ``residual=False`` is the default (the card's ``--mamba-residual`` flag turns
    it on). Works for 2D and 3D maps alike.
    """

    def __init__(self, channels: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 residual: bool = False, **mamba_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand, **mamba_kwargs)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        out = self.mamba(self.norm(tokens))
        if self.residual:
            out = out + tokens
        return out.transpose(1, 2).reshape(batch, channels, *spatial)
