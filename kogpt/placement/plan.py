"""The memory plan: which block goes to which device and what each device needs, before loading.

Made on the meta device with accelerate (`init_empty_weights`, `compute_module_sizes`,
`get_balanced_memory`, `infer_auto_device_map`), so it allocates no weights. `kogpt.placement.decide`
makes it as part of the load decision; a load stops, saying what would fit, when it cannot run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch

from kogpt.placement.devicemap import (
    block_names,
    count_parameters,
    device_of,
    infer_map,
    kv_by_device,
    main_device,
    meta_model,
    size_dtypes,
)
from kogpt.placement.memory import CPU_HEADROOM_BYTES, GiB, format_bytes, kv_layer_bytes
from kogpt.placement.options import Hardware, Options

log = logging.getLogger(__name__)

# Left free on each GPU for the CUDA context, activations and attention workspace.
GPU_HEADROOM_BYTES = GiB // 2


@dataclass
class DeviceUse:
    """What one device holds. `staging` is room to bring in one offloaded block for its turn."""

    name: str
    weights: int
    kv: int = 0
    staging: int = 0
    budget: int | None = None

    @property
    def need(self) -> int:
        return self.weights + self.kv + self.staging


@dataclass
class Plan:
    """Where each block goes (`blocks`: name, device, bytes) and what each device needs."""

    dtype: str
    quantize: str
    tokens: int
    device_map: dict
    blocks: list[tuple[str, str, int]]
    devices: list[DeviceUse]
    problem: str | None = None
    suggestions: list[str] = field(default_factory=list)
    n_params: int = 0

    @property
    def fits(self) -> bool:
        return self.problem is None

    @property
    def what(self) -> str:
        """The setup in words: 'float16', or 'int8 (float16 compute)'."""
        return self.dtype if self.quantize == "none" else f"{self.quantize} ({self.dtype} compute)"

    def summary(self) -> str:
        """What each device needs, in one line: 'cuda:0 5.77 GiB, cuda:1 6.59 GiB'."""
        return ", ".join(f"{use.name} {format_bytes(use.need)}" for use in self.devices)

    def refusal(self) -> str:
        """One line: why the model cannot be loaded this way, and what would fit instead."""
        advice = f"would fit: {'; '.join(self.suggestions)}" if self.suggestions else "no smaller setup fits either"
        return f"{self.problem}; {advice}"


def label(device: int | str) -> str:
    """accelerate's device key as people write it: 0 -> cuda:0."""
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def budgets(device: str, options: Options, hardware: Hardware) -> dict:
    """Usable bytes per device: the user's --max-memory as given, else free memory less headroom."""
    if options.max_memory:
        return dict(options.max_memory)
    gpus = {i: max(0, free - GPU_HEADROOM_BYTES) for i, free in enumerate(hardware.gpus)} if device == "cuda" else {}
    cpu = max(0, hardware.cpu - CPU_HEADROOM_BYTES)
    if options.strategy is None:
        return {0: gpus.get(0, 0)} if device == "cuda" else {"cpu": cpu}
    return {**gpus, "cpu": cpu}


def make_plan(
    config,
    dtype: torch.dtype,
    device: str,
    options: Options,
    hardware: Hardware,
    tokens: int | None = None,
    model=None,
    suggest: bool = True,
) -> Plan:
    """Plan where each block goes for `device` (cpu or cuda) and check that every device has room.

    `tokens` is the KV cache length (default: the model's full context, the most a prompt plus
    completion can use); the KV cache is in `dtype`, the compute dtype.
    """
    from accelerate.utils import compute_module_sizes

    model = model or meta_model(config)
    tokens = tokens or config.n_positions
    dtypes = size_dtypes(model, dtype, options.quantize)
    sizes = compute_module_sizes(model, dtype=dtypes[0], special_dtypes=dtypes[1])
    kv_layer = kv_layer_bytes(config, tokens, dtype)
    budget = budgets(device, options, hardware)
    if options.strategy is None:
        device_map = {"": next(iter(budget))}
    else:
        device_map = infer_map(model, options.strategy, budget, dtypes, config.n_layer, kv_layer)

    uses: dict = {}
    for key, where in device_map.items():
        uses.setdefault(where, DeviceUse(label(where), 0, budget=budget.get(where)))
        uses[where].weights += int(sizes[key])
    main = main_device(device_map)
    for where, kv in kv_by_device(device_map, config.n_layer, kv_layer).items():
        uses.setdefault(where, DeviceUse(label(where), 0, budget=budget.get(where))).kv += kv
    blocks = [(name, label(device_of(device_map, name)), int(sizes[name])) for name in block_names(config)]
    offloaded = [size for name, where, size in blocks if where == "disk" or (where == "cpu" and main != "cpu")]
    if offloaded:
        uses[main].staging = max(offloaded)
    order = sorted(uses, key=lambda d: (not isinstance(d, int), d == "disk", str(d)))
    plan = Plan(
        str(dtype).removeprefix("torch."),
        options.quantize,
        tokens,
        device_map,
        blocks,
        [uses[d] for d in order],
        n_params=count_parameters(model),
    )
    plan.problem = find_problem(plan, options, hardware, sum(offloaded))
    if suggest and plan.problem:
        plan.suggestions = alternatives(config, dtype, device, options, hardware, tokens, model)
    return plan


def find_problem(plan: Plan, options: Options, hardware: Hardware, offloaded: int) -> str | None:
    """Why `plan` cannot run (a device over its budget, disk without --offload-dir, ...), or None."""
    what = f"KoGPT in {plan.what}"
    for use in plan.devices:
        if use.name == "disk":
            if not options.offload_dir:
                lost = format_bytes(use.weights)
                return f"not enough memory for {what}: {lost} of weights fit nowhere and no --offload-dir is given"
            if use.weights > hardware.disk:
                return f"not enough disk for {what}: the offload needs {format_bytes(use.weights)}, {format_bytes(hardware.disk)} is free"
        elif use.budget is not None and use.need > use.budget:
            staging = f", offload buffer {format_bytes(use.staging)}" if use.staging else ""
            return (
                f"not enough memory on {use.name} for {what}: it needs {format_bytes(use.need)} (weights {format_bytes(use.weights)}, "
                f"KV cache {format_bytes(use.kv)} at {plan.tokens} tokens{staging}), {format_bytes(use.budget)} is usable"
            )
    if options.quantize != "none" and offloaded:
        return f"not enough GPU memory for {what}: {format_bytes(offloaded)} would be offloaded, and quantized weights cannot be"
    return None


def alternatives(config, dtype, device, options, hardware, tokens, model) -> list[str]:
    """The setups, one flag away, that would fit this machine: smaller dtype, quantization, offload."""
    half = torch.float16 if device == "cuda" else torch.bfloat16
    small = half if dtype == torch.float32 else dtype
    tries = []
    if dtype == torch.float32:
        tries.append((f"--dtype {str(half).removeprefix('torch.')}", half, options, hardware))
    if options.quantize == "none" and not options.offload_dir:
        tries.append(("--quantize int8", small, replace(options, quantize="int8"), hardware))
        tries.append(("--quantize int4", small, replace(options, quantize="int4"), hardware))
    if device == "cuda" and options.strategy is None:
        tries.append(("--device-map auto", dtype, replace(options, device_map="auto"), hardware))
    if options.quantize == "none" and not options.offload_dir:
        tries.append(("--offload-dir DIR", dtype, replace(options, offload_dir="DIR"), replace(hardware, disk=2**62)))
    found = []
    for flag, try_dtype, try_options, try_hardware in tries:
        plan = make_plan(config, try_dtype, device, try_options, try_hardware, tokens, model, suggest=False)
        uses_disk = any(use.name == "disk" for use in plan.devices)
        if plan.fits and (uses_disk or not try_options.offload_dir):
            found.append(f"{flag} ({plan.summary()})")
    return found
