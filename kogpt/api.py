"""`KoGPT`: the Python API. Load once, then `generate()` or `stream()` completions."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from kogpt.context import fit_prompt
from kogpt.defaults import DEFAULT_MODEL, DEFAULT_REVISION
from kogpt.encoding import encode, encode_tail
from kogpt.engine import Chunk, Engine
from kogpt.errors import Interrupted, Terminated
from kogpt.evaluate.scoring import token_logprobs
from kogpt.loading.load import Loaded, load
from kogpt.placement.options import Options, input_device, parse_max_memory
from kogpt.settings import InputError, SamplingSettings, check_settings, sequence_seed
from kogpt.transcript import Record

log = logging.getLogger(__name__)


class KoGPT:
    """A loaded KoGPT model and tokenizer.

    >>> gpt = KoGPT.load(device="cuda")                     # doctest: +SKIP
    >>> print(gpt.generate("인간처럼 생각하고,", max_length=64))  # doctest: +SKIP
    """

    def __init__(self, loaded: Loaded, static_cache: bool | None = None, compile: bool = True) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.static_cache = loaded.decision.static_cache if static_cache is None else static_cache
        # Compiling the step pays off on CUDA only (CUDA graphs over the static cache).
        self.compile = compile and self.static_cache and loaded.device.type == "cuda"
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The model's generation engine (made on first use: a tokenizer-only KoGPT never needs one)."""
        with self._engine_lock:
            if self._engine is None:
                # Input ids go where the first block runs: not model.device, `meta` when it is on disk.
                self._engine = Engine(self.model, self.tokenizer, self.loaded.context_length,
                                      input_device(self.model), static_cache=self.static_cache, compile=self.compile)
                if self.loaded.decision.prefill_chunk:  # sized for the CPU's prompt kernel
                    self._engine.prefill_chunk = self.loaded.decision.prefill_chunk
            return self._engine

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
        compile: bool = True,
        threads: int | None = None,
        kernel: str | None = None,
        cache: bool = True,
        mmap: bool = True,
    ) -> KoGPT:
        """Load from a hub repo id or a local checkpoint directory.

        `quantize="int8"` keeps int8 weights (on the CPU: kogpt's weight-only kernels, half the
        memory of bfloat16 and faster; on a GPU: bitsandbytes). `device_map` (auto, balanced,
        sequential) splits the model over the GPUs and the CPU within `max_memory`
        ("0=10GiB,cpu=30GiB" or a dict), putting what is left in `offload_dir`. `static_cache`
        (default: on one plain CUDA GPU only) decodes with a preallocated KV cache, over which the
        engine compiles its one-token step with `torch.compile` (CUDA graphs) unless `compile=False`.
        On the CPU, `threads` (default: $OMP_NUM_THREADS, else the physical cores) compute, `kernel` overrides the kernel
        measured fastest on this CPU (`kogpt.loading.kernels.KERNELS`), `cache=False` skips the
        converted-weights cache, and `mmap=False` reads the cache file into memory instead of mapping it.
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
            mmap=mmap,
        )
        return cls.from_options(options, compile=compile)

    @classmethod
    def from_options(cls, options: Options, path: Path | None = None, compile: bool = True) -> KoGPT:
        """Load what `options` asks for (`path`: the checkpoint directory, when already resolved)."""
        return cls(load(options, path), compile=compile)

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
        One sequence, as `generate()`: `complete()` with `on_text` streams several.
        """
        settings = check_settings(settings, **overrides)
        if settings.num_return_sequences != 1:
            raise InputError("stream() yields one completion: use complete() with on_text for num_return_sequences above 1")
        return self._stream(self.prompt_ids(prompt, settings), settings)

    def _stream(self, ids: list[int], settings: SamplingSettings) -> Iterator[Chunk]:
        log.debug("prompt: %d tokens; settings %s", len(ids), settings.as_dict())
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        return self.engine.stream(ids, settings, seed)

    def prompt_ids(self, prompt: str, settings: SamplingSettings) -> list[int]:
        """The prompt's token ids as generation uses them: fitted to the context, a long prompt
        tokenized from its end only as far as can be kept (`encoding.encode_tail`)."""
        ids, cut = encode_tail(self.tokenizer, prompt, self.context_length + 1)
        return fit_prompt(ids, settings, self.context_length, cut=cut)

    def fit_context(self, ids: list[int], settings: SamplingSettings, announce: bool = True) -> list[int]:
        """Check the prompt fits the context with room to generate; with `truncate`, keep its end
        (and log it, unless `announce` is off: a check before the generation that will log it)."""
        return fit_prompt(ids, settings, self.context_length, announce)

    def score(self, ids: list[int], top: int = 0) -> list[tuple[float, list[tuple[int, float]]]]:
        """The log-probability of each token of `ids` after those before it (the first has none), with
        the `top` most likely tokens there: `kogpt eval`'s scoring (`evaluate.scoring.token_logprobs`),
        run between the engine's forward passes, never beside one."""
        with self.engine.exclusive():
            return token_logprobs(self.model, ids, top)

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
        *,
        interleaved: bool = False,
    ) -> list[Record]:
        """All `settings.num_return_sequences` completions of `prompt`, decoded together in one batch.

        The prompt is fed once; sequence i uses seed `settings.seed + i`, modulo 2**32 (a fresh random
        base seed when unset), so every record can be reproduced. `on_text(i, text)` receives the text as it
        streams: sequence by sequence in order (later ones are held back until the earlier ones
        end), or, with `interleaved`, as soon as any sequence grows. Ctrl-C raises `Interrupted`,
        and the command line's SIGTERM/SIGHUP `Terminated`: both carry the records shown so far, the
        unfinished ones marked 'interrupted'.
        """
        settings = check_settings(settings)
        ids = self.prompt_ids(prompt, settings)
        base = settings.seed if settings.seed is not None else random.randrange(2**31)
        count = settings.num_return_sequences
        records = [Record(prompt, settings=settings.as_dict(), seed=sequence_seed(base, i), index=i,
                          prompt_tokens=len(ids)) for i in range(count)]
        budget = settings.new_tokens(len(ids), self.context_length)
        if budget == 0:
            for record in records:
                record.finish_reason = "length"
            return records
        log.debug("prompt: %d tokens; %d sequences; settings %s", len(ids), count, settings.as_dict())
        shown = _InOrder(records, on_text, interleaved)
        try:
            request = self.engine.submit(ids, settings, [r.seed for r in records], budget)
            for piece in self.engine.pieces(request):
                record = records[piece.row]
                record.completion_tokens = piece.tokens
                record.seconds = piece.at - request.submitted
                record.first_token_seconds = piece.first_at - request.submitted if piece.first_at else None
                shown.add(piece.row, piece.text, piece.finish_reason)
        except KeyboardInterrupt:
            raise Interrupted(shown.interrupted()) from None
        except Terminated as exc:
            exc.records = shown.interrupted()
            raise
        return records


class _InOrder:
    """Shows the text of several sequences, in index order unless `interleaved`; a record's
    completion is what was shown of it."""

    def __init__(self, records: list[Record], on_text: Callable[[int, str], None] | None, interleaved: bool) -> None:
        self.records, self.on_text, self.interleaved = records, on_text, interleaved
        self.current = 0  # in order: the sequence being shown
        self.held: list[list[str]] = [[] for _ in records]
        self.finish: list[str | None] = [None] * len(records)

    def add(self, index: int, text: str, finish: str | None) -> None:
        if self.interleaved:
            self._show(index, text)
            self.records[index].finish_reason = finish
            return
        if index == self.current:
            self._show(index, text)
        else:
            self.held[index].append(text)
        self.finish[index] = finish
        while self.current < len(self.records) and self.finish[self.current]:
            self.records[self.current].finish_reason = self.finish[self.current]
            self.current += 1
            if self.current < len(self.records):
                for held in self.held[self.current]:
                    self._show(self.current, held)
                self.held[self.current] = []

    def _show(self, index: int, text: str) -> None:
        if self.on_text and text:
            self.on_text(index, text)
        self.records[index].completion += text  # after it was shown: the record is what was seen

    def interrupted(self) -> list[Record]:
        kept = self.records if self.interleaved else self.records[: self.current + 1]
        for record in kept:
            if record.finish_reason is None:
                record.finish_reason = "interrupted"
        return kept
