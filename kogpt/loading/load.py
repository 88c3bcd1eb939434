"""Load a checked KoGPT checkpoint onto a device: the tokenizer, the plan, then the weights."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kogpt.errors import KoGPTError, first_line
from kogpt.loading import bf16, choices, kernels
from kogpt.loading import quantize as quantize_lib
from kogpt.loading.checkpoint import load_config, load_tokenizer, resolve_checkpoint
from kogpt.loading.kernels import KERNELS
from kogpt.loading.phases import describe
from kogpt.placement.decide import Decision, decide
from kogpt.placement.devicemap import quiet_accelerate
from kogpt.placement.options import (
    Options,
    check_arguments,
    load_kwargs,
    removing_partial_offload,
)

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A model ready to generate, with the decision it was loaded by."""

    model: torch.nn.Module
    tokenizer: object
    decision: Decision
    source: str  # what was asked for: a hub repo id or a directory
    n_params: int
    context_length: int

    @property
    def device(self) -> torch.device:
        return self.decision.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decision.dtype

    @property
    def quantize(self) -> str:
        return self.decision.quantize

    @property
    def kernel(self) -> str:
        """The CPU kernel of the Linear layers (kogpt.loading.kernels); "" when torch's own layers compute."""
        return self.decision.kernel or ""

    @property
    def threads(self) -> int:
        return self.decision.threads


def load(options: Options, path: Path | None = None) -> Loaded:
    """Load what `options` asks for: tokenizer and weights, placed and typed as `decide` says.

    `path` is the checkpoint directory when the caller has already resolved `options.model` (a
    hub download shows its own progress, before the loading spinner). Code shipped inside a
    checkpoint never runs unless `options.trust_remote_code` is set. Nothing is loaded when the
    plan does not fit.
    """
    started = time.perf_counter()
    options = check_arguments(options)
    if options.trust_remote_code:
        log.warning("--trust-remote-code: Python code inside %s will run on this machine", options.model)
    path = path or resolve_checkpoint(options.model, options.revision)
    config = load_config(path, options.trust_remote_code)
    tokenizer = load_tokenizer(path, config.vocab_size, options.trust_remote_code)
    log.debug("loaded the tokenizer from %s (%d tokens)", path, len(tokenizer))

    decision = decide(config, options, kernel_for=choices.kernel_for)
    if not decision.plan.fits:
        raise KoGPTError(decision.plan.refusal())
    dtype, quantize = decision.dtype, options.quantize
    log.info("dtype %s on %s: %s", str(dtype).removeprefix("torch."), decision.device, decision.choice.reason)
    if decision.threads:
        kernels.set_threads(decision.threads)
    if decision.kernel:
        fmt = quantize if quantize != "none" else "16bit"
        log.debug("%s kernel %s with %d threads (%s): %s", fmt, decision.kernel, decision.threads, describe(decision.phases), decision.kernel_reason)
    if decision.streamed:  # tensor by tensor: peak memory is the model plus one tensor
        phases = cpu_phases(decision)
        weights = load_streamed_weights(
            path, config, dtype, quantize, tokenizer.eos_token_id, decision.kernel, options.cache, options.mmap, phases
        )
        if quantize == "none" and any(KERNELS[name].layout != name for name in phases.values()):
            count = bf16.apply(weights, {phase: KERNELS[name].run for phase, name in phases.items()})
            log.debug("%d 16-bit layers: %s", count, describe(phases))
    else:
        with removing_partial_offload(options.offload_dir):
            placed = load_kwargs(decision.plan.device_map, decision.device, options, dtype)
            with quiet_accelerate("accelerate.big_modeling"):
                weights = load_weights(
                    path, dtype, decision.device, tokenizer.eos_token_id, options.trust_remote_code, placed
                )
    log.debug("%d GELU activations fused", fuse_gelu(weights))
    if options.strategy:
        log.info("placement: %s", decision.plan.summary())
    n_params = decision.plan.n_params
    log.debug("loaded %d parameters from %s in %.1f s", n_params, path, time.perf_counter() - started)
    return Loaded(weights, tokenizer, decision, options.model, n_params, config.n_positions)


def fuse_gelu(model) -> int:
    """Make GPT-J's `gelu_new` (seven elementwise ops, each rounded to the model's dtype) torch's one
    fused tanh GELU: the same function, rounded once, 2.4x faster per call in bfloat16 (46 against
    19 µs over 8,192 values on a Xeon). Returns how many were replaced."""
    from torch import nn
    from transformers.activations import NewGELUActivation

    parents = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, NewGELUActivation)]  # fmt: skip
    for parent, name in parents:
        setattr(parent, name, nn.GELU(approximate="tanh"))
    return len(parents)


def cpu_phases(decision: Decision) -> dict[str, str]:
    """{phase: kernel} of the CPU's Linear layers: the decision's; for a bfloat16 load without a
    kernel choice (`--dtype bfloat16`), prompts in float32 blocks where bfloat16 products are slow."""
    if decision.phases or not decision.streamed:
        return dict(decision.phases)
    if decision.dtype == torch.bfloat16 and decision.quantize == "none" and bf16.needs_upcast():
        return {"step": "bf16", "batch": "bf16", "prefill": "bf16f32"}
    return {}


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
            # transformers >= 5.25 swaps layers for Hub kernels on CUDA by default: code downloaded at
            # load time, which fails offline ("could not verify publisher trust status", seen on an
            # H200) and is not what kogpt's compiled step was measured with.
            use_kernels=False,
            **placed,
        )
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise KoGPTError(f"ran out of memory loading {path} in {dtype}; try --dtype bfloat16 or more memory") from exc
    except Exception as exc:  # the loaders raise many types for a bad file; name the file and go
        raise KoGPTError(f"could not load the weights in {path}: {first_line(exc)}") from exc
    model.eval()
    return model


def load_streamed_weights(
    path: Path,
    config,
    dtype: torch.dtype,
    quantize: str,
    pad_token_id: int,
    kernel: str | None = None,
    cache: bool = True,
    mmap: bool = True,
    phases: dict[str, str] | None = None,
):
    """The CPU loader: `kogpt.loading.weights.load_streaming`, quantizing on the way when asked,
    through the converted-weights cache for 16-bit and quantized formats (unless `cache` is off)."""
    config.pad_token_id = pad_token_id
    try:
        use_cache = cache and (quantize != "none" or dtype in (torch.bfloat16, torch.float16))
        return quantize_lib.load_cpu(path, config, dtype, quantize, kernel, use_cache, mmap, phases, attn_implementation="sdpa")
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise KoGPTError(f"ran out of memory loading {path} in {dtype} (--quantize {quantize})") from exc
    except Exception as exc:  # as in load_weights: name the file and go
        raise KoGPTError(f"could not load the weights in {path}: {first_line(exc)}") from exc
