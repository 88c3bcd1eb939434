"""Kernels chosen per phase of a request (issue 20), with injected timings: nothing here times anything."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kogpt.loading import choices, chooser, phases
from kogpt.loading.kernels import KERNELS
from kogpt.loading.quantize import PackedLinear

SHAPES = {(256, 256): 8, (1024, 256): 2, (256, 1024): 2}


def by_rows(table: dict[str, dict[int, float]], calls: list | None = None):
    """measure(kernel, shape, rows) -> table[kernel][rows] (a kernel not in the table: never the fastest)."""

    def measure(kernel, shape, rows=1):
        if calls is not None:
            calls.append((kernel.name, rows))
        return table.get(kernel.name, {}).get(rows, 1e9)

    return measure


def accurate(kernel):
    return 0.001


# The EPYC of issue 20, per 4096x16384 layer in ms: fp16 decodes fastest but is 6.5x slower on a chunk.
EPYC_16BIT = {
    "bf16": {1: 8.0, 4: 6.9, 128: 40.0},
    "bf16mv": {1: 14.0},
    "bf16f32": {4: 30.0, 128: 45.0},
    "fp16": {1: 7.0, 4: 26.5, 128: 260.0},
    "fp16f32": {4: 28.0, 128: 44.0},
}


def test_a_kernel_fast_at_one_row_and_slow_at_128_is_not_the_prompt_kernel():
    choice = chooser.choose("int8", SHAPES, by_rows({"w8": {1: 1.0, 4: 1.1, 128: 40.0}, "w8a8": {1: 1.2, 4: 2.5, 128: 10.0}}), accuracy=accurate)
    assert choice.phases == {"step": "w8", "batch": "w8", "prefill": "w8a8"}
    assert choice.kernel == "w8"  # the step kernel names the choice; both read w8's tensors
    assert "prompt chunks of 128 w8a8" in choice.why


def test_phases_never_mix_layouts():
    """fp16 steps and bf16 prompts would each be fastest, but need two copies of the weights."""
    choice = chooser.choose("16bit", SHAPES, by_rows(EPYC_16BIT), accuracy=accurate)
    assert len({KERNELS[name].layout for name in choice.phases.values()}) == 1
    for layout, plan in chooser.layout_plans(choice.phase_seconds, choice.errors).items():
        assert {KERNELS[name].layout for name in plan.values()} == {layout}
    with pytest.raises(ValueError, match="do not share the packed layout"):
        PackedLinear(256, 64, False, "w8", phases={"prefill": "w4g128"})


def test_the_request_score_picks_the_layout_that_wins_the_whole_request():
    choice = chooser.choose("16bit", SHAPES, by_rows(EPYC_16BIT), accuracy=accurate)
    # bf16: 12 x (2 x 4 x 40 + 128 x 8 + 128 x 6.9) = 22,728 ms; fp16 with fp16f32 prompts:
    # 12 x (2 x 4 x 44 + 128 x 7 + 128 x 26.5) = 55,680 ms; plain fp16 decodes faster but loses.
    assert choice.phases == {"step": "bf16", "batch": "bf16", "prefill": "bf16"}
    assert choice.scores["bf16"] == pytest.approx(12 * phases.request_seconds(8.0, 6.9, 40.0))
    assert choice.scores["fp16"] == pytest.approx(12 * phases.request_seconds(7.0, 26.5, 44.0))
    # float16 weights whose many-row inputs run in float32 win once batches are cheap too
    faster = EPYC_16BIT | {"fp16": {1: 6.0, 4: 26.5, 128: 260.0}, "fp16f32": {4: 7.5, 128: 41.0}}  # 8% faster
    choice = chooser.choose("16bit", SHAPES, by_rows(faster), accuracy=accurate)
    assert choice.phases == {"step": "fp16", "batch": "fp16f32", "prefill": "fp16f32"}
    assert choice.kernel == "fp16" and KERNELS[choice.kernel].dtype == torch.float16


def test_within_five_percent_the_standard_layout_wins():
    close = EPYC_16BIT | {"fp16": {1: 7.7, 4: 6.5, 128: 40.0}}  # 2% faster over the request
    choice = chooser.choose("16bit", SHAPES, by_rows(close), accuracy=accurate)
    assert choice.kernel == "bf16" and "the standard kernel" in choice.why


def test_the_request_is_a_512_token_prompt_and_128_tokens_at_batch_1_and_4():
    assert phases.request_seconds(step=1.0, batch=0.0, chunk=0.0) == 128
    assert phases.request_seconds(step=0.0, batch=1.0, chunk=0.0) == 128
    assert phases.request_seconds(step=0.0, batch=0.0, chunk=1.0) == 2 * 512 / phases.PREFILL_ROWS


def test_rows_map_to_phases_and_the_engine_chunks_prompts_by_the_measured_rows():
    from kogpt.engine import decode

    assert [phases.phase_of(rows) for rows in (1, 2, 4, 15, 16, 128)] == ["step", "batch", "batch", "batch", "prefill", "prefill"]
    assert decode.PREFILL_CHUNK["cpu"] == phases.PREFILL_ROWS == phases.ROWS["prefill"]


def test_each_phase_is_timed_at_its_rows_and_kernels_only_in_their_phases():
    calls: list = []
    chooser.choose("16bit", SHAPES, by_rows(EPYC_16BIT, calls), accuracy=accurate)
    assert {rows for name, rows in calls if name == "bf16mv"} == {1}
    assert {rows for name, rows in calls if name == "fp16f32"} == {4, 128}
    # bf16 is the chosen prompt kernel: it alone is timed at the larger chunks, while 256 rows gain
    assert {rows for name, rows in calls if name == "bf16"} == {1, 4, 128, 256}


def test_the_prompt_chunk_grows_only_while_it_saves_more_than_a_tenth_per_token():
    table = {name: dict(rows) for name, rows in EPYC_16BIT.items()}
    # bf16 chunks: 128 rows 40 ms (0.31 ms a token), 256 rows 60 (0.23), 512 rows 115 (0.22: 4% less)
    table["bf16"].update({256: 60.0, 512: 115.0})
    choice = chooser.choose("16bit", SHAPES, by_rows(table), accuracy=accurate)
    assert choice.phases["prefill"] == "bf16" and choice.chunk == 256 and "prompts in chunks of 256" in choice.why
    assert choice.chunk_seconds["512"] == pytest.approx(115.0 * 12 / 512)  # summed over the shapes, per token
    table["bf16"][256] = 78.0  # 2.5% less a token than 128 rows: not worth a stream's longer wait
    calls: list = []
    choice = chooser.choose("16bit", SHAPES, by_rows(table, calls), accuracy=accurate)
    assert choice.chunk == 128 and ("bf16", 512) not in calls  # no gain at 256: 512 is not timed


def test_int4_prompts_may_run_widened_from_the_steps_packed_weights():
    table = {"w4g128": {1: 1.0, 4: 1.5, 128: 100.0}, "w4g128bf16": {128: 40.0}, "w4g32bf16": {128: 10.0}}
    choice = chooser.choose("int4", SHAPES, by_rows(table), accuracy=accurate)
    # w4g32bf16 is faster still, but w4g32's steps are not: a layout never mixes with another
    assert choice.phases == {"step": "w4g128", "batch": "w4g128", "prefill": "w4g128bf16"}
    assert KERNELS["w4g128bf16"].layout == "w4g128" and "w4g128bf16" not in choice.seconds  # never a step


def test_a_packed_layer_dispatches_by_rows():
    torch.manual_seed(0)
    layer = PackedLinear.from_linear(nn.Linear(256, 64), "w8")
    layer.set_phases({"prefill": "w8a8"})
    assert layer.phases == {"step": "w8", "batch": "w8", "prefill": "w8a8"}
    seen = []
    layer.runs = {phase: (lambda x, t, p=phase, run=run: (seen.append((p, x.shape[0])), run(x, t))[1]) for phase, run in layer.runs.items()}
    for rows in (1, 4, 128):
        assert layer(torch.randn(1, rows, 256, dtype=torch.bfloat16)).shape == (1, rows, 64)
    assert seen == [("step", 1), ("batch", 4), ("prefill", 128)]
    assert "kernels=w8,w8,w8a8" in repr(layer)


def test_the_remembered_choice_round_trips_with_its_phases():
    table = {"w8": {1: 1.0, 4: 1.1, 128: 40.0}, "w8a8": {1: 1.2, 4: 2.5, 128: 10.0}}
    first = choices.choice_for("int8", SHAPES, 2, by_rows(table), accuracy=accurate)
    calls: list = []
    again = choices.choice_for("int8", SHAPES, 2, by_rows(table, calls), accuracy=accurate)
    assert again == first and not calls and again.phases["prefill"] == "w8a8"
    assert again.phase_seconds["w8a8"]["prefill"] == pytest.approx(12 * 10.0)


def test_a_remembered_choice_whose_phases_mix_layouts_is_measured_again():
    import json

    table = {"w8": {1: 1.0, 4: 1.1, 128: 40.0}, "w8a8": {1: 1.2, 4: 2.5, 128: 10.0}}
    choices.choice_for("int8", SHAPES, 2, by_rows(table), accuracy=accurate)
    stored = json.loads(choices.choices_file().read_text())
    for per_machine in stored.values():
        for item in per_machine.values():
            item["phases"]["prefill"] = "w4g128"
    choices.choices_file().write_text(json.dumps(stored))
    assert choices.cached_choice("int8", 2, SHAPES) is None


def test_a_kernel_asked_for_runs_its_phases_and_its_layouts_own_kernel_the_rest():
    assert chooser.forced_phases("bf16mv") == {"step": "bf16mv", "batch": "bf16", "prefill": "bf16"}
    assert chooser.forced_phases("fp16f32") == {"step": "fp16", "batch": "fp16f32", "prefill": "fp16f32"}
    assert chooser.forced_phases("fp16bf16") == {"step": "fp16", "batch": "fp16bf16", "prefill": "fp16bf16"}
    assert chooser.forced_phases("w8a8") == {"step": "w8a8", "batch": "w8a8", "prefill": "w8a8"}


def test_plan_shows_the_remembered_kernel_of_each_phase_and_why(tiny_dir, capsys):
    """`--plan` after a (here injected) measurement: the phases in JSON and in the CPU line."""
    import json

    from kogpt.cli.main import main
    from kogpt.loading.checkpoint import read_config
    from kogpt.loading.kernels import linear_shapes

    config = read_config(str(tiny_dir), None)
    table = {"w8": {1: 1.0, 4: 1.1, 128: 40.0}, "w8a8": {1: 1.2, 4: 2.5, 128: 10.0}}
    shapes = linear_shapes(config)
    choices.choice_for("int8", shapes, 1, by_rows(table), accuracy=accurate, prompt_shapes=linear_shapes(config, lm_head=False))
    argv = ["--model", str(tiny_dir), "--device", "cpu", "--quantize", "int8", "--threads", "1", "--plan"]
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["kernel"] == "w8" and plan["kernel_phases"] == {"step": "w8", "batch": "w8", "prefill": "w8a8"}
    assert "prompt chunks of 128 w8a8" in plan["kernel_reason"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "kernel w8 (1 row w8, 4 rows w8, prompt chunks of 128 w8a8): measured on this CPU" in out


# The Xeon of this round (AMX), per layer in ms: float32 decodes one row nearly as fast, but bfloat16
# runs 4 rows and prompt chunks far faster.
XEON_FLOAT = {
    "bf16": {1: 9.8, 4: 10.4, 128: 30.0},
    "bf16mv": {1: 8.0},
    "fp32": {1: 13.2, 4: 25.1, 128: 110.0},
}


def test_float32_is_kept_only_where_it_wins_the_whole_request():
    xeon = chooser.choose("float", SHAPES, by_rows(XEON_FLOAT), accuracy=accurate)
    assert xeon.kernel == "bf16mv" and xeon.phases == {"step": "bf16mv", "batch": "bf16", "prefill": "bf16"}
    slow_16bit = {name: {rows: t * 3 for rows, t in table.items()} for name, table in XEON_FLOAT.items() if name != "fp32"}
    other = chooser.choose("float", SHAPES, by_rows({**slow_16bit, "fp32": XEON_FLOAT["fp32"]}), accuracy=accurate)
    assert other.kernel == "fp32" and set(other.phases.values()) == {"fp32"}
    assert "fp32" not in {k.name for k in chooser.candidates("16bit")}  # never where float32 does not fit


def test_auto_dtype_follows_the_float_choice_and_plans_the_memory_of_what_is_loaded(tiny_dir):
    from transformers import AutoConfig

    from kogpt.placement.decide import decide
    from kogpt.placement.options import Options

    config = AutoConfig.from_pretrained(tiny_dir)
    asked: list[str] = []

    def kernel_for(picked):
        def choose(config, fmt, requested, threads):
            asked.append(fmt)
            return picked, "measured", KERNELS[picked].dtype, {p: picked for p in phases.PHASES}, 256

        return choose

    exact = decide(config, Options(model=str(tiny_dir), device="cpu"), kernel_for=kernel_for("fp32"))
    fast = decide(config, Options(model=str(tiny_dir), device="cpu"), kernel_for=kernel_for("bf16"))
    assert asked == ["float", "float"]
    assert exact.dtype == torch.float32 and exact.kernel is None
    assert fast.dtype == torch.bfloat16 and fast.kernel == "bf16" and "serves a request faster" in fast.choice.reason
    assert fast.plan.summary() != exact.plan.summary()  # planned for 16-bit weights, not float32
    asked.clear()
    forced = decide(config, Options(model=str(tiny_dir), device="cpu", dtype="float32"), kernel_for=kernel_for("bf16"))
    assert forced.dtype == torch.float32 and asked == []  # an explicit dtype is kept


def test_a_model_whose_float32_weights_fit_in_the_cache_stays_float32_unmeasured(tiny_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_dir)
    kernel, why, dtype, _, chunk = choices.kernel_for(config, "float", None, 1)
    assert (kernel, dtype, chunk) == ("fp32", torch.float32, 0) and "cache" in why
