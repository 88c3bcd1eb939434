"""Weight-only int8: the layer's arithmetic, the streaming loader, and agreement with the float model."""

from __future__ import annotations

import pytest
import torch

from kogpt import KoGPT, KoGPTError
from kogpt.cli.main import build_parser
from kogpt.loading.checkpoint import load_config
from kogpt.loading.quantize import Int8Linear, load_quantized


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


def test_int8_scales_are_stored_exactly_as_the_weights_were_rounded_against():
    """Each int8 value is round(w / s) for the *stored* (bfloat16) scale s: error at most s/2."""
    torch.manual_seed(1)
    weight = torch.randn(512, 1024) * torch.logspace(-3, 1, 512)[:, None]
    layer = Int8Linear(1024, 512, bias=False)
    layer.set_weight(weight)
    scale = layer.scales.float()[:, None]  # (out, 1), as the kernel will use them
    error = (weight - layer.weight.float() * scale).abs()
    assert (error <= scale / 2 * (1 + 1e-5)).all()


def test_streaming_loader_quantizes_every_linear_as_from_linear_does(tiny_bin_dir):
    from transformers import AutoModelForCausalLM

    streamed = load_quantized(tiny_bin_dir, load_config(tiny_bin_dir))
    whole = AutoModelForCausalLM.from_pretrained(tiny_bin_dir, dtype=torch.float32)
    linears = [name for name, m in whole.named_modules() if isinstance(m, torch.nn.Linear)]
    assert "lm_head" in linears and len(linears) == 1 + 6 * whole.config.n_layer
    assert not any(isinstance(m, torch.nn.Linear) for m in streamed.modules())
    for name in linears:
        got, want = streamed.get_submodule(name), Int8Linear.from_linear(whole.get_submodule(name))
        assert torch.equal(got.weight, want.weight) and torch.equal(got.scales, want.scales), name


def test_tied_embeddings_are_refused_under_cpu_int8(tmp_path):
    from tests.tiny import build_checkpoint

    path = build_checkpoint(tmp_path / "tied", tie_word_embeddings=True)
    with pytest.raises(KoGPTError, match="ties its input and output embeddings"):
        KoGPT.load(str(path), device="cpu", quantize="int8")


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


def test_unknown_methods_are_refused(tiny_dir):
    with pytest.raises(KoGPTError, match="unknown quantization"):
        KoGPT.load(str(tiny_dir), device="cpu", quantize="int3")


def test_cli_flag():
    assert build_parser().parse_args([]).quantize == "none"
    assert build_parser().parse_args(["--quantize", "int8"]).quantize == "int8"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--quantize", "int3"])
