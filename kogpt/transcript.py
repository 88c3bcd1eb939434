"""What a session produced: one `Record` per completion, written as JSON Lines.

The same record is printed by `--json`, saved by `/save`, and appended to the session transcript
as each generation finishes, so a crash or a closed terminal loses nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
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


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}


def write_jsonl(path: Path, records: Iterable[Record]) -> None:
    """Replace `path` with the records, atomically: a private (0600) temporary file in the same
    directory, written and synced, then renamed over `path`. Whatever was at `path` stays as it was
    if anything fails; anything there that is not a regular file (a device, a symbolic link, a
    directory) is never replaced: that raises `OSError` before anything is written."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise OSError(errno.EEXIST, f"it is {kind}, which is never replaced")
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write("".join(record.to_json() + "\n" for record in records).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


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
