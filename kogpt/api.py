"""`KoGPT`: the Python API. Load once, then `generate()` or `stream()` completions."""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from collections.abc import Iterator

from kogpt import model as model_lib
from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION
from kogpt.errors import KoGPTError
from kogpt.generate import Chunk, SamplingSettings, stream

log = logging.getLogger(__name__)


class KoGPT:
    """A loaded KoGPT model and tokenizer.

    >>> gpt = KoGPT.load(device="cuda")                     # doctest: +SKIP
    >>> print(gpt.generate("인간처럼 생각하고,", max_length=64))  # doctest: +SKIP
    """

    def __init__(self, loaded: model_lib.Loaded, static_cache: bool | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        # The static cache (compiled decoding) is the fast path on a GPU; on the CPU it gains nothing.
        self.static_cache = loaded.device.type == "cuda" if static_cache is None else static_cache

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        revision: str = DEFAULT_REVISION,
        device: str = "cuda",
        dtype: str = "auto",
        quantize: str = "none",
        static_cache: bool | None = None,
    ) -> KoGPT:
        """Load from a hub repo id or a local checkpoint directory; see `kogpt.model.load`.

        `quantize="int8"` (CPU) keeps int8 weights: half the memory of bfloat16, and faster.
        `static_cache` (default: on CUDA only) generates with a static KV cache, which
        transformers compiles with `torch.compile` on CUDA.
        """
        return cls(model_lib.load(model, revision, device, dtype, quantize), static_cache)

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, NFC-normalised; special-token strings in it stay plain text."""
        normal = unicodedata.normalize("NFC", text)
        if normal != text:
            log.debug("normalised the prompt to NFC (%d -> %d characters)", len(text), len(normal))
        return self.tokenizer.encode(normal, add_special_tokens=False, split_special_tokens=True)

    def stream(self, prompt: str, settings: SamplingSettings | None = None, **overrides) -> Iterator[Chunk]:
        """Yield the completion of `prompt` as `Chunk`s of text while it is generated.

        `overrides` are `SamplingSettings` fields (temperature=0.5, max_length=64, ...).
        """
        settings = dataclasses.replace(settings or SamplingSettings(), **overrides)
        ids = self.encode(prompt)
        if not ids:
            raise KoGPTError("the prompt is empty")
        log.debug("prompt: %d tokens; settings %s", len(ids), settings.as_dict())
        return stream(self.model, self.tokenizer, ids, settings, self.context_length, self.static_cache)

    def generate(self, prompt: str, temperature: float = 0.8, max_length: int = 128, **overrides) -> str:
        """The completion of `prompt` (without the prompt), as one string."""
        chunks = self.stream(prompt, temperature=temperature, max_length=max_length, **overrides)
        return "".join(chunk.text for chunk in chunks)
