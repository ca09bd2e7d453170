"""Fuzzing rate (issue 5): cases per second per core, and where the time goes.

    python -m bench.fuzz_rate [--config x86_64:4level] [--seconds 20] [--walker auto|batch|scalar]
                              [--profile] [--json]

A *case* is one address: walked by folio_walk_start()/folio_walk_end() with all four FW_* flag
combinations, probed once on Unicorn's MMU (in the batch of its hierarchy), each row judged by
emu.verify.judge().  The workload is ``GenParams.bench()``: generated hierarchies of mostly valid
mappings (4K PTEs, 2M and 1G leaves) with swap, migration, none and a little noise, tuned so that
about one probe in ten faults -- the target's "10% fault rate" (the measured rate is printed).
One process, no shrinking (the campaign's own work only).

Target (stated here, never asserted in tests): >= 20,000 cases/s per core on x86-64.  "Per
core" is cases per CPU second of this process (``time.process_time``), so other load on the
machine does not count against it; the wall-clock rate is printed beside it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from typing import Any

TARGET = 20_000.0


def run(config: str = "x86_64:4level", seconds: float = 20.0, walker: str = "auto", seed: int = 1,
        profile: bool = False) -> dict[str, Any]:
    """Generate and evaluate bench hierarchies for ``seconds``; return the figures."""
    from emu.fuzz import GenParams, HierarchyGenerator, Target, deciding_level
    from emu.machines.base import Fault

    gen = HierarchyGenerator(config, params=GenParams.bench())
    target = Target(config, walker=walker)
    warm = gen.generate(seed, 10**6)
    target.evaluate(warm)  # first use builds caches (fast walker, vector tables)
    phases: dict[str, float] = {"generate": 0.0, "load": 0.0, "walk": 0.0, "probe": 0.0, "judge": 0.0}
    cases = faults = rows = hierarchies = 0
    verdicts: dict[str, int] = {}
    levels: dict[str, int] = {}
    prof = cProfile.Profile() if profile else None
    c0, t0 = time.process_time(), time.perf_counter()
    i = 0
    if prof:
        prof.enable()
    while time.perf_counter() - t0 < seconds:
        g0 = time.perf_counter()
        h = gen.generate(seed, i)
        phases["generate"] += time.perf_counter() - g0
        ev = target.evaluate(h)
        for k, v in ev.seconds.items():
            phases[k] = phases.get(k, 0.0) + v
        cases += len(ev.addrs)
        hierarchies += 1
        for a, row in enumerate(ev.walks):
            faults += isinstance(ev.probes[a], Fault)
            for j, w in enumerate(row):
                cls = ev.verdicts[a][j].split(":", 1)[0]
                verdicts[cls] = verdicts.get(cls, 0) + 1
                lv = deciding_level(w)
                levels[lv] = levels.get(lv, 0) + 1
                rows += 1
        i += 1
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    target.close()
    total = sum(phases.values()) or 1.0
    out: dict[str, Any] = {
        "config": config,
        "walker": walker,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "hierarchies": hierarchies,
        "cases": cases,
        "rows": rows,
        "cases_per_cpu_s": round(cases / cpu, 1) if cpu else 0.0,
        "cases_per_wall_s": round(cases / wall, 1) if wall else 0.0,
        "fault_rate": round(faults / cases, 4) if cases else 0.0,
        "target": TARGET,
        "us_per_case": {k: round(v / cases * 1e6, 2) for k, v in phases.items()} if cases else {},
        "share": {k: round(v / total, 3) for k, v in phases.items()},
        "verdicts": verdicts,
        "rows_by_level": levels,
    }
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        out["profile"] = buf.getvalue()
    return out


def format_result(r: dict[str, Any]) -> str:
    ratio = r["cases_per_cpu_s"] / r["target"]
    lines = [
        f"fuzz rate  {r['config']}  walker {r['walker']}  ({r['hierarchies']} hierarchies, "
        f"{r['cases']:,} cases, "
        f"{r['rows']:,} rows in {r['seconds']} s, {r['cpu_seconds']} s CPU)",
        f"  {r['cases_per_cpu_s']:>10,.0f} cases/s per core (CPU time)   target {r['target']:,.0f}  "
        f"ratio {ratio:.2f}  {'MEETS' if ratio >= 1 else 'BELOW'} target",
        f"  {r['cases_per_wall_s']:>10,.0f} cases/s wall clock   MMU fault rate {r['fault_rate']:.1%}",
        "  where the time goes (µs per case, share): "
        + ", ".join(f"{k} {v:.1f} ({r['share'][k]:.0%})" for k, v in r["us_per_case"].items()),
        "  verdicts (rows): " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["verdicts"].items())),
    ]
    if "profile" in r:
        lines.append(r["profile"])
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """A bad option is one line on stderr and exit status 2 (no usage block, no traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    import math

    import archs

    p = _Parser(prog="python -m bench.fuzz_rate", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="x86_64:4level",
                   help=f"the configuration (default x86_64:4level): {', '.join(archs.all_config_keys())}")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    p.add_argument("--walker", choices=("auto", "batch", "scalar"), default="auto")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="cProfile the run (slower; for the breakdown)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        args.config = archs.get_config(args.config).key
    except archs.UnknownConfig as err:
        p.error(str(err))
    if not (math.isfinite(args.seconds) and 0 < args.seconds <= 24 * 3600):
        p.error(f"--seconds must be a positive number of seconds up to a day, not {args.seconds:g}")
    if not 0 <= args.seed < 1 << 64:
        p.error(f"--seed must be 0..2**64-1, not {args.seed}")
    r = run(args.config, args.seconds, args.walker, args.seed, args.profile)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_result(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
