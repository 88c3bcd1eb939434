"""The CPU benchmark suite: one command, every path side by side on one random KoGPT-shaped checkpoint.

    python benchmarks/run.py --preset 6b --out /tmp/kogpt-bench

builds (once) the checkpoint under OUT/PRESET, then runs each path in its own process and prints a
markdown table: load time, time to first token, decode tokens/s, peak RSS, the ratios against the
seed's snippet and CTranslate2 int8, and the fraction of the bandwidth roofline measured in the
same run. The figures and the machine go to OUT/PRESET/results.json and results.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where its modules would shadow installed
# packages (kernels.py once shadowed Hugging Face's `kernels`): the repository takes its place.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess

HERE = Path(__file__).resolve().parent

from benchmarks.checkpoint import PRESETS, build, config_for

LABELS = {
    "seed": "(1) seed snippet: fp16, HF generate",
    "default": "(2) kogpt default (16-bit, this CPU's kernel): KoGPT.load(device='cpu') + stream",
    "fp16": "(2b) kogpt --dtype float16 (fp16 weights)",
    "int8": "(3) kogpt --quantize int8, this CPU's kernel",
    "int8-other": "(3b) kogpt --quantize int8, the other int8 kernel",
    "int4": "(6) kogpt --quantize int4, this CPU's kernel",
    "default-nommap": "(2n) the default with --no-mmap (the cache read into memory)",
    "int8-nommap": "(3n) --quantize int8 --no-mmap",
    "int4-nommap": "(6n) --quantize int4 --no-mmap",
    "ct2": "(4) CTranslate2 int8",
}
ROWS = ["seed", "default", "default-nommap", "fp16", "int8", "int8-nommap", "int8-other", "int4", "int4-nommap", "ct2"]


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


PEERS = ("seed", "ct2", "ct2-convert")  # run as their users run them: no OpenMP variable set for them
CACHED = ("default", "fp16", "int8", "int8-other", "int4")  # measured on the start that maps the converted weights


def run_path(name: str, checkpoint: Path, args, extra: list[str] | None = None) -> dict:
    command = [sys.executable, str(HERE / "paths.py"), name, str(checkpoint),
               "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens), *(extra or [])]
    load_before = os.getloadavg()[0]
    print(f"running {name} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    policy = args.omp_wait_policy or (None if name in PEERS else "PASSIVE")
    if policy:
        env["OMP_WAIT_POLICY"] = policy
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


def bytes_per_weight(name: str, r: dict) -> float:
    """What the row's kernel reads per weight: 2 (16-bit), 1 (int8), 0.5 plus group scales (int4)."""
    from kogpt.loading.kernels import KERNELS

    kernel = KERNELS.get(r.get("kernel") or "")
    if kernel is not None:
        return kernel.bytes_per_weight
    if name in ("ct2", "int8", "int8-other"):
        return 1
    return 4 if r.get("dtype") == "torch.float32" else 2


def table(results: dict, config) -> str:
    """One row per path; "prompt tok/s" is the prompt's tokens over the time to the first new token."""
    bandwidth = results.get("bandwidth", {}).get("read_gb_s", 0.0) * 1e9  # 0: not measured (no roofline)
    roof16 = bandwidth / weight_bytes_per_token(config, 2)
    roof8 = bandwidth / weight_bytes_per_token(config, 1)
    seed = results.get("seed", {}).get("decode_tok_s")
    ct2 = results.get("ct2", {}).get("decode_tok_s")
    int8 = results.get("int8", {}).get("decode_tok_s")
    rows = ["| path | kernel | load s | first token s | prompt tok/s | decode tok/s | x seed | x CT2 | x our int8 | % roofline | peak RSS GiB | decode tok/s, CPU clock |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
    for name in ROWS:
        r, label = results.get(name), LABELS[name]
        if r is None:
            continue
        if "error" in r:
            rows.append(f"| {label} | | failed: {r['error'][:80]} | | | | | | | | | |")
            continue
        rate = r["decode_tok_s"]
        roof = bandwidth / weight_bytes_per_token(config, bytes_per_weight(name, r))
        r["roofline_pct"] = 100 * rate / roof if roof else float("nan")
        rows.append(
            f"| {label} | {r.get('kernel') or r.get('dtype', '')} | {r['load_s']:.1f} | {r['first_token_s']:.2f} | "
            f"{results['prompt_tokens'] / r['first_token_s']:.1f} | {rate:.3f} | "
            f"{ratio(rate, seed)} | {ratio(rate, ct2)} | {ratio(rate, int8)} | {r['roofline_pct']:.0f}% | {r['peak_rss_gib']:.1f} | "
            f"{r.get('decode_cpu_tok_s', float('nan')):.3f} |"
        )
    if bandwidth:
        rows.append(f"| (5) roofline at {bandwidth / 1e9:.1f} GB/s | | | | | {roof16:.2f} (16-bit) / {roof8:.2f} (int8) | | | | 100% | | |")
    return "\n".join(rows)


def targets(results: dict) -> list[str]:
    """Issue 13's targets, each met or not, from this run's figures."""
    rate = lambda name: results.get(name, {}).get("decode_tok_s")
    rss = lambda name: results.get(name, {}).get("peak_rss_gib")
    checks = []
    for name in ("default", "default-nommap", "fp16", "int8", "int8-nommap", "int4", "int4-nommap"):
        if results.get(name, {}).get("roofline_pct") is not None:
            checks.append((f"{name} decode >= 85% of its roofline", results[name]["roofline_pct"], 85, "%"))
    for suffix in ("", "-nommap"):  # the mapped cache (the default), then --no-mmap
        if rate("int8" + suffix) and rate("ct2"):
            checks.append((f"int8{suffix} >= 1.1x CTranslate2 int8", rate("int8" + suffix) / rate("ct2"), 1.1, "x"))
        if rate("int4" + suffix) and rate("int8" + suffix):
            checks.append((f"int4{suffix} >= 1.8x our int8{suffix}", rate("int4" + suffix) / rate("int8" + suffix), 1.8, "x"))
        if rate("default" + suffix) and rate("seed"):
            checks.append((f"default{suffix} 16-bit >= 1.3x the seed snippet", rate("default" + suffix) / rate("seed"), 1.3, "x"))
    lines = [f"- {what}: {value:.2f}{unit} -> {'met' if value >= need else 'NOT met'}" for what, value, need, unit in checks]
    for name, limit in (("int4", 4.5), ("int8", 7.5), ("default", 13)):
        if rss(name):
            peak = max(rss(name), results[name].get("convert_peak_rss_gib", 0))  # whichever start peaks higher
            lines.append(
                f"- peak RSS {name} <= {limit} GiB: {rss(name):.2f} GiB reading the cache, "
                f"{results[name].get('convert_peak_rss_gib', float('nan')):.2f} GiB converting -> {'met' if peak <= limit else 'NOT met'}"
            )
    first = results.get("first-prompt", {})
    for name in ("default", "int8", "int4"):
        if f"prompt_{name}_target_s" in first:
            got, need = first[f"prompt_{name}_cached_s"], first[f"prompt_{name}_target_s"]
            lines.append(
                f"- second start to `prompt>` ({name}) <= import {first['import_s']:.1f} s + 1.5 x read of the "
                f"{first[f'cache_{name}_gib']:.2f} GiB cached file ({first[f'cache_{name}_read_s']:.1f} s) = {need:.1f} s: "
                f"{got:.1f} s -> {'met' if got <= need else 'NOT met'}"
            )
    return lines


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
        starts = ", ".join(
            f"{name} {first[f'prompt_{name}_s']:.1f} s then {first[f'prompt_{name}_cached_s']:.1f} s"
            for name in ("default", "int8", "int4") if f"prompt_{name}_s" in first
        )
        lines.append(
            f"- time to the first `prompt> ` (source weights in the page cache; first start, then the start that maps "
            f"the converted-weights cache): {starts}; reading the source weight files once takes {first['read_weights_s']:.1f} s, "
            f"importing torch + transformers {first['import_s']:.1f} s"
        )
    convert = results.get("ct2-convert", {})
    if convert.get("convert_s", 0) > 1:  # below that it was already converted by an earlier run
        lines.append(
            f"- CTranslate2 conversion (its own process, not counted as load): {convert['convert_s']:.0f} s, "
            f"peak RSS {convert['peak_rss_gib']:.1f} GiB"
        )
    converting = ", ".join(f"{name} {r['convert_load_s']:.1f} s, {r['convert_peak_rss_gib']:.2f} GiB"
                           for name, r in results.items() if isinstance(r, dict) and "convert_load_s" in r)  # fmt: skip
    if converting:
        lines.append(f"- the first load of each row (measuring the kernels, converting, writing the cache): {converting}")
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
        help="for every path (default: PASSIVE for kogpt's, as the kogpt command sets it; the peers "
        "(seed, ct2) as their users run them, unset)",
    )
    parser.add_argument("--paths", default="ct2-convert,bandwidth,seed,default,fp16,int8,int8-other,int4,ct2,overhead,first-prompt")
    parser.add_argument("--checkpoint", help="an existing checkpoint directory instead of building OUT/PRESET")
    args = parser.parse_args()
    out = Path(args.out) / args.preset
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else build(out, args.preset)
    # The converted-weights cache of these runs lives (and starts empty) under OUT, not the user's.
    os.environ["KOGPT_CACHE_DIR"] = str(out / "cache")
    shutil.rmtree(out / "cache", ignore_errors=True)
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
        name_run = name
        if name.endswith("-nommap"):  # after its mapped row, which wrote the cache it reads
            extra, name_run = ["--no-mmap"], name.removesuffix("-nommap")
        if name == "int8-other":
            chosen = results.get("int8", {}).get("kernel", "w8")
            extra, name_run = ["--kernel", "w8" if chosen == "w8a8" else "w8a8"], "int8"
        results[name] = run_path(name_run, checkpoint, args, extra)
        if name in CACHED and "error" not in results[name]:  # that load converted; users' later starts read the cache
            converted, results[name] = results[name], run_path(name_run, checkpoint, args, extra)
            results[name].update(convert_load_s=converted["load_s"], convert_peak_rss_gib=converted["peak_rss_gib"])
        (out / "results.json").write_text(json.dumps(results, indent=1))  # so far: a long run may be cut short
    config = config_for(args.preset)
    report = "\n".join([
        f"{results['date']}, preset {args.preset}, {args.prompt_tokens}-token prompt, {args.new_tokens} sampled tokens, "
        f"OMP_WAIT_POLICY={args.omp_wait_policy or 'PASSIVE for kogpt (as its command sets it), unset for the peers'}",
        f"machine: {json.dumps(results['machine'])}", "", table(results, config), "", *extra_lines(results),
        "", "targets (issue 13):", *targets(results),
    ])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
