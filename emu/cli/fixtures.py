"""``foliowalk fixtures build|check|export``: hardware-format fixture sets for other people's tests.

* ``build --out DIR [--arch A] [--config K] [--kernel V]`` -- one set per configuration of the
  default scenarios, a progress line per set; Ctrl-C keeps the sets already written.
* ``check DIR... [--rebuild]`` -- re-walk and re-probe every recorded address (with
  ``--rebuild``, also build each set again and compare the files byte for byte); exit 1 on any
  difference, 2 on a corrupt set, 0 otherwise.  A DIR is a set or a folder of sets.
* ``export DIR --format raw|lime|elf|libaddrxlat --out FILE`` -- the set for other tools: a flat
  raw physical image (sparse; ``--raw FILE`` is short for ``--format raw --out FILE``), LiME, an
  ELF core file, or a libaddrxlat test script (docs/fixtures.md, "Exports").
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
    from emu.machines.oracles import oracle_choices

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
    b.add_argument("--oracle", default="unicorn", choices=oracle_choices(),
                   help="the emulator whose MMU answers, recorded in each set (default unicorn; qemu; all: "
                        "every one installed here, each oracle's sets in DIR/<oracle>/; docs/fixtures.md)")
    b.add_argument("--spec", action="append", default=[], type=Path, metavar="FILE",
                   help="a set of your own hierarchy instead of the default scenarios: a spec file "
                        "(docs/hierarchy.md), named after the file (repeatable)")
    b.set_defaults(func=run_build)

    c = fsub.add_parser("check", help="re-walk and re-probe fixture sets; exit 1 on any difference")
    c.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a fixture set, or a folder of sets")
    c.add_argument("--json", action="store_true", help="print JSON instead of text")
    c.add_argument("--rebuild", action="store_true",
                   help="also build each set again and name every file that is not byte for byte the same")
    c.set_defaults(func=run_check)

    e = fsub.add_parser("export", help="write a set for other tools: raw, LiME, ELF core, libaddrxlat test")
    e.add_argument("dir", type=Path, metavar="DIR", help="the fixture set")
    dest = e.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", type=Path, metavar="FILE", help="the file to write")
    dest.add_argument("--raw", type=Path, metavar="FILE", help="short for --format raw --out FILE")
    e.add_argument("--format", default="raw", choices=("raw", "lime", "elf", "libaddrxlat"),
                   help="raw: flat physical image; lime: LiME; elf: ELF core with a FOLIOWALK note; "
                        "libaddrxlat: a tests/addrxlat-* style script (default raw)")
    e.set_defaults(func=run_export)


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def run_build(args: argparse.Namespace) -> int:
    from emu.cli import output_dir
    from emu.cli.verify import all_oracles, oracle_configs, selected_configs
    from emu.fixtures import build_fixture_sets
    from emu.machines import oracles

    if args.spec:
        if args.oracle != "unicorn":
            from emu.cli import UsageError

            raise UsageError("fixtures build: --spec builds on the unicorn oracle only (so far)")
        return _build_specs(args)
    keys = selected_configs(args.arch, args.config)
    chosen = bool(args.arch or args.config)
    if args.oracle == "all":  # each oracle's sets in a folder of its own: the same set names
        targets = []
        for n in all_oracles(keys):
            own = [k for k in keys if oracles.get(n).cannot_check(k) is None]
            for k in keys:
                if k not in own:
                    print(f"note: {n}: {k}: oracle-cannot-check: {oracles.get(n).cannot_check(k)}", file=sys.stderr)
            targets.append((n, own, args.out / n))
    else:
        targets = [(args.oracle, oracle_configs(args.oracle, keys, chosen), args.out)]
    output_dir(args.out, "--out")
    written: list[str] = []

    def progress(line: str) -> None:
        written.append(line)
        print(line, flush=True)

    paths = []
    try:
        for n, own, out in targets:
            if out != args.out:
                output_dir(out, "--out")
            paths += build_fixture_sets(out, own, args.kernel, progress, kconfig=args.kconfig, harness=args.harness,
                                        emulator=n)
    except KeyboardInterrupt:
        from emu.fixtures.build import fixture_jobs

        # arm64: a TTBR0 and a TTBR1 set; x86-64: a kernel-half set
        total = sum(len(fixture_jobs(own)) for _, own, _ in targets)
        print(f"foliowalk: interrupted; {len(written)} of {total} sets written and kept", file=sys.stderr)
        return 130
    on = ", ".join(oracles.display_name(n) for n, _, _ in targets)
    print(f"{len(paths)} fixture set{'s' if len(paths) != 1 else ''} in {args.out} (oracle: {on})")
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
            if args.rebuild:
                from emu.fixtures.replay import rebuild_differences

                diffs += rebuild_differences(path)
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
    from emu.cli import UsageError, output_file
    from emu.fixtures import export_set, load_fixture_set

    if args.raw is not None and args.format != "raw":
        raise UsageError(f"--raw writes the raw format; use --out FILE with --format {args.format}")
    target, option = (args.raw, "--raw") if args.raw is not None else (args.out, "--out")
    output_file(target, option)
    fs = load_fixture_set(args.dir)
    out = export_set(args.dir, target, args.format)
    regs = ", ".join(f"{k}={v:#x}" for k, v in fs.registers.items())
    what = {"raw": "raw, physical address = file offset", "lime": "LiME, one range from physical 0",
            "elf": "ELF core, one PT_LOAD from physical 0, FOLIOWALK note",
            "libaddrxlat": "libaddrxlat test script"}[args.format]
    print(f"{out}: {fs.ram_size:#x} bytes of {fs.config} RAM ({what}); "
          f"root table {fs.root_table:#x}" + (f"; {regs}" if regs else ""))
    return 0
