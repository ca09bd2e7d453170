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
from emu.machines.base import ProbeError
from emu.verify import VERDICT_CLASSES, Report, Row, mmu_summary

#: every configuration name, for the help texts
CONFIG_NAMES = ", ".join(archs.all_config_keys())


def add_parser(sub: Any) -> None:
    from emu.cli import int_arg
    from emu.machines.oracles import oracle_choices

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
    p.add_argument("--oracle", default=None, choices=oracle_choices(),
                   help="the emulator whose MMU answers: unicorn (default, in-process; with --fixture: the "
                        "oracle that built each set), qemu (QEMU 7.2 system emulation: x86-64, arm64, s390x), "
                        "bochs (Bochs 2.7: x86-64 4-level), or all: every one installed here, each row with "
                        "every oracle's answer (docs/oracles.md)")
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


def oracle_configs(oracle: str, keys: list[str], chosen: bool, named: list[str] | None = None) -> list[str]:
    """The configurations ``oracle`` (one name of :data:`emu.machines.oracles.ORACLES`) can check,
    after checking that its emulator is installed (one line, exit 2, if not).  A configuration of
    an architecture it has no machine for is refused if ``chosen`` (an architecture or
    configuration was named), else left out with a note on stderr; one its machine cannot run
    (the registry's ``config_problem``) is refused if in ``named``, else left out with a note."""
    from emu.cli import UsageError
    from emu.machines import oracles

    kind = oracles.get(oracle)
    no_machine = {k: why for k in keys if archs.get_config(k).arch not in kind.archs()
                  and (why := kind.cannot_check(k)) is not None}
    if no_machine and chosen:
        raise UsageError(next(iter(no_machine.values())))
    keys = [k for k in keys if k not in no_machine]
    cannot_run = {k: why for k in keys if (why := kind.config_problem(k)) is not None}
    for k in named or []:
        if k in cannot_run:
            raise UsageError(f"the {oracle} oracle cannot run {k}: {cannot_run[k]}")
    problem = oracles.unavailable_reason(oracle, keys)
    if problem:
        raise UsageError(f"--oracle {oracle}: {problem}")
    refused = {**no_machine, **cannot_run}
    for why in dict.fromkeys(refused.values()):  # one note per reason, naming its configurations
        print(f"note: --oracle {oracle} leaves out {', '.join(k for k, w in refused.items() if w == why)}: {why}",
              file=sys.stderr)
    return [k for k in keys if k not in cannot_run]


def all_oracles(keys: list[str]) -> list[str]:
    """``--oracle all``: every registered oracle available here (in registry order); each one
    that is not is named in a note on stderr.  None available: one line, exit 2."""
    from emu.cli import UsageError
    from emu.machines import oracles

    names, notes = oracles.available(keys)
    for n in notes:
        print(f"note: --oracle all: left out {n}", file=sys.stderr)
    if not names:
        raise UsageError("--oracle all: no oracle can run here")
    return names


def run(args: argparse.Namespace) -> int:
    if args.spec is not None:  # a user's own hierarchy (docs/hierarchy.md), run in a child process
        from emu.cli import UsageError
        from emu.cli.fuzz import replay

        if getattr(args, "oracle", None) not in (None, "unicorn"):
            raise UsageError("verify: --spec runs on the unicorn oracle only (so far)")
        if args.fixture or args.addr or args.kernel or args.arch or args.config or args.kconfig:
            raise UsageError("verify: --spec names its own configuration, kernel and addresses; "
                             "no --fixture, --addr, --kernel, --arch, --config or --kernel-config")
        return replay(args.spec, as_json=args.json, harness=args.harness)
    from emu.cli import UsageError
    from emu.machines import oracles

    if args.fixture:  # the recorded cases of fixture sets (emu/fixtures/), re-walked and re-probed
        from emu.fixtures import find_sets, load_fixture_set, replay_report

        if args.addr or args.kernel:
            raise UsageError("verify: --fixture replays the recorded cases; no --addr or --kernel")
        loaded = [(p, load_fixture_set(p)) for p in find_sets(args.fixture)]
        sets = [(p, fs.config) for p, fs in loaded]
        keys = list(dict.fromkeys(k for _, k in sets))
        if args.oracle is None:  # each set on the oracle that built it, as `fixtures check` replays it
            for n in dict.fromkeys(fs.emulator for _, fs in loaded):
                problem = oracles.unavailable_reason(n, [fs.config for _, fs in loaded if fs.emulator == n])
                if problem:
                    raise UsageError(f"verify --fixture: a set was built on {n}: {problem}")
            report = replay_report([p for p, _ in loaded])
            return _print(args, report, "unicorn", [], {}, {})
    else:
        keys = selected_configs(args.arch, args.config)
    args.oracle = args.oracle or "unicorn"
    if args.oracle == "all":
        names = all_oracles(keys)
        cannot = {n: {k: why for k in keys if (why := oracles.get(n).cannot_check(k)) is not None} for n in names}
        own = {n: [k for k in keys if k not in cannot[n]] for n in names}
    else:  # a set's configuration is chosen: refused if the oracle cannot check it
        names, cannot = [args.oracle], {}
        named = keys if args.fixture else [archs.get_config(c).key for c in args.config]
        own = {args.oracle: oracle_configs(args.oracle, keys, bool(args.arch or args.config or args.fixture), named)}
    if args.fixture:
        reports = {n: replay_report([p for p, k in sets if k in own[n]], emulator=n) for n in names if own[n]}
    elif args.addr:
        reports = {n: verify_addresses(own[n], args.addr, args.kernel, harness=args.harness, emulator=n)
                   for n in names if own[n]}
    else:
        from emu.verify import verify_configs

        reports = {n: verify_configs(own[n], args.kernel, kconfig=args.kconfig, harness=args.harness, emulator=n)
                   for n in names if own[n]}
    if args.oracle == "all":
        from emu.verify import merge_oracles

        report = merge_oracles(keys, reports, cannot, names)
    else:
        report = reports[args.oracle]
    return _print(args, report, args.oracle, names, reports, cannot)


def _print(args: argparse.Namespace, report: Report, oracle: str, names: list[str], reports: dict[str, Report],
           cannot: dict[str, dict[str, str]]) -> int:
    """Print ``report`` as verify's table (with ``all``: each oracle's summary and what it could
    not check) or JSON; the exit status."""
    from emu.machines import oracles

    if args.json:
        out = report_json(report)
        if oracle != "unicorn":
            out["oracle"] = oracle
        if oracle == "all":
            out["oracles"] = {n: {"emulator": oracles.display_name(n), "ran": n in reports,
                                  "summary": {c: reports[n].counts().get(c, 0) for c in VERDICT_CLASSES}
                                  if n in reports else None,
                                  "cannot_check": cannot.get(n, {})} for n in names}
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(report)
        if oracle == "all":
            for n in names:
                counts = reports[n].counts() if n in reports else None
                got = (", ".join(f"{c} {counts.get(c, 0)}" for c in VERDICT_CLASSES) if counts is not None
                       else "did not run")
                print(f"oracle {n} ({oracles.display_name(n)}): {got}")
                for k, why in cannot.get(n, {}).items():
                    print(f"oracle {n}: {k}: oracle-cannot-check: {why}")
            print("each oracle probes its own copy of every scenario (its machine takes other frames of guest RAM, "
                  "so physical addresses differ between oracles; the table shows the first one's walk); "
                  f"--json has every oracle's own row; deviation rows name the emulators: [{', '.join(names)}]")
        elif oracle != "unicorn":
            print(f"oracle: {oracles.display_name(oracle)} system emulation (docs/oracles.md); "
                  f"deviation rows name the emulator: [{oracle}]")
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


def _oracle_cell(row: Row) -> str:
    """One oracle's part of a combined row: its MMU answer, or why it could not check."""
    if row.verdict_class == "oracle-cannot-check" and isinstance(row.mmu, ProbeError):
        return "cannot check"
    return mmu_summary(row.mmu)


def print_table(report: Report, out: Any = None) -> None:
    out = out or sys.stdout
    config = case = None
    # the compiled kernel's folio_walk_start() (emu/kernel/walkview.py), where it ran: "=" when
    # it gives the model's answer exactly (the judge compared them), else its own answer
    with_kernel = any(r.kernel is not None for r in report.rows)
    kcol = f"{'kernel':<30} " if with_kernel else ""
    # --oracle all: one MMU column per oracle (emu.verify.merge_oracles)
    names = list(report.rows[0].oracles or {}) if report.rows else []
    mcol = "".join(f"{'MMU ' + n:<28} " for n in names) if names else f"{'MMU':<28} "
    for row in report.rows:
        if row.config != config:
            config = row.config
            print(f"\n== {config}", file=out)
            print(
                f"  {'flags':<25} {'walk (folio_walk_start)':<44} {'entry':<38} {mcol}{kcol}verdict",
                file=out,
            )
        if (row.case, row.addr) != case:
            case = (row.case, row.addr)
            print(f" {row.addr:#018x}  {row.case}", file=out)
        from emu.mm.pagewalk import flags_str

        kernel = f"{_kernel(row):<30} " if with_kernel else ""
        if row.oracles is not None:
            mmu = "".join(f"{_oracle_cell(r):<28} " for r in row.oracles.values())
        else:
            mmu = f"{mmu_summary(row.mmu):<28} "
        print(
            f"  {flags_str(row.walk.flags):<25} {row.walk.summary():<44} {_entry(row):<38} "
            f"{mmu}{kernel}{row.verdict}",
            file=out,
        )
    counts = report.counts()
    print("\nsummary: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in VERDICT_CLASSES)
          + f"  ({len(report.rows)} rows, {report.seconds:.2f} s)", file=out)
    for o in report.omitted:
        print(f"omitted: {o}", file=out)
    for k in report.kernel:
        print(f"kernel: {k}", file=out)
