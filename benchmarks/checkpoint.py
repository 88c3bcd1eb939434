"""Build a KoGPT-shaped GPT-J checkpoint with random weights, as the hub stores it (float16 `pytorch_model.bin`).

The 6B file is 12.3 GB, so it is written without ever holding the weights in memory: `torch.save`
under `skip_data` writes the archive with holes where the tensor bytes go, then each tensor's
bytes are generated and written into its hole one at a time.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where its modules would shadow installed
# packages (kernels.py once shadowed Hugging Face's `kernels`): the repository takes its place.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import json
import os
import time
from typing import BinaryIO

import torch

REPO = Path(__file__).resolve().parents[1]
KOGPT_CONFIG = dict(
    model_type="gptj", n_layer=28, n_embd=4096, n_head=16, n_inner=None, rotary_dim=64,
    n_positions=2048, n_ctx=2048, vocab_size=64512, bos_token_id=0, eos_token_id=1,
    activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=False,
    tokenizer_class="PreTrainedTokenizerFast",
)
# Smaller shapes with the same vocabulary, to debug the suite before the 6B run.
PRESETS = {
    "6b": dict(n_layer=28, n_embd=4096, n_head=16, rotary_dim=64),
    "1b": dict(n_layer=16, n_embd=2048, n_head=16, rotary_dim=64),
    "125m": dict(n_layer=12, n_embd=768, n_head=12, rotary_dim=32),
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, rotary_dim=8),  # seconds: the test suite runs it
}


def config_for(preset: str):
    from transformers import GPTJConfig

    values = {**KOGPT_CONFIG, **PRESETS[preset]}
    values.pop("model_type")
    config = GPTJConfig(**values)
    config.dtype = "float16"
    return config


def save_tokenizer(path: Path, vocab_size: int) -> None:
    """The test suite's byte-level BPE, its vocabulary padded to the model's 64,512 entries.

    The padding entries have no merges that produce them, so they never appear when encoding;
    they exist so that tools that check vocabulary size against the model (CTranslate2) accept it.
    """
    sys.path.insert(0, str(REPO))
    from tests.tiny import train_tokenizer

    train_tokenizer().save_pretrained(path)
    spec = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    for i in range(len(vocab), vocab_size):
        vocab[f"[unused{i}]"] = i
    (path / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def shapes(config) -> dict[str, torch.Size]:
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return {name: t.shape for name, t in model.state_dict().items()}


def fill(name: str, shape: torch.Size, out: BinaryIO, offset: int, generator: torch.Generator) -> None:
    """Weights like the init: layer norms at 1/0, biases 0, matrices N(0, 0.02); written block by block."""
    row = shape[1:].numel() if len(shape) > 1 else shape.numel()
    rows = max(1, (1 << 24) // row) if len(shape) > 1 else 1
    for start in range(0, shape[0] if len(shape) > 1 else 1, rows):
        n = min(rows, shape[0] - start) * row if len(shape) > 1 else row
        if "ln_" in name and name.endswith("weight"):
            block = torch.ones(n)
        elif name.endswith("bias"):
            block = torch.zeros(n)
        else:
            block = torch.empty(n).normal_(0.0, 0.02, generator=generator)
        data = block.half().numpy().tobytes()
        os.pwrite(out.fileno(), data, offset)
        offset += len(data)


def build(path: Path, preset: str, seed: int = 0) -> Path:
    """Write `config.json`, the tokenizer and a random float16 `pytorch_model.bin` to `path`."""
    path.mkdir(parents=True, exist_ok=True)
    weights = path / "pytorch_model.bin"
    config = config_for(preset)
    save_tokenizer(path, config.vocab_size)
    if weights.exists() and json.loads((path / "config.json").read_text()).get("n_layer") == config.n_layer:
        return path
    started = time.perf_counter()
    config.save_pretrained(path)
    # torch.empty reserves address space but touches no page, and skip_data never reads it.
    named = shapes(config)
    state = {name: torch.empty(shape, dtype=torch.float16) for name, shape in named.items()}
    with torch.serialization.skip_data():
        torch.save(state, weights)
    del state
    generator = torch.Generator().manual_seed(seed)
    # torch.save numbers the storages in the order of the state dict: data/0, data/1, ...
    reader = torch._C.PyTorchFileReader(str(weights))
    with open(weights, "r+b") as out:
        for key, (name, shape) in enumerate(named.items()):
            fill(name, shape, out, reader.get_record_offset(f"data/{key}"), generator)
    print(f"built {weights} ({weights.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a random KoGPT-shaped GPT-J checkpoint to a folder.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("preset", nargs="?", default="125m", choices=PRESETS)
    args = parser.parse_args()
    build(args.folder, args.preset)


if __name__ == "__main__":
    main()
