"""The generation engine: one worker per model, an owned decode loop, a prefix (KV) cache, batched samples.

`Engine` is the door (`kogpt.api.KoGPT` holds one); `Chunk` is what a stream yields.
"""

from __future__ import annotations

from kogpt.engine.chunk import Chunk, Piece, TokenLogprob
from kogpt.engine.sampling import Extras
from kogpt.engine.worker import Engine, Request
from kogpt.engine import fork  # noqa: E402,F401  (registers the after-fork reset of every engine)

__all__ = ["Chunk", "Engine", "Extras", "Piece", "Request", "TokenLogprob"]
