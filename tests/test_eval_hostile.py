"""`kogpt eval` against hostile input (issue 10, section 8): each bad input is one line and exit 1,
before any model is loaded; the inputs that are fine (offloaded weights, huge batches, duplicated
rows, control characters) work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kogpt.cli.main import main
from kogpt.errors import KoGPTError
from kogpt.evaluate import data, fewshot, runner, scoring
from kogpt.evaluate.scoring import Request
from kogpt.evaluate.templates import TASKS, Template, check, load_template
from kogpt.loading import load as model_lib

DATA = Path(__file__).parent / "data"
NSMC = DATA / "nsmc.txt"


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a model fails the test: input errors come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(model_lib, "load", refuse)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.strip().splitlines() if ": skipped 1 items" not in line]  # nsmc.txt's warning
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def final_error(capsys, argv: list[str]) -> str:
    """After a load, progress and log lines come first; the failure is still the one last line."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def ynat_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ynat.json"
    path.write_text(text, encoding="utf-8")
    return path


# --plan


def test_eval_plan_prints_the_plan_and_loads_nothing(tiny_dir, capsys, no_loading):
    argv = ["eval", "nsmc", "--data", str(NSMC), "--model", str(tiny_dir), "--device", "cpu", "--plan"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "where each block goes (float32)" in out and "fits: cpu" in out
    assert main([*argv, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is True and plan["devices"][0]["device"] == "cpu" and plan["parameters"] > 0


def test_eval_plan_checks_the_inputs_and_refuses_show_prompt(tiny_dir, tmp_path, capsys, no_loading):
    bad = ynat_file(tmp_path, '[{"title": "a", "label": 1}] trailing')
    line = one_line_error(capsys, ["eval", "ynat", "--data", str(bad), "--model", str(tiny_dir), "--plan"])
    assert "line 1: invalid JSON (extra data after the array)" in line
    argv = ["eval", "nsmc", "--data", str(NSMC), "--model", str(tiny_dir), "--plan", "--show-prompt"]
    assert "choose one" in one_line_error(capsys, argv)


# Bounded reads


def special_files(tmp_path: Path) -> list[str]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: opening it would block forever
    return ["/dev/zero", "/dev/urandom", str(fifo), str(tmp_path)]


@pytest.mark.parametrize("flag", ["--data", "--template", "--train"])
def test_endless_or_blocking_files_are_refused(flag, tmp_path, capsys, no_loading):
    for special in special_files(tmp_path):
        argv = ["eval", "nsmc", "--data", str(NSMC), flag, special, "--show-prompt"]
        assert f"{special} is not a regular file" in one_line_error(capsys, argv)


def test_files_over_the_limit_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "MAX_DATA_BYTES", 100)
    line = one_line_error(capsys, ["eval", "nsmc", "--data", str(NSMC), "--show-prompt"])
    assert f"is {NSMC.stat().st_size:,} bytes; the limit is 100 bytes" in line
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"prompt": "{document}" + " " * 2**20}))
    line = one_line_error(capsys, ["eval", "nsmc", "--data", str(NSMC), "--template", str(template), "--show-prompt"])
    assert "the limit is 1 MiB" in line


# Templates


@pytest.mark.parametrize(
    "prompt",
    ["{document:>100000000}", "{document!x}", "{document:d}", "{document:{document}}", "{document!r}", "{document!s:}"],
)
def test_format_specs_and_conversions_are_refused_at_check_time(prompt, tmp_path, capsys, no_loading):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"prompt": prompt}))
    line = one_line_error(capsys, ["eval", "nsmc", "--data", str(NSMC), "--template", str(path), "--show-prompt"])
    assert "may use only plain placeholders like {document}" in line


@given(
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", "!r", "!s", "!a", "!x", "!"]),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
def test_any_prompt_is_refused_or_renders_each_field_verbatim(before, conversion, spec):
    template = Template(f"{before}{{document{conversion}:{spec}}}", {"1": " 예", "0": " 아니"})
    try:
        check(TASKS["nsmc"], template, "t.json")
    except KoGPTError:
        return
    item = data.Example({"document": "리뷰" * 50}, "1", 1)
    assert conversion == "" and spec == ""  # only a plain placeholder gets through
    text = template.context(item)
    assert text.endswith("리뷰" * 50) and len(text) <= len(template.prompt) + 100


@pytest.mark.parametrize(
    "choices",
    [{"1": " 예", "0": " 예"}, {"1": "가", "0": "\u1100\u1161"}],  # the same text, and the same text once NFC
)
def test_identical_choices_are_refused(choices, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"choices": choices}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(KoGPTError, match="are the same text"):
        load_template(TASKS["nsmc"], path)


def test_choices_that_encode_alike_are_refused(gpt):
    template = Template("{document}", {"1": " 가", "0": " 가"})  # check() would refuse it; requests() too
    prompts = fewshot.build(template, data.read("nsmc", NSMC), None, 0, 1)
    with pytest.raises(KoGPTError, match="encode to the same tokens"):
        runner.requests(gpt, TASKS["nsmc"], template, prompts)


# JSON data


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ('[{"title": "a", "label": 1}][{"title": "b", "label": 2}]', 1, "extra data after the array"),
        ('[{"title": "a", "label": 1}]\n\n  garbage', 3, "extra data after the array"),
        ('[{"title": "a", "label": 1}],', 1, "extra data after the array"),
        ("[" * 100_000, 1, "nested too deeply"),
        ('{"title": "a", "label": 1}\n' + "[" * 100_000, 2, "nested too deeply"),
        ('[{"title": "a", "label": ' + "1" * 5000 + "}]", 1, "Exceeds the limit"),
    ],
)
def test_malformed_json_is_one_line_with_its_line(text, line, why, tmp_path):
    path = ynat_file(tmp_path, text)
    with pytest.raises(KoGPTError, match=rf"^{path}, line {line}: invalid JSON \({why}"):
        data.read("ynat", path)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 6)), min_size=1, max_size=30))
def test_array_items_are_numbered_by_the_line_they_start_on(layout):
    # Each item: blank lines before it, newlines inside it, and its label.
    lines = []
    text = "["
    for before, inside, label in layout:
        text += "\n" * before
        lines.append(text.count("\n") + 1)
        text += "{" + "\n" * inside + f'"title": "제목", "label": {label}' + "}" + ","
    text = text[:-1] + "]\n"
    records = list(data._json_records(Path("x.json"), text))
    assert [line for line, _ in records] == lines


@pytest.mark.parametrize(
    ("task", "record", "key"),
    [
        ("ynat", {"title": "\\ud800", "label": 1}, "title"),
        ("klue-sts", {"sentence1": "가", "sentence2": "나\\udfff다", "labels": {"binary-label": 1}}, "sentence2"),
    ],
)
@pytest.mark.parametrize("jsonl", [False, True])
def test_lone_surrogates_are_refused_before_the_model_loads(task, record, key, jsonl, tmp_path, capsys, no_loading):
    good = {"title": "제목", "label": 0} if task == "ynat" else {**record, "sentence2": "나"}
    items = [json.dumps(good, ensure_ascii=False), json.dumps(record).replace("\\\\u", "\\u")]
    path = tmp_path / "d.json"
    path.write_text("\n".join(items) if jsonl else "[" + ",\n".join(items) + "]", encoding="utf-8")
    argv = ["eval", task, "--data", str(path), "--shots", "0", "--device", "cpu"]
    line = one_line_error(capsys, argv)  # --model is the default hub repo: it must never be reached
    assert f"line 2: {key!r} holds '\\ud" in line and "lone surrogate" in line


def test_a_lone_surrogate_in_a_template_is_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"prompt": "{document}\\ud83d"}')
    with pytest.raises(KoGPTError, match="'prompt' holds '\\\\ud83d', a lone surrogate"):
        load_template(TASKS["nsmc"], path)


# Scoring: offloaded weights, memory, out of memory


def test_eval_with_cpu_and_disk_offload(tiny_dir, tmp_path, capsys):
    argv = ["eval", "nsmc", "--data", str(NSMC), "--model", str(tiny_dir), "--device", "cpu", "--dtype", "float32"]
    assert main([*argv, "--shots", "1", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    offload = ["--max-memory", "cpu=400KiB", "--offload-dir", str(tmp_path / "off")]
    assert main([*argv, "--shots", "1", "--json", *offload]) == 0
    split = json.loads(capsys.readouterr().out)
    assert split["confusion_matrix"] == plain["confusion_matrix"] and split["metrics"] == plain["metrics"]


@given(
    st.lists(st.tuples(st.integers(1, 300), st.lists(st.integers(1, 5), min_size=1, max_size=4)), max_size=40),
    st.integers(1, 100_000),
    st.sampled_from(scoring.METHODS),
    st.integers(1, 2000),
)
def test_passes_hold_at_most_batch_size_items_and_the_token_budget(shapes, batch_size, method, budget):
    requests = [Request([1] * n, [[2] * k for k in ks]) for n, ks in shapes]
    batches = list(scoring.batches(requests, batch_size, method, budget))
    assert [r for b in batches for r in b] == requests
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        rows = sum(scoring.shape(r, method)[0] for r in batch)
        width = max(scoring.shape(r, method)[1] for r in batch)
        assert len(batch) == 1 or rows * width <= budget


def test_a_huge_batch_size_keeps_each_pass_within_the_token_budget(gpt, monkeypatch):
    """--batch-size 100000 does not build a 100000 x T x T mask: passes stay under the budget."""
    monkeypatch.setattr(scoring, "MAX_TOKENS_PER_PASS", 200)
    seen = []
    forward = gpt.model.transformer.forward

    def spy(*args, **kwargs):
        seen.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(gpt.model.transformer, "forward", spy)
    template = TASKS["nsmc"].template
    prompts = fewshot.build(template, data.read("nsmc", NSMC), None, 0, 1)
    batch = runner.requests(gpt, TASKS["nsmc"], template, prompts)
    small = runner.evaluate(gpt, TASKS["nsmc"], prompts, batch, batch_size=2)
    seen.clear()
    huge = runner.evaluate(gpt, TASKS["nsmc"], prompts, batch, batch_size=100_000)
    assert len(seen) > 1 and all(rows * width <= 200 for rows, width in seen)
    assert huge.predicted == small.predicted
    for a, b in zip(huge.scores, small.scores, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried"),
        MemoryError(),
    ],
)
def test_out_of_memory_is_one_line_with_advice(error, tiny_dir, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(scoring, "_score_prefix", boom)
    argv = ["eval", "nsmc", "--data", str(NSMC), "--model", str(tiny_dir), "--device", "cpu", "--shots", "0"]
    line = final_error(capsys, [*argv, "--batch-size", "100000"])
    assert "ran out of memory scoring up to 24 items at once on the cpu; try --batch-size 6" in line
    line = final_error(capsys, [*argv, "--batch-size", "1"])
    assert "up to 1 items at once" in line and "fewer --shots" in line
    monkeypatch.setattr(scoring, "MAX_TOKENS_PER_PASS", 1)  # passes hold one item, whatever --batch-size says
    line = final_error(capsys, [*argv, "--batch-size", "100000"])
    assert "up to 1 items at once" in line and "fewer --shots" in line


def test_other_runtime_errors_are_not_called_out_of_memory(gpt, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(scoring, "_score_prefix", boom)
    template = TASKS["nsmc"].template
    prompts = fewshot.build(template, data.read("nsmc", NSMC), None, 0, 1)
    batch = runner.requests(gpt, TASKS["nsmc"], template, prompts)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        runner.evaluate(gpt, TASKS["nsmc"], prompts, batch)


def test_a_prompt_too_long_for_the_context_is_refused_before_the_weights_load(tiny_dir, capsys, no_loading):
    sts = DATA / "sts.json"
    line = one_line_error(capsys, ["eval", "klue-sts", "--data", str(sts), "--model", str(tiny_dir), "--device", "cpu"])
    assert f"{sts}, line 2: the prompt is" in line and "use fewer --shots" in line


# Demonstrations never hold the item under test


@given(st.lists(st.sampled_from(["좋다", "별로", "좋다 ", "최고", "  별로", "재미"]), min_size=2, max_size=30), st.data())
def test_no_demonstration_repeats_the_item(texts, draw):
    examples = [data.Example({"document": t.strip()}, str(i % 2), i + 2) for i, t in enumerate(texts)]
    dataset = data.Dataset(Path("d.txt"), examples, "0")
    distinct = len({e.fields["document"] for e in examples})
    shots = draw.draw(st.integers(0, max(0, distinct - 1)))
    for train in (None, dataset):  # --train the same file as --data
        prompts = fewshot.build(TASKS["nsmc"].template, dataset, train, shots, seed=3)
        for prompt in prompts:
            assert len(prompt.demos) == shots
            assert all(d.fields != prompt.example.fields for d in prompt.demos)


def test_too_few_distinct_demonstrations_is_one_line(tmp_path, capsys, no_loading):
    path = tmp_path / "dup.txt"
    path.write_text("id\tdocument\tlabel\n1\t좋다\t1\n2\t좋다\t1\n3\t별로\t0\n", encoding="utf-8")
    line = one_line_error(capsys, ["eval", "nsmc", "--data", str(path), "--shots", "2", "--show-prompt"])
    assert "--shots 2 needs 2 demonstrations but" in line and "offers 1 that differ from the item on line 2" in line


def test_train_equal_to_data_warns_and_excludes(capsys):
    assert main(["eval", "nsmc", "--data", str(NSMC), "--train", str(NSMC), "--shots", "3", "--show-prompt"]) == 0
    out, err = capsys.readouterr()
    assert "repeats the text of 24 items under test; no item is shown its own copy" in " ".join(err.split())
    first = out.split("demonstrations:\n", 1)[1].split("\n\ncandidates:")[0].split("\n\n")
    item = first[-1]
    assert all(not demo.startswith(item + " (") for demo in first[:-1])


# --show-prompt


def test_show_prompt_shows_control_characters_visibly(tmp_path, capsys):
    path = tmp_path / "esc.txt"
    review = "좋은 영화\x1b]0;pwned\x07 끝\x9b2J"
    path.write_text(f"id\tdocument\tlabel\n1\t{review}\t1\n2\t별로\t0\n", encoding="utf-8")
    assert main(["eval", "nsmc", "--data", str(path), "--shots", "1", "--show-prompt"]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\x1b\x07\x9b")
    assert "좋은 영화␛]0;pwned␇ 끝" in out


# Any file: a dataset or one line naming the file

KEYS = ["title", "label", "sentence1", "sentence2", "labels", "binary-label", "x"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.sampled_from(list(TASKS)),
    st.one_of(
        st.binary(max_size=200),
        st.lists(JSON_VALUES, max_size=4).map(json.dumps),
        st.lists(JSON_VALUES, max_size=4).map(lambda items: "\n".join(map(json.dumps, items))),
        st.text(max_size=200).map(lambda t: "id\tdocument\tlabel\n" + t),
    ),
)
def test_any_data_file_is_a_dataset_or_a_one_line_error(task, content):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            dataset = data.read(task, path)
        except KoGPTError as exc:
            assert "\n" not in str(exc) and str(exc).startswith((str(path), "the data file", "cannot read"))
            return
        for example in dataset.examples:
            assert all(value.strip() for value in example.fields.values())
            assert example.label in TASKS[task].labels
            "".join(example.fields.values()).encode("utf-8")  # text, not lone surrogates
