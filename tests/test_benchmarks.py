"""Every benchmark script runs end to end on its smallest preset, so a refactor cannot break one
silently. This checks that they run and report, not how fast: figures are for benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# script -> its smallest run ({out} is a temporary directory). Every script in benchmarks/ is here,
# or in IMPORTED (run by another script) or NEEDS_GPU.
SMALLEST = {
    # Every path but CTranslate2's (the optional `bench` extra; run.py skips it when missing).
    "run.py": ["--preset", "tiny", "--out", "{out}", "--paths", "bandwidth,seed,default,int8,int8-nommap,int4,overhead,first-prompt"],
    "kernel_timings.py": ["--preset", "smoke", "--rounds", "1", "--kernels", "bf16,w8,w8a8,w4g32", "--out", "{out}/kernels.json"],
    "prefill.py": ["--layers", "1", "--tokens", "4", "20"],
    "checkpoint.py": ["{out}/ckpt", "tiny"],
    "engine.py": ["--preset", "tiny", "--formats", "default", "--rounds", "1", "--out", "{out}"],
    "omp_policy.py": ["--preset", "tiny", "--rounds", "1", "--new-tokens", "4"],
    "clients.py": ["--checkpoint", "{tiny}", "--clients", "1,2", "--new-tokens", "4", "--shared", "2", "--examples", "2", "--rounds", "2"],
    "request.py": ["{tiny}", "--kernels", "int8,w8a8,fp16f32", "--rounds", "1", "--prompt-tokens", "40", "--new-tokens", "4",
                   "--out", "{out}/request.json"],  # fmt: skip
}
IMPORTED = {
    "common.py": "run.py",
    "paths.py": "run.py",
    "overhead.py": "run.py",
    "serve.py": "tests/test_serve_bench.py (its tiny preset, in-process)",
}
NEEDS_GPU = {
    "gpu.py": "CUDA only; run on a lent GPU machine",
    "gpu_vllm.py": "CUDA and vLLM; run on a lent GPU machine",
}


def test_every_benchmark_script_is_exercised():
    scripts = {path.name for path in BENCHMARKS.glob("*.py")} - {"__init__.py"}
    assert scripts == set(SMALLEST) | set(IMPORTED) | set(NEEDS_GPU)


def test_no_benchmark_module_is_named_like_an_installed_or_standard_module():
    """`benchmarks/kernels.py` shadowed Hugging Face's `kernels` once transformers imported it."""
    import importlib.metadata

    taken = set(sys.stdlib_module_names) | set(importlib.metadata.packages_distributions())
    assert not {path.stem for path in BENCHMARKS.glob("*.py")} & taken


@pytest.mark.parametrize("script", sorted(set(SMALLEST) | set(NEEDS_GPU)))
def test_a_benchmark_script_does_not_import_its_neighbours_as_packages(script, tmp_path):
    """Run as a script, a benchmark's folder leaves sys.path, so a module there named like a package
    that transformers (or anything) imports cannot shadow it: here a planted `argparse.py`."""
    import shutil

    copy = tmp_path / "benchmarks"
    shutil.copytree(BENCHMARKS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "argparse.py").write_text("raise SystemExit('benchmarks/argparse.py shadowed the real argparse')\n")
    done = subprocess.run([sys.executable, str(copy / script), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


@pytest.mark.timeout(900)  # a minute on a quiet machine; much more when the CPUs are shared
@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_benchmark_runs_on_its_smallest_preset(script, tmp_path, tiny_dir):
    argv = [arg.format(out=tmp_path, tiny=tiny_dir) for arg in SMALLEST[script]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(BENCHMARKS.parent)}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *argv], cwd=BENCHMARKS, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    if script == "run.py":
        results = json.loads((tmp_path / "tiny" / "results.json").read_text())
        for path in ("default", "int8", "int8-nommap", "int4", "overhead"):
            assert "error" not in results[path], results[path]
        assert results["default"]["tokens"] == 16 and results["default"]["decode_tok_s"] > 0
        assert "| (2) kogpt default" in done.stdout
    if script == "omp_policy.py":
        runs = json.loads(done.stdout.strip().splitlines()[-1])["runs"]
        assert [(r["front_end"], len(r["tok_s"])) for r in runs] == [("cli", 1), ("serve", 1)]
        assert all(r["median"] > 0 for r in runs)
    if script == "clients.py":
        kogpt = json.loads(done.stdout)["servers"]["kogpt serve"]
        assert [row["clients"] for row in kogpt["clients"]] == [1, 2] and kogpt["clients"][1]["tokens"] == 8
        assert kogpt["n"]["ratio"] > 0 and kogpt["shared_preamble"]["prompt_tokens_fed"] > 0
    if script == "request.py":
        results = json.loads((tmp_path / "request.json").read_text())["results"]
        assert [r.get("error") for r in results] == [None] * 3, results
        assert results[1]["phases"] == {"step": "w8a8", "batch": "w8a8", "prefill": "w8a8"}
        assert results[2]["phases"]["prefill"] == "fp16f32" and "| `fp16f32` |" in done.stdout
    if script == "engine.py":
        (fmt,) = json.loads((tmp_path / "engine-results.json").read_text())["formats"]
        assert fmt["retry"]["reused"] == fmt["retry"]["prompt_tokens"]  # the retry fed nothing again
        # /continue feeds the completion again and the partial prefill chunk before it, never the history.
        assert all(c["fed"] < fmt["prefill_chunk"] + 8 for c in fmt["continue"])
        assert done.stdout.count("| default (float32) |") == 5
