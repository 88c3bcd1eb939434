"""The phases of a request, as a Linear layer sees them: how many input rows each phase gives it.

A request is a prompt fed in chunks (`PREFILL_ROWS` rows per layer call), then one-token steps: one
row per step for one sequence, `BATCH_ROWS` rows for several samples or concurrent requests. A layer
runs each phase with its own kernel (`phase_of`), all sharing one packed weight layout; the kernel
chooser scores each layout on the standard request (`request_seconds`).
"""

from __future__ import annotations

import math

PHASES = ("step", "batch", "prefill")
PREFILL_ROWS = 128  # prompt tokens per forward on the CPU: the engine's chunk (kogpt.engine.decode)
BATCH_ROWS = 4  # rows of a step with several samples or requests: what the chooser times
MANY_ROWS = 16  # a layer called with this many rows or more runs the prompt kernel (a short last chunk: fewer)
ROWS = {"step": 1, "batch": BATCH_ROWS, "prefill": PREFILL_ROWS}
# The prompt chunk sizes tried for the chosen prompt kernel: a larger chunk is taken only where it
# saves more than `CHUNK_GAIN` per token, since a running stream waits a whole chunk for its next
# token (and CUDA's one-entry prefix cache reuses prompts in whole chunks).
CHUNKS, CHUNK_GAIN = (PREFILL_ROWS, 2 * PREFILL_ROWS, 4 * PREFILL_ROWS), 0.10
DESCRIBED = {"step": "1 row", "batch": f"{BATCH_ROWS} rows", "prefill": f"prompt chunks of {PREFILL_ROWS}"}

# The standard request: a 512-token prompt, then 128 new tokens, once at batch 1 and once at batch 4.
PROMPT_TOKENS, NEW_TOKENS, BATCHES = 512, 128, (1, BATCH_ROWS)


def phase_of(rows: int) -> str:
    """The phase whose kernel computes a layer call with `rows` input rows."""
    if rows <= 1:
        return "step"
    return "batch" if rows < MANY_ROWS else "prefill"


def request_seconds(step: float, batch: float, chunk: float) -> float:
    """Seconds of the standard request (both batch sizes) from the seconds of one step at 1 row,
    one step at `BATCH_ROWS` rows and one prompt chunk: the prompt is read once per request."""
    chunks = math.ceil(PROMPT_TOKENS / PREFILL_ROWS)
    return sum(chunks * chunk + NEW_TOKENS * (step if rows == 1 else batch) for rows in BATCHES)


def best_chunk(per_token: dict[int, float]) -> int:
    """The smallest chunk whose seconds per prompt token are within `CHUNK_GAIN` of the fastest."""
    fastest = min(per_token.values())
    return min(rows for rows, seconds in per_token.items() if seconds <= fastest * (1 + CHUNK_GAIN))


def describe(phases: dict[str, str]) -> str:
    """`1 row fp16, 4 rows fp16, prompt chunks of 128 fp16f32`."""
    return ", ".join(f"{DESCRIBED[phase]} {phases[phase]}" for phase in PHASES if phase in phases)
