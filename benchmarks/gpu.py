"""GPU benchmark: plain `generate` vs the package's fast path (static KV cache + torch.compile).

    python benchmarks/gpu.py --preset 6b            # on a CUDA machine
    python benchmarks/gpu.py --preset 125m --device cpu --new-tokens 8   # smoke test of the script

The model is the KoGPT-shaped config with random float16 weights made on the device (load time is
the CPU suite's business). It reports decode tokens/s for both paths, the device's memory bandwidth
(a large device-to-device copy), the fraction of the bandwidth roofline (bandwidth / bytes of
weights read per token), and the first-token latency of a 2048-token prompt (prefill computes the
last position's logits only).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from checkpoint import PRESETS, config_for, save_tokenizer  # noqa: E402
from run import weight_bytes_per_token  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bandwidth_gb_s(device: torch.device, gib: float) -> float:
    """Read+write bandwidth of a large copy on `device`, best of several."""
    src = torch.empty(int(gib * 1024**3) // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        started = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * src.numel() * 2 / best / 1e9


def decode_rate(run, device: torch.device, rounds: int) -> tuple[float, float]:
    """Tokens/s after the first token, and the first-token time, best of `rounds` (after one warm-up)."""
    run()  # warm-up; on the fast path this compiles
    best_rate, best_first = 0.0, float("inf")
    for _ in range(rounds):
        sync(device)
        first, total, tokens = run()
        best_rate = max(best_rate, (tokens - 1) / (total - first))
        best_first = min(best_first, first)
    return best_rate, best_first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="6b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--long-prompt", type=int, default=2048 - 64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bandwidth-gib", type=float, default=4.0)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kogpt.generate import SamplingSettings, stream

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    config = config_for(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(Path(tmp), config.vocab_size)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    ids = torch.randint(5, 300, (args.long_prompt,)).tolist()
    prompt, context = ids[: args.prompt_tokens], config.n_positions
    settings = SamplingSettings(temperature=0.8, max_new_tokens=args.new_tokens, seed=0)

    def plain():
        last = list(stream(model, tokenizer, prompt, settings, context, static_cache=False))[-1]
        return last.first_token_seconds, last.seconds, last.tokens

    def fast(tokens=prompt, n_new=args.new_tokens):
        chunks = list(stream(model, tokenizer, tokens, SamplingSettings(temperature=0.8, max_new_tokens=n_new, seed=0),
                             context, static_cache=True))
        return chunks[-1].first_token_seconds, chunks[-1].seconds, chunks[-1].tokens

    plain_rate, plain_first = decode_rate(plain, device, args.rounds)
    fast_rate, fast_first = decode_rate(fast, device, args.rounds)
    long_first = min(fast(ids, 2)[0] for _ in range(args.rounds + 1))
    with torch.inference_mode():  # the prefill alone, last-position logits only
        prefill = []
        for _ in range(args.rounds + 1):
            sync(device)
            started = time.perf_counter()
            model(torch.tensor([ids], device=device), logits_to_keep=1)
            sync(device)
            prefill.append(time.perf_counter() - started)
    bandwidth = bandwidth_gb_s(device, args.bandwidth_gib)
    roofline = bandwidth * 1e9 / weight_bytes_per_token(config, dtype.itemsize)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {
        "device": name, "preset": args.preset, "dtype": str(dtype), "torch": torch.__version__,
        "bandwidth_gb_s": bandwidth, "roofline_tok_s": roofline,
        "plain_generate_tok_s": plain_rate, "plain_fraction_of_roofline": plain_rate / roofline,
        "fast_path_tok_s": fast_rate, "fast_fraction_of_roofline": fast_rate / roofline,
        "first_token_s_short_prompt": {"plain": plain_first, "fast": fast_first},
        f"first_token_s_{len(ids)}_token_prompt": long_first, "prefill_only_s": min(prefill[1:]),
    }
    print(json.dumps(result, indent=1))
    print(f"\n| path | decode tok/s | % of {roofline:.0f} tok/s roofline ({bandwidth:.0f} GB/s) |\n|---|---:|---:|")
    print(f"| plain generate (dynamic cache) | {plain_rate:.1f} | {100 * plain_rate / roofline:.0f}% |")
    print(f"| kogpt fast path (static cache, compiled) | {fast_rate:.1f} | {100 * fast_rate / roofline:.0f}% |")
    print(f"\nfirst token after a {len(ids)}-token prompt: {1000 * long_first:.0f} ms (prefill alone {1000 * min(prefill[1:]):.0f} ms)")


if __name__ == "__main__":
    main()
