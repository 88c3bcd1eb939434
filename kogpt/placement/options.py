"""Where the model goes: placement options, memory budgets, hardware figures and their checks.

`Options` holds what the user asked for (`--device-map`, `--max-memory`, `--offload-dir`,
`--quantize`); `Hardware` holds free memory figures, detected or injected by tests. The plan
itself (which block goes where) is made by `kogpt.plan` from both.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import torch

from kogpt.defaults import DEVICE_MAP_STRATEGIES as STRATEGIES
from kogpt.defaults import DEVICES, DTYPE_CHOICES, QUANTIZE_CHOICES
from kogpt.errors import KoGPTError

log = logging.getLogger(__name__)

UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
# ASCII only: `\d` would take ² or ٣, and IGNORECASE alone matches the Kelvin sign to k.
SIZE = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,20})?)\s*([a-z]{1,3})\s*$", re.IGNORECASE | re.ASCII)
MEMORY_FORMAT = "DEVICE=SIZE[,DEVICE=SIZE...] like 0=10GiB,1=10GiB,cpu=30GiB"
MAX_BYTES = 2**60  # 1 EiB: more than any machine, small enough for every integer type on the way
MAX_GPU_INDEX = 1023

MaxMemory = dict  # {0: bytes, 1: bytes, "cpu": bytes}: GPU indices and "cpu"


@dataclass(frozen=True)
class Options:
    """How to place the model. `device_map` None keeps the whole model on one device."""

    device_map: str | None = None
    max_memory: MaxMemory | None = None
    offload_dir: str | None = None
    quantize: str = "none"

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
        raise KoGPTError(f"bad memory size {_shown(text)}: use a number and a unit, like 10GiB or 500MB")
    size = int(Decimal(match.group(1)) * UNITS[match.group(2).lower()])
    if size > MAX_BYTES:
        raise KoGPTError(f"memory size {_shown(text)} is larger than any machine (at most 1 EiB)")
    return size


def _shown(value: object, limit: int = 40) -> str:
    """`repr(value)`, cut short: a message echoes what was typed, not a page of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def parse_max_memory(text: str | dict | None) -> MaxMemory | None:
    """Parse `0=10GiB,1=10GiB,cpu=30GiB` into {0: bytes, 1: bytes, "cpu": bytes}.

    A dict (the Python API) may give sizes as strings or as whole numbers of bytes; keys are GPU
    indices (0 or "0" or "cuda:0") or "cpu". Each device may be named once.
    """
    if text is None or text == "" or text == {}:
        return None
    if isinstance(text, str):
        pairs = []
        for item in text.split(","):
            key, sep, size = item.partition("=")
            if not sep or not key.strip() or not size.strip():
                raise KoGPTError(f"bad --max-memory entry {_shown(item.strip())}: expected {MEMORY_FORMAT}")
            pairs.append((key.strip(), size.strip()))
    elif isinstance(text, dict):
        pairs = list(text.items())
    else:
        raise KoGPTError(f"max_memory must be a string like {MEMORY_FORMAT.split(' like ')[1]} or a dict, not {_shown(text)}")
    budget: MaxMemory = {}
    for key, size in pairs:
        device = _memory_device(key)
        if device in budget:
            raise KoGPTError(f"--max-memory names {label(device)} twice ({_shown(key)}); give each device once")
        budget[device] = _memory_size(key, size)
    return budget


def label(device: int | str) -> str:
    """A --max-memory key as people write it: 0 -> cuda:0."""
    return f"cuda:{device}" if isinstance(device, int) else str(device)


def _memory_device(key: object) -> int | str:
    if isinstance(key, int) and not isinstance(key, bool):
        name = str(key)
    elif isinstance(key, str):
        name = key.strip().lower().removeprefix("cuda:")
    else:
        name = ""
    if name == "cpu":
        return "cpu"
    if name.isascii() and name.isdigit() and int(name) <= MAX_GPU_INDEX:
        return int(name)
    raise KoGPTError(f"bad --max-memory device {_shown(key)}: use a GPU index (0, 1, ...) or cpu")


def _memory_size(key: object, size: object) -> int:
    if isinstance(size, str):
        return parse_size(size)
    if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_BYTES:
        return size
    raise KoGPTError(
        f"bad --max-memory size {_shown(size)} for {_shown(key)}: use a size like '10GiB' or a whole number of bytes"
    )


DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}


def check_target(device: object, dtype: object) -> tuple[str, str]:
    """`device` and `dtype` as `load` takes them, checked, each failure a one-line KoGPTError.

    Returns ("cpu" | "cuda" | "cuda:N", one of DTYPE_CHOICES); `torch.device` and `torch.dtype`
    values are accepted too. "cuda" falls back to the CPU later when CUDA is missing; "cuda:N"
    names one GPU and is refused without it.
    """
    if isinstance(device, torch.device):
        device = str(device)
    kind, _, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isascii() and index.isdigit())):
        hint = f"; did you mean {device.lower()!r}?" if isinstance(device, str) and device.lower() in DEVICES else ""
        raise KoGPTError(f"unknown device {_shown(device)}: use 'cpu', 'cuda' or 'cuda:N'{hint}")
    if index:
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise KoGPTError(f"device {device!r} needs CUDA and {why}: use device='cpu'")
        if int(index) >= torch.cuda.device_count():
            raise KoGPTError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    if not isinstance(dtype, str) or dtype not in DTYPE_CHOICES:
        name = dtype.lower() if isinstance(dtype, str) else ""
        alias = DTYPE_ALIASES.get(name)
        hint = f"; did you mean {alias!r}?" if alias else ""
        if name.startswith(("int", "uint")):
            hint = "; int8 or int4 weights are quantize='int8' or 'int4'"
        raise KoGPTError(f"unknown dtype {_shown(dtype)}: choose {', '.join(DTYPE_CHOICES)}{hint}")
    return device, dtype


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
    if quantize == "int4" and device == "cpu":
        raise KoGPTError("--quantize int4 runs only on a CUDA GPU (bitsandbytes 4-bit); on the CPU use --quantize int8")
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
    if options.offload_dir:
        check_offload_dir(options.offload_dir)
    if not planning and quantize != "none" and device == "cuda" and not has_bitsandbytes():
        raise KoGPTError(f"--quantize {quantize} on a GPU needs bitsandbytes>=0.46.1: pip install kogpt[quant]")


def check_offload_dir(offload_dir: str | os.PathLike) -> None:
    """Refuse, in one line, an offload directory that cannot be created or written to.

    Checked the same way for `--plan` and for a load, whether or not anything will be offloaded:
    a probe directory is made in the nearest existing ancestor and removed at once.
    """
    if not isinstance(offload_dir, (str, os.PathLike)):
        raise KoGPTError(f"offload_dir must be a path, not {_shown(offload_dir)}")
    path = Path(offload_dir).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is" if existing == path else f"is under {existing}, which is"
        kind = "a file" if existing.is_file() else "a special file"
        raise KoGPTError(f"--offload-dir {offload_dir} {where} {kind}, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kogpt-probe-", dir=existing))
    except OSError as exc:
        raise KoGPTError(f"--offload-dir {offload_dir}: cannot write in {existing} ({exc.strerror or exc})") from None


@contextmanager
def removing_partial_offload(offload_dir: str | None):
    """Around a load into `offload_dir`: if it fails, remove what it wrote there, and the folders it made."""
    if not offload_dir:
        yield
        return
    path = Path(offload_dir).expanduser().absolute()
    made = []  # the folders that do not exist yet, deepest first
    while not path.exists() and path != path.parent:
        made.append(path)
        path = path.parent
    folder = Path(offload_dir).expanduser().absolute()
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        if folder.is_dir():
            for name in set(os.listdir(folder)) - before:
                entry = folder / name
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            log.debug("removed the partial offload files in %s", folder)
        for directory in made:
            try:
                directory.rmdir()
            except OSError:
                break
        raise


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
        folder = Path(options.offload_dir).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KoGPTError(f"cannot create --offload-dir {folder}: {exc.strerror or exc}") from None
        kwargs["offload_folder"] = str(folder)
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
