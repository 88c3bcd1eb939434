"""The converted-weights cache against a hostile or careless world: files that are not kogpt's
(item 14), damaged headers (19), read-only folders and odd choices files (20), one entry per
16-bit layout (23), a cache path that is a file (26)."""

from __future__ import annotations

import io
import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

from kogpt import KoGPT
from kogpt.loading import cache, choices

STATE = {"a.weight": torch.arange(12, dtype=torch.int8).reshape(3, 4), "b": torch.randn(5).bfloat16()}


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def entry(source, fmt="int8", kernel="w8"):
    return cache.entry_for(source, [source / "model.safetensors"], fmt, kernel)


def run_main(monkeypatch, *argv):
    from kogpt.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    renderer = type("R", (), {"out": Console(file=out, width=300), "err": Console(file=err, width=300),
                              "error": lambda self, m: err.write(m + "\n")})()
    monkeypatch.setattr("kogpt.cli.render.Renderer", lambda: renderer)
    return main(list(argv)), out.getvalue(), err.getvalue()


def test_clear_and_list_leave_files_kogpt_did_not_write(source, tmp_path, monkeypatch):
    models = tmp_path / "models"  # "the cache is where my weights are"
    models.mkdir()
    monkeypatch.setenv("KOGPT_CACHE_DIR", str(models))
    save_file({"w": torch.zeros(2)}, str(models / "model.safetensors"))
    save_file({"w": torch.zeros(2)}, str(models / "ckpt-int8-w8-0123456789abcdef.safetensors"))  # our name, not our header
    (models / "download.partial").write_bytes(b"half a file")
    (models / ".x-int8-w8-0123456789abcdef.safetensors.1.partial").write_bytes(b"\x10\0\0\0\0\0\0\0{\"other\"")
    assert cache.store(entry(source), STATE)
    theirs = sorted(p.name for p in models.iterdir() if p.name != entry(source).name)
    rc, out, _ = run_main(monkeypatch, "cache", "list")
    assert rc == 0 and entry(source).name in out and "1 file(s)" in out
    assert not any(name in out for name in theirs)
    rc, out, _ = run_main(monkeypatch, "cache", "clear")
    assert rc == 0 and "removed 1 file(s)" in out
    assert sorted(p.name for p in models.iterdir()) == theirs


def test_clear_on_a_read_only_folder_says_so_and_fails(source, monkeypatch):
    assert cache.store(entry(source), STATE)
    real = Path.unlink

    def read_only(self, *args, **kwargs):
        if self.parent == cache.directory():
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", read_only)
    rc, out, err = run_main(monkeypatch, "cache", "clear")
    assert rc == 1 and "removed 0 file(s)" in out
    assert "could not remove 1 file(s)" in err and "Permission denied" in err and "Traceback" not in err
    assert entry(source).path.exists()


def test_clear_leaves_a_kernels_json_directory_alone(monkeypatch):
    choices.choices_file().mkdir(parents=True)
    rc, out, err = run_main(monkeypatch, "cache", "clear")
    assert rc == 0 and choices.choices_file().is_dir() and not err


def test_a_cache_dir_that_is_a_file_says_not_a_directory(source, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("KOGPT_CACHE_DIR", str(tmp_path / "a-file"))
    with caplog.at_level(logging.WARNING):
        assert cache.store(entry(source), STATE) is False
    assert "not a directory" in caplog.text and "File exists" not in caplog.text
    rc, out, _ = run_main(monkeypatch, "cache", "list")
    assert rc == 0 and "not a directory" in out


def rewrite_header(path: Path, change) -> None:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= length
    path.write_bytes(data[:8] + text + b" " * (length - len(text)) + data[8 + length :])


def reshaped(same_count: bool):
    def change(header):
        name = next(n for n, i in header.items() if n != "__metadata__" and len(i["shape"]) == 2 and i["shape"][1] % 2 == 0)
        rows, cols = header[name]["shape"]
        header[name]["shape"] = [rows * 2, cols // 2] if same_count else [rows + 1, cols]

    return change


@pytest.mark.parametrize("same_count", [True, False], ids=["same-element-count", "disagrees-with-bytes"])
def test_a_damaged_header_is_rebuilt_not_used(tiny_bin_dir, caplog, same_count):
    caplog.set_level(logging.INFO, logger="kogpt")
    gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8")
    expected = gpt.generate("인간", temperature=0, max_new_tokens=6)
    written = cache.entries()
    assert len(written) == 1
    rewrite_header(written[0][0], reshaped(same_count))
    caplog.clear()
    again = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8")
    assert "rebuilding it" in caplog.text
    assert again.generate("인간", temperature=0, max_new_tokens=6) == expected
    third = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8")  # the rebuilt file is good
    assert third.generate("인간", temperature=0, max_new_tokens=6) == expected


def test_one_cache_entry_per_16bit_layout(tiny_bin_dir):
    outputs = set()
    for kwargs in ({"dtype": "bfloat16"}, {"dtype": "bfloat16", "kernel": "bf16"}, {"kernel": "bf16mv", "dtype": "bfloat16"}):
        gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", **kwargs)
        outputs.add(gpt.generate("인간", temperature=0, max_new_tokens=4))
    names = [p.name for p, _ in cache.entries()]
    assert len(names) == 1 and "-16bit-bf16-" in names[0]
    KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="float16")
    KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="float16", kernel="fp16")
    assert len(cache.entries()) == 2
