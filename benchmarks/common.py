"""What the benchmark scripts share: the repository on sys.path, the prompt, peak memory, rates."""

from __future__ import annotations

import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT_TEXT = "인간처럼 생각하고, 행동하는 '지능'을 통해 인류가 이제까지 풀지 못했던 문제의 해답을 찾을 수 있을 것이다. " * 4


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def prompt_ids(tokenizer, n: int) -> list[int]:
    """The first `n` tokens of the benchmark text, repeated as often as `n` needs."""
    ids = tokenizer.encode(PROMPT_TEXT, add_special_tokens=False)
    return (ids * -(-n // len(ids)))[:n]


def rates(started: float, stamps: list[float]) -> dict:
    first = stamps[0] - started
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"first_token_s": first, "decode_tok_s": decode, "tokens": len(stamps), "total_s": stamps[-1] - started}
