"""``foliowalk bench``: the benchmarks of ``python -m bench`` (walks and MMU probes, scalar and
batch, with their ratios and targets; ``foliowalk verify`` time; volatility3 when installed)."""

from __future__ import annotations

import argparse
from typing import Any

from emu.errors import FoliowalkError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="(source checkout only) measure walk and MMU-probe rates with targets")
    if not _own_bench():  # an installed foliowalk has no bench package: the command says so when run
        p.set_defaults(func=_missing, any_options=True)  # whatever options: the same one line
        return
    from bench.args import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def _own_bench() -> bool:
    """Whether foliowalk's own ``bench/`` is importable: the folder beside ``emu/`` of a source
    checkout -- never a ``bench`` package of somebody else's (PyPI has one; a user's project may
    have its own ``bench/`` in the current folder)."""
    import importlib.util
    from pathlib import Path

    import emu

    spec = importlib.util.find_spec("bench")
    if spec is None or spec.origin is None:
        return False
    return Path(spec.origin).resolve().parent.parent == Path(emu.__file__).resolve().parent.parent


def run(args: argparse.Namespace) -> int:
    from bench.core import run_args

    return run_args(args)


def _missing(args: argparse.Namespace) -> int:
    raise FoliowalkError("bench: the benchmarks run from a foliowalk source checkout: cd into it and run "
                         "python -m bench (pip install '.[bench]' adds volatility3's timings)")
