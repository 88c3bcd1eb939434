"""The GPU fast path (static KV cache, compiled step), built and checked on the CPU: same tokens,
bucketed sizes, no recompilation across turns."""

from __future__ import annotations

import pytest
import torch

from kogpt import KoGPT
from kogpt.engine import Engine
from kogpt.engine.decode import compilations, static_cache_length
from kogpt.placement.options import input_device

PROMPT = "인간처럼 생각하고,"


def test_static_cache_sizes_are_few_buckets_within_the_context():
    assert static_cache_length(10, 2048) == 256
    assert static_cache_length(256, 2048) == 256
    assert static_cache_length(257, 2048) == 512
    assert static_cache_length(1500, 2048) == 2048
    assert static_cache_length(100, 128) == 128
    assert len({static_cache_length(n, 2048) for n in range(1, 2049)}) == 4


def test_static_cache_is_off_on_the_cpu_by_default(gpt):
    assert gpt.static_cache is False and gpt.compile is False


def test_static_cache_gives_the_same_text_as_the_dynamic_one(gpt):
    fast = KoGPT(gpt.loaded, static_cache=True)
    want = gpt.generate(PROMPT, temperature=0, max_new_tokens=20)
    chunks = list(fast.stream(PROMPT, temperature=0, max_new_tokens=20))
    assert "".join(c.text for c in chunks) == want
    assert chunks[-1].tokens == 20 or chunks[-1].finish_reason == "eos"
    # The prefix cache works on the static cache too: /retry, /continue, batched samples.
    assert fast.generate(PROMPT, seed=4, max_new_tokens=12) == gpt.generate(PROMPT, seed=4, max_new_tokens=12)
    longer = PROMPT + want
    assert fast.generate(longer, seed=5, max_new_tokens=12) == gpt.generate(longer, seed=5, max_new_tokens=12)
    settings = gpt_settings(seed=9, max_new_tokens=10, num_return_sequences=3)
    assert [r.completion for r in fast.complete(PROMPT, settings)] == [r.completion for r in gpt.complete(PROMPT, settings)]


def gpt_settings(**kw):
    from kogpt.settings import SamplingSettings

    return SamplingSettings(**kw)


@pytest.mark.filterwarnings("ignore")
def test_the_compiled_step_compiles_once_per_bucket_and_never_across_turns(gpt):
    """torch.compile with the `eager` backend traces the step as the CUDA path does, on the CPU."""
    torch._dynamo.reset()
    engine = Engine(gpt.model, gpt.tokenizer, gpt.context_length, input_device(gpt.model),
                    static_cache=True, compile=True, backend="eager")
    ids = gpt.encode(PROMPT)

    def turn(n_prompt: int, n_new: int, seed: int) -> str:
        settings = gpt_settings(seed=seed, max_new_tokens=n_new)
        return "".join(c.text for c in engine.stream((ids * 20)[:n_prompt], settings, seed))

    turn(5, 4, 0)
    after_warm_up = compilations()
    assert after_warm_up >= 1
    texts = [turn(3 + 7 * i, 2 + i, i) for i in range(8)]  # prompts and budgets of other lengths
    assert compilations() == after_warm_up
    plain = Engine(gpt.model, gpt.tokenizer, gpt.context_length, input_device(gpt.model))
    assert texts == ["".join(c.text for c in plain.stream((ids * 20)[:3 + 7 * i], gpt_settings(seed=i, max_new_tokens=2 + i), i))
                     for i in range(8)]
