"""Whole requests from several clients: `kogpt serve` started as a user starts it, beside its peer.

Each server is a command in a process of its own, with nothing set by hand (no OpenMP variable):
`python -m kogpt serve --model DIR` (`--dtype D` if given), and, with `--peer`, `transformers serve
--continuous-batching --dtype D DIR` (bfloat16 when kogpt's is auto) (needs `pip install "transformers[serving]"`). Against each,
in one run: 1, 4 and 8 clients (`--clients`) stream one completion each at the same moment (seeds
differ); then one request with `n=4` against one with `n=1`; then `--shared` clients whose prompts
share a long few-shot preamble (kogpt only: its `/metrics` counts the prompt tokens fed). Reported:
aggregate tokens/s (all generated tokens / wall time), its ratio to 1 client, mean and max time to
first token; the CPU with its flags, torch, transformers and the dtype.

    python benchmarks/clients.py --checkpoint DIR [--peer] [--dtype auto] [--new-tokens 32] [--rounds 3]
    python benchmarks/clients.py --preset tiny --clients 1,2 --new-tokens 4 --shared 3 --examples 2   # quick
"""

from __future__ import annotations

import sys
from pathlib import Path

if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import shutil
import subprocess
import tempfile
import time

from benchmarks.omp_policy import environment, free_port
from benchmarks.serve import at_once, cpu

REPO = Path(__file__).resolve().parents[1]
PROMPT = "인간처럼 생각하고, 행동하는 '지능'을 통해 인류가 이제까지 풀지 못했던 문제의 해답을 찾을 수 있을 것이다."
EXAMPLES = [("재미있다", "긍정"), ("지루하다", "부정")]


def preamble(examples: int) -> str:
    """A few-shot preamble of `examples` sentiment examples (24: about 400 KoGPT tokens)."""
    return "".join(f"문장: 이 영화 정말 {w}.\n감정: {s}\n" for w, s in (EXAMPLES * examples)[:examples])


def stream_one(url: str, body: dict) -> dict:
    """One streamed completion: tokens (usage, else text events), time to first text, wall time."""
    import httpx

    started = time.perf_counter()
    first, events, tokens = None, 0, 0
    with httpx.Client(timeout=3600) as http, http.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if any(choice.get("text") for choice in data.get("choices", [])):
                events += 1
                first = first if first is not None else time.perf_counter() - started
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
    return {"tokens": tokens or events, "first_s": first or 0.0, "seconds": time.perf_counter() - started}


def together(url: str, bodies: list[dict]) -> dict:
    results, wall = at_once([lambda body=body: stream_one(url, body) for body in bodies])
    tokens = sum(r["tokens"] for r in results)
    firsts = [r["first_s"] for r in results]
    return {"clients": len(bodies), "tokens": tokens, "seconds": round(wall, 2), "tokens_per_s": round(tokens / wall, 2),
            "first_token_s_mean": round(sum(firsts) / len(firsts), 2), "first_token_s_max": round(max(firsts), 2)}


class Server:
    """A server command in its own process, ready when its /health answers."""

    def __init__(self, argv: list[str], url: str) -> None:
        import httpx

        self.url = url
        self.process = subprocess.Popen(argv, env=environment(REPO), cwd=tempfile.gettempdir(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        for _ in range(2400):
            if self.process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited: " + self.process.stderr.read().strip()[-500:])
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not start")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def median_rows(runs: list[list[dict]]) -> list[dict]:
    """Per position, the run with the median tokens/s (every run's figure kept in `rounds`)."""
    rows = []
    for position in zip(*runs, strict=True):
        ranked = sorted(position, key=lambda row: row["tokens_per_s"])
        rows.append({**ranked[len(ranked) // 2], "rounds": [row["tokens_per_s"] for row in position]})
    return rows


def measure(server: Server, body: dict, clients: list[int], shared: int, examples: int, kogpt: bool,
            rounds: int = 1) -> dict:
    stream_one(server.url, {**body, "max_tokens": 2})  # warm-up
    # Rounds interleave the client counts (and n=1 with n=4), so a slow minute of a shared machine
    # falls on all of them; each figure is the median round.
    runs = [[together(server.url, [{**body, "seed": r * 100 + i} for i in range(n)]) for n in clients]
            for r in range(rounds)]  # fmt: skip
    rows = median_rows(runs)
    one = rows[0]["tokens_per_s"] if clients and clients[0] == 1 else None
    for row in rows:
        row["vs_1_client"] = round(row["tokens_per_s"] / one, 2) if one else None
    result: dict = {"clients": rows}
    pairs = [[together(server.url, [{**body, "n": n, "seed": r + 1}]) for n in (1, 4)] for r in range(rounds)]
    n1, n4 = median_rows(pairs)
    result["n"] = {"n=1_tokens_per_s": n1["tokens_per_s"], "n=4_tokens_per_s": n4["tokens_per_s"],
                   "ratio": round(n4["tokens_per_s"] / n1["tokens_per_s"], 2)}  # fmt: skip
    if shared and kogpt:
        fed_before = prompt_tokens_fed(server.url)
        questions = [{**body, "prompt": preamble(examples) + f"문장: 이 영화 {i}번 봤다.\n감정:", "seed": i} for i in range(shared)]
        result["shared_preamble"] = together(server.url, questions)
        result["shared_preamble"]["prompt_tokens"] = prompt_tokens(server.url, questions[0]["prompt"]) * shared
        result["shared_preamble"]["prompt_tokens_fed"] = prompt_tokens_fed(server.url) - fed_before
    return result


def prompt_tokens(url: str, prompt: str) -> int:
    import httpx

    return httpx.post(url + "/tokenize", json={"prompt": prompt}, timeout=60).json()["count"]


def prompt_tokens_fed(url: str) -> float:
    """kogpt's /metrics: prompt tokens the engine fed (not those taken from the prefix cache)."""
    import httpx

    for line in httpx.get(url + "/metrics", timeout=60).text.splitlines():
        if line.startswith("kogpt_prompt_tokens_fed_total "):
            return float(line.split()[1])
    return float("nan")


def run(checkpoint: str, args) -> dict:
    import torch
    import transformers

    body = {"prompt": PROMPT, "max_tokens": args.new_tokens, "temperature": 0.8, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    result = {"cpu": cpu(), "torch": torch.__version__, "transformers": transformers.__version__,
              "dtype": args.dtype, "new_tokens": args.new_tokens, "checkpoint": checkpoint, "servers": {}}  # fmt: skip
    port = free_port()
    kogpt = [sys.executable, "-m", "kogpt", "serve", "--model", checkpoint, "--device", "cpu", "--dtype", args.dtype,
             "--port", str(port)]  # fmt: skip
    servers = [("kogpt serve", kogpt, True)]
    peer = shutil.which("transformers") or shutil.which("transformers", path=str(Path(sys.executable).parent))
    if args.peer and peer:
        dtype = "bfloat16" if args.dtype == "auto" else args.dtype
        argv = [peer, "serve", "--continuous-batching", "--device", "cpu", "--dtype", dtype, "--host",
                "127.0.0.1", "--port", str(port), checkpoint]  # fmt: skip
        servers.append(("transformers serve --continuous-batching", argv, False))
    elif args.peer:
        result["servers"]["transformers serve --continuous-batching"] = "not installed"
    for name, argv, own in servers:
        server = None
        try:
            server = Server(argv, f"http://127.0.0.1:{port}")
            request = body if own else {**body, "model": checkpoint}
            result["servers"][name] = measure(server, request, args.clients, args.shared, args.examples, own, args.rounds)
        except Exception as exc:  # a server that fails to start or to serve is reported, not fatal
            result["servers"][name] = f"failed: {type(exc).__name__}: {exc}"[-300:]
        finally:
            if server is not None:
                server.close()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint directory (benchmarks/checkpoint.py builds presets)")
    source.add_argument("--preset", choices=["tiny"], help="tiny: the tests' checkpoint, built in a temp dir")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each client count; the median is reported")
    parser.add_argument("--clients", type=lambda t: [int(n) for n in t.split(",")], default=[1, 4, 8])
    parser.add_argument("--shared", type=int, default=16, help="clients sharing a few-shot preamble (0: skip)")
    parser.add_argument("--examples", type=int, default=24, help="examples in the shared preamble")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="kogpt's --dtype (auto: as users start it); the peer gets bfloat16 for auto")
    parser.add_argument("--peer", action="store_true", help="also transformers serve --continuous-batching")
    args = parser.parse_args(argv)
    if args.preset:
        from tests.tiny import build_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            result = run(str(build_checkpoint(Path(tmp))), args)
    else:
        result = run(args.checkpoint, args)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
