"""``foliowalk fixtures build|check|export``: hardware-format fixture sets for other people's tests.

* ``build --out DIR [--arch A] [--config K] [--kernel V]`` -- one set per configuration of the
  default scenarios, a progress line per set; Ctrl-C keeps the sets already written.
* ``check DIR...`` -- re-walk and re-probe every recorded address; exit 1 on any difference,
  2 on a corrupt set, 0 otherwise.  A DIR is a set or a folder of sets.
* ``export DIR --raw FILE`` -- a flat raw physical image (sparse) for QEMU or a memory-forensics
  tool, opened with the root-table address from the manifest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import archs
from archs.kconfig import DEFAULT_PROFILE, PROFILES
from archs.linux import KERNELS
from emu.errors import FixtureError, FoliowalkError

#: every configuration name, for the help texts
CONFIG_NAMES = ", ".join(archs.all_config_keys())


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fixtures", help="build, check and export hardware-format fixture sets")
    fsub = p.add_subparsers(dest="fixtures_command", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda args: _help(p))

    b = fsub.add_parser("build", help="write one fixture set per configuration of the default scenarios")
    b.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder that receives the sets")
    b.add_argument("--arch", action="append", default=[], help="architecture (repeatable); default: all")
    b.add_argument(
        "--config", action="append", default=[], metavar="ARCH:NAME",
        help=f"one configuration (repeatable); default: all of --arch. One of: {CONFIG_NAMES}",
    )
    b.add_argument(
        "--kernel", default=None, choices=KERNELS, help="folio_walk_start() version (default v6.12)"
    )
    b.add_argument("--kernel-config", dest="kconfig", default=None, choices=sorted(PROFILES),
                   help=f"the Kconfig profile the sets are built for (default {DEFAULT_PROFILE}); recorded")
    b.add_argument("--harness", default="auto", choices=("auto", "on", "off"),
                   help="check every entry against the compiled kernel: auto = when built, on = build it, off")
    b.add_argument("--spec", action="append", default=[], type=Path, metavar="FILE",
                   help="a set of your own hierarchy instead of the default scenarios: a spec file "
                        "(docs/hierarchy.md), named after the file (repeatable)")
    b.set_defaults(func=run_build)

    c = fsub.add_parser("check", help="re-walk and re-probe fixture sets; exit 1 on any difference")
    c.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a fixture set, or a folder of sets")
    c.add_argument("--json", action="store_true", help="print JSON instead of text")
    c.set_defaults(func=run_check)

    e = fsub.add_parser("export", help="write a set's RAM as a flat raw physical image")
    e.add_argument("dir", type=Path, metavar="DIR", help="the fixture set")
    e.add_argument("--raw", required=True, type=Path, metavar="FILE", help="the raw image to write")
    e.set_defaults(func=run_export)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def run_build(args: argparse.Namespace) -> int:
    from emu.cli import output_dir
    from emu.cli.verify import selected_configs
    from emu.fixtures import build_fixture_sets

    if args.spec:
        return _build_specs(args)
    keys = selected_configs(args.arch, args.config)
    output_dir(args.out, "--out")
    written: list[str] = []

    def progress(line: str) -> None:
        written.append(line)
        print(line, flush=True)

    try:
        build_fixture_sets(args.out, keys, args.kernel, progress, kconfig=args.kconfig, harness=args.harness)
    except KeyboardInterrupt:
        print(f"foliowalk: interrupted; {len(written)} of {len(keys)} sets written and kept", file=sys.stderr)
        return 130
    print(f"{len(keys)} fixture set{'s' if len(keys) != 1 else ''} in {args.out}")
    return 0


def _build_specs(args: argparse.Namespace) -> int:
    """``fixtures build --spec FILE...``: one set per spec, named after the file (``x.hierarchy.json``
    -> ``x``); every spec is checked before the first set is written."""
    from emu.cli import UsageError, output_dir
    from emu.specs import build_spec_fixture, load_spec

    if args.arch or args.config or args.kernel or args.kconfig:
        raise UsageError("fixtures build: --spec names its own configuration and kernel; "
                         "no --arch, --config, --kernel or --kernel-config")
    specs = [(p, load_spec(p)) for p in args.spec]
    names = [p.name.removesuffix(".json").removesuffix(".hierarchy") for p in args.spec]
    if len(set(names)) != len(names):
        raise UsageError("fixtures build: two --spec files have the same name; each set is named after its file")
    output_dir(args.out, "--out")
    done = 0
    try:
        for (path, h), name in zip(specs, names, strict=True):
            out = build_spec_fixture(args.out, h, name)
            done += 1
            print(f"{out}  ({h.config}, {len(h.addrs)} address{'es' if len(h.addrs) != 1 else ''}, from {path})",
                  flush=True)
    except KeyboardInterrupt:
        print(f"foliowalk: interrupted; {done} of {len(specs)} sets written and kept", file=sys.stderr)
        return 130
    print(f"{done} fixture set{'s' if done != 1 else ''} in {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from emu.fixtures import check_fixture_set, find_sets
    from emu.fixtures.format import MANIFEST

    # A folder with nothing in it (or only the campaign.json of a fuzz --out that found nothing)
    # has nothing to check: said, exit 0.  Anything else that holds no set is an error.
    empty = [d for d in args.dirs if d.is_dir() and not (d / MANIFEST).exists()
             and all(c.name.startswith(".") or c.name == "campaign.json" for c in d.iterdir())]
    for d in empty:
        print(f"nothing to check in {d}: it holds no fixture set (nor anything else)", file=sys.stderr)
    dirs = [d for d in args.dirs if d not in empty]
    if not dirs:
        if args.json:
            json.dump({"format": "foliowalk-fixtures-check/1", "sets": []}, sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            print("checked 0 sets")
        return 0
    sets = find_sets(dirs)
    corrupt = differ = 0
    results: list[dict[str, Any]] = []
    for path in sets:
        try:
            diffs = check_fixture_set(path)
        except FixtureError as err:
            corrupt += 1
            print(f"foliowalk: error: {err}", file=sys.stderr)
            results.append({"set": str(path), "status": "corrupt", "error": str(err)})
            continue
        except FoliowalkError as err:  # e.g. no oracle for this architecture here
            corrupt += 1
            print(f"foliowalk: error: {path}: {err}", file=sys.stderr)
            results.append({"set": str(path), "status": "error", "error": str(err)})
            continue
        differ += bool(diffs)
        results.append({"set": str(path), "status": "differs" if diffs else "ok", "differences": diffs})
        if not args.json:
            print(f"DIFF {path}  ({len(diffs)} differences)" if diffs else f"ok   {path}")
            for d in diffs:
                print(f"     {d}")
    if args.json:
        json.dump({"format": "foliowalk-fixtures-check/1", "sets": results}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        same = len(sets) - differ - corrupt
        print(f"checked {len(sets)} sets: {same} identical, {differ} differ, {corrupt} corrupt")
    return 2 if corrupt else 1 if differ else 0


def run_export(args: argparse.Namespace) -> int:
    from emu.cli import output_file
    from emu.fixtures import export_raw, load_fixture_set

    output_file(args.raw, "--raw")
    fs = load_fixture_set(args.dir)
    out = export_raw(args.dir, args.raw)
    regs = ", ".join(f"{k}={v:#x}" for k, v in fs.registers.items())
    print(
        f"{out}: {fs.ram_size:#x} bytes of {fs.config} RAM (raw, physical address = file offset); "
        f"root table {fs.root_table:#x}" + (f"; {regs}" if regs else "")
    )
    return 0
