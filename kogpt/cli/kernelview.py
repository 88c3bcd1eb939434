"""`--plan` on the CPU: the threads, the kernel that will compute each Linear, and the tokens/s to expect."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

KERNEL_OF_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def cpu_figures(config, quantize: str, dtype: str, requested_dtype: str, threads: int | None) -> dict:
    """What a CPU load would compute with: threads, format, kernel (remembered or not yet measured),
    bytes read per token, the read bandwidth (remembered with the choice, else measured now) and
    the tokens/s it allows."""
    from kogpt.loading import choices, kernels

    threads = threads or kernels.default_threads()
    fmt = quantize if quantize != "none" else ("16bit" if requested_dtype == "auto" and dtype == "bfloat16" else None)
    choice = choices.cached_choice(fmt, threads) if fmt else None
    if choice is not None:
        kernel, why = choice.kernel, f"measured on this CPU: {choice.why}"
    elif fmt:
        kernel, why = kernels.DEFAULTS[fmt], "not measured on this CPU yet: the first load measures the candidates (seconds)"
    else:
        kernel, why = KERNEL_OF_DTYPE.get(dtype, "fp32"), f"--dtype {requested_dtype}" if requested_dtype != "auto" else "float32 fits"
    shapes = kernels.linear_shapes(config)
    per_token = sum(count * out * n_in for (out, n_in), count in shapes.items()) * kernels.KERNELS[kernel].bytes_per_weight
    bandwidth = choice.bandwidth_gb_s * 1e9 if choice and choice.bandwidth_gb_s else None
    if bandwidth is None:
        bandwidth = kernels.read_bandwidth(min(2 * kernels.last_level_cache_bytes(), 2**30))
    figures = {"threads": threads, "format": fmt or dtype, "kernel": kernel, "why": why,
               "bytes_per_token": per_token, "read_gb_s": bandwidth / 1e9, "roofline_tok_s": bandwidth / per_token}  # fmt: skip
    if choice is not None and choice.seconds.get(kernel):
        figures["kernels_tok_s"] = 1 / choice.seconds[kernel]
    return figures


def print_cpu(console: Console, figures: dict) -> None:
    """Print the CPU figures under the placement tables."""
    console.print(
        Text(
            f"CPU compute: {figures['threads']} threads; {figures['format']} Linear layers with kernel "
            f"{figures['kernel']} ({figures['why']})"
        )
    )
    measured = f"; the measured kernels alone allow {figures['kernels_tok_s']:.2f}" if "kernels_tok_s" in figures else ""
    console.print(
        Text(
            f"expected decode speed: at most {figures['roofline_tok_s']:.2f} tokens/s "
            f"({figures['bytes_per_token'] / 2**30:.2f} GiB of weights per token at {figures['read_gb_s']:.1f} GB/s read bandwidth)"
            f"{measured}"
        )
    )
