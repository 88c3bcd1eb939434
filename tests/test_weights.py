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
