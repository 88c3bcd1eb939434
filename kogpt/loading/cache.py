"""The converted-weights cache: a model's weights as the CPU kernels want them, mapped instead of rebuilt.

The first load of a (checkpoint, format, kernel layout) casts or quantizes every weight; the result
is written as one safetensors file under the user cache directory, and later loads map that file.
An entry's name carries a key made of the source files' identity (path, size, modification time),
the format, the kernel's packed layout, torch's version (packed int4 layouts are torch's own) and
`VERSION`; the same key is stored in the file's header and checked again on load. Files are
written to a temporary name and renamed into place, so an interrupted write leaves nothing that a
load would use; a file whose header or size does not add up is deleted and rebuilt. A cache that
cannot be written (read-only, disk full) only costs the speed-up: the model is converted in memory
and used as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import torch

from kogpt.loading.cachedir import SUFFIX, clear, directory, entries, not_a_directory, remove, size_text  # noqa: F401

log = logging.getLogger(__name__)

VERSION = 1
DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
}  # fmt: skip
NAMES = {dtype: name for name, dtype in DTYPES.items()}


class CacheError(Exception):
    """A cache file that cannot be used: truncated, corrupt, or made for other weights."""


def source_identity(files: list[Path]) -> list[list]:
    """[path, size, mtime in ns] of each source file: a changed or replaced file changes the key."""
    out = []
    for file in files:
        stat = file.stat()
        out.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


@dataclass(frozen=True)
class Entry:
    """One cache file: where it is and the key it must carry."""

    path: Path
    key: str  # JSON: sources, format, kernel, torch version, cache version

    @property
    def name(self) -> str:
        return self.path.name


def entry_for(source_dir: Path, files: list[Path], fmt: str, kernel: str, root: Path | None = None) -> Entry:
    """The cache entry for the weight `files` of the checkpoint in `source_dir`, converted to `fmt`/`kernel`."""
    key = json.dumps(
        {"sources": source_identity(files), "format": fmt, "kernel": kernel, "torch": torch.__version__, "version": VERSION},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in source_dir.resolve().name)[:40] or "model"
    return Entry((root or directory()) / f"{stem}-{fmt}-{kernel}-{digest}{SUFFIX}", key)


def read_header(path: Path) -> tuple[dict, int]:
    """The safetensors header of `path` and where its data starts; CacheError when it does not add up."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise CacheError(f"{path.name} is truncated")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, 100 << 20):
            raise CacheError(f"{path.name} has a corrupt header")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CacheError(f"{path.name} has a corrupt header") from exc
    if not isinstance(header, dict):
        raise CacheError(f"{path.name} has a corrupt header")
    start = 8 + length
    end = check_ranges(header, path.name)
    if start + end != size:
        raise CacheError(f"{path.name} is {size} bytes, its header describes {start + end}")
    return header, start


def check_ranges(header: dict, name: str) -> int:
    """Check that every tensor's dtype, shape and byte range agree and that the ranges tile the
    data without gaps or overlaps; return the data's length."""
    spans = []
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
            ok = all(type(n) is int and n >= 0 for n in (*shape, begin, end))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or end - begin != dtype.itemsize * _count(shape):
            raise CacheError(f"{name}: the header's entry for {tensor} is damaged (shape, type and bytes disagree)")
        spans.append((begin, end))
    at = 0
    for begin, end in sorted(spans):
        if begin != at:
            raise CacheError(f"{name}: the header's byte ranges overlap or leave gaps")
        at = end
    return at


def _count(shape: list[int]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def check_expected(header: dict, expected: dict[str, tuple[list[int], torch.dtype]], name: str) -> None:
    """Check that the file holds exactly the tensors the model expects, each of its shape and type."""
    held = {tensor for tensor in header if tensor != "__metadata__"}
    if held != set(expected):
        odd = sorted(held ^ set(expected))
        raise CacheError(f"{name} holds other tensors than the model's ({', '.join(odd[:3])})")
    for tensor, (shape, dtype) in expected.items():
        info = header[tensor]
        if list(info["shape"]) != list(shape) or DTYPES[info["dtype"]] != dtype:
            raise CacheError(f"{name}: {tensor} is {info['dtype']} {info['shape']}, the model expects {NAMES[dtype]} {list(shape)}")


def open_entry(entry: Entry, mmap: bool = True, expected: Callable[[], dict] | None = None) -> dict[str, torch.Tensor] | None:
    """The entry's tensors, mapped from the file (no copy) or, with `mmap` False, read into
    memory; None on a miss. `expected()` gives {name: (shape, dtype)} of the model's tensors.

    A file that is corrupt, truncated, made for other source files, or whose tensors are not the
    model's (a damaged header) is deleted, and so rebuilt. Nothing is mapped before it is checked.
    """
    if not entry.path.is_file():
        return None
    try:
        header, start = read_header(entry.path)
        metadata = header.get("__metadata__")
        if not isinstance(metadata, dict) or metadata.get("kogpt") != entry.key:
            raise CacheError(f"{entry.name} was made for other weights")
        if expected is not None:
            check_expected(header, expected(), entry.name)
        return map_tensors(entry.path, header, start, map_file if mmap else read_file)
    except (CacheError, KeyError, TypeError, ValueError, OSError) as exc:
        log.warning("ignoring the converted-weights cache entry %s: %s; rebuilding it", entry.path, exc)
        remove(entry.path)
        return None


# torch's CPU kernels (the int8 and int4 matmuls among them) may use aligned vector loads: a tensor
# that starts off a 64-byte boundary crashed `_weight_int8pack_mm` (a segmentation fault in CI).
# `write_file` lays tensors out on such boundaries; `map_tensors` copies any that is not.
ALIGNMENT = 64


def map_file(path: Path) -> mmap.mmap:
    """A private (copy-on-write) mapping of the file, asking for huge pages: pages come in from the
    page cache as they are used, and a start costs no read (the default; `benchmarks/RESULTS.md`)."""
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    advise_huge_pages(mapping)  # fewer TLB misses where the page cache holds large folios: ~5% on an int8 step
    return mapping


def read_file(path: Path) -> mmap.mmap:
    """The whole file in private anonymous memory (`--no-mmap`), in huge pages where allowed.

    Mapped file pages can be paged out while the model runs (memory pressure, or a VM's proactive
    reclaim: the benchmark VM's DAMON `pageout` scheme slowed mapped 6B decoding up to 5x), and
    anonymous memory without swap cannot. The price is one read of the file at every start.
    """
    size = path.stat().st_size
    if hasattr(mmap, "MAP_PRIVATE"):  # private: a shared anonymous mapping is shmem, which gets no huge pages
        memory = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:  # Windows
        memory = mmap.mmap(-1, max(size, 1))
    advise_huge_pages(memory)
    view = memoryview(memory)
    try:
        with open(path, "rb") as handle:
            done = 0
            while done < size:
                got = handle.readinto(view[done : min(size, done + (64 << 20))])
                if not got:
                    raise CacheError(f"{path.name} ended early")
                done += got
    finally:
        view.release()
    return memory


def advise_huge_pages(memory: mmap.mmap) -> None:
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux
        try:
            memory.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass


def map_tensors(path: Path, header: dict, start: int, source=map_file) -> dict[str, torch.Tensor]:
    """Tensors viewing the file's bytes as `source` (`map_file` or `read_file`) holds them: no copy per tensor."""
    mapping = source(path)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = (end - begin) // dtype.itemsize
        flat = torch.frombuffer(mapping, dtype=dtype, count=count, offset=start + begin) if count else torch.empty(0, dtype=dtype)
        if (start + begin) % ALIGNMENT:  # written by another tool, or after an odd-sized tensor: copy it
            flat = flat.clone()
        tensors[name] = flat.view(info["shape"])
    return tensors


def write_file(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
    """A safetensors file whose tensors start on `ALIGNMENT`-byte boundaries, so that none needs copying.

    The format packs tensors back to back after the header and allows no holes, and
    `safetensors.torch.save_file` pads the header to 8 bytes only. Here the header is padded with
    spaces (which the format allows) so the data starts on a boundary, and the tensors whose size is
    a multiple of the boundary come first: in a GPT-J model that is every tensor.
    """
    order = sorted(tensors, key=lambda name: (tensors[name].nbytes % ALIGNMENT != 0, name))
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in NAMES:  # a RuntimeError: `store` falls back to the weights in memory
            raise RuntimeError(f"cannot cache {name}: {str(tensor.dtype).removeprefix('torch.')} tensors are not supported")
        header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    with open(filename, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for name in order:
            if tensors[name].numel():
                handle.write(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().data)
        handle.flush()
        os.fsync(handle.fileno())


def store(entry: Entry, state: dict[str, torch.Tensor]) -> bool:
    """Write `state` as the entry's file, atomically; False (and one log line) when it cannot be written."""
    temporary = entry.path.with_name(f".{entry.name}.{os.getpid()}.partial")
    try:
        blocked = not_a_directory(entry.path.parent)
        if blocked is not None:  # KOGPT_CACHE_DIR names a file: say so (mkdir would say "File exists")
            raise blocked
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        write_file(state, str(temporary), metadata={"kogpt": entry.key})
        os.replace(temporary, entry.path)
    except (OSError, RuntimeError) as exc:  # read-only directory, disk full, ...: convert in memory
        remove(temporary)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        log.warning("not caching the converted weights in %s (%s); they are used from memory this time", entry.path.parent, reason)
        return False
    except BaseException:  # Ctrl-C mid-write: nothing half-written stays behind
        remove(temporary)
        raise
    log.info("cached the converted weights in %s (%s)", entry.path, size_text(entry.path.stat().st_size))
    return True
