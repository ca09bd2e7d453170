"""``foliowalk conform``: MMU conformance -- access rights, #PF error codes and Accessed/Dirty
updates -- over an enumerated space of entry bits, accesses and CPU controls, run as real guest
accesses on Unicorn and compared with the manual's model (emu/conform/, docs/conform.md).

Prints the space (its size, the dimensions in and out, the legality rules), a progress line on
stderr, then every mismatch with its class: ``emulator-deviation`` (registered, with its
reference) or ``unexplained``.  Exit 1 if any mismatch is unexplained; Ctrl-C keeps the results
so far (the report says ``interrupted``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: arch -> the module of emu/conform/ that runs its space (Runner, Report, select, run_workers, space_json)
MODULES = {"x86_64": "emu.conform.x86_64", "arm64": "emu.conform.arm64", "s390x": "emu.conform.s390x"}
ARCHES = tuple(MODULES)


def _positive(text: str) -> int:
    from emu.cli import int_arg

    n = int_arg(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return n


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conform", help="MMU access-rights / #PF code / A-D conformance against the manual's model")
    p.add_argument("--arch", required=True, choices=ARCHES, help="architecture")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--limit", type=_positive, metavar="N", help="run the first N cases of the space")
    g.add_argument("--sample", type=_positive, metavar="N", help="run N cases drawn at random (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="run in N local worker processes (default 1: in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); needs "
                        "pip install 'foliowalk[cluster]' here and on the workers")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--space", action="store_true", help="describe the space and exit (no run)")
    p.add_argument("--pku", action="store_true",
                   help="x86_64: the space with protection keys (CR4.PKE, PKRU AD/WD, the leaf's key), 10x larger")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib

    from emu.errors import ConfigError

    C: Any = importlib.import_module(MODULES[args.arch])
    if args.pku and not hasattr(C, "PKU"):
        raise ConfigError(f"--pku is a space of x86_64 only, not of {args.arch}")
    kw = {"space": C.PKU} if args.pku else {}  # the architecture's default space otherwise
    if args.space:
        space = C.space_json(**kw)
        if args.json:
            json.dump({"arch": args.arch, "space": space}, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            _print_space(args.arch, space)
        return 0
    if args.scheduler is not None and args.workers > 1:
        from emu.cli import UsageError

        raise UsageError("conform: --workers runs local processes; with --scheduler the cluster's workers "
                         "run the cases")
    cases = C.select(limit=args.limit, sample=args.sample, seed=args.seed, **kw)
    report = C.new_report(**kw)
    show = not args.quiet and not args.json or (not args.quiet and sys.stderr.isatty())

    last = [0.0]

    def progress(r: Any) -> None:
        if r.seconds - last[0] < 0.5 and r.run < len(cases):
            return
        last[0] = r.seconds
        rate = r.run / r.seconds if r.seconds else 0.0
        sys.stderr.write(f"\rconform {args.arch}: {r.run}/{len(cases)} cases, {len(r.mismatches)} mismatches "
                         f"({len(r.unexplained)} unexplained), {rate:,.0f} cases/s ")
        sys.stderr.flush()

    if args.scheduler is not None:
        from emu.cluster.conform import run_conform

        try:
            run_conform(args.scheduler, C.__name__, cases, report, progress if show else None, **kw)
        finally:
            if show and last[0]:  # a progress line was drawn (not when the cluster was never reached)
                sys.stderr.write("\n")
    elif args.workers > 1:
        try:
            C.run_workers(cases, args.workers, report, progress if show else None, **kw)
        finally:
            if show:
                sys.stderr.write("\n")
    else:
        runner = C.Runner(**kw)
        try:
            runner.run(cases, report, progress if show else None)
        finally:
            runner.close()
            if show:
                sys.stderr.write("\n")
    lost = getattr(report, "lost", None)  # --scheduler: the cluster went away mid-campaign
    if args.json:
        data = report.to_json()
        if lost:
            data["lost"] = lost
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_space(args.arch, C.space_json(**kw))
        rate = report.run / report.seconds if report.seconds else 0.0
        print(f"ran {report.run} of {report.size} cases{' (interrupted)' if report.interrupted else ''} "
              f"in {report.seconds:.1f} s ({rate:,.0f} cases/s): {report.agree} agree, "
              f"{len(report.mismatches)} mismatches")
        digest = report.digest()
        print(f"  on {report.ran_on or 'this process'}; "
              + (f"outcomes digest {digest[:16]} over {report.run} cases" if digest
                 else "outcomes digest: not computed for this space"))
        for name, n in sorted(report.by_class().items()):
            print(f"  {'unexplained' if name == 'unexplained' else 'emulator-deviation ' + name}: {n}")
        for m in report.mismatches:
            cls = f"emulator-deviation {m.explained_by}" if m.explained_by else "UNEXPLAINED"
            print(f"{cls}: {m.description}: {m.field}: model {m.model}, machine {m.machine}")
    if lost:
        print(f"foliowalk conform: {lost}; the report above has the cases that came back", file=sys.stderr)
    if report.unexplained or lost:
        return 1
    return 130 if report.interrupted else 0


def _print_space(arch: str, space: dict[str, Any]) -> None:
    print(f"conform {arch} {space['name']}: {space['size']:,} cases "
          f"({space['before_legality_filter']:,} before the legality rules)")
    for k, v in space["in"].items():
        print(f"  in   {k}: {v}")
    for k, v in space["out"].items():
        print(f"  out  {k}: {v}")
    for rule in space["legality"]:
        print(f"  rule {rule}")
