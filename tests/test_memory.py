"""The dtype policy and memory arithmetic, with memory figures injected."""

from __future__ import annotations

import pytest
import torch

from kogpt.placement import memory
from kogpt.placement.devicemap import count_parameters, meta_model

GiB = memory.GiB
N6B = 6_166_502_400
KV16 = 2048 * 448 * 1024  # KoGPT's 16-bit KV cache at full context


# KoGPT 6B's config.json as REFERENCE.md gives it (from the hub), field by field.
KOGPT_FIELDS = dict(
    model_type="gptj", n_layer=28, n_embd=4096, n_head=16, n_inner=None, rotary_dim=64, n_positions=2048,
    vocab_size=64512, bos_token_id=0, eos_token_id=1, activation_function="gelu_new",
    layer_norm_epsilon=1e-5, tie_word_embeddings=False,
)  # fmt: skip


def kogpt_config():
    from kogpt.loading.checkpoint import published_config

    return published_config()


def test_full_config_has_the_model_cards_parameter_count():
    assert count_parameters(meta_model(kogpt_config())) == N6B


def test_kv_cache_is_448_kib_per_token_in_16_bit():
    config = kogpt_config()
    assert memory.kv_cache_bytes(config, 1, torch.float16) == 448 * 1024
    assert memory.kv_cache_bytes(config, 2048, torch.float32) == 2 * KV16


@pytest.mark.parametrize(
    "device, stored, free, expected, why",
    [
        ("cuda", torch.float16, 80 * GiB, torch.float16, "stored in half precision"),  # float16 revision stays
        ("cuda", torch.float32, 80 * GiB, torch.float32, "fit the GPU's 80.00 GiB free"),  # fits an 80 GB GPU
        ("cuda", torch.float32, 24 * GiB, torch.float16, "float32 needs 24.72 GiB, the GPU has 24.00 GiB"),
        ("cpu", torch.float16, 64 * GiB, torch.float32, "fit in 64.00 GiB of available RAM"),  # never float16
        ("cpu", torch.float16, 23 * GiB, torch.bfloat16, "only 23.00 GiB of RAM is available"),  # this machine
        ("cpu", torch.float32, 23 * GiB, torch.bfloat16, "bfloat16 halves that"),
    ],
)
def test_auto_dtype_policy(device, stored, free, expected, why):
    choice = memory.choose_dtype("auto", device, stored, N6B, free, KV16)
    assert choice.dtype == expected
    assert why in choice.reason


def test_cpu_auto_never_picks_float16_even_when_tiny():
    choice = memory.choose_dtype("auto", "cpu", torch.float16, 1000, 2 * GiB, 0)
    assert choice.dtype == torch.float32


def test_explicit_dtype_always_wins():
    for name, dtype in memory.DTYPES.items():
        assert memory.choose_dtype(name, "cpu", torch.float16, N6B, 1 * GiB, KV16).dtype == dtype
        assert memory.choose_dtype(name, "cuda", torch.float32, N6B, 1 * GiB, KV16).dtype == dtype


def test_the_published_config_is_kogpts():
    from kogpt.loading.checkpoint import published_config

    config = published_config()
    assert {key: getattr(config, key) for key in KOGPT_FIELDS} == KOGPT_FIELDS
    assert str(config.dtype).endswith("float16")
    assert str(published_config("KoGPT6B-ryan1.5b").dtype).endswith("float32")
