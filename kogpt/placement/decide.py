"""The whole load decision, in one pure function: `decide(config, options, hardware) -> Decision`.

The device, the compute dtype, the quantization, the device map, whether the CPU loader streams
the weights tensor by tensor, and whether decoding uses a static KV cache: `kogpt.loading.load`
loads exactly this, and `--plan` prints exactly this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from kogpt.errors import KoGPTError
from kogpt.placement import memory
from kogpt.placement.devicemap import count_parameters, meta_model
from kogpt.placement.memory import DtypeChoice
from kogpt.placement.options import Hardware, Options, check_options, detect_hardware
from kogpt.placement.plan import Plan, make_plan

log = logging.getLogger(__name__)

# Weight-only int8 on the CPU computes in bfloat16: `_weight_int8pack_mm` is vectorised for it alone.
CPU_QUANTIZED_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class Decision:
    """How the model will be loaded and run. `plan` holds the device map and the memory per device."""

    device: torch.device
    choice: DtypeChoice
    plan: Plan
    streamed: bool  # the CPU loader, tensor by tensor (no device map)
    static_cache: bool  # a preallocated KV cache, compiled on CUDA
    kernel: str | None = None  # the CPU Linear kernel (kogpt.loading.kernels), for the streamed loader
    kernel_reason: str = ""
    threads: int = 0  # CPU threads that compute; 0 on a GPU
    phases: dict[str, str] = field(default_factory=dict)  # on the CPU: phase (step, batch, prefill) -> kernel
    prefill_chunk: int = 0  # prompt tokens per forward, sized for the CPU's prompt kernel; 0: the device's default

    @property
    def dtype(self) -> torch.dtype:
        return self.choice.dtype

    @property
    def quantize(self) -> str:
        return self.plan.quantize


def resolve_device(options: Options, planning: bool = False, warn: bool = True) -> torch.device:
    """cuda or cpu. cuda without CUDA runs on the CPU, saying so, except for a `--plan` whose
    `--max-memory` names GPUs: that plan is for another machine."""
    if options.device == "cpu":
        return torch.device("cpu")
    hypothetical = planning and any(isinstance(key, int) for key in options.max_memory or {})
    if hypothetical or torch.cuda.is_available():
        return torch.device("cuda")
    if warn:
        log.warning("CUDA is not available; running on the CPU")
    return torch.device("cpu")


def check_early(options: Options, planning: bool = False) -> torch.device:
    """Refuse impossible option combinations before anything is downloaded; return the device."""
    device = resolve_device(options, planning, warn=False)
    gpu_count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    check_options(options, device.type, gpu_count, planning)
    return device


# kernel_for(config, format, requested kernel or None, threads) -> (kernel, why, compute dtype,
# {phase: kernel}, prompt chunk or 0): kogpt.loading.choices measures or remembers it; placement
# never imports loading, so it is passed in.
KernelFor = Callable[[object, str, "str | None", int], tuple[str, str, torch.dtype, dict[str, str], int]]


def physical_cores() -> int:
    """The default thread count: the user's OMP_NUM_THREADS, else the physical cores (`kogpt.threads`)."""
    from kogpt.threads import default_count

    return default_count()


def decide(
    config, options: Options, hardware: Hardware | None = None, planning: bool = False, kernel_for: KernelFor | None = None
) -> Decision:
    """Decide everything about the load of `config` with `options`.

    `hardware` defaults to this machine's free memory (tests inject other machines); `planning`
    (`--plan`) needs neither bitsandbytes nor the GPUs `--max-memory` names. On the CPU,
    `kernel_for` chooses the Linear kernel of the format (16-bit, int8, int4).
    """
    injected_gpus = options.device == "cuda" and hardware is not None and hardware.gpus
    device = torch.device("cuda") if injected_gpus else resolve_device(options, planning)
    hardware = hardware or detect_hardware(device.type, options.offload_dir, every_gpu=options.strategy is not None)
    check_options(options, device.type, len(hardware.gpus), planning)
    streamed = device.type == "cpu" and not options.strategy  # an offload dir implies a strategy
    if streamed and options.quantize != "none" and getattr(config, "tie_word_embeddings", False):
        raise KoGPTError(
            f"this checkpoint ties its input and output embeddings, which --quantize {options.quantize} "
            "on the CPU cannot keep tied: load it without --quantize"
        )
    model = meta_model(config)
    choice = choose_dtype(config, device, options, hardware, count_parameters(model), streamed)
    plan = make_plan(config, choice.dtype, device.type, options, hardware, model=model)
    plain = options.quantize == "none" and not options.strategy
    static_cache = options.static_cache if options.static_cache is not None else device.type == "cuda" and plain
    log.debug("placement: %s%s", plan.summary(), "" if plan.fits else f" (does not fit: {plan.problem})")
    decision = Decision(device, choice, plan, streamed, static_cache)
    if streamed:
        if options.threads is not None and options.threads < 1:
            raise KoGPTError(f"--threads must be 1 or more, not {options.threads}")
        decision = replace(decision, threads=options.threads or physical_cores())
    if not (streamed and kernel_for):
        return decision
    chosen = cpu_kernel(config, options, decision, kernel_for)
    if chosen.dtype != decision.dtype:  # 16-bit won over float32: the memory plan of what is loaded
        chosen = replace(chosen, plan=make_plan(config, chosen.dtype, device.type, options, hardware, model=model))
    return chosen


def cpu_kernel(config, options: Options, decision: Decision, kernel_for: KernelFor) -> Decision:
    """The decision with its CPU kernel. With the dtype `auto`, a 16-bit load picks between bfloat16
    and float16, and where float32 weights fit, float32 is kept only if it serves the standard request
    faster than every 16-bit layout (`format` "float")."""
    if options.quantize != "none":
        fmt = options.quantize
    elif options.dtype == "auto" and decision.dtype == torch.bfloat16:
        fmt = "16bit"
    elif options.dtype == "auto" and decision.dtype == torch.float32 and not options.kernel:
        fmt = "float"
    elif options.kernel and decision.dtype in (torch.bfloat16, torch.float16):
        fmt = "16bit"  # a 16-bit dtype asked for, with a kernel of that dtype (checked below)
    elif options.kernel:
        raise KoGPTError(f"--kernel {options.kernel} needs --quantize, or a 16-bit dtype")
    else:
        return decision
    kernel, why, dtype, phases, chunk = kernel_for(config, fmt, options.kernel, decision.threads)
    if dtype == torch.float32:  # float32 kept: the plain float32 layers
        return replace(decision, choice=DtypeChoice(dtype, f"{decision.choice.reason}; {why}"), prefill_chunk=chunk)
    if options.dtype != "auto" and dtype != decision.dtype:
        raise KoGPTError(f"kernel {kernel} computes in {str(dtype).removeprefix('torch.')}, not in the {options.dtype} asked for")
    choice = decision.choice
    if decision.dtype == torch.float32:
        choice = DtypeChoice(dtype, f"{choice.reason}, but {str(dtype).removeprefix('torch.')} serves a request faster here")
    elif dtype != choice.dtype:
        choice = DtypeChoice(dtype, f"{choice.reason}; {str(dtype).removeprefix('torch.')} is the faster 16-bit kernel here")
    return replace(decision, choice=choice, kernel=kernel, kernel_reason=why, phases=phases, prefill_chunk=chunk)


def choose_dtype(config, device, options: Options, hardware: Hardware, n_params: int, streamed: bool) -> DtypeChoice:
    if streamed and options.quantize != "none":
        if options.dtype not in ("auto", "bfloat16"):
            log.warning("--quantize %s on the CPU computes in bfloat16, not %s", options.quantize, options.dtype)
        return DtypeChoice(CPU_QUANTIZED_DTYPE, f"--quantize {options.quantize} on the CPU computes in bfloat16")
    kv16 = memory.kv_cache_bytes(config, config.n_positions, torch.float16)
    free = (hardware.gpus[0] if hardware.gpus else 0) if device.type == "cuda" else hardware.cpu
    stored = getattr(config, "dtype", None) or torch.float32
    stored = memory.DTYPES.get(str(stored).removeprefix("torch."), torch.float32)
    return memory.choose_dtype(options.dtype, device.type, stored, n_params, free, kv16)
