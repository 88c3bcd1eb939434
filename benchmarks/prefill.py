"""Prefill (prompt) time of a bfloat16 KoGPT-width model on the CPU: torch's bfloat16 kernel
against kogpt.loading.bf16's blocked float32 path, side by side in one run.

    python benchmarks/prefill.py --layers 2 --tokens 20 200 500

Uses a random GPT-J of KoGPT's width (4096, 16 heads) with fewer layers; time scales with layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where its modules would shadow installed
# packages (kernels.py once shadowed Hugging Face's `kernels`): the repository takes its place.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import time

import torch
from transformers import GPTJConfig, GPTJForCausalLM

from kogpt.loading import bf16 as prefill
from kogpt.loading.kernels import KERNELS


def timed(model, ids) -> float:
    with torch.inference_mode():
        model(ids, logits_to_keep=1)  # warm-up
        started = time.perf_counter()
        model(ids, logits_to_keep=1)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, nargs="+", default=[20, 200, 500])
    args = parser.parse_args()
    config = GPTJConfig(vocab_size=64512, n_positions=2048, n_embd=4096, n_layer=args.layers, n_head=16,
                        rotary_dim=64, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    plain = GPTJForCausalLM(config).to(torch.bfloat16).eval().requires_grad_(False)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, needs_upcast={prefill.needs_upcast()}, "
          f"{args.layers} layers of KoGPT width, bfloat16")
    print("| prompt tokens | bfloat16 kernel s | float32 blocks s | speed-up |\n|---:|---:|---:|---:|")
    for tokens in args.tokens:
        ids = torch.randint(2, 64512, (1, tokens))
        for module in plain.modules():
            if type(module) is prefill.CpuLinear:
                module.__class__ = torch.nn.Linear
        base = timed(plain, ids)
        prefill.apply(plain, {"prefill": KERNELS["bf16f32"].run})
        fast = timed(plain, ids)
        print(f"| {tokens} | {base:.2f} | {fast:.2f} | {base / fast:.2f}x |")


if __name__ == "__main__":
    main()
