"""The converted-weights cache: hit, miss, stale source, corrupt and truncated files, interrupted
writes, read-only and full disks, and the `kogpt cache` command."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil

import pytest
import torch
from rich.console import Console

from kogpt import KoGPT
from kogpt.loading import cache

STATE = {"a.weight": torch.arange(12, dtype=torch.int8).reshape(3, 4), "b": torch.randn(5).bfloat16(), "c": torch.zeros(0)}


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def entry(source, fmt="int8", kernel="w8"):
    return cache.entry_for(source, [source / "model.safetensors"], fmt, kernel)


def test_a_stored_entry_is_mapped_back_unchanged(source):
    assert cache.open_entry(entry(source)) is None  # miss
    assert cache.store(entry(source), STATE)
    mapped = cache.open_entry(entry(source))
    assert mapped.keys() == STATE.keys()
    for name, tensor in STATE.items():
        assert mapped[name].dtype == tensor.dtype and torch.equal(mapped[name], tensor)
    assert cache.entry_for(source, [source / "model.safetensors"], "int8", "w8").path.parent == cache.directory()


def test_format_kernel_and_source_identity_make_different_entries(source):
    base = entry(source)
    assert entry(source, "int4", "w4g32").path != base.path
    assert entry(source, "int8", "w8a8").path != base.path
    os.utime(source / "model.safetensors", ns=(1, 1))  # the checkpoint was replaced: another mtime
    assert entry(source).path != base.path


def test_a_stale_entry_is_not_used(source):
    assert cache.store(entry(source), STATE)
    (source / "model.safetensors").write_bytes(b"other weights")  # new size and mtime
    assert cache.open_entry(entry(source)) is None


def test_a_file_carrying_another_key_is_deleted_not_used(source, caplog):
    wrong = cache.Entry(entry(source).path, '{"other": 1}')
    assert cache.store(wrong, STATE)
    with caplog.at_level(logging.WARNING):
        assert cache.open_entry(entry(source)) is None
    assert "made for other weights" in caplog.text and not entry(source).path.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"\xff" * 8 + data[8:],  # a header length past the end
        lambda data: data[:8] + b"!" + data[9:],  # a header that is not JSON
        lambda data: data + b"\0" * 16,  # longer than its header says
        lambda data: data[:4],  # less than a header
    ],
)
def test_a_corrupt_or_partial_file_is_deleted_and_rebuilt(source, damage, caplog):
    assert cache.store(entry(source), STATE)
    path = entry(source).path
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING):
        assert cache.open_entry(entry(source)) is None
    assert "rebuilding it" in caplog.text and not path.exists()
    assert cache.store(entry(source), STATE) and cache.open_entry(entry(source)) is not None


def interrupted_writer(exception):
    """A `write_file` that writes half a file, then fails as a full disk or a Ctrl-C would."""

    def write_file(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x10\0\0\0\0\0\0\0{\"half")
        raise exception

    return write_file


def test_an_interrupted_write_leaves_nothing_behind(source, monkeypatch):
    monkeypatch.setattr("kogpt.loading.cache.write_file", interrupted_writer(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        cache.store(entry(source), STATE)
    assert cache.entries() == [] and cache.open_entry(entry(source)) is None


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_falls_back_to_memory_with_one_line(source, monkeypatch, caplog, code):
    monkeypatch.setattr("kogpt.loading.cache.write_file", interrupted_writer(OSError(code, os.strerror(code))))
    with caplog.at_level(logging.WARNING):
        assert cache.store(entry(source), STATE) is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and os.strerror(code) in lines[0] and "used from memory" in lines[0]
    assert cache.entries() == []


def test_a_cache_directory_that_cannot_exist_falls_back(source, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("KOGPT_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    assert cache.store(entry(source), STATE) is False


def test_list_and_clear(source):
    assert cache.store(entry(source), STATE) and cache.store(entry(source, "int4", "w4g32"), STATE)
    left = cache.directory() / f".{entry(source).name}.123.partial"
    left.write_bytes(entry(source).path.read_bytes()[:20])  # cut off in its header
    assert len(cache.entries()) == 3
    files, total, failures = cache.clear()
    assert files == 3 and total > 0 and failures == [] and cache.entries() == []


def loads(caplog, path, **kwargs):
    with caplog.at_level(logging.INFO, logger="kogpt"):
        caplog.clear()
        gpt = KoGPT.load(str(path), device="cpu", **kwargs)
        return gpt, caplog.text


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_the_second_load_maps_the_cache_and_generates_the_same(tiny_bin_dir, caplog, quantize):
    first, log_first = loads(caplog, tiny_bin_dir, quantize=quantize)
    assert "cached the converted weights" in log_first
    second, log_second = loads(caplog, tiny_bin_dir, quantize=quantize)  # the remembered kernels, per phase
    assert "mapped from the converted-weights cache" in log_second
    assert second.loaded.decision.phases == first.loaded.decision.phases
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], tensor), name
    prompt = "인간처럼 생각하고,"
    assert second.generate(prompt, temperature=0, max_new_tokens=8) == first.generate(prompt, temperature=0, max_new_tokens=8)


def test_a_bfloat16_load_is_cached_and_no_cache_skips_it(tiny_bin_dir, caplog):
    _, text = loads(caplog, tiny_bin_dir, dtype="bfloat16", cache=False)
    assert "cache" not in text and cache.entries() == []
    loads(caplog, tiny_bin_dir, dtype="bfloat16")
    assert len(cache.entries()) == 1
    _, text = loads(caplog, tiny_bin_dir, dtype="bfloat16")
    assert "mapped from the converted-weights cache" in text


def test_a_load_on_a_full_disk_still_runs(tiny_bin_dir, caplog, monkeypatch):
    monkeypatch.setattr("kogpt.loading.cache.write_file", interrupted_writer(OSError(errno.ENOSPC, "No space left on device")))
    gpt, text = loads(caplog, tiny_bin_dir, quantize="int8")
    assert "No space left on device" in text and gpt.generate("인간", temperature=0, max_new_tokens=4) is not None


def test_the_cache_command_lists_and_clears(source, monkeypatch):
    from kogpt.cli import cache as command
    from kogpt.cli.main import main

    assert cache.store(entry(source), STATE)
    out = io.StringIO()
    monkeypatch.setattr("kogpt.cli.render.Renderer", lambda: type("R", (), {"out": Console(file=out, width=200)})())
    assert main(["cache", "list"]) == 0
    assert entry(source).path.name in out.getvalue() and "1 file(s)" in out.getvalue() and "free" in out.getvalue()
    assert main(["cache", "clear"]) == 0
    assert "removed 1 file(s)" in out.getvalue() and cache.entries() == []
    with pytest.raises(SystemExit):
        command.build_parser().parse_args(["prune"])
    shutil.rmtree(cache.directory())
    assert main(["cache", "list"]) == 0 and "0 file(s)" in out.getvalue()


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_mapped_tensors_start_on_64_byte_boundaries(tiny_bin_dir, caplog, quantize):
    """safetensors packs tensors back to back; the CPU kernels may load them with aligned vector
    instructions, so every tensor the cache hands out starts on a 64-byte boundary."""
    first, _ = loads(caplog, tiny_bin_dir, quantize=quantize)
    second, text = loads(caplog, tiny_bin_dir, quantize=quantize)
    assert "mapped from the converted-weights cache" in text
    unaligned = [name for name, t in second.model.state_dict().items() if t.numel() and t.data_ptr() % 64]
    assert unaligned == []


def test_the_written_file_is_safetensors_with_every_tensor_on_a_64_byte_boundary(source):
    """safetensors' own writer pads its header to 8 bytes only, so on a 6B model most tensors would
    start unaligned and be copied at load; ours pads the header and puts odd-sized tensors last."""
    from safetensors.torch import load_file

    state = {"odd": torch.arange(3, dtype=torch.int8), "w": torch.randn(4, 32).bfloat16(), "b": torch.ones(16), "q": torch.ones(64, dtype=torch.uint8)}
    path = entry(source).path
    for extra in range(8):  # headers of every length modulo 8 (the key's length varies with the path)
        assert cache.store(cache.Entry(path, entry(source).key + "x" * extra), state)
        header, start = cache.read_header(path)
        assert start % 64 == 0
        for name, tensor in state.items():
            begin = header[name]["data_offsets"][0]
            assert (start + begin) % 64 == 0 or tensor.nbytes % 64, name
    assert header["odd"]["data_offsets"][1] == path.stat().st_size - start  # the odd-sized one is last
    read = load_file(str(path))  # still a file safetensors reads
    assert read.keys() == state.keys() and all(torch.equal(read[n], t) for n, t in state.items())


def test_after_caching_the_source_files_leave_the_page_cache(tiny_bin_dir, caplog, monkeypatch):
    """Once converted and cached, the source is not read again: its pages would only compete with
    the mapped cache file. Without a cache entry written, nothing is dropped."""
    dropped = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: dropped.append((os.fstat(fd).st_size, advice)))
    real_writer = cache.write_file
    monkeypatch.setattr(cache, "write_file", interrupted_writer(OSError(errno.ENOSPC, "No space left on device")))
    loads(caplog, tiny_bin_dir, quantize="int8")
    assert dropped == []
    monkeypatch.setattr(cache, "write_file", real_writer)
    loads(caplog, tiny_bin_dir, quantize="int8")
    assert dropped == [((tiny_bin_dir / "pytorch_model.bin").stat().st_size, os.POSIX_FADV_DONTNEED)]
    loads(caplog, tiny_bin_dir, quantize="int8")  # mapped from the cache: the source is not touched
    assert len(dropped) == 1


def mapped_files() -> str:
    return open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_no_mmap_reads_the_cache_into_memory_and_generates_the_same(tiny_bin_dir, caplog, quantize):
    """`mmap=False` (`--no-mmap`): the same tensors, held in anonymous memory the OS cannot page
    out, instead of a mapping of the cache file."""
    first, _ = loads(caplog, tiny_bin_dir, quantize=quantize)
    entry = cache.entries()[0][0]
    mapped, text = loads(caplog, tiny_bin_dir, quantize=quantize)
    assert "mapped from the converted-weights cache" in text
    if mapped_files():
        assert str(entry) in mapped_files()
    del mapped
    import gc

    gc.collect()
    read, text = loads(caplog, tiny_bin_dir, quantize=quantize, mmap=False)
    assert "read into memory from the converted-weights cache" in text
    if mapped_files():
        assert str(entry) not in mapped_files()
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(read.model.state_dict()[name], tensor), name
        assert not tensor.numel() or read.model.state_dict()[name].data_ptr() % 64 == 0, name
    prompt = "인간처럼 생각하고,"
    assert read.generate(prompt, temperature=0, max_new_tokens=8) == first.generate(prompt, temperature=0, max_new_tokens=8)



def test_the_cpu_flags_reach_the_load_options():
    import argparse

    from kogpt.cli import flags

    parser = argparse.ArgumentParser()
    flags.add_model_arguments(parser)
    plain = flags.options_from_args(parser.parse_args([]))
    assert plain.cache and plain.mmap
    off = flags.options_from_args(parser.parse_args(["--no-cache", "--no-mmap", "--threads", "1"]))
    assert not off.cache and not off.mmap and off.threads == 1


def test_a_tensor_type_the_cache_cannot_hold_falls_back_to_memory_with_one_line(source, caplog):
    with caplog.at_level(logging.WARNING):
        assert cache.store(entry(source), {**STATE, "odd": torch.zeros(2, dtype=torch.complex64)}) is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "complex64 tensors are not supported" in lines[0] and cache.entries() == []
