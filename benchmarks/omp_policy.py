"""Decode speed of the real front ends with and without kogpt's OpenMP policy (issue 20).

    python benchmarks/omp_policy.py --checkpoint DIR --compare-to 9811388 [--busy] [--rounds 3]
    python benchmarks/omp_policy.py --preset tiny --rounds 1     # a quick check

For each source tree (this checkout, which sets `OMP_WAIT_POLICY=PASSIVE` itself, and the commit
given by `--compare-to`, before it did) and nothing set by hand: the CLI (`python -m kogpt -p ...
--json`, one process per round) and `python -m kogpt serve` with one streaming client (httpx, in
this process). Decode tokens/s = (tokens - 1) / (time from the first token to the last). `--busy`
keeps one core busy with another process (`python -c "while True: pass"`) for the whole run, as a
browser or an indexer would. Prints one JSON object with the CPU, its flags and the load averages.
"""

from __future__ import annotations

import sys
from pathlib import Path

if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]
PROMPT = "인간처럼 생각하고, 행동하는 '지능'을 통해 인류가 이제까지 풀지 못했던 문제의 해답을 찾을 수 있을 것이다."


def environment(source: Path) -> dict:
    """The user's environment without any OpenMP setting, running kogpt from `source`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, "HF_HUB_OFFLINE": "1"}


def cli_once(source: Path, checkpoint: str, new_tokens: int, seed: int) -> float:
    argv = [sys.executable, "-m", "kogpt", "--model", checkpoint, "--device", "cpu", "-p", PROMPT,
            "--max-new-tokens", str(new_tokens), "--seed", str(seed), "--json"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=environment(source), cwd=tempfile.gettempdir())
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return (record["completion_tokens"] - 1) / (record["seconds"] - record["first_token_seconds"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_once(http, url: str, new_tokens: int, seed: int) -> float:
    body = {"prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0.8, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    stamps, tokens = [], 0
    with http.stream("POST", url + "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
                usage = json.loads(line[6:]).get("usage")
                tokens = usage["completion_tokens"] if usage else tokens
    stamps = stamps[:-1]  # the last event is the usage, after the final text
    return (tokens - 1) / (stamps[-1] - stamps[0])


def serve_rates(source: Path, checkpoint: str, new_tokens: int, rounds: int) -> list[float]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "kogpt", "serve", "--model", checkpoint, "--device", "cpu", "--port", str(port)]
    server = subprocess.Popen(argv, env=environment(source), cwd=tempfile.gettempdir(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        with httpx.Client(timeout=600) as http:
            for _ in range(1200):
                if server.poll() is not None:
                    raise RuntimeError(server.stderr.read().strip().splitlines()[-1])
                try:
                    if http.get(url + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            stream_once(http, url, 4, 0)  # warm-up
            return [stream_once(http, url, new_tokens, seed) for seed in range(rounds)]
    finally:
        server.terminate()
        server.wait(60)


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = lambda key: next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith(key)), "")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"cpu": line("model name"), "cpus": os.cpu_count(), "flags": [f for f in wanted if f in line("flags").split()]}


def export(commit: str, into: Path) -> Path:
    """The package as of `commit`, exported from this repository (no checkout is touched)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "kogpt"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a checkpoint directory (benchmarks/checkpoint.py builds presets)")
    source.add_argument("--preset", choices=["tiny"], help="tiny: the tests' checkpoint, built in a temp dir")
    parser.add_argument("--compare-to", default="", help="a commit without the policy (default: this checkout alone)")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with another process meanwhile")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--front-ends", default="cli,serve")
    args = parser.parse_args(argv)
    if args.preset:
        from tests.tiny import build_checkpoint

        with tempfile.TemporaryDirectory() as tmp:
            args.checkpoint = str(build_checkpoint(Path(tmp)))
            return measure(args)
    return measure(args)


def measure(args) -> dict:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    results: dict = {"machine": cpu(), "busy": args.busy, "new_tokens": args.new_tokens, "runs": []}
    try:
        with tempfile.TemporaryDirectory() as old:
            sources = {"policy (this checkout)": REPO}
            if args.compare_to:
                sources[f"without ({args.compare_to})"] = export(args.compare_to, Path(old))
            for front in args.front_ends.split(","):
                for name, source in sources.items():
                    load = os.getloadavg()[0]
                    if front == "cli":
                        rates = [cli_once(source, args.checkpoint, args.new_tokens, seed) for seed in range(args.rounds)]
                    else:
                        rates = serve_rates(source, args.checkpoint, args.new_tokens, args.rounds)
                    row = {"front_end": front, "source": name, "tok_s": [round(r, 2) for r in rates],
                           "median": round(statistics.median(rates), 2), "loadavg": [round(load, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    results["runs"].append(row)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
