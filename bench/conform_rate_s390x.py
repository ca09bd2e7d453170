"""Conformance rate (issue 18), s390x: ``foliowalk conform --arch s390x`` cases per CPU second and
where the time goes (the model, the machine's ``emu_start``s, the rest: tables, frames, comparing).

    python -m bench.conform_rate_s390x [--cases N] [--start I] [--json]

Runs cases ``start .. start+N`` (default: the whole 15,936-case space) in this process, one
Runner built before the clock starts.  "Per CPU second" uses ``time.process_time``, so other load
on the machine does not count against it; the wall-clock rate is printed beside it.  No target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def measure(cases: int | None, start: int) -> dict[str, Any]:
    from emu.conform import s390x as C

    runner = C.Runner()
    spent = {"model": 0.0, "machine": 0.0}
    model, run_routine = runner.model, runner.machine.run_routine

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    runner.model = timed("model", model)  # type: ignore[method-assign]
    runner.machine.run_routine = timed("machine", run_routine)  # type: ignore[method-assign]
    try:
        stop = C.SIZE if cases is None else min(start + cases, C.SIZE)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        rep = runner.run(range(start, stop), C.Report())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        runner.close()
    return {"space": C.SIZE, "cases": rep.run, "mismatches": len(rep.mismatches),
            "unexplained": len(rep.unexplained), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cases_per_s_wall": round(rep.run / wall, 1), "cases_per_cpu_s": round(rep.run / cpu, 1),
            "model_s": round(spent["model"], 3), "machine_s": round(spent["machine"], 3),
            "rest_s": round(wall - spent["model"] - spent["machine"], 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.conform_rate_s390x", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=None, help="cases to run (default: the whole space)")
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.cases, args.start)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"conform s390x: {r['cases']} of {r['space']} cases, {r['mismatches']} mismatches "
          f"({r['unexplained']} unexplained)")
    print(f"  {r['cases_per_cpu_s']:,.0f} cases per CPU second ({r['cpu_s']} s), "
          f"{r['cases_per_s_wall']:,.0f} cases/s wall ({r['wall_s']} s)")
    print(f"  model {r['model_s']} s, machine emu_start {r['machine_s']} s, tables and comparison {r['rest_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
