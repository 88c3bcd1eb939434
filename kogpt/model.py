"""Find, check and load a KoGPT checkpoint (hub repo or local directory) onto a device."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kogpt import memory, placement
from kogpt import plan as plan_lib
from kogpt import prefill
from kogpt import quantize as quantize_lib
from kogpt import weights as weights_lib
from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION
from kogpt.devicemap import quiet_accelerate
from kogpt.errors import KoGPTError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "bos_token": "[BOS]",
    "eos_token": "[EOS]",
    "unk_token": "[UNK]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
HUB_FILES = ["*.json", "*.safetensors", "*.bin", "*.txt"]


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


def published_config(revision: str = DEFAULT_REVISION):
    """KoGPT 6B's config.json as published on the hub, for planning without a network."""
    from transformers import GPTJConfig

    return GPTJConfig(
        vocab_size=64512,
        n_positions=2048,
        n_embd=4096,
        n_layer=28,
        n_head=16,
        rotary_dim=64,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        dtype="float32" if revision == "KoGPT6B-ryan1.5b" else "float16",
    )


def looks_local(model: str) -> bool:
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1


def resolve_checkpoint(model: str, revision: str) -> Path:
    """Return a local directory holding the checkpoint, downloading it from the hub if needed."""
    if looks_local(model):
        path = Path(model).expanduser()
        log.debug("--model %s is a local directory; --revision %s is ignored", path, revision)
        check_directory(path)
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    log.debug("fetching %s at revision %s from the hub (or its cache)", model, revision)
    try:
        path = Path(snapshot_download(model, revision=revision, allow_patterns=HUB_FILES))
    except RevisionNotFoundError as exc:
        raise KoGPTError(f"the hub repo {model} has no revision {revision!r}") from exc
    except GatedRepoError as exc:
        raise KoGPTError(f"{model} is gated: accept its terms on huggingface.co and run `hf auth login`") from exc
    except RepositoryNotFoundError as exc:
        raise KoGPTError(f"no hub repo {model!r} (nor a local directory of that name)") from exc
    except LocalEntryNotFoundError as exc:
        raise KoGPTError(
            f"cannot reach the hub and {model}@{revision} is not in the local cache; "
            "connect once to download it, or pass --model DIR with a local checkpoint"
        ) from exc
    except OSError as exc:
        raise KoGPTError(f"could not download {model}@{revision}: {exc}") from exc
    check_directory(path)
    return path


def check_directory(path: Path) -> None:
    if not path.is_dir():
        raise KoGPTError(f"no such model directory: {path}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise KoGPTError(f"cannot read the model directory {path}: permission denied")
    if not (path / "config.json").is_file():
        raise KoGPTError(f"{path} has no config.json: is it a Hugging Face checkpoint directory?")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise KoGPTError(f"{path} has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def load_config(path: Path, trust_remote_code: bool = False):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise KoGPTError(f"{path / 'config.json'} is not a valid model config: {first_line(exc)}") from exc
    return check_gptj(config, str(path / "config.json"))


def check_gptj(config, where: str):
    """`config` if it describes a GPT-J (KoGPT's architecture); else a KoGPTError naming `where`."""
    if config.model_type != "gptj":
        raise KoGPTError(f"{where} is a {config.model_type!r} model; KoGPT needs model_type 'gptj'")
    return config


def load_tokenizer(path: Path, vocab_size: int, trust_remote_code: bool = False):
    """The tokenizer with KoGPT's special tokens, checked to exist in the model's vocabulary."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise KoGPTError(f"could not load the tokenizer from {path}: {first_line(exc)}") from exc
    vocab = tokenizer.get_vocab()
    for token in SPECIAL_TOKENS.values():
        if token not in vocab or vocab[token] >= vocab_size:
            raise KoGPTError(f"the tokenizer in {path} has no {token} token")
    # Mark them special, as the seed does by passing them to from_pretrained; none is new.
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


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
) -> Loaded:
    """Load tokenizer and weights, choose the dtype, and place the model on `device`.

    Code shipped inside a checkpoint never runs unless `trust_remote_code` is set.
    `device_map` (auto, balanced, sequential) splits the model over the GPUs and the CPU within
    `max_memory` ("0=10GiB,cpu=30GiB" or a dict), putting what is left in `offload_dir`;
    `quantize` (none, int8, int4) shrinks the weights. The placement is planned on the meta device
    first, and nothing is loaded when the plan does not fit.
    """
    started = time.perf_counter()
    device, dtype = placement.check_target(device, dtype)
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
    if quantize != "none" and streamed:
        choice = memory.DtypeChoice(quantize_lib.COMPUTE_DTYPE, f"--quantize {quantize} computes in bfloat16")
    log.info("dtype %s on %s: %s", str(choice.dtype).removeprefix("torch."), target, choice.reason)

    if streamed:  # tensor by tensor: peak memory is the model plus one tensor
        weights = load_streamed_weights(path, config, choice.dtype, quantize, tokenizer.eos_token_id)
        if choice.dtype == torch.bfloat16 and quantize == "none" and prefill.needs_upcast():
            log.debug("prompts computed in float32 (no fast bfloat16 GEMM): %d layers", prefill.apply(weights))
    else:
        with placement.removing_partial_offload(options.offload_dir):
            placed = placement.load_kwargs(plan.device_map, target, options, choice.dtype)
            with quiet_accelerate("accelerate.big_modeling"):
                weights = load_weights(path, choice.dtype, target, tokenizer.eos_token_id, trust_remote_code, placed)
    if options.strategy:
        log.info("placement: %s", plan.summary())
    log.debug("loaded %d parameters from %s in %.1f s", plan.n_params, path, time.perf_counter() - started)
    return Loaded(weights, tokenizer, target, choice.dtype, model, plan.n_params, context, quantize)


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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
