"""``foliowalk explain``: every view of one raw entry (or of a whole path of entries)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import archs
from archs.base import LINUX_LEVELS
from archs.linux import KERNELS

EPILOG = """examples:
  foliowalk explain --config arm64:64k:48 --level pte 0x00e8000000200f43
  foliowalk explain --config x86_64:4level --pmd 0x80000000002000e7 --addr 0x7f0000200000
  foliowalk explain --config x86_64:4level --pud 0x3063 --pmd 0x4063 --pte 0x8000000000065067 --json
"""


def add_parser(sub: Any) -> None:
    from emu.cli import int_arg
    from emu.explain import vma_kinds

    keys = ", ".join(archs.all_config_keys())
    p = sub.add_parser(
        "explain", help="every view of one raw entry: fields, architecture, Linux, kernel, walk and MMU",
        description="Decode raw page-table entries by the manual's field names, say what the "
        "architecture does with them, answer every Linux function of their level (model, and the "
        "compiled kernel where `foliowalk kernel build` made a harness), then place them on one path "
        "of a minimal hierarchy, walk it with folio_walk_start(), probe it with the MMU and judge "
        "each row as verify does.  Exit 1 if a row is disagree, 2 on bad input.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="ARCH:NAME", help=f"the configuration: {keys}")
    p.add_argument("--level", choices=LINUX_LEVELS, help="the Linux level of VALUE")
    p.add_argument("value", nargs="?", type=int_arg, metavar="VALUE", help="the entry (with --level)")
    for lv in LINUX_LEVELS:
        p.add_argument(f"--{lv}", type=int_arg, metavar="VALUE", help=f"a {lv} entry on the path (any of them)")
    p.add_argument("--addr", type=int_arg, metavar="VA",
                   help="the virtual address to walk (default: one with index 1 in every table below the top)")
    p.add_argument("--vma", default="anon", choices=list(vma_kinds()), help="the VMA's flags (default anon)")
    p.add_argument("--pgoff", type=int_arg, default=0, metavar="N", help="the VMA's vm_pgoff (pfnmap COW)")
    p.add_argument("--kernel", default=None, choices=KERNELS, help="folio_walk_start() version (default v6.12)")
    p.add_argument("--harness", default="auto", choices=("auto", "on", "off"),
                   help="the compiled kernel's answers: auto = where built, on = build if needed, off = model only")
    p.add_argument("--no-walk", action="store_true", help="only the entry views: no hierarchy, walk or MMU")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--spec-out", type=Path, default=None, metavar="FILE",
                   help="also save the minimal hierarchy as a spec (docs/hierarchy.md) for verify --spec, "
                        "fixtures build --spec")
    p.set_defaults(func=run)


def entries_of(args: argparse.Namespace) -> dict[str, int]:
    from emu.cli import UsageError

    entries = {lv: getattr(args, lv) for lv in LINUX_LEVELS if getattr(args, lv) is not None}
    if args.level is not None or args.value is not None:
        if args.level is None or args.value is None:
            raise UsageError("--level LEVEL and VALUE go together (e.g. --level pte 0x8000000000065067)")
        if args.level in entries:
            raise UsageError(f"the {args.level} entry is given twice (--level {args.level} and --{args.level})")
        entries[args.level] = args.value
    if not entries:
        raise UsageError("no entry to explain: give --level LEVEL VALUE, or --pgd/--p4d/--pud/--pmd/--pte VALUE")
    return entries


def run(args: argparse.Namespace) -> int:
    from archs.linux import DEFAULT_KERNEL
    from emu.explain import explain

    if args.spec_out is not None:
        from emu.cli import UsageError, output_file

        if args.no_walk:
            raise UsageError("explain: --spec-out saves the hierarchy the walk uses; not with --no-walk")
        output_file(args.spec_out, "--spec-out")
    ex = explain(args.config, entries_of(args), addr=args.addr, kernel=args.kernel or DEFAULT_KERNEL,
                 vma=args.vma, pgoff=args.pgoff, harness=args.harness, walk=not args.no_walk)
    if args.spec_out is not None:
        from emu.fuzz.worker import atomic_write

        atomic_write(args.spec_out, (json.dumps(ex.hierarchy.to_json(), indent=1) + "\n").encode())
    if args.json:
        json.dump(ex.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_explanation(ex)
    return 0 if ex.ok else 1


def _wrap(prefix: str, items: list[str], width: int = 110) -> list[str]:
    lines, cur = [], prefix
    for it in items:
        if len(cur) + len(it) + 1 > width and cur.strip() != prefix.strip():
            lines.append(cur.rstrip())
            cur = " " * len(prefix)
        cur += it + " "
    lines.append(cur.rstrip())
    return lines


def _num(v: Any) -> str:
    return f"{v:#x}" if isinstance(v, int) and not isinstance(v, bool) and v > 9 else str(v)


def print_explanation(ex: Any, out: Any = None) -> None:
    """The text form of an :class:`emu.explain.Explanation`."""
    out = out or sys.stdout
    for v in ex.views:
        print(f"== {ex.config} {v.level} ({v.hw_level}) = {v.value:#018x}", file=out)
        fields = dict(v.fields)
        fmt = fields.pop("format", None)
        head = f"  fields{f' ({fmt})' if fmt else ''}: "
        for line in _wrap(head, [f"{k}={_num(x)}" for k, x in fields.items()]):
            print(line, file=out)
        a = v.arch
        print(f"  architecture: {a['verdict']}: {a['why']}"
              + (f" (fault at {a['fault_level']})" if a.get("fault_level") else ""), file=out)
        if a.get("as_leaf"):
            print(f"    as a leaf: {a['as_leaf']}", file=out)
        if a.get("hw_uses"):
            print(f"    the MMU translates through it although Linux does not: {a['hw_uses']}", file=out)
        if a.get("hw_absent"):
            print(f"    Linux sees a present leaf the MMU refuses: {a['hw_absent']}", file=out)
        for line in _wrap("  linux (model): ", [f"{k}={_num(x)}" for k, x in v.linux.items()]):
            print(line, file=out)
        if v.swap is not None:
            print("  swap entry: " + " ".join(f"{k}={_num(x)}" for k, x in v.swap.items()), file=out)
        if v.kernel is None:
            print("  kernel (compiled): not asked (no kernel harness; see the note below)", file=out)
        elif v.kernel_differs:
            for d in v.kernel_differs:
                print(f"  kernel (compiled) DIFFERS: {d}", file=out)
        else:
            absent = [k for k, x in v.kernel.items() if x is None]
            print(f"  kernel (compiled): the same answer to all {len(v.kernel) - len(absent)} functions"
                  + (f" ({', '.join(absent)} not defined by this kernel)" if absent else ""), file=out)
    if ex.rows:
        vma = ex.vma
        print(f"\n== hierarchy for {ex.addr:#x}: {vma['name']} VMA {vma['start']:#x}..{vma['end']:#x} "
              f"({vma['flags_str']}, vm_pgoff {vma['pgoff']:#x})", file=out)
        for p in ex.placed:
            print(f"  {p.level:<4} {p.hw_level:<14} @{p.pa:#x} = {p.value:#018x}  {p.what}", file=out)
        from emu.cli.verify import print_table
        from emu.verify import Report

        print_table(Report(ex.rows, [], {}, ex.seconds, []), out)
    for n in ex.notes:
        print(f"note: {n}", file=out)
