"""The memory plan for KoGPT-6B's real config, on the meta device, for machines given by hand.

Hand arithmetic the expectations come from (6,166,502,400 parameters in all):

    wte      64512 x 4096                                   = 264,241,152 params  (16-bit: 528,482,304 B)
    block    ln_1 2x4096 = 8,192; q,k,v,out 4 x 4096^2 = 67,108,864;
             fc_in 4096x16384 + 16384 = 67,125,248; fc_out 16384x4096 + 4096 = 67,112,960
                                                            = 201,355,264 params  (16-bit: 402,710,528 B)
    ln_f     2x4096                                         =       8,192 params  (16-bit:      16,384 B)
    lm_head  64512x4096 + 64512 (bias, untied)              = 264,305,664 params  (16-bit: 528,611,328 B)
    rotary   buffer embed_positions (2048, 64), sized like a weight        (16-bit:     262,144 B)
    16-bit   264,241,152 + 28 x 201,355,264 + 8,192 + 264,305,664 = 6,166,502,400 params
             x 2 B + 262,144 = 12,333,266,944 B = 11.49 GiB (the card's "12.3 GB")
    KV       2 (k, v) x 28 layers x 4096 x 2 B = 458,752 B = 448 KiB per token;
             x 2048 tokens = 939,524,096 B = 0.875 GiB; 33,554,432 B (32 MiB) per layer
    int8     bitsandbytes quantizes the blocks' matrices only: 28 x (4 x 4096^2 + 2 x 4096 x 16384)
             = 5,637,144,576 params at 1 B; the other 529,357,824 params stay 16-bit (1,058,715,648 B);
             rotary at 1 B (131,072) -> 6,695,991,296 B = 6.24 GiB
    int4     5,637,144,576 x 0.5 B + 1,058,715,648 + 65,536 = 3,877,353,472 B = 3.61 GiB
Usable memory: free GPU memory less 0.5 GiB, free RAM less 1 GiB.
"""

from __future__ import annotations

import pytest
import torch

from kogpt.loading.checkpoint import published_config
from kogpt.placement.decide import decide
from kogpt.placement.devicemap import kv_by_device, meta_model
from kogpt.placement.options import Hardware, Options
from kogpt.placement.plan import make_plan

GiB = 1024**3
BLOCK = 402_710_528
WTE = 528_482_304
LN_F = 16_384
LM_HEAD = 528_611_328
ROTARY = 262_144
FP16 = 12_333_266_944
KV = 939_524_096
KV_LAYER = 33_554_432


@pytest.fixture(scope="module")
def config():
    return published_config()


@pytest.fixture(scope="module")
def model(config):
    return meta_model(config)


def plan(config, model, dtype, device, hardware, **options):
    return make_plan(config, dtype, device, Options(**options), hardware, model=model)


def devices(result) -> dict:
    return {use.name: use for use in result.devices}


def blocks_on(result, name: str) -> list[str]:
    return [block for block, device, _ in result.blocks if device == name]


def test_sizes_match_the_hand_count(config, model):
    assert sum(p.numel() for p in model.parameters()) == 6_166_502_400
    assert WTE + 28 * BLOCK + LN_F + LM_HEAD + ROTARY == FP16
    assert 2 * 28 * 4096 * 2 == 448 * 1024 and 448 * 1024 * 2048 == KV
    for quantize, total in [("int8", 6_695_991_296), ("int4", 3_877_353_472)]:
        result = plan(config, model, torch.float16, "cuda", Hardware((80 * GiB,), 64 * GiB), quantize=quantize)
        assert devices(result)["cuda:0"].weights == total
    fp32 = plan(config, model, torch.float32, "cuda", Hardware((80 * GiB,), 64 * GiB))
    assert devices(fp32)["cuda:0"].weights == 2 * FP16 and devices(fp32)["cuda:0"].kv == 2 * KV


def test_one_16gib_gpu_holds_float16_with_its_cache(config, model):
    decision = decide(config, Options(device="cuda"), Hardware((16 * GiB,), 24 * GiB), planning=True)
    choice, result = decision.choice, decision.plan
    assert choice.dtype == torch.float16  # the checkpoint is stored in float16
    gpu = devices(result)["cuda:0"]
    assert result.fits and set(devices(result)) == {"cuda:0"}
    assert (gpu.weights, gpu.kv, gpu.need) == (FP16, KV, 13_272_791_040)  # 12.36 GiB of 15.5 usable


def test_one_16gib_gpu_refuses_float32_and_names_what_fits(config, model):
    result = plan(config, model, torch.float32, "cuda", Hardware((16 * GiB,), 24 * GiB))
    # 24,666,533,888 + 1,879,048,192 = 24.72 GiB > 15.50 GiB
    assert not result.fits
    assert (
        "not enough memory on cuda:0 for KoGPT in float32: it needs 24.72 GiB" in result.problem
        and "15.50 GiB is usable" in result.problem
    )
    advice = result.refusal()
    assert "--dtype float16 (cuda:0 12.36 GiB)" in advice
    assert "--quantize int8 (cuda:0 7.11 GiB)" in advice  # 6,695,991,296 + KV 939,524,096
    assert "--quantize int4 (cuda:0 4.49 GiB)" in advice  # 3,877,353,472 + KV


def test_two_8gib_gpus_split_the_blocks(config, model):
    hardware = Hardware((8 * GiB, 8 * GiB), 32 * GiB)
    result = plan(config, model, torch.float16, "cuda", hardware, device_map="balanced")
    first, second = blocks_on(result, "cuda:0"), blocks_on(result, "cuda:1")
    # Every unit placed once, in order, GPU 0 first; neither GPU holds the whole model (where the
    # cut falls is accelerate's balancing rule, not ours).
    assert first + second == [name for name, _, _ in result.blocks]
    assert first[0] == "transformer.wte" and second[-1] == "lm_head" and len(first) > 1 and len(second) > 1
    for use in devices(result).values():  # each layer's KV cache sits with its block
        layers = sum(name.startswith("transformer.h.") for name in blocks_on(result, use.name))
        assert use.kv == layers * KV_LAYER and use.need <= use.budget
    assert result.fits and "cpu" not in devices(result)
    assert sum(use.weights for use in devices(result).values()) == FP16
    assert plan(config, model, torch.float16, "cuda", hardware, device_map="auto").device_map == result.device_map


def test_two_8gib_gpus_sequential_fills_gpu_0_first(config, model):
    hardware = Hardware((8 * GiB, 8 * GiB), 32 * GiB)
    result = plan(config, model, torch.float16, "cuda", hardware, device_map="sequential")
    balanced = plan(config, model, torch.float16, "cuda", hardware, device_map="balanced")
    first = devices(result)["cuda:0"]
    assert len(blocks_on(result, "cuda:0")) > len(blocks_on(balanced, "cuda:0"))  # GPU 0 takes more
    assert first.need <= first.budget and result.fits


def test_two_8gib_gpus_without_a_device_map_refuse_and_suggest_one(config, model):
    result = plan(config, model, torch.float16, "cuda", Hardware((8 * GiB, 8 * GiB), 32 * GiB))
    assert (
        not result.fits
        and "on cuda:0 for KoGPT in float16: it needs 12.36 GiB" in result.problem
        and "7.50 GiB is usable" in result.problem
    )
    assert "--device-map auto (cuda:0 5.77 GiB, cuda:1 6.59 GiB)" in result.refusal()


def test_one_8gib_gpu_offloads_the_rest_to_the_cpu(config, model):
    result = plan(config, model, torch.float16, "cuda", Hardware((8 * GiB,), 24 * GiB), device_map="auto")
    # Offloaded blocks run on GPU 0, so all 28 layers' KV cache (939,524,096) lives there, and room
    # for the largest offloaded block (lm_head) too: 8,053,063,680 - 939,524,096 - 528,611,328
    # = 6,584,928,256 for weights; wte + 15 blocks = 6,569,140,224 fits, one more block does not.
    gpu, cpu = devices(result)["cuda:0"], devices(result)["cpu"]
    assert blocks_on(result, "cuda:0") == ["transformer.wte", *(f"transformer.h.{i}" for i in range(15))]
    assert (gpu.weights, gpu.kv, gpu.staging) == (WTE + 15 * BLOCK, KV, LM_HEAD)
    assert gpu.need == 8_037_275_648 <= gpu.budget == 8 * GiB - GiB // 2
    assert (cpu.weights, cpu.kv) == (13 * BLOCK + LN_F + LM_HEAD + ROTARY, 0)
    assert result.fits


def test_quantized_weights_are_not_offloaded(config, model):
    # A 4 GiB GPU: 3,758,096,384 usable - KV 939,524,096 - room for lm_head 528,611,328 = 2,289,960,960
    # for wte (528,482,304) + 8 int8 blocks of 201,383,936; the other 20 blocks, ln_f and lm_head
    # (4,027,678,720 + 16,384 + 528,611,328 = 4,556,306,432 B = 4.24 GiB) would go to the CPU.
    result = plan(
        config, model, torch.float16, "cuda", Hardware((4 * GiB,), 24 * GiB), device_map="auto", quantize="int8"
    )
    assert not result.fits and result.problem == (
        "not enough GPU memory for KoGPT in int8 (float16 compute): 4.24 GiB would be offloaded, "
        "and quantized weights cannot be"
    )
    whole = plan(
        config, model, torch.float16, "cuda", Hardware((8 * GiB,), 24 * GiB), device_map="auto", quantize="int8"
    )
    assert whole.fits and set(devices(whole)) == {"cuda:0"}  # one 8 GiB GPU: 7.11 GiB of 7.5


def test_cpu_24gib_runs_bfloat16_but_not_float32(config, model):
    decision = decide(config, Options(device="cpu"), Hardware((), 24 * GiB))
    choice, result = decision.choice, decision.plan
    # float32 would need 24,666,533,888 + 2 x 939,524,096 + 1 GiB headroom > 24 GiB
    assert choice.dtype == torch.bfloat16
    assert result.fits and devices(result)["cpu"].need == FP16 + KV  # 12.36 GiB of 23 usable
    fp32 = plan(config, model, torch.float32, "cpu", Hardware((), 24 * GiB))
    assert (
        not fp32.fits
        and "on cpu for KoGPT in float32: it needs 24.72 GiB" in fp32.problem
        and "23.00 GiB is usable" in fp32.problem
    )
    assert "--dtype bfloat16 (cpu 12.36 GiB)" in fp32.refusal()
    assert "--quantize int4 (cpu 4.49 GiB)" in fp32.refusal()  # kogpt's CPU int4 (issue 13)


def test_cpu_8gib_refuses_and_only_disk_offload_fits(config, model):
    result = plan(config, model, torch.bfloat16, "cpu", Hardware((), 8 * GiB))
    assert (
        not result.fits
        and "on cpu for KoGPT in bfloat16: it needs 12.36 GiB" in result.problem
        and "7.00 GiB is usable" in result.problem
    )
    # int8 needs 6,695,991,296 + 939,524,096 = 7.11 GiB > 7.00: not offered
    assert "--quantize int8" not in result.refusal()
    assert "--offload-dir DIR (cpu 6.74 GiB, disk 6.12 GiB)" in result.refusal()


def test_cpu_8gib_with_an_offload_dir_puts_the_tail_on_disk(config, model):
    hardware = Hardware((), 8 * GiB, disk=100 * GiB)
    result = plan(config, model, torch.bfloat16, "cpu", hardware, offload_dir="/tmp/offload")
    # 7,516,192,768 usable - KV 939,524,096 - room for lm_head 528,611,328 = 6,048,057,344:
    # wte + 13 blocks (5,763,719,168) stay in RAM; the rest goes to disk.
    cpu, disk = devices(result)["cpu"], devices(result)["disk"]
    assert blocks_on(result, "cpu") == ["transformer.wte", *(f"transformer.h.{i}" for i in range(13))]
    assert (cpu.weights, cpu.kv, cpu.staging) == (WTE + 13 * BLOCK, KV, LM_HEAD)
    assert disk.weights == 15 * BLOCK + LN_F + LM_HEAD + ROTARY and disk.kv == 0
    assert result.fits
    full_disk = plan(config, model, torch.bfloat16, "cpu", Hardware((), 8 * GiB, disk=GiB), offload_dir="/tmp/o")
    assert not full_disk.fits and full_disk.problem == (
        "not enough disk for KoGPT in bfloat16: the offload needs 6.12 GiB, 1.00 GiB is free"
    )


def test_max_memory_caps_the_devices(config, model):
    hardware = Hardware((80 * GiB, 80 * GiB), 64 * GiB)
    result = plan(config, model, torch.float16, "cuda", hardware, max_memory={0: 4 * GiB, 1: 10 * GiB})
    use = devices(result)
    assert set(use) == {"cuda:0", "cuda:1"} and result.fits
    assert use["cuda:0"].need <= 4 * GiB and use["cuda:1"].need <= 10 * GiB


def test_kv_cache_follows_the_chosen_length(config, model):
    result = make_plan(config, torch.float16, "cpu", Options(), Hardware((), 64 * GiB), tokens=128, model=model)
    assert devices(result)["cpu"].kv == 448 * 1024 * 128


def test_offloaded_layers_keep_their_cache_on_the_main_device():
    device_map = {"transformer.wte": 0, "transformer.h.0": 0, "transformer.h.1": "cpu", "transformer.h.2": "disk"}
    assert kv_by_device(device_map, 3, 10) == {0: 30}
    assert kv_by_device({"": "cpu"}, 3, 10) == {"cpu": 30}
