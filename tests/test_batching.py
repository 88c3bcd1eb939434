"""Continuous batching (issue 21): rows of different requests join and leave one running batch,
prompts are fed in chunks between decode steps, the prefix store keeps many prompts, and a seeded
request gives the same text alone and in any batch (tiny model, float32)."""

from __future__ import annotations

import threading

import pytest
import torch

from kogpt import KoGPT
from kogpt.engine.prefix import PrefixStore, common_prefix
from kogpt.engine.scheduler import WORTH_WAITING, Scheduler
from kogpt.engine.worker import Request
from kogpt.settings import SamplingSettings
from tests.test_engine import cold

PROMPT = "오늘은 날씨가"
HELD = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}  # greedy: still running at its gate
PREAMBLE = "질문: 하늘은 무슨 색인가요?\n답: 파란색\n질문: 바다는 어떤가요?\n답: 넓다\n"


@pytest.fixture()
def fresh(gpt):
    return KoGPT(gpt.loaded)


def alone(gpt: KoGPT, prompt: str, **settings) -> list[str]:
    return cold(KoGPT(gpt.loaded), prompt, SamplingSettings(**settings))


def in_threads(calls) -> list:
    """Run the calls at once, each in its thread; their results in order."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i, call):
        start.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


@pytest.mark.parametrize("temperature", [0, 0.9])
def test_eight_concurrent_callers_get_their_text_alone_and_decode_together(gpt, fresh, temperature):
    prompts = [PROMPT, "봄이 오면", PREAMBLE + "질문: 봄은?\n답:", "가", PROMPT, "여름에는 바다", "한국어", "하늘"]
    settings = [dict(seed=10 + i, max_new_tokens=12 + i, temperature=temperature) for i in range(8)]
    want = [alone(gpt, p, **s)[0] for p, s in zip(prompts, settings)]
    peaks: list[int] = []

    def call(p, s):
        records = fresh.complete(p, SamplingSettings(**s))
        return records[0].completion

    got = in_threads([lambda p=p, s=s: call(p, s) for p, s in zip(prompts, settings)])
    assert got == want
    peaks.append(fresh.engine.last_stats.peak_batch)
    assert max(peaks) > 1  # the last one to finish shared steps with others


def test_samples_of_one_request_equal_their_cold_single_runs(gpt, fresh):
    settings = SamplingSettings(seed=3, max_new_tokens=16, temperature=1.0, num_return_sequences=3)
    together = [r.completion for r in fresh.complete(PROMPT, settings)]
    one_by_one = [alone(gpt, PROMPT, seed=3 + i, max_new_tokens=16, temperature=1.0)[0] for i in range(3)]
    assert together == one_by_one


def test_a_short_request_joins_and_leaves_while_a_long_one_runs(gpt, fresh):
    long_want = alone(gpt, PROMPT, seed=1, max_new_tokens=80, temperature=0.8)[0]
    short_want = alone(gpt, "봄이 오면", seed=2, max_new_tokens=4)[0]
    long = fresh.stream(PROMPT, seed=1, max_new_tokens=80, temperature=0.8)
    text = next(long).text
    short = fresh.generate("봄이 오면", seed=2, max_new_tokens=4)  # served while the long one decodes
    assert fresh.engine.busy  # the long one has not finished: the short one did not wait for it
    text += "".join(chunk.text for chunk in long)
    assert (short, text) == (short_want, long_want)
    assert not fresh.engine.busy


def test_cancelling_a_running_row_leaves_the_others_unchanged(gpt, fresh):
    want = alone(gpt, "여름에는", seed=4, max_new_tokens=30, temperature=0.8)[0]
    doomed = fresh.stream(PROMPT, seed=1, max_new_tokens=100)
    next(doomed)
    kept = fresh.stream("여름에는", seed=4, max_new_tokens=30, temperature=0.8)
    text = next(kept).text
    doomed.close()  # leaves the batch at its next step
    text += "".join(chunk.text for chunk in kept)
    assert text == want


def test_a_cancelled_queued_request_never_starts_and_the_next_runs_at_once(fresh):
    fresh.engine.max_batch = 1
    running = fresh.stream(PROMPT, seed=1, max_new_tokens=100)
    next(running)
    settings = SamplingSettings(max_new_tokens=4)
    queued = [fresh.engine.submit(fresh.encode(PROMPT), settings, [i], 4) for i in range(50)]
    for request in queued:
        request.cancel.set()
    running.close()
    assert fresh.generate("가", seed=1, max_new_tokens=2) is not None
    for request in queued:
        assert list(fresh.engine.pieces(request)) == [] and not request.started.is_set()


def scheduler(gpt, chunk: int = 8, max_batch: int = 8, budget: int = 1 << 30) -> Scheduler:
    from kogpt.engine.decode import Stepper

    return Scheduler(gpt.model, gpt.tokenizer, torch.device("cpu"), Stepper(gpt.model), PrefixStore(budget),
                     max_batch, chunk)


def request(gpt, prompt: str, tokens: int, seed: int = 1) -> Request:
    ids = gpt.encode(prompt)
    return Request(ids, SamplingSettings(seed=seed, max_new_tokens=tokens, temperature=1.0), [seed], tokens)


def a_seed_that_runs(gpt, prompt: str, tokens: int) -> int:
    """A seed whose completion of `prompt` uses all `tokens` (the tiny model may end early)."""
    for seed in range(100):
        sched, alone = scheduler(gpt), request(gpt, prompt, tokens, seed)
        sched.add(alone)
        while not sched.idle:
            sched.tick()
        if alone.stats.tokens == tokens:
            return seed
    raise AssertionError("no seed runs that long")


def test_a_long_prompt_is_fed_one_chunk_per_step_while_the_batch_decodes(gpt):
    with torch.inference_mode():
        seed = a_seed_that_runs(gpt, PROMPT, 40)
        sched = scheduler(gpt, chunk=8)
        running = request(gpt, PROMPT, 40, seed)
        sched.add(running)
        while not len(sched.batch):
            sched.tick()
        long = request(gpt, PREAMBLE + "질문: 봄은?\n답:", 4)  # several chunks of 8
        chunks = -(-len(long.ids) // 8)
        sched.add(long)
        before = running.stats.steps
        assert chunks >= 3
        for tick in range(chunks):
            sched.tick()  # one chunk of the prompt, then a step of the batch
            assert running.stats.steps == before + tick + 1  # the running stream never waits more
            assert bool(sched.feeding) == (tick < chunks - 1)
        assert long.stats.steps == 1 and long.stats.peak_batch == 2  # its prompt in, it joined the batch


def test_a_short_request_behind_a_long_prompt_gets_its_first_token_within_two_chunks(gpt):
    with torch.inference_mode():
        sched = scheduler(gpt, chunk=8)
        long = request(gpt, PREAMBLE + "질문: 봄은?\n답:", 4)
        sched.add(long)
        sched.tick()  # the long prompt's first chunk
        short = request(gpt, "가", 16)
        sched.add(short)
        sched.tick()
        sched.tick()  # two chunks after it arrived: its prompt is in, its first token sampled
        assert [job.request for job, _ in sched.batch.owners] == [short] and short.stats.prefill_seconds > 0
        assert [job.request for job in sched.feeding] == [long]


def test_short_prompts_arriving_together_start_decoding_at_one_step(gpt):
    """They are fed in one tick while their tokens fit in one chunk; the rest wait for the next."""
    with torch.inference_mode():
        sched = scheduler(gpt, chunk=16)
        requests = [request(gpt, word, 4, seed=i) for i, word in enumerate(["봄은", "여름은", "가을은", "겨울은"])]
        assert sum(len(r.ids) for r in requests[:3]) <= 16  # the test's premise: three fit in one chunk
        for r in requests:
            sched.add(r)
        fits = 0
        while sum(len(r.ids) for r in requests[: fits + 1]) <= 16 and fits < len(requests):
            fits += 1
        sched.tick()
        assert len(sched.batch) == fits and all(r.stats.steps == 1 for r in requests[:fits])
        while not sched.idle:
            sched.tick()
        assert all(r.stats.tokens == 4 for r in requests)


def test_clients_sharing_a_preamble_feed_it_once(gpt):
    with torch.inference_mode():
        sched = scheduler(gpt, chunk=8)
        requests = [request(gpt, PREAMBLE + f"질문: {word}은?\n답:", 2, seed=i)
                    for i, word in enumerate(["봄", "여름", "가을", "겨울"] * 4)]
        for r in requests:
            sched.add(r)
        while not sched.idle:
            sched.tick()
        preamble = min(common_prefix(requests[0].ids, r.ids) for r in requests[1:])
        assert preamble >= len(gpt.encode(PREAMBLE)) - 1 and preamble % 8  # the whole preamble, not whole chunks of it
        assert all(r.stats.reused_tokens >= preamble for r in requests[1:])
        fed = sum(r.stats.prefill_tokens for r in requests)
        assert fed <= len(requests[0].ids) + sum(len(r.ids) - preamble for r in requests[1:])


def test_a_prompt_that_merely_starts_like_one_being_fed_does_not_wait_for_it(gpt):
    with torch.inference_mode():
        sched = scheduler(gpt, chunk=4)
        long, short = request(gpt, PREAMBLE * 3, 1), request(gpt, PREAMBLE[:6] + "전혀 다른 이야기", 1)
        assert 0 < common_prefix(long.ids, short.ids) < WORTH_WAITING
        sched.add(long)
        sched.add(short)
        sched.tick()
        assert short.stats.steps == 0 and short.started.is_set()  # admitted at once, beside the long prompt
        while not sched.idle:
            sched.tick()
        assert short.stats.reused_tokens == 0 and long.finished.is_set() and short.finished.is_set()


def test_a_short_request_behind_a_long_prompt_with_a_common_beginning_does_not_wait_for_all_of_it(gpt):
    """Sharing an instruction with a long prompt being fed saves its tokens, but waiting would cost
    the rest of the long prompt's feed: the short request starts at once, its first token a chunk
    later (the issue's "within 2 prefill chunks")."""
    with torch.inference_mode():
        sched = scheduler(gpt, chunk=48)
        ids = gpt.encode(PREAMBLE * 2)[:120]
        other = [t for t in gpt.encode("전혀 다른 이야기") if t != ids[34]][:6]
        settings = SamplingSettings(seed=1, max_new_tokens=4, temperature=1.0)
        long, short = Request(ids, settings, [1], 4), Request(ids[:34] + other, settings, [1], 4)
        assert common_prefix(long.ids, short.ids) == 34 >= WORTH_WAITING and len(short.ids) <= 48
        sched.add(long)
        sched.tick()  # the long prompt's first chunk: 72 of its tokens are left, over twice the 34 shared
        sched.add(short)
        ticks = 0
        while short.events.empty():  # its first piece of text
            sched.tick()
            ticks += 1
        assert ticks <= 2 and any(job.request is long for job in sched.feeding)  # the long prompt still feeding


def test_the_prefix_store_hits_partly_hits_and_evicts_within_its_budget(gpt):
    with torch.inference_mode():
        sched = scheduler(gpt, chunk=8)
        a = request(gpt, PREAMBLE + "질문: 봄은?\n답:", 1)
        sched.add(a)
        while not sched.idle:
            sched.tick()
        store = sched.store
        assert len(store) == 1
        held = next(iter(store.entries.values()))[0].layers  # fed into a cache with spare room, kept without it
        assert store.bytes == sum(t.untyped_storage().nbytes() for layer in held for t in (layer.keys, layer.values))
        _, kept, logits = store.lookup(a.ids)
        assert kept == len(a.ids) and logits is not None  # the same prompt: no forward pass
        partial = gpt.encode(PREAMBLE + "질문: 여름은?\n답:")
        cache, kept, logits = store.lookup(partial)
        shared = common_prefix(a.ids, partial)
        assert kept == shared and shared % 8 and logits is None and cache.get_seq_length() == kept  # to the token
        assert store.lookup(a.ids[:5])[1] == 4  # a beginning of an entry: all but its last token, which gives the logits
        assert store.lookup(gpt.encode("완전히 다른 이야기"))[1] == 0
        size = store.bytes
        small = PrefixStore(int(size * 1.5))
        first, second = store.entries.popitem()[1], None
        small.add(a.ids, first[0], first[1])
        small.add(partial, first[0], first[1])  # over budget: the older entry goes
        assert len(small) == 1 and small.lookup(a.ids)[2] is None and small.lookup(partial)[2] is not None
        assert second is None and small.bytes <= small.budget


def test_a_failed_step_fails_every_running_request_and_the_engine_goes_on(fresh, monkeypatch):
    from kogpt.engine import batch
    from kogpt.errors import KoGPTError

    one = fresh.stream(PROMPT, seed=1, max_new_tokens=50)
    next(one)
    real = batch.Batch.step

    def broken(self, stepper, tokens):
        monkeypatch.setattr(batch.Batch, "step", real)
        raise RuntimeError("boom")

    monkeypatch.setattr(batch.Batch, "step", broken)
    with pytest.raises(KoGPTError, match="boom"):
        list(one)
    assert fresh.generate("가", seed=1, max_new_tokens=3) == alone(fresh, "가", seed=1, max_new_tokens=3)[0]


def test_the_servers_choices_and_clients_decode_together(gpt):
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    from kogpt.engine.worker import _model_lock
    from kogpt.server.app import ServerState, create_app
    from tests.serving import GatedGPT, running, wait_for

    plain = KoGPT(gpt.loaded)
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=8), max_batch=6, prefix_cache=0)
    runner = state.ready(plain)
    body = {"prompt": PROMPT, "max_tokens": 12, "n": 4, "seed": 7, "temperature": 0}
    with running(create_app(state)) as url:
        plain.generate("가", max_new_tokens=1)  # the worker runs
        core = plain.engine._core
        fed = plain.engine.fed_tokens
        with _model_lock(plain.model):  # no step until the request is in the engine
            replying = threading.Thread(target=lambda: out.append(httpx.post(url + "/v1/completions", json=body,
                                                                              timeout=60).json()))
            out: list = []
            replying.start()
            wait_for(lambda: len(core.scheduler.waiting) + core.requests.qsize() == 1, "the request to arrive")
        replying.join(60)
        (reply,) = out
        assert plain.engine.peak_rows == 4  # the four choices decoded in one batch
        # one engine request with a row per choice: the prompt was fed once (no prefix cache here)
        assert plain.engine.fed_tokens - fed == reply["usage"]["prompt_tokens"] == len(gpt.tokenizer(PROMPT).input_ids)
        alone_texts = [alone(gpt, PROMPT, seed=7 + i, max_new_tokens=12, temperature=0)[0] for i in range(4)]
        assert [c["text"] for c in reply["choices"]] == alone_texts
        assert plain.engine.prefix_budget == 0 and plain.engine.max_batch == 6

        held = GatedGPT(gpt)
        state = ServerState("kogpt", SamplingSettings(max_new_tokens=8), max_batch=2, max_queue=1)
        runner = state.ready(held)
    with running(create_app(state)) as url:
        replies: list = []
        threads = [threading.Thread(target=lambda: replies.append(httpx.post(
            url + "/v1/completions", json=HELD, timeout=60))) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_for(lambda: runner.stats.started == 2 and runner.waiting == 1, "two to run and one to wait")
        refused = httpx.post(url + "/v1/completions", json=HELD, timeout=60)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        held.gate.set()
        for thread in threads:
            thread.join(60)
        assert [r.status_code for r in replies] == [200] * 3


def test_a_sampler_failure_reaches_its_callers_and_the_engine_goes_on(fresh, monkeypatch):
    from kogpt.engine import sampling
    from kogpt.errors import KoGPTError

    real = sampling.Sampler.__call__
    calls = []

    def broken(self, logits, history, rows=None):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("bad probabilities")
        return real(self, logits, history, rows)

    monkeypatch.setattr(sampling.Sampler, "__call__", broken)
    with pytest.raises(KoGPTError, match="bad probabilities"):
        fresh.generate(PROMPT, seed=1, max_new_tokens=10)
    monkeypatch.setattr(sampling.Sampler, "__call__", real)
    assert fresh.generate("가", seed=1, max_new_tokens=3) == alone(fresh, "가", seed=1, max_new_tokens=3)[0]
    assert not fresh.engine.busy


def test_serve_plan_shows_the_batch_and_the_prefix_cache(tiny_dir, capsys):
    from kogpt import cli

    argv = ["serve", "--model", str(tiny_dir), "--device", "cpu", "--plan", "--prefix-cache", "1GiB", "--max-batch", "3"]
    assert cli.main(argv) == 0
    shown = " ".join(capsys.readouterr().out.split())  # as one line, however the terminal wraps it
    assert "continuous batching of up to 3 rows; prefix cache up to 1.00 GiB; prompts fed in chunks of 128 tokens" in shown
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--model", str(tiny_dir), "--plan", "--max-batch", "0"])
    assert exit.value.code == 2 and "argument --max-batch: must be more than 0" in capsys.readouterr().err


def test_a_growing_cache_appends_as_concatenation_does_and_never_writes_a_view_handed_out(monkeypatch):
    from kogpt.engine import decode

    monkeypatch.setattr(decode.GrowingLayer, "ROOM", 3)  # several rooms within a few steps
    torch.manual_seed(0)
    steps = [torch.randn(2, 4, n, 8) for n in (5, 1, 1, 1, 1, 2, 1)]
    cache = decode.dynamic_cache([(steps[0], -steps[0])])
    layer = cache.layers[0]
    assert isinstance(layer, decode.GrowingLayer)
    for step in steps[1:]:
        keys, values = cache.update(step, -step, 0)
    want = torch.cat(steps, dim=2)
    assert torch.equal(keys, want) and torch.equal(values, -want) and cache.get_seq_length() == 12
    handed = keys.clone(), keys
    cache.crop(-4)  # 8 positions kept: the next update must not write over the view handed out above
    cache.update(torch.zeros(2, 4, 1, 8), torch.zeros(2, 4, 1, 8), 0)
    assert torch.equal(handed[1], handed[0]) and cache.get_seq_length() == 9
    assert torch.equal(layer.keys[:, :, :8], want[:, :, :8]) and not layer.keys[:, :, 8].any()
