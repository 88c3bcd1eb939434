"""The generation engine, measured side by side with transformers' `generate` on one loaded model.

    flock /tmp/kogpt-6b.lock python benchmarks/engine.py --checkpoint /work/ckpt/kogpt-6b
    python benchmarks/engine.py --preset 125m          # builds /tmp/kogpt-bench/125m once
    python benchmarks/engine.py --preset tiny          # the test checkpoint: seconds (the test suite runs it)

Each format (`--formats default,int8`) runs in its own process, which loads the model once and
measures, alternating rounds where it compares:
- decode tokens/s of the engine's loop against `model.generate` (same prompt, sampling at 0.8);
- the loop's overhead per token: everything but the forward pass, against the forward pass;
- `/retry` of a long prompt: first token against the cold first token;
- `/continue` after histories of several lengths: first token (should not grow with the history);
- N samples decoded as one batch: total tokens/s against N = 1, and peak RSS during each.
The table goes to stdout and OUT/engine-results.md; the figures to OUT/engine-results.json.
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
import os
import random
import subprocess
import threading
import time

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SIZES = {  # preset: (long prompt, histories for /continue, new tokens, batch, prefill chunk or None)
    "tiny": (96, (16, 40, 80), 8, 4, 16),  # the tiny context (128) is one default chunk: use smaller ones
    "default": (1000, (250, 500, 1000, 1500), 16, 4, None),
}


class PeakRSS:
    """Highest resident set size seen while in the block (sampled every 10 ms)."""

    def __enter__(self):
        import psutil

        self._process, self._stop, self.peak = psutil.Process(), threading.Event(), 0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def prompt(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(5, 300) for _ in range(n)]  # ids the test tokenizer really produces


def engine_run(gpt, ids: list[int], new: int, seed: int = 0, rows: int = 1) -> dict:
    """One request through the engine: first token, decode rate, the loop's own time per token."""
    from kogpt.settings import SamplingSettings

    settings = SamplingSettings(temperature=0.8, max_new_tokens=new, seed=seed, num_return_sequences=rows)
    request = gpt.engine.submit(ids, settings, [seed + i for i in range(rows)], new)
    pieces = list(gpt.engine.pieces(request))
    stats = gpt.engine.last_stats
    first = min(p.first_at for p in pieces) - request.submitted
    total = max(p.at for p in pieces) - request.submitted
    tokens = sum(max((p.tokens for p in pieces if p.row == r), default=0) for r in range(rows))
    steps = sum(stats.step_seconds)
    return {"first_token_s": first, "total_s": total, "tokens": tokens,
            "decode_tok_s": (tokens - rows) / (total - first) if total > first else float("nan"),
            "step_s": steps / max(1, stats.steps),
            "overhead_s": (stats.decode_seconds - steps) / max(1, stats.steps),
            "reused": stats.reused_tokens}


def generate_run(gpt, ids: list[int], new: int, seed: int = 0) -> dict:
    """The same request through transformers' `generate` (dynamic cache), timed by a streamer."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.stamps, self.seen = [], False

        def put(self, value) -> None:
            if self.seen:
                self.stamps.append(time.perf_counter())
            self.seen = True

        def end(self) -> None:
            pass

    stamps = Stamps()
    device = gpt.engine._core.device
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.inference_mode():
        gpt.model.generate(torch.tensor([ids], device=device), do_sample=True, temperature=0.8, top_k=0,
                           max_new_tokens=new, min_new_tokens=new, pad_token_id=1, streamer=stamps)
    first, last = stamps.stamps[0] - started, stamps.stamps[-1] - started
    return {"first_token_s": first, "total_s": last, "tokens": len(stamps.stamps),
            "decode_tok_s": (len(stamps.stamps) - 1) / (last - first)}


PARTS = ("decode", "retry", "continue", "batch")


def measure(checkpoint: str, fmt: str, size: str, rounds: int, parts: tuple[str, ...] = PARTS) -> dict:
    """The `parts` of the measurement for one format, in this process."""
    from kogpt import KoGPT

    long, histories, new, batch, chunk = SIZES[size]
    started = time.perf_counter()
    gpt = KoGPT.load(checkpoint, device="cpu", **({"quantize": "int8"} if fmt == "int8" else {}))
    if chunk:
        gpt.engine.prefill_chunk = chunk
    result: dict = {"format": fmt, "dtype": str(gpt.loaded.dtype), "load_s": time.perf_counter() - started,
                    "prefill_chunk": gpt.engine.prefill_chunk}
    short = prompt(20)
    engine_run(gpt, short, 2)  # warm-up: thread pools, first allocations
    if "decode" in parts:
        result["decode"] = decode_figures(gpt, short, new, rounds)
    if "retry" in parts:
        result["retry"] = retry_figures(gpt, prompt(long, seed=1))
    if "continue" in parts:
        result["continue"] = continue_figures(gpt, histories, new)
    if "batch" in parts:
        result["batch"] = batch_figures(gpt, short, new, batch)
    return result


def decode_figures(gpt, short: list[int], new: int, rounds: int) -> dict:
    owned, hf = [], []
    for _ in range(rounds):  # alternating, best of each
        hf.append(generate_run(gpt, short, new))
        owned.append(engine_run(gpt, short, new))
    best_owned = max(owned, key=lambda r: r["decode_tok_s"])
    figures = {"engine_tok_s": best_owned["decode_tok_s"], "generate_tok_s": max(r["decode_tok_s"] for r in hf),
               "step_s": best_owned["step_s"], "overhead_s": best_owned["overhead_s"],
               "rounds": {"engine": [r["decode_tok_s"] for r in owned], "generate": [r["decode_tok_s"] for r in hf]}}
    figures["ratio"] = figures["engine_tok_s"] / figures["generate_tok_s"]
    figures["overhead_fraction"] = best_owned["overhead_s"] / best_owned["step_s"]
    return figures


def retry_figures(gpt, ids: list[int]) -> dict:
    gpt.engine.forget()
    cold = engine_run(gpt, ids, 2)
    retry = engine_run(gpt, ids, 2)
    return {"prompt_tokens": len(ids), "cold_first_s": cold["first_token_s"], "retry_first_s": retry["first_token_s"],
            "reused": retry["reused"], "ratio": retry["first_token_s"] / cold["first_token_s"]}


def continue_figures(gpt, histories: tuple[int, ...], new: int) -> list[dict]:
    figures = []
    for length in histories:
        history = prompt(length, seed=length)
        gpt.engine.forget()
        first_turn = engine_run(gpt, history, new)
        extra = prompt(new, seed=length + 1)  # the completion, appended to the prompt by /continue
        turn = engine_run(gpt, history + extra, 2)
        figures.append({"history": length, "cold_first_s": first_turn["first_token_s"],
                        "continue_first_s": turn["first_token_s"], "fed": length + new - turn["reused"]})
    return figures


def batch_figures(gpt, short: list[int], new: int, batch: int) -> dict:
    runs = {}
    for rows in (1, batch):
        with PeakRSS() as rss:
            run = engine_run(gpt, short, new, rows=rows)
        runs[rows] = {"tok_s": (run["tokens"] - rows) / (run["total_s"] - run["first_token_s"]),
                      "peak_rss_gib": rss.peak / 1024**3, "tokens": run["tokens"]}
    return {"rows": batch, "single_tok_s": runs[1]["tok_s"], "batch_tok_s": runs[batch]["tok_s"],
            "ratio": runs[batch]["tok_s"] / runs[1]["tok_s"],
            "single_peak_rss_gib": runs[1]["peak_rss_gib"], "batch_peak_rss_gib": runs[batch]["peak_rss_gib"]}


def verdicts(r: dict) -> list[tuple[str, str, bool]]:
    rows = []
    if "decode" in r:
        rows += decode_verdicts(r["decode"])
    if "retry" in r:
        rows += retry_verdicts(r["retry"])
    if "continue" in r:
        rows += continue_verdicts(r["continue"])
    if "batch" in r:
        rows += batch_verdicts(r["batch"])
    return rows


def decode_verdicts(d: dict) -> list[tuple[str, str, bool]]:
    return [
        ("decode tok/s, engine vs generate >= 1.0x",
         f"{d['engine_tok_s']:.3f} vs {d['generate_tok_s']:.3f} = {d['ratio']:.2f}x", d["ratio"] >= 1.0),
        ("loop overhead per token <= 3% of the step",
         f"{1000 * d['overhead_s']:.2f} ms of {1000 * d['step_s']:.1f} ms = {100 * d['overhead_fraction']:.1f}%",
         d["overhead_fraction"] <= 0.03),
    ]


def retry_verdicts(retry: dict) -> list[tuple[str, str, bool]]:
    return [
        (f"/retry of a {retry['prompt_tokens']}-token prompt: first token <= 10% of cold",
         f"{retry['retry_first_s']:.3f} s vs {retry['cold_first_s']:.2f} s = {100 * retry['ratio']:.1f}%",
         retry["ratio"] <= 0.10),
    ]


def continue_verdicts(cont: list[dict]) -> list[tuple[str, str, bool]]:
    firsts = [c["continue_first_s"] for c in cont]
    return [
        ("/continue first token flat in the history length",
         ", ".join(f"{c['history']}: {c['continue_first_s']:.2f} s (cold {c['cold_first_s']:.2f} s)" for c in cont),
         max(firsts) <= 1.5 * min(firsts) + 0.05),
    ]


def batch_verdicts(b: dict) -> list[tuple[str, str, bool]]:
    return [
        (f"N = {b['rows']} total tokens/s >= 3x N = 1",
         f"{b['batch_tok_s']:.2f} vs {b['single_tok_s']:.2f} = {b['ratio']:.2f}x; peak RSS "
         f"{b['batch_peak_rss_gib']:.2f} vs {b['single_peak_rss_gib']:.2f} GiB", b["ratio"] >= 3.0),
    ]


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    return f"{model}, {os.cpu_count()} CPUs, flags {' '.join(f for f in wanted if f in flags)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint directory (default: the preset's, built once)")
    parser.add_argument("--preset", default="6b", choices=["tiny", "125m", "1b", "6b"])
    parser.add_argument("--formats", default="default,int8", help="default (bfloat16 on CPU), int8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"what to measure, of {','.join(PARTS)}")
    parser.add_argument("--out", default="/tmp/kogpt-bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = "tiny" if args.preset == "tiny" else "default"
    if args.child:
        print(json.dumps(measure(args.checkpoint, args.child, size, args.rounds, tuple(args.parts.split(",")))))
        return 0
    out = Path(args.out)
    checkpoint = args.checkpoint or str(build(args.preset, out))
    results = {"machine": machine(), "checkpoint": checkpoint, "preset": args.preset,
               "date": time.strftime("%Y-%m-%dT%H:%M%z"), "formats": []}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    for fmt in args.formats.split(","):
        command = [sys.executable, __file__, "--child", fmt, "--checkpoint", checkpoint, "--preset", args.preset,
                   "--rounds", str(args.rounds), "--parts", args.parts]
        print(f"measuring {fmt} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results["formats"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    lines = [f"{results['date']}, {results['machine']}, checkpoint {checkpoint}", "",
             "| format | target | measured | met |", "|---|---|---|---|"]
    for r in results["formats"]:
        for target, figure, met in verdicts(r):
            lines.append(f"| {r['format']} ({r['dtype'].removeprefix('torch.')}) | {target} | {figure} | {'yes' if met else 'no'} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine-results.json").write_text(json.dumps(results, indent=1))
    (out / "engine-results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def build(preset: str, out: Path) -> Path:
    if preset == "tiny":
        from tests.tiny import build_checkpoint

        return build_checkpoint(out / "tiny")
    if preset == "6b" and Path("/work/ckpt/kogpt-6b/pytorch_model.bin").exists():
        return Path("/work/ckpt/kogpt-6b")
    from benchmarks.checkpoint import build as build_preset

    return build_preset(out / preset, preset)


if __name__ == "__main__":
    raise SystemExit(main())
