"""``foliowalk translate``: anyone's page tables, translated by the manual and by the MMU.

    foliowalk translate --config arm64:16k:48 --ttbr0 0x0 --entries FILE VA...
    foliowalk translate --config x86_64:4level --cr3 0x1000 --image mem.raw --offset 0 VA...
    foliowalk translate --config s390x --asce 0x4003 --entries FILE --access write VA...

``--entries FILE``: one ``pa:value`` per line (any Python integer notation; ``#`` starts a
comment).  ``--image RAW``: a raw physical image whose first byte is physical ``--offset``.
Per VA: the manual's answer (``archs.<arch>.translate``) with every entry it read, the MMU's
answer (the Unicorn probe machine, emu.translate.AddressSpace) and the verdict.  Exit status 1 if
any verdict is ``disagree``, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_DISAGREE = 0, 1
_CPU_DEFAULTS = {"x86_64": "archs.x86_64", "arm64": "archs.arm64", "s390x": "archs.s390x"}


def add_parser(sub: Any) -> None:
    """Register ``translate``."""
    from emu.cli import int_arg

    p = sub.add_parser("translate", help="translate your page tables by the manual and by the MMU")
    p.add_argument("--config", required=True, metavar="ARCH:NAME",
                   help="x86_64:4level, x86_64:5level, arm64:<4k|16k|64k>:<va_bits>, s390x (the ASCE decides)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--entries", type=Path, metavar="FILE", help="entries as 'pa:value' lines")
    src.add_argument("--image", type=Path, metavar="RAW", help="a raw physical memory image")
    p.add_argument("--offset", type=int_arg, default=0, help="physical address of the image's first byte")
    p.add_argument("--cr3", type=int_arg, help="x86-64 CR3")
    p.add_argument("--ttbr0", type=int_arg, help="arm64 TTBR0_EL1 (omitted: that half disabled)")
    p.add_argument("--ttbr1", type=int_arg, help="arm64 TTBR1_EL1 (omitted: that half disabled)")
    p.add_argument("--t1sz", type=int_arg, help="arm64 TCR_EL1.T1SZ (default: T0SZ = 64 - va_bits)")
    p.add_argument("--asce", type=int_arg, help="s390x address-space-control element")
    p.add_argument("--access", default="read", choices=("read", "write", "fetch"), help="the access (default read)")
    p.add_argument("--user", action="store_true", help="at user privilege (x86 CPL 3, arm64 EL0)")
    p.add_argument("--cpu", action="append", default=[], metavar="FACT=VALUE",
                   help="a CPU fact (x86: maxphyaddr, nxe, gbpages, wp, smep, smap, ac, pke, pkru; "
                        "arm64: pa_bits, wxn, pan; s390x: edat1, edat2, iep, storage_size); repeatable")
    p.add_argument("--no-mmu", action="store_true", help="the manual's answer only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("va", nargs="+", type=int_arg, metavar="VA", help="virtual addresses")
    p.set_defaults(func=run)


def read_entries(path: Path) -> dict[int, int]:
    """``pa:value`` lines -> {pa: value}; a malformed line is one UsageError naming it."""
    from emu.cli import UsageError

    out: dict[int, int] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        pa_text, sep, value_text = text.partition(":")
        try:
            if not sep:
                raise ValueError
            pa, value = int(pa_text.strip().replace("_", ""), 0), int(value_text.strip().replace("_", ""), 0)
        except ValueError:
            raise UsageError(f"{path}:{n}: expected 'pa:value' (e.g. 0x1000:0x2003), got {line.strip()!r}") from None
        if pa < 0 or pa % 8 or not 0 <= value < 1 << 64:
            raise UsageError(f"{path}:{n}: {line.strip()!r} is not a 64-bit value at an 8-byte aligned address")
        if pa in out and out[pa] != value:
            raise UsageError(f"{path}:{n}: a second value for {pa:#x}")
        out[pa] = value
    if not out:
        raise UsageError(f"{path}: no entries")
    return out


def _cpu(arch: str, facts: list[str]) -> dict[str, Any]:
    import importlib

    from emu.cli import UsageError

    defaults = importlib.import_module(_CPU_DEFAULTS[arch]).TRANSLATE_CPU
    out: dict[str, Any] = {}
    for fact in facts:
        name, sep, text = fact.partition("=")
        if not sep or name not in defaults:
            raise UsageError(f"--cpu {fact!r}: expected FACT=VALUE with FACT one of {', '.join(sorted(defaults))}")
        if isinstance(defaults[name], bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise UsageError(f"--cpu {fact!r}: {name} is a yes/no fact")
            out[name] = text.lower() in ("1", "true", "yes", "on")
        else:
            try:
                out[name] = int(text, 0)
            except ValueError:
                raise UsageError(f"--cpu {fact!r}: {name} is a number") from None
    return out


def _fields(fields: dict[str, int]) -> str:
    return " ".join(f"{k}={v:#x}" if v > 9 else f"{k}={v}" for k, v in fields.items() if v)


def run(args: argparse.Namespace) -> int:
    """Translate every VA; exit 1 if any verdict is ``disagree``."""
    from emu.cli import UsageError
    from emu.translate import AddressSpace, arch_of, mmu_str

    arch = arch_of(args.config)
    roots = {k: getattr(args, k) for k in ("cr3", "ttbr0", "ttbr1", "t1sz", "asce") if getattr(args, k) is not None}
    for va in args.va:
        if not 0 <= va < 1 << 64:
            raise UsageError(f"virtual address {va:#x} is not a 64-bit value")
    if args.entries is not None:
        space = AddressSpace(args.config, entries=read_entries(args.entries), cpu=_cpu(arch, args.cpu), **roots)
    else:
        if args.offset < 0:
            raise UsageError("--offset must be 0 or more")
        space = AddressSpace(args.config, image=args.image.read_bytes(), image_base=args.offset,
                             cpu=_cpu(arch, args.cpu), **roots)
    access = ("user-" if args.user else "") + args.access
    try:
        rows = space.check(list(args.va), access, mmu=not args.no_mmu)
    finally:
        space.close()
    if args.json:
        print(json.dumps({"config": args.config, "roots": {k: hex(v) for k, v in roots.items()},
                          "access": access, "cpu": space.cpu, "rows": [r.to_json() for r in rows]}, indent=1))
    else:
        print(f"== {args.config}  {' '.join(f'{k} {v:#x}' for k, v in roots.items())}  {access}")
        for r in rows:
            print(f"{r.va:#018x}")
            print(f"  manual:  {r.manual}")
            for e in r.manual.trace:
                print(f"           {e.level:>13} @{e.pa:#x} = {e.value:#018x}  {e.format}: {_fields(e.fields)}")
            if r.mmu is not None:
                print(f"  MMU:     {mmu_str(r.mmu)}")
            print(f"  verdict: {r.verdict}")
    return EXIT_DISAGREE if any(r.verdict.startswith("disagree") for r in rows) else EXIT_OK
