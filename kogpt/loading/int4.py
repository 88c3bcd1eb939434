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
BLOCK = 64  # output rows torch's CPU packer interleaves (the rows of the last block: fewer, when not a multiple)
# `matmul_widened` dequantizes this much bfloat16 weight at a time (1,024 output rows of 4,096 inputs):
# on a 2-vCPU Xeon a 4096x16384 layer took 50 ms so, 85 ms by 1,024 rows of 16,384 inputs (32 MiB).
WIDENED_BYTES = 8 << 20


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


def matmul_widened(x: torch.Tensor, tensors: dict[str, torch.Tensor], group: int) -> torch.Tensor:
    """x (rows, in) -> (rows, out rounded up to 16) in bfloat16, like `matmul`, for many rows: the
    packed weight is widened to bfloat16 `WIDENED_BYTES` at a time and multiplied by
    `torch.mm` (AMX or AVX512-BF16 where the CPU has them). torch's int4 kernel computes in float32
    per row; on a 2-vCPU Xeon a 128-row chunk of a 16384x4096 layer took 104 ms by it, 45 ms so.

    torch's packer stores each block of 64 output rows (`BLOCK`) as bytes [input column][row within
    the block's first half], the first half's code in the low nibble and the second half's in the
    high one; a shorter last block (16, 32 or 48 rows) holds rows 2i and 2i + 1 in byte i.
    """
    packed, scales_and_zeros = tensors["packed"], tensors["scales_and_zeros"].to(DTYPE)
    n_out, n_in = packed.shape[0], packed.shape[1] * 2
    flat = x.to(DTYPE).contiguous()
    out = torch.empty(flat.shape[0], n_out, dtype=DTYPE)
    width = min(max(BLOCK, WIDENED_BYTES // (2 * n_in) // BLOCK * BLOCK), n_out)
    codes = torch.empty(n_in, width, dtype=torch.uint8)
    weight_t = torch.empty(n_in, width, dtype=DTYPE)
    full = n_out // BLOCK * BLOCK
    spans = [(start, min(start + width, full), BLOCK) for start in range(0, full, width)]
    spans += [(full, n_out, n_out - full)] if n_out > full else []
    for start, stop, block in spans:
        rows, half = stop - start, block // 2
        pairs = packed[start:stop].view(rows // block, n_in, half).permute(1, 0, 2)  # (in, blocks, half)
        nibbles = codes[:, :rows].view(n_in, rows // block, 2, half)  # low: the first half of a block's rows
        low, high = nibbles[:, :, 0], nibbles[:, :, 1]
        if block < BLOCK:  # the last, shorter block pairs neighbouring rows: row 2i low, row 2i + 1 high
            nibbles = codes[:, :rows].view(n_in, 1, half, 2)
            low, high = nibbles[..., 0], nibbles[..., 1]
        torch.bitwise_and(pairs, 15, out=low)
        torch.bitwise_right_shift(pairs, 4, out=high)
        signed = codes[:, :rows].sub_(8).view(torch.int8).view(n_in // group, group, rows)  # q - 8, wrapping
        # (groups, 1, rows), contiguous: a strided operand makes addcmul 5x slower
        scale = scales_and_zeros[:, start:stop, 0].contiguous().unsqueeze(1)
        zero = scales_and_zeros[:, start:stop, 1].contiguous().unsqueeze(1)
        torch.addcmul(zero, signed, scale, out=weight_t[:, :rows].view(n_in // group, group, rows))
        torch.mm(flat, weight_t[:, :rows], out=out[:, start:stop])
    return out


def dequantize(codes: torch.Tensor, scales_and_zeros: torch.Tensor, group: int) -> torch.Tensor:
    """The float32 weight (out, in) that int4 codes stand for; the reference the tests compare to."""
    scale = scales_and_zeros[..., 0].float().t().repeat_interleave(group, dim=1)  # (out, in)
    zero = scales_and_zeros[..., 1].float().t().repeat_interleave(group, dim=1)
    return (codes.float() - 8) * scale + zero
