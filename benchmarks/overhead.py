"""What the package adds on top of the model: streaming/REPL vs a bare decode loop, and start-up time.

`overhead`: on one loaded model (the package's default path), the same prompt and number of sampled
tokens through (a) a bare loop of forward calls with a KV cache, (b) HF `generate`, (c) the package's
`stream()` (worker thread, streamer, incremental decoding), (d) one REPL turn through `Repl`, fed
from a pipe and printing to a string. Rounds alternate; each variant keeps its best time.

`first-prompt`: time from starting `python -m kogpt --model DIR --device cpu` to its first
`prompt> `, against the time to read the weight files once (both with the files in the page cache).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO

ROUNDS = 2


def bare_loop(model, ids: list[int], n_new: int) -> float:
    """Prefill, then one forward call per token with the KV cache, sampling at temperature 0.8."""
    import torch
    from transformers import DynamicCache

    started = time.perf_counter()
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        logits = model(torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        for _ in range(n_new):
            probs = torch.softmax(logits[0, -1].float() / 0.8, dim=-1)
            token = torch.multinomial(probs, 1).view(1, 1)
            logits = model(token, past_key_values=cache, use_cache=True).logits
    return time.perf_counter() - started


def measure_overhead(checkpoint: str, n_prompt: int, n_new: int) -> dict:
    import torch
    from rich.console import Console

    from benchmarks.common import prompt_ids
    from kogpt import KoGPT, SamplingSettings
    from kogpt.cli.render import Renderer
    from kogpt.cli.repl import PlainInput, Repl

    gpt = KoGPT.load(checkpoint, device="cpu")
    ids = prompt_ids(gpt.tokenizer, n_prompt)
    settings = SamplingSettings(temperature=0.8, max_new_tokens=n_new)
    # The REPL takes text: use the decoded prompt, and ask for as many new tokens as the others.
    text = gpt.tokenizer.decode(ids)
    repl_prompt_tokens = len(gpt.encode(text))
    repl_input = f"{text}\n0.8\n{repl_prompt_tokens + n_new}\n"

    def generate() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            gpt.model.generate(torch.tensor([ids]), do_sample=True, temperature=0.8, top_k=0, max_new_tokens=n_new,
                               min_new_tokens=n_new, pad_token_id=1)
        return time.perf_counter() - started

    def streamed() -> float:
        started = time.perf_counter()
        for _ in gpt.engine.stream(ids, settings, 0):
            pass
        return time.perf_counter() - started

    def repl() -> float:
        out = io.StringIO()
        renderer = Renderer(Console(file=out, width=80, color_system=None), Console(file=io.StringIO(), width=80))
        plain = PlainInput(io.StringIO(repl_input), io.StringIO())
        started = time.perf_counter()
        Repl(gpt, renderer, plain=plain).run()
        return time.perf_counter() - started

    variants = {"bare_loop_s": lambda: bare_loop(gpt.model, ids, n_new), "generate_s": generate,
                "stream_s": streamed, "repl_s": repl}
    best = {name: float("inf") for name in variants}
    streamed()  # warm-up: first-call allocations and thread pools
    for _ in range(ROUNDS):
        for name, run in variants.items():
            best[name] = min(best[name], run())
    base = best["bare_loop_s"]
    return {**best, "dtype": str(gpt.loaded.dtype), "repl_prompt_tokens": repl_prompt_tokens,
            **{name.replace("_s", "_overhead"): t / base - 1 for name, t in best.items() if name != "bare_loop_s"}}


def read_once(checkpoint: str) -> float:
    from kogpt.loading.weights import weight_files

    started = time.perf_counter()
    for file in weight_files(Path(checkpoint)):
        with open(file, "rb", buffering=0) as handle:
            while handle.read(1 << 24):
                pass
    return time.perf_counter() - started


def time_to_prompt(checkpoint: str, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "kogpt", "--model", checkpoint, "--device", "cpu", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    seen = b""
    while b"prompt> " not in seen:
        byte = child.stdout.read(1)
        if not byte:
            raise RuntimeError("kogpt exited before its first prompt")
        seen += byte
    elapsed = time.perf_counter() - started
    child.communicate(b"")
    return elapsed


def import_seconds() -> float:
    """Time for a fresh Python to import torch and transformers' GPT-J (the floor of any start)."""
    code = "import torch, transformers; from transformers import GPTJForCausalLM"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def read_file(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(1 << 24):
            pass
    return time.perf_counter() - started


def measure_first_prompt(checkpoint: str) -> dict:
    """Time to the first `prompt> `, each start twice: the first may convert and write the
    converted-weights cache, the second maps it; against importing and reading the cached file."""
    from kogpt.loading import cache

    read_once(checkpoint)  # into the page cache
    read_s = read_once(checkpoint)
    result = {"read_weights_s": read_s, "import_s": min(import_seconds() for _ in range(2))}
    for name, extra in (("default", []), ("int8", ["--quantize", "int8"]), ("int4", ["--quantize", "int4"])):
        first = time_to_prompt(checkpoint, extra)
        cached = time_to_prompt(checkpoint, extra)
        fmt = "16bit" if name == "default" else name
        written = sorted((p for p, _ in cache.entries() if f"-{fmt}-" in p.name), key=lambda p: p.stat().st_mtime)[-1:]
        result[f"prompt_{name}_s"] = first
        result[f"prompt_{name}_ratio"] = first / read_s
        result[f"prompt_{name}_cached_s"] = cached
        if written:
            read_file(written[0])
            result[f"cache_{name}_read_s"] = read_file(written[0])
            result[f"cache_{name}_gib"] = written[0].stat().st_size / 2**30
            result[f"prompt_{name}_target_s"] = result["import_s"] + 1.5 * result[f"cache_{name}_read_s"]
    return result


def main(which: str, checkpoint: str, n_prompt: int, n_new: int) -> dict:
    """Run the `overhead` or `first-prompt` measurement and return its figures."""
    if which == "overhead":
        return measure_overhead(checkpoint, n_prompt, n_new)
    return measure_first_prompt(checkpoint)
