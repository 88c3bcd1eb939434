"""`--plan`'s output: rich tables of where each block goes and what each device needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from kogpt.placement.plan import Plan

GiB = 1024**3


def size(n: int) -> str:
    """Bytes in GiB, or KiB/MiB when small; '-' for nothing."""
    if not n:
        return "-"
    if n >= GiB / 100:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


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
