"""`POST /tokenize` and `POST /detokenize`, in vLLM's shapes: text to the ids `/v1/completions`
runs, and ids back to text.

`/tokenize` takes `{"model"?, "prompt", "add_special_tokens"?, "return_token_strs"?}` and answers
`{"count", "max_model_len", "tokens"}` (and `"token_strs"` when asked); `/detokenize` takes
`{"model"?, "tokens"}` and answers `{"prompt"}`. KoGPT's tokenizer adds no special tokens (no
[BOS]), so `add_special_tokens` is accepted either way and the ids are the same. Both run in a
thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kogpt import text as text_lib
from kogpt.errors import InputError
from kogpt.messages import shown
from kogpt.server.errors import bad_request
from kogpt.server.request import flag, token_ids

if TYPE_CHECKING:
    from kogpt.server.runner import Runner

TOKENIZE_FIELDS = ("model", "prompt", "add_special_tokens", "return_token_strs")
DETOKENIZE_FIELDS = ("model", "tokens")


@dataclass
class TokenizeRequest:
    prompt: str
    model: str | None = None
    token_strs: bool = False


@dataclass
class DetokenizeRequest:
    tokens: list[int]
    model: str | None = None


def vocabulary(gpt) -> int:
    """How many token ids the model's tokenizer knows: ids run from 0 to this - 1."""
    return len(gpt.tokenizer)


def parse_tokenize(data: dict[str, Any]) -> TokenizeRequest:
    _known(data, TOKENIZE_FIELDS)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        what = "missing" if prompt is None else f"not a string but {shown(prompt)}"
        raise bad_request(f"prompt is {what}: /tokenize takes one string", param="prompt")
    try:
        text_lib.check(prompt, "prompt")
    except InputError as exc:  # JSON's "\ud800": a lone surrogate, not a character
        raise bad_request(str(exc), param="prompt") from None
    flag(data, "add_special_tokens")  # checked; KoGPT's tokenizer has none to add
    return TokenizeRequest(prompt, _model(data), flag(data, "return_token_strs"))


def parse_detokenize(data: dict[str, Any], vocab: int) -> DetokenizeRequest:
    _known(data, DETOKENIZE_FIELDS)
    if data.get("tokens") is None:
        raise bad_request("tokens is missing: /detokenize takes a list of token ids", param="tokens")
    return DetokenizeRequest(token_ids(data["tokens"], "tokens", vocab, param="tokens"), _model(data))


async def tokenize(request: TokenizeRequest, runner: Runner) -> dict:
    """vLLM's reply: the prompt's ids as the completions route runs them, before any truncation."""
    ids = await runner.tokenize(request.prompt)
    reply: dict[str, Any] = {"count": len(ids), "max_model_len": runner.context_length, "tokens": ids}
    if request.token_strs:
        reply["token_strs"] = await asyncio.to_thread(runner.gpt.tokenizer.convert_ids_to_tokens, ids)
    return reply


async def detokenize(ids: list[int], runner: Runner) -> str:
    """The text of `ids` (checked against the vocabulary), decoded in a thread; special tokens kept."""
    return await asyncio.to_thread(runner.gpt.tokenizer.decode, ids)


def _known(data: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = [name for name in data if name not in fields]
    if unknown:
        raise bad_request(f"unknown field {shown(unknown[0])}; kogpt reads: {', '.join(fields)}", param=unknown[0])


def _model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request(f"model must be a string, not {shown(model)}", param="model")
    return model
