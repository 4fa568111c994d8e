"""Command-line plumbing without heavy imports (the helper scripts in scripts/ start fast): user
errors reported as one line, and argparse with defaults in --help and one-line errors."""
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
    exit code 2. `succeeded` runs after `main` returned (not after an error), `cleanup` in every
    case."""
    try:
        result = main(argv)
        if succeeded is not None:
            succeeded()
        return result
    except (UserError, *errors) as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    finally:
        if cleanup is not None:
            cleanup()
