"""Conformance rate (issue 18): ``foliowalk conform`` cases per second per core, and where the time
goes (the model, the machine's batch probes, the rest: building tables, comparing).

    python -m bench.conform_rate [--arch x86_64|arm64] [--cases N] [--start I] [--json]

Runs cases ``start .. start+N`` of the architecture's space in this process (one Runner, machines
built before the clock starts).  "Per core" is cases per CPU second of this process
(``time.process_time``), so other load on the machine does not count against it; the wall-clock
rate is printed beside it.  No target yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def measure(cases: int, start: int, arch: str = "x86_64") -> dict[str, Any]:
    import importlib

    C: Any = importlib.import_module(f"emu.conform.{arch}")
    machine_cls: Any
    probes: tuple[str, ...]
    if arch == "arm64":
        from emu.machines.arm64 import Arm64Machine as machine_cls

        probes = ("probe_many_raw", "probe_fetch_many")
        C.Runner().close()  # the first machine pays Unicorn's start-up outside the clock
    else:
        from emu.machines.x86_64 import X86_64Machine as machine_cls

        probes = ("probe_many_raw",)
    runner = C.Runner()
    if arch == "arm64":
        runner.tables()
    else:
        runner.tables(False)
        runner.tables(True)
    spent = {"model": 0.0, "probe": 0.0}
    expected = C.expected
    originals = {name: getattr(machine_cls, name) for name in probes}

    def timed_expected(*a: Any) -> Any:
        t = time.perf_counter()
        try:
            return expected(*a)
        finally:
            spent["model"] += time.perf_counter() - t

    def timed(probe: Any) -> Any:
        def timed_probe(self: Any, *a: Any) -> Any:
            t = time.perf_counter()
            try:
                return probe(self, *a)
            finally:
                spent["probe"] += time.perf_counter() - t
        return timed_probe

    C.expected = timed_expected
    for name, probe in originals.items():
        setattr(machine_cls, name, timed(probe))
    try:
        stop = min(start + cases, C.SIZE)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        rep = runner.run(range(start, stop), C.Report())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        C.expected = expected
        for name, probe in originals.items():
            setattr(machine_cls, name, probe)
        runner.close()
    return {"arch": arch, "space": C.SIZE, "cases": rep.run, "mismatches": len(rep.mismatches),
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cases_per_s_wall": round(rep.run / wall, 1), "cases_per_cpu_s": round(rep.run / cpu, 1),
            "model_s": round(spent["model"], 3), "probe_s": round(spent["probe"], 3),
            "rest_s": round(wall - spent["model"] - spent["probe"], 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.conform_rate", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64")
    p.add_argument("--cases", type=int, default=99_072, help="cases to run (default 99072: x86-64 6 groups, "
                   "arm64 47.6 of its 128 groups)")
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.cases, args.start, args.arch)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"conform {r['arch']}: {r['cases']} of {r['space']} cases, {r['mismatches']} mismatches")
    print(f"  {r['cases_per_cpu_s']:,.0f} cases per CPU second ({r['cpu_s']} s), "
          f"{r['cases_per_s_wall']:,.0f} cases/s wall ({r['wall_s']} s)")
    print(f"  model {r['model_s']} s, machine batch probe {r['probe_s']} s, tables and comparison {r['rest_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
