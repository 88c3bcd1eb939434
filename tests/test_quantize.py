"""Quantized CPU weights (int8 and int4, every kernel): the layer's arithmetic, the streaming loader,
and agreement with the float model."""

from __future__ import annotations

import pytest
import torch

from kogpt import KoGPT, KoGPTError
from kogpt.cli.main import build_parser
from kogpt.loading import int4, int8, kernels
from kogpt.loading.checkpoint import load_config
from kogpt.loading.quantize import (
    Int8Linear,
    PackedLinear,
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


def test_quantize_model_replaces_every_linear(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = quantize_model(AutoModelForCausalLM.from_pretrained(tiny_dir), "int8")
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.Linear not in kinds and PackedLinear in kinds
    assert isinstance(model.lm_head, PackedLinear) and model.lm_head.kernel.name == "w8"


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
    assert isinstance(gpt.model.transformer.h[0].mlp.fc_in, PackedLinear)
    assert gpt.loaded.kernel in ("w8", "w8a8")
    chunks = list(gpt.stream("인간처럼 생각하고,", temperature=0, max_new_tokens=12))
    assert chunks[-1].tokens == 12 or chunks[-1].finish_reason == "eos"
    text = "".join(c.text for c in chunks)
    assert text == gpt.generate("인간처럼 생각하고,", temperature=0, max_new_tokens=12)


def test_unknown_or_misplaced_methods_are_refused(tiny_dir):
    with pytest.raises(ValueError, match="unknown quantization"):
        check_method("int3", "cpu")
    with pytest.raises(ValueError, match="--device cpu"):
        check_method("int8", "cuda")
    with pytest.raises(ValueError, match="--device cpu"):
        check_method("int4", "cuda")
    with pytest.raises(KoGPTError, match="unknown quantization"):
        KoGPT.load(str(tiny_dir), device="cpu", quantize="int3")


def test_cli_flag():
    assert build_parser().parse_args([]).quantize == "none"
    assert build_parser().parse_args(["--quantize", "int8"]).quantize == "int8"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--quantize", "int3"])


QUANTIZED = [k.name for k in kernels.KERNELS.values() if k.format in ("int8", "int4")]


@pytest.mark.parametrize("kernel", QUANTIZED)
def test_every_quantized_kernel_matches_float_within_its_format_tolerance(kernel):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 80)  # 80 output rows: int4 pads them to 96 and drops the padding
    layer = PackedLinear.from_linear(linear, kernel)
    x = torch.randn(2, 7, 256)
    with torch.no_grad():
        want, got = linear(x), layer(x)
    assert got.shape == want.shape and got.dtype == x.dtype
    error = float((got - want).norm() / want.norm())
    assert error < kernels.TOLERANCE[layer.kernel.format], error


def test_int4_codes_and_scales_reproduce_the_weight_and_the_kernel_computes_with_them():
    torch.manual_seed(0)
    weight = torch.randn(64, 128) * 0.02
    codes, scales_and_zeros = int4.quantize(weight, 32)
    assert codes.min() >= 0 and codes.max() <= 15
    assert scales_and_zeros.shape == (128 // 32, 64, 2)
    restored = int4.dequantize(codes, scales_and_zeros, 32)
    step = (weight.reshape(64, 4, 32).amax(-1) - weight.reshape(64, 4, 32).amin(-1)) / 15
    # Rounding moves each weight by half a step at most (plus the bfloat16 rounding of scale and zero).
    assert ((restored - weight).abs().reshape(64, 4, 32) <= step[..., None] * 0.5 + 2e-4).all()
    x = torch.randn(3, 128)
    exact = x @ restored.t()  # the kernel computes exactly with the dequantized weight, in bfloat16
    got = int4.matmul(x, int4.pack(weight, 32), 32).float()
    assert float((got - exact).norm() / exact.norm()) < 0.01


@pytest.mark.parametrize("out_features", [16, 20, 48, 64, 80, 2064])
def test_int4_widened_prompt_kernel_reads_the_packed_weight_as_the_int4_kernel_does(out_features, monkeypatch):
    # a short block alone (16, 20 padded to 32, 48), whole 64-row blocks, both, several widened blocks
    monkeypatch.setattr(int4, "WIDENED_BYTES", 2 * 128 * 640)  # 640 output rows of 128 inputs at a time
    torch.manual_seed(out_features)
    weight = torch.randn(out_features, 128) * 0.02
    codes, scales_and_zeros = int4.quantize(weight, 32)
    x = torch.randn(20, 128)
    exact = x @ int4.dequantize(codes, scales_and_zeros, 32).t()
    packed = int4.pack(weight, 32)
    got = int4.matmul_widened(x, packed, 32).float()
    assert got.shape == (20, out_features + -out_features % 16)
    assert float((got[:, :out_features] - exact).norm() / exact.norm()) < 0.01
    layer = PackedLinear(128, out_features, False, "w4g32", phases={"prefill": "w4g32bf16"})
    layer.set_weight(weight)
    chunk = torch.randn(16, 128, dtype=torch.bfloat16)  # 16 rows: the prompt phase
    by_kernel = int4.matmul(chunk, packed, 32)[:, :out_features].float()
    assert float((layer(chunk).float() - by_kernel).norm() / by_kernel.norm()) < 0.01


def test_int4_refuses_groups_that_do_not_divide_the_inputs():
    with pytest.raises(ValueError, match="does not divide"):
        int4.quantize(torch.zeros(16, 96), 64)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_streaming_quantized_loader_equals_quantizing_the_loaded_model(tiny_bin_dir, method):
    from transformers import AutoModelForCausalLM

    config = load_config(tiny_bin_dir)
    streamed = load_quantized(tiny_bin_dir, config, method).state_dict()
    whole = quantize_model(AutoModelForCausalLM.from_pretrained(tiny_bin_dir, dtype=torch.float32), method).state_dict()
    assert streamed.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(streamed[name], tensor), name


def logit_error(float_model, quantized, sequences: list[torch.Tensor]) -> float:
    """Mean over positions of ‖logits − float logits‖ / ‖float logits‖."""
    errors = []
    with torch.inference_mode():
        for ids in sequences:
            a = float_model(ids).logits.float()
            b = quantized(ids).logits.float()
            errors.append(((b - a).norm(dim=-1) / a.norm(dim=-1)).mean())
    return float(torch.stack(errors).mean())


@pytest.fixture(scope="module")
def greedy_sequences(gpt):
    from tests.tiny import korean_lines

    sequences = []
    for line in korean_lines()[:12]:
        ids = torch.tensor([gpt.encode(line)[:24]])
        with torch.inference_mode():
            sequences.append(gpt.model.generate(ids, do_sample=False, max_new_tokens=24, pad_token_id=1))
    return sequences


# Greedy agreement and logit error against the float32 model, on the tiny checkpoint (the table in docs/hardware.md).
QUALITY = {"w8": (0.95, 0.03), "w8a8": (0.95, 0.04), "w8dnn": (0.95, 0.04), "w4g32": (0.65, 0.2), "w4g64": (0.65, 0.2)}


@pytest.mark.parametrize("kernel", sorted(QUALITY))
def test_quantized_greedy_agreement_and_logit_error_against_float(gpt, tiny_dir, greedy_sequences, kernel):
    method = kernels.KERNELS[kernel].format
    quantized = KoGPT.load(str(tiny_dir), device="cpu", quantize=method, kernel=kernel, cache=False)
    assert quantized.loaded.kernel == kernel
    agreement = greedy_agreement(gpt.model, quantized.model, greedy_sequences)
    error = logit_error(gpt.model, quantized.model, greedy_sequences)
    print(f"{kernel}: greedy agreement {agreement:.3f}, logit error {error:.4f}")
    least_agreement, most_error = QUALITY[kernel]
    assert agreement >= least_agreement and error <= most_error


@pytest.mark.skipif(not int8.onednn(), reason="this torch has no oneDNN int8 Linear")
def test_onednn_int8_is_prepared_from_w8s_cache_entry_and_computes_as_w8a8(tiny_bin_dir, caplog, monkeypatch):
    """w8dnn's opaque weights are made at load from the int8 tensors w8 caches: one entry serves
    both, the cache never sees an opaque tensor, and the mapped pages of what was replaced leave
    the process right after each layer is prepared (so the load's peak is one copy of the weights)."""
    import logging

    from kogpt.loading import cache, weights

    released, events = [], []
    monkeypatch.setattr(weights, "release", lambda tensor: (released.append(tensor.shape), events.append("release")))
    prepare = PackedLinear.prepare
    monkeypatch.setattr(PackedLinear, "prepare", lambda self: (events.append("prepare"), prepare(self))[1])

    with caplog.at_level(logging.INFO, logger="kogpt"):
        dnn = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8", kernel="w8dnn")
        assert "cached the converted weights" in caplog.text
        caplog.clear()
        w8a8 = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8", kernel="w8a8")
        assert "mapped from the converted-weights cache" in caplog.text
        caplog.clear()
        released.clear()  # reading the .bin source released its tensors too
        events.clear()
        again = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8", kernel="w8dnn")
        assert "mapped from the converted-weights cache" in caplog.text
    assert len(cache.entries()) == 1
    layers = [m for m in again.model.modules() if isinstance(m, PackedLinear)]
    assert sorted(map(tuple, released)) == sorted([(m.out_features, m.in_features) for m in layers] + [(m.out_features,) for m in layers])
    assert events == ["prepare", "release", "release"] * len(layers)  # layer by layer: one layer's pages at a time
    layer = again.model.lm_head
    assert layer.prepared and layer.weight.is_mkldnn and not w8a8.model.lm_head.weight.is_mkldnn
    ids = torch.tensor([dnn.encode("인간처럼 생각하고, 행동하는 AI 모델")])
    with torch.inference_mode():
        for rows in (ids[:, :1], ids):  # a step's one row, a prompt's many
            want = w8a8.model(rows).logits.float()
            for got in (dnn.model(rows).logits.float(), again.model(rows).logits.float()):
                assert ((got - want).norm() / want.norm()) < 0.01


def test_int4_model_loads_and_streams_on_the_cpu(tiny_bin_dir):
    gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int4")
    assert gpt.loaded.dtype == torch.bfloat16 and gpt.loaded.kernel in ("w4g32", "w4g64")
    assert isinstance(gpt.model.lm_head, PackedLinear)
    text = gpt.generate("인간처럼 생각하고,", temperature=0, max_new_tokens=8)
    assert text == "".join(c.text for c in gpt.stream("인간처럼 생각하고,", temperature=0, max_new_tokens=8))


def test_a_kernel_of_another_format_is_refused(tiny_dir):
    with pytest.raises(KoGPTError, match="does not compute int8 weights"):
        KoGPT.load(str(tiny_dir), device="cpu", quantize="int8", kernel="w4g32")
