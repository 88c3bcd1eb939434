"""On a GPU machine: kogpt's own engine against vLLM, through the same API and the same eval.

1. Greedy text: both servers (`kogpt serve`, `kogpt serve --engine vllm`) complete the same prompts
   at temperature 0; the texts must match (report the matching prefix when they do not).
2. Throughput: 1, 8 and 32 concurrent streaming clients against each server (total tokens/s).
3. Eval: `kogpt eval nsmc` on the test data with `--engine kogpt` and `--engine vllm`; the
   confusion matrices and metrics must agree.

Each server runs in its own process, one after the other, so each has the GPU to itself.

    pip install -e '.[serve,vllm]'
    python benchmarks/gpu_vllm.py --preset 6b --out /tmp/kogpt-gpu      # builds the 6B-shaped checkpoint
    python benchmarks/gpu_vllm.py --checkpoint DIR                        # or an existing one
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where its modules would shadow installed
# packages (kernels.py once shadowed Hugging Face's `kernels`): the repository takes its place.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import importlib.util
import json
import os
import subprocess
import time

REPO = Path(__file__).resolve().parents[1]
NAME = "kakaobrain/kogpt"
PROMPTS = [
    "인간처럼 생각하고, 행동하는 '지능'을 통해 인류가 이제까지 풀지 못했던",
    "오늘 날씨가 좋아서 공원에 갔더니",
    "카카오브레인의 KoGPT는 한국어",
    "질문: 대한민국의 수도는 어디인가요?\n답:",
]
CLIENTS = (1, 8, 32)
START_SECONDS = 900
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
DEVICE = "cuda"  # --device: cpu for a smoke run of the script itself


def start(engine: str, checkpoint: str, port: int, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "kogpt", "serve", "--model", checkpoint, "--port", str(port),
            "--served-model-name", NAME, "--device", DEVICE, "--engine", engine]  # fmt: skip
    env = ENV
    process = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{engine} server exited {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(2)
    process.kill()
    raise SystemExit(f"{engine} server not ready after {START_SECONDS} s; see {log}")


def stop(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


def greedy(url: str, new_tokens: int) -> list[str]:
    import httpx

    headers = {"Authorization": f"Bearer {os.environ.get('KOGPT_API_KEY', 'none')}"}
    texts = []
    for prompt in PROMPTS:
        body = {"model": NAME, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0}
        reply = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=600)
        reply.raise_for_status()
        texts.append(reply.json()["choices"][0]["text"])
    return texts


def throughput(url: str, new_tokens: int) -> list[dict]:
    from benchmarks.serve import concurrent

    body = {"model": NAME, "prompt": PROMPTS[0], "max_tokens": new_tokens, "temperature": 0.8, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    return [concurrent(url, body, n) for n in CLIENTS]


def evaluate(engine: str, checkpoint: str) -> dict:
    argv = [sys.executable, "-m", "kogpt", "eval", "nsmc", "--data", str(REPO / "tests/data/nsmc.txt"), "--shots", "2",
            "--model", checkpoint, "--device", DEVICE, "--json", "--engine", engine]  # fmt: skip
    out = subprocess.run(argv, env=ENV, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    return {"metrics": report["metrics"], "confusion_matrix": report["confusion_matrix"], "seconds": report["seconds"]}


def common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--preset", choices=["6b", "1b", "125m", "tiny"])
    parser.add_argument("--out", default="/tmp/kogpt-gpu", type=Path)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8311)
    parser.add_argument("--engines", default="kogpt,vllm", help="comma-separated: kogpt, vllm (compared when both run)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    engines = [e for e in args.engines.split(",") if e]
    if not set(engines) <= {"kogpt", "vllm"}:
        parser.error(f"--engines takes kogpt and vllm, not {args.engines!r}")
    if "vllm" in engines and importlib.util.find_spec("vllm") is None:
        parser.error("vLLM is not installed here (pip install \".[serve,vllm]\"), or run --engines kogpt")
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint
    if checkpoint is None:
        from benchmarks import checkpoint as builder

        checkpoint = str(builder.build(args.out / args.preset, args.preset))
    result: dict = {"checkpoint": checkpoint, "new_tokens": args.new_tokens}
    for engine in engines:
        server = start(engine, checkpoint, args.port, args.out / f"serve-{engine}.log")
        url = f"http://127.0.0.1:{args.port}"
        result[engine] = {}
        try:
            result[engine] = {"greedy": greedy(url, args.new_tokens), "throughput": throughput(url, args.new_tokens)}
        finally:
            result[engine]["exit_code"] = stop(server)
        result[engine]["eval"] = evaluate(engine, checkpoint)
    if len(engines) == 2:
        pairs = list(zip(result["kogpt"]["greedy"], result["vllm"]["greedy"], strict=True))
        result["greedy_same"] = [a == b for a, b in pairs]
        result["greedy_common_prefix_chars"] = [common_prefix(a, b) for a, b in pairs]
        result["eval_same"] = result["kogpt"]["eval"]["confusion_matrix"] == result["vllm"]["eval"]["confusion_matrix"]
    import torch

    result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    (args.out / "gpu_vllm.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
