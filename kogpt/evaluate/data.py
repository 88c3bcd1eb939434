"""Readers for the evaluation data files. Every reader returns `Example`s or raises `KoGPTError`
naming the file and the line at fault.

Accepted formats (UTF-8, a byte-order mark is allowed):

- **NSMC** (`ratings_test.txt`, `ratings_train.txt`): tab-separated, first line exactly the header
  `id<TAB>document<TAB>label`, then one review per line with three fields; `label` is `0`
  (negative) or `1` (positive). Lines whose document is empty (NSMC has a few) are skipped and
  counted; blank lines are ignored.
- **KLUE YNAT** (`ynat-v1.1_dev.json`): a JSON array of objects, or JSON Lines (one object per
  line, as `datasets` exports it). Each object has a non-empty string `title` and a `label` that
  is one of the names `IT과학 경제 사회 생활문화 세계 스포츠 정치` or their index 0-6 in that order.
  Other keys (`guid`, `url`, `date`) are ignored.

In every task a label written as text is read with its surrounding whitespace ignored (`" 1"`,
`" 경제"`).
- **KLUE STS** (`klue-sts-v1.1_dev.json`): a JSON array of objects, or JSON Lines. Each object has
  non-empty strings `sentence1` and `sentence2` and an object `labels` holding `binary-label`
  (0 or 1) or, failing that, `label` (a similarity 0-5; 3.0 or more counts as similar, as KLUE's
  binary label does). Other keys are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kogpt.errors import KoGPTError

NSMC_HEADER = ["id", "document", "label"]
YNAT_LABELS = ("IT과학", "경제", "사회", "생활문화", "세계", "스포츠", "정치")
STS_THRESHOLD = 3.0
DECODER = json.JSONDecoder()
# The largest data file read: KLUE's and NSMC's training sets are 10-15 MB.
MAX_DATA_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Example:
    """One item: its text fields (named as in the template), its gold label, and where it came from."""

    fields: dict[str, str]
    label: str
    line: int


@dataclass
class Dataset:
    """The examples of one file, with its SHA-256 and how many records were skipped."""

    path: Path
    examples: list[Example]
    sha256: str
    skipped: int = 0


def read(task: str, path: str | Path) -> Dataset:
    """Read the data file of `task` (`nsmc`, `ynat` or `klue-sts`)."""
    path = Path(path)
    raw = read_bounded(path, MAX_DATA_BYTES, "data file")
    text = decode(path, raw)
    if task == "nsmc":
        examples, skipped = _nsmc(path, text)
    else:
        parse = _ynat if task == "ynat" else _sts
        examples, skipped = [parse(path, line, obj) for line, obj in _json_records(path, text)], 0
    if not examples:
        raise KoGPTError(f"{path} holds no {task} items")
    return Dataset(path, examples, hashlib.sha256(raw).hexdigest(), skipped)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file at `path`, refused in one line if larger than `limit`.

    Devices (/dev/zero, /dev/urandom), FIFOs and directories are refused before they are opened:
    they could be endless, or block forever.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise KoGPTError(f"the {what} {path} is not a regular file")
        if info.st_size > limit:
            raise KoGPTError(f"the {what} {path} is {_size(info.st_size)}; the limit is {_size(limit)}")
        with open(path, "rb") as file:
            raw = file.read(limit + 1)  # the file may have grown since stat
    except OSError as exc:
        raise KoGPTError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if len(raw) > limit:
        raise KoGPTError(f"the {what} {path} is larger than the limit of {_size(limit)}")
    return raw


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def decode(path: Path, raw: bytes) -> str:
    """UTF-8 text (a byte-order mark is dropped), or a KoGPTError naming the line and byte offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise KoGPTError(f"{path}, line {line}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from exc


def check_text(where: str, value: str, key: str) -> str:
    """`value`, unless it holds a lone surrogate (possible through a JSON escape like \\ud800)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise KoGPTError(f"{where}: {key!r} holds {value[exc.start]!r}, a lone surrogate, not text") from None
    return value


def _nsmc(path: Path, text: str) -> tuple[list[Example], int]:
    # Split on newlines only: str.splitlines() would also break at U+2028, U+0085 and the like inside a review.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines[0].split("\t") != NSMC_HEADER:
        raise KoGPTError(f"{path}, line 1: expected the NSMC header 'id<TAB>document<TAB>label'")
    examples, skipped = [], 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise KoGPTError(f"{path}, line {number}: expected 3 tab-separated fields, found {len(parts)}")
        label = parts[2].strip()
        if label not in ("0", "1"):
            raise KoGPTError(f"{path}, line {number}: the label must be 0 or 1, not {label!r}")
        if not parts[1].strip():
            skipped += 1
            continue
        examples.append(Example({"document": parts[1].strip()}, label, number))
    return examples, skipped


def _json_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, object) from a JSON array or from JSON Lines."""
    start = len(text) - len(text.lstrip())
    array = text[start : start + 1] == "["
    number = 1
    try:
        if not array:
            for number, line in enumerate(text.split("\n"), start=1):
                if line.strip():
                    yield number, _decode(line)
            return
        yield from _array(text, start)
    except json.JSONDecodeError as exc:
        line = exc.lineno if array else number
        hint = "" if array else "; expected a JSON array of objects, or one object per line"
        raise KoGPTError(f"{path}, line {line}: invalid JSON ({exc.msg}){hint}") from exc


def _decode(text: str, at: int | None = None) -> Any:
    """The JSON value `text` holds, or (value, end) for the one that starts at `text[at]`.

    Every failure is a `JSONDecodeError`, so that it names a line.
    """
    try:
        return json.loads(text) if at is None else DECODER.raw_decode(text, at)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, at or 0) from None
    except ValueError as exc:  # an integer of thousands of digits
        raise json.JSONDecodeError(str(exc).split(";")[0], text, at or 0) from None


def _array(text: str, start: int) -> Iterator[tuple[int, Any]]:
    """The items of the JSON array at `text[start]`, with their lines; nothing may follow it.

    Lines are counted from the previous item on, so reading stays linear in the file's size.
    """
    at, line, counted = start + 1, 1, 0
    while True:
        at = _skip_space(text, at)
        if text[at : at + 1] == "]":
            break
        obj, end = _decode(text, at)
        line += text.count("\n", counted, at)
        counted = at
        yield line, obj
        at = _skip_space(text, end)
        if text[at : at + 1] == ",":
            at += 1
        elif text[at : at + 1] != "]":
            raise json.JSONDecodeError("expected ',' or ']'", text, at)
    at = _skip_space(text, at + 1)
    if at < len(text):
        raise json.JSONDecodeError("extra data after the array", text, at)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _string(path: Path, line: int, obj: dict, key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise KoGPTError(f"{path}, line {line}: {key!r} must be a non-empty string")
    return check_text(f"{path}, line {line}", value.strip(), key)


def _object(path: Path, line: int, obj: Any) -> dict:
    if not isinstance(obj, dict):
        raise KoGPTError(f"{path}, line {line}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _ynat(path: Path, line: int, obj: Any) -> Example:
    obj = _object(path, line, obj)
    title = _string(path, line, obj, "title")
    label = obj.get("label")
    if isinstance(label, str):  # one rule in every task: a label's surrounding whitespace is ignored
        label = label.strip()
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(YNAT_LABELS):
        label = YNAT_LABELS[label]
    if label not in YNAT_LABELS:
        raise KoGPTError(f"{path}, line {line}: 'label' must be one of {' '.join(YNAT_LABELS)} or 0-6, not {label!r}")
    return Example({"title": title}, label, line)


def _sts(path: Path, line: int, obj: Any) -> Example:
    obj = _object(path, line, obj)
    fields = {key: _string(path, line, obj, key) for key in ("sentence1", "sentence2")}
    labels = obj.get("labels")
    if not isinstance(labels, dict):
        raise KoGPTError(f"{path}, line {line}: 'labels' must be an object with 'binary-label' or 'label'")
    binary, score = labels.get("binary-label"), labels.get("label")
    if binary is not None:
        if binary not in (0, 1) or isinstance(binary, bool):
            raise KoGPTError(f"{path}, line {line}: 'binary-label' must be 0 or 1, not {binary!r}")
        label = str(int(binary))
    elif isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 5:
        label = "1" if score >= STS_THRESHOLD else "0"
    else:
        raise KoGPTError(f"{path}, line {line}: 'labels' needs 'binary-label' (0/1) or 'label' (0-5), found {labels!r}")
    return Example(fields, label, line)
