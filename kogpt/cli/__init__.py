"""The command line: `kogpt` (the REPL and scripting), `kogpt eval`, `--plan`. Nothing else imports it."""

from kogpt.cli.main import main

__all__ = ["main"]
