"""Write the test suite's tiny random GPT-J checkpoint (KoGPT's tokenizer layout) to a directory.

    python tests/make_tiny_checkpoint.py /tmp/tiny-kogpt
    python -m kogpt --model /tmp/tiny-kogpt --device cpu

Its text is noise (random weights); it exercises everything but the quality of KoGPT.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tiny import build_checkpoint  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python {sys.argv[0]} DIR")
    print(build_checkpoint(Path(sys.argv[1])))
