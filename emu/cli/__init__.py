"""The ``foliowalk`` command (also ``python -m emu``).

Every sub-command lives in its own module (``emu/cli/<command>.py``) that provides ``add_parser()``;
this module only dispatches, and turns every deliberate error into one line on stderr and exit
status 2 (exit 1 is reserved for a run that found a ``disagree``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import archs
from archs import UnknownConfig
from emu.errors import FoliowalkError

COMMAND_MODULES = [
    "emu.cli.verify", "emu.cli.explain", "emu.cli.translate", "emu.cli.fixtures", "emu.cli.fuzz", "emu.cli.kernel",
    "emu.cli.bench", "emu.cli.deviations", "emu.cli.conform",
]

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(FoliowalkError):
    """A command-line argument that is malformed or out of range."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``foliowalk: error: [<sub-command>: ]...``) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "foliowalk: error: <sub-command>: <message>" -- main() adds the "foliowalk: error: "
        sub = self.prog.partition(" ")[2]
        raise UsageError(f"{sub}: {message}" if sub else message)


def int_arg(text: str) -> int:
    """An integer in any Python base notation (0x.., 0o.., 0b.., decimal)."""
    try:
        return int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def output_dir(path: Path, option: str) -> Path:
    """``path`` as a folder the command can write into: created if missing, then a scratch file
    is made and removed in it.  Raises :class:`UsageError` (one line, exit 2) if that fails, so a
    command refuses an unwritable output folder before it starts its work."""
    if path.exists() and not path.is_dir():
        from emu.files import file_kind

        kind = file_kind(path.stat().st_mode)
        raise UsageError(f"{option} {path}: is {'a file' if kind == 'a regular file' else kind}, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot write there ({err.strerror or err})") from None
    return path


def output_file(path: Path, option: str) -> Path:
    """``path`` as a file the command can create or replace: a new name or a regular file (its
    folder must be writable).  A folder, device, FIFO or socket is refused with one line."""
    from emu.files import output_target

    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder, not a file")
    target = output_target(path, option)
    output_dir(target.parent, option)
    return target


def build_parser() -> Parser:
    import emu

    keys = ", ".join(archs.all_config_keys())
    parser = Parser(
        prog="foliowalk", description="Linux's folio_walk_start() over real x86-64, arm64 and s390x page "
        f"tables, checked by an emulated MMU and the compiled kernel.  Configurations: {keys}.",
        epilog="foliowalk COMMAND --help describes a command.  Exit status: 0 ok, 1 a disagree (or a "
        "difference, a crash), 2 bad input, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"foliowalk {emu.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "any_options", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
    except OSError as err:  # a file or folder the command was given and cannot use
        where = f"{err.filename}: " if err.filename else ""
        print(f"foliowalk: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
