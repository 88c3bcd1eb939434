"""`kogpt bench`'s measurement of one format, in a process of its own so that its peak RSS is its own.

`python -m kogpt.cli.benchrun SPEC` (SPEC: a JSON object made by `kogpt.cli.bench`) loads the model
with `KoGPT.load`, then times whole phases of real requests through its engine, each repeated:
prompt processing (a cold prompt of `prompt` tokens), generation (`gen` tokens after a one-token
prompt), generation of `rows` samples at once, and generation after a prompt of `depth` tokens.
It prints one JSON object on its last line of stdout; a failure is `{"error": "one line"}`.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import sys
import time


def peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def since_process_start() -> float:
    """Seconds since this process started (the interpreter's own start included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def prompt_ids(tokenizer, count: int, seed: int) -> list[int]:
    """`count` random ordinary token ids (no special tokens): random weights make any text as good."""
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i in range(len(tokenizer)) if i not in special]
    rng = random.Random(seed)
    return [rng.choice(ordinary) for _ in range(count)]


def timed(engine, ids: list[int], new_tokens: int, rows: int, seed: int):
    """Run one request to its end; its `Stats` (prefill and decode seconds, steps)."""
    from kogpt.settings import SamplingSettings

    settings = SamplingSettings(temperature=0.8, max_new_tokens=new_tokens)
    request = engine.submit(ids, settings, [seed + row for row in range(rows)], new_tokens)
    for _ in engine.pieces(request):
        pass
    return request.stats


def decode_rate(stats, rows: int) -> float:
    """Tokens per second after the first, all rows together. A random model may sample the end of
    text early; the batch still steps every row until the last one ends, so count rows x steps."""
    return rows * stats.steps / stats.decode_seconds if stats.steps and stats.decode_seconds > 0 else float("nan")


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "runs": values}


def measure(gpt, spec: dict) -> dict:
    """Each test of `spec` repeated `spec['repetitions']` times: {name: {min, median, runs}}."""
    engine, tokenizer, reps = gpt.engine, gpt.tokenizer, spec["repetitions"]
    timed(engine, prompt_ids(tokenizer, 8, 0), 4, 1, 0)  # warm-up: first-call setup is not speed
    found: dict[str, list[float]] = {}
    for rep in range(reps):
        if spec["prompt"]:
            engine.forget()  # a cold prompt: the prefix cache would otherwise skip the forward pass
            stats = timed(engine, prompt_ids(tokenizer, spec["prompt"], 100 + rep), 1, 1, rep)
            found.setdefault("pp", []).append(stats.prefill_tokens / stats.prefill_seconds)
        if spec["gen"]:
            stats = timed(engine, prompt_ids(tokenizer, 1, 200 + rep), spec["gen"], 1, rep)
            found.setdefault("tg", []).append(decode_rate(stats, 1))
        if spec["gen"] and spec["rows"] > 1:
            stats = timed(engine, prompt_ids(tokenizer, 1, 300 + rep), spec["gen"], spec["rows"], rep)
            found.setdefault("tg_rows", []).append(decode_rate(stats, spec["rows"]))
        if spec["gen"] and spec["depth"]:
            # The same long prompt each time: after the first, the prefix cache skips its prefill.
            stats = timed(engine, prompt_ids(tokenizer, spec["depth"], 400), spec["gen"], 1, rep)
            found.setdefault("tg_depth", []).append(decode_rate(stats, 1))
    return {name: summary(values) for name, values in found.items()}


def run(spec: dict) -> dict:
    started = time.perf_counter()
    import torch

    from kogpt.api import KoGPT

    imported = time.perf_counter()
    gpt = KoGPT.load(spec["model"], device="cpu", dtype=spec["dtype"], quantize=spec["quantize"],
                     threads=spec["threads"], mmap=spec["mmap"])  # fmt: skip
    loaded = time.perf_counter()
    decision = gpt.loaded.decision
    result = {
        "quantize": spec["quantize"],
        "dtype": str(gpt.loaded.dtype).removeprefix("torch."),
        "kernel": gpt.loaded.kernel,
        "kernel_reason": decision.kernel_reason,
        "threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "prefill_chunk": gpt.engine.prefill_chunk,
        "import_s": imported - started,
        "load_s": loaded - imported,
        "start_s": since_process_start(),  # process start to a loaded model, the interpreter's start included
    }
    result["tests"] = measure(gpt, spec)
    result["peak_rss_gib"] = peak_rss_gib()
    return result


def main() -> int:
    import logging

    from kogpt.errors import KoGPTError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    spec = json.loads(sys.argv[1])
    logging.getLogger("kogpt").setLevel(logging.DEBUG if spec.get("debug") else logging.WARNING)
    try:
        result = run(spec)
    except (KoGPTError, OSError, RuntimeError, ValueError) as exc:
        if spec.get("debug"):
            logging.getLogger("kogpt").exception("bench failed")
        result = {"error": " ".join(str(exc).split()) or type(exc).__name__}
    print(json.dumps(result))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
