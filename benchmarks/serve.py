"""What `kogpt serve` adds on top of the Python API, and its throughput with concurrent clients.

`overhead`: on one loaded model, the same prompt and the same number of sampled tokens through
(a) `KoGPT.stream()` in this process and (b) `POST /v1/completions` with `stream: true` to the server
running in this process on 127.0.0.1 (uvicorn, as `kogpt serve` runs it), read with httpx by a
client process of its own. Per-token
time is (last token - first token) / (tokens - 1); time to first token (API) is set against time to
the first SSE data byte (server). Rounds alternate; the figures are each path's best round and the
median over the paired rounds (a shared machine's load changes from minute to minute). Targets:
per-token within 5%, first byte within 50 ms of first token.

`concurrency`: 1, 4 and 8 clients streaming at once; total generated tokens / wall time.

    python benchmarks/serve.py --checkpoint DIR          # e.g. a benchmarks/checkpoint.py preset
    python benchmarks/serve.py --preset tiny             # the test suite's tiny model (a quick check)
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
import statistics
import tempfile
import threading
import time

from kogpt import threads

# The server runs in this process: its OpenMP policy is the one `kogpt serve` sets before torch.
threads.apply()

REPO = Path(__file__).resolve().parents[1]
PROMPT = "인간처럼 생각하고, 행동하는 '지능'을 통해 인류가 이제까지 풀지 못했던 문제의 해답을 찾을 수 있을 것이다."


def api_once(gpt, settings) -> dict:
    started = time.perf_counter()
    stamps, tokens = [], 0
    for chunk in gpt.stream(PROMPT, settings):
        stamps.append(time.perf_counter() - started)
        tokens = chunk.tokens
    first = stamps[0]
    return {"first_s": first, "per_token_s": (stamps[-1] - first) / max(tokens - 1, 1), "tokens": tokens}


def server_once(http, url: str, body: dict) -> dict:
    started = time.perf_counter()
    stamps, tokens = [], 0
    with http.stream("POST", url + "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter() - started)
                data = json.loads(line[6:])
                if data.get("usage"):
                    tokens = data["usage"]["completion_tokens"]
    stamps = stamps[:-1]  # the last event is the usage, after the final text
    first = stamps[0]
    return {"first_s": first, "per_token_s": (stamps[-1] - first) / max(tokens - 1, 1), "tokens": tokens}


class Clients:
    """HTTP clients in a process of their own, as real clients are, so that reading the stream does
    not compete with the server for this process's interpreter lock."""

    def __init__(self, url: str) -> None:
        import subprocess

        argv = [sys.executable, __file__, "--client", url]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, body: dict, n: int = 1) -> dict:
        self.process.stdin.write(json.dumps({"body": body, "n": n}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(60)


def client_loop(url: str) -> None:
    """`--client URL`: for each JSON line {"body", "n"} on stdin, run n concurrent streams; print the result."""
    for line in sys.stdin:
        order = json.loads(line)
        print(json.dumps(concurrent(url, order["body"], order["n"])), flush=True)


def measure(gpt, url: str, new_tokens: int, rounds: int, clients: list[int]) -> dict:
    from kogpt import SamplingSettings

    settings = SamplingSettings(temperature=0.8, max_new_tokens=new_tokens, seed=1)
    body = {"prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0.8, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    api, server = [], []
    http = Clients(url)
    try:
        http.run({**body, "max_tokens": 2})  # warm both paths once
        api_once(gpt, SamplingSettings(temperature=0.8, max_new_tokens=2))
        for _ in range(rounds):
            api.append(api_once(gpt, settings))
            server.append(http.run(body)["each"][0])
        scaling = [{k: v for k, v in http.run(body, n).items() if k != "each"} for n in clients]
    finally:
        http.close()

    def best(rows, key):  # the best round: the least disturbed by the rest of a shared machine
        return min(row[key] for row in rows)

    def paired(key):  # rounds alternate, so each pair saw about the same load
        # max(): the engine's worker runs ahead of its reader, so a short API round can read all its
        # chunks at once (0 s per token) on a tiny model.
        return statistics.median(s[key] / max(a[key], 1e-9) for a, s in zip(api, server, strict=True))

    overhead = {
        "api_first_token_s": best(api, "first_s"),
        "server_first_byte_s": best(server, "first_s"),
        "api_per_token_s": best(api, "per_token_s"),
        "server_per_token_s": best(server, "per_token_s"),
        "tokens": api[0]["tokens"],
        "per_token_ratio_median_of_pairs": paired("per_token_s"),
        "first_byte_minus_first_token_ms_median_of_pairs": 1000
        * statistics.median(s["first_s"] - a["first_s"] for a, s in zip(api, server, strict=True)),
    }
    overhead["per_token_ratio_best"] = overhead["server_per_token_s"] / max(overhead["api_per_token_s"], 1e-9)
    overhead["first_byte_minus_first_token_ms_best"] = 1000 * (
        overhead["server_first_byte_s"] - overhead["api_first_token_s"]
    )
    return {"overhead": overhead, "concurrency": scaling}


def at_once(calls) -> tuple[list, float]:
    """Each call in a thread of its own, all started together: their results, and the wall time."""
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - started


def concurrent(url: str, body: dict, n: int) -> dict:
    """n clients streaming `body` at once (seeds 0..n-1): total tokens / wall time, and each one's figures."""
    import httpx

    def client(i: int) -> dict:
        with httpx.Client(timeout=3600) as http:
            return server_once(http, url, {**body, "seed": body.get("seed", 0) + i})

    results, wall = at_once([lambda i=i: client(i) for i in range(n)])
    tokens = sum(r["tokens"] for r in results)
    return {"clients": n, "tokens": tokens, "seconds": round(wall, 3), "tokens_per_s": round(tokens / wall, 2),
            "first_byte_s_max": round(max(r["first_s"] for r in results), 3), "each": results}  # fmt: skip


def cpu() -> dict:
    import platform

    info = {"machine": platform.machine()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["model"] = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")
        )
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split())
        info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"})
    except (OSError, StopIteration):
        pass
    return info


def run(checkpoint: str, new_tokens: int, rounds: int, clients: list[int], quantize: str = "none") -> dict:
    import torch

    from kogpt import KoGPT, SamplingSettings
    from kogpt.server.app import ServerState, create_app
    from tests.serving import running

    gpt = KoGPT.load(checkpoint, device="cpu", quantize=quantize)
    state = ServerState("bench", SamplingSettings(max_new_tokens=new_tokens))
    state.ready(gpt)
    with running(create_app(state)) as url:
        result = measure(gpt, url, new_tokens, rounds, clients)
    result.update(checkpoint=checkpoint, quantize=quantize, new_tokens=new_tokens, rounds=rounds,
                  threads=torch.get_num_threads(), cpu=cpu(), dtype=str(gpt.loaded.dtype))  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> dict:
    if argv is None and sys.argv[1:2] == ["--client"]:
        client_loop(sys.argv[2])
        return {}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint directory (benchmarks/checkpoint.py builds presets)")
    source.add_argument("--preset", choices=["tiny"], help="tiny: the tests' checkpoint, built in a temp dir")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,4,8", help="concurrent streaming clients, comma-separated")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"])
    args = parser.parse_args(argv)
    clients = [int(n) for n in args.clients.split(",")]
    if args.preset:
        from tests.tiny import build_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            result = run(str(build_checkpoint(Path(tmp))), args.new_tokens, args.rounds, clients)
    else:
        result = run(args.checkpoint, args.new_tokens, args.rounds, clients, args.quantize)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
