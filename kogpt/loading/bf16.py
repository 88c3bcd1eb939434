"""16-bit Linear layers on the CPU that run each phase of a request with its own kernel, and
`blocked_float32_linear`, the float32 way of computing many rows on 16-bit weights.

- a decode step's one row may go through `torch.mv` (kernel `bf16mv`; 1.15-1.2x on a 2-vCPU Xeon,
  rotating over more weight than its cache holds);
- many rows may be computed in float32, widening the weight a block at a time (`bf16f32`,
  `fp16f32`), or float16 weights in bfloat16 (`fp16bf16`, for CPUs with bfloat16 matrix
  instructions, where float16's own products are slow): on CPUs without bfloat16 matrix instructions (no AVX512-BF16, no AMX), torch's
  bfloat16 matrix multiply costs about as much per row as a matrix-vector product (measured, a
  4096x16384 layer: 1.38 s for 200 rows against 0.31 s in float32 blocks of 1024 rows), and
  float16's does on most CPUs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kogpt.loading.phases import phase_of

BLOCK_ROWS = 1024  # weight rows widened at a time: 16 MiB of float32 for KoGPT's 4096 columns
Run = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]  # x (rows, in), {"weight": w} -> (rows, out)


class CpuLinear(nn.Linear):
    """An `nn.Linear` whose inputs go to the run function of their phase (`phases.phase_of` their
    rows); a phase without one, a model cast to another dtype since, and training use `F.linear`."""

    runs: dict[str, Run] | None = None  # set per layer by `apply`
    runs_dtype: torch.dtype | None = None  # the weight's dtype the runs were given for

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        training = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)
        cast = x.dtype != self.weight.dtype or self.weight.dtype != self.runs_dtype
        run = None if cast or training or not self.runs else self.runs.get(phase_of(rows))
        if run is None:
            return super().forward(x)
        out = run(x.reshape(rows, self.in_features), {"weight": self.weight})  # (rows, out)
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def blocked_float32_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed in float32, widening `weight` (out, in) block by block."""
    return blocked_linear(x, weight, bias, torch.float32)


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, compute: torch.dtype) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed in `compute`, converting `weight` (out, in) block by block."""
    flat = x.reshape(-1, x.shape[-1]).to(compute)  # (rows, in)
    out = torch.empty(flat.shape[0], weight.shape[0], dtype=compute)  # (rows, out)
    block = torch.empty(min(BLOCK_ROWS, weight.shape[0]), weight.shape[1], dtype=compute)
    for start in range(0, weight.shape[0], BLOCK_ROWS):
        rows = weight[start : start + BLOCK_ROWS]
        converted = block[: rows.shape[0]]
        converted.copy_(rows)
        torch.mm(flat, converted.t(), out=out[:, start : start + rows.shape[0]])
    if bias is not None:
        out += bias.to(compute)
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def needs_upcast() -> bool:
    """True on CPUs whose bfloat16 matrix multiply is slow for many rows (no AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    fast = getattr(cpu, "_is_avx512_bf16_supported", lambda: True)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    return not fast


def apply(model: nn.Module, runs: dict[str, Run]) -> int:
    """Make every plain `nn.Linear` of `model` a `CpuLinear` with `runs` ({phase: run}); return how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = CpuLinear
            module.runs, module.runs_dtype = dict(runs), module.weight.dtype
            count += 1
    return count
