"""The server benchmark's smallest preset runs and reports every figure (not a timed test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")


def test_serve_benchmark_tiny_preset(capsys):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "serve.py"
    spec = importlib.util.spec_from_file_location("bench_serve", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--preset", "tiny", "--new-tokens", "6", "--rounds", "1", "--clients", "1,2"])
    overhead = result["overhead"]
    # >= 0: the engine's worker runs ahead of its readers, so on the tiny model a 6-token round can
    # arrive as one chunk (0 s per token); the figures mean something on real presets only.
    assert (
        overhead["tokens"] >= 1
        and overhead["per_token_ratio_best"] >= 0
        and overhead["per_token_ratio_median_of_pairs"] >= 0
    )
    assert [row["clients"] for row in result["concurrency"]] == [1, 2]
    assert all(row["tokens"] >= 2 and row["tokens_per_s"] > 0 for row in result["concurrency"])
    assert "model" in result["cpu"] or result["cpu"]["machine"]
