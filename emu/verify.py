"""Walk and MMU on the same addresses, and a verdict for each (address, flags) row.

The verdict of a row is decided by the judge (emu/judge.py: an ordered table of named rules
over the row's views).  The verdict classes (DESIGN.md):

* ``agree`` -- Linux and the MMU say the same thing: the same physical address, or both nothing.
* ``linux-only: <reason>`` -- they differ by design: PROT_NONE (present to Linux, absent to the
  MMU), special/PFNMAP/devmap mappings that vm_normal_page() refuses, the zero page without
  FW_ZEROPAGE, migration entries Linux returns but the MMU faults on, bad entries Linux clears,
  an address outside the VMA.
* ``emulator-deviation: <name>`` -- a documented Unicorn/QEMU departure from the architecture
  (registry: emu/machines/deviations.py).
* ``oracle-cannot-check: <why>`` / ``oracle-error: <why>`` -- the MMU could not answer; counted,
  never taken as agreement.
* ``disagree: <why>`` -- a bug somewhere.

Order matters: every walk runs inside ``ram.undo()`` so a bad entry Linux clears is back for
the next row, and the MMU probes run once per address on the pristine tables, which are
restored afterwards (the MMU sets accessed/dirty bits).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import archs
from archs.kconfig import KernelConfig
from archs.linux import LinuxPgtable
from emu.errors import EmulatorError
from emu.judge import REFUSED_PRESENT, VERDICT_CLASSES, judge
from emu.machines.base import READ, Access, Fault, ProbeError, ProbeResult, Translation
from emu.mm.pagewalk import FLAG_COMBINATIONS, LEVEL_NAMES, FolioWalk, flags_str
from emu.mm.scenarios import Case, Scenario

if TYPE_CHECKING:
    from emu.kernel.audit import EntryAudit
    from emu.kernel.walk import WalkBuild
    from emu.kernel.walkview import KernelAnswer

__all__ = ["VERDICT_CLASSES", "WalkResult", "Row", "Report", "leaf_expectations", "walk_result",
           "combined_verdict", "merge_oracles", "run_walk", "walk_cases", "probe_cases", "verify_scenario",
           "verify_configs", "mmu_json", "mmu_summary"]



@dataclass
class WalkResult:
    """What folio_walk_start() reported for one (address, flags)."""

    flags: int
    reason: str
    kind: str = ""
    folio_pfn: int | None = None
    folio_order: int | None = None
    page_pfn: int | None = None
    level: str | None = None
    entry_pa: int | None = None
    entry: int | None = None
    expected_pa: int | None = None  # where the MMU must land if it agrees with this entry
    hw_absent: str | None = None  # why the MMU must not translate this present leaf (PROT_NONE, ...)
    trace: list[tuple[str, int, int]] = field(default_factory=list)
    cleared: list[tuple[str, int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.reason == "found"

    def summary(self) -> str:
        if not self.found:
            return f"NULL ({self.reason})"
        page = f"page {self.page_pfn:#x}" if self.page_pfn is not None else "page NULL"
        return f"folio {self.folio_pfn:#x}/o{self.folio_order} {page} {self.level} ({self.kind})"

    def to_json(self) -> dict[str, Any]:
        return {
            "flags": flags_str(self.flags),
            "found": self.found,
            "reason": self.reason,
            "kind": self.kind or None,
            "folio_pfn": self.folio_pfn,
            "folio_order": self.folio_order,
            "page_pfn": self.page_pfn,
            "level": self.level,
            "entry_pa": self.entry_pa,
            "entry": self.entry,
            "expected_pa": self.expected_pa,
            "trace": [{"level": lv, "pa": pa, "value": v} for lv, pa, v in self.trace],
            "cleared": [{"level": lv, "pa": pa, "value": v} for lv, pa, v in self.cleared],
            "warnings": list(self.warnings),
        }


def mmu_json(res: ProbeResult) -> dict[str, Any]:
    if isinstance(res, Translation):
        return {"pa": res.pa, "observed_by": res.observed_by}
    if isinstance(res, Fault):
        return {"fault": res.kind, "level": res.level, "code": res.code, "vector": res.vector}
    return {"error": res.reason}


def mmu_summary(res: ProbeResult) -> str:
    if isinstance(res, Translation):
        return f"pa {res.pa:#x}"
    if isinstance(res, Fault):
        lvl = f" L{res.level}" if res.level is not None else ""
        return f"{res.kind}{lvl} code {res.code:#x}"
    if res.reason.startswith("oracle-cannot-check: "):  # not probed: the name; the verdict says why
        return f"not probed ({res.reason.removeprefix('oracle-cannot-check: ').split(':')[0]})"
    return f"error: {res.reason}"


@dataclass
class Row:
    config: str
    case: str
    addr: int
    walk: WalkResult
    mmu: ProbeResult
    verdict: str
    access: str = "kernel-read"
    kernel: KernelAnswer | None = None  # the compiled folio_walk_start()'s answer, where it ran
    #: ``--oracle all``: every oracle's own row for this (address, access, flags), by oracle name
    #: (one that cannot check the configuration: its ``oracle-cannot-check`` row); see :func:`merge_oracles`
    oracles: dict[str, Row] | None = None

    @property
    def verdict_class(self) -> str:
        return self.verdict.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "case": self.case,
            "addr": self.addr,
            "access": self.access,
            "walk": self.walk.to_json(),
            "mmu": mmu_json(self.mmu),
            "verdict": self.verdict,
            **({"kernel": self.kernel.to_json()} if self.kernel is not None else {}),
            **({"oracles": {n: r.oracle_json() for n, r in self.oracles.items()}} if self.oracles is not None else {}),
        }

    def oracle_json(self) -> dict[str, Any]:
        """This row as one oracle's part of a combined row: its walk, MMU answer, verdict and kernel
        view (what identifies the row -- configuration, case, address, access -- the combined row says)."""
        j = self.to_json()
        return {k: v for k, v in j.items() if k not in ("config", "case", "addr", "access")}


def _leaf_pfn(ops: LinuxPgtable, level: str | None, entry: int) -> int:
    if level == "PUD":
        return ops.pud_pfn(entry)  # type: ignore[attr-defined,no-any-return]
    if level == "PMD":
        return ops.pmd_pfn(entry)  # type: ignore[attr-defined,no-any-return]
    return ops.pte_pfn(entry)  # type: ignore[attr-defined,no-any-return]


def _entry_size(ops: LinuxPgtable, level: str | None) -> int:
    return {"PUD": ops.PUD_SIZE, "PMD": ops.PMD_SIZE}.get(level or "", ops.PAGE_SIZE)


def leaf_expectations(ops: LinuxPgtable, wr: WalkResult, addr: int) -> None:
    """Fill in what the hardware should do with the entry a walk decided on: ``expected_pa``
    for a present leaf (found, or refused by vm_normal_page()), and ``hw_absent`` where the
    MMU must not translate it by design.  ``wr``'s reason, kind, level and entry must be set."""
    if wr.entry is None or wr.level is None:
        return
    present_leaf = (wr.found and wr.kind != "migration-entry") or wr.reason.startswith(REFUSED_PRESENT)
    if present_leaf:
        size = _entry_size(ops, wr.level)
        wr.expected_pa = (_leaf_pfn(ops, wr.level, wr.entry) << ops.PAGE_SHIFT) + (addr & (size - 1))
    if wr.found or present_leaf:
        wr.hw_absent = ops.hw_absent_reason(wr.level.lower(), wr.entry)


def walk_result(ops: LinuxPgtable, fw: FolioWalk, addr: int, flags: int) -> WalkResult:
    """Summarise a finished walk, with the physical address the hardware should reach."""
    level = LEVEL_NAMES[fw.level] if fw.level is not None else None
    wr = WalkResult(
        flags=flags,
        reason=fw.reason,
        kind=fw.kind if fw.reason == "found" else "",
        level=level,
        entry_pa=fw.entryp,
        entry=fw.entry,
        trace=fw.trace_tuples(),
        cleared=[(s.level, s.pa, s.value) for s in fw.cleared],
        warnings=list(fw.warnings),
    )
    if fw.folio is not None:
        wr.folio_pfn, wr.folio_order = fw.folio.pfn, fw.folio.order
        wr.page_pfn = fw.page.pfn if fw.page is not None else None
    leaf_expectations(ops, wr, addr)
    return wr


def run_walk(sc: Scenario, case: Case, flags: int) -> WalkResult:
    """One folio_walk_start()/folio_walk_end() under the mmap lock; table writes undone."""
    return walk_cases(sc, [case], (flags,))[(0, flags)]


def walk_cases(
    sc: Scenario, cases: list[Case], flag_sets: tuple[int, ...]
) -> dict[tuple[int, int], WalkResult]:
    """Every case with every flag set, ``{(case index, flags): WalkResult}``: one
    ``walk_many_cases()`` (emu/mm/pagewalk_batch.py: one vector pass for every VMA and flag set,
    each address walked as with ``walk_many(isolated=True)``), so each walk sees the tables as
    built (a bad entry Linux clears is back for the next row) and gives exactly what a
    folio_walk_start()/folio_walk_end() pair would.  Rows of a vector-decided address share one
    ``trace`` list across flag sets."""
    from emu.fuzz.evaluate import rows_from_batches
    from emu.mm.pagewalk_batch import walk_many_cases

    if not cases:
        return {}
    addrs = [c.addr for c in cases]
    with sc.mm.mmap_read():
        batches = walk_many_cases([c.vma for c in cases], addrs, flag_sets)
    rows = rows_from_batches(sc.ops, batches, addrs)
    return {(i, f): rows[i][j] for i in range(len(cases)) for j, f in enumerate(flag_sets)}


@dataclass
class Report:
    rows: list[Row]
    omitted: list[str]
    registers: dict[str, dict[str, int]]
    seconds: float
    kernel: list[str] = field(default_factory=list)  # per configuration: which kernel checked the model

    def counts(self) -> Counter[str]:
        return Counter(r.verdict_class for r in self.rows)

    @property
    def ok(self) -> bool:
        return not any(r.verdict_class == "disagree" for r in self.rows)


def _tag_expected(sc: Scenario, walks: list[WalkResult]) -> None:
    """Tag the data frames the walks expect the MMU to reach, so that a guest load proves which
    physical word it read.  Never a frame that holds a table: neither one the builder made nor
    one a walk read an entry from (a hostile entry may use any frame as a table); never one of
    the probe machine's own frames (a hostile leaf may map its code)."""
    page = sc.ops.PAGE_SIZE
    keep: set[int] = set()
    for pa, size in [*sc.builder.tables, *getattr(sc.oracle, "frames", ())]:
        keep.update(range(pa & ~(page - 1), pa + size, page))
    for w in walks:
        keep.update(pa & ~(page - 1) for _, pa, _ in w.trace)
    for w in walks:
        if w.expected_pa is None:
            continue
        frame = w.expected_pa & ~(page - 1)
        if frame in keep or not sc.ram.contains(frame, page):
            continue
        sc.ram.tag(frame, page)
        keep.add(frame)


def probe_cases(sc: Scenario, addrs: list[int], access: Access = READ) -> list[ProbeResult]:
    """Probe ``addrs`` on the MMU with the tables as built, then restore the tables."""
    if sc.oracle is None:
        return [ProbeError(sc.oracle_error or "no MMU oracle attached")] * len(addrs)
    saved = sc.ram.snapshot(sc.builder.tables)
    try:
        sc.oracle.attach(sc.mm)
        return sc.oracle.probe_many(addrs, access)
    finally:
        sc.ram.restore(saved)


def verify_scenario(
    sc: Scenario, *, flag_sets: tuple[int, ...] = FLAG_COMBINATIONS, access: Access = READ,
    audit: EntryAudit | None = None, walk_build: WalkBuild | None = None,
) -> list[Row]:
    """Walk, probe and judge every case of ``sc`` with every flag set; with ``audit`` (a kernel
    harness), every entry the walks read is also asked of the compiled kernel first; with
    ``walk_build`` (emu.kernel.walk), the compiled ``folio_walk_start()`` walks every row too and
    its answer is the row's kernel view."""
    if sc.oracle is not None:
        # Attach first: the probe machine's own root entry (x86-64 slot 511) is then part of the
        # tables Linux walks as well, as the kernel half of a real pgd would be.
        sc.oracle.attach(sc.mm)
    walks = walk_cases(sc, sc.cases, flag_sets)
    kernel_walks: dict[tuple[int, int], KernelAnswer] = {}
    if walk_build is not None:
        from emu.kernel.walkview import KernelWalkView

        view = KernelWalkView(walk_build, sc.mm)
        try:
            with sc.mm.mmap_read():
                kernel_walks = view.walk_cases(sc.cases, flag_sets, walks, sc.builder.tables)
        finally:
            view.close()
    if audit is not None:
        for w in walks.values():
            audit.add_trace(w.trace)
        audit.run()
    _tag_expected(sc, list(walks.values()))
    mmu = probe_cases(sc, [c.addr for c in sc.cases], access)
    rows = []
    for i, case in enumerate(sc.cases):
        for f in flag_sets:
            w = walks[(i, f)]
            kernel = audit.verdict(w.trace) if audit is not None else None
            kw = kernel_walks.get((i, f))
            verdict = judge(sc.ops, w, mmu[i], sc.oracle, addr=case.addr, kernel=kernel, kernel_walk=kw)
            rows.append(Row(sc.config, case.name, case.addr, w, mmu[i], verdict, str(access), kw))
    return rows


def verify_configs(keys: list[str], kernel: str | None = None, *, kconfig: str | None = None,
                   harness: str = "auto", emulator: str = "unicorn") -> Report:
    """Build the default scenario of each configuration (of each half, where the configuration
    translates two: arm64 TTBR0 and TTBR1), verify it, and collect the rows.

    ``kconfig`` names the Kconfig profile the model follows (:data:`archs.kconfig.PROFILES`,
    default "distro"); ``harness`` says whether the compiled kernel checks every entry the walks
    read: "auto" when a harness for that profile is already built, "on" (build it if needed),
    "off".  ``emulator`` is the MMU oracle's emulator (emu.machines.oracles.ORACLES)."""
    from emu.mm.scenarios import build_default, halves

    start = time.perf_counter()
    rows: list[Row] = []
    omitted: list[str] = []
    regs: dict[str, dict[str, int]] = {}
    notes: list[str] = []
    from emu.kernel.walkview import walk_build_for

    for key in keys:
        kc, audit, note = kernel_view(key, kconfig, harness)
        wbuild, wnote = walk_build_for(key, kconfig, harness, model_kernel=kernel)
        ops = archs.get_ops(key, kernel, kconfig=kc) if kernel else archs.get_ops(key, kconfig=kc)
        if audit is not None:
            audit.ops = ops
        for half in halves(ops):  # arm64: the TTBR0 (low) and the TTBR1 (high) half
            try:
                sc = build_default(ops, half=half, emulator=emulator)
            except EmulatorError as err:
                # The machine did not start: the walks still run, and every row says the MMU
                # could not answer (counted as oracle-error), instead of ending the whole run.
                sc = build_default(ops, half=half, with_oracle=False)
                sc.oracle_error = f"the {ops.arch} probe machine did not start: {err}"
            try:
                rows += verify_scenario(sc, audit=audit, walk_build=wbuild)
                omitted += [f"{sc.config}: {o}" for o in sc.omitted]
                if sc.oracle is not None:
                    regs[sc.config] = sc.oracle.registers()
            finally:
                sc.close()
        if audit is not None:
            s = audit.summary()
            note += f": {s['entries']} entries, {s['evaluations']} evaluations, {s['differences']} differ"
            audit.harness.close()
        notes.append(note)
        if harness != "off":
            mine = [r for r in rows if r.config.split(":ttbr1")[0] == key and r.kernel is not None]
            if mine:
                from emu.kernel.walkview import walk_differs

                # every row whose kernel answer differs, whichever rule decided its verdict
                differ = sum(1 for r in mine
                             if r.kernel is not None and walk_differs(r.walk, r.kernel, ops.pxd_clear) is not None)
                wnote += f": {len(mine)} rows walked, {differ} differ"
            notes.append(f"{key}: {wnote}")
    return Report(rows, omitted, regs, time.perf_counter() - start, notes)


def kernel_view(key: str, profile: str | None, harness: str) -> tuple[KernelConfig, EntryAudit | None, str]:
    """The model's :class:`KernelConfig` for ``key`` and, where a kernel harness is to be used,
    the :class:`EntryAudit` that checks entries against it, with a line saying which."""
    from archs.kconfig import DEFAULT_PROFILE, kernel_config

    profile = profile or DEFAULT_PROFILE
    config = archs.get_config(key)
    predicted = kernel_config(config.arch, profile)
    if harness == "off":
        return predicted, None, f"{key}: kernel {predicted.describe()} (model only: --harness off)"
    from emu.kernel.audit import EntryAudit
    from emu.kernel.build import build_harness, cached_build, not_yet

    why = not_yet(config)
    if why:
        return predicted, None, f"{key}: kernel {predicted.describe()} (model only: {why})"
    from emu.kernel.runner import KernelHarness

    build = build_harness(key, profile) if harness == "on" else cached_build(key, profile)
    if build is None:
        return predicted, None, (f"{key}: kernel {predicted.describe()} (model only: no harness built; "
                                 f"foliowalk kernel build --config {key} --kconfig {profile})")
    ops = archs.get_ops(key, kconfig=build.kconfig)
    audit = EntryAudit(KernelHarness(build, key), ops)
    return build.kconfig, audit, f"{key}: kernel linux {build.tree.release} {build.kconfig.describe()} (compiled)"


# -- ``--oracle all``: every oracle's rows side by side ------------------------------------------
#: How a combined row's class is chosen from its oracles' classes: the first class (in this order)
#: that any oracle gives -- a disagree anywhere is a disagree of the row, a deviation of one
#: emulator is an emulator-deviation of the row, naming it, even where another emulator agrees;
#: a row one oracle checked and another could not is the checking oracle's verdict, naming it
#: (``agree [unicorn]``), and oracle-cannot-check only where none could.
COMBINED_ORDER = ("disagree", "oracle-error", "emulator-deviation", "linux-only", "agree", "oracle-cannot-check")


def _untagged(verdict: str) -> str:
    """``"emulator-deviation: block-at-any-level [qemu]"`` -> ``"emulator-deviation: block-at-any-level"``
    (the judge tags the verdicts of a non-Unicorn oracle with its name, emu/judge.py)."""
    if verdict.endswith("]") and " [" in verdict:
        return verdict[: verdict.rindex(" [")]
    return verdict


def combined_verdict(verdicts: dict[str, str]) -> str:
    """The verdict of a row from every oracle's own verdict (``{oracle: verdict}``): the class
    :data:`COMBINED_ORDER` puts first among them, with the oracles that gave it in brackets
    after each distinct reason (``"emulator-deviation: block-oa-ored [unicorn]"``, ``"agree: [unicorn]"``,
    ``"disagree: pa 0x1000, expected 0x2000 [qemu]"``; ``"emulator-deviation:
    block-at-any-level [unicorn, qemu]"``).  ``agree`` and ``linux-only`` that every oracle gives
    alike are left untagged."""
    plain = {n: _untagged(v) for n, v in verdicts.items()}
    cls = next(c for c in COMBINED_ORDER if any(v.split(":", 1)[0] == c for v in plain.values()))
    if cls in ("agree", "linux-only") and len(set(plain.values())) == 1:
        return next(iter(plain.values()))
    reasons: dict[str, list[str]] = {}
    for n, v in plain.items():
        if v.split(":", 1)[0] == cls:
            reasons.setdefault(v, []).append(n)
    # "<class>: <reason> [oracles]"; a bare "agree" keeps its colon ("agree: [unicorn]"), so that
    # the class is what precedes the first colon, as in every verdict (Row.verdict_class)
    return "; ".join(f"{v if ':' in v else v + ':'} [{', '.join(names)}]" for v, names in reasons.items())


def merge_oracles(keys: list[str], reports: dict[str, Report], cannot: dict[str, dict[str, str]],
                  names: list[str] | None = None) -> Report:
    """One report of rows that carry every oracle's answer, from one report per oracle
    (``reports``, in the order the oracles are shown) over the configurations ``keys``;
    ``cannot[oracle][key]`` says why an oracle does not check configuration ``key`` (it gets an
    ``oracle-cannot-check`` row there); ``names``: every oracle in the order shown (default: those
    of ``reports``; one that ran on none of ``keys`` has an ``oracle-cannot-check`` row in each).

    Each oracle verified its own copy of every scenario: the machines take different frames of
    guest RAM, so physical addresses differ between the copies, but the cases, the flag sets and
    the walks' decisions (reason, kind, level) are the same -- checked here, row by row; a row
    whose identity differs between two oracles is an error, not a merge.  The combined row shows
    the first checking oracle's walk and MMU answer, and :func:`combined_verdict` of the oracles
    that checked it; ``oracles`` holds every oracle's own row."""
    from emu.errors import FoliowalkError

    by_config: dict[str, dict[str, list[Row]]] = {}
    for name, rep in reports.items():
        for r in rep.rows:
            by_config.setdefault(r.config, {}).setdefault(name, []).append(r)
    rows: list[Row] = []
    omitted: list[str] = []
    for key in keys:
        configs = [c for c in (_scenario_configs(key) if key in archs.all_config_keys() else [key]) if c in by_config]
        if not configs:
            omitted.append(f"{key}: no oracle here checks it ("
                           + "; ".join(f"{n}: {w[key]}" for n, w in cannot.items() if key in w) + ")")
        for config in configs:
            per = by_config[config]
            first = next(iter(per.values()))
            for name, own in per.items():
                if [_identity(r) for r in own] != [_identity(r) for r in first]:
                    raise FoliowalkError(f"{config}: the {name} oracle's rows are not the same cases and walks "
                                         f"as the {next(iter(per))} oracle's; cannot show them side by side")
            for i, base in enumerate(first):
                views: dict[str, Row] = {}
                for name in names or list(reports):
                    if name in per:
                        views[name] = per[name][i]
                    else:
                        why = cannot.get(name, {}).get(key, f"the {name} oracle did not run")
                        views[name] = Row(base.config, base.case, base.addr, base.walk, ProbeError(why),
                                          f"oracle-cannot-check: {why}", base.access)
                # an oracle with no machine for the configuration is named in its own row, not in
                # the verdict: that comes from the oracles that checked the row
                verdict = combined_verdict({n: r.verdict for n, r in views.items() if n in per})
                rows.append(Row(base.config, base.case, base.addr, base.walk, base.mmu, verdict, base.access,
                                base.kernel, views))
    omitted += list(dict.fromkeys(o for rep in reports.values() for o in rep.omitted))
    kernel = list(dict.fromkeys(k for rep in reports.values() for k in rep.kernel))
    regs = {f"{c} [{n}]": r for n, rep in reports.items() for c, r in rep.registers.items()}
    return Report(rows, omitted, regs, sum(rep.seconds for rep in reports.values()), kernel)


def _scenario_configs(key: str) -> list[str]:
    """The row configurations of ``key``'s default scenarios: one per half (``Scenario.config``:
    ``arm64:4k:48`` and ``arm64:4k:48:ttbr1``)."""
    config = archs.get_config(key)
    labels = config.extra.get("half_labels", {})
    return [key if h == "low" else f"{key}:{labels.get(h, h)}" for h in config.extra.get("halves", ("low",))]


def _identity(r: Row) -> tuple[Any, ...]:
    """What must be the same in two oracles' rows to show them as one: the configuration, case,
    address, access, flags and the walk's decision (physical addresses may differ, see
    :func:`merge_oracles`)."""
    w = r.walk
    return (r.config, r.case, r.addr, r.access, w.flags, w.reason, w.kind, w.level, w.found)
