"""Data readers, malformed files, templates and the seeded draw of demonstrations (no model needed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kogpt.errors import KoGPTError
from kogpt.evaluate import data, fewshot
from kogpt.evaluate.templates import TASKS, load_template

DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_nsmc_reads_fields_labels_lines_and_skips_empty_documents():
    ds = data.read("nsmc", DATA / "nsmc.txt")
    assert len(ds.examples) == 24 and ds.skipped == 1
    first = ds.examples[0]
    assert first.fields == {"document": "배우들 연기가 정말 좋았다"} and first.label == "1" and first.line == 2
    assert [e.label for e in ds.examples].count("1") == 12
    assert ds.sha256 == hashlib.sha256((DATA / "nsmc.txt").read_bytes()).hexdigest()


def test_nsmc_crlf_and_unicode_line_separators_inside_a_review(tmp_path):
    text = "id\tdocument\tlabel\r\n1\t좋다\u2028정말\x85좋다\t1\r\n2\t별로\t0\r\n"
    ds = data.read("nsmc", write(tmp_path, "crlf.txt", text))
    assert [(e.fields["document"], e.label, e.line) for e in ds.examples] == [
        ("좋다\u2028정말\x85좋다", "1", 2),
        ("별로", "0", 3),
    ]


def test_ynat_accepts_names_and_indices():
    ds = data.read("ynat", DATA / "ynat.json")
    assert len(ds.examples) == 16
    assert (
        ds.examples[7].label == "IT과학" and ds.examples[7].line == 9
    )  # "label": 0, the 8th object, after the "[" line
    assert [e.label for e in ds.examples[7:14]] == list(data.YNAT_LABELS)
    assert ds.examples[0].fields == {"title": "새 스마트폰 인공지능 기능 공개"}


def test_sts_binary_label_wins_and_scores_threshold_at_three():
    ds = data.read("klue-sts", DATA / "sts.json")
    labels = [e.label for e in ds.examples]
    assert labels == ["1", "0", "1", "0", "1", "0", "1", "0", "1", "1", "0", "1"]  # 3.0 -> 1, 2.9 -> 0
    assert set(ds.examples[0].fields) == {"sentence1", "sentence2"}


def test_json_lines_and_bom(tmp_path):
    rows = [{"title": "주가 상승", "label": 1}, {"title": "야구 경기", "label": "스포츠"}]
    text = "\ufeff" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    ds = data.read("ynat", write(tmp_path, "y.jsonl", text))
    assert [(e.label, e.line) for e in ds.examples] == [("경제", 1), ("스포츠", 2)]


BAD_FILES = [
    ("nsmc", "id\tdoc\tlabel\n1\t좋다\t1\n", 1, "header"),
    ("nsmc", "id\tdocument\tlabel\n1\t좋다\t1\n2\t나쁘다\n", 3, "3 tab-separated"),
    ("nsmc", "id\tdocument\tlabel\n1\t좋다\t1\n\n2\t나쁘다\t2\n", 4, "0 or 1"),
    ("ynat", '[\n {"title": "가", "label": "경제"},\n {"title": "나" "label": "경제"}\n]', 3, "invalid JSON"),
    ("ynat", '[\n {"title": "가", "label": "경제"},\n\n {"label": "경제"}\n]', 4, "'title'"),
    ("ynat", '[{"title": "가", "label": "경제"},\n {"title": "나", "label": "연예"}]', 2, "'label'"),
    ("ynat", '[{"title": "가", "label": 7}]', 1, "'label'"),
    ("ynat", '[{"title": "가", "label": 1},\n ["나", 1]]', 2, "JSON object"),
    ("ynat", '{"title": "가", "label": 1}\n{"title": "나", "label": 1\n', 2, "invalid JSON"),
    (
        "klue-sts",
        '[{"sentence1": "a", "sentence2": "b", "labels": {"label": 4.0}},\n{"sentence1": "a", "sentence2": "b"}]',
        2,
        "'labels'",
    ),
    ("klue-sts", '[\n{"sentence1": "a", "sentence2": "b", "labels": {"binary-label": 2}}]', 2, "binary-label"),
    ("klue-sts", '[\n\n{"sentence1": "a", "sentence2": "b", "labels": {"label": "high"}}]', 3, "'labels'"),
    ("klue-sts", '[{"sentence1": "", "sentence2": "b", "labels": {"label": 1.0}}]', 1, "'sentence1'"),
]


@pytest.mark.parametrize(("task", "text", "line", "why"), BAD_FILES)
def test_malformed_files_name_the_file_and_line(tmp_path, task, text, line, why):
    path = write(tmp_path, "bad.data", text)
    with pytest.raises(KoGPTError) as info:
        data.read(task, path)
    assert f"{path}, line {line}:" in str(info.value)
    assert why in str(info.value)


def test_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "bad.txt", "id\tdocument\tlabel\n1\t좋다\t1\n".encode() + "2\t나쁘다\t0\n".encode("cp949"))
    with pytest.raises(KoGPTError, match=r"line 3: not UTF-8"):
        data.read("nsmc", path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(KoGPTError, match="cannot read"):
        data.read("nsmc", tmp_path / "none.txt")
    with pytest.raises(KoGPTError, match="no ynat items"):
        data.read("ynat", write(tmp_path, "e.json", "[]"))


def test_template_file_overrides_and_is_checked(tmp_path):
    task = TASKS["nsmc"]
    path = write(tmp_path, "t.json", json.dumps({"prompt": "리뷰: {document}\n감정:"}, ensure_ascii=False))
    template = load_template(task, path)
    assert template.prompt == "리뷰: {document}\n감정:" and template.choices == task.template.choices
    for bad in (
        {"prompt": "{title}"},
        {"prompt": "no field"},
        {"choices": {"1": " 좋음"}},
        {"extra": 1},
        {"prompt": "{document"},
    ):
        with pytest.raises(KoGPTError, match=str(tmp_path)):
            load_template(task, write(tmp_path, "bad.json", json.dumps(bad)))
    with pytest.raises(KoGPTError, match="line 2"):
        load_template(task, write(tmp_path, "broken.json", '{\n"prompt": }'))


def test_builtin_templates_render_the_public_formats():
    sts = TASKS["klue-sts"]
    item = data.Example({"sentence1": "가", "sentence2": "나"}, "1", 1)
    assert sts.template.demonstration(item) == (
        "질문: 문장 1과 문장 2는 서로 유사한 의미를 가지나요?\n문장 1:가\n문장 2:나\n정답: 예"
    )
    assert TASKS["nsmc"].template.demonstration(data.Example({"document": "좋다"}, "0", 1)) == "좋다 (부정)"


def test_prompts_are_seeded_and_never_show_the_item_under_test():
    template = TASKS["nsmc"].template
    ds = data.read("nsmc", DATA / "nsmc.txt")
    first = fewshot.build(template, ds, None, shots=4, seed=7)
    again = fewshot.build(template, ds, None, shots=4, seed=7)
    other = fewshot.build(template, ds, None, shots=4, seed=8)
    assert [p.text for p in first] == [p.text for p in again]
    assert [p.demos for p in first] != [p.demos for p in other]
    for prompt in first:
        assert len(prompt.demos) == 4 and prompt.example not in prompt.demos
        assert prompt.text.endswith("\n\n" + prompt.example.fields["document"])
    limited = fewshot.build(template, ds, None, shots=4, seed=7, limit=3)
    assert [p.text for p in limited] == [p.text for p in first[:3]]


def test_demonstrations_from_a_train_file():
    template = TASKS["nsmc"].template
    ds, train = data.read("nsmc", DATA / "nsmc.txt"), data.read("nsmc", DATA / "nsmc_train.txt")
    prompts = fewshot.build(template, ds, train, shots=8, seed=1)
    assert all(sorted(d.line for d in p.demos) == list(range(2, 10)) for p in prompts)  # all eight
    with pytest.raises(KoGPTError, match="offers 8"):
        fewshot.build(template, ds, train, shots=9, seed=1)
    with pytest.raises(KoGPTError, match="offers 23"):
        fewshot.build(template, ds, None, shots=24, seed=1)


@given(st.integers(1, 60), st.integers(0, 60), st.integers(), st.integers(0, 59))
def test_draw_is_distinct_and_excludes(size, shots, seed, index):
    exclude = index % size
    picked = fewshot.draw(size, min(shots, size - 1), seed, index, exclude)
    assert len(picked) == min(shots, size - 1) and len(set(picked)) == len(picked)
    assert exclude not in picked and all(0 <= i < size for i in picked)
    assert picked == fewshot.draw(size, min(shots, size - 1), seed, index, exclude)
