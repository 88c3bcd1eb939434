"""The prompt history file: kept across runs, and never a reason for the session to fail."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prompt_toolkit.history import FileHistory, History, InMemoryHistory


class SafeFileHistory(FileHistory):
    """A FileHistory that warns once, through `on_error`, when it cannot read or write, and goes on."""

    def __init__(self, filename: str, on_error: Callable[[str], None]) -> None:
        super().__init__(filename)
        self._on_error = on_error
        self._warned = False

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            self._on_error(f"cannot save the prompt history to {self.filename}: {exc.strerror or exc}")

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except OSError as exc:
            self._warn(exc)
            return []

    def store_string(self, string: str) -> None:
        try:
            string.encode("utf-8")
        except UnicodeEncodeError:  # refused as input; not worth keeping as '?'
            return
        try:
            private_file(Path(self.filename))
            super().store_string(string)
            cap(Path(self.filename))
        except OSError as exc:
            self._warn(exc)


MAX_HISTORY_BYTES = 1 << 20  # the history keeps its newest entries within this size


def cap(path: Path, limit: int = MAX_HISTORY_BYTES) -> None:
    """Keep a history file over `limit` bytes to its newest entries, about half of `limit`,
    replaced atomically (prompt_toolkit's entries start with a '# date' line)."""
    if path.stat().st_size <= limit:
        return
    data = path.read_bytes()
    start = data.find(b"\n# ", len(data) - limit // 2)
    if start < 0:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data[start:])
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def private_file(path: Path) -> None:
    """Create `path` readable by its owner only (0600), or make an existing one so: it holds what
    the user typed."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def open_history(path: Path | None, on_error: Callable[[str], None]) -> History:
    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
    except OSError as exc:
        on_error(f"cannot save the prompt history in {path.parent}: {exc.strerror or exc}")
        return InMemoryHistory()
    return SafeFileHistory(str(path), on_error)
