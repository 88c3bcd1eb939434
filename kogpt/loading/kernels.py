"""The CPU matrix kernels for each weight format, and how to time them on this machine.

For each format (16-bit, int8, int4) several kernels torch ships can do a Linear layer's work; which
is fastest depends on the CPU (AVX2, AVX-512, VNNI, AMX), the torch version and the number of input
rows (a decode step's one row, a prompt chunk's 128). `time_kernel` times one on the model's own
matrix shapes, rotating over more weight than the last-level cache holds; `kogpt.loading.chooser`
picks per phase, and `kogpt.loading.choices` remembers the choice per machine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kogpt.loading import bf16, int4, int8
from kogpt.loading.bf16 import blocked_linear
from kogpt.loading.phases import MANY_ROWS, PHASES

log = logging.getLogger(__name__)

# "float": the 16-bit kernels and float32, for an `auto` dtype whose float32 weights fit in memory.
FORMATS = ("16bit", "int8", "int4", "float")
TOLERANCE = {"16bit": 0.01, "int8": 0.03, "int4": 0.2, "32bit": 1e-5, "float": 0.01}  # relative error vs float32
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Kernel:
    """One way to compute `x @ weight.T`: how to pack a float weight, and how to multiply by it."""

    name: str
    format: str  # 16bit, int8, int4 (or 32bit, the reference)
    bytes_per_weight: float
    pack: Callable[[torch.Tensor], Tensors]  # float weight (out, in) -> the tensors a layer keeps
    run: Callable[[torch.Tensor, Tensors], torch.Tensor]  # x (rows, in) -> (rows, out)
    about: str
    buffers: tuple[str, ...] = ("weight",)  # the names `pack` returns, the buffers a layer registers
    fits: Callable[[int], bool] = lambda in_features: True
    dtype: torch.dtype = torch.bfloat16  # the model's compute dtype with this kernel
    stored_as: str = ""  # another kernel whose packed tensors this one uses as they are
    phases: tuple[str, ...] = PHASES  # the phases it is a candidate for (its layout's own kernel: all)
    matrix_bf16: bool = False  # many rows of bfloat16 products: not worth timing without AVX512-BF16 or AMX
    # Tensors that cannot be saved (a library's opaque packed weight) are made at load from those of
    # `cached_as`, which the converted-weights cache holds: prepare(stored tensors) -> run's tensors.
    prepare: Callable[[Tensors], Tensors] | None = None
    cached_as: str = ""

    @property
    def layout(self) -> str:
        """The name of the packed tensors' layout: a layer's phases all run kernels of one layout."""
        return self.stored_as or self.name

    @property
    def cache_layout(self) -> str:
        """The layout the converted-weights cache keys this kernel's entry by."""
        return self.cached_as or self.layout

    def packed(self, weight: torch.Tensor) -> Tensors:
        """A float weight (out, in) packed and prepared: the tensors `run` takes."""
        return self.ready(self.pack(weight))

    def ready(self, stored: Tensors) -> Tensors:
        """The tensors `run` takes, from those `pack` returns (and the cache holds)."""
        return self.prepare(stored) if self.prepare else stored


def _float(dtype: torch.dtype) -> tuple[Callable, Callable]:
    return (lambda w: {"weight": w.to(dtype, copy=True)}), (lambda x, t: F.linear(x.to(dtype), t["weight"]))


def _blocked(dtype: torch.dtype, compute: torch.dtype = torch.float32) -> Callable:
    return lambda x, t: blocked_linear(x.to(dtype), t["weight"], None, compute)


def _run_bf16mv(x: torch.Tensor, t: Tensors) -> torch.Tensor:
    """One row (a decode step) by `torch.mv`, more by `F.linear`; `kogpt.loading.bf16` does the same in the model."""
    if x.shape[0] == 1:
        return torch.mv(t["weight"], x[0].to(torch.bfloat16)).unsqueeze(0)
    return F.linear(x.to(torch.bfloat16), t["weight"])


def _run_bf16t(x: torch.Tensor, t: Tensors) -> torch.Tensor:
    """A few rows as `weight @ xᵀ`: on a 2-vCPU Xeon (AMX) 4 to 15 rows of a 16384x4096 layer then
    cost what one row costs by `torch.mv` (4.3 ms), where `F.linear` took 5.6-6.0 ms."""
    return torch.mm(t["weight"], x.to(torch.bfloat16).t()).t()


def _int4(group: int) -> Kernel:
    return Kernel(
        f"w4g{group}", "int4", 0.5 + 4 / group,
        lambda w: int4.pack(w, group), lambda x, t: int4.matmul(x, t, group),
        f"int4 weights, groups of {group}, bfloat16 activations (_weight_int4pack_mm_for_cpu)",
        ("packed", "scales_and_zeros"), lambda n_in: int4.fits(n_in, group),
    )  # fmt: skip


def _int4_widened(group: int) -> Kernel:
    return Kernel(
        f"w4g{group}bf16", "int4", 0.5 + 4 / group,
        lambda w: int4.pack(w, group), lambda x, t: int4.matmul_widened(x, t, group),
        f"int4 weights (groups of {group}) widened to bfloat16 a block at a time (prompt chunks)",
        ("packed", "scales_and_zeros"), lambda n_in: int4.fits(n_in, group), stored_as=f"w4g{group}", phases=("prefill",),
        matrix_bf16=True,
    )  # fmt: skip


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in [
        Kernel("bf16", "16bit", 2, *_float(torch.bfloat16), "bfloat16 weights and activations (F.linear)"),
        Kernel("bf16mv", "16bit", 2, _float(torch.bfloat16)[0], _run_bf16mv, "bfloat16, a decode step by torch.mv", stored_as="bf16", phases=("step",)),
        Kernel("bf16t", "16bit", 2, _float(torch.bfloat16)[0], _run_bf16t, "bfloat16, a few rows as weight @ xT (torch.mm)", stored_as="bf16", phases=("batch",)),
        Kernel("bf16f32", "16bit", 2, _float(torch.bfloat16)[0], _blocked(torch.bfloat16), "bfloat16 weights widened to float32 a block at a time (many rows)", stored_as="bf16", phases=("batch", "prefill")),
        Kernel("fp16", "16bit", 2, *_float(torch.float16), "float16 weights and activations (F.linear)", dtype=torch.float16),
        Kernel("fp16f32", "16bit", 2, _float(torch.float16)[0], _blocked(torch.float16), "float16 weights widened to float32 a block at a time (many rows)", dtype=torch.float16, stored_as="fp16", phases=("batch", "prefill")),
        Kernel("fp16bf16", "16bit", 2, _float(torch.float16)[0], _blocked(torch.float16, torch.bfloat16), "float16 weights converted to bfloat16 a block at a time (many rows)", dtype=torch.float16, stored_as="fp16", phases=("batch", "prefill")),
        Kernel("fp32", "32bit", 4, *_float(torch.float32), "float32 (F.linear); the accuracy reference", dtype=torch.float32),
        Kernel("w8", "int8", 1, int8.pack, int8.run_w8, "int8 weights, bfloat16 activations (_weight_int8pack_mm)", ("weight", "scales")),
        Kernel("w8a8", "int8", 1, int8.pack, int8.run_w8a8, "int8 weights x int8 activations quantized per token (torch._int_mm)", ("weight", "scales"), stored_as="w8"),
        Kernel("w8dnn", "int8", 1, int8.pack, int8.run_w8dnn, "int8 weights in oneDNN's layout x int8 activations per token (onednn.qlinear_pointwise)", ("weight", "scales"), prepare=int8.prepare_w8dnn, cached_as="w8"),
        *(_int4(group) for group in int4.GROUPS),
        *(_int4_widened(group) for group in int4.GROUPS),
    ]
}  # fmt: skip


# The standard kernel of each format: used without a measurement (quantize_model, `--plan` before the
# first load, tests), and preferred among tied candidates. They run everywhere torch does; group 128
# is int4's usual trade (GPTQ, AWQ, torchao): 0.53 bytes a weight against group 32's 0.63.
DEFAULTS = {"16bit": "bf16", "int8": "w8", "int4": "w4g128", "float": "bf16"}  # ties: half the memory


def candidates(fmt: str, in_features: int = 4096) -> list[Kernel]:
    formats = ("16bit", "32bit") if fmt == "float" else (fmt,)
    slow_bf16 = bf16.needs_upcast()  # then torch's bfloat16 products of many rows cost a row each
    return [
        k for k in KERNELS.values()
        if k.format in formats and k.fits(in_features) and not (k.matrix_bf16 and slow_bf16) and (k.name != "w8dnn" or int8.onednn())
    ]  # fmt: skip


def last_level_cache_bytes() -> int:
    """The largest CPU cache this machine reports (sysfs), or 256 MiB when it cannot be read."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG") or 0) * unit)
    return max(sizes, default=256 * 2**20)


def read_seconds(matrix: torch.Tensor, vector: torch.Tensor) -> float:
    """Seconds of the faster of two plain reads of a float32 `matrix` (rows, len(vector)): `sum()`
    and a matrix-vector product. Either alone can read low: on one Xeon `sum()` gave 16.9 GB/s where
    `torch.mv` gave 31.7."""
    best = float("inf")
    for read in (matrix.sum, lambda: torch.mv(matrix, vector)):
        started = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - started)
    return best


def read_bandwidth(nbytes: int, repeats: int = 3) -> float:
    """Bytes per second read from a float32 buffer of `nbytes` (best of `repeats`)."""
    matrix, vector = torch.ones(max(1, nbytes // 4096), 1024), torch.ones(1024)
    return matrix.nbytes / min(read_seconds(matrix, vector) for _ in range(repeats))


def time_kernel(kernel: Kernel, shape: tuple[int, int], rotate_bytes: int, rounds: int = 3, rows: int = 1) -> float:
    """Seconds for one (rows, in) x (in, out) product, timed over copies of the packed weight that
    together exceed `rotate_bytes`, so that the weight comes from memory and not from the cache."""
    out_features, in_features = shape
    weight = torch.randn(out_features, in_features) * 0.02
    packed = kernel.pack(weight)
    del weight
    size = sum(t.nbytes for t in packed.values())
    copies = [kernel.ready(packed)]
    copies += [kernel.ready({k: t.clone() for k, t in packed.items()}) for _ in range(max(1, -(-rotate_bytes // size)) - 1)]
    x = torch.randn(rows, in_features)
    kernel.run(x, copies[0])  # warm-up: one-time setup inside the kernel
    per_round = []
    for _ in range(rounds):
        started = time.perf_counter()
        for tensors in copies:
            kernel.run(x, tensors)
        per_round.append((time.perf_counter() - started) / len(copies))
    return min(per_round)  # the least disturbed round: other processes only ever slow a round down


Measure = Callable[[Kernel, tuple[int, int], int], float]  # (kernel, (out, in), rows) -> seconds
MEASURED_WEIGHTS = 1 << 26  # larger matrices (lm_head) are timed on a slice of this many weights and scaled
PREPARED_WEIGHTS = 1 << 24  # the load's preparing is timed on a slice of this many weights and scaled


def prepare_seconds(kernel: Kernel, shape: tuple[int, int]) -> float:
    """Seconds that preparing one (out, in) layer's cached tensors takes at every load
    (`Kernel.prepare`; 0 for a kernel that runs on them as they are), timed on a slice, scaled."""
    if kernel.prepare is None:
        return 0.0
    out_features, in_features = shape
    part = max(1, min(out_features, PREPARED_WEIGHTS // in_features))
    stored = kernel.pack(torch.randn(part, in_features) * 0.02)
    started = time.perf_counter()
    kernel.prepare(stored)
    return (time.perf_counter() - started) * out_features / part


def default_threads() -> int:
    """The physical cores (hyper-threads share a core's arithmetic units and gain nothing here)."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Make torch compute with `threads` threads (default: the physical cores); return the number."""
    threads = threads or default_threads()
    if threads < 1:
        raise ValueError(f"--threads must be 1 or more, not {threads}")
    torch.set_num_threads(threads)
    return threads


def default_measure(rotate_bytes: int, rounds: int = 5) -> Measure:
    """Time each shape as it is, but a matrix over 64M weights (an lm_head) on a slice, scaled.
    Many rows make a product compute-bound: those are timed on one copy, in 2 rounds."""

    def measure(kernel: Kernel, shape: tuple[int, int], rows: int = 1) -> float:
        rotate, repeat = (rotate_bytes, rounds) if rows < MANY_ROWS else (0, 2)
        out_features, in_features = shape
        if out_features * in_features <= MEASURED_WEIGHTS:
            return time_kernel(kernel, shape, rotate, repeat, rows)
        part = MEASURED_WEIGHTS // in_features
        return time_kernel(kernel, (part, in_features), rotate, repeat, rows) * out_features / part

    return measure


def linear_shapes(config, lm_head: bool = True) -> dict[tuple[int, int], int]:
    """{(out, in): count} of a GPT-J model's Linear layers, lm_head included unless `lm_head` is
    False (a prompt chunk computes the logits of its last row only: one row of lm_head)."""
    d, inner = config.n_embd, getattr(config, "n_inner", None) or 4 * config.n_embd
    shapes = {(d, d): 4 * config.n_layer, (inner, d): config.n_layer, (d, inner): config.n_layer}
    if lm_head:
        shapes[(config.vocab_size, d)] = shapes.get((config.vocab_size, d), 0) + 1
    return shapes
