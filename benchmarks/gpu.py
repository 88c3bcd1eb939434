"""GPU check of the engine's compiled path: one prepared run of a few minutes on a CUDA machine.

    python benchmarks/gpu.py                     # 6B-shaped, float16, on cuda:0
    python benchmarks/gpu.py --preset 125m --device cpu --no-compile --new-tokens 8 --long-prompt 200
                                                 # smoke test of the script itself, anywhere

The model is the KoGPT-shaped config with random float16 weights made on the device (the CPU
suite measures loading). Targets, each reported met or not:
- decode at batch 1 reaches >= 60% of the HBM roofline (bandwidth of a large device copy / bytes
  of weights read per token);
- the first token of a 2048-token prompt (cold prefill) comes within 100 ms;
- 0 compilations over 10 turns of different lengths, once each size bucket was warmed up;
- greedy tokens equal transformers' `generate` (eager, dynamic cache) on the same model.
Needs transformers >= 5.24 (GPT-J SDPA and the `cache=` argument), like the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where its modules would shadow installed
# packages (kernels.py once shadowed Hugging Face's `kernels`): the repository takes its place.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import random
import tempfile
import time
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent

from benchmarks.checkpoint import PRESETS, config_for, save_tokenizer  # noqa: E402
from benchmarks.run import weight_bytes_per_token  # noqa: E402


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


def request(gpt, ids: list[int], new: int, temperature: float = 0.8, seed: int = 0) -> dict:
    """One request through the engine: first-token seconds, decode tokens/s, the token count."""
    from kogpt.settings import SamplingSettings

    settings = SamplingSettings(temperature=temperature, max_new_tokens=new, seed=seed)
    chunks = list(gpt.engine.stream(ids, settings, seed))
    last = chunks[-1]
    decode = (last.tokens - 1) / (last.seconds - last.first_token_seconds) if last.tokens > 1 else float("nan")
    return {"first_s": last.first_token_seconds, "decode_tok_s": decode, "tokens": last.tokens,
            "text": "".join(c.text for c in chunks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="6b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--long-prompt", type=int, default=2046, help="prompt tokens of the first-token check")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bandwidth-gib", type=float, default=4.0)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    version = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    if version < (5, 24):
        print(f"transformers {transformers.__version__} is too old: kogpt needs >= 5.24 (pip install 'transformers>=5.24')")
        return 2
    from kogpt.api import KoGPT
    from kogpt.engine.decode import compilations

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    config = config_for(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(Path(tmp), config.vocab_size)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    started = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    made_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.parameters())
    # What KoGPT reads of a `Loaded` (the loader's decision is not needed: the cache is chosen here).
    loaded = SimpleNamespace(model=model, tokenizer=tokenizer, device=device, dtype=dtype, source=f"random {args.preset}",
                             n_params=n_params, context_length=config.n_positions)
    gpt = KoGPT(loaded, static_cache=True, compile=not args.no_compile)  # compiles on CUDA only
    rng = random.Random(0)
    ids = [rng.randrange(5, 300) for _ in range(args.long_prompt)]
    short = ids[:20]
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    # Warm up the buckets the run uses: 256 (short turns), 512 (longer turns), the long prompt's.
    started = time.perf_counter()
    before = compilations()
    for n, new in ((20, 8), (300, 8), (args.long_prompt, 2)):
        request(gpt, ids[:n], new)
        log(f"warmed up a {n}-token prompt ({time.perf_counter() - started:.0f} s so far)")
    warm_s, warm_graphs = time.perf_counter() - started, compilations() - before

    decode = max((request(gpt, short, args.new_tokens, seed=r) for r in range(args.rounds)), key=lambda r: r["decode_tok_s"])
    log(f"decode: {decode['decode_tok_s']:.1f} tokens/s")

    before = compilations()
    turns = []
    for turn in range(args.turns):  # lengths within the warmed buckets, all different
        n, new = rng.randrange(10, 440), rng.randrange(4, 64)
        turns.append((n, new, request(gpt, ids[:n], new, seed=turn)["tokens"]))
    recompiled = compilations() - before
    log(f"{args.turns} turns: {recompiled} compilations")

    firsts = []
    for _ in range(args.rounds):
        gpt.engine.forget()  # a cold prefill each time
        sync(device)
        firsts.append(request(gpt, ids, 2)["first_s"])
    retry = request(gpt, ids, 2)["first_s"]
    log(f"first token of {args.long_prompt} tokens: {1000 * min(firsts):.0f} ms (retry {1000 * retry:.1f} ms)")

    greedy_new = 64
    engine_greedy = request(gpt, short, greedy_new, temperature=0)["text"]
    with torch.no_grad():
        out = model.generate(torch.tensor([short], device=device), do_sample=False, max_new_tokens=greedy_new,
                             pad_token_id=1, eos_token_id=1)
    hf_greedy = tokenizer.decode(out[0, len(short):], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    same = next((i for i, (a, b) in enumerate(zip(engine_greedy, hf_greedy)) if a != b), min(len(engine_greedy), len(hf_greedy)))

    sync(device)
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(torch.tensor([short], device=device), do_sample=True, temperature=0.8, top_k=0,
                       max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=1)
    sync(device)
    plain_tok_s = args.new_tokens / (time.perf_counter() - started)

    bandwidth = bandwidth_gb_s(device, args.bandwidth_gib)
    roofline = bandwidth * 1e9 / weight_bytes_per_token(config, dtype.itemsize)
    fraction = decode["decode_tok_s"] / roofline
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {
        "device": name, "preset": args.preset, "dtype": str(dtype), "torch": torch.__version__,
        "transformers": transformers.__version__, "compile": gpt.compile, "model_made_s": made_s,
        "warm_up_s": warm_s, "warm_up_graphs": warm_graphs, "bandwidth_gb_s": bandwidth, "roofline_tok_s": roofline,
        "engine_decode_tok_s": decode["decode_tok_s"], "fraction_of_roofline": fraction,
        "plain_generate_tok_s": plain_tok_s, "turns": turns, "recompilations_over_turns": recompiled,
        "long_prompt_tokens": args.long_prompt, "first_token_s": min(firsts), "retry_first_token_s": retry,
        "greedy_equal": engine_greedy == hf_greedy, "greedy_chars_equal": same, "greedy_chars": len(hf_greedy),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=1))
    rows = [
        ("decode at batch 1 >= 60% of the HBM roofline",
         f"{decode['decode_tok_s']:.1f} tok/s of {roofline:.0f} ({bandwidth:.0f} GB/s) = {100 * fraction:.0f}%; "
         f"plain generate {plain_tok_s:.1f} tok/s", fraction >= 0.6),
        (f"first token of a {args.long_prompt}-token prompt <= 100 ms", f"{1000 * min(firsts):.0f} ms", min(firsts) <= 0.1),
        (f"0 compilations over {args.turns} turns of different lengths", f"{recompiled} (warm-up: {warm_graphs} graphs, "
         f"{warm_s:.0f} s)", recompiled == 0),
        ("greedy tokens equal transformers generate", "equal" if engine_greedy == hf_greedy else
         f"first {same} of {len(hf_greedy)} characters equal", engine_greedy == hf_greedy),
    ]
    print(f"\n{name}, torch {torch.__version__}, transformers {transformers.__version__}, {args.preset} {dtype}\n")
    print("| target | measured | met |\n|---|---|---|")
    for target, figure, met in rows:
        print(f"| {target} | {figure} | {'yes' if met else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
