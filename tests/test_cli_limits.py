"""Bounds: --threads (item 21), and the context's edges (item 30)."""

from __future__ import annotations

import logging
import os

import pytest

from kogpt import KoGPT
from kogpt.context import fit_prompt
from kogpt.errors import KoGPTError
from kogpt.settings import InputError, SamplingSettings


@pytest.mark.parametrize("threads", [2**31, 2**63, 1025])
def test_threads_above_the_bound_are_one_line_errors(tiny_dir, threads):
    with pytest.raises(KoGPTError, match="at most 1024"):
        KoGPT.load(str(tiny_dir), device="cpu", threads=threads, cache=False)


def test_threads_above_the_bound_from_the_command_line(tiny_dir, capsys):
    from kogpt.cli.main import main

    assert main(["--model", str(tiny_dir), "--device", "cpu", "--threads", "2147483648", "-p", "안녕"]) == 1
    err = capsys.readouterr().err
    assert "at most 1024" in err and "Traceback" not in err


def test_threads_above_the_cpus_warn(tiny_dir, caplog):
    import torch

    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING):
            KoGPT.load(str(tiny_dir), device="cpu", threads=(os.cpu_count() or 1) + 1, cache=False)
        assert "threads beyond the CPUs" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_a_prompt_that_exactly_fills_the_context_is_accepted():
    settings = SamplingSettings(max_new_tokens=3)
    ids = list(range(125))
    assert fit_prompt(ids, settings, 128) == ids  # n + room == context
    with pytest.raises(InputError, match="126 tokens"):
        fit_prompt(list(range(126)), settings, 128)  # one more
    kept = fit_prompt(list(range(126)), SamplingSettings(max_new_tokens=3, truncate=True), 128)
    assert kept == list(range(1, 126)) and len(kept) + 3 == 128


def test_max_length_at_the_context_and_prompt_one_below():
    settings = SamplingSettings(max_length=128)
    assert fit_prompt(list(range(127)), settings, 128) == list(range(127))  # one token of room
    with pytest.raises(InputError, match="nothing is left"):
        fit_prompt(list(range(127)), SamplingSettings(max_length=127), 128)
    with pytest.raises(InputError, match="more than the model's context"):
        fit_prompt(list(range(128)), settings, 128)


def test_max_new_tokens_leaves_one_prompt_token():
    assert fit_prompt([1], SamplingSettings(max_new_tokens=127), 128) == [1]
    with pytest.raises(InputError, match="at most 127"):
        fit_prompt([1], SamplingSettings(max_new_tokens=128), 128)


def test_the_cpu_dtype_decision_at_its_threshold():
    import torch

    from kogpt.placement import memory

    n, kv = 6_000_000_000, 2 * memory.GiB
    need = memory.weight_bytes(n, torch.float32) + 2 * kv + memory.CPU_HEADROOM_BYTES  # with the 1 GiB headroom
    at = memory.choose_dtype("auto", "cpu", torch.float32, n, need, kv)
    below = memory.choose_dtype("auto", "cpu", torch.float32, n, need - 1, kv)
    assert at.dtype == torch.float32 and below.dtype == torch.bfloat16
    short_of_headroom = memory.choose_dtype("auto", "cpu", torch.float32, n, need - memory.GiB // 2, kv)
    assert short_of_headroom.dtype == torch.bfloat16  # fits without the headroom, not with it


def test_stream_and_generate_both_refuse_several_sequences(gpt):
    for call in (lambda: list(gpt.stream("안녕", num_return_sequences=3, max_new_tokens=2)),
                 lambda: gpt.generate("안녕", num_return_sequences=3, max_new_tokens=2)):
        with pytest.raises(InputError, match="complete"):
            call()
    assert len(gpt.complete("안녕", SamplingSettings(num_return_sequences=3, max_new_tokens=2, seed=1))) == 3


def test_the_context_messages_say_what_to_do(caplog):
    with pytest.raises(InputError, match="^the prompt is empty$"):
        fit_prompt([], SamplingSettings(), 128)
    with pytest.raises(InputError) as too_long:
        fit_prompt(list(range(128)), SamplingSettings(max_length=128), 128)
    assert str(too_long.value) == (
        "the prompt is 128 tokens, more than the model's context of 128: shorten it, "
        "or set max_new_tokens with truncate on to keep its end"
    )
    with pytest.raises(InputError, match="^the prompt is at least 129 tokens, more than"):
        fit_prompt(list(range(129)), SamplingSettings(max_length=128), 128, cut=True)
    with caplog.at_level(logging.INFO, logger="kogpt"):
        fit_prompt(list(range(129)), SamplingSettings(max_new_tokens=3, truncate=True), 128, cut=True)
        fit_prompt(list(range(126)), SamplingSettings(max_new_tokens=3, truncate=True), 128, announce=False)
    assert [r.getMessage() for r in caplog.records] == [
        "the prompt is at least 129 tokens; keeping its last 125 for 3 new tokens"
    ]
