"""One-shot and batch modes: `-p`, `--prompt-file`, `--prompts-file`, `--json`.

Only model text (or JSON) goes to stdout; figures and errors go to stderr.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kogpt import text as text_lib
from kogpt.api import KoGPT
from kogpt.cli.render import Renderer, printable
from kogpt.errors import Interrupted, KoGPTError, Terminated
from kogpt.settings import InputError, SamplingSettings, check_settings

LINE_END = re.compile(r"\r\n|\r|\n")


def read_text(source: str, stdin: TextIO | None = None) -> str:
    """The text of FILE, or of standard input for `-`: UTF-8, a leading byte-order mark dropped;
    invalid UTF-8 is reported with its byte offset."""
    name = "standard input" if source == "-" else source
    try:
        data = (stdin or sys.stdin).buffer.read() if source == "-" else Path(source).expanduser().read_bytes()
    except OSError as exc:
        raise KoGPTError(f"cannot read {name}: {exc.strerror or exc}") from None
    return text_lib.decode(data, name)


JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


def parse_prompts_file(text: str, name: str, base: SamplingSettings) -> Iterator[tuple[int, str, SamplingSettings]]:
    """(line number, prompt, settings) for each non-empty line.

    A file is JSON Lines when its name ends in .jsonl (.ndjson, .json) or its first non-empty line
    is a JSON object: then every line is an object with a `prompt` field and optional settings
    (`{"prompt": "...", "temperature": 0.5}`), each value taken as the JSON type it is. Otherwise
    every line is a prompt as it is, `{` or not (`{이름}님 안녕하세요`).
    """
    # Line ends only: str.splitlines() would also split at U+2028, form feed, NEL and others inside a prompt.
    lines = [(number, line) for number, line in enumerate(LINE_END.split(text), 1) if line.strip()]
    as_json = name.lower().endswith(JSON_SUFFIXES) or bool(lines and _json_object(lines[0][1]) is not None)
    for number, line in lines:
        if not as_json:
            yield number, line, base
            continue
        try:
            yield number, *_json_prompt(line, base)
        except InputError as exc:
            raise InputError(f"{name}:{number}: {exc}") from None


def _json_object(line: str) -> dict | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    return item if isinstance(item, dict) else None


def _json_prompt(line: str, base: SamplingSettings) -> tuple[str, SamplingSettings]:
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise InputError(f"not a JSON object: {exc}") from None
    if not isinstance(item, dict):
        raise InputError(f"not a JSON object but {type(item).__name__}")
    if "prompt" not in item:
        raise InputError("no `prompt` field")
    prompt = item.pop("prompt")
    if not isinstance(prompt, str):
        raise InputError(f"`prompt` must be a string, not {json.dumps(prompt, ensure_ascii=False)}")
    text_lib.check(prompt, "the prompt")
    return prompt, check_settings(base, **item)


def run_batch(
    gpt: KoGPT,
    prompts: list[tuple[str, str, SamplingSettings]],
    renderer: Renderer,
    as_json: bool,
    out: TextIO | None = None,
) -> int:
    """Complete each (label, prompt, settings) in order; return 1 if any prompt failed, else 0."""
    out = out or sys.stdout
    show = printable if out.isatty() else str  # raw text into pipes and files
    failed = False
    for label, prompt, settings in prompts:
        current = [0]

        def on_text(index: int, text: str) -> None:
            if as_json:
                return
            if index > current[0]:  # each of several sequences on its own line, an empty one too
                out.write("\n" * (index - current[0]))
                current[0] = index
            out.write(show(text))
            out.flush()

        try:
            records = gpt.complete(prompt, settings, on_text)
        except (Interrupted, Terminated) as stop:  # the partial record too, then the exit code
            try:
                _finish(out, stop.records, as_json)
            except OSError:  # the reader or the terminal is gone: the exit code still says why
                pass
            raise
        except KoGPTError as exc:
            renderer.error(f"{label}: {exc}" if label else f"error: {exc}")
            failed = True
            continue
        if not as_json:  # the last sequences produced no text: their (empty) lines all the same
            out.write("\n" * max(0, len(records) - 1 - current[0]))
        _finish(out, records, as_json)
        for record in records:
            renderer.stats(record.completion_tokens, record.seconds, record.finish_reason)
    return 1 if failed else 0


def _finish(out: TextIO, records, as_json: bool) -> None:
    """End a prompt's output: its JSON lines, or the newline after its text."""
    out.write("".join(r.to_json() + "\n" for r in records) if as_json else "\n")
    out.flush()
