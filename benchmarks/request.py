"""The standard request, whole: kogpt's own kernel choice against each kernel forced, one process each.

    python benchmarks/request.py /work/ckpt-1b --kernels 16bit,bf16,bf16mv,bf16f32,fp16,fp16f32 --rounds 2
    python benchmarks/request.py /work/ckpt-1b --kernels int8,w8,w8a8 --batch 4

A request is a 512-token prompt (fed in the engine's chunks), then 128 sampled tokens, at batch 1
(or `--batch N`, N samples of the same prompt). Each kernel runs in its own process: load
(`KoGPT.load(..., kernel=...)`; `16bit`, `int8`, `int4`: kogpt's choice), one short warm-up
request, then `--rounds` requests with fresh prompts (no prefix reuse); the best round is kept.
On a model whose float32 weights fit in RAM `--dtype auto` would pick float32: for `16bit` the
child makes it pick the 16-bit choice (as on a machine where float32 does not fit).
"""

from __future__ import annotations

import sys
from pathlib import Path

if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import subprocess

from benchmarks.engine import engine_run, machine, prompt

FORMATS = ("16bit", "int8", "int4")


def child(checkpoint: str, spec: str, rounds: int, batch: int, prompt_tokens: int, new: int) -> dict:
    """Load with `spec` (a format: kogpt's choice; else a kernel name), then time the requests."""
    import time

    import torch

    from kogpt import KoGPT
    from kogpt.loading.kernels import KERNELS
    from kogpt.placement import memory

    started = time.perf_counter()
    if spec == "16bit":
        memory.CPU_HEADROOM_BYTES = 1 << 50  # float32 "does not fit": auto chooses among the 16-bit kernels
        gpt = KoGPT.load(checkpoint, device="cpu")
    elif spec in FORMATS:
        gpt = KoGPT.load(checkpoint, device="cpu", quantize=spec)
    else:
        kernel = KERNELS[spec]
        quantize = "none" if kernel.format == "16bit" else kernel.format
        dtype = str(kernel.dtype).removeprefix("torch.") if quantize == "none" else "auto"
        gpt = KoGPT.load(checkpoint, device="cpu", quantize=quantize, dtype=dtype, kernel=spec)
    load_s = time.perf_counter() - started
    engine_run(gpt, prompt(32, seed=999), 4, rows=batch)  # warm-up
    runs = [engine_run(gpt, prompt(prompt_tokens, seed=r + 1), new, seed=r, rows=batch) for r in range(rounds)]
    best = min(runs, key=lambda r: r["total_s"])
    decision = gpt.loaded.decision
    return {"spec": spec, "kernel": decision.kernel, "phases": decision.phases, "dtype": str(decision.dtype),
            "load_s": load_s, "threads": torch.get_num_threads(), "rounds": runs, "total_s": best["total_s"],
            "prompt_s": best["first_token_s"], "prompt_tok_s": prompt_tokens / best["first_token_s"],
            "decode_tok_s": best["decode_tok_s"], "why": decision.kernel_reason}  # fmt: skip


def table(results: list[dict], batch: int, prompt_tokens: int, new: int) -> str:
    header = f"| kernel (batch {batch}) | phases (1 row / 4 rows / chunk) | prompt tok/s | decode tok/s | {prompt_tokens}-token prompt + {new} tokens |"
    lines = [header, "|---|---|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['spec']} | fails: {r['error']} | | | |")
            continue
        name = f"kogpt's choice ({r['spec']})" if r["spec"] in FORMATS else f"`{r['spec']}`"
        phases = " / ".join(r["phases"].get(p, "-") for p in ("step", "batch", "prefill")) or r["kernel"]
        lines.append(f"| {name} | {phases} | {r['prompt_tok_s']:.1f} | {r['decode_tok_s']:.2f} | {r['total_s']:.1f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--kernels", default="16bit,bf16,bf16mv,bf16f32,fp16,fp16f32,int8,w8,w8a8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.checkpoint, args.child, args.rounds, args.batch, args.prompt_tokens, args.new_tokens)))
        return 0
    results = []
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    for spec in args.kernels.split(","):
        command = [sys.executable, __file__, args.checkpoint, "--child", spec, "--rounds", str(args.rounds),
                   "--batch", str(args.batch), "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            results.append({"spec": spec, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:160]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}\n")
    print(table(results, args.batch, args.prompt_tokens, args.new_tokens))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
