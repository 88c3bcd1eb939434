"""Quantized weights on the CPU: `PackedLinear`, `quantize_model()`, and a loader that quantizes as it reads.

Each Linear keeps its weight packed as its kernel (see `kogpt.loading.kernels`) wants it: int8 with
one scale per output channel (`--quantize int8`), or int4 with per-group scales and zero points
(`--quantize int4`). The rest of the model (embeddings, layer norms, attention) stays in bfloat16.
`load_quantized()` reads the checkpoint one tensor at a time and packs each weight as it arrives,
so the float weights are never all in memory at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kogpt.loading import cache, int4, kernels, weights
from kogpt.loading.phases import PHASES, phase_of

log = logging.getLogger(__name__)

METHODS = ("none", "int8", "int4")
COMPUTE_DTYPE = torch.bfloat16


class PackedLinear(nn.Module):
    """A Linear layer whose weight is packed for one kernel of `kogpt.loading.kernels.KERNELS`,
    and whose inputs go to the kernel of their phase (`phases`: by their rows, kernels of that
    layout; default: `kernel` in every phase)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, kernel: str, device: torch.device | str | None = None,
        phases: dict[str, str] | None = None,
    ):  # fmt: skip
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.kernel = kernels.KERNELS[kernel]
        self.set_phases(phases or {})
        self.prepared = False
        for name in self.kernel.buffers:  # placeholders until set_weight or a cached load fills them
            self.register_buffer(name, torch.empty(0, device="meta"))
        self.register_buffer("bias", torch.empty(out_features, dtype=COMPUTE_DTYPE, device=device) if bias else None)

    def set_phases(self, phases: dict[str, str]) -> None:
        """Run each phase by its kernel in `phases` ({phase: kernel}, of this layer's layout); the rest by `kernel`."""
        names = {phase: phases.get(phase, self.kernel.name) for phase in PHASES}
        if any(kernels.KERNELS[name].layout != self.kernel.layout for name in names.values()):
            raise ValueError(f"kernels {sorted(set(names.values()))} do not share the packed layout of {self.kernel.name}")
        self.phases = names
        self.runs = {phase: kernels.KERNELS[name].run for phase, name in names.items()}

    def set_weight(self, weight: torch.Tensor) -> None:
        """Pack a float weight (out, in) for this layer's kernel."""
        for name, tensor in self.kernel.pack(weight).items():
            setattr(self, name, tensor)

    def prepare(self) -> list[torch.Tensor]:
        """Turn the tensors as packed (and cached) into those the kernel runs on, once: after the
        layer is filled and the cache written (see `Kernel.prepare`). Returns the tensors replaced."""
        if self.kernel.prepare is None or self.prepared:
            return []
        stored = {name: getattr(self, name) for name in self.kernel.buffers}
        for name, tensor in self.kernel.prepare(stored).items():
            self.register_buffer(name, tensor)
        self.prepared = True
        return [tensor for name, tensor in stored.items() if getattr(self, name) is not tensor]

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str | None = None) -> PackedLinear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, *([kernel] if kernel else []))
        layer.set_weight(linear.weight.detach())
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(COMPUTE_DTYPE)
        layer.prepare()
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)  # (tokens, in)
        out = self.runs[phase_of(flat.shape[0])](flat, self._buffers)  # (tokens, out or more)
        if out.shape[-1] != self.out_features:  # int4 pads the output rows to a multiple of 16
            out = out[:, : self.out_features]
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        phases = ",".join(self.phases[phase] for phase in PHASES)
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, kernels={phases}"


class Int8Linear(PackedLinear):
    """Weight-only int8 (`_weight_int8pack_mm`): int8 weights (out, in), one bfloat16 scale per output channel."""

    def __init__(self, in_features: int, out_features: int, bias: bool, kernel: str = "w8", device=None):
        super().__init__(in_features, out_features, bias, kernel, device)


def check_method(method: str, device: str) -> None:
    """Raise ValueError for a method this module cannot run on `device`."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization {method!r}; choose one of {', '.join(METHODS)}")
    if method != "none" and device != "cpu":
        raise ValueError(f"--quantize {method} with kogpt's kernels runs on the CPU; use --device cpu")


def default_kernel(method: str, widths: set[int] | None = None) -> str:
    """The method's portable kernel; for int4, the largest group up to 128 dividing every width in `widths`."""
    if method != "int4" or not widths:
        return kernels.DEFAULTS[method]
    fitting = [group for group in int4.GROUPS if group <= 128 and all(int4.fits(width, group) for width in widths)]
    if not fitting:
        raise ValueError(f"--quantize int4 needs Linear inputs divisible by 32; this model has {sorted(widths)}")
    return f"w4g{max(fitting)}"


def widths(config) -> set[int]:
    """The input widths of a GPT-J's Linear layers."""
    return {config.n_embd, getattr(config, "n_inner", None) or 4 * config.n_embd}


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def quantize_model(model: nn.Module, method: str = "int8", kernel: str | None = None) -> nn.Module:
    """Replace every `nn.Linear` of a loaded float model by a `PackedLinear`, in place; returns the model."""
    check_method(method, "cpu")
    if method == "none":
        return model
    kernel = kernel or default_kernel(method, {model.get_submodule(n).in_features for n in _linear_names(model)})
    for name in _linear_names(model):
        parent, _, attr = name.rpartition(".")
        linear = model.get_submodule(name)
        setattr(model.get_submodule(parent), attr, PackedLinear.from_linear(linear, kernel))
    return prepared(model.to(COMPUTE_DTYPE))


def prepared(model: nn.Module, replaced: Callable[[torch.Tensor], None] = lambda tensor: None) -> nn.Module:
    """The model with every `PackedLinear` prepared for its kernel (`PackedLinear.prepare`), layer by
    layer; `replaced` is told of each tensor that preparing a layer replaced, right after."""
    for module in model.modules():
        if isinstance(module, PackedLinear):
            for tensor in module.prepare():
                replaced(tensor)
    return model


def prepare(kernel: str, phases: dict[str, str] | None = None):
    """`prepare(model)` for `weights.load_streaming`: swap every Linear for an empty `PackedLinear`
    running each phase by its kernel in `phases`."""

    def swap(model: nn.Module) -> None:
        for name in _linear_names(model):
            parent, _, attr = name.rpartition(".")
            linear = model.get_submodule(name)
            empty = PackedLinear(linear.in_features, linear.out_features, linear.bias is not None, kernel, "meta", phases)
            setattr(model.get_submodule(parent), attr, empty)

    return swap


def setter(module: nn.Module, attr: str, tensor: torch.Tensor) -> bool:
    """`setter` for `weights.load_streaming`: pack the float weight of a `PackedLinear` as it is read."""
    if isinstance(module, PackedLinear) and attr == "weight":
        module.set_weight(tensor)
        return True
    return False


def load_quantized(path: Path, config, method: str = "int8", kernel: str | None = None, **model_kwargs) -> nn.Module:
    """Build the model empty and fill it from the checkpoint in `path` one tensor at a time.

    Linear weights are packed for `kernel` (default: the method's portable kernel) as they are
    read; everything else is cast to bfloat16.
    """
    check_method(method, "cpu")
    kernel = kernel or default_kernel(method, widths(config))
    return prepared(weights.load_streaming(path, config, COMPUTE_DTYPE, prepare(kernel), setter, **model_kwargs))


def load_cpu(
    path: Path, config, dtype: torch.dtype, method: str, kernel: str | None, use_cache: bool = True, mmap: bool = True,
    phases: dict[str, str] | None = None, **model_kwargs,
) -> nn.Module:  # fmt: skip
    """The CPU model in `dtype` (`method` none) or packed for `kernel` (int8, int4; each phase run
    by its kernel in `phases`), from the converted-weights cache when it holds this checkpoint so
    converted, else converted and cached. The cache file is mapped, or with `mmap` False read into memory.
    """
    check_method(method, "cpu")
    if method == "none":  # the weights are `dtype` whichever kernel runs them: one entry per dtype
        kernel, swap, fmt, layout = None, None, "16bit", LAYOUTS.get(dtype, str(dtype).removeprefix("torch."))
    else:
        kernel = kernel or default_kernel(method, widths(config))
        swap, fmt, layout = prepare(kernel, phases), method, kernels.KERNELS[kernel].cache_layout  # w8a8 keeps w8's tensors
    files = weights.weight_files(path)
    entry = cache.entry_for(path, files, fmt, layout) if use_cache else None

    def expected() -> dict:
        return expected_tensors(config, dtype, swap, **model_kwargs)

    mapped = cache.open_entry(entry, mmap, expected) if entry is not None else None
    if mapped is not None:
        log.info("weights %s the converted-weights cache %s", "mapped from" if mmap else "read into memory from", entry.path)
        from_file = {tensor.data_ptr() for tensor in mapped.values()} if mmap else set()

        def release(tensor: torch.Tensor) -> None:  # a mapped tensor that preparing replaced leaves the process
            if tensor.data_ptr() in from_file:  # (never anonymous memory: its pages would read back as zeros)
                weights.release(tensor)

        return prepared(weights.load_streaming(path, config, dtype, swap, tensors=mapped.items(), **model_kwargs), release)
    model = weights.load_streaming(path, config, dtype, swap, setter if swap else None, **model_kwargs)
    if entry is not None and cache.store(entry, model.state_dict()):
        weights.drop_from_page_cache(files)  # read again only to convert to another format
    return prepared(model)


# The packed layout of 16-bit weights is their dtype alone (bf16 and bf16mv share it).
LAYOUTS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def expected_tensors(config, dtype: torch.dtype, swap=None, **model_kwargs) -> dict[str, tuple[list[int], torch.dtype]]:
    """{name: (shape, dtype)} of the model's state as converted for `swap`'s kernel, computed on
    the meta device (no memory, no arithmetic): what a converted-weights cache entry must hold."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **model_kwargs)
    if swap is not None:
        swap(model)
        with torch.device("meta"):
            for module in model.modules():
                if isinstance(module, PackedLinear):
                    module.set_weight(torch.empty(module.out_features, module.in_features))
    return {name: (list(t.shape), t.dtype) for name, t in model.state_dict().items()}
