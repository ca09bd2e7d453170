"""``foliowalk fuzz``: random entry encodings, walked and probed, disagreements shrunk and saved.

    foliowalk fuzz --arch x86_64 --seconds 60 --seed 7 --out findings/ [--jobs N]

A live progress line goes to stderr; Ctrl-C stops the campaign and keeps what it found.  The
report (stdout) gives the rate, the verdicts by class and by the level of the deciding entry, and
every finding with the fixture set that replays it (``foliowalk fixtures check DIR``).
``--replay FILE`` re-runs a saved hierarchy (``*.hierarchy.json``, e.g. a crash) in a separate
process and prints its rows.  Exit status: 1 if a ``disagree``, a crash or a hang was found,
130 if interrupted, else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import archs
from archs.linux import DEFAULT_KERNEL, KERNELS
from emu.errors import FoliowalkError

#: ``--jobs`` beyond this many worker processes per CPU (and beyond MIN_JOBS_LIMIT) is refused:
#: each worker holds its own emulators and guest RAM.
MAX_JOBS_PER_CPU = 4
MIN_JOBS_LIMIT = 8
#: ``--seconds`` beyond this (30 days) is refused: a longer campaign is a typo (1e308), and should
#: be several campaigns into the same --out folder anyway.
MAX_SECONDS = 30 * 24 * 3600
#: ``--hierarchies`` beyond 2**32 is refused (days of work per core even at full speed; and the
#: index is part of every saved finding's name).
MAX_HIERARCHIES = 1 << 32
#: ``--seed`` is a 64-bit number (it is part of every saved finding's name).
MAX_SEED = (1 << 64) - 1


#: every configuration name, for the help texts
CONFIG_NAMES = ", ".join(archs.all_config_keys())


def add_parser(sub: Any) -> None:
    from emu.cli import int_arg
    from emu.machines.oracles import oracle_choices

    p = sub.add_parser("fuzz", help="fuzz entry encodings: walker vs MMU; shrink and save disagreements")
    p.add_argument("--arch", action="append", default=[], help="architecture (repeatable); default: x86_64")
    p.add_argument(
        "--config", action="append", default=[], metavar="ARCH:NAME",
        help=f"one configuration (repeatable); default: all of --arch. One of: {CONFIG_NAMES}",
    )
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default 60 unless "
                   "--hierarchies is given)")
    p.add_argument("--hierarchies", type=int_arg, default=None, metavar="N",
                   help="stop after hierarchies 0..N-1 (a fixed, reproducible set of cases)")
    p.add_argument("--seed", type=int_arg, default=0, help="campaign seed (default 0)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where findings (fixture sets, hierarchy specs) and campaign.json go")
    p.add_argument("--jobs", type=int_arg, default=1, metavar="N",
                   help="worker processes (default 1; 0 runs in this process, without crash isolation)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786) instead of "
                        "--jobs local processes; needs pip install 'foliowalk[cluster]' here and on the workers")
    p.add_argument("--kernel", default=DEFAULT_KERNEL, choices=KERNELS, help="folio_walk_start() version")
    p.add_argument("--mix", choices=("default", "bench"), default="default",
                   help="entry mix: default (hostile), bench (mostly valid, ~10%% faults)")
    p.add_argument("--harness", default="auto", choices=("auto", "on", "off"),
                   help="also ask the compiled kernel about every entry walked: auto = when a harness is "
                        "built (foliowalk kernel build), on = build it, off = model only")
    p.add_argument("--oracle", default="unicorn", choices=oracle_choices(),
                   help="the emulator whose MMU answers (default unicorn; qemu: x86-64, arm64, s390x; bochs: x86-64 "
                        "4-level; all: one "
                        "campaign per oracle installed here, the same cases, findings in DIR/<oracle>/; "
                        "docs/oracles.md)")
    p.add_argument("--no-shrink", action="store_true", help="save findings as found, without shrinking")
    p.add_argument("--max-findings", type=int_arg, default=50, metavar="N",
                   help="distinct findings to shrink and save (default 50); all are counted")
    p.add_argument("--json", action="store_true", help="print the campaign summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE",
                   help="re-run a saved *.hierarchy.json in a separate process and print its rows")
    p.set_defaults(func=run)


def _configs(args: argparse.Namespace) -> list[str]:
    from emu.cli.verify import selected_configs

    if not args.arch and not args.config:
        return selected_configs(["x86_64"], [])
    return selected_configs(args.arch, args.config)


def run(args: argparse.Namespace) -> int:
    from emu.cli import UsageError

    if args.replay is not None:
        return replay(args.replay, as_json=args.json, harness=args.harness)
    cpus = os.cpu_count() or 1
    if args.jobs < 0:
        raise UsageError("fuzz: --jobs must be 0 or more")
    if args.jobs > max(MAX_JOBS_PER_CPU * cpus, MIN_JOBS_LIMIT):
        raise UsageError(f"fuzz: --jobs {args.jobs} is more than {MAX_JOBS_PER_CPU} worker processes "
                         f"per CPU ({cpus} CPUs here)")
    if args.scheduler is not None and args.jobs != 1:
        raise UsageError("fuzz: --jobs runs local processes; with --scheduler the cluster's workers run the campaign")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise UsageError(f"fuzz: --seconds must be a positive number of seconds, not {args.seconds}")
    if args.seconds is not None and args.seconds > MAX_SECONDS:
        raise UsageError(f"fuzz: --seconds {args.seconds:g} is more than {MAX_SECONDS} (30 days)")
    if args.hierarchies is not None and args.hierarchies <= 0:
        raise UsageError("fuzz: --hierarchies must be positive")
    if args.hierarchies is not None and args.hierarchies > MAX_HIERARCHIES:
        raise UsageError(f"fuzz: --hierarchies {args.hierarchies} is more than {MAX_HIERARCHIES}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"fuzz: --seed must be 0..{MAX_SEED} (a 64-bit number), not {args.seed}")
    if args.max_findings < 0:
        raise UsageError("fuzz: --max-findings must be 0 or more")
    if args.out is not None:
        from emu.cli import output_dir

        output_dir(args.out, "--out")
    seconds = args.seconds if args.seconds is not None or args.hierarchies is not None else 60.0
    from emu.cli.verify import all_oracles, oracle_configs

    if args.oracle == "all":
        return _run_all(args, all_oracles(_configs(args)))
    named = [archs.get_config(c).key for c in args.config]
    return _campaign(args, args.oracle, oracle_configs(args.oracle, _configs(args), True, named), seconds, args.out)


def _run_all(args: argparse.Namespace, names: list[str]) -> int:
    """``--oracle all``: one campaign per oracle (the same seed, so the same hierarchies, over the
    configurations each can check: others named in a note), one after the other; each report as
    for that oracle alone (findings in ``--out``/<oracle>/), then a line of every oracle's rate."""
    from emu.machines import oracles

    seconds = args.seconds if args.seconds is not None or args.hierarchies is not None else 60.0
    codes = []
    rates = []
    summaries: dict[str, Any] = {}
    for n in names:
        keys = [k for k in _configs(args) if oracles.get(n).cannot_check(k) is None]
        for k in _configs(args):
            if k not in keys:
                print(f"note: {n}: {k}: oracle-cannot-check: {oracles.get(n).cannot_check(k)}", file=sys.stderr)
        if not keys:
            continue
        if not args.json:
            print(f"== oracle {n} ({oracles.display_name(n)})")
        out = args.out / n if args.out is not None else None
        if out is not None:
            from emu.cli import output_dir

            output_dir(out, "--out")
        rc, res = _campaign(args, n, keys, seconds, out, summaries)
        codes.append(rc)
        rates.append(f"{n} {res.cases_per_s:,.0f} cases/s ({res.stats.cases:,} cases, {res.wall_s:.1f} s)")
        if res.interrupted:
            break
    if args.json:
        json.dump({"oracles": summaries}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print("rates: " + "; ".join(rates))
    return 1 if 1 in codes else 130 if 130 in codes else 0


def _campaign(args: argparse.Namespace, oracle: str, configs: list[str], seconds: float, out: Path | None,
              summaries: dict[str, Any] | None = None) -> Any:
    """One campaign on ``oracle``; its report printed (or, with ``summaries``, kept there for one
    JSON document).  The exit status; with ``summaries``, (status, result)."""
    from emu.fuzz import CampaignOptions, GenParams, format_report, run_campaign

    opts = CampaignOptions(
        configs=configs,
        seed=args.seed,
        seconds=seconds,
        hierarchies=args.hierarchies,
        jobs=args.jobs,
        out=out,
        kernel=args.kernel,
        params=GenParams.bench() if args.mix == "bench" else GenParams(),
        shrink=not args.no_shrink,
        max_findings=args.max_findings,
        progress=not args.quiet,
        harness=args.harness,
        emulator=oracle,
        scheduler=args.scheduler,
    )
    if args.harness != "off" and not args.quiet:
        # which kernel walks each configuration's rows (built here once, so workers find it cached;
        # with --quiet the workers build it, and stderr holds only errors)
        from emu.kernel.walkview import walk_build_for

        for key in opts.configs:
            print(f"foliowalk fuzz: {key}: {walk_build_for(key, None, args.harness, model_kernel=args.kernel)[1]}",
                  file=sys.stderr)
    res = run_campaign(opts)
    if args.json and summaries is not None:
        summaries[oracle] = res.to_json()
    elif args.json:
        json.dump(res.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(res))
        if out is not None:
            print(f"  summary: {out / 'campaign.json'}")
    rc = 1 if not res.ok else 130 if res.interrupted else 0
    return (rc, res) if summaries is not None else rc


#: How long ``--replay`` waits for its child's rows (a hierarchy within the budget takes seconds;
#: the campaign's hang timeout is the same).
REPLAY_TIMEOUT_S = 120.0


def replay(path: Path, *, as_json: bool = False, timeout_s: float = REPLAY_TIMEOUT_S, harness: str = "off") -> int:
    """Re-run one saved hierarchy (a spec, docs/hierarchy.md) in a child process (a crash there
    does not take us down) and print its rows as ``foliowalk verify`` does (the same table, the
    same ``--json``).

    The file is checked first, in this process (:func:`emu.fuzz.spec.load_hierarchy_file`: a
    regular file within the size limit, strict JSON, the schema, every value in range for its
    configuration): bad input is one line and exit 2, never a death of the child.  The child's
    answer is awaited for at most ``timeout_s`` seconds."""
    import multiprocessing as mp
    import time

    from emu.cli.verify import print_table, report_json
    from emu.fuzz.spec import load_hierarchy_file
    from emu.verify import Report

    h = load_hierarchy_file(path)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_replay_child, args=(child, h, harness, f"spec {path.name}"), daemon=True)
    proc.start()
    child.close()
    rows: Any = None
    timed_out = False
    try:
        if parent.poll(timeout_s):
            rows = parent.recv()
        else:
            timed_out = True
    except EOFError:
        pass
    finally:
        if timed_out:
            proc.kill()
        proc.join(30)
        parent.close()
    if isinstance(rows, tuple):  # ("invalid", why): the hierarchy itself is bad input
        raise FoliowalkError(f"{path}: not a valid hierarchy: {rows[1]}")
    if rows is None:
        from emu.fuzz.pool import exit_text

        why = f"gave no answer in {timeout_s:g} s" if timed_out else f"died: {exit_text(proc.exitcode)}"
        print(f"foliowalk: the replay of {path} {why}", file=sys.stderr)
        return 1
    report = Report(rows, [], {}, time.perf_counter() - t0, [])
    if as_json:
        json.dump({"spec": str(path), **report_json(report)}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print_table(report)
    return 0 if report.ok else 1


def _replay_child(conn: Any, h: Any, harness: str = "off", name: str | None = None) -> None:
    """The child of ``--replay`` / ``verify --spec``: the rows (:class:`emu.verify.Row`), or
    ``("invalid", why)`` when the hierarchy is not one this foliowalk can build (unknown
    configuration, entries outside the fuzzing pool, a bad VMA or address) -- bad input, not a
    crash.  Anything else still kills the child, and is reported as a death."""
    from emu.specs import spec_rows

    try:
        rows = spec_rows(h, harness=harness, name=name)
    except (FoliowalkError, ValueError) as exc:  # archs.UnknownConfig is a ValueError
        conn.send(("invalid", str(exc)))
        conn.close()
        return
    conn.send(rows)
    conn.close()
