"""The hardware flags through `kogpt.cli.main`: one-line refusals, exit codes and `--plan` output."""

from __future__ import annotations

import pytest
import torch

from kogpt.cli.main import build_parser, main
from kogpt.errors import KoGPTError
from kogpt.loading import load as model_lib
from kogpt.loading.checkpoint import published_config
from kogpt.placement import decide as decide_lib
from kogpt.placement import options as placement
from kogpt.placement.options import Hardware, parse_max_memory

GiB = 1024**3


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(model_lib, "load_weights", refuse)


@pytest.fixture
def kogpt6b(tmp_path):
    """A directory with KoGPT-6B's config.json alone: enough for --plan, nothing to load."""
    config = published_config()
    config.save_pretrained(tmp_path / "kogpt6b")
    return str(tmp_path / "kogpt6b")


def fake_gpus(monkeypatch, *sizes: int) -> None:
    """Pretend this machine has CUDA GPUs with `sizes` bytes free and 32 GiB of RAM."""
    machine = Hardware(tuple(sizes), 32 * GiB, 100 * GiB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(sizes))
    monkeypatch.setattr(decide_lib, "detect_hardware", lambda *args, **kwargs: machine)


def refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--device", "cpu", "--quantize", "int8", "--offload-dir", "off"], "cannot be offloaded to disk"),
        (["--device", "cpu", "--max-memory", "0=4GiB"], "gives memory to GPU 0 but the model runs on the CPU"),
        (["--device", "cpu", "--max-memory", "cpu=30"], "bad memory size '30': use a number and a unit"),
        (["--device", "cpu", "--max-memory", "gpu0=1GiB"], "bad --max-memory device 'gpu0'"),
        (["--device", "cpu", "--max-memory", "cpu"], "bad --max-memory entry 'cpu'"),
        (["--model-parallel", "--device-map", "sequential"], "--model-parallel means --device-map balanced"),
    ],
)
def test_impossible_flags_are_refused_in_one_line(flags, reason, tiny_dir, capsys, no_loading):
    assert reason in refused(capsys, ["--model", str(tiny_dir), *flags])


def test_an_offload_dir_that_is_a_file_is_refused(tiny_dir, tmp_path, capsys, no_loading):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a directory" in refused(
        capsys, ["--model", str(tiny_dir), "--offload-dir", str(tmp_path / "file")]
    )


def test_gpu_quantization_without_bitsandbytes_names_the_extra(tiny_dir, monkeypatch, capsys, no_loading):
    fake_gpus(monkeypatch, 16 * GiB)
    monkeypatch.setattr(placement, "has_bitsandbytes", lambda: False)
    line = refused(capsys, ["--model", str(tiny_dir), "--device", "cuda", "--quantize", "int8"])
    assert line == 'error: --quantize int8 on a GPU needs bitsandbytes>=0.46.1: pip install ".[quant]" in the kogpt checkout'


def test_max_memory_for_a_missing_gpu_is_refused(tiny_dir, monkeypatch, capsys, no_loading):
    fake_gpus(monkeypatch, 16 * GiB)
    line = refused(capsys, ["--model", str(tiny_dir), "--device", "cuda", "--max-memory", "0=8GiB,1=8GiB"])
    assert "names GPU 1 but this machine has 1 GPU(s)" in line


def test_a_load_that_does_not_fit_is_refused_before_loading(tiny_dir, capsys, no_loading):
    line = refused(
        capsys, ["--model", str(tiny_dir), "--device", "cpu", "--dtype", "float32", "--max-memory", "cpu=200KB"]
    )
    # With a budget every block may go to disk, but the CPU still needs the KV cache (2 layers x 2 x
    # 128 tokens x 64 x 4 B = 128 KiB) and room for one block in transit (198,400 B): > 200,000 B.
    assert line == (
        "error: not enough memory on cpu for KoGPT in float32: it needs 321.8 KiB (weights 0.00 GiB, KV cache "
        "128.0 KiB at 128 tokens, offload buffer 193.8 KiB), 195.3 KiB is usable; no smaller setup fits either"
    )


def test_plan_prints_the_split_and_exits_without_weights(kogpt6b, tmp_path, capsys, no_loading):
    argv = ["--model", kogpt6b, "--plan", "--device", "cpu", "--max-memory", "cpu=8GiB", "--offload-dir", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    out = " ".join(out.split())  # table cells are padded, titles wrap at the table's width
    # 8 GiB - KV 0.875 GiB - room for lm_head (528,611,328 B) leaves 7,121,799,168 B:
    # wte + 16 blocks = 6,971,850,752 B stay in RAM; 12 blocks, ln_f and lm_head go to disk.
    assert "where each block goes (bfloat16)" in out
    assert "│ wte .. h.15 (17 blocks) │ cpu │ 6.49 GiB │" in out
    assert "│ h.16 .. lm_head (14 blocks) │ disk │ 4.99 GiB │" in out
    assert "│ cpu │ 6.49 GiB │ 0.88 GiB │ 0.49 GiB │ 7.86 GiB │ 8.00 GiB │" in out
    assert "│ disk │ 4.99 GiB │ - │ - │ 4.99 GiB │ - │" in out
    assert "fits: cpu 7.86 GiB, disk 4.99 GiB" in out
    assert err == ""


def test_plan_that_does_not_fit_says_what_would(kogpt6b, capsys):
    assert main(["--model", kogpt6b, "--plan", "--device", "cpu", "--max-memory", "cpu=8GiB"]) == 1  # scripts see it
    out = " ".join(capsys.readouterr().out.split())
    assert "not enough memory for KoGPT in bfloat16: 4.99 GiB of weights fit nowhere and no --offload-dir" in out
    assert "would fit: --quantize int8 (cpu 7.11 GiB); --quantize int4 (cpu 4.49 GiB); --offload-dir DIR" in out


def test_plan_for_two_gpus_with_the_original_flag(kogpt6b, monkeypatch, capsys):
    fake_gpus(monkeypatch, 8 * GiB, 8 * GiB)
    assert main(["--model", kogpt6b, "--plan", "--device", "cuda", "--model-parallel"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "where each block goes (float16)" in out
    assert "│ wte .. h.12 (14 blocks) │ cuda:0 │ 5.37 GiB │" in out
    assert "│ h.13 .. lm_head (17 blocks) │ cuda:1 │ 6.12 GiB │" in out
    assert "fits: cuda:0 5.77 GiB, cuda:1 6.59 GiB" in out


def test_plan_for_gpus_this_machine_lacks(kogpt6b, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--model", kogpt6b, "--plan", "--device", "cuda", "--max-memory", "0=5GiB,1=5GiB,2=5GiB,cpu=8GiB"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "│ cuda:2 │" in out and "│ cpu │" not in out and "fits: cuda:0" in out
    assert main(["--model", kogpt6b, "--device", "cuda", "--max-memory", "0=4GiB"]) == 1
    assert "gives memory to GPU 0 but the model runs on the CPU" in capsys.readouterr().err


def test_plan_for_int4_needs_no_bitsandbytes(kogpt6b, monkeypatch, capsys):
    fake_gpus(monkeypatch, 8 * GiB)
    monkeypatch.setattr(placement, "has_bitsandbytes", lambda: False)
    assert main(["--model", kogpt6b, "--plan", "--quantize", "int4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(int4 weights, float16 compute)" in out and "fits: cuda:0 4.49 GiB" in out


def test_help_explains_model_parallel():
    text = " ".join(build_parser().format_help().split())
    assert "--model-parallel same as --device-map balanced" in text


def test_parse_max_memory():
    assert parse_max_memory("0=10GiB, 1=1.5GB ,cpu=30GiB") == {0: 10 * GiB, 1: 1_500_000_000, "cpu": 30 * GiB}
    assert parse_max_memory({"cuda:0": "2GiB", "cpu": 5}) == {0: 2 * GiB, "cpu": 5}
    assert parse_max_memory(None) is None and parse_max_memory("") is None
    with pytest.raises(KoGPTError, match="use a GPU index"):
        parse_max_memory("disk=1GiB")


def test_plan_shows_the_dtype_the_load_really_uses(kogpt6b, monkeypatch, capsys):
    """--quantize int8 on the CPU computes in bfloat16 however much RAM there is, and --plan says so."""
    monkeypatch.setattr(decide_lib, "detect_hardware", lambda *args, **kwargs: Hardware((), 64 * GiB, 100 * GiB))
    assert main(["--model", kogpt6b, "--plan", "--device", "cpu", "--quantize", "int8"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "int8 weights, bfloat16 compute" in out and "compute bfloat16 on cpu" in out
    assert "float32" not in out
    assert "loader: streamed tensor by tensor" in out
