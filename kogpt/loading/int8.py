"""int8 weights on the CPU: one symmetric scale per output row, computed by one of three kernels.

`w8`: torch's weight-only `_weight_int8pack_mm` (bfloat16 activations). `w8a8`: activations
quantized per row too, int8 x int8 by `torch._int_mm` (VNNI, AMX). `w8dnn`: the same arithmetic by
oneDNN's int8 Linear over its own blocked weight layout, reordered at load from the int8 tensors
(that layout cannot be saved, so the converted-weights cache keeps the plain ones).
"""

from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (codes (out, in) int8, scales (out,) exact in bfloat16), in ~4 MiB blocks."""
    out, n_in = weight.shape
    codes = torch.empty(out, n_in, dtype=torch.int8)
    scales = torch.empty(out)
    step = max(1, (1 << 20) // n_in)
    for start in range(0, out, step):
        w = weight[start : start + step].to(torch.float32, copy=True)  # (rows, in)
        # The scale as it will be stored (bfloat16), so the int8 values are rounded against it.
        scale = (w.abs().amax(dim=1).clamp(min=1e-8) / 127).to(torch.bfloat16).float()  # (rows,)
        codes[start : start + step] = w.div_(scale[:, None]).round_().clamp_(-127, 127)
        scales[start : start + step] = scale
    return codes, scales


def pack(weight: torch.Tensor) -> Tensors:
    codes, scales = int8_rows(weight)
    return {"weight": codes, "scales": scales.to(torch.bfloat16)}


def run_w8(x: torch.Tensor, t: Tensors) -> torch.Tensor:
    return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), t["weight"], t["scales"])


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations (rows, in) as symmetric int8 with one float32 scale per row: (codes, scales (rows, 1))."""
    xf = x.float()
    x_scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
    return xf.div(x_scale).round_().clamp_(-127, 127).to(torch.int8), x_scale


def run_w8a8(x: torch.Tensor, t: Tensors) -> torch.Tensor:
    """Activations quantized per row on the fly (symmetric int8), int8 x int8 -> int32, then rescaled."""
    xq, x_scale = quantize_rows(x)
    acc = torch._int_mm(xq, t["weight"].t())  # (rows, out) int32
    return (acc.float().mul_(x_scale).mul_(t["scales"])).to(torch.bfloat16)


def onednn() -> bool:
    """Whether this torch has oneDNN's int8 Linear (x86 and Arm builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_prepack")


def prepare_w8dnn(t: Tensors) -> Tensors:
    """w8's int8 weight reordered into oneDNN's blocked int8 layout (an opaque tensor, made at load:
    about 40 ms per 16M weights on 2 Xeon cores); its scales in float32."""
    scales = t["scales"].float()
    return {"weight": torch.ops.onednn.qlinear_prepack(t["weight"], None), "scales": scales,
            "zeros": torch.zeros(len(scales), dtype=torch.long)}  # fmt: skip


def run_w8dnn(x: torch.Tensor, t: Tensors) -> torch.Tensor:
    """w8a8 by oneDNN (VNNI/AMX int8): activations quantized per row. oneDNN takes one activation
    scale for all rows: one row (a decode step) hands it over and gets bfloat16 back; more rows are
    handed over with scale 1 and their row scales applied to the float32 result."""
    if x.shape[0] == 1:  # fewer elementwise ops: ~6% of a 2048x2048 layer's call
        scale = max(float(x.abs().max()), 1e-8) / 127
        xq = x.float().div_(scale).round_().clamp_(-127, 127).to(torch.int8)
        return _qlinear(xq, scale, t, torch.bfloat16)
    xq, x_scale = quantize_rows(x)
    return _qlinear(xq, 1.0, t, torch.float32).mul_(x_scale).to(torch.bfloat16)


def _qlinear(xq: torch.Tensor, x_scale: float, t: Tensors, dtype: torch.dtype) -> torch.Tensor:
    """(rows, out) = x_scale * xq @ (codes * scales)ᵀ in `dtype`; the scales are float32 unless a
    module.to() made them 16-bit."""
    return torch.ops.onednn.qlinear_pointwise(
        xq, x_scale, 0, t["weight"], t["scales"].float(), t["zeros"], None, 1.0, 0, dtype, "none", [], ""
    )
