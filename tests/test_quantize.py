"""Weight-only int8: the layer's arithmetic, the streaming loader, and agreement with the float model."""

from __future__ import annotations

import pytest
import torch

from kogpt import KoGPT, KoGPTError
from kogpt.cli.main import build_parser
from kogpt.loading.checkpoint import load_config
from kogpt.loading.quantize import (
    Int8Linear,
    check_method,
    load_quantized,
    quantize_model,
)


def test_int8_linear_matches_float_linear():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96)
    layer = Int8Linear.from_linear(linear)
    assert layer.weight.dtype == torch.int8
    assert layer.weight.abs().amax(dim=1).eq(127).all()  # each row uses the full range
    x = torch.randn(3, 5, 256)
    want = linear(x)
    got = layer(x)
    assert got.shape == want.shape and got.dtype == x.dtype
    assert (got - want).norm() / want.norm() < 0.02


def test_quantize_model_replaces_every_linear(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = quantize_model(AutoModelForCausalLM.from_pretrained(tiny_dir), "int8")
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.Linear not in kinds and Int8Linear in kinds
    assert isinstance(model.lm_head, Int8Linear)


def test_streaming_loader_gives_the_same_weights_as_quantizing_a_loaded_model(tiny_bin_dir):
    from transformers import AutoModelForCausalLM

    config = load_config(tiny_bin_dir)
    streamed = load_quantized(tiny_bin_dir, config).state_dict()
    whole = quantize_model(AutoModelForCausalLM.from_pretrained(tiny_bin_dir, dtype=torch.float32)).state_dict()
    assert streamed.keys() == whole.keys()
    for name, tensor in whole.items():
        assert streamed[name].dtype == tensor.dtype, name
        assert torch.equal(streamed[name], tensor), name


def greedy_agreement(float_model, int8_model, sequences: list[torch.Tensor]) -> float:
    """Fraction of positions where both models pick the same next token, on the same inputs."""
    same = total = 0
    with torch.inference_mode():
        for ids in sequences:
            a = float_model(ids).logits.argmax(-1)
            b = int8_model(ids).logits.argmax(-1)
            same += int((a == b).sum())
            total += a.numel()
    return same / total


def test_int8_greedy_tokens_agree_with_the_float_path(gpt, tiny_dir):
    from tests.tiny import korean_lines

    int8 = KoGPT.load(str(tiny_dir), device="cpu", quantize="int8")
    sequences = []
    for line in korean_lines()[:12]:
        ids = torch.tensor([gpt.encode(line)[:24]])
        with torch.inference_mode():  # the float model's own greedy continuation
            out = gpt.model.generate(ids, do_sample=False, max_new_tokens=24, pad_token_id=1)
        sequences.append(out)
    assert sum(s.numel() for s in sequences) > 400
    assert greedy_agreement(gpt.model, int8.model, sequences) >= 0.95


def test_int8_model_loads_and_streams_through_the_api(tiny_bin_dir):
    gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8")
    assert gpt.loaded.dtype == torch.bfloat16
    assert isinstance(gpt.model.transformer.h[0].mlp.fc_in, Int8Linear)
    chunks = list(gpt.stream("인간처럼 생각하고,", temperature=0, max_new_tokens=12))
    assert chunks[-1].tokens == 12 or chunks[-1].finish_reason == "eos"
    text = "".join(c.text for c in chunks)
    assert text == gpt.generate("인간처럼 생각하고,", temperature=0, max_new_tokens=12)


def test_unknown_or_misplaced_methods_are_refused(tiny_dir):
    with pytest.raises(ValueError, match="unknown quantization"):
        check_method("int3", "cpu")
    with pytest.raises(ValueError, match="--device cpu"):
        check_method("int8", "cuda")
    with pytest.raises(KoGPTError, match="unknown quantization"):
        KoGPT.load(str(tiny_dir), device="cpu", quantize="int3")


def test_cli_flag():
    assert build_parser().parse_args([]).quantize == "none"
    assert build_parser().parse_args(["--quantize", "int8"]).quantize == "int8"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--quantize", "int3"])
