"""Soak test (issue 20): a fuzz campaign run for N minutes, its memory sampled every minute, so a
slow leak (seen: a worker growing ~1.3 MB/min over 240 s) can be measured over an hour.

    python -m bench.soak [--minutes 60] [--config x86_64:4level ...] [--jobs 1] [--interval 60]
                         [--harness auto|on|off] [--out DIR] [--json]

Runs ``python -m emu fuzz --seconds <minutes*60> --jobs N --quiet --out DIR --harness H`` (DIR: a temporary
folder unless given) and, every ``--interval`` seconds, reads the resident set size (VmRSS,
``/proc/<pid>/status``) of the campaign process and of each worker.  Prints one line per sample
(minute, campaign MiB, each worker's MiB, total) and at the end each process's growth: the
least-squares slope of its RSS over the samples after the first minute (start-up and the first
hierarchies' caches excluded), in MiB per minute.  Workers replaced after a crash show as new
columns.  Linux only (``/proc``).  A measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "resource_tracker" not in cmd


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points (None with fewer than two)."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def run(minutes: float, configs: list[str], jobs: int, interval: float, out: Path | None,
        echo: bool = True, harness: str = "auto") -> dict[str, Any]:
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="foliowalk-soak-")
        out = Path(tmp.name)
    argv = [sys.executable, "-m", "emu", "fuzz", "--seconds", str(minutes * 60), "--jobs", str(jobs), "--quiet",
            "--out", str(out), "--harness", harness]
    for c in configs:
        argv += ["--config", c]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    series: dict[str, list[tuple[float, float]]] = {}
    names: dict[int, str] = {}
    try:
        while proc.poll() is None:
            deadline = t0 + (len(samples) + 1) * interval
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            if proc.poll() is not None:
                break
            minute = (time.monotonic() - t0) / 60
            row: dict[str, float] = {}
            parent = rss_kib(proc.pid)
            if parent is not None:
                row["campaign"] = parent / 1024
            for w in (c for c in children(proc.pid) if _is_worker(c)):
                kib = rss_kib(w)
                if kib is not None:
                    name = names.setdefault(w, f"worker{len(names)}")
                    row[name] = kib / 1024
            for k, v in row.items():
                series.setdefault(k, []).append((minute, v))
            samples.append({"minute": round(minute, 2), "rss_mib": {k: round(v, 1) for k, v in row.items()},
                            "total_mib": round(sum(row.values()), 1)})
            if echo:
                cols = "  ".join(f"{k} {v:7.1f}" for k, v in row.items())
                print(f"{minute:6.1f} min  {cols}  total {sum(row.values()):7.1f} MiB", flush=True)
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
        if tmp is not None:
            tmp.cleanup()
    growth = {k: slope([p for p in pts if p[0] > 1.0]) for k, pts in series.items()}
    result = {
        "minutes": minutes, "configs": configs, "jobs": jobs, "harness": harness, "interval_s": interval,
        "exit_status": proc.returncode, "samples": samples,
        "growth_mib_per_min": {k: (round(v, 3) if v is not None else None) for k, v in growth.items()},
        "campaign_stderr": stderr.strip().splitlines()[-3:],
        "campaign_summary": [ln for ln in stdout.splitlines() if "hierarchies" in ln][:1],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--config", action="append", default=[], help="default: x86_64:4level (repeatable)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    p.add_argument("--out", type=Path, default=None, help="the campaign's --out (default: a temporary folder)")
    p.add_argument("--harness", default="auto", choices=("auto", "on", "off"),
                   help="the campaign's --harness (default auto: the compiled kernel when built)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("python -m bench.soak: needs Linux /proc", file=sys.stderr)
        return 2
    res = run(args.minutes, args.config or ["x86_64:4level"], args.jobs, args.interval, args.out,
              echo=not args.json, harness=args.harness)
    if args.json:
        json.dump(res, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for k, v in res["growth_mib_per_min"].items():
            print(f"{k}: {'n/a' if v is None else f'{v:+.3f} MiB/min'} (slope after the first minute)")
        for line in res["campaign_summary"] + res["campaign_stderr"]:
            print(f"campaign: {line}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
