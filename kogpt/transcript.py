"""What a session produced: one `Record` per completion, written as JSON Lines.

The same record is printed by `--json`, saved by `/save`, and appended to the session transcript
as each generation finishes, so a crash or a closed terminal loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Record:
    """One completion of one prompt, with everything needed to reproduce it."""

    prompt: str
    completion: str = ""
    settings: dict = field(default_factory=dict)
    seed: int | None = None
    index: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    finish_reason: str | None = None
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def append_jsonl(path: Path, records: Iterable[Record]) -> None:
    """Append records, each line in one `write` to a file opened for appending (atomic per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for record in records:
            os.write(fd, (record.to_json() + "\n").encode("utf-8"))
    finally:
        os.close(fd)


class Transcript:
    """The session's transcript file; an unwritable location warns once and the session goes on."""

    def __init__(self, path: Path | None, warn: Callable[[str], None]) -> None:
        self.path = path
        self._warn = warn

    def add(self, records: Iterable[Record]) -> None:
        if self.path is None:
            return
        try:
            append_jsonl(self.path, records)
        except OSError as exc:
            self._warn(f"cannot write the transcript {self.path}: {exc.strerror or exc}; it is off for this session")
            self.path = None
