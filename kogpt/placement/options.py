"""Where the model goes: placement options, memory budgets, hardware figures and their checks.

`Options` holds what the user asked for (the model, device and dtype, `--device-map`,
`--max-memory`, `--offload-dir`, `--quantize`); `Hardware` holds free memory figures, detected or
injected by tests. `kogpt.placement.decide` makes the whole load decision from both.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from kogpt.defaults import (
    DEFAULT_MODEL,
    DEFAULT_REVISION,
    DEVICES,
    DTYPE_CHOICES,
    QUANTIZE_CHOICES,
)
from kogpt.defaults import DEVICE_MAP_STRATEGIES as STRATEGIES
from kogpt.errors import KoGPTError
from kogpt.placement.budget import (  # noqa: F401 (re-exported)
    MAX_BYTES,
    MaxMemory,
    parse_max_memory,
    parse_size,
    shown,
)

log = logging.getLogger(__name__)


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
    mmap: bool = True  # map the cache file (False: read it into memory, which the OS cannot page out)

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


MAX_THREADS = 1024  # torch takes a C int; far more threads than any CPU has is a typo
DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}


def check_arguments(options: Options) -> Options:
    """`options` with its model, device, dtype and offload_dir checked before anything is read.

    Each failure is a one-line KoGPTError; a `Path` model, a `torch.device` or a `torch.dtype`
    come back as the strings the rest of the load expects.
    """
    model, offload_dir = options.model, options.offload_dir
    if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
        raise KoGPTError(f"model must be a hub repo id or a directory, not {shown(model)}")
    if offload_dir is not None and not isinstance(offload_dir, (str, os.PathLike)):
        raise KoGPTError(f"offload_dir must be a path, not {shown(offload_dir)}")
    threads = options.threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise KoGPTError(f"threads must be a whole number of 1 or more, not {shown(threads)}")
    if threads is not None and threads > MAX_THREADS:
        raise KoGPTError(f"threads must be at most {MAX_THREADS} (this machine has {os.cpu_count()} CPUs), not {threads}")
    if threads is not None and threads > (os.cpu_count() or 1):
        log.warning("%d threads on %d CPUs: threads beyond the CPUs compete for them and run slower", threads, os.cpu_count())
    if options.kernel is not None and not isinstance(options.kernel, str):
        raise KoGPTError(f"kernel must be a kernel's name like 'w8' or 'w4g128', not {shown(options.kernel)}")
    device, dtype = check_target(options.device, options.dtype)
    return replace(options, model=os.fspath(model), device=device, dtype=dtype)


def check_target(device: object, dtype: object) -> tuple[str, str]:
    """`device` and `dtype` as `load` takes them, checked, each failure a one-line KoGPTError.

    Returns ("cpu" | "cuda", one of DTYPE_CHOICES); `torch.device` and `torch.dtype` values are
    accepted too. "cuda" falls back to the CPU later when CUDA is missing; "cuda:N" names one GPU
    and is refused without CUDA. A one-device load runs on GPU 0, so "cuda:0" is "cuda" and
    another index is refused with the way to get it.
    """
    if isinstance(device, torch.device):
        device = str(device)
    kind, _, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isascii() and index.isdigit())):
        hint = f"; did you mean {device.lower()!r}?" if isinstance(device, str) and device.lower() in DEVICES else ""
        raise KoGPTError(f"unknown device {shown(device)}: use 'cpu', 'cuda' or 'cuda:N'{hint}")
    if index:
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise KoGPTError(f"device {device!r} needs CUDA and {why}: use device='cpu'")
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise KoGPTError(f"device {device!r}: this machine has {count} GPU(s)")
        if int(index) > 0:
            raise KoGPTError(
                f"device {device!r}: one-device loads run on GPU 0; set CUDA_VISIBLE_DEVICES={int(index)} "
                "to make that GPU the first, or split the model with device_map"
            )
        device = "cuda"
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    if not isinstance(dtype, str) or dtype not in DTYPE_CHOICES:
        name = dtype.lower() if isinstance(dtype, str) else ""
        alias = DTYPE_ALIASES.get(name)
        hint = f"; did you mean {alias!r}?" if alias else ""
        if name.startswith(("int", "uint")):
            hint = "; int8 or int4 weights are quantize='int8' or 'int4'"
        raise KoGPTError(f"unknown dtype {shown(dtype)}: choose {', '.join(DTYPE_CHOICES)}{hint}")
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
        raise KoGPTError(f"--quantize {quantize} on a GPU needs bitsandbytes>=0.46.1: pip install \".[quant]\" in the kogpt checkout")


def check_offload_dir(offload_dir: str | os.PathLike) -> None:
    """Refuse, in one line, an offload directory that cannot be created or written to.

    Checked the same way for `--plan` and for a load, whether or not anything will be offloaded:
    a probe directory is made in the nearest existing ancestor and removed at once.
    """
    if not isinstance(offload_dir, (str, os.PathLike)):
        raise KoGPTError(f"offload_dir must be a path, not {shown(offload_dir)}")
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
