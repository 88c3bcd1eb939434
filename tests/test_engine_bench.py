"""benchmarks/engine.py runs end to end on its smallest preset (figures are not checked: no timed tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_engine_benchmark_runs_on_the_tiny_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("engine", None)
    import engine

    assert engine.main(["--preset", "tiny", "--formats", "default", "--rounds", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "engine-results.json").read_text())
    (fmt,) = results["formats"]
    assert fmt["retry"]["reused"] == fmt["retry"]["prompt_tokens"]  # the retry fed nothing again
    assert [c["history"] for c in fmt["continue"]] == [16, 40, 80]
    # /continue feeds the completion again, and the partial prefill chunk before it: never the history.
    assert all(c["fed"] < fmt["prefill_chunk"] + 8 for c in fmt["continue"])
    table = capsys.readouterr().out
    assert table.count("| default (float32) |") == 5 and "N = 4 total tokens/s" in table
