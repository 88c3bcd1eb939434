"""bfloat16 Linear layers on the CPU: a decode step by `torch.mv`, and prompts in float32 where needed.

- `gemv`: one input row (a decode step) is computed by `torch.mv`, where the kernel chooser measured
  that faster than `F.linear` (kernel `bf16mv`; 1.15-1.2x on a 2-vCPU Xeon, rotating over more weight
  than its cache holds).
- `upcast`: on CPUs without bfloat16 matrix instructions (no AVX512-BF16, no AMX), torch's bfloat16
  matrix multiply costs about as much per input row as a matrix-vector product: measured, a
  4096x16384 layer takes 1.38 s for 200 rows (a 200-token prompt) against 0.31 s when the weight is
  widened to float32 in 1024-row blocks and the float32 GEMM does the work.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_ROWS = 16  # below this the bfloat16 kernel is as fast (20 rows: 141 ms vs 132 ms)
BLOCK_ROWS = 1024  # weight rows widened at a time: 16 MiB of float32 for KoGPT's 4096 columns


class CpuLinear(nn.Linear):
    """An `nn.Linear` whose one-row inputs may go through `torch.mv` (`gemv`) and whose many-row
    inputs may be computed in float32, a block of the weight at a time (`upcast`)."""

    gemv = False
    upcast = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        training = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)
        if self.weight.dtype != torch.bfloat16 or x.dtype != torch.bfloat16 or training:
            return super().forward(x)
        if rows == 1 and self.gemv:
            out = torch.mv(self.weight, x.reshape(-1))
            if self.bias is not None:
                out += self.bias
            return out.reshape(*x.shape[:-1], self.out_features)
        if rows >= MIN_ROWS and self.upcast:
            return blocked_float32_linear(x, self.weight, self.bias)
        return super().forward(x)


def blocked_float32_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` computed in float32, widening `weight` (out, in) block by block."""
    flat = x.reshape(-1, x.shape[-1]).float()  # (rows, in)
    out = torch.empty(flat.shape[0], weight.shape[0], dtype=torch.float32)  # (rows, out)
    block = torch.empty(min(BLOCK_ROWS, weight.shape[0]), weight.shape[1], dtype=torch.float32)
    for start in range(0, weight.shape[0], BLOCK_ROWS):
        rows = weight[start : start + BLOCK_ROWS]
        widened = block[: rows.shape[0]]
        widened.copy_(rows)
        torch.mm(flat, widened.t(), out=out[:, start : start + rows.shape[0]])
    if bias is not None:
        out += bias.float()
    return out.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])


def needs_upcast() -> bool:
    """True on CPUs whose bfloat16 matrix multiply is slow for many rows (no AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    fast = getattr(cpu, "_is_avx512_bf16_supported", lambda: True)() or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    return not fast


def apply(model: nn.Module, *, upcast: bool, gemv: bool = False) -> int:
    """Make every plain `nn.Linear` of `model` a `CpuLinear` doing `upcast` and `gemv`; return how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = CpuLinear
            module.upcast, module.gemv = upcast, gemv
            count += 1
    return count
