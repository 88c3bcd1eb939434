"""`kogpt cache list|clear`: the converted-weights cache and the kernel choices, shown or removed.

Only files kogpt wrote are listed or removed (`kogpt.loading.cachedir.owned`).
"""

from __future__ import annotations

import argparse
import shutil

from rich.text import Text

from kogpt.errors import KoGPTError


def build_parser() -> argparse.ArgumentParser:
    from kogpt.cli.parser import Parser, command_name

    parser = Parser(
        prog=f"{command_name()} cache",
        description="The converted-weights cache: CPU weights already cast or quantized, mapped at the next start. "
        "Only files kogpt wrote there are listed or removed.",
    )
    parser.add_argument("action", choices=("list", "clear"), help="list: show kogpt's files and the disk they use; clear: delete them")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging and full tracebacks")
    return parser


def run(args: argparse.Namespace, renderer) -> int:
    from kogpt.cli.render import printable
    from kogpt.loading import cachedir, choices

    console = renderer.out
    root = cachedir.directory()
    shown = printable(str(root))
    if args.action == "clear":
        files, total, failures = cachedir.clear(root)
        failures += choices.forget()
        console.print(Text(f"removed {files} file(s), {cachedir.size_text(total)}, from {shown}; kernels are measured again at the next load"))
        if failures:
            raise KoGPTError(f"could not remove {len(failures)} file(s): {printable('; '.join(failures))}")
        return 0
    found = cachedir.entries(root)
    for path, size in found:
        note = "  (unfinished write: `kogpt cache clear` removes it)" if path.name.endswith(".partial") else ""
        console.print(Text(f"{cachedir.size_text(size):>10}  {printable(path.name)}{note}"))
    total = sum(size for _, size in found)
    existing = root if root.is_dir() else next((p for p in root.parents if p.is_dir()), None)
    free = f" ({shutil.disk_usage(existing).free / 2**30:.1f} GiB free on that disk)" if existing else ""
    note = "" if root.is_dir() or not root.exists() else " (not a directory)"
    console.print(Text(f"{len(found)} file(s), {cachedir.size_text(total)} in {shown}{note}{free}"))
    return 0
