"""The ``foliowalk`` command (also ``python -m emu``).

Every sub-command lives in its own module (``emu/cmd_*.py``) that provides ``add_parser()``;
this file only dispatches, and turns every deliberate error into one line on stderr and exit
status 2 (exit 1 is reserved for a run that found a ``disagree``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from archs import UnknownConfig

from .errors import FoliowalkError

COMMAND_MODULES = ["emu.cmd_verify", "emu.cmd_fixtures", "emu.cmd_fuzz", "emu.cmd_bench"]

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(FoliowalkError):
    """A command-line argument that is malformed or out of range."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``foliowalk: error: ...``) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def int_arg(text: str) -> int:
    """An integer in any Python base notation (0x.., 0o.., 0b.., decimal)."""
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def build_parser() -> Parser:
    parser = Parser(prog="foliowalk", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except (FoliowalkError, UnknownConfig) as err:
        print(f"foliowalk: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("foliowalk: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
