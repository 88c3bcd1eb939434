"""kogpt: run KakaoBrain's KoGPT (GPT-J, 6B) locally, from a REPL or from Python."""

from __future__ import annotations

from kogpt.defaults import VERSION as __version__

__all__ = ["KoGPT", "KoGPTError", "Interrupted", "Chunk", "Record", "SamplingSettings", "__version__"]

_EXPORTS = {
    "KoGPT": "kogpt.api",
    "KoGPTError": "kogpt.errors",
    "Interrupted": "kogpt.errors",
    "Record": "kogpt.transcript",
    "Chunk": "kogpt.generate",
    "SamplingSettings": "kogpt.settings",
}


def __getattr__(name: str):
    # Lazy, so that `python -m kogpt --help` does not wait for torch to import.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kogpt' has no attribute {name!r}")
