"""Kernel micro-benchmark: every CPU Linear kernel on KoGPT's own matrix shapes, against the memory.

    flock /tmp/kogpt-6b.lock python benchmarks/kernel_timings.py --threads 2 --out /tmp/kogpt-kernels.json

For each shape (4096x4096, 16384x4096, 4096x16384, lm_head 64512x4096) and each candidate kernel,
one (rows, in) x (in, out) product (`--rows`, default 1: a decode step; 128: a prompt chunk) is timed over copies of the packed weight that together exceed
`--rotate-mib` (default: 1.25x the last-level cache), so the weight streams from memory as in a
decode step. Each round times every kernel once, after a read-bandwidth measurement (the faster of
`sum()` and a matrix-vector product over a buffer of that size), so that a shared machine's changing
load falls on all alike; each cell keeps the best round, in ms per product and as a share of the best
bandwidth measured for that shape. torchao's CPU configs are added when torchao imports. `--preset smoke` runs small shapes quickly (for tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where its modules would shadow installed
# packages (kernels.py once shadowed Hugging Face's `kernels`): the repository takes its place.
if Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import copy
import json
import os
import time

REPO = Path(__file__).resolve().parents[1]

import torch

from kogpt.loading import kernels

SHAPES = {"6b": [(4096, 4096), (16384, 4096), (4096, 16384), (64512, 4096)], "smoke": [(256, 128), (128, 256)]}


def torchao_candidates() -> dict:
    """{name: (bytes per weight, config factory)} for torchao's CPU configs, when torchao imports."""
    try:
        import torchao.quantization as q
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        from torchao.quantization.granularity import PerGroup
    except Exception:  # noqa: BLE001 - any import failure means: no torchao rows
        return {}
    found = {
        "ao-w8": (1, lambda: q.Int8WeightOnlyConfig()),
        "ao-w8a8": (1, lambda: q.Int8DynamicActivationInt8WeightConfig()),
        "ao-w4g128": (0.5 + 4 / 128, lambda: PrototypeInt4WeightOnlyConfig(group_size=128)),
        "ao-a8w4g32": (0.5 + 2 / 32, lambda: q.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32))),
    }  # fmt: skip
    return found


def torchao_layer(factory, weight: torch.Tensor):
    """A bias-free bfloat16 Linear holding `weight`, quantized by torchao's `factory()` config."""
    from torchao.quantization import quantize_

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=torch.bfloat16)
    layer.weight.data.copy_(weight)
    quantize_(layer, factory())
    return layer


def contestants(shape, ours, theirs, rotate: int, rows: int = 1) -> dict:
    """{name: (run(x) over one copy, copies, bytes per product, relative error)} for one shape."""
    out_features, in_features = shape
    weight = torch.randn(out_features, in_features) * 0.02
    x = torch.randn(rows, in_features)
    exact = x @ weight.t()
    found = {}
    for kernel in ours:
        if not kernel.fits(in_features):
            continue
        try:
            stored = kernel.pack(weight)
            packed = kernel.ready(stored)
            error = float((kernel.run(x, packed).float() - exact).norm() / exact.norm())
        except (RuntimeError, NotImplementedError) as exc:
            found[kernel.name] = str(exc).splitlines()[0]
            continue
        size = sum(t.nbytes for t in stored.values())
        copies = [packed]
        copies += [kernel.ready({k: t.clone() for k, t in stored.items()}) for _ in range(max(1, -(-rotate // size)) - 1)]
        found[kernel.name] = (lambda x, t, run=kernel.run: run(x, t), copies, size, error)
    for name, (_, factory) in theirs.items():
        try:
            layer = torchao_layer(factory, weight)
            with torch.no_grad():
                error = float((layer(x.bfloat16()).float() - exact).norm() / exact.norm())
            size = int(theirs_bytes(name) * weight.numel())
            copies = [layer] + [copy.deepcopy(layer) for _ in range(max(1, -(-rotate // size)) - 1)]
        except Exception as exc:  # noqa: BLE001 - any torchao failure is a row
            found[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        found[name] = (lambda x, layer: layer(x.bfloat16()), copies, size, error)
    return found


def theirs_bytes(name: str) -> float:
    return {"ao-w8": 1, "ao-w8a8": 1, "ao-w4g128": 0.5 + 4 / 128, "ao-a8w4g32": 0.5 + 2 / 32}[name]


def measure_shape(shape, ours, theirs, rotate: int, rounds: int, rows: int = 1) -> list[dict]:
    """Every contestant once per round, interleaved with a bandwidth measurement, so that a shared
    machine's changing load falls on all of them alike; the best round of each is kept."""
    found = contestants(shape, ours, theirs, rotate, rows)
    best = {name: float("inf") for name, value in found.items() if isinstance(value, tuple)}
    cpu = dict(best)
    bandwidth = cpu_bandwidth = 0.0
    threads = torch.get_num_threads()
    matrix, vector = torch.ones(max(1, rotate // 4096), 1024), torch.ones(1024)
    x = torch.randn(rows, shape[1])
    with torch.no_grad():
        for name in best:
            run, copies, _, _ = found[name]
            run(x, copies[0])  # warm-up
        for _ in range(rounds):
            used = time.process_time()
            bandwidth = max(bandwidth, rotate / kernels.read_seconds(matrix, vector))
            cpu_bandwidth = max(cpu_bandwidth, 2 * rotate * threads / max(time.process_time() - used, 1e-9))  # two reads
            for name in best:
                run, copies, _, _ = found[name]
                started, used = time.perf_counter(), time.process_time()
                for each in copies:
                    run(x, each)
                best[name] = min(best[name], (time.perf_counter() - started) / len(copies))
                cpu[name] = min(cpu[name], (time.process_time() - used) / threads / len(copies))
    rows = []
    for name, value in found.items():
        if not isinstance(value, tuple):
            rows.append({"kernel": name, "shape": shape, "rows": x.shape[0], "error": value})
            continue
        _, copies, size, error = value
        rows.append({"kernel": name, "shape": shape, "rows": x.shape[0], "ms": 1000 * best[name], "rel_error": error, "read_gb_s": bandwidth / 1e9,
                     "bandwidth_pct": 100 * size / best[name] / bandwidth, "copies": len(copies),
                     "cpu_ms": 1000 * cpu[name], "cpu_read_gb_s": cpu_bandwidth / 1e9,
                     "cpu_bandwidth_pct": 100 * size / cpu[name] / cpu_bandwidth})  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=SHAPES, default="6b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rotate-mib", type=int, default=0, help="weight bytes to rotate over per kernel (default: 1.25x the last-level cache)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kernels", default="", help="comma-separated subset (default: all, torchao's included)")
    parser.add_argument("--rows", type=int, default=1, help="input rows per product: 1 (a decode step), 4 (a batch), 128 (a prompt chunk)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    llc = kernels.last_level_cache_bytes()
    rotate = args.rotate_mib * 2**20 or (5 * llc // 4 if args.preset == "6b" else 2**20)
    wanted = set(filter(None, args.kernels.split(",")))
    ours = [k for k in kernels.KERNELS.values() if not wanted or k.name in wanted]
    theirs = {n: v for n, v in torchao_candidates().items() if not wanted or n in wanted} if args.preset == "6b" or wanted else {}
    from benchmarks.run import machine

    print(f"threads {args.threads}, rotating over {rotate / 2**20:.0f} MiB per kernel (last-level cache {llc / 2**20:.0f} MiB)", file=sys.stderr)
    rows = []
    for shape in SHAPES[args.preset]:
        rows += measure_shape(shape, ours, theirs, rotate, args.rounds, args.rows)
    bandwidths = [r["read_gb_s"] for r in rows if "read_gb_s" in r]
    result = {"machine": machine(), "threads": args.threads, "input_rows": args.rows, "rotate_mib": rotate / 2**20, "llc_mib": llc / 2**20,
              "read_gb_s": max(bandwidths, default=0.0), "loadavg": os.getloadavg(), "rows": rows}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(report(result))


def report(result: dict) -> str:
    """Two tables: by the wall clock, and by CPU time (process time / threads), which a busy shared
    machine disturbs far less (it leaves out the time other processes held the cores)."""
    return "\n\n".join(clock_table(result, clock) for clock in ("wall", "cpu"))


def clock_table(result: dict, clock: str) -> str:
    shapes = sorted({tuple(r["shape"]) for r in result["rows"]}, key=lambda s: s[0] * s[1])
    names = list(dict.fromkeys(r["kernel"] for r in result["rows"]))
    cell = {(r["kernel"], tuple(r["shape"])): r for r in result["rows"]}
    key = "cpu_read_gb_s" if clock == "cpu" else "read_gb_s"
    bws = [r[key] for r in result["rows"] if key in r] or [result["read_gb_s"]]
    lines = [
        f"{clock} clock: threads {result['threads']}, {result.get('input_rows', 1)} input rows; each cell: the best of rounds that interleave every kernel with a read-bandwidth "
        f"measurement, % of the best bandwidth of that shape's rounds ({min(bws):.1f}-{max(bws):.1f} GB/s); rotating over "
        f"{result['rotate_mib']:.0f} MiB of weights per kernel (last-level cache {result['llc_mib']:.0f} MiB); "
        f"load average {result.get('loadavg', ['?'])[0]}",
        "", "| kernel | rel. error | " + " | ".join(f"{o}x{i} ms (% bw)" for o, i in shapes) + " |",
        "|---|---:|" + "---:|" * len(shapes),
    ]  # fmt: skip
    for name in names:
        cells, error = [], ""
        for shape in shapes:
            r = cell.get((name, shape))
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append("fails")
            else:
                ms, pct = (r["cpu_ms"], r["cpu_bandwidth_pct"]) if clock == "cpu" else (r["ms"], r["bandwidth_pct"])
                cells.append(f"{ms:.2f} ({pct:.0f}%)")
                error = f"{r['rel_error']:.4f}"
        lines.append(f"| {name} | {error} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
