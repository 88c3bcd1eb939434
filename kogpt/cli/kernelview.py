"""`--plan` on the CPU: the threads, the kernels that will compute each Linear in each phase of a
request, and the tokens/s to expect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from kogpt.placement.decide import Decision

KERNEL_OF_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def cpu_figures(config, decision: Decision) -> dict:
    """Threads, kernel per phase and why, bytes read per decoded token, the read bandwidth
    (remembered with the kernel choice, else measured now: a fraction of a second), the tokens/s it
    allows, and the measured seconds of the standard request per layout when remembered."""
    from kogpt.loading import choices, kernels

    dtype = str(decision.dtype).removeprefix("torch.")
    kernel = decision.kernel or KERNEL_OF_DTYPE.get(dtype, "fp32")
    fmt = decision.quantize if decision.quantize != "none" else ("16bit" if decision.kernel else dtype)
    why = decision.kernel_reason or decision.choice.reason
    shapes = kernels.linear_shapes(config)
    per_token = sum(count * out * n_in for (out, n_in), count in shapes.items()) * kernels.KERNELS[kernel].bytes_per_weight
    remembered = choices.cached_choice(fmt, decision.threads, shapes) if decision.kernel else None
    if remembered is not None and remembered.bandwidth_gb_s:
        bandwidth = remembered.bandwidth_gb_s * 1e9
    else:
        bandwidth = kernels.read_bandwidth(min(2 * kernels.last_level_cache_bytes(), 2**30))
    figures = {"threads": decision.threads, "format": fmt, "kernel": kernel, "why": why,
               "bytes_per_token": per_token, "read_gb_s": bandwidth / 1e9, "roofline_tok_s": bandwidth / per_token,
               "phases": dict(decision.phases)}  # fmt: skip
    if remembered is not None and remembered.kernel == kernel and remembered.seconds.get(kernel):
        figures["kernels_tok_s"] = 1 / remembered.seconds[kernel]
        figures["request_seconds"] = dict(remembered.scores)
    return figures


def print_cpu(console: Console, figures: dict) -> None:
    """Print the CPU figures under the placement tables."""
    from kogpt.loading.phases import describe

    phases = f" ({describe(figures['phases'])})" if figures.get("phases") else ""
    console.print(
        Text(
            f"CPU compute: {figures['threads']} thread{'s' if figures['threads'] != 1 else ''}; "
            f"{figures['format']} Linear layers with kernel "
            f"{figures['kernel']}{phases}: {figures['why']}"
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
