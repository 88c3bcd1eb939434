"""Issue 22: EleutherAI's lm-evaluation-harness, pointed at `kogpt serve` with its `local-completions`
model (echo, logprobs=1), gets `kogpt eval`'s per-item log-likelihoods (`--items`) on the NSMC sample.

Needs `pip install ".[lmeval]"`; skipped without it (CI installs `.[test]` only)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed: pip install '.[lmeval]'")
pytest.importorskip("tenacity", reason="lm-evaluation-harness's API models need lm-eval[api]: pip install '.[lmeval]'")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.openai_completions import LocalCompletionsAPI  # noqa: E402

from kogpt import KoGPT  # noqa: E402
from kogpt.cli.main import main  # noqa: E402
from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import running  # noqa: E402

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def long_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint with a 512-token context: room for three demonstrations of its long tokens."""
    path = tmp_path_factory.mktemp("tiny-lmeval") / "model"
    shutil.copytree(tiny_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["n_positions"] = 512  # rotary tables are not stored: the weights fit any context
    (path / "config.json").write_text(json.dumps(config))
    return path


def kogpt_items(model: Path, shots: int, out: Path) -> list[dict]:
    code = main(["eval", "nsmc", "--data", str(DATA / "nsmc.txt"), "--model", str(model), "--device", "cpu",
                 "--shots", str(shots), "--json", "--items", str(out)])  # fmt: skip
    assert code == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("shots", [0, 3])
def test_lm_eval_through_kogpt_serve_matches_kogpt_eval(long_dir, tmp_path, capsys, shots):
    rows = kogpt_items(long_dir, shots, tmp_path / "items.jsonl")
    capsys.readouterr()
    gpt = KoGPT.load(str(long_dir), device="cpu")
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4))
    state.ready(gpt)
    pairs = [(row["prompt"], text) for row in rows for text in row["candidates"].values()]
    with running(create_app(state)) as url:
        lm = LocalCompletionsAPI(base_url=url + "/v1/completions", model="kogpt", tokenizer_backend="huggingface",
                                 tokenizer=str(long_dir), max_length=gpt.context_length, batch_size=4)  # fmt: skip
        instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        results = lm.loglikelihood(instances, disable_tqdm=True)
    expected = [row["loglikelihoods"][label] for row in rows for label in row["candidates"]]
    got = [loglikelihood for loglikelihood, _ in results]
    worst = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    print(f"{shots}-shot: {len(got)} log-likelihoods, max abs diff {worst:.2e}")
    assert worst <= TOLERANCE
    assert len(got) == 2 * len(rows) == 48
