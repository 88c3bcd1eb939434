"""Find and check a KoGPT checkpoint: a hub repo or a local directory, its config and its tokenizer."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION
from kogpt.errors import KoGPTError, first_line

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


def read_config(model: str, revision: str):
    """The model's config alone, for planning: a local directory's config.json, or the hub's (no
    weights fetched); offline, KoGPT's own published config."""
    if looks_local(model):
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise KoGPTError(f"{path} has no config.json: is it a Hugging Face checkpoint directory?")
        return load_config(path)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as exc:
        if model == DEFAULT_MODEL:
            log.info("the hub is out of reach; planning with KoGPT 6B's published config")
            return published_config(revision)
        raise KoGPTError(f"could not read the config of {model}@{revision}: {first_line(exc)}") from exc
    return check_gptj(config, model)
