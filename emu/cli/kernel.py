"""``foliowalk kernel``: the kernel's own page-table code, compiled from a real tree, as the
oracle of the Linux half.

* ``kernel build``  -- build (or find in the cache) the harness for configurations/profiles;
* ``kernel check``  -- every harness op and constant, kernel against model, on N entries per
  configuration; exit 1 on any difference;
* ``kernel info``   -- what is installed, what is cached, what is missing and how to get it;
* ``kernel verify`` -- a (patched) tree's own ``folio_walk_start()`` on the default scenarios and
  fuzzed hierarchies, against the model and the MMU; exit 1 where it departs from the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import archs
from archs.kconfig import DEFAULT_PROFILE, DEFAULT_VERSION, PROFILES, VERSIONS

EXIT_OK, EXIT_DIFFER = 0, 1


def _targets(args: argparse.Namespace) -> list[str]:
    """The configurations named (one without a harness yet: a one-line error), or all of
    ``--arch`` that have one (the others named on stderr)."""
    from emu.cli import UsageError
    from emu.kernel.build import not_yet

    if args.config:
        for key in args.config:
            why = not_yet(archs.get_config(key))  # unknown -> one-line error
            if why:
                raise UsageError(f"kernel: {why}")
        return list(args.config)
    keys = archs.all_config_keys(args.arch or None)
    left = [k for k in keys if not_yet(archs.get_config(k))]
    if left:
        print(f"note: no compiled-kernel harness yet for {', '.join(left)} (docs/kernel.md)", file=sys.stderr)
    return [k for k in keys if k not in left]


#: every configuration name, for the help texts
CONFIG_NAMES = ", ".join(archs.all_config_keys())


def add_parser(sub: Any) -> None:
    p = sub.add_parser("kernel", help="the compiled kernel as the oracle of the Linux side")
    ksub = p.add_subparsers(dest="kernel_command", metavar="ACTION")
    for name, helptext in (("build", "build the kernel harness (cached)"),
                           ("check", "kernel vs model on every predicate, encoder and constant"),
                           ("info", "toolchain, trees and cached builds")):
        q = ksub.add_parser(name, help=helptext)
        q.add_argument("--arch", action="append", choices=sorted(archs.ARCHES), help="architecture (repeatable)")
        q.add_argument("--config", action="append", metavar="ARCH:NAME",
                       help=f"paging configuration (repeatable): {CONFIG_NAMES}")
        q.add_argument("--kernel-version", dest="version", action="append", choices=(*VERSIONS, "seed"),
                       help=f"kernel version (repeatable; default {DEFAULT_VERSION}; seed = 6.12 with "
                            "emu/kernel/patches/seed-folio_walk_start.patch)")
        q.add_argument("--kconfig", action="append", choices=sorted(PROFILES),
                       help=f"Kconfig profile (repeatable; default {DEFAULT_PROFILE})")
        q.add_argument("--tree", help="a kernel source tree to use instead of the distribution's")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "check":
            q.add_argument("-n", "--entries", type=int, default=100_000, help="entries per configuration")
            q.add_argument("--seed", type=int, default=0)
        q.set_defaults(func=run, kernel_action=name)
    q = ksub.add_parser("verify", help="a (patched) tree's own folio_walk_start() against the model and the MMU")
    q.add_argument("--arch", action="append", choices=sorted(archs.ARCHES), help="architecture (repeatable)")
    q.add_argument("--config", action="append", metavar="ARCH:NAME",
                       help=f"paging configuration (repeatable): {CONFIG_NAMES}")
    q.add_argument("--kernel-version", dest="version", default=DEFAULT_VERSION, choices=(*VERSIONS, "seed"),
                   help=f"the distribution's tree of this version (default {DEFAULT_VERSION}); seed = 6.12 with "
                        "foliowalk's patch reverting folio_walk_start()'s later fixes")
    q.add_argument("--tree", help="your kernel source tree (never modified)")
    q.add_argument("--patch", help="a patch (-p1) to apply to a copy of the tree first")
    q.add_argument("--kconfig", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                   help=f"Kconfig profile (default {DEFAULT_PROFILE})")
    q.add_argument("--cases", type=int, default=20_000,
                   help="fuzzed addresses per configuration (default 20000; 0: none)")
    q.add_argument("--seed", type=int, default=0, help="fuzzing seed")
    q.add_argument("--show", type=int, default=8, help="departures printed per source and configuration")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=run_verify)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_verify(args: argparse.Namespace) -> int:
    """``foliowalk kernel verify``: exit 1 if any row of the tree's kernel departs from the model."""
    from emu.cli import UsageError
    from emu.kernel.treeverify import format_reports, verify_tree

    if args.cases < 0 or args.show < 0:
        raise UsageError("kernel verify: --cases and --show must be 0 or more")
    if args.patch and not os.path.isfile(args.patch):
        raise UsageError(f"kernel verify: --patch {args.patch}: no such file")
    keys = _targets(args)
    reports = verify_tree(keys, version=args.version, tree=args.tree, patch=args.patch, profile=args.kconfig,
                          cases=args.cases, seed=args.seed, keep=max(args.show, 20), log=_log)
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=1))
    else:
        format_reports(reports, show=args.show)
    if not any(r.available for r in reports):
        print("foliowalk kernel verify: no configuration could be walked by this tree's kernel", file=sys.stderr)
        return 2
    return EXIT_DIFFER if any(r.total for r in reports) else EXIT_OK


def _log(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from emu.kernel.toolchain import INSTALL_HINT, TOOLCHAINS

    versions = args.version or [DEFAULT_VERSION]
    profiles = args.kconfig or [DEFAULT_PROFILE]
    if args.kernel_action == "info":
        from emu.kernel.tree import DISTRO_TARBALL, cache_dir

        for arch, tc in TOOLCHAINS.items():
            missing = tc.missing()
            print(f"{arch:7} {tc.gcc:24} {'ok' if not missing else 'missing: ' + ', '.join(missing)}")
        for v in VERSIONS:
            tb = DISTRO_TARBALL.format(series=v)
            print(f"linux {v:5} {tb}: {'installed' if os.path.exists(tb) else 'missing'}")
        builds = sorted((cache_dir() / "build").glob("*/build.json")) if (cache_dir() / "build").exists() else []
        print(f"cache {cache_dir()}: {len(builds)} harness build(s)")
        print(f"install everything with: {INSTALL_HINT}")
        return EXIT_OK
    from emu.kernel.build import build_harness

    keys = _targets(args)
    from emu.kernel.patched import resolve_tree

    if args.kernel_action == "build":
        from emu.kernel.walk import WalkBuildError, build_walk

        for v in versions:
            rv, tree = resolve_tree(v, args.tree)
            for prof in profiles:
                for key in keys:
                    t = time.monotonic()
                    b = build_harness(key, prof, rv, tree, log=_log)
                    try:  # the kernel's own folio_walk_start() beside it, where it runs
                        build_walk(key, prof, rv, tree, log=_log)
                        walk = "+ walk"
                    except WalkBuildError as e:
                        walk = f"(kernel walk not available on {key.split(':')[0]}: {e})"
                    label = f"{b.tree.release}{'+seed' if v == 'seed' else ''}"
                    print(f"{key:16} {label:14} {prof:15} {time.monotonic() - t:6.1f} s  {b.path} {walk}")
        return EXIT_OK
    from emu.kernel.check import check

    if args.entries < 1:
        from emu.cli import UsageError

        raise UsageError("--entries must be at least 1")
    reports = []
    total = 0
    for v in versions:
        for prof in profiles:
            for key in keys:
                rv, tree = resolve_tree(v, args.tree)
                b = build_harness(key, prof, rv, tree, log=_log)
                r = check(b, key, args.entries, args.seed)
                reports.append(r)
                total += r.differences
                if not args.json:
                    _print_report(r)
    if args.json:
        print(json.dumps([_report_json(r) for r in reports], indent=1))
    else:
        print(f"== {len(reports)} configuration(s), {sum(r.entries for r in reports)} entries: "
              f"{total} difference(s)")
    return EXIT_DIFFER if total else EXIT_OK


def _print_report(r: Any) -> None:
    ops = [o for o in r.ops if not o.note]
    print(f"== {r.config}  linux {r.release} {r.kconfig}")
    print(f"   {r.entries} entries x {len(ops)} ops ({sum(o.checked for o in ops)} evaluations), "
          f"{len(r.constants)} constants: {r.differences} difference(s)   "
          f"[kernel {r.seconds['kernel']:.2f} s, model {r.seconds['model']:.2f} s]")
    for o in r.ops:
        if o.note:
            print(f"   {o.op}: {o.note}")
        elif o.count:
            print(f"   DIFFER {o.op}: {o.count} of {o.checked}")
            for a, b, k, m in o.examples[:5]:
                print(f"      ({a:#x}, {b:#x}): kernel {k:#x}, model {m}")
    for name, k, m in r.constants:
        if m is not None and k != m:
            print(f"   DIFFER constant {name}: kernel {k}, model {m}")
    if r.unmodelled:
        print(f"   not in the model (kernel only): {', '.join(r.unmodelled)}")


def _report_json(r: Any) -> dict[str, Any]:
    return {
        "config": r.config, "release": r.release, "kconfig": r.kconfig, "entries": r.entries,
        "differences": r.differences, "seconds": r.seconds, "unmodelled": r.unmodelled,
        "ops": [{"op": o.op, "checked": o.checked, "differ": o.count, "note": o.note,
                 "examples": [{"a": a, "b": b, "kernel": k, "model": m} for a, b, k, m in o.examples]}
                for o in r.ops],
        "constants": [{"name": n, "kernel": k, "model": m} for n, k, m in r.constants],
    }
