"""The kernel chooser, with injected timings and errors (no test here times anything)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from kogpt import KoGPT
from kogpt.loading import choices, chooser, kernels

SHAPES = {(64, 64): 8, (256, 64): 2, (64, 256): 2}
SLOW = 1e9  # a kernel a test gives no time: never the fastest


def timings(seconds: dict[str, float], calls: list | None = None):
    def measure(kernel, shape, rows=1):
        if calls is not None:
            calls.append((kernel.name, shape))
        return seconds.get(kernel.name, SLOW)

    return measure


def errors(values: dict[str, float]):
    return lambda kernel: values.get(kernel.name, 0.001)


def test_the_fastest_kernel_that_passes_the_accuracy_check_wins():
    choice = chooser.choose("int8", SHAPES, timings({"w8": 3.0, "w8a8": 2.0}), accuracy=errors({}))
    assert choice.kernel == "w8a8"
    assert choice.seconds["w8"] == 3.0 * 12 and choice.seconds["w8a8"] == 2.0 * 12  # one pass: count x time per shape
    assert f"fastest of {len(kernels.candidates('int8'))}" in choice.why


@pytest.mark.skipif("w8dnn" not in {k.name for k in kernels.candidates("int8")}, reason="no oneDNN int8 in this torch")
def test_a_layout_prepared_at_every_load_pays_for_it_in_the_score():
    """oneDNN's int8 layout is made at every start: on the 6B that is seconds that one request's
    faster steps may not win back (prepare 2 s a layer here, 24 s; the steps gain 16 s)."""
    seconds = {"w8": 0.02, "w8a8": 0.03, "w8dnn": 0.015}

    def choose(prepare: float):
        return chooser.choose("int8", SHAPES, timings(seconds), accuracy=errors({}),
                              preparing=lambda kernel, shape: prepare if kernel.prepare else 0.0)  # fmt: skip

    free, costly = choose(0.0), choose(2.0)
    assert free.kernel == "w8dnn" and costly.kernel == "w8"
    assert costly.scores["w8dnn"] - free.scores["w8dnn"] == pytest.approx(24.0) and costly.scores["w8"] == free.scores["w8"]
    assert "w8dnn 71.5 s (24.0 s of it preparing at load)" in costly.why


def test_the_preparing_at_load_is_measured_for_kernels_that_prepare_only():
    assert kernels.prepare_seconds(kernels.KERNELS["w8"], (4096, 64)) == 0.0
    if "w8dnn" in {k.name for k in kernels.candidates("int8")}:
        assert kernels.prepare_seconds(kernels.KERNELS["w8dnn"], (1 << 16, 512)) > 0  # timed on a slice, scaled


def test_an_inaccurate_kernel_is_rejected_however_fast():
    choice = chooser.choose("int8", SHAPES, timings({"w8": 3.0, "w8a8": 1.0}), accuracy=errors({"w8a8": 0.5}))
    assert choice.kernel == "w8"
    assert "rejected as inaccurate: w8a8" in choice.why


def test_within_five_percent_the_more_accurate_kernel_wins():
    seconds = {"w4g32": 1.04, "w4g64": 1.0, "w4g128": 1.3, "w4g256": 1.5}
    accuracy = errors({"w4g32": 0.07, "w4g64": 0.09, "w4g128": 0.1, "w4g256": 0.11})
    choice = chooser.choose("int4", {(64, 256): 1}, timings(seconds), accuracy=accuracy)
    assert choice.kernel == "w4g32" and "the most accurate" in choice.why


def test_within_five_percent_the_standard_kernel_wins():
    """Group 128 (0.53 bytes a weight) over a more accurate group 32 (0.63) that is barely faster."""
    seconds = {"w4g32": 1.0, "w4g64": 1.02, "w4g128": 1.04, "w4g256": 1.5}
    accuracy = errors({"w4g32": 0.07, "w4g64": 0.09, "w4g128": 0.1, "w4g256": 0.11})
    choice = chooser.choose("int4", {(64, 256): 1}, timings(seconds), accuracy=accuracy)
    assert choice.kernel == kernels.DEFAULTS["int4"] == "w4g128" and "the standard kernel" in choice.why
    seconds["w4g128"] = 1.06  # just outside the tie: the fastest group wins again
    assert chooser.choose("int4", {(64, 256): 1}, timings(seconds), accuracy=accuracy).kernel == "w4g32"


def test_a_kernel_that_does_not_run_here_is_skipped():
    def accuracy(kernel):
        if kernel.name == "w8a8":
            raise RuntimeError("not implemented for this CPU")
        return 0.001

    assert chooser.choose("int8", SHAPES, timings({"w8": 3.0, "w8a8": 1.0}), accuracy=accuracy).kernel == "w8"


def test_no_passing_kernel_is_an_error_that_names_the_rejected():
    with pytest.raises(RuntimeError, match="no int8 kernel runs correctly.*w8"):
        chooser.choose("int8", SHAPES, timings({"w8": 1.0, "w8a8": 1.0}), accuracy=lambda kernel: 1.0)
    with pytest.raises(ValueError, match="unknown weight format"):
        chooser.choose("int3", SHAPES, timings({}))


def test_int4_groups_that_do_not_divide_the_inputs_are_not_candidates():
    calls: list = []
    seconds = {"w4g32": 2.0, "w4g64": 1.0, "w4g128": 0.1, "w4g256": 0.1}
    choice = chooser.choose("int4", {(64, 64): 1}, timings(seconds, calls), accuracy=errors({}))
    assert choice.kernel == "w4g64" and {kernels.KERNELS[name].layout for name, _ in calls} == {"w4g32", "w4g64"}


@pytest.mark.parametrize(("fmt", "seconds"), [("int8", {"w8": 3.0, "w8a8": 2.0}), ("float", {"bf16": 1.0, "fp32": 2.0})])
def test_the_choice_is_measured_once_per_machine_and_thread_count(fmt, seconds):
    calls: list = []
    measure = timings(seconds, calls)
    first = choices.choice_for(fmt, SHAPES, 2, measure, accuracy=errors({}))
    measured = len(calls)
    again = choices.choice_for(fmt, SHAPES, 2, measure, accuracy=errors({}))
    assert again == first and len(calls) == measured  # remembered, not measured again
    choices.choice_for(fmt, SHAPES, 1, measure, accuracy=errors({}))
    assert len(calls) == 2 * measured  # another thread count is another measurement
    stored = json.loads(choices.choices_file().read_text())
    assert any("torch " + torch.__version__ in key for key in stored)


def test_a_damaged_choices_file_is_measured_again():
    choices.choices_file().parent.mkdir(parents=True, exist_ok=True)
    choices.choices_file().write_text("{not json")
    calls: list = []
    choice = choices.choice_for("int8", SHAPES, 2, timings({"w8": 1.0, "w8a8": 2.0}, calls), accuracy=errors({}))
    assert choice.kernel == "w8" and calls
    assert choices.cached_choice("int8", 2, SHAPES).kernel == "w8"


def test_an_unwritable_choices_file_only_costs_a_measurement_next_time(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(choices, "choices_file", lambda: blocker / "kernels.json")
    choice = choices.choice_for("int8", SHAPES, 2, timings({"w8": 1.0, "w8a8": 2.0}), accuracy=errors({}))
    assert choice.kernel == "w8"


def test_gptj_linear_shapes_cover_every_linear_weight():
    from transformers import GPTJConfig

    config = GPTJConfig(n_embd=4096, n_layer=28, n_head=16, rotary_dim=64, vocab_size=64512)
    shapes = kernels.linear_shapes(config)
    assert shapes == {(4096, 4096): 112, (16384, 4096): 28, (4096, 16384): 28, (64512, 4096): 1}
    assert sum(o * i * n for (o, i), n in shapes.items()) == 28 * 12 * 4096**2 + 64512 * 4096


def test_threads_default_to_the_physical_cores_and_are_applied():
    before = torch.get_num_threads()
    try:
        assert kernels.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert kernels.set_threads(None) == kernels.default_threads() >= 1
        with pytest.raises(ValueError, match="1 or more"):
            kernels.set_threads(-2)
    finally:
        torch.set_num_threads(before)


def test_every_kernel_runs_on_this_cpu_and_the_measurement_runs():
    for kernel in kernels.KERNELS.values():
        assert kernel.buffers == tuple(kernel.pack(torch.randn(32, 256)).keys())
        assert chooser.relative_error(kernel) < kernels.TOLERANCE[kernel.format]
    assert kernels.time_kernel(kernels.KERNELS["w8"], (32, 64), rotate_bytes=1 << 14, rounds=1) > 0


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_a_row_alone_computes_what_it_computes_among_many(name):
    """A decode step's one row and a prompt chunk's rows may take other paths in a kernel (w8dnn
    hands one row's scale to oneDNN): the row's result is the same but for rounding."""
    kernel = kernels.KERNELS[name]
    if kernel not in kernels.candidates(kernel.format, 256) and kernel not in kernels.candidates("float", 256):
        pytest.skip(f"{name} is not a candidate on this CPU")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 256, generator=generator) * 0.02
    x = torch.randn(20, 256, generator=generator)
    tensors = kernel.packed(weight)
    many = kernel.run(x, tensors).float()[:, :96]
    for row in (0, 7, 19):
        alone = kernel.run(x[row : row + 1], tensors).float()[:, :96]
        assert float((alone - many[row]).norm() / many[row].norm()) < 0.01


def test_load_says_which_kernel_and_why(tiny_bin_dir, caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.DEBUG, logger="kogpt"):
            gpt = KoGPT.load(str(tiny_bin_dir), device="cpu", quantize="int8", threads=1, cache=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert gpt.loaded.threads == 1 and gpt.loaded.kernel in ("w8", "w8a8")
    assert f"int8 kernel {gpt.loaded.kernel}" in caplog.text and "fastest of" in caplog.text


@pytest.mark.parametrize(("threads", "kernel", "message"), [
    (0, None, "threads must be a whole number of 1 or more, not 0"),
    ("2", None, "threads must be a whole number"),
    (None, 8, "kernel must be a kernel's name"),
    (None, "w9", "kernel 'w9' does not compute int8 weights of this model; choose one of w8, w8a8"),
])  # fmt: skip
def test_bad_threads_or_kernel_are_one_line_errors(tiny_dir, threads, kernel, message):
    from kogpt import KoGPTError

    with pytest.raises(KoGPTError, match=message):
        KoGPT.load(str(tiny_dir), device="cpu", quantize="int8", threads=threads, kernel=kernel, cache=False)


def test_a_new_candidate_kernel_means_measuring_again(monkeypatch):
    calls: list = []
    measure = timings({"w8": 3.0, "w8a8": 2.0}, calls)
    choices.choice_for("int8", SHAPES, 2, measure, accuracy=errors({}))
    measured = len(calls)
    monkeypatch.setitem(kernels.KERNELS, "w8new", kernels.KERNELS["w8"])  # a later kogpt, one kernel more
    choices.choice_for("int8", SHAPES, 2, measure, accuracy=errors({}))
    assert len(calls) > measured


def test_the_engine_feeds_prompts_in_the_chunk_sized_for_the_prompt_kernel(tiny_dir, monkeypatch):
    measured = choices.kernel_for

    def sized(*args, **kwargs):
        kernel, why, dtype, phases, _chunk = measured(*args, **kwargs)
        return kernel, why, dtype, phases, 256

    monkeypatch.setattr(choices, "kernel_for", sized)
    gpt = KoGPT.load(str(tiny_dir), device="cpu", quantize="int8")
    assert gpt.loaded.decision.prefill_chunk == 256 and gpt.engine.prefill_chunk == 256
    monkeypatch.undo()
    default = KoGPT.load(str(tiny_dir), device="cpu")  # float32 in the CPU's cache: nothing measured
    assert default.loaded.decision.prefill_chunk == 0 and default.engine.prefill_chunk == 128


def test_widened_int4_prompt_kernels_are_not_timed_on_cpus_without_bfloat16_matrix_instructions(monkeypatch):
    from kogpt.loading import bf16

    names = {k.name for k in kernels.candidates("int4")}
    assert {"w4g32", "w4g32bf16"} <= names
    monkeypatch.setattr(bf16, "needs_upcast", lambda: True)
    assert {k.name for k in kernels.candidates("int4")} == {name for name in names if not name.endswith("bf16")}
