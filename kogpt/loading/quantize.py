"""Weight-only int8 on the CPU: `Int8Linear`, and a loader that quantizes as it reads.

Each Linear keeps int8 weights with one bfloat16 scale per output channel and computes with
`torch.ops.aten._weight_int8pack_mm` on bfloat16 activations; the rest of the model (embeddings,
layer norms, attention) stays in bfloat16. `load_quantized()` reads the checkpoint one tensor at a
time and quantizes each weight as it arrives, so the float weights are never all in memory at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from kogpt.loading import weights

log = logging.getLogger(__name__)

COMPUTE_DTYPE = torch.bfloat16


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (out, in) and per-output-channel bfloat16 scales."""

    def __init__(self, in_features: int, out_features: int, bias: bool, device: torch.device | str | None = None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=COMPUTE_DTYPE, device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=COMPUTE_DTYPE, device=device) if bias else None)

    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize a float weight (out, in): symmetric, scale = max |w| of the row / 127.

        Rows go in blocks of about 4 MiB of float32, so the arithmetic stays in the CPU's caches.
        """
        out, n_in = weight.shape
        quantized = torch.empty(out, n_in, dtype=torch.int8)
        scales = torch.empty(out)
        step = max(1, (1 << 20) // n_in)
        for start in range(0, out, step):
            w = weight[start : start + step].to(torch.float32, copy=True)  # (rows, in)
            # The scale as it will be stored (bfloat16), so the int8 values are rounded against it.
            scale = (w.abs().amax(dim=1).clamp(min=1e-8) / 127).to(COMPUTE_DTYPE).float()  # (rows,)
            quantized[start : start + step] = w.div_(scale[:, None]).round_().clamp_(-127, 127)
            scales[start : start + step] = scale
        self.weight = quantized
        self.scales = scales.to(COMPUTE_DTYPE)  # exact: every value came from COMPUTE_DTYPE

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        layer.set_weight(linear.weight.detach())
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(COMPUTE_DTYPE)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE)  # (tokens, in)
        out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight, self.scales)  # (tokens, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def load_quantized(path: Path, config, method: str = "int8", **model_kwargs) -> nn.Module:
    """Build the model empty and fill it from the checkpoint in `path` one tensor at a time.

    Linear weights are quantized as they are read; everything else is cast to bfloat16.
    """
    if method != "int8":  # the plan refuses other methods on the CPU before any load
        raise ValueError(f"no CPU loader for --quantize {method}")

    def prepare(model: nn.Module) -> None:
        for name in _linear_names(model):
            parent, _, attr = name.rpartition(".")
            linear = model.get_submodule(name)
            empty = Int8Linear(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
            setattr(model.get_submodule(parent), attr, empty)

    def setter(module: nn.Module, attr: str, tensor: torch.Tensor) -> bool:
        if isinstance(module, Int8Linear) and attr == "weight":
            module.set_weight(tensor)
            return True
        return False

    return weights.load_streaming(path, config, COMPUTE_DTYPE, prepare, setter, **model_kwargs)
