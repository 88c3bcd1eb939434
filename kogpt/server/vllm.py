"""`kogpt serve --engine vllm`: the command line of vLLM's own OpenAI server (`vllm serve`), set up for KoGPT.

vLLM serves the same API (`/v1/completions`, `/v1/models`, `/health`) with continuous batching,
tensor and pipeline parallelism, and multi-node through Ray. kogpt only fills in what KoGPT needs:
the revision, the dtype, the context, a tokenizer directory whose config names KoGPT's special
tokens, the served model name, and the server's sampling defaults.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from kogpt.loading.vllm import CONTEXT, DTYPES
from kogpt.settings import SamplingSettings

log = logging.getLogger(__name__)


def executable() -> str:
    """The `vllm` command of this Python environment (beside its interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("vllm")
    return str(beside) if beside.exists() else shutil.which("vllm") or "vllm"


def generation_defaults(settings: SamplingSettings) -> dict:
    """The server's sampling defaults in vLLM's `--override-generation-config` terms."""
    out = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "repetition_penalty": settings.repetition_penalty,
    }
    if settings.max_new_tokens is not None:
        out["max_new_tokens"] = settings.max_new_tokens
    return out


def command(
    model: str,
    revision: str | None,
    tokenizer: Path,
    served_name: str,
    host: str,
    port: int,
    dtype: str = "auto",
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    defaults: SamplingSettings | None = None,
    trust_remote_code: bool = False,
) -> list[str]:
    """`vllm serve MODEL ...` for KoGPT (the deprecated `python -m vllm.entrypoints.openai.api_server`
    takes the same flags).

    The API key goes in the environment (`VLLM_API_KEY`), not here, so `ps` does not show it.
    """
    argv = [executable(), "serve", model]
    if revision is not None:
        argv += ["--revision", revision]
    argv += [
        "--tokenizer", str(tokenizer),
        "--served-model-name", served_name,
        "--dtype", DTYPES[dtype],
        "--max-model-len", str(CONTEXT),
        "--host", host,
        "--port", str(port),
        "--tensor-parallel-size", str(tensor_parallel),
        "--pipeline-parallel-size", str(pipeline_parallel),
        "--generation-config", "vllm",
        "--override-generation-config", json.dumps(generation_defaults(defaults or SamplingSettings())),
    ]  # fmt: skip
    if trust_remote_code:
        argv.append("--trust-remote-code")
    return argv
