"""``foliowalk deviations``: every registered emulator deviation, placed per emulator by running
it there (emu/machines/placement.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ARCHES = ("x86_64", "arm64", "s390x")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("deviations", help="the deviation registry, each deviation run on every emulator")
    p.add_argument("--arch", action="append", default=[], choices=ARCHES, help="architecture (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emu.machines import deviations
    from emu.machines.placement import EMULATOR_NAMES, check, placement

    rows = []
    for arch in args.arch or ARCHES:
        for dev in deviations.for_arch(arch):
            cells = {e: check(dev.name, arch, e) for e in EMULATOR_NAMES}
            rows.append((dev, cells, placement(cells)))
    if args.json:
        json.dump([{"name": d.name, "arch": d.arch, "reference": d.reference, "placement": where,
                    "emulators": {e: {"status": c.status, "detail": c.detail} for e, c in cells.items()}}
                   for d, cells, where in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    heads = "".join(f"{n:<15} " for n in EMULATOR_NAMES.values())
    print(f"{'deviation':<48} {'arch':<7} {heads}placement")
    for dev, cells, where in rows:
        cols = "".join(f"{c.status:<15} " for c in cells.values())
        print(f"{dev.name:<48} {dev.arch:<7} {cols}{where}")
        for e, c in cells.items():
            print(f"    {e}: {c.detail}")
    return 0
