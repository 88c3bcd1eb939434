"""What a REPL session knows between turns: the settings and their defaults, the last record.

The slash commands (`kogpt.cli.commands`) read and change this state; the loop (`kogpt.cli.repl`)
is a `Session` too, so commands never need the loop itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kogpt.cli.render import Renderer
from kogpt.settings import InputError, SamplingSettings
from kogpt.transcript import Record


class Session:
    """The settings (`defaults` are what /reset returns to), `quick`, and what was generated."""

    def __init__(self, renderer: Renderer, settings: SamplingSettings | None = None, quick: bool = False) -> None:
        self.renderer = renderer
        self.defaults = settings or SamplingSettings()
        self.settings = dataclasses.replace(self.defaults)
        self.default_quick = self.quick = quick
        self.records: list[Record] = []
        self.last: Record | None = None

    @property
    def context_length(self) -> int | None:
        """The model's context, for the settings limited by it; None when there is no model."""
        return None

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question; without a way to ask, the answer is no."""
        return False

    def setting(self, name: str) -> Any:
        return self.quick if name == "quick" else getattr(self.settings, name)

    def default(self, name: str) -> Any:
        return self.default_quick if name == "quick" else getattr(self.defaults, name)

    def require_last(self) -> Record:
        if self.last is None:
            raise InputError("nothing generated yet in this session")
        return self.last
