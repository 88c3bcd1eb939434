"""The dtype policy and memory arithmetic, with memory figures injected."""

from __future__ import annotations

import pytest
import torch

from kogpt.placement import memory

GiB = memory.GiB
N6B = 6_166_502_400
KV16 = 2048 * 448 * 1024  # KoGPT's 16-bit KV cache at full context


def kogpt_config():
    from transformers import GPTJConfig

    return GPTJConfig(
        vocab_size=64512, n_positions=2048, n_embd=4096, n_layer=28, n_head=16, rotary_dim=64,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1,
    )


def test_full_config_has_the_model_cards_parameter_count():
    assert memory.parameter_count(kogpt_config()) == N6B


def test_kv_cache_is_448_kib_per_token_in_16_bit():
    config = kogpt_config()
    assert memory.kv_cache_bytes(config, 1, torch.float16) == 448 * 1024
    assert memory.kv_cache_bytes(config, 2048, torch.float32) == 2 * KV16


@pytest.mark.parametrize(
    "device, stored, free, expected",
    [
        ("cuda", torch.float16, 80 * GiB, torch.float16),  # float16 revision stays float16
        ("cuda", torch.float32, 80 * GiB, torch.float32),  # float32 revision fits an 80 GB GPU
        ("cuda", torch.float32, 24 * GiB, torch.float16),  # ... but not a 24 GB one
        ("cpu", torch.float16, 64 * GiB, torch.float32),  # never float16 on the CPU
        ("cpu", torch.float16, 23 * GiB, torch.bfloat16),  # this machine: float32 does not fit
        ("cpu", torch.float32, 23 * GiB, torch.bfloat16),
    ],
)
def test_auto_dtype_policy(device, stored, free, expected):
    choice = memory.choose_dtype("auto", device, stored, N6B, free, KV16)
    assert choice.dtype == expected
    assert choice.reason


def test_cpu_auto_never_picks_float16_even_when_tiny():
    choice = memory.choose_dtype("auto", "cpu", torch.float16, 1000, 2 * GiB, 0)
    assert choice.dtype == torch.float32


def test_explicit_dtype_always_wins():
    for name, dtype in memory.DTYPES.items():
        assert memory.choose_dtype(name, "cpu", torch.float16, N6B, 1 * GiB, KV16).dtype == dtype
        assert memory.choose_dtype(name, "cuda", torch.float32, N6B, 1 * GiB, KV16).dtype == dtype


def test_the_published_config_is_kogpts():
    from kogpt.loading.checkpoint import published_config

    assert published_config().to_dict() | {"dtype": None} == kogpt_config().to_dict() | {"dtype": None}
    assert str(published_config("KoGPT6B-ryan1.5b").dtype).endswith("float32")
    assert memory.parameter_count(published_config()) == N6B
