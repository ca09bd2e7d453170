"""``foliowalk bench``: the benchmarks of ``python -m bench`` (walks and MMU probes, scalar and
batch, with their ratios and targets; ``foliowalk verify`` time; volatility3 when installed)."""

from __future__ import annotations

import argparse
from typing import Any

from emu.errors import FoliowalkError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure walk and MMU-probe rates, scalar and batch, with targets")
    try:
        from bench.args import add_arguments
    except ImportError:  # the bench package is not installed: the command says so when run
        p.set_defaults(func=_missing)
        return
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.core import run_args

    return run_args(args)


def _missing(args: argparse.Namespace) -> int:
    raise FoliowalkError("the bench package is not installed (pip install '.[bench]' from a foliowalk checkout)")
