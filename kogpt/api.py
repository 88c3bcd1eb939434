"""`KoGPT`: the Python API. Load once, then `generate()` or `stream()` completions."""

from __future__ import annotations

import dataclasses
import logging
import random
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION
from kogpt import text as text_lib
from kogpt.errors import Interrupted, Terminated
from kogpt.generate import Chunk, stream
from kogpt.loading.load import Loaded, load
from kogpt.placement.options import Options, parse_max_memory
from kogpt.context import fit_prompt
from kogpt.settings import InputError, SamplingSettings, check_settings
from kogpt.transcript import Record

log = logging.getLogger(__name__)


class KoGPT:
    """A loaded KoGPT model and tokenizer.

    >>> gpt = KoGPT.load(device="cuda")                     # doctest: +SKIP
    >>> print(gpt.generate("인간처럼 생각하고,", max_length=64))  # doctest: +SKIP
    """

    def __init__(self, loaded: Loaded, static_cache: bool | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.static_cache = loaded.decision.static_cache if static_cache is None else static_cache

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        revision: str = DEFAULT_REVISION,
        device: str = "cuda",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        quantize: str = "none",
        device_map: str | None = None,
        max_memory: str | dict | None = None,
        offload_dir: str | None = None,
        static_cache: bool | None = None,
        threads: int | None = None,
        kernel: str | None = None,
        cache: bool = True,
    ) -> KoGPT:
        """Load from a hub repo id or a local checkpoint directory.

        `quantize="int8"` keeps int8 weights (on the CPU: kogpt's weight-only kernels, half the
        memory of bfloat16 and faster; on a GPU: bitsandbytes). `device_map` (auto, balanced,
        sequential) splits the model over the GPUs and the CPU within `max_memory`
        ("0=10GiB,cpu=30GiB" or a dict), putting what is left in `offload_dir`. `static_cache`
        (default: on one plain CUDA GPU only) decodes with a preallocated, compiled KV cache.
        On the CPU, `threads` (default: the physical cores) compute, `kernel` overrides the kernel
        measured fastest on this CPU (`kogpt.loading.kernels.KERNELS`), and `cache=False` skips the
        converted-weights cache.
        """
        options = Options(
            model=model,
            revision=revision,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            quantize=quantize,
            device_map=device_map,
            max_memory=parse_max_memory(max_memory),
            offload_dir=offload_dir,
            static_cache=static_cache,
            threads=threads,
            kernel=kernel,
            cache=cache,
        )
        return cls.from_options(options)

    @classmethod
    def from_options(cls, options: Options, path: Path | None = None) -> KoGPT:
        """Load what `options` asks for (`path`: the checkpoint directory, when already resolved)."""
        return cls(load(options, path))

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, NFC-normalised; special-token strings in it stay plain text.

        Text that cannot be encoded (a lone surrogate) raises `TextError`, a `KoGPTError`.
        """
        return encode(self.tokenizer, text)

    def stream(self, prompt: str, settings: SamplingSettings | None = None, **overrides) -> Iterator[Chunk]:
        """Yield the completion of `prompt` as `Chunk`s of text while it is generated.

        `overrides` are `SamplingSettings` fields (temperature=0.5, max_length=64, ...). The prompt
        and every setting are checked here, before any model work (`InputError`, a `KoGPTError`).
        """
        settings = check_settings(settings, **overrides)
        return self._stream(self.fit_context(self.encode(prompt), settings), settings)

    def _stream(self, ids: list[int], settings: SamplingSettings) -> Iterator[Chunk]:
        log.debug("prompt: %d tokens; settings %s", len(ids), settings.as_dict())
        return stream(self.model, self.tokenizer, ids, settings, self.context_length, self.static_cache)

    def fit_context(self, ids: list[int], settings: SamplingSettings, announce: bool = True) -> list[int]:
        """Check the prompt fits the context with room to generate; with `truncate`, keep its end
        (and log it, unless `announce` is off: a check before the generation that will log it)."""
        return fit_prompt(ids, settings, self.context_length, announce)

    def generate(self, prompt: str, temperature: float = 0.8, max_length: int = 128, **overrides) -> str:
        """The completion of `prompt` (without the prompt), as one string; `complete()` gives several."""
        settings = check_settings(overrides.pop("settings", None), temperature=temperature, max_length=max_length,
                                  **overrides)
        if settings.num_return_sequences != 1:
            raise InputError("generate() returns one completion: use complete() for num_return_sequences above 1")
        return "".join(chunk.text for chunk in self.stream(prompt, settings))

    def complete(
        self,
        prompt: str,
        settings: SamplingSettings,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[Record]:
        """All `settings.num_return_sequences` completions of `prompt`, one after another.

        Sequence i uses seed `settings.seed + i` (a fresh random base seed when unset), so every
        record can be reproduced. `on_text(i, text)` receives the text as it streams. Ctrl-C raises
        `Interrupted`, and the command line's SIGTERM/SIGHUP `Terminated`: both carry the finished
        records and the partial one (`finish_reason` "interrupted").
        """
        settings = check_settings(settings)
        ids = self.fit_context(self.encode(prompt), settings)
        base = settings.seed if settings.seed is not None else random.randrange(2**31)
        prompt_tokens = len(ids)
        records: list[Record] = []
        for index in range(settings.num_return_sequences):
            seed = base + index
            record = Record(prompt, settings=settings.as_dict(), seed=seed, index=index, prompt_tokens=prompt_tokens)
            records.append(record)
            try:
                for chunk in self._stream(ids, dataclasses.replace(settings, seed=seed)):
                    if on_text and chunk.text:
                        on_text(index, chunk.text)
                    record.completion += chunk.text  # after it was shown: the record is what was seen
                    record.completion_tokens = chunk.tokens
                    record.seconds = chunk.seconds
                    record.first_token_seconds = chunk.first_token_seconds
                    record.finish_reason = chunk.finish_reason
            except KeyboardInterrupt:
                record.finish_reason = "interrupted"
                raise Interrupted(records) from None
            except Terminated as exc:
                record.finish_reason = "interrupted"
                exc.records = records
                raise
        return records


def encode(tokenizer, text: str) -> list[int]:
    """KoGPT's token ids of `text`: checked to be encodable, NFC-normalised, special-token strings
    kept as text. The one encoding for the REPL, scripting's early checks and the API."""
    normal = unicodedata.normalize("NFC", text_lib.check(text, "the prompt"))
    if normal != text:
        log.debug("normalised the prompt to NFC (%d -> %d characters)", len(text), len(normal))
    return tokenizer.encode(normal, add_special_tokens=False, split_special_tokens=True)
