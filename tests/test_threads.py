"""kogpt's OpenMP policy (issue 20): every front end sets OMP_WAIT_POLICY and OMP_NUM_THREADS before
torch is imported, and a value the user set is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kogpt import threads

REPO = Path(__file__).resolve().parent.parent

# Runs `kogpt.cli.main.main(ARGV)` with the command's runner replaced by one that reports what it
# finds when it starts: the OpenMP variables, whether torch was imported before, and what torch reads.
PROBE = """
import importlib, json, os, sys
entry = importlib.import_module("kogpt.cli.main")  # the module (kogpt.cli.main is also the function)
argv = json.loads(sys.argv[1])
name = {"eval": "evaluate"}.get(argv[0], argv[0])
module = entry if argv[0].startswith("-") else importlib.import_module("kogpt.cli." + name)

def report(args, renderer):
    imported = "torch" in sys.modules
    import torch
    print(json.dumps({"torch_imported_before": imported, "torch_threads": torch.get_num_threads(),
                      **{k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}}))
    return 0

module.run = report
raise SystemExit(entry.main(argv))
"""

COMMANDS = {
    "kogpt": ["--model", "m", "--device", "cpu"],
    "serve": ["serve", "--model", "m"],
    "eval": ["eval", "nsmc", "--data", "items.txt"],
    "bench": ["bench", "--model", "m"],
}


def probe(argv: list[str], **user) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], env={**env, **user},
                          capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_front_end_sets_the_policy_before_torch_starts(command):
    seen = probe(COMMANDS[command])
    cores = threads.physical_cores()
    assert seen == {"torch_imported_before": False, "torch_threads": cores,
                    "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(cores)}  # fmt: skip


@pytest.mark.parametrize("command", ["kogpt", "serve"])
def test_the_users_own_values_are_kept(command):
    seen = probe(COMMANDS[command], OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert (seen["OMP_WAIT_POLICY"], seen["OMP_NUM_THREADS"], seen["torch_threads"]) == ("ACTIVE", "1", 1)


def test_the_threads_flag_sets_the_count_torch_starts_with():
    seen = probe([*COMMANDS["kogpt"], "--threads", "1"])
    assert (seen["OMP_WAIT_POLICY"], seen["OMP_NUM_THREADS"], seen["torch_threads"]) == ("PASSIVE", "1", 1)


def test_the_vllm_route_keeps_its_own_thread_count():
    """vLLM lowers its workers' OpenMP threads itself, unless OMP_NUM_THREADS is set."""
    seen = probe(["serve", "--engine", "vllm", "--model", "m"])
    assert (seen["OMP_WAIT_POLICY"], seen["OMP_NUM_THREADS"]) == ("PASSIVE", None)


def test_python_m_kogpt_says_what_it_set(tiny_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    done = subprocess.run([sys.executable, "-m", "kogpt", "--model", str(tiny_dir), "--device", "cpu", "--plan", "--debug"],
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OpenMP: OMP_WAIT_POLICY=PASSIVE (kogpt), OMP_NUM_THREADS=1 (yours)" in done.stderr
    assert "torch was imported before" not in done.stderr


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3), ("", None), ("0", None), ("two", None)])
def test_the_default_count_is_the_users_omp_num_threads_else_the_physical_cores(monkeypatch, value, expected):
    from kogpt.placement.decide import physical_cores

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert physical_cores() == threads.default_count() == (expected or threads.physical_cores())


def test_apply_keeps_a_set_value_and_fills_an_unset_one(monkeypatch):
    import torch  # noqa: F401 (as in any test process: apply comes too late for it, and says so)

    monkeypatch.setattr(threads, "APPLIED", {})
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    applied = threads.apply(threads=3)
    assert applied == {"OMP_WAIT_POLICY": ("ACTIVE", "yours"), "OMP_NUM_THREADS": ("3", "kogpt")}
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert "torch was imported before kogpt set them" in threads.describe()
