"""``foliowalk verify``: walk and MMU on the default scenarios (or chosen addresses), with verdicts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import archs
from archs.kconfig import DEFAULT_PROFILE, PROFILES
from archs.linux import KERNELS
from emu.errors import AddressError
from emu.verify import VERDICT_CLASSES, Report, Row, mmu_summary

#: every configuration name, for the help texts
CONFIG_NAMES = ", ".join(archs.all_config_keys())


def add_parser(sub: Any) -> None:
    from emu.cli import int_arg

    p = sub.add_parser("verify", help="walk and probe the default scenarios; exit 1 on any disagree")
    p.add_argument("--arch", action="append", default=[], help="architecture (repeatable); default: all")
    p.add_argument(
        "--config", action="append", default=[], metavar="ARCH:NAME",
        help=f"one configuration (repeatable); default: all of --arch. One of: {CONFIG_NAMES}",
    )
    p.add_argument("--kernel", default=None, choices=KERNELS, help="folio_walk_start() version (default v6.12)")
    p.add_argument(
        "--addr", action="append", default=[], type=int_arg, metavar="VA",
        help="walk and probe this address in the default scenario instead of its cases (repeatable)",
    )
    p.add_argument("--kernel-config", dest="kconfig", default=None, choices=sorted(PROFILES),
                   help=f"the Kconfig profile the model follows (default {DEFAULT_PROFILE}; archs/kconfig.py)")
    p.add_argument("--harness", default="auto", choices=("auto", "on", "off"),
                   help="check every entry against the compiled kernel: auto = when a harness is built "
                        "(foliowalk kernel build), on = build it if needed, off = model only")
    p.add_argument("--oracle", default="unicorn", choices=("unicorn", "qemu"),
                   help="the emulator whose MMU answers: unicorn (default, in-process) or qemu (QEMU 7.2 system "
                        "emulation, x86-64, arm64, s390x; docs/oracles.md)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--fixture", action="append", default=[], type=Path, metavar="DIR",
        help="replay a fixture set (or a folder of sets) instead of the default scenarios (repeatable)",
    )
    p.add_argument(
        "--spec", type=Path, default=None, metavar="FILE",
        help="walk and probe your own hierarchy: a spec file (docs/hierarchy.md; the fuzzer's *.hierarchy.json)",
    )
    p.set_defaults(func=run)


def selected_configs(arches: list[str], configs: list[str]) -> list[str]:
    """Configuration keys from ``--arch``/``--config`` (unknown names raise UnknownConfig)."""
    keys = [archs.get_config(c).key for c in configs]
    if arches or not keys:
        keys += archs.all_config_keys([archs.ALIASES.get(a, a) for a in arches] or None)
    return list(dict.fromkeys(keys))


def oracle_configs(oracle: str, keys: list[str], chosen: bool) -> list[str]:
    """The configurations ``oracle`` can check: all of ``keys`` for Unicorn; for QEMU those of
    the architectures it has a machine for (others refused if ``chosen`` by name, else left out
    with a note on stderr), after checking that QEMU is installed (one line, exit 2, if not)."""
    if oracle == "unicorn":
        return keys
    from emu.cli import UsageError
    from emu.machines.qemu import missing
    from emu.machines.qemu.oracle import QEMU_ORACLES

    other = sorted({archs.get_config(k).arch for k in keys} - set(QEMU_ORACLES))
    if other and chosen:
        raise UsageError(f"the qemu oracle has no machine for {', '.join(other)} yet "
                         f"(it covers {', '.join(QEMU_ORACLES)})")
    keys = [k for k in keys if archs.get_config(k).arch in QEMU_ORACLES]
    if other:
        print(f"note: --oracle qemu checks {', '.join(QEMU_ORACLES)} only; left out: {', '.join(other)}",
              file=sys.stderr)
    for arch in sorted({archs.get_config(k).arch for k in keys}):
        problem = missing(arch)
        if problem:
            raise UsageError(f"--oracle qemu: {problem}")
    return keys


def run(args: argparse.Namespace) -> int:
    if args.spec is not None:  # a user's own hierarchy (docs/hierarchy.md), run in a child process
        from emu.cli import UsageError
        from emu.cli.fuzz import replay

        if getattr(args, "oracle", "unicorn") != "unicorn":
            raise UsageError("verify: --spec runs on the unicorn oracle only (so far)")
        if args.fixture or args.addr or args.kernel or args.arch or args.config or args.kconfig:
            raise UsageError("verify: --spec names its own configuration, kernel and addresses; "
                             "no --fixture, --addr, --kernel, --arch, --config or --kernel-config")
        return replay(args.spec, as_json=args.json, harness=args.harness)
    keys = selected_configs(args.arch, args.config)
    keys = oracle_configs(args.oracle, keys, bool(args.arch or args.config))
    if args.fixture and args.oracle != "unicorn":
        from emu.cli import UsageError

        raise UsageError("verify: --fixture replays on the unicorn oracle only (so far)")
    if args.fixture:  # the recorded cases of fixture sets (emu/fixtures/), re-walked and re-probed
        from emu.cli import UsageError
        from emu.fixtures import replay_report

        if args.addr or args.kernel:
            raise UsageError("verify: --fixture replays the recorded cases; no --addr or --kernel")
        report = replay_report(args.fixture)
    elif args.addr:
        report = verify_addresses(keys, args.addr, args.kernel, harness=args.harness, emulator=args.oracle)
    else:
        from emu.verify import verify_configs

        report = verify_configs(keys, args.kernel, kconfig=args.kconfig, harness=args.harness,
                                emulator=args.oracle)
    if args.json:
        out = report_json(report)
        if args.oracle != "unicorn":
            out["oracle"] = args.oracle
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(report)
        if args.oracle != "unicorn":
            from emu.machines.placement import EMULATOR_NAMES

            print(f"oracle: {EMULATOR_NAMES[args.oracle]} system emulation (docs/oracles.md); "
                  "deviation rows name the emulator: [qemu]")
    return 0 if report.ok else 1


def verify_addresses(keys: list[str], addrs: list[int], kernel: str | None, *, harness: str = "off",
                     emulator: str = "unicorn") -> Report:
    """Rows for user-chosen addresses, each walked in the VMA of the default scenario (of either
    half, where the configuration has two) that holds it; with ``harness`` (auto/on), the
    compiled folio_walk_start() walks them too, where it is built."""
    import time

    from emu.kernel.walkview import walk_build_for
    from emu.mm.scenarios import Case, build_default, halves
    from emu.verify import verify_scenario

    start = time.perf_counter()
    rows: list[Row] = []
    regs = {}
    notes: list[str] = []
    for key in keys:
        wbuild, wnote = walk_build_for(key, None, harness, model_kernel=kernel)
        if harness != "off":
            notes.append(f"{key}: {wnote}")
        ops = archs.get_ops(key, kernel) if kernel else archs.get_ops(key)
        for va in addrs:
            if not ops.va_valid(va):
                raise AddressError(f"{va:#x} is not a canonical virtual address for {key}")
        placed: set[int] = set()
        spans: list[str] = []
        for half in halves(ops):
            sc = build_default(ops, half=half, emulator=emulator)
            try:
                sc.cases = []
                for va in addrs:
                    vma = sc.mm.find_vma(va)
                    if vma is not None:
                        sc.cases.append(Case(f"user address in {vma.name}", va, vma))
                        placed.add(va)
                spans += [f"{v.name} {v.vm_start:#x}..{v.vm_end:#x}" for v in sc.mm.vmas]
                if sc.cases:
                    rows += verify_scenario(sc, walk_build=wbuild)
                    regs[sc.config] = sc.oracle.registers()
            finally:
                sc.close()
        for va in addrs:
            if va not in placed:
                raise AddressError(f"{va:#x} is outside every VMA of the {key} default scenario ({', '.join(spans)})")
    return Report(rows, [], regs, time.perf_counter() - start, notes)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "format": "foliowalk-verify/1",
        "rows": [r.to_json() for r in report.rows],
        "summary": {c: report.counts().get(c, 0) for c in VERDICT_CLASSES},
        "omitted": report.omitted,
        "registers": report.registers,
        "kernel": report.kernel,
        "seconds": round(report.seconds, 3),
    }


def _entry(row: Row) -> str:
    w = row.walk
    if w.entry_pa is None or w.entry is None:
        if w.trace:
            lv, pa, val = w.trace[-1]
            return f"{lv}@{pa:#x}={val:#018x}"
        return "-"
    return f"{(w.level or '?').lower()}@{w.entry_pa:#x}={w.entry:#018x}"


def _kernel(row: Row) -> str:
    """The kernel column: ``= <its answer>`` where the judge found it equal to the model's
    (every compared field), ``<its answer>`` where not, ``-`` where the kernel walk did not run."""
    if row.kernel is None:
        return "-"
    differs = "model-vs-kernel folio_walk_start" in row.verdict
    return ("" if differs else "= ") + row.kernel.summary()


def print_table(report: Report, out: Any = None) -> None:
    out = out or sys.stdout
    config = case = None
    # the compiled kernel's folio_walk_start() (emu/kernel/walkview.py), where it ran: "=" when
    # it gives the model's answer exactly (the judge compared them), else its own answer
    with_kernel = any(r.kernel is not None for r in report.rows)
    kcol = f"{'kernel':<30} " if with_kernel else ""
    for row in report.rows:
        if row.config != config:
            config = row.config
            print(f"\n== {config}", file=out)
            print(
                f"  {'flags':<25} {'walk (folio_walk_start)':<44} {'entry':<38} {'MMU':<28} {kcol}verdict",
                file=out,
            )
        if (row.case, row.addr) != case:
            case = (row.case, row.addr)
            print(f" {row.addr:#018x}  {row.case}", file=out)
        from emu.mm.pagewalk import flags_str

        kernel = f"{_kernel(row):<30} " if with_kernel else ""
        print(
            f"  {flags_str(row.walk.flags):<25} {row.walk.summary():<44} {_entry(row):<38} "
            f"{mmu_summary(row.mmu):<28} {kernel}{row.verdict}",
            file=out,
        )
    counts = report.counts()
    print("\nsummary: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in VERDICT_CLASSES)
          + f"  ({len(report.rows)} rows, {report.seconds:.2f} s)", file=out)
    for o in report.omitted:
        print(f"omitted: {o}", file=out)
    for k in report.kernel:
        print(f"kernel: {k}", file=out)
