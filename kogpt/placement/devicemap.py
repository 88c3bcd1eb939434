"""accelerate's device maps on the meta device: module sizes, KV cache per device, offload rules.

The model is built with empty weights; sizes come from `compute_module_sizes`, maps from
`get_balanced_memory` and `infer_auto_device_map`, as transformers computes them for `device_map="auto"`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import contextmanager

import torch

NO_SPLIT = ["GPTJBlock"]
OFFLOADED = ("cpu", "disk")


def meta_model(config):
    """The model with empty (meta) weights: shapes and module names, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        # float32, whatever the config says: accelerate sizes a weight by the smaller of its dtype and the plan's.
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def count_parameters(model) -> int:
    return sum(param.numel() for param in model.parameters())


def block_names(config) -> list[str]:
    """The units the plan places, in order: embedding, the n_layer blocks, final norm, lm_head."""
    return ["transformer.wte", *(f"transformer.h.{i}" for i in range(config.n_layer)), "transformer.ln_f", "lm_head"]


def size_dtypes(model, dtype: torch.dtype, quantize: str):
    """The (dtype, special_dtypes) accelerate sizes with: quantization shrinks the blocks' matrices only.

    bitsandbytes keeps lm_head, embeddings, norms and biases in `dtype`, as transformers does.
    """
    if quantize == "none":
        return dtype, None
    from accelerate.utils import CustomDtype

    packed = torch.int8 if quantize == "int8" else CustomDtype.INT4
    special = {
        name: dtype
        for name, param in model.named_parameters()
        if not (name.startswith("transformer.h.") and name.endswith(".weight") and param.dim() == 2)
    }
    return packed, special


@contextmanager
def quiet_accelerate(name: str = "accelerate.utils.modeling"):
    """Silence the warnings of accelerate's logger `name` for a while.

    Planning warns about GPUs this machine lacks (injected on purpose); loading an offloaded model
    warns that "parameters are on the meta device", which the plan has already said.
    """
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def device_of(device_map: dict, name: str):
    """The device of module `name` under `device_map` (the longest key that is a prefix of it)."""
    keys = [key for key in device_map if key == "" or name == key or name.startswith(key + ".")]
    return device_map[max(keys, key=len)]


def main_device(device_map: dict):
    """Where accelerate runs offloaded blocks (and keeps their KV cache): the first GPU, else the CPU."""
    return next((device for device in device_map.values() if device not in OFFLOADED), "cpu")


def kv_by_device(device_map: dict, n_layer: int, kv_layer: int) -> dict:
    """KV-cache bytes per device: each layer's cache lives where the layer runs."""
    kv: dict = defaultdict(int)
    main = main_device(device_map)
    for i in range(n_layer):
        device = device_of(device_map, f"transformer.h.{i}")
        kv[main if device in OFFLOADED else device] += kv_layer
    return kv


def infer_map(model, strategy: str, budget: dict, dtypes: tuple, n_layer: int, kv_layer: int) -> dict:
    """accelerate's device map, re-run with each device's KV cache reserved until that settles."""
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    dtype, special = dtypes
    reserve = dict.fromkeys(budget, 0)
    for _ in range(8):
        memory = {d: max(0, budget[d] - reserve[d]) for d in budget}
        with quiet_accelerate():
            if strategy != "sequential" and sum(isinstance(d, int) and memory[d] > 0 for d in memory) > 1:
                memory = get_balanced_memory(model, memory, NO_SPLIT, dtype, special)
            device_map = dict(infer_auto_device_map(model, memory, NO_SPLIT, dtype, special))
        kv = kv_by_device(device_map, n_layer, kv_layer)
        grown = {d: max(reserve[d], kv.get(d, 0)) for d in budget}
        if grown == reserve:
            break
        reserve = grown
    return device_map
