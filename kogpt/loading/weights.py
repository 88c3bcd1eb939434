"""Load a checkpoint into an empty model one tensor at a time, so peak memory is the model plus one tensor.

transformers' `from_pretrained` memory-maps a `pytorch_model.bin` and keeps every page it reads
mapped until loading ends: casting the 12.3 GB float16 KoGPT file to bfloat16 on the CPU peaked
at 21.7 GiB resident. Here each tensor is cast (or quantized) straight from the mapping, and its
pages are released from the process before the next one is read.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

SINGLE_AND_INDEX = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
# setter(module, attribute name, tensor as read): store the tensor in the module; return False to decline.
Setter = Callable[[nn.Module, str, torch.Tensor], bool]


def load_streaming(
    path: Path,
    config,
    dtype: torch.dtype,
    prepare: Callable[[nn.Module], None] | None = None,
    setter: Setter | None = None,
    tensors: Iterable[tuple[str, torch.Tensor]] | None = None,
    **model_kwargs,
) -> nn.Module:
    """Build the model from `config` on the meta device and fill it from the weight files in `path`.

    `prepare(model)` may swap modules (for example quantized Linears) before filling; `setter` then
    gets the first say on every tensor. Everything else is cast to `dtype`. `tensors` replaces the
    weight files with tensors already converted (the converted-weights cache): they are used as
    they are, without a copy.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, GenerationConfig

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **model_kwargs)
    if prepare is not None:
        prepare(model)
    as_is = tensors is not None
    for name, tensor in tensors if as_is else read_tensors(path):
        owner, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            log.debug("skipping %s: not part of the model", name)
            continue
        if not as_is and setter is not None and setter(module, attr, tensor):
            continue
        # Only floating-point tensors take the compute dtype; integer ones (ids, masks) keep theirs.
        # Cached tensors are already converted: they are used as they are, mapped from the file.
        if as_is:
            value = tensor
        else:
            value = tensor.to(dtype, copy=True) if tensor.is_floating_point() else tensor.clone()
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(value, requires_grad=False)
        elif attr in module._buffers:
            module._buffers[attr] = value
        else:
            log.debug("skipping %s: not part of the model", name)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        raise ValueError(f"the checkpoint has no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) from the weight files in `path`.

    A tensor may be a view of a memory-mapped file that is released once the caller asks for the
    next one: copy what you keep.
    """
    for file in weight_files(path):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    yield name, handle.get_tensor(name)
        else:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            for name in list(state):
                mapped = state.pop(name)
                yield name, mapped
                release(mapped)


def weight_files(path: Path) -> list[Path]:
    for single, index in SINGLE_AND_INDEX:
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            shards = json.loads((path / index).read_text())["weight_map"].values()
            return [path / shard for shard in sorted(set(shards))]
    raise FileNotFoundError(f"no weight files in {path}")


def release(mapped: torch.Tensor) -> None:
    """Drop the pages of a memory-mapped tensor from this process; they stay in the page cache.
    Only for a tensor mapped from a file: anonymous pages dropped would read back as zeros.

    Without this every page read stays mapped, and the resident size grows by the file's size.
    """
    start = mapped.data_ptr() & ~(mmap.PAGESIZE - 1)
    end = mapped.data_ptr() + mapped.nbytes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED
    except (OSError, AttributeError, TypeError):  # no POSIX madvise (Windows): only the peak is higher
        pass


def drop_from_page_cache(files: list[Path]) -> None:
    """Tell the kernel the page cache may let go of `files` (POSIX_FADV_DONTNEED).

    Once a checkpoint is converted and cached, its source files are not read again; their 12 GB
    in the page cache would only compete with the mapped cache file, whose pages a decode step
    streams, and under that pressure the kernel evicts mapped pages mid-generation.
    """
    if not hasattr(os, "posix_fadvise"):  # Windows, macOS: nothing to say
        return
    for file in files:
        try:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("could not drop %s from the page cache: %s", file, exc)
