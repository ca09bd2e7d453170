"""The command-line options of ``python -m bench`` / ``foliowalk bench`` (argparse only, so that
building the ``foliowalk`` parser does not import the benchmarks)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smaller workload, fewer repeats")
    p.add_argument("--arch", action="append", default=[], help="architecture (repeatable); default: all landed")
    p.add_argument("--config", action="append", default=[], metavar="ARCH:NAME",
                   help="one configuration (repeatable)")
    p.add_argument("--no-verify", action="store_true", help="do not time foliowalk verify")
    p.add_argument("--no-vol3", action="store_true", help="do not time volatility3")
    p.add_argument("--json", action="store_true", help="print the figures as JSON (the table goes to stderr)")
