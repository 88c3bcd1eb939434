"""The CPU benchmark suite: one command, every path side by side on one random KoGPT-shaped checkpoint.

    python benchmarks/run.py --preset 6b --out /tmp/kogpt-bench

builds (once) the checkpoint under OUT/PRESET, then runs each path in its own process and prints a
markdown table: load time, time to first token, decode tokens/s, peak RSS, the ratios against the
seed's snippet and CTranslate2 int8, and the fraction of the bandwidth roofline measured in the
same run. The figures and the machine go to OUT/PRESET/results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from checkpoint import PRESETS, build, config_for  # noqa: E402

LABELS = {
    "seed": "(1) seed snippet: fp16, HF generate",
    "default": "(2) kogpt default: KoGPT.load(device='cpu') + stream",
    "int8": "(3) kogpt --quantize int8 + stream",
    "ct2": "(4) CTranslate2 int8",
}


def machine() -> dict:
    """CPU model, cores, the SIMD flags that matter for int8/bf16 kernels, RAM, GPU, versions."""
    import psutil
    import torch
    import transformers

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        import ctranslate2

        ct2 = ctranslate2.__version__
    except ImportError:
        ct2 = "not installed"
    return {
        "cpu": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1), "gpu": gpu,
        "torch": torch.__version__, "transformers": transformers.__version__, "ctranslate2": ct2,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def run_path(name: str, checkpoint: Path, args, extra: list[str] | None = None) -> dict:
    command = [sys.executable, str(HERE / "paths.py"), name, str(checkpoint),
               "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens), *(extra or [])]
    load_before = os.getloadavg()[0]
    print(f"running {name} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": args.omp_wait_policy}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"  {result}", file=sys.stderr, flush=True)
    return result


def weight_bytes_per_token(config, bytes_per_weight: float) -> float:
    """Bytes read per decoded token: every weight but the embedding table, of which one row is read."""
    n = config.n_layer * (4 * config.n_embd**2 + 2 * 4 * config.n_embd**2) + config.vocab_size * config.n_embd
    return n * bytes_per_weight


def table(results: dict, config) -> str:
    bandwidth = results["bandwidth"]["read_gb_s"] * 1e9
    roof16 = bandwidth / weight_bytes_per_token(config, 2)
    roof8 = bandwidth / weight_bytes_per_token(config, 1)
    seed = results.get("seed", {}).get("decode_tok_s")
    ct2 = results.get("ct2", {}).get("decode_tok_s")
    rows = ["| path | load s | first token s | decode tok/s | x seed | x CT2 | % roofline | peak RSS GiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in LABELS.items():
        r = results.get(name)
        if r is None:
            continue
        if "error" in r:
            rows.append(f"| {label} | failed: {r['error'][:80]} | | | | | | |")
            continue
        rate = r["decode_tok_s"]
        roof = roof8 if name in ("int8", "ct2") else roof16
        rows.append(
            f"| {label} | {r['load_s']:.1f} | {r['first_token_s']:.2f} | {rate:.3f} | "
            f"{rate / seed:.2f} | {f'{rate / ct2:.2f}' if ct2 else '-'} | {100 * rate / roof:.0f}% | {r['peak_rss_gib']:.1f} |"
            if seed else f"| {label} | {r['load_s']:.1f} | {r['first_token_s']:.2f} | {rate:.3f} | - | - | - | {r['peak_rss_gib']:.1f} |"
        )
    rows.append(f"| (5) roofline at {bandwidth / 1e9:.1f} GB/s | | | {roof16:.2f} (16-bit) / {roof8:.2f} (int8) | | | 100% | |")
    return "\n".join(rows)


def extra_lines(results: dict) -> list[str]:
    lines = []
    over = results.get("overhead")
    if over and "error" not in over:
        lines.append(
            f"- streaming/REPL overhead ({over['dtype']}, best of rounds, prefill + {results['new_tokens']} tokens): "
            f"bare loop {over['bare_loop_s']:.2f} s, HF generate {over['generate_s']:.2f} s "
            f"({100 * over['generate_overhead']:+.1f}%), kogpt stream {over['stream_s']:.2f} s "
            f"({100 * over['stream_overhead']:+.1f}%), one REPL turn {over['repl_s']:.2f} s ({100 * over['repl_overhead']:+.1f}%)"
        )
    first = results.get("first-prompt")
    if first and "error" not in first:
        lines.append(
            f"- time to the first `prompt> ` (weights in the page cache): default {first['prompt_default_s']:.1f} s "
            f"({first['prompt_default_ratio']:.2f}x), int8 {first['prompt_int8_s']:.1f} s ({first['prompt_int8_ratio']:.2f}x) "
            f"the {first['read_weights_s']:.1f} s it takes to read the weight files once"
        )
    convert = results.get("ct2-convert", {})
    if convert.get("convert_s", 0) > 1:  # below that it was already converted by an earlier run
        lines.append(
            f"- CTranslate2 conversion (its own process, not counted as load): {convert['convert_s']:.0f} s, "
            f"peak RSS {convert['peak_rss_gib']:.1f} GiB"
        )
    loads = {name: r["loadavg"] for name, r in results.items() if isinstance(r, dict) and "loadavg" in r}
    lines.append(f"- load average before/after each path (other users share this machine): {loads}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="125m")
    parser.add_argument("--out", default="/tmp/kogpt-bench", help="where the checkpoint and results go (outside the repo)")
    parser.add_argument("--prompt-tokens", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="for every path; PASSIVE keeps OpenMP threads from spinning on a CPU shared with others (default:PASSIVE)",
    )
    parser.add_argument("--paths", default="ct2-convert,bandwidth,seed,default,int8,ct2,overhead,first-prompt")
    args = parser.parse_args()
    out = Path(args.out) / args.preset
    checkpoint = build(out, args.preset)
    results: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                     "preset": args.preset, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                     "omp_wait_policy": args.omp_wait_policy,
                     "machine": machine()}
    for name in args.paths.split(","):
        if name in ("ct2", "ct2-convert"):
            try:
                import ctranslate2  # noqa: F401
            except ImportError:
                continue
        extra = ["--converted", str(out / "ct2-int8")] if name.startswith("ct2") else None
        if name == "bandwidth" and args.preset == "tiny":  # seconds, not a measurement
            extra = ["--bandwidth-gib", "0.1"]
        results[name] = run_path(name, checkpoint, args, extra)
    config = config_for(args.preset)
    report = "\n".join([
        f"{results['date']}, preset {args.preset}, {args.prompt_tokens}-token prompt, {args.new_tokens} sampled tokens, "
        f"OMP_WAIT_POLICY={args.omp_wait_policy}",
        f"machine: {json.dumps(results['machine'])}", "", table(results, config), "", *extra_lines(results),
    ])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
