"""Hardware flags and the Python API against hostile input (issue 10, section 9): one line each,
exit code 1, nothing loaded, nothing left behind."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kogpt import KoGPT
from kogpt.cli.main import main
from kogpt.cli.scripting import parse_prompts_file
from kogpt.errors import KoGPTError
from kogpt.loading import load as model_lib
from kogpt.placement.budget import MAX_BYTES, parse_max_memory, parse_size
from kogpt.placement.options import check_target
from kogpt.settings import SamplingSettings
from tests.test_placement_cli import refused as one_line_error


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(model_lib, "load_weights", refuse)
    monkeypatch.setattr(model_lib, "load_streamed_weights", refuse)


# --offload-dir


def bad_offload_dirs(tmp_path: Path) -> dict[str, str]:
    file = tmp_path / "file"
    file.write_text("x")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o500)
    cases = {
        "/dev/null": "is a special file, not a directory",
        str(file): "is a file, not a directory",
        str(file / "sub" / "dir"): f"is under {file}, which is a file, not a directory",
        "/proc/kogpt-offload": "cannot write in /proc",
    }
    if os.geteuid() != 0:  # root writes anywhere
        cases[str(readonly / "off")] = f"cannot write in {readonly} (Permission denied)"
    return cases


@pytest.mark.parametrize("plan", [False, True])
def test_a_bad_offload_dir_is_one_line_for_loads_and_plans_alike(plan, tiny_dir, tmp_path, capsys, no_loading):
    for path, reason in bad_offload_dirs(tmp_path).items():
        argv = ["--model", str(tiny_dir), "--device", "cpu", "--offload-dir", path, *(["--plan"] if plan else [])]
        assert reason in one_line_error(capsys, argv)
    assert not Path("/proc/kogpt-offload").exists()


def test_a_plan_creates_no_offload_dir(tiny_dir, tmp_path, capsys):
    target = tmp_path / "new" / "offload"
    assert main(["--model", str(tiny_dir), "--device", "cpu", "--offload-dir", str(target), "--plan"]) == 0
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []


def test_a_failed_load_removes_its_partial_offload_files(tiny_bin_dir, tmp_path, monkeypatch):
    """The .bin checkpoint is offloaded by writing .dat files; the disk then fills up."""
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained
    written = []

    def fill_the_disk(*args, **kwargs):
        real(*args, **kwargs)
        written.extend(os.listdir(kwargs["offload_folder"]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fill_the_disk)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("not kogpt's")
    for offload, left in ((tmp_path / "new" / "offload", False), (kept, True)):
        with pytest.raises(KoGPTError, match="No space left on device"):
            budget = {"cpu": "400KB"}
            KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="float32", max_memory=budget, offload_dir=offload)
        assert written, "the load wrote no offload files: the test proves nothing"
        written.clear()
        if left:
            assert os.listdir(kept) == ["mine.txt"]
        else:
            assert not (tmp_path / "new").exists()


# --max-memory


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("cpu=" + "9" * 400 + "GiB", "bad memory size '99999"),
        ("cpu=99999999999GiB", "larger than any machine"),
        ("²=5GiB", "bad --max-memory device '²'"),
        ("٣=5GiB", "bad --max-memory device '٣'"),
        ("cpu=٣GiB", "bad memory size '٣GiB'"),
        ("cpu=５GiB", "bad memory size"),
        ("cpu=5\u212aiB", "bad memory size"),  # the Kelvin sign, which lower() makes a k
        ("0=5GiB,0=6GiB", "names cuda:0 twice"),
        ("0=5GiB,cuda:0=6GiB", "names cuda:0 twice"),
        ("cpu=1GiB,CPU=2GiB", "names cpu twice"),
        ("cpu=-1GiB", "bad memory size '-1GiB'"),
        ("cpu=1e3GiB", "bad memory size '1e3GiB'"),
        ("cpu=nanGiB", "bad memory size 'nanGiB'"),
        ("99999=1GiB", "bad --max-memory device '99999'"),
    ],
)
def test_bad_max_memory_specs_are_one_line(spec, reason, tiny_dir, capsys, no_loading):
    line = one_line_error(capsys, ["--model", str(tiny_dir), "--device", "cpu", "--max-memory", spec, "--plan"])
    assert reason in line and len(line) < 200


KEYS = st.one_of(
    st.sampled_from(["cpu", "CPU", "0", "1", "cuda:0", "cuda:1", "gpu"]),
    st.from_regex(r"\A\d{1,5}\Z"),  # Unicode digits: ٣, ５, ...
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3),  # ², ½, ...
)
SIZES = st.one_of(
    st.from_regex(r"\A\d{1,400}(\.\d{1,5})?\s?[a-zA-Z\u212a]{1,3}\Z"),
    st.from_regex(r"\A[0-9]{1,25}(\.[0-9]{1,3})?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\Z"),
)
SPECS = st.one_of(
    st.text(max_size=40),
    st.lists(st.tuples(KEYS, SIZES), min_size=1, max_size=4).map(lambda p: ",".join(f"{k}={v}" for k, v in p)),
)


@given(SPECS)
def test_any_max_memory_text_is_a_budget_or_a_one_line_error(text):
    try:
        budget = parse_max_memory(text)
    except KoGPTError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 200
        return
    assert budget is None or all(
        (key == "cpu" or (type(key) is int and key >= 0)) and type(size) is int and 0 <= size <= MAX_BYTES
        for key, size in budget.items()
    )


@given(st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{1,30})?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\Z"))
def test_sizes_are_exact_or_refused(text):
    try:
        size = parse_size(text)
    except KoGPTError as exc:
        assert "larger than any machine" in str(exc) or "bad memory size" in str(exc)
        return
    assert 0 <= size <= MAX_BYTES


@pytest.mark.parametrize(
    ("budget", "reason"),
    [
        ({"cpu": -5}, "bad --max-memory size -5 for 'cpu'"),
        ({"cpu": 5.5}, "bad --max-memory size 5.5"),
        ({"cpu": 5e9}, "bad --max-memory size 5000000000.0"),
        ({"cpu": [1]}, "bad --max-memory size [1]"),
        ({"cpu": None}, "bad --max-memory size None"),
        ({"cpu": True}, "bad --max-memory size True"),
        ({True: "1GiB"}, "bad --max-memory device True"),
        ({-1: "1GiB"}, "bad --max-memory device -1"),
        ({0: "1GiB", "cuda:0": "2GiB"}, "names cuda:0 twice"),
        (["cpu=1GiB"], "max_memory must be a string"),
    ],
)
def test_bad_max_memory_in_the_api_is_one_line(budget, reason, tiny_dir):
    with pytest.raises(KoGPTError, match=reason.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        KoGPT.load(str(tiny_dir), device="cpu", max_memory=budget)


def test_whole_bytes_and_sizes_in_the_api_still_load(tiny_dir):
    gpt = KoGPT.load(str(tiny_dir), device="cpu", dtype="float32", max_memory={"cpu": 10**9})
    assert gpt.generate("오늘", temperature=0, max_new_tokens=2)


# KoGPT.load(device=..., dtype=...)


@pytest.mark.parametrize(
    ("device", "dtype", "reason"),
    [
        ("tpu", "auto", "unknown device 'tpu'"),
        ("CPU", "auto", "did you mean 'cpu'"),
        (None, "auto", "unknown device None"),
        ("", "auto", "unknown device ''"),
        ("meta", "auto", "unknown device 'meta'"),
        ("cuda:x", "auto", "unknown device 'cuda:x'"),
        ("cpu:0", "auto", "unknown device 'cpu:0'"),
        (torch.device("meta"), "auto", "unknown device 'meta'"),
        ("cpu", "int8", "unknown dtype 'int8'.*quantize='int8'"),
        ("cpu", "fp16", "did you mean 'float16'"),
        ("cpu", "BF16", "did you mean 'bfloat16'"),
        ("cpu", None, "unknown dtype None"),
        ("cpu", torch.int8, "unknown dtype 'int8'"),
        ("cpu", 16, "unknown dtype 16"),
    ],
)
def test_bad_device_or_dtype_is_one_line_before_anything_is_read(device, dtype, reason, monkeypatch):
    monkeypatch.setattr(model_lib, "resolve_checkpoint", lambda *a: pytest.fail("the checkpoint was looked up"))
    with pytest.raises(KoGPTError, match=reason) as caught:
        KoGPT.load("/nonexistent", device=device, dtype=dtype)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"model": None}, "model must be a hub repo id or a directory, not None"),
        ({"model": 5}, "model must be a hub repo id or a directory, not 5"),
        ({"model": ""}, "model must be a hub repo id or a directory, not ''"),
        ({"offload_dir": 5}, "offload_dir must be a path, not 5"),
        ({"quantize": "INT8"}, "unknown quantization 'INT8'"),
        ({"device_map": 5}, "unknown device map 5"),
    ],
)
def test_other_bad_arguments_are_one_line(arguments, reason, tiny_dir, no_loading):
    with pytest.raises(KoGPTError, match=reason):
        KoGPT.load(**{"model": str(tiny_dir), "device": "cpu", **arguments})


def test_a_path_object_is_a_model_directory(tiny_dir):
    assert KoGPT.load(Path(tiny_dir), device="cpu").generate("오늘", temperature=0, max_new_tokens=1)


@pytest.mark.parametrize("device", ["cuda:0", "cuda:3"])
def test_a_named_gpu_without_cuda_says_cuda_is_missing(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KoGPTError, match=f"device '{device}' needs CUDA"):
        KoGPT.load("/nonexistent", device=device)


def test_a_gpu_index_past_the_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(KoGPTError, match="'cuda:2': this machine has 2 GPU"):
        check_target("cuda:2", "auto")
    with pytest.raises(KoGPTError, match="set CUDA_VISIBLE_DEVICES=1"):
        check_target("cuda:1", "auto")
    assert check_target("cuda:0", torch.bfloat16) == ("cuda", "bfloat16")
    assert check_target(torch.device("cuda", 0), "auto") == ("cuda", "auto")
    assert check_target(torch.device("cpu"), "auto") == ("cpu", "auto")


# Settings through the API


@pytest.mark.parametrize(
    "overrides",
    [
        {"temperature": 2},
        {"repetition_penalty": 2},
        {"top_p": 1},
        {"temperature": 1, "top_p": 1, "repetition_penalty": 3},
    ],
)
def test_whole_numbers_for_float_settings(gpt, overrides):
    assert isinstance(gpt.generate("오늘", max_new_tokens=2, seed=1, **overrides), str)
    kwargs = SamplingSettings(**overrides).generate_kwargs()
    assert all(type(kwargs[name]) is float for name in ("temperature", "top_p", "repetition_penalty") if name in kwargs)


# --plan with flags it would ignore


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["-p", "안녕"], "-p/--prompt"),
        (["--prompt-file", "/nonexistent"], "--prompt-file"),
        (["--prompts-file", "/nonexistent"], "--prompts-file"),
        (["--temperature", "0.5", "--stop", "x"], "--temperature, --stop"),
        (["--quick"], "--quick"),
        (["--truncate"], "--truncate"),
    ],
)
def test_plan_refuses_the_flags_it_would_ignore(flags, named, tiny_dir, capsys, no_loading):
    line = one_line_error(capsys, ["--model", str(tiny_dir), "--plan", *flags])
    assert line == f"error: --plan only prints the plan, so it cannot be used with {named}"


def test_plan_json_is_the_plan_as_json(tiny_dir, capsys, no_loading):
    assert main(["--model", str(tiny_dir), "--device", "cpu", "--dtype", "float32", "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is True and plan["problem"] is None and plan["dtype"] == "float32"
    assert [b["name"] for b in plan["blocks"]] == ["wte", "h.0", "h.1", "ln_f", "lm_head"]
    assert plan["devices"][0]["device"] == "cpu" and plan["devices"][0]["weights"] == 572_720
    assert plan["device"] == "cpu" and plan["streamed"] is True and plan["static_cache"] is False
    argv = ["--model", str(tiny_dir), "--device", "cpu", "--max-memory", "cpu=100KB", "--plan", "--json"]
    assert main(argv) == 1  # does not fit
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is False and "not enough memory" in plan["problem"]


# --quantize int8 --dtype float16 on the CPU


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_quantized_cpu_plans_say_bfloat16(dtype, tiny_dir, capsys, no_loading):
    assert main(["--model", str(tiny_dir), "--device", "cpu", "--quantize", "int8", "--dtype", dtype, "--plan"]) == 0
    out, err = capsys.readouterr()
    assert "int8 weights, bfloat16 compute" in " ".join(out.split())
    assert err.strip() == f"--quantize int8 on the CPU computes in bfloat16, not {dtype}"


def test_quantized_cpu_load_computes_in_bfloat16(tiny_dir):
    gpt = KoGPT.load(str(tiny_dir), device="cpu", dtype="float16", quantize="int8")
    assert gpt.loaded.dtype == torch.bfloat16


# --prompts-file lines


def test_prompts_file_splits_at_line_ends_only():
    text = "첫\u2028줄\x0c이어짐\x85끝\u2029\x1c\x1d\x1e\x0b\n둘\r\n셋\r넷"
    prompts = [prompt for _, prompt, _ in parse_prompts_file(text, "f", SamplingSettings())]
    assert prompts == ["첫\u2028줄\x0c이어짐\x85끝\u2029\x1c\x1d\x1e\x0b", "둘", "셋", "넷"]
    assert [n for n, _, _ in parse_prompts_file(text, "f", SamplingSettings())] == [1, 2, 3, 4]


LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1).filter(str.strip)


@given(st.lists(LINE_TEXT, max_size=8))
def test_prompts_file_lines_come_back_whole(lines):
    lines = [line for line in lines if not line.lstrip().startswith("{")]
    for end in ("\n", "\r\n", "\r"):
        got = [p for _, p, _ in parse_prompts_file(end.join(lines), "f", SamplingSettings())]
        assert got == lines
