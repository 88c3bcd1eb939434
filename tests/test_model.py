"""Loading: the real loader on tiny checkpoints, and its one-line failures."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from kogpt import KoGPT, KoGPTError
from kogpt.loading.checkpoint import SPECIAL_TOKENS


def copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_hub_style_float16_bin_loads_as_float32_on_cpu(tiny_bin_dir):
    gpt = KoGPT.load(str(tiny_bin_dir), device="cpu")
    assert gpt.loaded.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in gpt.model.parameters())
    assert not gpt.model.training
    assert gpt.model.config.pad_token_id == gpt.tokenizer.eos_token_id == 1
    chunks = list(gpt.stream("서울의", temperature=0, max_new_tokens=5))
    assert chunks[-1].tokens == 5 or chunks[-1].finish_reason == "eos"
    assert "".join(c.text for c in chunks) == gpt.generate("서울의", temperature=0, max_new_tokens=5)


def test_gelu_is_fused_and_computes_what_transformers_computes(tiny_bin_dir):
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", dtype="float32")
    assert not any(isinstance(m, NewGELUActivation) for m in gpt.model.modules())
    assert sum(isinstance(m, torch.nn.GELU) for m in gpt.model.modules()) == gpt.model.config.n_layer
    reference = AutoModelForCausalLM.from_pretrained(tiny_bin_dir, dtype=torch.float32)
    assert isinstance(reference.transformer.h[0].mlp.act, NewGELUActivation)  # else this test compares nothing
    ids = torch.tensor([gpt.encode("인간처럼 생각하고, 행동하는 AI 모델")])
    with torch.inference_mode():
        torch.testing.assert_close(gpt.model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_special_tokens_are_kogpts(gpt):
    tok = gpt.tokenizer
    for attr, token in SPECIAL_TOKENS.items():
        assert getattr(tok, attr) == token
    assert (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    assert tok.encode("안녕", add_special_tokens=True)[0] != tok.bos_token_id  # no [BOS] added


def test_explicit_dtype_wins(tiny_dir):
    gpt = KoGPT.load(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in gpt.model.parameters()} == {torch.bfloat16}
    chunks = list(gpt.stream("서울", temperature=0, max_new_tokens=3))
    assert chunks[-1].tokens == 3 or chunks[-1].finish_reason == "eos"


def test_cuda_without_a_gpu_says_so_and_uses_the_cpu(tiny_dir, caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="kogpt"):
        gpt = KoGPT.load(str(tiny_dir), device="cuda")
    assert gpt.model.device.type == "cpu"
    assert "CUDA is not available" in caplog.text


def test_missing_directory(tmp_path):
    with pytest.raises(KoGPTError, match="no such model directory"):
        KoGPT.load(str(tmp_path / "nope"), device="cpu")


def test_directory_without_config(tiny_dir, tmp_path):
    d = copy_ckpt(tiny_dir, tmp_path / "c")
    (d / "config.json").unlink()
    with pytest.raises(KoGPTError, match="has no config.json"):
        KoGPT.load(str(d), device="cpu")


def test_directory_without_weights(tiny_dir, tmp_path):
    d = copy_ckpt(tiny_dir, tmp_path / "c")
    (d / "model.safetensors").unlink()
    with pytest.raises(KoGPTError, match="has no weights"):
        KoGPT.load(str(d), device="cpu")


def test_truncated_weights_name_the_directory(tiny_dir, tmp_path):
    d = copy_ckpt(tiny_dir, tmp_path / "c")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(KoGPTError, match="could not load the weights in .*c"):
        KoGPT.load(str(d), device="cpu")


def test_config_that_is_not_gptj(tiny_dir, tmp_path):
    d = copy_ckpt(tiny_dir, tmp_path / "c")
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "bert"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(KoGPTError, match="'bert' model; KoGPT needs model_type 'gptj'"):
        KoGPT.load(str(d), device="cpu")


def test_tokenizer_without_a_special_token(tiny_dir, tmp_path):
    d = copy_ckpt(tiny_dir, tmp_path / "c")
    data = json.loads((d / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "[MASK]"]
    data["model"]["vocab"].pop("[MASK]")
    (d / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(KoGPTError, match=r"has no \[MASK\] token"):
        KoGPT.load(str(d), device="cpu")


def test_offline_with_nothing_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(KoGPTError, match="not in the local cache.*--model DIR"):
        KoGPT.load("kakaobrain/kogpt", device="cpu")


def test_not_enough_memory_stops_before_loading(tiny_dir, monkeypatch):
    from kogpt.placement import memory

    monkeypatch.setattr(memory, "free_memory", lambda device: 1000)
    with pytest.raises(KoGPTError, match="not enough memory on cpu"):
        KoGPT.load(str(tiny_dir), device="cpu", dtype="float32")


def test_from_pretrained_loads_no_hub_kernels(tiny_dir, monkeypatch):
    """transformers >= 5.25 kernelizes by default, fetching Hub code on CUDA (offline: a failed load)."""
    from transformers import PreTrainedModel

    from kogpt.loading.load import load_weights

    asked = []
    original = PreTrainedModel.set_use_kernels
    monkeypatch.setattr(PreTrainedModel, "set_use_kernels",
                        lambda self, use, *a, **k: (asked.append(use), original(self, use, *a, **k))[1])
    model = load_weights(tiny_dir, torch.float32, torch.device("cpu"), pad_token_id=1, trust_remote_code=False)
    assert asked and not any(asked) and not model.use_kernels
