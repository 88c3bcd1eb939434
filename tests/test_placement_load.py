"""Loading the tiny checkpoint through a plan: CPU + disk offload, refusal before loading, load keywords."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from kogpt import KoGPT
from kogpt.errors import KoGPTError
from kogpt.loading import load as model_lib
from kogpt.placement import decide as decide_lib
from kogpt.placement.memory import CPU_HEADROOM_BYTES
from kogpt.placement.options import (
    Hardware,
    Options,
    input_device,
    load_kwargs,
    quantization_config,
)
from tests.tiny import korean_lines

# Tiny float32 checkpoint: wte 84,992 B, two blocks of 198,400 B, ln_f 512 B, lm_head 86,320 B;
# KV cache 2 layers x 2 x 128 tokens x 64 x 4 B = 131,072 B.
PROMPT_COUNT = 3


def prompts() -> list[str]:
    return [line[:12] for line in korean_lines()[:PROMPT_COUNT]]


def greedy(gpt: KoGPT) -> list[str]:
    return [gpt.generate(prompt, temperature=0, max_new_tokens=16) for prompt in prompts()]


@pytest.mark.parametrize("budget", ["400KB", "700KB"])
@pytest.mark.parametrize("checkpoint", ["tiny_dir", "tiny_bin_dir"])
def test_cpu_and_disk_offload_gives_the_plain_greedy_tokens(checkpoint, budget, request, tmp_path):
    path = str(request.getfixturevalue(checkpoint))
    plain = KoGPT.load(path, device="cpu", dtype="float32")
    offload = tmp_path / "offload"
    split = KoGPT.load(path, device="cpu", dtype="float32", max_memory={"cpu": budget}, offload_dir=str(offload))
    placed = set(split.model.hf_device_map.values())
    # 400 KB holds the KV cache (131,072) and one block in transit (198,400) but no weights: all on disk,
    # the embedding too (model.device is then `meta`). 700 KB keeps some blocks in RAM.
    assert placed == ({"disk"} if budget == "400KB" else {"cpu", "disk"})
    expected = greedy(plain)
    assert all(expected) and greedy(split) == expected
    streamed = ["".join(chunk.text for chunk in split.stream(p, temperature=0, max_new_tokens=16)) for p in prompts()]
    assert streamed == expected


def test_a_load_that_cannot_fit_stops_before_reading_weights(tiny_dir, monkeypatch, tmp_path):
    machine = Hardware((), CPU_HEADROOM_BYTES + 400_000, disk=10**9)
    monkeypatch.setattr(decide_lib, "detect_hardware", lambda *args, **kwargs: machine)
    real_load_weights = model_lib.load_weights

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded although the plan does not fit")

    monkeypatch.setattr(model_lib, "load_weights", no_weights)
    with pytest.raises(KoGPTError) as info:
        KoGPT.load(str(tiny_dir), device="cpu", dtype="float32")
    message = str(info.value)
    # 572,720 B of weights + 131,072 B of KV cache > 400,000 usable
    assert (
        "not enough memory on cpu for KoGPT in float32: it needs" in message
        and "would fit:" in message
        and "--offload-dir DIR" in message
    )
    assert "\n" not in message

    monkeypatch.setattr(model_lib, "load_weights", real_load_weights)
    offloaded = KoGPT.load(str(tiny_dir), device="cpu", dtype="float32", offload_dir=str(tmp_path / "off"))
    assert "disk" in offloaded.model.hf_device_map.values()
    assert offloaded.generate(prompts()[0], temperature=0, max_new_tokens=4)


def test_input_device_is_where_the_first_block_runs():
    assert input_device(SimpleNamespace(hf_device_map={"transformer.wte": "disk", "lm_head": "cpu"})) == torch.device(
        "cpu"
    )
    assert input_device(SimpleNamespace(hf_device_map={"transformer.wte": "cpu", "transformer.h": 1})) == torch.device(
        "cuda", 1
    )
    assert input_device(SimpleNamespace(hf_device_map={"": "cuda:0"})) == torch.device("cuda", 0)
    assert input_device(SimpleNamespace(device=torch.device("cpu"))) == torch.device("cpu")


def test_load_keywords_follow_the_options(tmp_path):
    cpu = torch.device("cpu")
    assert load_kwargs({"": "cpu"}, cpu, Options(), torch.float32) == {"device_map": "cpu"}
    offload = tmp_path / "a" / "b"
    kwargs = load_kwargs({"lm_head": "disk"}, cpu, Options(offload_dir=str(offload)), torch.float32)
    assert kwargs == {"device_map": {"lm_head": "disk"}, "offload_folder": str(offload)} and offload.is_dir()


def test_bitsandbytes_configs():
    assert quantization_config("none", "cuda", torch.float16) is None
    assert quantization_config("int8", "cpu", torch.float16) is None  # the CPU path quantizes after loading
    int8 = quantization_config("int8", "cuda", torch.float16)
    assert int8.load_in_8bit and not int8.load_in_4bit
    int4 = quantization_config("int4", "cuda", torch.bfloat16)
    assert int4.load_in_4bit and int4.bnb_4bit_quant_type == "nf4" and int4.bnb_4bit_use_double_quant
    assert int4.bnb_4bit_compute_dtype == torch.bfloat16
    kwargs = load_kwargs({"": 0}, torch.device("cuda"), Options(quantize="int4"), torch.float16)
    assert kwargs["device_map"] == "cuda" and kwargs["quantization_config"].load_in_4bit
