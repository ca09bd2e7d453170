"""``foliowalk kernel verify``: a (possibly patched) kernel tree's own ``folio_walk_start()``,
compiled for each configuration and run on the default scenarios and on fuzzed hierarchies,
beside foliowalk's model (v6.12) and the MMU.  Every row where the tree's kernel answers
otherwise than the model is reported with the three answers (issue 13: "test your mm patch on
three architectures").

The tree is the user's (``--tree PATH``, never modified), the distribution's (``--kernel-version
6.12``/``6.1``), or either with a patch applied to a copy (``--patch FILE``; ``--kernel-version
seed`` is 6.12 with foliowalk's ``patches/seed-folio_walk_start.patch``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import archs
from emu.errors import FoliowalkError

#: the verdict text of a row whose kernel walk departs from the model (emu/judge.py)
DEPARTS = "model-vs-kernel folio_walk_start"


@dataclass
class Departure:
    """One row where the tree's kernel answers otherwise than the model."""

    where: str  # "default" or "fuzz #<hierarchy index>"
    config: str
    case: str
    addr: int
    flags: str
    model: str
    kernel: str
    mmu: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TreeReport:
    config: str
    kernel: str  # which tree, how built; or why there is no kernel walk
    available: bool
    default_rows: int = 0
    fuzz_cases: int = 0
    fuzz_rows: int = 0
    departures: list[Departure] = field(default_factory=list)  # the first ``keep`` of each source
    counts: dict[str, int] = field(default_factory=dict)  # departures by source ("default", "fuzz")
    kinds: dict[str, int] = field(default_factory=dict)  # departures by "model <what> / kernel <what>"
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "kernel": self.kernel, "available": self.available,
                "default_rows": self.default_rows, "fuzz_cases": self.fuzz_cases, "fuzz_rows": self.fuzz_rows,
                "departures": self.counts, "kinds": self.kinds, "examples": [d.to_json() for d in self.departures],
                "seconds": round(self.seconds, 2)}


def kind_of(row: Any) -> str:
    """A departure's class: what the model and the kernel each did, without the numbers."""
    from emu.kernel.walkview import OOPS_REASONS

    w, k = row.walk, row.kernel
    if w.reason.startswith(OOPS_REASONS):
        m = f"oops ({w.reason})"
    else:
        m = f"{w.level} {w.kind}" if w.found else f"NULL ({w.reason.split(':')[0]})"
    m += " + clears" if w.cleared else ""
    if k is None:
        return f"model {m} / kernel -"
    if k.result.oops:
        kk = "oops (" + k.result.oops.split(" at ")[0].split(" in ")[0] + ")"
    else:
        kk = ({0: "PTE", 1: "PMD", 2: "PUD"}.get(k.result.level or 0, "?") + " folio") if k.found else "NULL"
    kk += " + clears" if k.cleared else ""
    same = (w.found == k.found and not k.result.oops and not w.reason.startswith(OOPS_REASONS)
            and bool(w.cleared) == bool(k.cleared))
    return f"model {m} / kernel {kk}" + (" (other fields differ)" if same else "")


def _count(rep: TreeReport, row: Any) -> None:
    kind = kind_of(row)
    rep.kinds[kind] = rep.kinds.get(kind, 0) + 1


def _departure(where: str, row: Any) -> Departure:
    from emu.kernel.walkview import model_describe
    from emu.mm.pagewalk import flags_str
    from emu.verify import mmu_summary

    return Departure(where, row.config, row.case, row.addr, flags_str(row.walk.flags), model_describe(row.walk),
                     row.kernel.describe() if row.kernel is not None else "-", mmu_summary(row.mmu))


def verify_tree(keys: list[str], *, version: str = "6.12", tree: str | None = None, patch: str | None = None,
                profile: str | None = None, cases: int = 20_000, seed: int = 0, keep: int = 20,
                log: Callable[[str], None] | None = None) -> list[TreeReport]:
    """For each configuration: build the tree's walk, run the default scenario (both halves where
    there are two) and fuzzed hierarchies until ``cases`` addresses were walked, and collect the
    rows whose kernel departs from the model (the first ``keep`` per source, all counted)."""
    from archs.kconfig import DEFAULT_PROFILE
    from emu.kernel.patched import SEED, resolve_tree
    from emu.kernel.tree import find_tree
    from emu.kernel.walk import WalkBuildError, build_walk

    profile = profile or DEFAULT_PROFILE
    what = " + seed-folio_walk_start.patch" if version == SEED else (f" + {patch}" if patch else "")
    v, t = resolve_tree(version, tree, patch)
    src = find_tree(v, t)
    pagewalk = src.path / "mm" / "pagewalk.c"
    if "struct folio *folio_walk_start(" not in pagewalk.read_text(errors="replace"):
        # v6.1 and older: folio_walk_start() came with the seed patch (merged for 6.12)
        return [TreeReport(key, f"kernel walk not available: linux {src.release} has no folio_walk_start() "
                                f"in {pagewalk}", False) for key in keys]
    out = []
    for key in keys:
        start = time.perf_counter()
        arch = key.split(":")[0]
        try:
            wb = build_walk(key, profile, v, t, log=log)
        except WalkBuildError as e:
            out.append(TreeReport(key, f"kernel walk not available on {arch}: {e}", False))
            continue
        ht = wb.harness.tree
        rep = TreeReport(key, f"linux {ht.release}{what} ({ht.path}), {wb.harness.kconfig.describe()}", True)
        _default(rep, key, wb, keep)
        if cases > 0:
            _fuzz(rep, key, wb, cases, seed, keep)
        rep.seconds = time.perf_counter() - start
        out.append(rep)
    return out


def _default(rep: TreeReport, key: str, wb: Any, keep: int) -> None:
    from emu.mm.scenarios import build_default, halves
    from emu.verify import verify_scenario

    ops = archs.get_ops(key, kconfig=wb.harness.kconfig)
    n = 0
    for half in halves(ops):
        sc = build_default(ops, half=half)
        try:
            rows = verify_scenario(sc, walk_build=wb)
        finally:
            sc.close()
        rep.default_rows += len(rows)
        for r in rows:
            if DEPARTS in r.verdict:
                n += 1
                _count(rep, r)
                if n <= keep:
                    rep.departures.append(_departure("default", r))
    rep.counts["default"] = n


def _fuzz(rep: TreeReport, key: str, wb: Any, cases: int, seed: int, keep: int) -> None:
    from emu.fuzz import HierarchyGenerator, Target

    n = 0
    try:
        t = Target(key, walk_build=wb)
    except FoliowalkError as e:  # pragma: no cover - the walk built, so its guest starts
        rep.kernel += f" (fuzz: {e})"
        return
    try:
        gen = HierarchyGenerator(key)
        i = 0
        while rep.fuzz_cases < cases:
            ev = t.evaluate(gen.generate(seed, i))
            rep.fuzz_cases += len(ev.addrs)
            for r in ev.rows(key, f"fuzz {key} seed {seed} #{i}"):
                rep.fuzz_rows += 1
                if DEPARTS in r.verdict:
                    n += 1
                    _count(rep, r)
                    if n <= keep:
                        rep.departures.append(_departure(f"fuzz #{i}", r))
            i += 1
    finally:
        t.close()
    rep.counts["fuzz"] = n


def format_reports(reports: list[TreeReport], out: Callable[[str], None] = print, show: int = 8) -> None:
    for rep in reports:
        out(f"== {rep.config}: {rep.kernel}")
        if not rep.available:
            continue
        out(f"   default scenario: {rep.default_rows} rows, {rep.counts.get('default', 0)} depart from the model")
        if "fuzz" in rep.counts:
            out(f"   fuzz: {rep.fuzz_cases:,} cases ({rep.fuzz_rows:,} rows): {rep.counts['fuzz']:,} depart "
                f"from the model")
        for kind, count in sorted(rep.kinds.items(), key=lambda kv: -kv[1]):
            out(f"   {count:>8,}  {kind}")
        for src in ("default", "fuzz"):
            # one block per address and answers, its flag sets joined
            blocks: dict[tuple[str, int, str, str, str], list[Departure]] = {}
            for d in rep.departures:
                if d.where.split(" ")[0] == src:
                    blocks.setdefault((d.where, d.addr, d.model, d.kernel, d.mmu), []).append(d)
            for (where, addr, model, kernel, mmu), ds in list(blocks.items())[:show]:
                case = "" if src == "fuzz" else f"  {ds[0].case}"
                out(f"   {where:10} {addr:#018x}  {', '.join(d.flags for d in ds)}{case}")
                out(f"      model   {model}")
                out(f"      kernel  {kernel}")
                out(f"      MMU     {mmu}")
        out(f"   ({rep.seconds:.1f} s)")
    total = sum(r.total for r in reports)
    out(f"== {sum(1 for r in reports if r.available)} configuration(s) walked by the tree's kernel, "
        f"{sum(1 for r in reports if not r.available)} without a kernel walk: {total} row(s) depart from the model")


__all__ = ["DEPARTS", "Departure", "TreeReport", "format_reports", "verify_tree"]
