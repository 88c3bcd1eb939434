"""The engine: prefix reuse giving a cold start's text, cancellation, many callers, batched samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kogpt import KoGPT
from kogpt.errors import Interrupted
from kogpt.settings import SamplingSettings
from tests.tiny import korean_lines

PROMPT = "오늘은 날씨가"
PREAMBLE = "질문: 하늘은 무슨 색인가요?\n답: 파란색\n질문: 바다는 어떤가요?\n답: 넓다\n"


@pytest.fixture()
def fresh(gpt):
    """A KoGPT with its own engine (and empty prefix cache) over the session's tiny model."""
    return KoGPT(gpt.loaded)


def cold(gpt: KoGPT, prompt: str, settings: SamplingSettings) -> list[str]:
    gpt.engine.forget()
    return [r.completion for r in gpt.complete(prompt, settings)]


def warm(gpt: KoGPT, prompt: str, settings: SamplingSettings) -> list[str]:
    return [r.completion for r in gpt.complete(prompt, settings)]


REQUESTS = [  # (prompt, settings) as a session would send them: shared preambles, retries, continues
    (PREAMBLE + "질문: 봄은?\n답:", SamplingSettings(seed=1, max_new_tokens=12)),
    (PREAMBLE + "질문: 여름은?\n답:", SamplingSettings(seed=2, max_new_tokens=12)),
    (PREAMBLE + "질문: 여름은?\n답:", SamplingSettings(seed=3, max_new_tokens=12, top_k=5)),
    (PREAMBLE + "질문: 여름은?\n답:", SamplingSettings(temperature=0, max_new_tokens=12, repetition_penalty=1.3)),
    (PREAMBLE, SamplingSettings(seed=4, max_new_tokens=8, no_repeat_ngram_size=2, top_p=0.8)),
    (PREAMBLE + "질문: 가을은?\n답:", SamplingSettings(seed=5, max_new_tokens=10, num_return_sequences=3)),
    (PREAMBLE + "질문: 가을은?\n답:", SamplingSettings(seed=6, max_new_tokens=10)),
    ("전혀 다른 이야기", SamplingSettings(seed=7, max_new_tokens=10, stop=["다"])),
]


@pytest.mark.parametrize("chunk", [4, 128])
def test_prefix_reuse_gives_a_cold_starts_text(fresh, chunk):
    fresh.engine.prefill_chunk = chunk
    warm_results, reused = [], []
    for prompt, settings in REQUESTS:
        warm_results.append(warm(fresh, prompt, settings))
        reused.append(fresh.engine.last_stats.reused_tokens)
        continued = prompt + warm_results[-1][-1]  # /continue from the last completion
        warm_results.append(warm(fresh, continued, SamplingSettings(seed=8, max_new_tokens=6)))
        reused.append(fresh.engine.last_stats.reused_tokens)
    cold_results = []
    for prompt, settings in REQUESTS:
        cold_results.append(cold(fresh, prompt, settings))
        cold_results.append(cold(fresh, prompt + cold_results[-1][-1], SamplingSettings(seed=8, max_new_tokens=6)))
    assert warm_results == cold_results
    assert sum(reused) > 500 and reused[1] >= len(fresh.encode(REQUESTS[0][0])) - 1  # a /continue feeds only the new
    assert reused[2] >= len(fresh.encode(PREAMBLE)) - 1  # the preamble (shorter than a chunk of 128) was not fed again


def test_an_identical_prompt_needs_no_forward_pass_and_a_retry_no_prompt(fresh):
    settings = SamplingSettings(seed=1, max_new_tokens=6)
    first = fresh.generate(PROMPT, **settings.as_dict())
    assert fresh.engine.last_stats.prefill_tokens == len(fresh.encode(PROMPT))
    calls = []
    original = fresh.model.forward
    fresh.model.forward = lambda *a, **kw: (calls.append(kw["input_ids"].shape), original(*a, **kw))[1]
    try:
        again = fresh.generate(PROMPT, **settings.as_dict())
    finally:
        del fresh.model.forward
    assert again == first
    assert fresh.engine.last_stats.prefill_tokens == 0
    assert all(shape[1] == 1 for shape in calls)  # one-token steps only: the prompt was not fed again


def test_reset_and_set_in_the_repl_never_change_a_result(fresh, tmp_path):
    """A session of /retry, /continue, /set and /reset: each completion equals a cold start's."""
    from kogpt.transcript import Transcript
    from tests.test_repl import CTRL_D, ENTER, make_renderer, run_repl

    keys = ["/set quick on", "/set max_new_tokens 8", "/set seed 3", PREAMBLE.replace("\n", " ") + "봄은?", "/retry",
            "/continue", "/set temperature 0", "/retry", "/set repetition_penalty 1.4", "/continue", "/reset",
            "/set quick on", "/set seed 4", "/set num_return_sequences 2", PREAMBLE.replace("\n", " ") + "여름은?",
            "/retry"]
    path = tmp_path / "t.jsonl"
    renderer = make_renderer()
    code, _, err = run_repl(fresh, "".join(k + ENTER for k in keys) + CTRL_D, tmp_path, renderer=renderer,
                            repl_hook=lambda repl: setattr(repl, "transcript", Transcript(path, renderer.warning)))
    assert code == 0 and "error" not in err.lower()
    import json

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 9
    for record in records:
        settings = SamplingSettings(**{**record["settings"], "seed": record["seed"] - record["index"]})
        assert cold(fresh, record["prompt"], settings)[record["index"]] == record["completion"], record


def slow_forward(gpt: KoGPT, seconds: float, calls: list):
    original = gpt.model.forward

    def forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        time.sleep(seconds)
        return original(*args, **kwargs)

    return forward


def interrupt_main_after(seconds: float) -> None:
    main = threading.main_thread().ident
    threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGINT)).start()


def test_ctrl_c_mid_prefill_cancels_before_the_next_chunk(fresh, monkeypatch):
    fresh.engine.prefill_chunk = 4
    long = PREAMBLE + "질문: 봄은?"  # about 70 tokens: 18 chunks
    n = len(fresh.encode(long))
    want = cold(fresh, long, SamplingSettings(seed=2, max_new_tokens=5))
    calls: list[int] = []
    monkeypatch.setattr(fresh.model, "forward", slow_forward(fresh, 0.1, calls))
    fresh.engine.forget()
    interrupt_main_after(0.35)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        for _ in fresh.stream(long, seed=2, max_new_tokens=5):
            pass
    assert time.perf_counter() - started < 0.1 * n / 4 and not fresh.engine.busy
    assert 1 <= len(calls) < n // 4 and all(c == 4 for c in calls)  # stopped mid-prefill
    monkeypatch.undo()
    assert warm(fresh, long, SamplingSettings(seed=2, max_new_tokens=5)) == want  # the chunks done are reused
    assert 0 < fresh.engine.last_stats.reused_tokens < n


def test_ctrl_c_mid_decode_keeps_what_was_shown_and_stops_at_the_next_token(fresh, monkeypatch):
    settings = SamplingSettings(seed=5, max_new_tokens=100, num_return_sequences=2)
    calls: list[int] = []
    monkeypatch.setattr(fresh.model, "forward", slow_forward(fresh, 0.02, calls))
    shown = []

    def on_text(index, text):
        shown.append((index, text))
        if len(shown) == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        fresh.complete(PROMPT, settings, on_text)
    assert not fresh.engine.busy and len(calls) < 50
    records = info.value.records
    assert records[0].finish_reason == "interrupted"
    assert records[0].completion == "".join(t for i, t in shown[:2] if i == 0)
    monkeypatch.undo()
    whole = cold(fresh, PROMPT, SamplingSettings(seed=5, max_new_tokens=100, num_return_sequences=2))
    assert whole[0].startswith(records[0].completion)


def test_concurrent_callers_each_get_exactly_their_own_results(fresh):
    jobs = {
        f"t{t}": [(line[:10 + t], SamplingSettings(seed=t * 10 + i, max_new_tokens=8 + i,
                                                   num_return_sequences=1 + (i + t) % 3, top_k=0 if t % 2 else 7))
                  for i, line in enumerate(korean_lines()[t * 3 : t * 3 + 3])]
        for t in range(4)
    }
    expected = {name: [cold(fresh, p, s) for p, s in work] for name, work in jobs.items()}
    got: dict[str, list] = {}
    barrier = threading.Barrier(len(jobs))

    def caller(name: str) -> None:
        barrier.wait()
        got[name] = [warm(fresh, p, s) for p, s in jobs[name]]

    threads = [threading.Thread(target=caller, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert got == expected


def test_batched_samples_are_reproducible_and_greedy_rows_equal_the_single_greedy_text(fresh):
    settings = SamplingSettings(seed=40, max_new_tokens=16, num_return_sequences=4)
    records = fresh.complete(PROMPT, settings)
    assert [r.seed for r in records] == [40, 41, 42, 43] and [r.index for r in records] == [0, 1, 2, 3]
    texts = [r.completion for r in records]
    assert len(set(texts)) > 1
    assert texts == warm(fresh, PROMPT, settings) == cold(fresh, PROMPT, settings)
    # Sequence i is the sequence a single request with seed 40 + i gives.
    assert texts == [fresh.generate(PROMPT, seed=40 + i, max_new_tokens=16) for i in range(4)]
    greedy = SamplingSettings(temperature=0, max_new_tokens=16, num_return_sequences=3)
    single = fresh.generate(PROMPT, temperature=0, max_new_tokens=16)
    assert [r.completion for r in fresh.complete(PROMPT, greedy)] == [single] * 3


def test_batched_samples_in_order_hold_later_sequences_back(fresh):
    seen = []
    records = fresh.complete(PROMPT, SamplingSettings(seed=1, max_new_tokens=10, num_return_sequences=3),
                             lambda i, text: seen.append(i))
    assert seen == sorted(seen) and set(seen) == {0, 1, 2}
    assert all(r.finish_reason in {"length", "eos"} for r in records)
    interleaved = []
    again = fresh.complete(PROMPT, SamplingSettings(seed=1, max_new_tokens=10, num_return_sequences=3),
                           lambda i, text: interleaved.append(i), interleaved=True)
    assert [r.completion for r in again] == [r.completion for r in records]
    assert interleaved != sorted(interleaved)  # the rows grow together


def test_a_script_ending_with_a_stream_still_open_exits_cleanly(tiny_dir, tmp_path):
    script = tmp_path / "open_stream.py"
    script.write_text(
        "import sys\nfrom kogpt import KoGPT\n"
        "gpt = KoGPT.load(sys.argv[1], device='cpu')\n"
        "it = gpt.stream('오늘은 날씨가', max_new_tokens=100, seed=1)\n"
        "print(next(it).tokens)\n"
        "def scoped():  # an engine collected just before the exit\n"
        "    other = KoGPT(gpt.loaded)\n"
        "    print(other.generate('봄', max_new_tokens=4, seed=2))\n"
        "scoped()\n",
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # Before the engine this aborted the interpreter (exit 134) every time.
    done = subprocess.run([sys.executable, str(script), str(tiny_dir)], capture_output=True, text=True, env=env,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr


def test_an_abandoned_stream_does_not_change_a_later_seeded_generate(fresh):
    want = cold(fresh, "여름에는", SamplingSettings(seed=5, max_new_tokens=20))[0]
    kept = fresh.stream(PROMPT, seed=1, max_new_tokens=100)
    next(kept)  # abandoned, still referenced: it goes on decoding in the batch beside the generate
    assert fresh.generate("여름에는", seed=5, max_new_tokens=20) == want
    kept.close()
    dropped = fresh.stream(PROMPT, seed=1, max_new_tokens=100)
    next(dropped)
    del dropped  # collected: cancelled at its next token
    assert not fresh.engine.busy and fresh.engine.last_stats.steps < 99
    assert fresh.generate("여름에는", seed=5, max_new_tokens=20) == want


def test_a_seeded_generate_inside_a_seeded_stream_loop_reproduces_both_seeds(fresh):
    outer_want = fresh.generate(PROMPT, seed=1, max_new_tokens=30)
    inner_want = fresh.generate("여름에는", seed=2, max_new_tokens=10)
    outer, inner = [], []
    for chunk in fresh.stream(PROMPT, seed=1, max_new_tokens=30):
        outer.append(chunk.text)
        if len(inner) < 3:
            inner.append(fresh.generate("여름에는", seed=2, max_new_tokens=10))
    assert "".join(outer) == outer_want
    assert inner == [inner_want] * 3


def test_the_repl_shows_n_samples_growing_together_in_a_terminal_then_whole_in_order(fresh, tmp_path):
    import io
    import json

    from rich.console import Console

    from kogpt.cli.render import Renderer, printable
    from kogpt.transcript import Transcript
    from tests.test_repl import CTRL_D, ENTER, run_repl

    out = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    renderer = Renderer(out, Console(file=io.StringIO(), width=200, color_system=None))
    updates = []
    original = renderer.samples

    def samples(total, prompt=None):
        updates.append(total)
        return original(total, prompt)

    renderer.samples = samples
    path = tmp_path / "t.jsonl"
    keys = "".join(k + ENTER for k in ["/set quick on", "/set seed 2", "/set num_return_sequences 3",
                                       "/set max_new_tokens 12", "봄이 오면"]) + CTRL_D
    code, shown, err = run_repl(fresh, keys, tmp_path, renderer=renderer,
                                repl_hook=lambda repl: setattr(repl, "transcript", Transcript(path, renderer.warning)))
    assert code == 0 and updates == [3]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    final = shown[shown.rindex("봄이 오면" + printable(records[0]["completion"])):]  # after the live view
    places = [final.find("봄이 오면" + printable(r["completion"])) for r in records]
    assert places == sorted(places) and places[0] == 0 and -1 not in places
    assert err.count("tokens/s") == 1


def test_no_compile_flag_reaches_the_load(monkeypatch):
    from kogpt.api import KoGPT as Api
    from kogpt.cli import flags
    from kogpt.cli.main import build_parser
    from kogpt.cli.render import Renderer

    seen = {}
    monkeypatch.setattr(Api, "from_options", classmethod(lambda cls, *a, **kw: seen.update(kw)))
    monkeypatch.setattr("kogpt.loading.checkpoint.resolve_checkpoint", lambda *a: None)
    for argv, want in (([], True), (["--no-compile"], False)):
        flags.load_model(build_parser().parse_args(["--device", "cpu", *argv]), Renderer())
        assert seen["compile"] is want
