"""What running KoGPT on vLLM needs, shared by `kogpt serve --engine vllm` and `kogpt eval --engine vllm`:
a check that vLLM and a GPU are there, KoGPT's dtype and context, its parallel limits, its tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kogpt.errors import KoGPTError

CONTEXT = 2048
DTYPES = {"auto": "float16", "float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}
HEADS, LAYERS = 16, 28


def check_available() -> None:
    """Raise a one-line `KoGPTError` unless vLLM is installed and a CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        raise KoGPTError(
            '--engine vllm needs vLLM, which is not installed: pip install ".[vllm]" in the kogpt checkout (Linux, NVIDIA GPU)'
        )
    import torch

    if not torch.cuda.is_available():
        raise KoGPTError(
            "--engine vllm needs an NVIDIA GPU and this machine has none; leave out --engine to use kogpt's own"
        )


def check_parallel(tensor_parallel: int, pipeline_parallel: int) -> None:
    """KoGPT has 16 attention heads and 28 layers: TP must divide the heads, PP be at most the layers."""
    if tensor_parallel < 1 or HEADS % tensor_parallel:
        raise KoGPTError(
            f"--tensor-parallel-size must divide KoGPT's {HEADS} attention heads (1, 2, 4, 8, 16), not {tensor_parallel}"
        )
    if not 1 <= pipeline_parallel <= LAYERS:
        raise KoGPTError(f"--pipeline-parallel-size must be 1 to {LAYERS} (KoGPT's layers), not {pipeline_parallel}")


def tokenizer_dir(checkpoint: Path, vocab_size: int, cache: Path) -> Path:
    """A copy of KoGPT's tokenizer whose config names its special tokens ([BOS], [EOS], ...), which
    the hub's files leave out; vLLM reads it with `--tokenizer`."""
    from kogpt.loading.checkpoint import load_tokenizer

    tokenizer = load_tokenizer(checkpoint, vocab_size)
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(cache)
    return cache
