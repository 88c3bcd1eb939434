"""One measured path per process, so that each path's peak RSS is its own.

`python benchmarks/paths.py PATH CHECKPOINT --prompt-tokens 20 --new-tokens 16` prints one JSON
object: load_s (to a ready model), first_token_s (from the call to the first new token),
decode_tok_s (new tokens after the first, per second), tokens, peak_rss_gib.
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
import time

from benchmarks import overhead
from benchmarks.common import peak_rss_gib, prompt_ids, rates


def cpu_rate(cpu: list[float], tokens: int) -> dict:
    """Decode tokens per second of CPU time / threads: what a busy shared machine disturbs least."""
    import torch

    if tokens < 2 or cpu[-1] <= cpu[0]:
        return {}
    return {"decode_cpu_tok_s": (tokens - 1) / ((cpu[-1] - cpu[0]) / torch.get_num_threads())}


def seed_snippet(checkpoint: str, n_prompt: int, n_new: int) -> dict:
    """The model card's snippet, on the CPU: fp16 weights as stored, HF generate, temperature 0.8."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(
        checkpoint, bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]"
    )
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, torch_dtype="auto", pad_token_id=tokenizer.eos_token_id, low_cpu_mem_usage=True
    ).eval()
    load_s = time.perf_counter() - started

    class Stamps(BaseStreamer):  # only to time the tokens; the seed itself does not stream
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.cpu: list[float] = []
            self.prompt_seen = False

        def put(self, value) -> None:
            if self.prompt_seen:
                self.stamps.append(time.perf_counter())
                self.cpu.append(time.process_time())
            self.prompt_seen = True

        def end(self) -> None:
            pass

    tokens = torch.tensor([prompt_ids(tokenizer, n_prompt)])
    stamps = Stamps()
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(tokens, do_sample=True, temperature=0.8, max_length=n_prompt + n_new, streamer=stamps)
    return {"load_s": load_s, "dtype": str(model.dtype), **rates(started, stamps.stamps), **cpu_rate(stamps.cpu, len(stamps.cpu))}


def package(
    checkpoint: str, n_prompt: int, n_new: int, quantize: str = "none", dtype: str = "auto", kernel: str | None = None,
    mmap: bool = True,
) -> dict:
    """`KoGPT.load(device='cpu')` and the package's streaming `stream()`; `kernel` None: this machine's choice."""
    from kogpt import KoGPT, SamplingSettings

    started = time.perf_counter()
    gpt = KoGPT.load(checkpoint, device="cpu", quantize=quantize, dtype=dtype, kernel=kernel, mmap=mmap)
    load_s = time.perf_counter() - started
    ids = prompt_ids(gpt.tokenizer, n_prompt)
    settings = SamplingSettings(temperature=0.8, max_new_tokens=n_new, seed=0)
    started = time.perf_counter()
    stamps = []
    last = None
    cpu_first = None
    for chunk in gpt.engine.stream(ids, settings, 0):
        if cpu_first is None:
            cpu_first, tokens_first = time.process_time(), chunk.tokens
        last = chunk
        stamps.append(time.perf_counter())
    cpu_last = time.process_time()
    # Random weights mostly sample ids past the tokenizer's vocabulary, which decode to no text,
    # so the chunks do not mark every token: take the first-token time and count from the last chunk.
    total = stamps[-1] - started
    first = last.first_token_seconds
    decode = (last.tokens - 1) / (total - first) if last.tokens > 1 else float("nan")
    return {
        "load_s": load_s,
        "dtype": str(gpt.loaded.dtype),
        "kernel": gpt.loaded.kernel,
        "threads": gpt.loaded.threads,
        "first_token_s": first,
        "decode_tok_s": decode,
        "tokens": last.tokens,
        "total_s": total,
        **cpu_rate([cpu_first, cpu_last], last.tokens - tokens_first + 1),
    }


def ctranslate2_convert(checkpoint: str, converted: str) -> dict:
    """Convert the checkpoint to CTranslate2 int8 once (its own process: conversion holds the fp16 model)."""
    from ctranslate2.converters import TransformersConverter

    started = time.perf_counter()
    if not (Path(converted) / "model.bin").exists():
        TransformersConverter(checkpoint, low_cpu_mem_usage=True).convert(converted, quantization="int8", force=True)
        # KoGPT's tokenizer config names no special tokens (the seed passes them at load time).
        config_file = Path(converted) / "config.json"
        config = json.loads(config_file.read_text())
        config.update(bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", layer_norm_epsilon=1e-5)
        config_file.write_text(json.dumps(config, indent=2))
    return {"convert_s": time.perf_counter() - started}


def ctranslate2_int8(checkpoint: str, n_prompt: int, n_new: int, converted: str) -> dict:
    """CTranslate2 int8, converted from the same checkpoint by `ctranslate2_convert`."""
    import ctranslate2
    from transformers import AutoTokenizer

    started = time.perf_counter()
    generator = ctranslate2.Generator(converted, device="cpu", compute_type="int8")
    load_s = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokens = tokenizer.convert_ids_to_tokens(prompt_ids(tokenizer, n_prompt))
    stamps = []
    started = time.perf_counter()
    for _step in generator.generate_tokens(
        tokens, max_length=n_new, sampling_temperature=0.8, sampling_topk=0, end_token=[]
    ):
        stamps.append(time.perf_counter())
    return {"load_s": load_s, "dtype": "int8", **rates(started, stamps)}


def bandwidth(_checkpoint: str, _n_prompt: int, _n_new: int, gib: float = 2.0) -> dict:
    """Memory read bandwidth: the best of several full reads of a buffer far larger than the caches
    (`sum()` and a float32 matrix-vector product, `kogpt.loading.kernels.read_bandwidth`)."""
    import torch

    from kogpt.loading.kernels import read_bandwidth

    return {"read_gb_s": read_bandwidth(int(gib * 1024**3), repeats=6) / 1e9, "threads": torch.get_num_threads()}


PATHS = {
    "seed": seed_snippet, "default": package, "fp16": package, "int8": package, "int4": package,
    "ct2": ctranslate2_int8, "bandwidth": bandwidth,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", choices=[*PATHS, "ct2-convert", "overhead", "first-prompt"])
    parser.add_argument("checkpoint")
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--converted", default="")
    parser.add_argument("--kernel", help="for int8/int4/fp16: this kernel instead of the machine's choice")
    parser.add_argument("--no-mmap", action="store_true", help="for default/int8/int4: read the cached weights into memory")
    parser.add_argument("--bandwidth-gib", type=float, default=2.0, help="bytes read to measure the bandwidth")
    args = parser.parse_args()
    common = (args.checkpoint, args.prompt_tokens, args.new_tokens)
    if args.path in ("int8", "int4"):
        result = package(*common, quantize=args.path, kernel=args.kernel, mmap=not args.no_mmap)
    elif args.path == "default":
        result = package(*common, mmap=not args.no_mmap)
    elif args.path == "fp16":
        result = package(*common, dtype="float16")
    elif args.path == "ct2":
        result = ctranslate2_int8(*common, args.converted)
    elif args.path == "ct2-convert":
        result = ctranslate2_convert(args.checkpoint, args.converted)
    elif args.path in ("overhead", "first-prompt"):
        result = overhead.main(args.path, *common)
    elif args.path == "bandwidth":
        result = bandwidth(*common, gib=args.bandwidth_gib)
    else:
        result = PATHS[args.path](*common)
    result["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
