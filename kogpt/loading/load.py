"""Load a checked KoGPT checkpoint onto a device: the tokenizer, the plan, then the weights."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION
from kogpt.errors import KoGPTError, first_line
from kogpt.loading import choices, kernels, prefill
from kogpt.loading import quantize as quantize_lib
from kogpt.loading.checkpoint import load_config, load_tokenizer, resolve_checkpoint
from kogpt.placement import memory
from kogpt.placement import options as placement
from kogpt.placement import plan as plan_lib
from kogpt.placement.devicemap import quiet_accelerate

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A model ready to generate, with what was decided on the way."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    source: str  # what was asked for: a hub repo id or a directory
    n_params: int
    context_length: int
    quantize: str = "none"
    kernel: str = ""  # the CPU kernel of the Linear layers (kogpt.loading.kernels), "" elsewhere
    threads: int = 0  # torch's CPU threads


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA is not available; running on the CPU")
        device = "cpu"
    return torch.device(device)


def load(
    model: str = DEFAULT_MODEL,
    revision: str = DEFAULT_REVISION,
    device: str = "cuda",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantize: str = "none",
    device_map: str | None = None,
    max_memory: str | dict | None = None,
    offload_dir: str | None = None,
    threads: int | None = None,
    kernel: str | None = None,
    cache: bool = True,
) -> Loaded:
    """Load tokenizer and weights, choose the dtype, and place the model on `device`.

    Code shipped inside a checkpoint never runs unless `trust_remote_code` is set.
    `device_map` (auto, balanced, sequential) splits the model over the GPUs and the CPU within
    `max_memory` ("0=10GiB,cpu=30GiB" or a dict), putting what is left in `offload_dir`;
    `quantize` (none, int8, int4) shrinks the weights. The placement is planned on the meta device
    first, and nothing is loaded when the plan does not fit. On the CPU, `threads` (default: the
    physical cores) computes, `kernel` (default: the fastest measured on this CPU) runs the Linear
    layers, and `cache` keeps the converted weights for the next start.
    """
    started = time.perf_counter()
    if trust_remote_code:
        log.warning("--trust-remote-code: Python code inside %s will run on this machine", model)
    path = resolve_checkpoint(model, revision)
    config = load_config(path, trust_remote_code)
    tokenizer = load_tokenizer(path, config.vocab_size, trust_remote_code)
    log.debug("loaded the tokenizer from %s (%d tokens)", path, len(tokenizer))

    target = resolve_device(device)
    context = config.n_positions
    options = placement.Options(device_map, placement.parse_max_memory(max_memory), offload_dir, quantize)
    choice, plan = plan_lib.prepare(config, target, dtype, options)
    if not plan.fits:
        raise KoGPTError(plan.refusal())
    streamed = target.type == "cpu" and not options.strategy  # an offload dir implies a strategy
    threads_used = kernels.set_threads(threads) if target.type == "cpu" else 0
    if streamed:
        choice, kernel = cpu_kernel(config, choice, dtype, quantize, threads_used, kernel)
    log.info("dtype %s on %s: %s", str(choice.dtype).removeprefix("torch."), target, choice.reason)

    if streamed:  # tensor by tensor: peak memory is the model plus one tensor
        weights = load_streamed_weights(path, config, choice.dtype, quantize, tokenizer.eos_token_id, kernel, cache)
        if choice.dtype == torch.bfloat16 and quantize == "none" and prefill.needs_upcast():
            log.debug("prompts computed in float32 (no fast bfloat16 GEMM): %d layers", prefill.apply(weights))
    else:
        placed = placement.load_kwargs(plan.device_map, target, options, choice.dtype)
        with quiet_accelerate("accelerate.big_modeling"):
            weights = load_weights(path, choice.dtype, target, tokenizer.eos_token_id, trust_remote_code, placed)
    if options.strategy:
        log.info("placement: %s", plan.summary())
    log.debug("loaded %d parameters from %s in %.1f s", plan.n_params, path, time.perf_counter() - started)
    return Loaded(
        weights, tokenizer, target, choice.dtype, model, plan.n_params, context, quantize, kernel or "", threads_used
    )


def cpu_kernel(config, choice, dtype: str, quantize: str, threads: int, kernel: str | None):
    """(dtype choice, kernel) for a CPU load: the kernel asked for, or the fastest measured here.

    16-bit loads choose between bfloat16 and float16 only when the dtype is `auto` and 16-bit;
    float32 (which `auto` keeps where it fits) is exact and computed as is.
    """
    fmt = quantize if quantize != "none" else ("16bit" if dtype == "auto" and choice.dtype == torch.bfloat16 else None)
    if kernel is not None:
        found = kernels.KERNELS.get(kernel)
        if found is None or found.format != (fmt or found.format) or (fmt is None and quantize == "none"):
            names = ", ".join(k.name for k in kernels.candidates(fmt or "16bit"))
            raise KoGPTError(f"kernel {kernel!r} does not compute this format; choose one of {names}")
    elif fmt is not None:
        measured = choices.choice_for(fmt, kernels.linear_shapes(config), threads)
        log.debug("%s kernel: %s (%s)", fmt, measured.kernel, measured.why)
        kernel = measured.kernel
    else:
        return choice, None
    if quantize != "none":
        return memory.DtypeChoice(quantize_lib.COMPUTE_DTYPE, f"--quantize {quantize} computes in bfloat16"), kernel
    return memory.DtypeChoice(kernels.KERNELS[kernel].dtype, f"{choice.reason}; kernel {kernel} is fastest here"), kernel


def load_weights(
    path: Path,
    dtype: torch.dtype,
    device: torch.device,
    pad_token_id: int,
    trust_remote_code: bool,
    placed: dict | None = None,
):
    """The weights in `dtype`, placed by `placed` (device_map, offload and quantization keywords).

    Pickled `.bin` files go through torch's weights-only loader.
    """
    from transformers import AutoModelForCausalLM

    placed = placed or {"device_map": str(device)}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            attn_implementation="sdpa",
            pad_token_id=pad_token_id,
            **placed,
        )
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise KoGPTError(f"ran out of memory loading {path} in {dtype}; try --dtype bfloat16 or more memory") from exc
    except Exception as exc:  # the loaders raise many types for a bad file; name the file and go
        raise KoGPTError(f"could not load the weights in {path}: {first_line(exc)}") from exc
    model.eval()
    return model


def load_streamed_weights(
    path: Path, config, dtype: torch.dtype, quantize: str, pad_token_id: int, kernel: str | None = None, cache: bool = True
):
    """The CPU loader: `kogpt.loading.weights.load_streaming`, quantizing on the way when asked,
    through the converted-weights cache for 16-bit and quantized formats."""
    config.pad_token_id = pad_token_id
    try:
        use_cache = cache and (quantize != "none" or dtype in (torch.bfloat16, torch.float16))
        return quantize_lib.load_cpu(path, config, dtype, quantize, kernel, use_cache, attn_implementation="sdpa")
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise KoGPTError(f"ran out of memory loading {path} in {dtype} (--quantize {quantize})") from exc
    except Exception as exc:  # as in load_weights: name the file and go
        raise KoGPTError(f"could not load the weights in {path}: {first_line(exc)}") from exc
