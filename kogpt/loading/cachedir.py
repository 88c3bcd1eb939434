"""Where the converted-weights cache lives, and which files in it are kogpt's.

`kogpt cache list` and `clear` touch only files whose names and headers say kogpt wrote them: a
name `STEM-FORMAT-LAYOUT-DIGEST.safetensors` (or the `.NAME.PID.partial` of an unfinished write)
and a safetensors header that starts with kogpt's own metadata. A model's `model.safetensors`
in the same folder (`KOGPT_CACHE_DIR` pointed at a folder of checkpoints) is never listed or removed.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

SUFFIX = ".safetensors"
_NAME = r"[A-Za-z0-9._-]+-(?:16bit|int8|int4)-[A-Za-z0-9_]+-[0-9a-f]{16}\.safetensors"
NAME = re.compile(_NAME)
PARTIAL = re.compile(rf"\.{_NAME}\.[0-9]+\.partial")
HEADER_START = b'{"__metadata__":{"kogpt":"{'  # what `cache.write_file` writes first, after the length


def directory() -> Path:
    """Where converted weights go: `KOGPT_CACHE_DIR`, else `<user cache dir>/kogpt/weights`."""
    override = os.environ.get("KOGPT_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("kogpt")) / "weights"


def owned(path: Path) -> bool:
    """Whether kogpt wrote `path`: its name, and its header as far as it was written."""
    partial = PARTIAL.fullmatch(path.name) is not None
    if not (partial or NAME.fullmatch(path.name)):
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(8 + len(HEADER_START))
    except OSError:
        return False
    if len(head) == 8 + len(HEADER_START):
        return head[8:] == HEADER_START
    return partial and HEADER_START.startswith(head[8:])  # an unfinished write, cut off in its header


def entries(root: Path | None = None) -> list[tuple[Path, int]]:
    """(file, bytes) of every file kogpt wrote in the cache, leftovers of interrupted writes included."""
    root = root or directory()
    try:
        found = [p for p in root.iterdir() if p.is_file() and not p.is_symlink() and owned(p)]
    except OSError:  # missing, not a directory, unreadable
        return []
    return [(p, p.stat().st_size) for p in sorted(found)]


def clear(root: Path | None = None) -> tuple[int, int, list[str]]:
    """Delete kogpt's cache files; (files, bytes) actually freed, and why each other one stayed."""
    files = total = 0
    failures = []
    for path, size in entries(root):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            failures.append(f"{path.name}: {exc.strerror or exc}")
            continue
        files += 1
        total += size
    return files, total, failures


def remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def not_a_directory(path: Path) -> OSError | None:
    """An OSError saying so when `path` or a folder above it exists but is not a directory."""
    for folder in (path, *path.parents):
        if folder.exists():
            return None if folder.is_dir() else OSError(errno.ENOTDIR, f"{folder} is not a directory")
    return None


def size_text(n: int) -> str:
    """Bytes for people: GiB with two decimals, MiB below a tenth of a GiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"
