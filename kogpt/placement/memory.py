"""Memory arithmetic for a GPT-J checkpoint: parameter count, weight and KV-cache bytes, dtype policy.

Everything here is a pure function of a config and injected memory figures, so the policy is
tested for any machine without owning that machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

GiB = 1024**3
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Room left beside the weights on the CPU for activations, the tokenizer and the Python process.
CPU_HEADROOM_BYTES = 1 * GiB


def weight_bytes(n_params: int, dtype: torch.dtype) -> int:
    return n_params * dtype.itemsize


def kv_layer_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """Bytes of one layer's key/value cache for `tokens` positions at batch 1: keys and values, (T, n_embd) each."""
    return 2 * tokens * config.n_embd * dtype.itemsize


def kv_cache_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """Bytes of the whole key/value cache for `tokens` positions at batch 1."""
    return config.n_layer * kv_layer_bytes(config, tokens, dtype)


def format_bytes(n: int | float) -> str:
    """Bytes for people: GiB with two decimals, KiB or MiB for what would show as 0.00 GiB."""
    if n >= GiB / 100 or n == 0:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


@dataclass(frozen=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str


def choose_dtype(
    requested: str,
    device: str,
    stored: torch.dtype,
    n_params: int,
    free_bytes: int,
    kv_bytes_16bit: int,
) -> DtypeChoice:
    """Pick the compute dtype.

    `stored` is the checkpoint's own dtype (float16 for the float16 revision), `free_bytes` the free
    memory of `device`, `kv_bytes_16bit` the 16-bit KV cache at full context (doubled for float32).
    An explicit request always wins; `auto` never computes in float16 on the CPU, where half
    precision is slow and partly unimplemented, and keeps float32 only where it fits.
    """
    if requested != "auto":
        dtype = DTYPES[requested]
        if device == "cpu" and dtype == torch.float16:
            log.warning("float16 on the CPU is slow; --dtype bfloat16 or float32 is usually faster")
        return DtypeChoice(dtype, f"--dtype {requested} was asked for")

    fp32_need = weight_bytes(n_params, torch.float32) + 2 * kv_bytes_16bit
    if device == "cuda":
        if stored != torch.float32:
            return DtypeChoice(torch.float16, "the checkpoint is stored in half precision")
        if fp32_need <= free_bytes:
            return DtypeChoice(torch.float32, f"float32 weights fit the GPU's {format_bytes(free_bytes)} free")
        return DtypeChoice(
            torch.float16,
            f"float32 needs {format_bytes(fp32_need)}, the GPU has {format_bytes(free_bytes)} free",
        )
    if fp32_need + CPU_HEADROOM_BYTES <= free_bytes:
        return DtypeChoice(torch.float32, f"float32 weights fit in {format_bytes(free_bytes)} of available RAM")
    return DtypeChoice(
        torch.bfloat16,
        f"float32 needs {format_bytes(fp32_need + CPU_HEADROOM_BYTES)}, only {format_bytes(free_bytes)} "
        "of RAM is available; bfloat16 halves that (float16 is slow on CPUs)",
    )


def free_memory(device: str) -> int:
    """Free bytes on `device`: available RAM for the CPU, free memory of the current GPU for CUDA."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return free
    import psutil

    return psutil.virtual_memory().available
