"""Item 22: a huge prompt is tokenized from its end, as far as can be kept, and once."""

from __future__ import annotations

import pytest

from kogpt import encoding
from kogpt.encoding import encode, encode_tail
from kogpt.errors import KoGPTError

LINE = "인간처럼 생각하고, 행동하는 지능을 통해 인류가 이제까지 풀지 못했던 문제의 해답을 찾을 수 있을 것이다. "


@pytest.fixture
def counted(monkeypatch):
    calls: list[int] = []
    real = encoding.encode
    encoding._memo.clear()

    def counting(tokenizer, text):
        calls.append(len(text))
        return real(tokenizer, text)

    monkeypatch.setattr(encoding, "encode", counting)
    return calls


def test_the_tail_equals_the_end_of_the_whole_encoding(gpt):
    text = LINE * 2000  # ~100k characters
    whole = encode(gpt.tokenizer, text)
    ids, cut = encode_tail(gpt.tokenizer, text, 129)
    assert cut and ids == whole[-129:]
    short, cut = encode_tail(gpt.tokenizer, LINE, 129)
    assert not cut and short == encode(gpt.tokenizer, LINE)


def test_a_huge_prompt_is_tokenized_from_its_end_and_once(gpt, counted):
    text = LINE * 100_000  # ~5 MB of text
    first = encode_tail(gpt.tokenizer, text, 129)
    again = encode_tail(gpt.tokenizer, text, 129)
    assert first == again and first[1]
    assert len(counted) <= 3 and max(counted) < 200_000  # a piece of the end, not the 5 MB


def test_a_huge_prompt_file_with_truncate(gpt, tiny_dir, tmp_path, counted, capsys):
    from kogpt.cli.main import main

    path = tmp_path / "big.txt"
    path.write_text(LINE * 100_000, encoding="utf-8")
    code = main(["--model", str(tiny_dir), "--device", "cpu", "--prompt-file", str(path), "--truncate",
                 "--max-new-tokens", "3", "--temperature", "0", "--json"])
    assert code == 0
    assert max(counted) < 200_000 and len(counted) <= 3  # the check and the generation share one tokenization
    assert gpt.complete  # the record came out
    assert '"prompt_tokens": 125' in capsys.readouterr().out[-2000:]


def test_a_huge_prompt_without_truncate_says_at_least(gpt):
    with pytest.raises(KoGPTError, match="at least 129 tokens, more than the model's context of 128"):
        gpt.generate(LINE * 100_000, max_length=128)
