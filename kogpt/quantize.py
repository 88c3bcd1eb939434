"""Weight-only int8 on the CPU: `Int8Linear`, `quantize_model()`, and a loader that quantizes as it reads.

Each Linear keeps int8 weights with one bfloat16 scale per output channel and computes with
`torch.ops.aten._weight_int8pack_mm` on bfloat16 activations; the rest of the model (embeddings,
layer norms, attention) stays in bfloat16. `load_quantized()` reads the checkpoint one tensor at a
time and quantizes each weight as it arrives, so the float weights are never all in memory at once.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

METHODS = ("none", "int8")
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
        """Quantize a float weight (out, in): symmetric, scale = max |w| of the row / 127."""
        w = weight.float()
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127  # (out,)
        self.weight = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.scales = scales.to(COMPUTE_DTYPE)

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


def check_method(method: str, device: str) -> None:
    """Raise ValueError for a method this module cannot run on `device`."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization {method!r}; choose one of {', '.join(METHODS)}")
    if method == "int8" and device != "cpu":
        raise ValueError("--quantize int8 runs on the CPU; use --device cpu")


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def quantize_model(model: nn.Module, method: str = "int8") -> nn.Module:
    """Replace every `nn.Linear` of a loaded float model by an `Int8Linear`, in place; returns the model."""
    check_method(method, "cpu")
    if method == "none":
        return model
    for name in _linear_names(model):
        parent, _, attr = name.rpartition(".")
        linear = model.get_submodule(name)
        setattr(model.get_submodule(parent), attr, Int8Linear.from_linear(linear))
    return model.to(COMPUTE_DTYPE)


def load_quantized(path: Path, config, method: str = "int8", **model_kwargs) -> nn.Module:
    """Build the model empty, then fill it from the checkpoint in `path` one tensor at a time.

    Linear weights are quantized as they are read; everything else is cast to bfloat16.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, GenerationConfig

    check_method(method, "cpu")
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=COMPUTE_DTYPE, **model_kwargs)
    for name in _linear_names(model):
        parent, _, attr = name.rpartition(".")
        linear = model.get_submodule(name)
        empty = Int8Linear(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        setattr(model.get_submodule(parent), attr, empty)
    for name, tensor in read_tensors(path):
        owner, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            log.debug("skipping %s: not part of the model", name)
            continue
        if isinstance(module, Int8Linear) and attr == "weight":
            module.set_weight(tensor)
        elif attr in module._parameters:
            module._parameters[attr] = nn.Parameter(tensor.to(COMPUTE_DTYPE), requires_grad=False)
        elif attr in module._buffers:
            module._buffers[attr] = tensor.to(COMPUTE_DTYPE)
        else:
            log.debug("skipping %s: not part of the model", name)
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        raise ValueError(f"the checkpoint has no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) from the weight files in `path`, each tensor a private copy."""
    for file in _weight_files(path):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            for name in list(state):
                mapped = state.pop(name)
                yield name, mapped.clone()
                _release(mapped)


def _weight_files(path: Path) -> list[Path]:
    for single, index in (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            shards = json.loads((path / index).read_text())["weight_map"].values()
            return [path / shard for shard in sorted(set(shards))]
    raise FileNotFoundError(f"no weight files in {path}")


def _release(mapped: torch.Tensor) -> None:
    """Drop the pages of a memory-mapped tensor from this process (they stay in the page cache).

    Without this every page read stays mapped, and the resident size grows by the file's size.
    """
    storage = mapped.untyped_storage()
    start = storage.data_ptr() & ~(mmap.PAGESIZE - 1)
    end = storage.data_ptr() + storage.nbytes()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED
