"""A soak test: 200 generations in one REPL session with random settings and some Ctrl-Cs."""

from __future__ import annotations

import gc
import json
import random

import psutil

from kogpt.transcript import Transcript
from tests.test_repl import CTRL_D, ENTER, make_renderer, run_repl

TURNS = 200
WARM_UP = 30


def test_two_hundred_generations(gpt, tmp_path):
    rng = random.Random(0)
    interrupt_at = set(rng.sample(range(TURNS), 20))
    keys = ["/set quick on" + ENTER]
    for turn in range(TURNS):
        keys.append(f"/set temperature {rng.choice(['0', '0.5', '0.8', '1.3'])}" + ENTER)
        keys.append(f"/set top_k {rng.choice([0, 5, 50])}" + ENTER)
        keys.append(f"/set max_new_tokens {rng.randint(2, 12)}" + ENTER)
        keys.append(f"/set seed {turn}" + ENTER)
        keys.append(f"프롬프트 {turn}번" + ENTER)
    keys.append(CTRL_D)

    renderer = make_renderer()
    path = tmp_path / "transcript.jsonl"
    process = psutil.Process()
    state = {"turn": 0, "chunks": 0, "rss": []}
    show, end = renderer.completion, renderer.end_completion

    def completion(text):
        state["chunks"] += 1
        if state["turn"] in interrupt_at and state["chunks"] == 1:
            raise KeyboardInterrupt
        show(text)

    def next_turn():
        state["turn"] += 1
        state["chunks"] = 0
        if state["turn"] in (WARM_UP, TURNS):
            gc.collect()
            state["rss"].append(process.memory_info().rss)

    def end_completion(*args):
        end(*args)
        next_turn()

    def interrupted():
        next_turn()

    renderer.completion, renderer.end_completion, renderer.interrupted = completion, end_completion, interrupted
    code, out, err = run_repl(gpt, "".join(keys), tmp_path, renderer=renderer,
                              repl_hook=lambda repl: setattr(repl, "transcript", Transcript(path, renderer.warning)))
    assert code == 0
    assert state["turn"] == TURNS
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == [f"프롬프트 {t}번" for t in range(TURNS)]
    interrupted = {i for i, r in enumerate(records) if r["finish_reason"] == "interrupted"}
    assert interrupted == interrupt_at
    assert all(r["finish_reason"] in {"length", "eos"} for i, r in enumerate(records) if i not in interrupted)
    assert not gpt.engine.busy
    warm, final = state["rss"]
    assert final < warm * 1.05, f"RSS grew from {warm >> 20} MiB to {final >> 20} MiB"
