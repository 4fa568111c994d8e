"""Command-line plumbing without heavy imports (the helper scripts in scripts/ start fast): user
errors reported as one line, argparse with defaults in --help and one-line errors, and plain
text for people (durations, tables)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user: reported as one line on stderr with a non-zero exit."""


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except where the help says its own default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and errors on one line (no usage dump)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def run_cli(main: Callable, argv: list[str] | None = None, *, errors: tuple = (OSError,),
            succeeded: Callable[[], None] | None = None, cleanup: Callable[[], None] | None = None):
    """Call a script's `main`; a UserError (or one of `errors`) becomes one line on stderr and
    exit code 2 (or the error's `exit_code`). `succeeded` runs after `main` returned (not after
    an error), `cleanup` in every case."""
    try:
        result = main(argv)
        if succeeded is not None:
            succeeded()
        return result
    except (UserError, *errors) as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(getattr(e, "exit_code", 2))  # (out of memory: 3)
    finally:
        if cleanup is not None:
            cleanup()


def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m05s, 2h07m."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def table(rows: list[list[str]]) -> str:
    """Rows of text (the first a header) as aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"
