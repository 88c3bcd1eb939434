"""The choice of a format's kernels on this machine: per phase, within one packed layout, by the request.

Each candidate is timed at the rows each phase gives a layer (`kogpt.loading.phases`: one decode
row, a step of several samples, a prompt chunk). Within each packed layout (kernels that read the
same tensors, `Kernel.layout`) every phase takes its fastest kernel; the layouts are then scored on
the standard request (a 512-token prompt, then 128 tokens, at batch 1 and at batch 4), plus the
seconds its weights take to prepare at each load (oneDNN's int8 layout is made from the cached
tensors at every start), and the fastest wins. A layout therefore never mixes with another: one
copy of the weights serves all phases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kogpt.loading.kernels import (
    DEFAULTS,
    FORMATS,
    KERNELS,
    TOLERANCE,
    Kernel,
    Measure,
    candidates,
    default_measure,
    last_level_cache_bytes,
    prepare_seconds,
)
from kogpt.loading.phases import (
    CHUNK_GAIN,
    CHUNKS,
    NEW_TOKENS,
    PHASES,
    PREFILL_ROWS,
    PROMPT_TOKENS,
    ROWS,
    best_chunk,
    describe,
    request_seconds,
)

log = logging.getLogger(__name__)

TIE = 0.05  # within 5% of the fastest counts as tied: the standard kernel, else the most accurate, wins


@dataclass
class Choice:
    """The kernels chosen for one format on this machine, and why."""

    format: str
    kernel: str  # the decode-step kernel; its layout is the one every phase reads
    why: str
    seconds: dict[str, float] = field(default_factory=dict)  # per step candidate: one pass over the shapes at 1 row
    errors: dict[str, float] = field(default_factory=dict)  # per candidate: relative error vs float32
    bandwidth_gb_s: float = 0.0
    phases: dict[str, str] = field(default_factory=dict)  # phase -> kernel, all of one layout
    phase_seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # kernel -> phase -> s per pass or chunk
    scores: dict[str, float] = field(default_factory=dict)  # layout -> seconds of the standard request and the load's preparing
    chunk: int = PREFILL_ROWS  # prompt tokens per forward, sized for the prompt kernel (`size_chunk`)
    chunk_seconds: dict[str, float] = field(default_factory=dict)  # chunk rows -> the prompt kernel's seconds per token


def relative_error(kernel: Kernel, in_features: int = 512, out_features: int = 256, rows: int = 4) -> float:
    """‖kernel(x, W) − x Wᵀ‖ / ‖x Wᵀ‖ in float32 on a random weight shaped like a model's (N(0, 0.02))."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
    x = torch.randn(rows, in_features, generator=generator)
    exact = x @ weight.t()
    got = kernel.run(x, kernel.packed(weight)).float()
    return float((got - exact).norm() / exact.norm())


def forced_phases(name: str) -> dict[str, str]:
    """The phases of a kernel asked for by name: it runs its phases, its layout's own kernel the rest."""
    kernel = KERNELS[name]
    return {phase: name if phase in kernel.phases else kernel.layout for phase in PHASES}


def best_of(names: list[str], seconds: dict[str, float], errors: dict[str, float], preferred: str) -> tuple[str, bool]:
    """The fastest of `names`; among those within `TIE` of it, `preferred`, else the most accurate.
    Also whether the tie decided it."""
    fastest = min(seconds[name] for name in names)
    tied = [name for name in names if seconds[name] <= fastest * (1 + TIE)]
    return min(tied, key=lambda name: (name != preferred, errors[name], seconds[name])), len(tied) > 1


def choose(
    fmt: str,
    shapes: dict[tuple[int, int], int],
    measure: Measure | None = None,
    bandwidth: float = 0.0,
    accuracy: Callable[[Kernel], float] = relative_error,
    prompt_shapes: dict[tuple[int, int], int] | None = None,
    preparing: Callable[[Kernel, tuple[int, int]], float] = prepare_seconds,
) -> Choice:
    """The kernels of `fmt` for the model's `shapes` ({(out, in): count}; a prompt chunk's are
    `prompt_shapes`, default the same) that pass the accuracy check: per phase the fastest within
    each layout, and the layout that serves the standard request fastest. Within 5% (as good as
    equal, given a shared machine's noise) the standard kernel (`DEFAULTS`) or its layout wins,
    else the most accurate.

    `measure(kernel, shape, rows)` returns seconds per product, `accuracy(kernel)` the relative
    error against float32 and `preparing(kernel, shape)` the seconds a layer takes to prepare at
    load; tests inject them, by default they are measured.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if measure is None:  # rotate over more than the cache holds, or over the whole model when it is smaller
        weights = sum(count * out_features * in_features for (out_features, in_features), count in shapes.items())
        measure = default_measure(min(2 * last_level_cache_bytes(), 3 * 2**30 // 2, weights))
    per_phase = {phase: shapes for phase in PHASES} | {"prefill": prompt_shapes or shapes}
    widths = {n_in for _, n_in in shapes}
    timed: dict[str, dict[str, float]] = {}
    errors, rejected = {}, []
    for kernel in candidates(fmt):
        if not all(kernel.fits(n_in) for n_in in widths):
            continue
        try:
            errors[kernel.name] = accuracy(kernel)
        except (RuntimeError, NotImplementedError) as exc:  # not built into this torch, or not for this CPU
            log.debug("kernel %s does not run here: %s", kernel.name, exc)
            continue
        if not errors[kernel.name] <= TOLERANCE[fmt]:
            rejected.append(f"{kernel.name} (error {errors[kernel.name]:.3g})")
            continue
        timed[kernel.name] = {
            phase: sum(count * measure(kernel, shape, ROWS[phase]) for shape, count in per_phase[phase].items())
            for phase in kernel.phases
        }
    plans = layout_plans(timed, errors)
    if not plans:
        raise RuntimeError(f"no {fmt} kernel runs correctly on this CPU (rejected: {', '.join(rejected) or 'none'})")
    loads = {layout: sum(count * preparing(KERNELS[name], shape) for name in set(phases.values()) for shape, count in shapes.items())
             for layout, phases in plans.items()}  # fmt: skip
    scores = {layout: request_seconds(*(timed[phases[p]][p] for p in PHASES)) + loads[layout] for layout, phases in plans.items()}
    standard = KERNELS[DEFAULTS[fmt]].layout
    step_errors = {layout: errors[plans[layout]["step"]] for layout in plans}
    layout, tied = best_of(list(plans), scores, step_errors, standard)
    per_token = size_chunk(KERNELS[plans[layout]["prefill"]], per_phase["prefill"], measure)
    chunk = best_chunk(per_token)
    why = explain(plans[layout], scores, loads, timed, layout, tied, standard, rejected)
    why += f"; prompts in chunks of {chunk} (" + ", ".join(f"{rows} rows {1e6 * s:.3g} µs" for rows, s in per_token.items()) + " per token)"
    return Choice(
        fmt, plans[layout]["step"], why, {name: t["step"] for name, t in timed.items() if "step" in t}, errors,
        bandwidth / 1e9, plans[layout], timed, scores, chunk, {str(rows): s for rows, s in per_token.items()},
    )  # fmt: skip


def size_chunk(kernel: Kernel, shapes: dict[tuple[int, int], int], measure: Measure) -> dict[int, float]:
    """{chunk rows: seconds per prompt token} of the prompt kernel over the prompt's `shapes`, up
    the sizes of `CHUNKS` (the first measured again, beside the others: a figure taken earlier,
    among other kernels' allocations, is not comparable), stopping at the first size that saves no
    more than `CHUNK_GAIN` per token."""
    per_token: dict[int, float] = {}
    previous = None
    for rows in CHUNKS:
        per_token[rows] = sum(count * measure(kernel, shape, rows) for shape, count in shapes.items()) / rows
        if previous is not None and per_token[rows] > per_token[previous] * (1 - CHUNK_GAIN):
            break
        previous = rows
    return per_token


def layout_plans(timed: dict[str, dict[str, float]], errors: dict[str, float]) -> dict[str, dict[str, str]]:
    """{layout: {phase: kernel}}: per phase the fastest timed kernel of the layout (within `TIE`,
    the layout's own kernel, else the most accurate); layouts missing a phase are left out."""
    plans = {}
    for layout in dict.fromkeys(KERNELS[name].layout for name in timed):
        plan = {}
        for phase in PHASES:
            names = [name for name in timed if KERNELS[name].layout == layout and phase in timed[name]]
            if names:
                plan[phase] = best_of(names, {n: timed[n][phase] for n in names}, errors, layout)[0]
        if len(plan) == len(PHASES):
            plans[layout] = plan
    return plans


def explain(phases, scores, loads, timed, layout, tied, standard, rejected) -> str:
    """Why: the phases, the request's seconds per layout (with the load's preparing), the one-row
    timings, ties and rejections."""
    steps = sorted(((name, t["step"]) for name, t in timed.items() if "step" in t), key=lambda kv: kv[1])
    ranked = ", ".join(f"{name} {s:.1f} s" + (f" ({loads[name]:.1f} s of it preparing at load)" if loads[name] else "")
                       for name, s in sorted(scores.items(), key=lambda kv: kv[1]))  # fmt: skip
    why = (
        f"{describe(phases)}; a {PROMPT_TOKENS}-token prompt + {NEW_TOKENS} tokens at batch 1 and 4 by the kernels alone, and one load: {ranked}; "
        f"fastest of {len(timed)} passing the accuracy check (1 row: "
        + ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in steps) + " per token)"
    )  # fmt: skip
    if tied:
        why += f"; within {TIE:.0%} of the fastest, " + ("the standard kernel" if layout == standard else "the most accurate")
    if rejected:
        why += f"; rejected as inaccurate: {', '.join(rejected)}"
    return why
