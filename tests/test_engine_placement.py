"""The engine over every placement the loader makes on a CPU: float32, bfloat16 (streamed loader,
float32 prefill), weight-only int8, and accelerate's CPU and disk offload hooks."""

from __future__ import annotations

import pytest

from kogpt import KoGPT
from kogpt.settings import SamplingSettings

PREAMBLE = "질문: 하늘은 무슨 색인가요?\n답: 파란색\n"
PLACEMENTS = {
    "float32": dict(dtype="float32"),
    "bfloat16": dict(dtype="bfloat16"),
    "int8": dict(quantize="int8"),
    "cpu+disk offload": dict(dtype="float32", max_memory={"cpu": "700KB"}, offload="offload"),
    "disk offload": dict(dtype="float32", max_memory={"cpu": "400KB"}, offload="offload"),
}


def completions(gpt: KoGPT, prompt: str, settings: SamplingSettings) -> list[str]:
    return [r.completion for r in gpt.complete(prompt, settings)]


@pytest.mark.parametrize("name", PLACEMENTS)
def test_the_engine_on_each_placement(name, tiny_bin_dir, tmp_path):
    options = dict(PLACEMENTS[name])
    if "offload" in options:
        options["offload_dir"] = str(tmp_path / options.pop("offload"))
    gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", **options)
    if "offload" in name:
        assert "disk" in set(gpt.model.hf_device_map.values())
    gpt.engine.prefill_chunk = 8
    requests = [
        (PREAMBLE + "봄은?", SamplingSettings(seed=1, max_new_tokens=10)),
        (PREAMBLE + "여름은?", SamplingSettings(seed=2, max_new_tokens=10, num_return_sequences=2)),
        (PREAMBLE + "여름은?", SamplingSettings(temperature=0, max_new_tokens=10, repetition_penalty=1.2)),
    ]
    warm = [completions(gpt, p, s) for p, s in requests]
    assert gpt.engine.last_stats.reused_tokens > 0
    cold = []
    for prompt, settings in requests:
        gpt.engine.forget()
        cold.append(completions(gpt, prompt, settings))
    assert warm == cold
    greedy = SamplingSettings(temperature=0, max_new_tokens=12, num_return_sequences=3)
    single = gpt.generate(PREAMBLE, temperature=0, max_new_tokens=12)
    assert single and completions(gpt, PREAMBLE, greedy) == [single] * 3
    stream = gpt.stream(PREAMBLE, seed=3, max_new_tokens=40)
    next(stream)
    stream.close()
    assert not gpt.engine.busy
