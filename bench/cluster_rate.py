"""Conformance on a Dask cluster (issue 18): x86-64 ``foliowalk conform`` cases per second per
core, and the speed-up from one to two Dask workers, measured in one run.

    python -m bench.cluster_rate [--cases N] [--json]

The same cases (``0 .. N``: whole groups of CPU controls and access, cut into the space's tasks)
run three times: in this process (one Runner; "per core" is cases per CPU second of this
process), then on a ``LocalCluster`` of one worker process and on one of two (one thread each,
``emu.cluster.conform.run_conform``: the ``--scheduler`` path, connecting, sharding and merging
included).  Each cluster runs a small warm-up campaign first (every worker imports foliowalk and
builds its machines), then the timed one; its rate per core is given both as the wall-clock rate
over the worker count and as cases per CPU second of the worker processes (everything they did:
the tasks, Dask's own threads, pickling), which other load on the machine does not change.
The three digests must agree (else the run fails): the figures are of the same work.  The load
average is printed beside them: on a shared machine two workers get two cores
only if nobody else wants them.  Needs the cluster extra (``pip install 'foliowalk[cluster]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

SPACE = "emu.conform.x86_64"


def _local(cases: range) -> dict[str, Any]:
    from emu.conform import x86_64 as C

    runner = C.Runner()
    runner.tables(False)
    runner.tables(True)
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        rep = runner.run(cases, C.Report())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        runner.close()
    return {"cases": rep.run, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "cases_per_cpu_s": round(rep.run / cpu, 1), "cases_per_s_wall": round(rep.run / wall, 1),
            "digest": rep.digest()}


def _cluster(workers: int, cases: range) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from emu.cluster.conform import run_conform
    from emu.conform import x86_64 as C

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        # warm-up: a few cases of each of 4 * workers groups, so that every worker has built its machines
        warm = [g * len(C.COMBOS) + k for g in range(4 * workers) for k in range(8)]
        run_conform(cl.scheduler_address, SPACE, warm, C.Report())
        with Client(cl) as probe:  # the worker processes' CPU time, before and after
            cpu0 = probe.run(time.process_time)
            wall0 = time.perf_counter()
            rep = run_conform(cl.scheduler_address, SPACE, cases, C.Report())
            wall = time.perf_counter() - wall0
            cpu1 = probe.run(time.process_time)
    cpu = sum(cpu1[w] - cpu0[w] for w in cpu1)
    return {"workers": workers, "cases": rep.run, "wall_s": round(wall, 3), "workers_cpu_s": round(cpu, 3),
            "cases_per_s_wall": round(rep.run / wall, 1), "cases_per_s_per_worker": round(rep.run / wall / workers, 1),
            "cases_per_worker_cpu_s": round(rep.run / cpu, 1), "digest": rep.digest()}


def measure(cases: int) -> dict[str, Any]:
    from emu.conform import x86_64 as C

    todo = range(min(cases, C.SIZE))
    load0 = os.getloadavg()[0]
    local = _local(todo)
    one = _cluster(1, todo)
    two = _cluster(2, todo)
    if not local["digest"] == one["digest"] == two["digest"]:
        raise SystemExit(f"cluster_rate: the digests differ: {local['digest']} {one['digest']} {two['digest']}")
    return {"space": C.SIZE, "cases": len(todo), "cpus": os.cpu_count(), "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2), "local": local, "dask_1": one, "dask_2": two,
            "speedup_1_to_2": round(one["wall_s"] / two["wall_s"], 2), "digest": local["digest"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_rate", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=66_048, help="cases 0..N (default 66048: 4 groups)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.cases)
    if args.json:
        json.dump(r, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    lo, one, two = r["local"], r["dask_1"], r["dask_2"]
    print(f"conform x86_64 on Dask: {r['cases']:,} of {r['space']:,} cases, {r['cpus']} CPUs, "
          f"load average {r['load_before']} -> {r['load_after']}; digest {r['digest'][:16]} (all three runs)")
    print(f"  this process:    {lo['cases_per_cpu_s']:,.0f} cases per CPU second (per core), "
          f"{lo['cases_per_s_wall']:,.0f} cases/s wall ({lo['wall_s']} s)")
    for c in (one, two):
        noun = "workers" if c["workers"] > 1 else "worker "
        print(f"  dask, {c['workers']} {noun}: {c['cases_per_s_wall']:,.0f} cases/s wall "
              f"({c['wall_s']} s), {c['cases_per_s_per_worker']:,.0f} per worker; "
              f"{c['cases_per_worker_cpu_s']:,.0f} cases per worker CPU second ({c['workers_cpu_s']} s)")
    print(f"  speed-up from 1 to 2 Dask workers: x{r['speedup_1_to_2']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
