"""`kogpt eval --engine vllm`: score the label continuations with vLLM's prompt log-probabilities.

Each context + candidate goes to vLLM as token ids (the same ids the built-in scorer reads, from
kogpt's own tokenizer); one step of generation with `prompt_logprobs=0` returns the log-probability
of every prompt token, and the candidate's score is the sum over its tokens, as `scoring.score`
computes it. vLLM batches and caches the shared few-shot prefix itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kogpt.evaluate.scoring import Request

log = logging.getLogger(__name__)

ITEMS_PER_CALL = 256  # items per `LLM.generate` call: vLLM batches inside it; progress moves between calls


def continuation_logprob(prompt_logprobs: Sequence, ids: Sequence[int], start: int) -> float:
    """Sum of the log-probabilities of `ids[start:]`, from vLLM's per-position `prompt_logprobs`
    (position i maps token ids to objects with a `.logprob`; position 0 is None)."""
    return sum(float(prompt_logprobs[i][ids[i]].logprob) for i in range(start, len(ids)))


class VLLMScorer:
    """Scores `Request`s on a vLLM `LLM`; `llm` is made from the arguments unless given (tests)."""

    def __init__(self, llm=None, **engine) -> None:
        if llm is None:
            from vllm import LLM

            llm = LLM(skip_tokenizer_init=True, enable_prefix_caching=True, **engine)
        self.llm = llm

    def __call__(self, requests: Sequence[Request], batch_size: int = ITEMS_PER_CALL) -> Iterator[list[float]]:
        """Yield, for each request in order, the log-likelihood of each of its continuations."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        step = max(batch_size, ITEMS_PER_CALL)
        for begin in range(0, len(requests), step):
            batch = requests[begin : begin + step]
            seqs = [(r.context + c, len(r.context)) for r in batch for c in r.continuations]
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in seqs], params, use_tqdm=False)
            flat = [
                continuation_logprob(o.prompt_logprobs, ids, start)
                for o, (ids, start) in zip(outputs, seqs, strict=True)
            ]
            at = 0
            for r in batch:
                yield flat[at : at + len(r.continuations)]
                at += len(r.continuations)


@dataclass
class Engine:
    """What `kogpt eval` reads from a model, for vLLM: kogpt's tokenizer (so the token ids match the
    built-in engine's), the context, a description for the report, and the scorer."""

    tokenizer: object
    context_length: int
    scorer: VLLMScorer
    loaded: object = field(default=None)

    def encode(self, text: str) -> list[int]:
        from kogpt.api import KoGPT

        return KoGPT.encode(self, text)  # the very same NFC + tokenizer call as the built-in engine


@dataclass
class Described:
    source: str
    device: str
    dtype: str


def load(
    model: str,
    revision: str,
    dtype: str,
    tensor_parallel: int,
    pipeline_parallel: int,
    trust_remote_code: bool = False,
    before_loading: Callable[[Path], None] | None = None,
) -> Engine:
    """KoGPT on vLLM for scoring; a one-line `KoGPTError` without vLLM or a GPU. `before_loading(path)`
    runs once the checkpoint is found, before vLLM loads it (to check the prompts first)."""
    from kogpt.loading import vllm as support
    from kogpt.loading.checkpoint import (
        load_config,
        load_tokenizer,
        looks_local,
        resolve_checkpoint,
    )

    support.check_parallel(tensor_parallel, pipeline_parallel)
    support.check_available()
    path: Path = resolve_checkpoint(model, revision)
    config = load_config(path, trust_remote_code)
    if before_loading is not None:
        before_loading(path)
    scorer = VLLMScorer(
        model=model if not looks_local(model) else str(path),
        revision=None if looks_local(model) else revision,
        dtype=support.DTYPES[dtype],
        max_model_len=support.CONTEXT,
        tensor_parallel_size=tensor_parallel,
        pipeline_parallel_size=pipeline_parallel,
        trust_remote_code=trust_remote_code,
    )
    where = f"cuda (vLLM, tensor parallel {tensor_parallel}, pipeline parallel {pipeline_parallel})"
    return Engine(
        load_tokenizer(path, config.vocab_size, trust_remote_code),
        config.n_positions,
        scorer,
        Described(str(path), where, support.DTYPES[dtype]),
    )
