"""Streaming generation on the tiny checkpoint."""

from __future__ import annotations

import threading

import pytest
import torch

from kogpt import KoGPTError, SamplingSettings
from kogpt.textstream import REPLACEMENT

PROMPT = "오늘은 날씨가"


def workers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kogpt-generate" and t.is_alive()]


def test_streamed_text_equals_the_joined_generate(gpt):
    streamed = "".join(c.text for c in gpt.stream(PROMPT, seed=7, max_length=60))
    assert streamed == gpt.generate(PROMPT, seed=7, max_length=60)


def test_streamed_text_equals_decoding_the_generated_ids(gpt):
    ids = gpt.encode(PROMPT)
    torch.manual_seed(11)
    out = gpt.model.generate(
        torch.tensor([ids]), do_sample=True, temperature=0.8, top_k=0, max_new_tokens=40,
        pad_token_id=1, eos_token_id=1,
    )
    expected = gpt.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    assert gpt.generate(PROMPT, seed=11, max_new_tokens=40) == expected


def test_fixed_seed_repeats_and_other_seeds_differ(gpt):
    a = gpt.generate(PROMPT, seed=3, max_length=60)
    assert a == gpt.generate(PROMPT, seed=3, max_length=60)
    others = {gpt.generate(PROMPT, seed=s, max_length=60) for s in (4, 5, 6)}
    assert others - {a}


def test_greedy_equals_argmax_decoding(gpt):
    ids = gpt.encode(PROMPT)
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(20):
            logits = gpt.model(torch.tensor([seq])).logits[0, -1]
            seq.append(int(logits.argmax()))
            if seq[-1] == gpt.tokenizer.eos_token_id:
                break
    expected = gpt.tokenizer.decode(seq[len(ids):], skip_special_tokens=True)
    assert gpt.generate(PROMPT, temperature=0, max_new_tokens=20) == expected


def test_last_chunk_reports_totals_and_reason(gpt):
    chunks = list(gpt.stream(PROMPT, temperature=0, max_new_tokens=10))
    last = chunks[-1]
    assert last.finish_reason in {"length", "eos"}
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert 1 <= last.tokens <= 10
    assert last.first_token_seconds is not None and last.first_token_seconds <= last.seconds
    if last.finish_reason == "length":
        assert last.tokens == 10


def test_max_length_counts_the_prompt(gpt):
    n = len(gpt.encode(PROMPT))
    last = list(gpt.stream(PROMPT, temperature=0, max_length=n + 5, stop=[]))[-1]
    assert last.tokens <= 5
    with pytest.raises(KoGPTError, match=f"the prompt is {n} tokens and max_length \\({n}\\) counts them: nothing"):
        gpt.stream(PROMPT, max_length=n)  # refused before any model work, not an empty completion


def test_max_new_tokens_wins_and_the_context_caps_both():
    settings = SamplingSettings(max_length=50, max_new_tokens=7)
    assert settings.new_tokens(prompt_tokens=10, context=128) == 7
    assert SamplingSettings(max_length=500).new_tokens(10, 128) == 118
    assert SamplingSettings(max_new_tokens=500).new_tokens(100, 128) == 28


def test_no_replacement_character_reaches_the_stream_mid_text(gpt):
    # The random model emits arbitrary bytes; U+FFFD may only come from bytes never completed.
    for seed in range(5):
        chunks = [c.text for c in gpt.stream(PROMPT, seed=seed, max_length=80)]
        full = "".join(chunks)
        assert full == gpt.generate(PROMPT, seed=seed, max_length=80)
        for text in chunks[:-1]:
            assert not text.endswith(REPLACEMENT)


def test_closing_the_stream_stops_the_worker(gpt):
    it = gpt.stream(PROMPT, seed=1, max_new_tokens=100)
    next(it)
    it.close()
    assert not workers_alive()


def test_an_exception_in_the_worker_reaches_the_caller_as_one_line(gpt, monkeypatch):
    def fail(**kwargs):
        raise ValueError("something inside generate\nwith a second line")

    monkeypatch.setattr(gpt.model, "generate", fail)
    with pytest.raises(KoGPTError, match="generation failed: ValueError: ") as info:
        gpt.generate(PROMPT)
    assert isinstance(info.value.__cause__, ValueError)
    assert "\n" not in str(info.value)
    assert not workers_alive()


def test_out_of_memory_in_the_worker_suggests_what_to_try(gpt, monkeypatch):
    def oom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(gpt.model, "generate", oom)
    with pytest.raises(KoGPTError, match="out of memory generating up to .* smaller max_length"):
        gpt.generate(PROMPT)
    monkeypatch.setattr(gpt.model, "generate", lambda **kw: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(KoGPTError, match="out of memory"):
        gpt.generate(PROMPT)
    assert not workers_alive()


def test_prompt_special_token_strings_are_plain_text(gpt):
    ids = gpt.encode("[EOS]")
    assert gpt.tokenizer.eos_token_id not in ids
    assert gpt.tokenizer.decode(ids) == "[EOS]"


def test_prompt_is_normalised_to_nfc(gpt):
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "한국어")
    assert gpt.encode(decomposed) == gpt.encode("한국어")
