"""16-bit Linears on the CPU: each phase by its own kernel (a decode step by torch.mv, kernel
bf16mv; many-row inputs in float32 blocks, bf16f32 and fp16f32), and float32 prompts on CPUs
without fast bfloat16 matrix instructions."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from kogpt import KoGPT
from kogpt.errors import KoGPTError
from kogpt.loading import bf16 as prefill
from kogpt.loading.kernels import KERNELS
from kogpt.loading.phases import MANY_ROWS


def test_blocked_float32_linear_equals_a_float32_linear(monkeypatch):
    monkeypatch.setattr(prefill, "BLOCK_ROWS", 7)  # several blocks and a ragged last one
    torch.manual_seed(0)
    weight = torch.randn(30, 12).to(torch.bfloat16)
    bias = torch.randn(30).to(torch.bfloat16)
    x = torch.randn(2, 9, 12).to(torch.bfloat16)
    got = prefill.blocked_float32_linear(x, weight, bias)
    expected = nn.functional.linear(x.float(), weight.float(), bias.float()).to(torch.bfloat16)
    assert got.shape == (2, 9, 30) and got.dtype == torch.bfloat16
    assert torch.equal(got, expected)


def test_a_layer_dispatches_by_rows_to_its_phase_kernel():
    calls = []

    def recording(phase):
        return lambda x, t: (calls.append((phase, x.shape[0])), KERNELS["bf16f32"].run(x, t))[1]

    layer = nn.Linear(8, 4).to(torch.bfloat16).requires_grad_(False)
    runs = {phase: recording(phase) for phase in ("step", "batch", "prefill")}
    assert prefill.apply(nn.Sequential(layer), runs) == 1 and isinstance(layer, prefill.CpuLinear)
    for rows in (1, 4, MANY_ROWS - 1, MANY_ROWS, 128):
        out = layer(torch.randn(1, rows, 8, dtype=torch.bfloat16))
        assert out.shape == (1, rows, 4)
    assert calls == [("step", 1), ("batch", 4), ("batch", MANY_ROWS - 1), ("prefill", MANY_ROWS), ("prefill", 128)]
    layer.requires_grad_(True)  # training: autograd needs the ordinary kernel
    layer(torch.randn(1, MANY_ROWS, 8, dtype=torch.bfloat16))
    assert len(calls) == 5


def test_bf16t_computes_a_few_rows_as_weight_times_x_transposed_like_f_linear():
    torch.manual_seed(0)
    layer = nn.Linear(64, 48).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(2, 3, 64).to(torch.bfloat16)  # 6 rows: the batch phase
    want = nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
    prefill.apply(nn.Sequential(layer), {"batch": KERNELS["bf16t"].run})
    got = layer(x)
    assert got.shape == (2, 3, 48) and got.dtype == torch.bfloat16
    assert float((got.float() - want).norm() / want.norm()) < 0.01
    assert KERNELS["bf16t"].layout == "bf16" and KERNELS["bf16t"].phases == ("batch",)


def test_fp16f32_computes_float16_weights_in_float32_and_matches_float32():
    torch.manual_seed(0)
    weight, x = torch.randn(64, 32).half(), torch.randn(20, 32).half()
    got = KERNELS["fp16f32"].run(x, {"weight": weight})
    assert got.dtype == torch.float16
    assert torch.equal(got, (x.float() @ weight.float().t()).half())


def test_a_bfloat16_cpu_load_uses_it_and_generates_the_same(tiny_dir, monkeypatch):
    monkeypatch.setattr(prefill, "needs_upcast", lambda: True)
    fast = KoGPT.load(str(tiny_dir), device="cpu", dtype="bfloat16")
    monkeypatch.setattr(prefill, "needs_upcast", lambda: False)
    plain = KoGPT.load(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert any(isinstance(m, prefill.CpuLinear) for m in fast.model.modules())
    assert not any(isinstance(m, prefill.CpuLinear) for m in plain.model.modules())
    ids = torch.tensor([fast.encode("한국어 언어 모델은 문장을 이어서 쓰는 일을 잘한다.")])
    assert ids.shape[1] >= MANY_ROWS
    with torch.inference_mode():
        reference = fast.model.float()(ids).logits
        fast.model.to(torch.bfloat16)
        a, b = fast.model(ids).logits.float(), plain.model(ids).logits.float()
    # float32 accumulation is at least as close to the float32 model as the bfloat16 kernel
    assert (a - reference).abs().max() <= (b - reference).abs().max() + 1e-2
    prompt = "오늘은 날씨가 맑아서 공원에 산책을"
    assert fast.generate(prompt, temperature=0, max_new_tokens=8) == plain.generate(prompt, temperature=0, max_new_tokens=8)


def test_one_row_goes_through_torch_mv_when_gemv_is_on(monkeypatch):
    calls = []
    real_mv = torch.mv
    monkeypatch.setattr(torch, "mv", lambda w, x: (calls.append(x.shape), real_mv(w, x))[1])
    torch.manual_seed(0)
    layer = nn.Linear(16, 8).to(torch.bfloat16).requires_grad_(False)
    expected = [layer(torch.ones(1, 1, 16, dtype=torch.bfloat16)), layer(torch.ones(16, dtype=torch.bfloat16))]
    prefill.apply(nn.Sequential(layer), {"step": KERNELS["bf16mv"].run})
    got = [layer(torch.ones(1, 1, 16, dtype=torch.bfloat16)), layer(torch.ones(16, dtype=torch.bfloat16))]
    assert calls == [(16,), (16,)]
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and torch.allclose(g.float(), e.float(), atol=2e-2)
    layer(torch.ones(1, 3, 16, dtype=torch.bfloat16))  # several rows: F.linear
    assert len(calls) == 2


def test_the_bf16mv_kernel_shares_the_cache_with_bf16_and_decodes_the_same(tiny_bin_dir, caplog):
    plain = KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="bfloat16", kernel="bf16")
    with caplog.at_level(logging.DEBUG, logger="kogpt"):
        gemv = KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="bfloat16", kernel="bf16mv")
    assert "mapped from the converted-weights cache" in caplog.text  # the same bfloat16 tensors
    layers = [m for m in gemv.model.modules() if isinstance(m, nn.Linear)]
    assert layers and all(isinstance(m, prefill.CpuLinear) and m.runs["step"] is KERNELS["bf16mv"].run for m in layers)
    assert not any(isinstance(m, prefill.CpuLinear) for m in plain.model.modules())
    with pytest.raises(KoGPTError, match="computes in float16, not in the bfloat16"):
        KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="bfloat16", kernel="fp16")
    prompt = "오늘은 날씨가 맑아서 공원에 산책을"
    assert gemv.generate(prompt, temperature=0, max_new_tokens=8) == plain.generate(prompt, temperature=0, max_new_tokens=8)
