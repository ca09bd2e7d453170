"""Materializing a hierarchy in guest RAM and evaluating it: every address walked with every
FW_* combination, probed once on the MMU, each row judged by :func:`emu.judge.judge`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Literal

import numpy as np

import archs
from archs.linux import (
    DEFAULT_KERNEL,
    LinuxPgtable,
)
from emu.errors import ConfigError, MemoryLayoutError
from emu.fuzz.hierarchy_gen import ANON_FLAGS
from emu.fuzz.layout import low_allocations, plan_layout
from emu.fuzz.spec import Hierarchy
from emu.judge import judge
from emu.machines.base import Fault, ProbeError, ProbeResult
from emu.mm.mm_types import (
    VMA,
)
from emu.mm.pagewalk import FLAG_COMBINATIONS, LEVEL_NAMES, FolioWalk, folio_walk_end, folio_walk_start
from emu.mm.scenarios import Case, Scenario
from emu.verify import Row, WalkResult, walk_result


# -- materializing and evaluating -----------------------------------------------------------
@dataclass
class Evaluation:
    """One hierarchy run: walks (per address, per flags), probes and verdicts."""

    hierarchy: Hierarchy
    addrs: list[int]
    vmas: list[VMA]
    walks: list[list[WalkResult]]
    probes: list[ProbeResult]
    verdicts: list[list[str]]
    seconds: dict[str, float] = field(default_factory=dict)
    #: the compiled folio_walk_start()'s answer per address and flag set, where it ran
    kernel: list[list[Any]] | None = None

    def rows(self, config: str, name: str = "fuzz") -> list[Row]:
        return [
            Row(config, name, a, w, self.probes[i], self.verdicts[i][j],
                kernel=self.kernel[i][j] if self.kernel is not None else None)
            for i, a in enumerate(self.addrs)
            for j, w in enumerate(self.walks[i])
        ]


def deciding_level(w: WalkResult) -> str:
    """The Linux level of the entry the walk decided on (its last read), or '-'."""
    return w.trace[-1][0] if w.trace else "-"


_HEX = re.compile(r"0x[0-9a-fA-F]+|\b\d{3,}\b|(?<=-)\d+\b")


def signature(w: WalkResult, mmu: ProbeResult, verdict: str) -> str:
    """What identifies a finding while it is shrunk: verdict (with numbers blanked), the walk's
    reason, the deciding level, and what the MMU did."""
    cls = verdict.split(":", 1)[0]
    mmu_kind = type(mmu).__name__
    if isinstance(mmu, Fault):
        mmu_kind = f"Fault:{mmu.kind}"
    return "|".join((cls, _HEX.sub("#", verdict), _HEX.sub("#", w.reason), deciding_level(w), mmu_kind))


class Target:
    """A configuration's fuzzing machine: guest RAM with the pool, an mm, optionally the MMU
    oracle.  ``load(h)`` writes a hierarchy (wiping the previous one); ``evaluate(h)`` walks,
    probes and judges it.  Also usable as a context manager (closes the oracle and RAM)."""

    def __init__(
        self, key: str, kernel: str = DEFAULT_KERNEL, *, oracle: bool = True, walker: str = "auto",
        harness: str = "off", walk_build: Any = None, emulator: str = "unicorn",
    ) -> None:
        """``walk_build``: the compiled walk (emu.kernel.walk.WalkBuild) to judge every row with,
        instead of the one ``harness`` finds for the distribution's tree (``kernel verify``);
        ``emulator``: the oracle's (emu.machines.oracles.ORACLES)."""
        if walker not in ("auto", "batch", "scalar"):
            raise ConfigError(f"walker must be auto, batch or scalar, not {walker!r}")
        from emu.verify import kernel_view

        # harness: "auto"/"on" -- every entry a walk reads is also asked of the compiled kernel
        kconfig, self.audit, self.kernel_note = kernel_view(key, None, harness)
        self.ops = archs.get_ops(key, kernel, kconfig=kconfig)
        if self.audit is not None:
            self.audit.ops = self.ops
        self.key = self.ops.config.key
        self.kernel = kernel
        self.layout = lay = plan_layout(self.key)
        ram, alloc, memmap, mm, builder, hz, _low = low_allocations(self.ops, lay.ram_size)
        if (mm.pgd, mm.zero_pfn, hz) != (lay.root, lay.zero_pfn, lay.huge_zero_pfn):
            raise MemoryLayoutError(
                f"{self.key}: the fuzzing layout moved (pgd {mm.pgd:#x}, planned {lay.root:#x})"
            )
        alloc.reserve(lay.pool_start, lay.pool_end)
        for pfn, order in lay.folios:
            memmap.add_folio(pfn, order)
        for pa, size in lay.tagged:
            ram.tag(pa, size)
        levels = self.ops.config.levels
        self._clear: list[bytes] = []
        byteorder: Literal["little", "big"] = "big" if self.ops.big_endian else "little"
        for d, lv in enumerate(levels):
            cv = int(self.ops.clear_value(lv.linux))
            self._clear.append(cv.to_bytes(lv.entry_size, byteorder) * lv.entries)
            for pa in lay.tables[d]:
                ram.buf[pa : pa + lv.table_size] = self._clear[d]
        self.sc = Scenario(self.ops, ram, alloc, memmap, mm, builder)
        self.oracle: Any = None
        if oracle:
            from emu.machines.oracle import make_oracle

            self.oracle = make_oracle(self.ops, ram, alloc, emulator)
            self.sc.oracle = self.oracle
            builder.reserved = list(self.oracle.reserved_va())
            got = tuple((int(a), int(b)) for a, b in builder.reserved)
            if got != lay.reserved_va:
                raise MemoryLayoutError(
                    f"{self.key}: the probe machine's reserved VA moved: {got} != {lay.reserved_va}"
                )
        self._loaded: list[tuple[int, int]] = []
        self.hierarchy: Hierarchy | None = None
        self._batch = _batch_walker(walker)
        # harness "auto"/"on": the compiled folio_walk_start() walks every row too (emu/kernel/walkview.py)
        from emu.kernel.walkview import KernelWalkView, walk_build_for

        self.kwalk: KernelWalkView | None = None
        if walk_build is not None:
            wbuild, self.kwalk_note = walk_build, "kernel walk: given"
        else:
            wbuild, self.kwalk_note = walk_build_for(self.key, None, harness, model_kernel=self.ops.kernel)
        if wbuild is not None:
            self.kwalk = KernelWalkView(wbuild, mm)

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sc.close()
        self.oracle = None
        if self.audit is not None:
            self.audit.harness.close()
            self.audit = None
        if self.kwalk is not None:
            self.kwalk.close()
            self.kwalk = None

    # -- loading ------------------------------------------------------------------------------
    def load(self, h: Hierarchy) -> None:
        """Write ``h`` into guest RAM: wipe the previous hierarchy's tables, write every entry,
        install the VMAs and the cases (``self.sc.cases``)."""
        if h.config != self.key:
            raise ConfigError(f"hierarchy is for {h.config}, this target is {self.key}")
        ram, levels, lay = self.sc.ram, self.ops.config.levels, self.layout
        buf = ram.buf
        for pa, d in self._loaded:
            buf[pa : pa + levels[d].table_size] = self._clear[d]
        root_size = levels[0].table_size
        buf[lay.root : lay.root + root_size] = self._clear[0]
        pool_lo, pool_hi = lay.pool_start, lay.pool_end
        for pa, _d in h.tables:
            if not (pool_lo <= pa < pool_hi):
                raise MemoryLayoutError(f"table frame {pa:#x} is outside the fuzzing pool")
        self._loaded = list(h.tables)
        for e in h.entries:
            if not (lay.root <= e.pa < lay.root + root_size or pool_lo <= e.pa < pool_hi):
                raise MemoryLayoutError(f"entry address {e.pa:#x} is outside the hierarchy's tables")
            ram.write_u64(e.pa, e.value)
        mm = self.sc.mm
        mm.vmas = []
        if self.kwalk is not None:
            self.kwalk.forget_vmas()  # new VMA objects (an id may be reused)
        for v in h.vmas:
            mm.add_vma(VMA(v.start, v.end, v.flags, v.pgoff, name=v.name or "fuzz"))
        self.sc.builder.tables = [(lay.root, root_size)] + [(pa, levels[d].table_size) for pa, d in h.tables]
        self.sc.cases = [Case(f"fuzz {h.config} #{h.index}", a, self.vma_for(a)) for a in h.addrs]
        if self.oracle is not None:
            # The probe machine's own root entry (x86-64 slot 511) is part of the tables Linux
            # walks too, like the kernel half of a real pgd: a hostile pointer may reach it.
            self.oracle.attach(self.sc.mm)
        self.hierarchy = h

    def vma_for(self, addr: int) -> VMA:
        """The VMA holding ``addr``, else the nearest one (the walk then says outside-vma)."""
        mm = self.sc.mm
        vma = mm.find_vma(addr)
        if vma is not None:
            return vma
        if not mm.vmas:  # no VMA at all: a placeholder one page long at the address
            start = addr & ~(self.ops.PAGE_SIZE - 1)
            start = start if start + self.ops.PAGE_SIZE < 1 << 64 else start - self.ops.PAGE_SIZE
            return mm.add_vma(VMA(start, start + self.ops.PAGE_SIZE, ANON_FLAGS, name="placeholder"))
        near = mm.nearest_vma(addr)
        assert near is not None
        return near

    # -- running ------------------------------------------------------------------------------
    def walk(self, flag_sets: Sequence[int] = FLAG_COMBINATIONS) -> list[list[WalkResult]]:
        """folio_walk_start()/folio_walk_end() of every case with every flag set: through
        ``walk_many()`` (the batch walker) unless ``walker="scalar"``; both give identical
        results (tests/fuzz/test_fuzz.py)."""
        if self._batch is not None:
            return self._batch(self.sc, self.sc.cases, tuple(flag_sets))
        return self._scalar_walk(flag_sets)

    def _scalar_walk(self, flag_sets: Sequence[int]) -> list[list[WalkResult]]:
        sc = self.sc
        ops, mm, ram = sc.ops, sc.mm, sc.ram
        out = []
        with mm.mmap_read():
            for case in sc.cases:
                vma, va = case.vma, case.addr
                row = []
                for f in flag_sets:
                    with ram.undo():
                        fw = FolioWalk()
                        folio = folio_walk_start(fw, vma, va, f)
                        row.append(walk_result(ops, fw, va, f))
                        if folio is not None:
                            folio_walk_end(fw, vma)
                out.append(row)
        return out

    def probe(self) -> list[ProbeResult]:
        """The MMU on every case (tables restored afterwards: the MMU sets accessed/dirty)."""
        sc = self.sc
        if self.oracle is None:
            return [ProbeError("no MMU oracle") for _ in sc.cases]
        saved = sc.ram.snapshot(sc.builder.tables)
        try:
            self.oracle.attach(sc.mm)
            return list(self.oracle.probe_many([c.addr for c in sc.cases]))
        finally:
            sc.ram.restore(saved)

    def evaluate(self, h: Hierarchy, flag_sets: Sequence[int] = FLAG_COMBINATIONS) -> Evaluation:
        """Load ``h``, walk, probe and judge every case.  The cyclic GC is off meanwhile: an
        evaluation makes thousands of small objects with no cycles among them (refcounting frees
        them), and collecting generation 0 every 700 of them cost ~20% of a fuzz case."""
        if not gc.isenabled():
            return self._evaluate(h, flag_sets)
        gc.disable()
        try:
            return self._evaluate(h, flag_sets)
        finally:
            gc.enable()

    def _evaluate(self, h: Hierarchy, flag_sets: Sequence[int]) -> Evaluation:
        t0 = time.perf_counter()
        self.load(h)
        t1 = time.perf_counter()
        walks = self.walk(flag_sets)
        t2 = time.perf_counter()
        probes = self.probe()
        t3 = time.perf_counter()
        ops, oracle, audit = self.ops, self.oracle, self.audit
        if audit is not None:
            for row in walks:
                for w in row:
                    audit.add_trace(w.trace)
            audit.run()
        kernel: list[list[Any]] | None = None
        if self.kwalk is not None:
            fl = tuple(flag_sets)
            model = {(i, f): row[j] for i, row in enumerate(walks) for j, f in enumerate(fl)}
            got = self.kwalk.walk_cases(self.sc.cases, fl, model, self.sc.builder.tables)
            kernel = [[got[(i, f)] for f in fl] for i in range(len(walks))]
        t4 = time.perf_counter()
        verdicts = []
        for i, row in enumerate(walks):
            mmu = probes[i]
            first = row[0]
            addr = self.sc.cases[i].addr
            k0 = audit.verdict(first.trace) if audit is not None else None
            kw = kernel[i] if kernel is not None else None
            v0 = judge(ops, first, mmu, oracle, addr=addr, kernel=k0, kernel_walk=kw[0] if kw else None)
            # A row that rows_from_batches() copied from the first (same record, other flags: it
            # shares the trace list) gets the same verdict: judge() does not read the flags
            # (the kernel's answer for those flags is compared on its own).
            verdicts.append([v0] + [
                v0 if w.trace is first.trace and kw is None else judge(
                    ops, w, mmu, oracle, addr=addr, kernel=audit.verdict(w.trace) if audit is not None else None,
                    kernel_walk=kw[j + 1] if kw else None)
                for j, w in enumerate(row[1:])
            ])
        t5 = time.perf_counter()
        return Evaluation(
            h, [c.addr for c in self.sc.cases], [c.vma for c in self.sc.cases], walks, probes, verdicts,
            {"load": t1 - t0, "walk": t2 - t1, "probe": t3 - t2, "kernel": t4 - t3, "judge": t5 - t4}, kernel,
        )


def _batch_walker(walker: str) -> Callable[..., list[list[WalkResult]]] | None:
    """``emu.mm.pagewalk_batch.walk_many_cases`` (the batch walker) as rows per case, or None
    for the per-address walker (``walker="scalar"``, or no emu.mm.pagewalk_batch)."""
    if walker == "scalar":
        return None
    try:
        mod = importlib.import_module("emu.mm.pagewalk_batch")
    except ImportError:
        if walker == "batch":
            raise ConfigError("walker=batch needs emu.mm.pagewalk_batch") from None
        return None
    return _adapt_walk_many_cases(mod.walk_many_cases)


def _adapt_walk_many_cases(fn: Callable[..., Any]) -> Callable[..., list[list[WalkResult]]]:
    """``walk_many_cases(vmas, addrs, flag_sets)``: one vector pass per hierarchy, every VMA and
    flag set, back to rows per case (:func:`rows_from_batches`)."""
    memo: dict[tuple[str, int], tuple[int, int, str | None]] = {}

    def call(sc: Scenario, cases: list[Case], flag_sets: tuple[int, ...]) -> list[list[WalkResult]]:
        addrs = [c.addr for c in cases]
        with sc.mm.mmap_read():
            batches = fn([c.vma for c in cases], addrs, flag_sets)
        if len(memo) > 1 << 16:
            memo.clear()
        return rows_from_batches(sc.ops, batches, addrs, memo)

    return call


def rows_from_batches(
    ops: LinuxPgtable, batches: Sequence[Any], addrs: Sequence[int],
    memo: dict[tuple[str, int], tuple[int, int, str | None]] | None = None,
) -> list[list[WalkResult]]:
    """Rows per address (one :class:`WalkResult` per batch, i.e. per flag set) of the batches of
    ``walk_many_cases()``: :func:`emu.verify.walk_result` of every record.  A record the vector
    pass decided is built once from the columns (found normal leaves, none entries), its
    expectations from ``memo`` (per (level, entry): what leaf_expectations() computes), and is
    the same for every flag set: the other flag sets' rows are copies sharing its ``trace`` list
    (:meth:`Target.evaluate` judges such a row once).  Records of the per-address walker, and
    outside-vma ones, go through walk_result() itself.  tests/fuzz/test_fuzz.py proves it equal
    to walk_result() on every record."""
    from emu.mm.pagewalk_batch import _TRACE, REFUSED

    n = len(addrs)
    if memo is None:
        memo = {}
    if not batches:
        return [[] for _ in range(n)]
    b0 = batches[0]
    status = b0._status
    st = status.tolist()
    level = b0._level.tolist()
    entry_pa = b0._entry_pa.tolist()
    entry = b0._entry.tolist()
    folio_pfn = b0._folio_pfn.tolist()
    folio_order = b0._folio_order.tolist()
    page_pfn = b0._page_pfn.tolist()
    tpa, tval, al, pre = b0._tpa, b0._tval, b0._alias, b0._pre
    head = [("pgd", pre[k], pre[k + 1]) for k in range(0, len(pre), 2)]
    traces: list[Any] = [None] * n
    for code, path in _TRACE.items():
        if not path:
            continue
        idx = np.flatnonzero(status == code)
        if not len(idx):
            continue
        m = len(idx)
        # one column of (level, pa, value) tuples per read, then the rows: all in C loops
        cols = [repeat(t, m) for t in head] + [
            zip(repeat(name, m), tpa[al[c], idx].tolist(), tval[al[c], idx].tolist(), strict=True)
            for name, c in path]
        for i, tr in zip(idx.tolist(), map(list, zip(*cols, strict=True)), strict=True):
            traces[i] = tr
    shift = ops.PAGE_SHIFT
    first: list[WalkResult] = []
    vector = [False] * n
    f0 = b0.flags
    refused = frozenset(REFUSED)
    for i in range(n):
        s = st[i]
        if s == 0 or s == 9:  # the per-address walker's record, or outside-vma (its warning)
            first.append(walk_result(ops, b0[i], addrs[i], f0))
            vector[i] = s == 9  # (outside-vma: the same for every flag set)
            continue
        vector[i] = True
        lv = LEVEL_NAMES[level[i]] if level[i] >= 0 else None
        wr = object.__new__(WalkResult)
        if s <= 3 or s in refused:  # found: a normal leaf; or a present leaf vm_normal_page*() refused
            ent = entry[i]
            key = (lv or "", ent)
            got = memo.get(key)
            if got is None:
                size = {"PUD": ops.PUD_SIZE, "PMD": ops.PMD_SIZE}.get(lv, ops.PAGE_SIZE)  # type: ignore[arg-type]
                got = memo[key] = (_leaf_pfn(ops, lv, ent) << shift, size - 1,
                                   ops.hw_absent_reason(lv.lower(), ent))  # type: ignore[union-attr]
            if s <= 3:
                pp = page_pfn[i]
                wr.__dict__ = {
                    "flags": f0, "reason": "found", "kind": "normal", "folio_pfn": folio_pfn[i],
                    "folio_order": folio_order[i], "page_pfn": pp if pp >= 0 else None, "level": lv,
                    "entry_pa": entry_pa[i], "entry": ent, "expected_pa": got[0] + (addrs[i] & got[1]),
                    "hw_absent": got[2], "trace": traces[i], "cleared": [], "warnings": [],
                }
            else:  # not-normal@<level>: leaf_expectations() gives a refused present leaf the same
                wr.__dict__ = {
                    "flags": f0, "reason": b0._vector_reason(i, s), "kind": "", "folio_pfn": None, "folio_order": None,
                    "page_pfn": None, "level": lv, "entry_pa": entry_pa[i], "entry": ent,
                    "expected_pa": got[0] + (addrs[i] & got[1]), "hw_absent": got[2], "trace": traces[i],
                    "cleared": [], "warnings": [],
                }
        else:  # none@<level>: fw->level/entry set at the PTE only
            wr.__dict__ = {
                "flags": f0, "reason": b0._vector_reason(i, s), "kind": "", "folio_pfn": None, "folio_order": None,
                "page_pfn": None, "level": lv, "entry_pa": entry_pa[i] if lv is not None else None,
                "entry": entry[i] if lv is not None else None, "expected_pa": None, "hw_absent": None,
                "trace": traces[i], "cleared": [], "warnings": [],
            }
        first.append(wr)
    out = [[w] for w in first]
    # a per-address record that walk_many_cases() shares between flag sets (the walk never
    # tested the bits in which they differ): its result, by the record's identity
    built = {id(r): first[i] for i, r in b0._records.items()}
    for b in batches[1:]:
        f = b.flags
        recs = b._records
        for i in range(n):
            o = first[i] if vector[i] else built.get(id(recs.get(i)))
            if o is not None:
                wr = object.__new__(WalkResult)
                d = dict(o.__dict__)
                d["flags"], d["cleared"], d["warnings"] = f, list(o.cleared), list(o.warnings)
                wr.__dict__ = d
            else:
                wr = built[id(recs[i])] = walk_result(ops, b[i], addrs[i], f)
            out[i].append(wr)
    return out


def _leaf_pfn(ops: LinuxPgtable, level: str | None, entry: int) -> int:
    from emu.verify import _leaf_pfn as leaf_pfn

    return leaf_pfn(ops, level, entry)


@contextlib.contextmanager
def materialize(h: Hierarchy, *, oracle: bool = False) -> Iterator[Scenario]:
    """``with materialize(h) as sc:`` -- ``h`` built in fresh guest RAM: ``sc.mm``, ``sc.cases``
    (one :class:`~emu.mm.scenarios.Case` per address, in its VMA), ``sc.oracle`` if ``oracle``."""
    t = Target(h.config, h.kernel, oracle=oracle)
    try:
        t.load(h)
        yield t.sc
    finally:
        t.close()
