"""Item 17: a transcript record is written whole or not at all, and every record starts a line."""

from __future__ import annotations

import errno
import json
import os

from kogpt.transcript import Record, Transcript, append_jsonl


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_short_write_is_continued(tmp_path, monkeypatch):
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[: max(1, len(data) // 3)]))
    path = tmp_path / "t.jsonl"
    append_jsonl(path, [Record("가" * 100, "나" * 100), Record("b", "c")])
    assert [r["prompt"] for r in _lines(path)] == ["가" * 100, "b"]


def test_a_full_disk_mid_record_leaves_no_half_line(tmp_path, monkeypatch):
    path = tmp_path / "t.jsonl"
    append_jsonl(path, [Record("first")])
    real, calls = os.write, []

    def full(fd, data):  # half of the record fits, then the disk is full
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    warnings = []
    transcript = Transcript(path, warnings.append)
    monkeypatch.setattr(os, "write", full)
    transcript.add([Record("second " * 50)])
    monkeypatch.setattr(os, "write", real)
    assert warnings and "No space left" in warnings[0]
    append_jsonl(path, [Record("third")])  # the next session
    assert [r["prompt"] for r in _lines(path)] == ["first", "third"]


def test_a_file_cut_short_by_a_crash_gets_a_fresh_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(Record("whole").to_json() + "\n" + Record("cut").to_json()[:20], encoding="utf-8")
    append_jsonl(path, [Record("next")])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["prompt"] == "whole"
    assert json.loads(lines[2])["prompt"] == "next"  # not glued to the broken line
