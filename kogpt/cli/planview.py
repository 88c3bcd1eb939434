"""`--plan`: the load decision for the flags, printed as rich tables, without loading any weight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kogpt.placement.memory import format_bytes

if TYPE_CHECKING:
    from kogpt.placement.decide import Decision
    from kogpt.placement.options import Hardware, Options
    from kogpt.placement.plan import Plan


def size(n: int) -> str:
    return format_bytes(n) if n else "-"


def short(name: str) -> str:
    return name.removeprefix("transformer.")


def runs(blocks: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Consecutive blocks on the same device, merged: ('h.0 .. h.12 (13 blocks)', 'cuda:0', bytes)."""
    merged: list[list] = []
    for name, device, nbytes in blocks:
        if merged and merged[-1][1] == device:
            merged[-1][2] += nbytes
            merged[-1][3].append(name)
        else:
            merged.append([name, device, nbytes, [name]])
    rows = []
    for _, device, nbytes, names in merged:
        text = short(names[0]) if len(names) == 1 else f"{short(names[0])} .. {short(names[-1])} ({len(names)} blocks)"
        rows.append((text, device, nbytes))
    return rows


def print_plan(console: Console, plan: Plan, title: str = "KoGPT") -> None:
    """Print the plan: blocks per device, then weights, KV cache and totals per device, then the verdict."""
    what = plan.dtype if plan.quantize == "none" else f"{plan.quantize} weights, {plan.dtype} compute"
    blocks = Table(title=f"{title}: where each block goes ({what})", title_justify="left")
    blocks.add_column("Blocks")
    blocks.add_column("Device")
    blocks.add_column("Weights", justify="right")
    for text, device, nbytes in runs(plan.blocks):
        blocks.add_row(text, device, size(nbytes))
    console.print(blocks)

    devices = Table(
        title=f"Memory per device (KV cache: {plan.tokens} tokens, batch 1, {plan.dtype})", title_justify="left"
    )
    for column in ("Device", "Weights", "KV cache", "Offload buffer", "Total", "Usable"):
        devices.add_column(column, justify="left" if column == "Device" else "right")
    for use in plan.devices:
        usable = "-" if use.budget is None else size(use.budget)
        devices.add_row(use.name, size(use.weights), size(use.kv), size(use.staging), size(use.need), usable)
    weights = sum(use.weights for use in plan.devices)
    kv = sum(use.kv for use in plan.devices)
    staging = sum(use.staging for use in plan.devices)
    devices.add_row("all", size(weights), size(kv), size(staging), size(weights + kv + staging), "", style="bold")
    console.print(devices)
    if plan.fits:
        console.print(Text(f"fits: {plan.summary()}", style="bold green"))
    else:
        console.print(Text(plan.refusal(), style="bold red"))


def show_plan(options: Options, console: Console, hardware: Hardware | None = None, as_json: bool = False,
              prefix_cache: int | None = None, max_batch: int | None = None) -> int:
    """Print the load decision for `options` (free memory figures: `hardware`, default this
    machine's), as tables or (`as_json`, for scripts) one JSON object; return the exit code: 0
    when it fits, 1 when it does not. `prefix_cache` and `max_batch`: the engine's, when not its
    defaults (`kogpt serve`'s flags)."""
    from kogpt.engine.prefix import default_prefix_budget
    from kogpt.engine.scheduler import MAX_BATCH
    from kogpt.loading.checkpoint import read_config
    from kogpt.loading.phases import PREFILL_ROWS
    from kogpt.placement.decide import check_early, decide

    check_early(options, planning=True)
    from kogpt.loading.choices import planned_kernel

    config = read_config(options.model, options.revision)
    decision = decide(config, options, hardware, planning=True, kernel_for=planned_kernel)
    title = Path(options.model).name or options.model
    prefix = default_prefix_budget() if prefix_cache is None else prefix_cache
    rows = max_batch or MAX_BATCH
    chunk = decision.prefill_chunk or PREFILL_ROWS
    if as_json:
        # The model as asked for (a hub id or a path), not the table's short title ("kogpt").
        data = decision_as_dict(decision, str(options.model))
        if decision.streamed:  # the CPU engine: its batch and prefix cache live in this machine's memory
            data.update(prefix_cache_bytes=prefix, max_batch=rows, prefill_chunk=chunk)
        console.out(json.dumps(data, ensure_ascii=False), highlight=False)
    else:
        print_plan(console, decision.plan, title=title)
        print_decision(console, decision)
        if decision.streamed:
            console.print(Text(f"engine: continuous batching of up to {rows} rows; prefix cache up to "
                               f"{prefix / 2**30:.2f} GiB" + (" (a tenth of the available memory, at most 8 GiB)"
                                                              if prefix_cache is None else "")
                               + f"; prompts fed in chunks of {chunk} tokens"))
        if decision.threads and decision.plan.fits:
            from kogpt.cli.kernelview import cpu_figures, print_cpu

            print_cpu(console, cpu_figures(config, decision))
    return 0 if decision.plan.fits else 1


def print_decision(console: Console, decision: Decision) -> None:
    """The rest of the decision: the dtype and why, the loader, the KV cache."""
    dtype = str(decision.dtype).removeprefix("torch.")
    loader = "streamed tensor by tensor" if decision.streamed else "from_pretrained with the device map"
    cache = "static (compiled on CUDA)" if decision.static_cache else "dynamic"
    console.print(Text(f"compute {dtype} on {decision.device}: {decision.choice.reason}"))
    console.print(Text(f"loader: {loader}; KV cache: {cache}"))


def plan_as_dict(plan: Plan, title: str = "KoGPT") -> dict:
    """The plan as JSON-ready data (`--plan --json`): sizes in bytes, devices as in the tables."""
    return {
        "model": title,
        "fits": plan.fits,
        "problem": plan.problem,
        "suggestions": plan.suggestions,
        "dtype": plan.dtype,
        "quantize": plan.quantize,
        "parameters": plan.n_params,
        "kv_cache_tokens": plan.tokens,
        "blocks": [{"name": short(name), "device": device, "bytes": nbytes} for name, device, nbytes in plan.blocks],
        "devices": [
            {
                "device": use.name,
                "weights": use.weights,
                "kv_cache": use.kv,
                "offload_buffer": use.staging,
                "total": use.need,
                "usable": use.budget,
            }
            for use in plan.devices
        ],
    }


def decision_as_dict(decision: Decision, title: str = "KoGPT") -> dict:
    """`--plan --json`: the plan, and the rest of the decision (device, dtype and why, loader, cache)."""
    return {
        **plan_as_dict(decision.plan, title),
        "device": str(decision.device),
        "dtype_reason": decision.choice.reason,
        "streamed": decision.streamed,
        "static_cache": decision.static_cache,
        "threads": decision.threads,
        "kernel": decision.kernel,
        "kernel_reason": decision.kernel_reason,
        "kernel_phases": dict(decision.phases),
    }
