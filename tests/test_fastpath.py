"""The GPU fast path (static KV cache), built and checked on the CPU: same tokens, bucketed sizes."""

from __future__ import annotations

from kogpt import KoGPT
from kogpt.generate import cache_kwargs, static_cache_length


def test_static_cache_sizes_are_few_buckets_within_the_context():
    assert static_cache_length(10, 2048) == 256
    assert static_cache_length(256, 2048) == 256
    assert static_cache_length(257, 2048) == 512
    assert static_cache_length(1500, 2048) == 2048
    assert static_cache_length(100, 128) == 128
    assert len({static_cache_length(n, 2048) for n in range(1, 2049)}) == 4


def test_cache_kwargs():
    assert cache_kwargs(False, 40, 2048) == {}
    assert cache_kwargs(True, 40, 2048) == {"cache_implementation": "static", "max_cache_len": 256}


def test_static_cache_is_off_on_the_cpu_by_default(gpt):
    assert gpt.static_cache is False


def test_static_cache_streams_the_same_greedy_text(tiny_dir, gpt, monkeypatch):
    fast = KoGPT(gpt.loaded, static_cache=True)
    prompt = "인간처럼 생각하고,"
    want = gpt.generate(prompt, temperature=0, max_new_tokens=20)
    seen = []
    real = fast.model.generate
    monkeypatch.setattr(fast.model, "generate", lambda **kw: (seen.append(kw), real(**kw))[1])
    chunks = list(fast.stream(prompt, temperature=0, max_new_tokens=20))
    assert "".join(c.text for c in chunks) == want
    assert chunks[-1].tokens == 20 or chunks[-1].finish_reason == "eos"
    # A static cache of the tiny model's whole 128-token context was asked for.
    assert [(kw["cache_implementation"], kw["max_cache_len"]) for kw in seen] == [("static", 128)]
