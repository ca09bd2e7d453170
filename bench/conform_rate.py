"""Conformance rate (issue 18): x86-64 ``foliowalk conform`` cases per second per core, and where
the time goes (the model, the machine's batch probe, the rest: building tables, comparing).

    python -m bench.conform_rate [--cases N] [--start I] [--json]

Runs cases ``start .. start+N`` of the x86-64 space in this process (one Runner, machines built
before the clock starts).  "Per core" is cases per CPU second of this process
(``time.process_time``), so other load on the machine does not count against it; the wall-clock
rate is printed beside it.  No target yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def measure(cases: int, start: int) -> dict[str, Any]:
    from emu.conform import x86_64 as C
    from emu.machines.x86_64 import X86_64Machine

    runner = C.Runner()
    runner.tables(False)
    runner.tables(True)
    spent = {"model": 0.0, "probe": 0.0}
    expected, probe = C.expected, X86_64Machine.probe_many_raw

    def timed_expected(*a: Any) -> Any:
        t = time.perf_counter()
        try:
            return expected(*a)
        finally:
            spent["model"] += time.perf_counter() - t

    def timed_probe(self: Any, *a: Any) -> Any:
        t = time.perf_counter()
        try:
            return probe(self, *a)
        finally:
            spent["probe"] += time.perf_counter() - t

    C.expected = timed_expected  # type: ignore[assignment]
    X86_64Machine.probe_many_raw = timed_probe  # type: ignore[method-assign,assignment]
    try:
        stop = min(start + cases, C.SIZE)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        rep = runner.run(range(start, stop), C.Report())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        C.expected = expected  # type: ignore[assignment]
        X86_64Machine.probe_many_raw = probe  # type: ignore[method-assign,assignment]
        runner.close()
    return {"space": C.SIZE, "cases": rep.run, "mismatches": len(rep.mismatches),
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cases_per_s_wall": round(rep.run / wall, 1), "cases_per_cpu_s": round(rep.run / cpu, 1),
            "model_s": round(spent["model"], 3), "probe_s": round(spent["probe"], 3),
            "rest_s": round(wall - spent["model"] - spent["probe"], 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.conform_rate", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=99_072, help="cases to run (default 99072: 6 groups)")
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.cases, args.start)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"conform x86_64: {r['cases']} of {r['space']} cases, {r['mismatches']} mismatches")
    print(f"  {r['cases_per_cpu_s']:,.0f} cases per CPU second ({r['cpu_s']} s), "
          f"{r['cases_per_s_wall']:,.0f} cases/s wall ({r['wall_s']} s)")
    print(f"  model {r['model_s']} s, machine batch probe {r['probe_s']} s, tables and comparison {r['rest_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
