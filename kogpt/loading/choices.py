"""The kernel choice per machine, remembered: measured once per CPU model, core count, thread count,
torch version and the model's matrix shapes, and kept in the user cache directory (`kernels.json`).

A remembered choice is checked again on every use: it must name a kernel of the format asked for
that fits every matrix of the model. Anything else (a choice made for other shapes, a hand-edited
or damaged file) is measured again, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from kogpt.errors import KoGPTError
from kogpt.loading.chooser import Choice, choose, forced_phases
from kogpt.loading.kernels import (
    DEFAULTS,
    KERNELS,
    Measure,
    candidates,
    last_level_cache_bytes,
    linear_shapes,
    read_bandwidth,
)
from kogpt.loading.phases import CHUNKS, PHASES

log = logging.getLogger(__name__)

CHOICE_VERSION = 6  # 2: the standard kernel wins ties; 3: keyed by the matrix shapes too; 4: a kernel per phase; 5: the chunk; 6: the load's preparing


def machine_key(threads: int) -> str:
    """What a measured choice is valid for: CPU model, cores, threads and torch version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # The candidates are part of the key: a kogpt with a new kernel measures again instead of
    # keeping a choice made without it.
    kinds = hashlib.sha256(" ".join(sorted(KERNELS)).encode()).hexdigest()[:8]
    return f"{model} | {os.cpu_count()} cpus | {threads} threads | torch {torch.__version__} | v{CHOICE_VERSION}-{kinds}"


def choices_file() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kogpt")) / "kernels.json"


def shapes_key(fmt: str, shapes: dict[tuple[int, int], int]) -> str:
    """The format and the matrix shapes a choice was timed on: `int8 4096x4096*112 ...`."""
    return " ".join([fmt, *(f"{out}x{n_in}*{count}" for (out, n_in), count in sorted(shapes.items()))])


def usable(kernel: str, fmt: str, shapes: dict[tuple[int, int], int]) -> bool:
    """Whether `kernel` computes `fmt` weights and fits every matrix in `shapes`."""
    found = KERNELS.get(kernel) if isinstance(kernel, str) else None
    return found is not None and found in candidates(fmt) and all(found.fits(n_in) for _, n_in in shapes)


def read_choices() -> dict:
    """The choices file as an object: {} when missing, unreadable, or not a JSON object."""
    try:
        stored = json.loads(choices_file().read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def cached_choice(fmt: str, threads: int, shapes: dict[tuple[int, int], int]) -> Choice | None:
    """The choice measured earlier on this machine for `fmt` on these `shapes`, if it still fits them."""
    try:
        stored = read_choices()[machine_key(threads)][shapes_key(fmt, shapes)]
        choice = Choice(**stored)
    except (KeyError, TypeError, ValueError):
        return None
    phases = choice.phases if isinstance(choice.phases, dict) else {}
    kernels_ok = all(usable(phases.get(phase), fmt, shapes) for phase in PHASES) and usable(choice.kernel, fmt, shapes)
    one_layout = kernels_ok and len({KERNELS[name].layout for name in [choice.kernel, *phases.values()]}) == 1
    if choice.format != fmt or not one_layout or not isinstance(choice.why, str) or choice.chunk not in CHUNKS:
        log.debug("ignoring the remembered %s kernel %r: it does not fit this model", fmt, choice.kernel)
        return None
    return choice


def forget() -> list[str]:
    """Remove the choices file; why it stayed, if it could not be removed."""
    path = choices_file()
    try:
        if path.is_file():
            path.unlink()
    except OSError as exc:
        return [f"{path.name}: {exc.strerror or exc}"]
    return []


def choice_for(
    fmt: str, shapes: dict[tuple[int, int], int], threads: int, measure: Measure | None = None, **inject
) -> Choice:
    """The kernels for `fmt` on this machine: remembered, or measured now (seconds) and remembered.
    `inject` goes to `chooser.choose` (`accuracy`, `prompt_shapes`)."""
    found = cached_choice(fmt, threads, shapes)
    if found is not None:
        log.debug("%s kernel %s (measured earlier on this machine: %s)", fmt, found.kernel, found.why)
        return found
    started = time.perf_counter()
    weights = sum(count * out * n_in for (out, n_in), count in shapes.items())  # 16-bit model: 2 bytes each
    bandwidth = read_bandwidth(min(2 * last_level_cache_bytes(), 2**30, 2 * weights)) if measure is None else 0.0
    choice = choose(fmt, shapes, measure, bandwidth, **inject)
    log.debug("%s kernel %s, measured in %.1f s: %s", fmt, choice.kernel, time.perf_counter() - started, choice.why)
    remember(choice, threads, shapes)
    return choice


def remember(choice: Choice, threads: int, shapes: dict[tuple[int, int], int]) -> None:
    """Store `choice` in the choices file (atomically); a cache that cannot be written is skipped."""
    path = choices_file()
    stored = read_choices()
    mine = stored.get(machine_key(threads))
    stored[machine_key(threads)] = mine = mine if isinstance(mine, dict) else {}
    mine[shapes_key(choice.format, shapes)] = asdict(choice)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(stored, indent=1))
        os.replace(temporary, path)
    except OSError as exc:
        log.info("could not remember the kernel choice in %s: %s", path, exc)


def kernel_for(
    config, fmt: str, requested: str | None, threads: int, measure: bool = True
) -> tuple[str, str, torch.dtype, dict[str, str], int]:
    """(kernel, why, compute dtype, {phase: kernel}, prompt chunk or 0 for the default) for `fmt`
    weights of a GPT-J `config`: `requested` when it can compute them (in its phases; its layout's
    own kernel in the others), else the kernels measured fastest on this machine for the whole
    request (remembered, or measured now when `measure`; else the portable default, for `--plan`)."""
    shapes = linear_shapes(config)
    widths = {n_in for _, n_in in shapes}
    fitting = [k.name for k in candidates(fmt) if all(k.fits(width) for width in widths)]
    if requested is not None:
        if requested not in fitting:
            raise KoGPTError(f"kernel {requested!r} does not compute {fmt} weights of this model; choose one of {', '.join(fitting)}")
        return requested, "asked for", KERNELS[requested].dtype, forced_phases(requested), 0
    weights = sum(count * out * n_in for (out, n_in), count in shapes.items())
    if fmt == "float" and 4 * weights <= last_level_cache_bytes():
        return "fp32", "its float32 weights fit in the CPU's cache: exact, and no memory bound to halve", torch.float32, {}, 0
    if measure:
        choice = choice_for(fmt, shapes, threads, prompt_shapes=linear_shapes(config, lm_head=False))
        why = choice.why
    else:
        choice = cached_choice(fmt, threads, shapes)
        why = f"measured on this CPU: {choice.why}" if choice else "not measured on this CPU yet: the first load measures the candidates (seconds)"
    kernel = choice.kernel if choice else (DEFAULTS[fmt] if DEFAULTS[fmt] in fitting else fitting[-1])
    if choice is None:
        return kernel, why, KERNELS[kernel].dtype, forced_phases(kernel), 0
    return kernel, why, KERNELS[kernel].dtype, choice.phases, choice.chunk


def planned_kernel(config, fmt: str, requested: str | None, threads: int) -> tuple[str, str, torch.dtype, dict[str, str], int]:
    """`kernel_for` without measuring: what `--plan` shows."""
    return kernel_for(config, fmt, requested, threads, measure=False)
