"""`kogpt bench`: the user's view of speed on this machine, as `llama-bench` is for llama.cpp.

For each format asked for (`--quantize none,int8,int4`), one process of its own loads the model and
times whole phases of real requests (`kogpt.cli.benchrun`): prompt processing (pp512), generation
(tg128), generation of 4 samples at once (tg128 x4) and generation after a long prompt
(tg128 @ d1536), each as tokens/s, min and median over `-r` repetitions; with its peak RSS and its
start time. The sizes shrink to fit a model with a smaller context. `kogpt.cli.benchview` prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from kogpt.cli.parser import Parser, command_name
from kogpt.defaults import (
    DEFAULT_MODEL,
    DEFAULT_REVISION,
    DTYPE_CHOICES,
    QUANTIZE_CHOICES,
    REVISIONS,
    VERSION,
)
from kogpt.errors import KoGPTError

log = logging.getLogger("kogpt")

PROMPT, GEN, DEPTH, ROWS, REPETITIONS = 512, 128, 1536, 4, 3
FULL_CONTEXT = 2048  # KoGPT's; the default sizes fit it, and shrink in proportion for a smaller one


def formats(text: str) -> list[str]:
    """argparse type: a comma-separated list of weight formats, each named once."""
    names = [name.strip() for name in text.split(",")]
    bad = [name for name in names if name not in QUANTIZE_CHOICES]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a format; use {', '.join(QUANTIZE_CHOICES)} (comma-separated)")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"a format is named twice in {text!r}")
    return names


def count(text: str) -> int:
    """argparse type: a whole number of 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{command_name()} bench",
        description="Measure the speed of the model on this CPU as a user sees it: prompt processing, "
        "generation, generation of several samples and generation after a long prompt, per weight format.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULT_MODEL, help=f"huggingface repo or local directory (default:{DEFAULT_MODEL})")
    model.add_argument("--revision", default=DEFAULT_REVISION, choices=REVISIONS, help=f"hub revision (default:{DEFAULT_REVISION})")
    model.add_argument("--quantize", type=formats, default=["none"], metavar="LIST",
                       help="the formats to measure, each in its own process: none, int8, int4, comma-separated (default:none)")
    model.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="compute dtype of the none format (default:auto)")
    model.add_argument("--threads", type=positive, metavar="N", help="CPU threads that compute (default: $OMP_NUM_THREADS, else the physical cores)")
    model.add_argument("--no-mmap", action="store_true", help="read the converted weights into memory instead of mapping them")
    sizes = parser.add_argument_group("tests (tokens; 0 skips a test; by default sized to the model's context)")
    sizes.add_argument("-p", "--n-prompt", type=count, metavar="N", help=f"prompt processing: a prompt of N tokens (default:{PROMPT})")
    sizes.add_argument("-n", "--n-gen", type=count, metavar="N", help=f"generation: N new tokens (default:{GEN})")
    sizes.add_argument("-d", "--depth", type=count, metavar="N", help=f"generation after a prompt of N tokens (default:{DEPTH})")
    sizes.add_argument("--rows", type=count, default=ROWS, metavar="N", help=f"generation of N samples at once (default:{ROWS})")
    sizes.add_argument("-r", "--repetitions", type=positive, default=REPETITIONS, metavar="N", help=f"runs of each test (default:{REPETITIONS})")
    output = parser.add_argument_group("output (default: a table)").add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the results as one JSON object")
    output.add_argument("--markdown", action="store_true", help="print a markdown table, for pasting into an issue")
    parser.add_argument("--debug", action="store_true", help="debug logging, the measuring processes' logs, full tracebacks")
    return parser


def positive(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def sizes_for(context: int, prompt: int | None, gen: int | None, depth: int | None) -> dict[str, int]:
    """The test sizes: those given, the rest the defaults scaled to `context`; checked against it."""
    scale = min(1.0, context / FULL_CONTEXT)
    pick = lambda given, default: given if given is not None else max(1, int(default * scale))
    sizes = {"prompt": pick(prompt, PROMPT), "gen": pick(gen, GEN), "depth": pick(depth, DEPTH)}
    if sizes["prompt"] + 1 > context:
        raise KoGPTError(f"-p {sizes['prompt']} does not fit this model's context of {context} tokens")
    if sizes["depth"] + max(sizes["gen"], 1) > context:
        raise KoGPTError(f"-d {sizes['depth']} with -n {sizes['gen']} needs {sizes['depth'] + sizes['gen']} positions; "
                         f"this model's context has {context}")  # fmt: skip
    return sizes


def test_names(sizes: dict[str, int], rows: int) -> dict[str, str]:
    """{measurement key: column name}, as llama-bench names its tests."""
    p, n, d = sizes["prompt"], sizes["gen"], sizes["depth"]
    names = {"pp": f"pp{p}" if p else "", "tg": f"tg{n}" if n else "",
             "tg_rows": f"tg{n} x{rows}" if n and rows > 1 else "", "tg_depth": f"tg{n} @ d{d}" if n and d else ""}  # fmt: skip
    return {key: name for key, name in names.items() if name}


def machine() -> dict:
    """The CPU, its SIMD flags that matter to the kernels, cores and memory."""
    import platform

    import psutil

    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        info = ""
    line = lambda key: next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith(key)), "")
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return {"cpu": line("model name") or platform.processor() or platform.machine(),
            "flags": [flag for flag in wanted if flag in line("flags").split()],
            "cores": psutil.cpu_count(logical=False), "cpus": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "system": platform.platform()}  # fmt: skip


def measure_format(spec: dict, debug: bool) -> dict:
    """One format in a process of its own (so its peak RSS is its own): `kogpt.cli.benchrun`'s result."""
    done = subprocess.run([sys.executable, "-m", "kogpt.cli.benchrun", json.dumps(spec)],
                          capture_output=True, text=True, env=dict(os.environ))  # fmt: skip
    if debug and done.stderr:
        sys.stderr.write(done.stderr)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return {"error": f"the measuring process failed: {last[0]}"}


def run(args: argparse.Namespace, renderer) -> int:
    from kogpt import threads
    from kogpt.cli import benchview
    from kogpt.cli.flags import quiet_libraries
    from kogpt.loading.checkpoint import load_config, resolve_checkpoint

    quiet_libraries(args.debug)
    path = resolve_checkpoint(args.model, args.revision)
    context = load_config(path).n_positions
    sizes = sizes_for(context, args.n_prompt, args.n_gen, args.depth)
    names = test_names(sizes, args.rows)
    if not names:
        raise KoGPTError("every test is skipped (-p 0 -n 0): nothing to measure")
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "kogpt": VERSION, "torch": version("torch"), "machine": machine(), "model": args.model, "context": context,
        "sizes": {**sizes, "rows": args.rows}, "tests": list(names.values()), "repetitions": args.repetitions,
        "omp": {name: value for name, (value, _who) in threads.APPLIED.items()}, "results": [],
    }  # fmt: skip
    failed = []
    for fmt in args.quantize:
        spec = {"model": str(path), "quantize": fmt, "dtype": args.dtype, "threads": args.threads, "mmap": not args.no_mmap,
                "repetitions": args.repetitions, "rows": args.rows, "debug": args.debug, **sizes}  # fmt: skip
        with benchview.progress(renderer.err, f"{fmt}: loading, then {args.repetitions} run{'s' if args.repetitions > 1 else ''} of {', '.join(names.values())}"):
            result = measure_format(spec, args.debug)
        result = {"quantize": fmt, **result}
        if "error" in result:
            failed.append(f"{fmt}: {result['error']}")
        else:
            result["tests"] = {names[key]: value for key, value in result["tests"].items() if key in names}
            report.setdefault("torch_cpu_capability", result.pop("torch_cpu_capability", ""))
        report["results"].append(result)
    benchview.show(report, renderer.out, as_json=args.json, as_markdown=args.markdown)
    for line in failed[:-1]:
        renderer.error(f"error: {line}")
    if failed:
        raise KoGPTError(failed[-1])
    return 0
