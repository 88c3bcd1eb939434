"""Where the model goes: placement options, memory budgets, hardware figures and their checks.

`Options` holds what the user asked for (the model, device and dtype, `--device-map`,
`--max-memory`, `--offload-dir`, `--quantize`); `Hardware` holds free memory figures, detected or
injected by tests. `kogpt.placement.decide` makes the whole load decision from both.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION, QUANTIZE_CHOICES
from kogpt.defaults import DEVICE_MAP_STRATEGIES as STRATEGIES
from kogpt.errors import KoGPTError

log = logging.getLogger(__name__)

UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)
MEMORY_FORMAT = "DEVICE=SIZE[,DEVICE=SIZE...] like 0=10GiB,1=10GiB,cpu=30GiB"

MaxMemory = dict  # {0: bytes, 1: bytes, "cpu": bytes}: GPU indices and "cpu"


@dataclass(frozen=True, kw_only=True)
class Options:
    """Everything a load is asked to do: the one object that travels from the flags (or the API's
    arguments) to `kogpt.placement.decide.decide` and the loader.

    `device_map` None keeps the whole model on one device; `static_cache` None decides by device.
    """

    model: str = DEFAULT_MODEL
    revision: str = DEFAULT_REVISION
    device: str = "cuda"
    dtype: str = "auto"
    trust_remote_code: bool = False
    device_map: str | None = None
    max_memory: MaxMemory | None = None
    offload_dir: str | None = None
    quantize: str = "none"
    static_cache: bool | None = None
    threads: int | None = None  # CPU threads; None: the physical cores
    kernel: str | None = None  # CPU Linear kernel (kogpt.loading.kernels); None: the fastest measured here
    cache: bool = True  # the converted-weights cache of CPU loads

    @property
    def strategy(self) -> str | None:
        """The device-map strategy; a memory budget or an offload directory implies `auto`."""
        if self.device_map is None and (self.max_memory or self.offload_dir):
            return "auto"
        return self.device_map


@dataclass(frozen=True)
class Hardware:
    """Free memory in bytes as the machine reports it: per CUDA GPU (by index), RAM, offload disk."""

    gpus: tuple[int, ...] = ()
    cpu: int = 0
    disk: int = 0


def parse_size(text: str) -> int:
    """`10GiB` -> 10737418240. A unit is required: a bare `30` is ambiguous."""
    match = SIZE.match(text)
    if not match or match.group(2).lower() not in UNITS:
        raise KoGPTError(f"bad memory size {text!r}: use a number and a unit, like 10GiB or 500MB")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def parse_max_memory(text: str | dict | None) -> MaxMemory | None:
    """Parse `0=10GiB,1=10GiB,cpu=30GiB` into {0: bytes, 1: bytes, "cpu": bytes}.

    A dict (the Python API) may give sizes as strings or ints; keys may also be `cuda:N`.
    """
    if text is None or text == "" or text == {}:
        return None
    if isinstance(text, str):
        pairs = []
        for item in text.split(","):
            key, sep, size = item.partition("=")
            if not sep or not key.strip() or not size.strip():
                raise KoGPTError(f"bad --max-memory entry {item.strip()!r}: expected {MEMORY_FORMAT}")
            pairs.append((key.strip(), size.strip()))
    else:
        pairs = [(str(key), size) for key, size in text.items()]
    budget: MaxMemory = {}
    for key, size in pairs:
        name = key.lower().removeprefix("cuda:")
        if not (name.isdigit() or name == "cpu"):
            raise KoGPTError(f"bad --max-memory device {key!r}: use a GPU index (0, 1, ...) or cpu")
        budget[int(name) if name.isdigit() else "cpu"] = size if isinstance(size, int) else parse_size(size)
    return budget


def detect_hardware(device: str, offload_dir: str | None = None, every_gpu: bool = True) -> Hardware:
    """Free memory of this machine's GPUs (when `device` is cuda), its RAM and the offload disk.

    Asking a GPU starts a CUDA context on it, so a one-device load asks GPU 0 alone (`every_gpu`).
    """
    from kogpt.placement import memory

    gpus: tuple[int, ...] = ()
    if device == "cuda" and torch.cuda.is_available():
        count = torch.cuda.device_count() if every_gpu else 1
        gpus = tuple(torch.cuda.mem_get_info(i)[0] for i in range(count))
    disk = 0
    if offload_dir:
        existing = Path(offload_dir).expanduser().absolute()
        while not existing.exists():
            existing = existing.parent
        disk = shutil.disk_usage(existing).free
    return Hardware(gpus, memory.free_memory("cpu"), disk)


def has_bitsandbytes() -> bool:
    """Whether a bitsandbytes that transformers accepts (0.46.1 or newer) is installed."""
    from transformers.utils import is_bitsandbytes_available

    return is_bitsandbytes_available()


def check_options(options: Options, device: str, gpu_count: int, planning: bool = False) -> None:
    """Refuse, with a one-line reason, combinations that cannot work on `device` (cpu or cuda).

    `planning` (for `--plan`, which loads nothing) needs neither bitsandbytes nor the GPUs that
    `--max-memory` names, so a plan can be made for another machine.
    """
    quantize = options.quantize
    if quantize not in QUANTIZE_CHOICES:
        raise KoGPTError(f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZE_CHOICES)}")
    if options.device_map is not None and options.device_map not in STRATEGIES:
        raise KoGPTError(f"unknown device map {options.device_map!r}: choose one of {', '.join(STRATEGIES)}")
    if quantize != "none" and options.offload_dir:
        raise KoGPTError(f"--quantize {quantize} weights cannot be offloaded to disk: drop --offload-dir or --quantize")
    if quantize != "none" and device == "cpu" and options.strategy:
        raise KoGPTError(f"--quantize {quantize} on the CPU keeps the whole model in RAM: drop --device-map/--max-memory")
    gpu_keys = sorted(key for key in options.max_memory or {} if isinstance(key, int))
    if gpu_keys and device == "cpu":
        raise KoGPTError(
            f"--max-memory gives memory to GPU {gpu_keys[0]} but the model runs on the CPU: "
            "use --device cuda, or give only cpu=SIZE"
        )
    if gpu_keys and gpu_keys[-1] >= gpu_count and not planning:
        raise KoGPTError(f"--max-memory names GPU {gpu_keys[-1]} but this machine has {gpu_count} GPU(s)")
    if options.offload_dir and Path(options.offload_dir).expanduser().is_file():
        raise KoGPTError(f"--offload-dir {options.offload_dir} is a file, not a directory")
    if not planning and quantize != "none" and device == "cuda" and not has_bitsandbytes():
        raise KoGPTError(f"--quantize {quantize} on a GPU needs bitsandbytes>=0.46.1: pip install kogpt[quant]")


def quantization_config(quantize: str, device: str, dtype: torch.dtype):
    """The `BitsAndBytesConfig` for a CUDA load with `quantize`; None when nothing is quantized at load."""
    if quantize == "none" or device != "cuda":
        return None
    from transformers import BitsAndBytesConfig

    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
    )


def load_kwargs(device_map: dict | None, device: torch.device, options: Options, dtype: torch.dtype) -> dict:
    """Keyword arguments for `from_pretrained` that place (and maybe quantize) the weights as planned."""
    kwargs: dict = {"device_map": str(device) if options.strategy is None else device_map}
    if options.offload_dir:
        Path(options.offload_dir).expanduser().mkdir(parents=True, exist_ok=True)
        kwargs["offload_folder"] = str(Path(options.offload_dir).expanduser())
    config = quantization_config(options.quantize, device.type, dtype)
    if config is not None:
        kwargs["quantization_config"] = config
    return kwargs


def input_device(model) -> torch.device:
    """Where input ids go: the device that runs the first block (never `meta`, for offloaded weights)."""
    device_map = getattr(model, "hf_device_map", None) or {}
    gpus = [device for device in device_map.values() if str(device) not in ("cpu", "disk")]
    if gpus:
        return torch.device("cuda", gpus[0]) if isinstance(gpus[0], int) else torch.device(gpus[0])
    return torch.device("cpu") if device_map else model.device
