"""The CPU loader that reads one tensor at a time gives exactly the model `from_pretrained` gives."""

from __future__ import annotations

import pytest
import torch

from kogpt.loading.checkpoint import load_config
from kogpt.loading.weights import load_streaming, read_tensors


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_bin_dir"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_model_equals_from_pretrained(fixture, dtype, request):
    from transformers import AutoModelForCausalLM

    path = request.getfixturevalue(fixture)
    want = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).state_dict()
    got = load_streaming(path, load_config(path), dtype).state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name


def test_streamed_model_generates_like_from_pretrained(tiny_bin_dir):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 6, 7, 8]])
    want = AutoModelForCausalLM.from_pretrained(tiny_bin_dir, dtype=torch.float32)
    got = load_streaming(tiny_bin_dir, load_config(tiny_bin_dir), torch.float32)
    kwargs = dict(do_sample=False, max_new_tokens=10, pad_token_id=1)
    assert torch.equal(got.generate(ids, **kwargs), want.generate(ids, **kwargs))


def test_a_checkpoint_missing_a_tensor_is_refused(tmp_path, tiny_bin_dir):
    import shutil

    for file in tiny_bin_dir.iterdir():
        shutil.copy(file, tmp_path / file.name)
    state = dict(read_tensors(tiny_bin_dir))
    del state["lm_head.weight"]
    torch.save({k: v.clone() for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="lm_head.weight"):
        load_streaming(tmp_path, load_config(tmp_path), torch.float32)


def test_integer_tensors_keep_their_dtype(tmp_path, tiny_dir):
    """Only floating-point tensors take the compute dtype: an integer buffer read as bfloat16 would
    lose every value above 256."""
    import shutil

    from safetensors.torch import load_file, save_file

    for file in tiny_dir.iterdir():
        shutil.copy(file, tmp_path / file.name)
    state = load_file(tmp_path / "model.safetensors")
    steps = torch.arange(1000, 1010, dtype=torch.int64)
    save_file({**state, "transformer.steps": steps}, tmp_path / "model.safetensors", metadata={"format": "pt"})

    def add_buffer(model):
        model.transformer.register_buffer("steps", torch.empty(10, dtype=torch.int64, device="meta"))

    model = load_streaming(tmp_path, load_config(tmp_path), torch.bfloat16, prepare=add_buffer)
    assert model.transformer.steps.dtype == torch.int64
    assert torch.equal(model.transformer.steps, steps)
    assert model.lm_head.weight.dtype == torch.bfloat16
