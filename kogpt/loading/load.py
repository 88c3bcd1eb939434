"""Load a checked KoGPT checkpoint onto a device: the tokenizer, the plan, then the weights."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kogpt.errors import KoGPTError, first_line
from kogpt.loading import prefill
from kogpt.loading import quantize as quantize_lib
from kogpt.loading import weights as weights_lib
from kogpt.loading.checkpoint import load_config, load_tokenizer, resolve_checkpoint
from kogpt.placement.decide import Decision, decide
from kogpt.placement.devicemap import quiet_accelerate
from kogpt.placement.options import Options, check_arguments, load_kwargs, removing_partial_offload

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

    decision = decide(config, options)
    if not decision.plan.fits:
        raise KoGPTError(decision.plan.refusal())
    dtype, quantize = decision.dtype, options.quantize
    log.info("dtype %s on %s: %s", str(dtype).removeprefix("torch."), decision.device, decision.choice.reason)
    if decision.streamed:  # tensor by tensor: peak memory is the model plus one tensor
        weights = load_streamed_weights(path, config, dtype, quantize, tokenizer.eos_token_id)
        if dtype == torch.bfloat16 and quantize == "none" and prefill.needs_upcast():
            log.debug("prompts computed in float32 (no fast bfloat16 GEMM): %d layers", prefill.apply(weights))
    else:
        with removing_partial_offload(options.offload_dir):
            placed = load_kwargs(decision.plan.device_map, decision.device, options, dtype)
            with quiet_accelerate("accelerate.big_modeling"):
                weights = load_weights(
                    path, dtype, decision.device, tokenizer.eos_token_id, options.trust_remote_code, placed
                )
    if options.strategy:
        log.info("placement: %s", decision.plan.summary())
    n_params = decision.plan.n_params
    log.debug("loaded %d parameters from %s in %.1f s", n_params, path, time.perf_counter() - started)
    return Loaded(weights, tokenizer, decision, options.model, n_params, config.n_positions)


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


def load_streamed_weights(path: Path, config, dtype: torch.dtype, quantize: str, pad_token_id: int):
    """The CPU loader: `kogpt.weights.load_streaming`, quantizing on the way when asked."""
    config.pad_token_id = pad_token_id
    try:
        if quantize != "none":
            return quantize_lib.load_quantized(path, config, quantize, attn_implementation="sdpa")
        return weights_lib.load_streaming(path, config, dtype, attn_implementation="sdpa")
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise KoGPTError(f"ran out of memory loading {path} in {dtype} (--quantize {quantize})") from exc
    except Exception as exc:  # as in load_weights: name the file and go
        raise KoGPTError(f"could not load the weights in {path}: {first_line(exc)}") from exc
