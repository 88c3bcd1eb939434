"""Kernel micro-benchmark: every CPU Linear kernel on KoGPT's own matrix shapes, against the memory.

    flock /tmp/kogpt-6b.lock python benchmarks/kernels.py --threads 2 --out /tmp/kogpt-kernels.json

For each shape (4096x4096, 16384x4096, 4096x16384, lm_head 64512x4096) and each candidate kernel,
one (1, in) x (in, out) product is timed over copies of the packed weight that together exceed
`--rotate-mib` (default: twice the last-level cache), so the weight streams from memory as in a
decode step. The read bandwidth (a `sum()` over a buffer of that size) is measured in the same run;
each row reports ms per product and the share of that bandwidth the kernel's bytes reach. torchao's
CPU configs are added when torchao imports. `--preset smoke` runs small shapes quickly (for tests).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from kogpt.loading import kernels  # noqa: E402

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


def time_torchao(factory, shape: tuple[int, int], rotate_bytes: int, nbytes: float, rounds: int) -> tuple[float, float]:
    """(seconds per product, relative error vs float32) of a torchao-quantized bfloat16 Linear."""
    from torchao.quantization import quantize_

    out_features, in_features = shape
    weight = torch.randn(out_features, in_features) * 0.02
    layer = torch.nn.Linear(in_features, out_features, bias=False, dtype=torch.bfloat16)
    layer.weight.data.copy_(weight)
    quantize_(layer, factory())
    x = torch.randn(1, in_features)
    with torch.no_grad():
        error = float((layer(x.bfloat16()).float() - x @ weight.t()).norm() / (x @ weight.t()).norm())
        layers = [layer] + [copy.deepcopy(layer) for _ in range(max(1, int(-(-rotate_bytes // (nbytes * weight.numel())))) - 1)]
        xb = x.bfloat16()
        layers[0](xb)
        best = []
        for _ in range(rounds):
            started = time.perf_counter()
            for each in layers:
                each(xb)
            best.append((time.perf_counter() - started) / len(layers))
    return sorted(best)[len(best) // 2], error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=SHAPES, default="6b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rotate-mib", type=int, default=0, help="weight bytes to rotate over (default: 2x the last-level cache)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernels", default="", help="comma-separated subset (default: all, torchao's included)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    llc = kernels.last_level_cache_bytes()
    rotate = args.rotate_mib * 2**20 or (2 * llc if args.preset == "6b" else 2**20)
    bandwidth = kernels.read_bandwidth(max(rotate, 2**20))
    wanted = set(filter(None, args.kernels.split(",")))
    ours = [k for k in kernels.KERNELS.values() if not wanted or k.name in wanted]
    theirs = {n: v for n, v in torchao_candidates().items() if not wanted or n in wanted} if args.preset == "6b" or wanted else {}
    from run import machine  # noqa: PLC0415 - benchmarks/run.py: CPU model and flags

    rows = []
    print(f"threads {args.threads}, rotating over {rotate / 2**20:.0f} MiB (last-level cache {llc / 2**20:.0f} MiB), "
          f"read bandwidth {bandwidth / 1e9:.1f} GB/s", file=sys.stderr)  # fmt: skip
    for shape in SHAPES[args.preset]:
        for kernel in ours:
            if not kernel.fits(shape[1]):
                continue
            try:
                error = kernels.relative_error(kernel)
                seconds = kernels.time_kernel(kernel, shape, rotate, args.rounds)
            except (RuntimeError, NotImplementedError) as exc:
                rows.append({"kernel": kernel.name, "shape": shape, "error": str(exc).splitlines()[0]})
                continue
            rows.append({"kernel": kernel.name, "format": kernel.format, "shape": shape, "ms": 1000 * seconds,
                         "bandwidth_pct": 100 * kernel.bytes_per_weight * shape[0] * shape[1] / seconds / bandwidth,
                         "rel_error": error})  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)
        for name, (nbytes, factory) in theirs.items():
            try:
                seconds, error = time_torchao(factory, shape, rotate, nbytes, args.rounds)
            except Exception as exc:  # noqa: BLE001 - report any torchao failure as a row
                rows.append({"kernel": name, "shape": shape, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
                print(rows[-1], file=sys.stderr, flush=True)
                continue
            rows.append({"kernel": name, "format": "torchao", "shape": shape, "ms": 1000 * seconds,
                         "bandwidth_pct": 100 * nbytes * shape[0] * shape[1] / seconds / bandwidth, "rel_error": error})  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)
    result = {"machine": machine(), "threads": args.threads, "rotate_mib": rotate / 2**20, "llc_mib": llc / 2**20,
              "read_gb_s": bandwidth / 1e9, "rows": rows}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(report(result))


def report(result: dict) -> str:
    shapes = sorted({tuple(r["shape"]) for r in result["rows"]}, key=lambda s: s[0] * s[1])
    names = list(dict.fromkeys(r["kernel"] for r in result["rows"]))
    cell = {(r["kernel"], tuple(r["shape"])): r for r in result["rows"]}
    lines = [
        f"threads {result['threads']}, read bandwidth {result['read_gb_s']:.1f} GB/s, rotating over "
        f"{result['rotate_mib']:.0f} MiB of weights (last-level cache {result['llc_mib']:.0f} MiB)",
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
                cells.append(f"{r['ms']:.2f} ({r['bandwidth_pct']:.0f}%)")
                error = f"{r['rel_error']:.4f}"
        lines.append(f"| {name} | {error} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
