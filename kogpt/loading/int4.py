"""Weight-only int4 on the CPU with per-group scales, computed by torch's `_weight_int4pack_mm_for_cpu`.

Each group of `group` input columns of an output row gets its own bfloat16 scale and zero point
(asymmetric min/max quantization, as gpt-fast does). torch's kernel dequantizes `(q - 8) * scale +
zero`; its vectorised x86 code takes bfloat16 activations only, so activations are cast to bfloat16.
"""

from __future__ import annotations

import torch

GROUPS = (32, 64, 128, 256)
INNER_K_TILES = 2  # what torch's CPU packer expects for any K that is a multiple of 16
DTYPE = torch.bfloat16


def fits(in_features: int, group: int) -> bool:
    """Whether a weight with `in_features` columns can use groups of `group` columns."""
    return in_features % group == 0 and in_features % 16 == 0


def quantize(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float weight (out, in) -> (int32 codes 0..15 (out, in), scales_and_zeros (in/group, out, 2))."""
    out, n_in = weight.shape
    if not fits(n_in, group):
        raise ValueError(f"int4 group {group} does not divide {n_in} input features")
    w = weight.to(torch.float32, copy=True).reshape(out, n_in // group, group)
    low = w.amin(dim=2, keepdim=True)  # (out, groups, 1)
    high = w.amax(dim=2, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-8)
    codes = w.sub_(low).div_(scale).round_().clamp_(0, 15).reshape(out, n_in).to(torch.int32)
    # (q - 8) * scale + zero == q * scale + low  <=>  zero = low + 8 * scale
    zero = low + 8 * scale
    scales_and_zeros = torch.stack([scale.squeeze(2).t(), zero.squeeze(2).t()], dim=2).to(DTYPE)
    return codes, scales_and_zeros


def pack(weight: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """The tensors an int4 Linear keeps: `packed` (out, in/2) uint8 and `scales_and_zeros`.

    Rows go in blocks of a multiple of 64 (torch's packer interleaves 64 rows at a time, so blocks
    pack alike) of about 4 MiB of float32: the float32 and int32 temporaries stay small, even for
    the 64512-row lm_head. torch's packer needs a multiple of 16 output rows: others get zero
    rows, which the layer drops from its output.
    """
    short = -weight.shape[0] % 16
    if short:
        weight = torch.cat([weight, weight.new_zeros(short, weight.shape[1])])
    out, n_in = weight.shape
    step = max(64, (1 << 20) // n_in // 64 * 64)
    packed, scales_and_zeros = [], []
    for start in range(0, out, step):
        codes, block_scales = quantize(weight[start : start + step], group)
        packed.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES))
        scales_and_zeros.append(block_scales)
    return {"packed": torch.cat(packed), "scales_and_zeros": torch.cat(scales_and_zeros, dim=1)}


def matmul(x: torch.Tensor, tensors: dict[str, torch.Tensor], group: int) -> torch.Tensor:
    """x (rows, in) -> (rows, out rounded up to 16) in bfloat16."""
    return torch.ops.aten._weight_int4pack_mm_for_cpu(
        x.to(DTYPE).contiguous(), tensors["packed"], group, tensors["scales_and_zeros"]
    )


def dequantize(codes: torch.Tensor, scales_and_zeros: torch.Tensor, group: int) -> torch.Tensor:
    """The float32 weight (out, in) that int4 codes stand for; the reference the tests compare to."""
    scale = scales_and_zeros[..., 0].float().t().repeat_interleave(group, dim=1)  # (out, in)
    zero = scales_and_zeros[..., 1].float().t().repeat_interleave(group, dim=1)
    return (codes.float() - 8) * scale + zero
