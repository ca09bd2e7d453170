"""Kernel-harness rate (issue 12): the compiled kernel's functions evaluated per second in the
guest, against the batch MMU probe and the Python model, measured in one process.

    python -m bench.kernel_rate [--config x86_64:4level ...] [--entries 1000000] [--json]

For each configuration (default: one per architecture) the harness for the default Kconfig
profile must already be built (``foliowalk kernel build``).  Figures, each with its ratio to
the batch probe (``probe_many_raw()`` on as many addresses, 10% faults, the workload of
``python -m bench``):

* ``harness cold`` -- the first ``eval()`` of a fresh runner (Unicorn translates the code);
* ``harness warm`` -- the best of 3 further ``eval()``s on the same values;
* ``harness all ops`` -- every op the model compares, per entry-op evaluation (warm);
* ``model`` -- the Python model's ``pte_present()`` on the same values (per-value Python call),
  and every op the harness answers, as ``foliowalk kernel check`` runs them.

Target (stated here, never asserted in tests): the harness keeps pace with the batch probe
(ratio >= 1), so checking every entry a run touches costs less than probing it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def _best(fn: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _model_all(fns: list[Any], ops: Any, values: list[int]) -> None:
    for fn in fns:
        for v in values:
            try:
                fn(ops, v, 0)
            except Exception:  # noqa: BLE001 -- the model raising on an odd value still cost its time
                pass


def run(key: str, entries: int) -> list[dict[str, Any]]:
    import archs
    from bench.core import build_workload
    from emu.kernel.build import cached_build
    from emu.kernel.check import MODEL_OPS, entry_samples
    from emu.kernel.runner import KernelHarness

    build = cached_build(key)
    if build is None:
        raise SystemExit(f"bench.kernel_rate: no harness built for {key}; run: foliowalk kernel build --config {key}")
    ops = archs.get_ops(key, kconfig=build.kconfig)
    values = entry_samples(ops, entries, seed=3)[:entries]
    t = time.perf_counter()
    harness = KernelHarness(build, key)
    harness.eval("pte_present", values)
    cold = len(values) / (time.perf_counter() - t)
    warm = len(values) / _best(lambda: harness.eval("pte_present", values))
    compared = [op for op in harness.ops if op in MODEL_OPS]
    sub = values[: max(1, len(values) // 10)]
    all_ops = len(sub) * len(compared) / _best(lambda: [harness.eval(op, sub) for op in compared], 1)
    msub = values[: max(1, len(values) // 50)].tolist()
    model = len(msub) / _best(lambda: [ops.pte_present(v) for v in msub], 1)
    fns = [MODEL_OPS[op] for op in compared]
    model_all = len(msub) * len(fns) / _best(lambda: [_model_all(fns, ops, msub)], 1)
    w = build_workload(key, 4096)
    try:
        arr = np.array(w.faults10 * max(1, entries // len(w.faults10) // 8), dtype=np.uint64)
        probe = len(arr) / _best(lambda: w.oracle.machine.probe_many_raw(arr))
    finally:
        w.close()
    rows = [("harness cold", cold, len(values)), ("harness warm", warm, len(values)),
            (f"harness all {len(compared)} ops", all_ops, len(sub) * len(compared)),
            ("model pte_present()", model, len(msub)),
            (f"model all {len(compared)} ops", model_all, len(msub) * len(fns)),
            ("batch probe (10% faults)", probe, len(arr))]
    return [{"config": key, "figure": name, "per_s": rate, "n": n, "ratio_to_probe": rate / probe}
            for name, rate, n in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kernel_rate", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", metavar="ARCH:NAME")
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = []
    for key in args.config or ["x86_64:4level", "arm64:4k:48", "s390x:region3"]:
        out += run(key, args.entries)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{'config':16} {'figure':28} {'per second':>14} {'n':>10} {'x probe':>8}")
        for r in out:
            print(f"{r['config']:16} {r['figure']:28} {r['per_s']:14,.0f} {r['n']:10} {r['ratio_to_probe']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
