"""``walk_many()``: folio_walk_start() + folio_walk_end() over many addresses in one call.

``walk_many(vma, addrs, flags)`` gives, for every address, exactly the record that

    fw = FolioWalk()
    if folio_walk_start(fw, vma, addr, flags) is not None:
        folio_walk_end(fw, vma)

leaves behind (``emu/mm/pagewalk.py``; mm/pagewalk.c v6.12 or the seed ``aa39ca6940f1``, as ``ops.kernel``
says), with the addresses walked one after another in the order given -- so a bad entry that
``pgd_none_or_clear_bad()`` clears for one address is already clear for the next.  With
``isolated=True`` every address instead sees the tables as they were when the call began (each
walk's writes are undone, as ``foliowalk verify`` needs).

How it is fast: the walk is done for all addresses at once with numpy -- index extraction, the
table reads (``np.frombuffer`` over guest RAM: the same bytes the MMU reads), and Linux's
predicates for the shapes nearly every entry has: good table entries, present normal leaves (PTE,
PMD, PUD), none entries at any level, and addresses outside the VMA.  The predicates come from
*vector rules* (emu/mm/pagewalk_batch_rules.py; emu/mm/WALKERS.md says what they may
decide): :class:`X86_64Rules` (masks derived from archs/x86_64.py's construct
declarations; arm64's and s390x's PTE masks likewise: ``Arm64Rules``, ``S390xRules``), or for any
other architecture :class:`MemoRules`, which asks the arch's own scalar
predicates once per distinct entry value.  The pass also decides, for every FW_* flag set at
once, what those flags cannot change: present normal PMD leaves in VM_PFNMAP/VM_MIXEDMAP VMAs
(vm_normal_page_pmd(): found or refused), normal leaves beyond the memmap (refused), and swap
PTEs that are no migration entry (``swap@pte:<type>``); walk_many_cases() builds the records of
migration PTEs (whose pfn has a struct page) from its reads.  Every other address (PMD swap and
migration entries, PROT_NONE, special, devmap, zero-page and bad entries, entries outside RAM, ...) is walked by
:func:`~emu.mm.pagewalk.folio_walk_start` itself, in order.  An architecture with pXd_offset() functions
of its own (s390x: folding decided by each entry's table type, and pgd_offset()'s shift by the
type of the top table's first entry) gets :class:`DynamicFoldingRules`: the walks whose entries
have the types of the configuration's static folding -- the tables Linux builds -- are
vectorised (the arch's own offset functions are asked once per distinct entry value whether they
agree with the static ones), every other walk is the per-address walker's.

The result, :class:`WalkBatch`, is columns (numpy arrays, one element per address) that verify and
the fuzzer read without building any Python object per address, plus ``batch[i]`` which
materialises the :class:`~emu.mm.pagewalk.FolioWalk` record of address ``i`` (trace, warnings and cleared
entries included) on demand:

==================  ==========  ==================================================================
column              dtype       meaning
==================  ==========  ==================================================================
``addrs``           uint64      the addresses, as given
``found``           bool        folio_walk_start() returned a folio
``level``           int8        ``fw.level``: FW_LEVEL_PTE/PMD/PUD, or -1 (not set)
``entry_pa``        uint64      ``fw.ptep``/``pmdp``/``pudp`` (physical), where ``level >= 0``
``entry``           uint64      ``fw.pte``/``pmd``/``pud`` (raw value), where ``level >= 0``
``folio_pfn``       int64       the returned folio's head pfn, -1 for NULL
``folio_order``     int8        its order, -1 for NULL
``page_pfn``        int64       ``fw.page``'s pfn, -1 for NULL (also for zero pages and migration
                                entries, where folio_walk_start() leaves it NULL)
``scalar``          bool        the address was decided by the per-address walker
==================  ==========  ==================================================================

``batch.reason(i)`` / ``batch.kind(i)`` give ``fw.reason`` / ``fw.kind`` without building the record.

Page-table locks: the vectorised part takes none (each per-address walk takes and drops its PTL
before the next starts, so nothing is held between addresses either way); like a sequence of
folio_walk_start() calls, the result assumes no other thread changes the tables meanwhile.  The
mmap lock must be held, as for folio_walk_start().
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from emu.mm.mm_types import MM, VM_MIXEDMAP, VM_PFNMAP, VMA, Folio, Page, is_cow_mapping
from emu.mm.pagewalk import (
    FW_LEVEL_PMD,
    FW_LEVEL_PTE,
    FW_LEVEL_PUD,
    FW_MIGRATION,
    FolioWalk,
    TraceStep,
    folio_walk_end,
    folio_walk_start,
    folio_walk_start_reference,
    outside_vma_warning,
)
from emu.mm.pagewalk_batch_rules import VECTOR_RULES, DynamicFoldingRules, MemoRules, X86_64Rules

__all__ = ["walk_many", "walk_many_cases", "WalkBatch", "VECTOR_RULES", "X86_64Rules", "MemoRules",
           "DynamicFoldingRules"]

_U64 = np.uint64

# Outcome codes of the vectorised walk (WalkBatch._status).  0: decided by the per-address walker.
_SCALAR = 0
_FOUND_PTE, _FOUND_PMD, _FOUND_PUD = 1, 2, 3
_NONE_PGD, _NONE_P4D, _NONE_PUD, _NONE_PMD, _NONE_PTE = 4, 5, 6, 7, 8
_OUTSIDE = 9
# A present leaf vm_normal_page_pmd() / vm_normal_page() refuses (mm/memory.c, v6.12): not found,
# fw->level/pmdp/pmd (ptep/pte) set, the same for every FW_* flag set as long as the pfn is not the
# (huge) zero page's (FW_ZEROPAGE would find that one: those stay with the per-address walker).
_PMD_PFNMAP_LINEAR, _PMD_PFNMAP_NOT_COW, _PMD_MIXEDMAP_INVALID, _PMD_BEYOND = 10, 11, 12, 13
_PTE_BEYOND = 14
# A swap PTE that is no migration entry (swapfile, pte marker, hwpoison, device-private, ...):
# not found, "swap@pte:<type>" (WalkBatch._reasons), fw->level/ptep/pte set, for every flag set.
_PTE_SWAP = 15
_REFUSED_PMD = (_PMD_PFNMAP_LINEAR, _PMD_PFNMAP_NOT_COW, _PMD_MIXEDMAP_INVALID, _PMD_BEYOND)
#: vector outcomes that are a refused present leaf (reason ``not-normal@...``, level set)
REFUSED = (*_REFUSED_PMD, _PTE_BEYOND)
_REASON = {
    _FOUND_PTE: "found", _FOUND_PMD: "found", _FOUND_PUD: "found",
    _NONE_PGD: "none@pgd", _NONE_P4D: "none@p4d", _NONE_PUD: "none@pud", _NONE_PMD: "none@pmd",
    _NONE_PTE: "none@pte", _OUTSIDE: "outside-vma",
    _PMD_PFNMAP_LINEAR: "not-normal@pmd:pfnmap-linear", _PMD_PFNMAP_NOT_COW: "not-normal@pmd:pfnmap-not-cow",
    _PMD_MIXEDMAP_INVALID: "not-normal@pmd:mixedmap-invalid-pfn", _PMD_BEYOND: "not-normal@pmd:pfn-beyond-memmap",
    _PTE_BEYOND: "not-normal@pte:pfn-beyond-memmap",
}
# The traced reads (level, column) of each outcome: the same as the scalar walker's trace.
# Columns: 0 pgd, 1 p4d, 2 pud, 3 pmd, 4 pte.
_PTE_PATH = (("pgd", 0), ("p4d", 1), ("pud", 2), ("pmd", 3), ("pmd", 3), ("pte", 4))
_TRACE = {
    _FOUND_PTE: _PTE_PATH,
    _NONE_PTE: _PTE_PATH,
    _FOUND_PMD: _PTE_PATH[:5],
    _FOUND_PUD: (("pgd", 0), ("p4d", 1), ("pud", 2), ("pud", 2)),
    _NONE_PGD: _PTE_PATH[:1],
    _NONE_P4D: _PTE_PATH[:2],
    _NONE_PUD: _PTE_PATH[:3],
    _NONE_PMD: _PTE_PATH[:4],
    _OUTSIDE: (),
    **{code: _PTE_PATH[:5] for code in _REFUSED_PMD},  # pmdp_get_lockless(), then pmdp_get() locked
    _PTE_BEYOND: _PTE_PATH,
    _PTE_SWAP: _PTE_PATH,
}


class WalkBatch(Sequence[FolioWalk]):
    """The records of :func:`walk_many`: numpy columns plus lazily built :class:`FolioWalk`\\ s
    (see the module docstring for the columns).  ``batch[i]`` equals the ``fw`` that
    folio_walk_start()/folio_walk_end() leave for ``addrs[i]`` (``ptl`` is None: the walk ended)."""

    def __init__(self, vma: VMA, addrs: np.ndarray, flags: int, vmas: Sequence[VMA] | None = None) -> None:
        n = len(addrs)
        self.vma = vma
        #: per-address VMAs (:func:`walk_many_cases`), or None: every address is in ``vma``
        self.vmas = vmas
        self.flags = flags
        self.addrs = addrs
        self._found = np.zeros(n, dtype=bool)
        self._level = np.full(n, -1, dtype=np.int8)
        self._entry_pa = np.zeros(n, dtype=np.uint64)
        self._entry = np.zeros(n, dtype=np.uint64)
        self._folio_pfn = np.full(n, -1, dtype=np.int64)
        self._folio_order = np.full(n, -1, dtype=np.int8)
        self._page_pfn = np.full(n, -1, dtype=np.int64)
        self._status = np.zeros(n, dtype=np.int8)
        # The entries each vectorised walk read, per Linux level (pgd, p4d, pud, pmd, pte).
        # (Only the columns an outcome's trace names are ever read: np.empty is enough.)
        self._tpa = np.empty((5, n), dtype=np.uint64)
        self._tval = np.empty((5, n), dtype=np.uint64)
        self._alias: tuple[int, ...] = (0, 1, 2, 3, 4)  # folded level -> its upper level's column
        # Reads the arch's own pgd_offset() made before the walk proper (s390x: the first entry of
        # the top table, whose table type gives the index shift), flat (pa, value, ...): the same
        # for every vectorised walk, and the head of each one's trace (the reference's too).
        self._pre: tuple[int, ...] = ()
        self._records: dict[int, FolioWalk] = {}  # the per-address walker's records
        #: fw->reason of vector outcomes whose reason is per entry (_PTE_SWAP), by index
        self._reasons: dict[int, str] = {}
        #: addresses left _SCALAR whose walk the vector pass followed down to a migration PTE with
        #: a struct page: index -> (pfn, trace) for walk_many_cases() (:func:`_migration_record`)
        self._migration: dict[int, tuple[int, list[TraceStep]]] = {}
        self._unsynced: list[int] = []  # records not yet copied into the columns

    def _sync(self) -> None:
        """Copy the per-address walker's records into the columns (once, when first read)."""
        if not self._unsynced:
            return
        idx = np.array(self._unsynced, dtype=np.intp)
        recs = [self._records[i] for i in self._unsynced]
        self._unsynced = []
        self._found[idx] = [r.folio is not None for r in recs]
        self._level[idx] = [-1 if r.level is None else r.level for r in recs]
        self._entry_pa[idx] = [r.entryp or 0 for r in recs]
        self._entry[idx] = [r.entry or 0 for r in recs]
        self._folio_pfn[idx] = [-1 if r.folio is None else r.folio.pfn for r in recs]
        self._folio_order[idx] = [-1 if r.folio is None else r.folio.order for r in recs]
        self._page_pfn[idx] = [-1 if r.page is None else r.page.pfn for r in recs]

    # The columns (module docstring).
    @property
    def found(self) -> np.ndarray:
        self._sync()
        return self._found

    @property
    def level(self) -> np.ndarray:
        self._sync()
        return self._level

    @property
    def entry_pa(self) -> np.ndarray:
        self._sync()
        return self._entry_pa

    @property
    def entry(self) -> np.ndarray:
        self._sync()
        return self._entry

    @property
    def folio_pfn(self) -> np.ndarray:
        self._sync()
        return self._folio_pfn

    @property
    def folio_order(self) -> np.ndarray:
        self._sync()
        return self._folio_order

    @property
    def page_pfn(self) -> np.ndarray:
        self._sync()
        return self._page_pfn

    @property
    def scalar(self) -> np.ndarray:
        return self._status == _SCALAR

    def __len__(self) -> int:
        return len(self.addrs)

    def vma_of(self, i: int) -> VMA:
        """The VMA address ``i`` was walked in."""
        return self.vma if self.vmas is None else self.vmas[i]

    def _for_flags(self, flags: int) -> WalkBatch:
        """A batch with this one's vector-decided columns for other FW_* flags (the vector pass
        decides only outcomes no flag changes: module docstring), its
        per-address walks still to do.  The trace columns are shared (read only)."""
        b = WalkBatch.__new__(WalkBatch)
        b.vma, b.vmas, b.flags, b.addrs = self.vma, self.vmas, flags, self.addrs
        for k in ("_found", "_level", "_entry_pa", "_entry", "_folio_pfn", "_folio_order", "_page_pfn",
                  "_status"):
            setattr(b, k, getattr(self, k).copy())
        b._tpa, b._tval, b._alias, b._pre = self._tpa, self._tval, self._alias, self._pre
        b._reasons = self._reasons
        b._records, b._unsynced = {}, []
        return b

    def reason(self, i: int) -> str:
        rec = self._records.get(i)
        return rec.reason if rec is not None else self._vector_reason(i, int(self._status[i]))

    def _vector_reason(self, i: int, st: int) -> str:
        return self._reasons[i] if st == _PTE_SWAP else _REASON[st]

    def kind(self, i: int) -> str:
        rec = self._records.get(i)
        if rec is not None:
            return rec.kind
        return "normal" if self._status[i] in (_FOUND_PTE, _FOUND_PMD, _FOUND_PUD) else ""

    def trace(self, i: int) -> list[tuple[str, int, int]]:
        """Record ``i``'s trace as ``(level, pa, value)`` tuples."""
        rec = self._records.get(i)
        if rec is not None:
            return rec.trace_tuples()
        tpa, tval, al, pre = self._tpa, self._tval, self._alias, self._pre
        st = int(self._status[i])
        head = [("pgd", pre[k], pre[k + 1]) for k in range(0, len(pre), 2)] if pre and st != _OUTSIDE else []
        return head + [(name, int(tpa[al[c], i]), int(tval[al[c], i])) for name, c in _TRACE[st]]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        rec = self._records.get(i)
        if rec is not None:
            return rec
        st = int(self._status[i])
        vma = self.vma_of(i)
        fw = FolioWalk(vma=vma, reason=self._vector_reason(i, st))
        if st == _OUTSIDE:
            fw.warnings.append(outside_vma_warning(int(self.addrs[i]), vma))
            return fw
        lvl = int(self._level[i])
        if lvl >= 0:
            fw.level, fw.entryp, fw.entry = lvl, int(self._entry_pa[i]), int(self._entry[i])
        if st in (_FOUND_PTE, _FOUND_PMD, _FOUND_PUD):
            fw.kind = "normal"
            fw.folio = Folio(int(self._folio_pfn[i]), int(self._folio_order[i]))
            fw.page = Page(int(self._page_pfn[i]))
        fw.trace = [TraceStep(name, pa, val) for name, pa, val in self.trace(i)]
        return fw

    def __iter__(self) -> Iterator[FolioWalk]:
        for i in range(len(self)):
            yield self[i]

    def records(self) -> list[FolioWalk]:
        return list(self)

    def _decided_after(self, i: int, pas: list[int]) -> list[int]:
        """Vector-decided records after ``i`` whose walk read an entry at one of ``pas``; they
        become per-address records (to be walked again)."""
        st = self._status[i + 1 :]
        hit = np.zeros(len(st), dtype=bool)
        if set(pas) & set(self._pre[0::2]):  # every vectorised walk read it first (pgd_offset())
            hit = st != _OUTSIDE
        for c in sorted(set(self._alias)):
            for pa in pas:
                hit |= self._tpa[c, i + 1 :] == _U64(pa)  # (an unused column only adds re-walks)
        hit &= st != _SCALAR
        idx = (np.flatnonzero(hit) + i + 1).tolist()
        self._status[idx] = _SCALAR
        return idx

    def _put_record(self, i: int, fw: FolioWalk) -> None:
        self._records[i] = fw
        self._unsynced.append(i)


Sel = Any  # the addresses still walking: slice(lo, hi) while all of them are, else an index array


def _narrow(sel: Sel, mask: np.ndarray, *arrays: np.ndarray) -> tuple[Sel, list[np.ndarray]]:
    """Keep the addresses where ``mask`` holds (no copy while all of them do)."""
    if mask.all():
        return sel, list(arrays)
    sel = np.flatnonzero(mask) + sel.start if isinstance(sel, slice) else sel[mask]
    return sel, [x[mask] for x in arrays]


def _pick(sel: Sel, mask: np.ndarray) -> np.ndarray:
    """The batch indices of the addresses where ``mask`` holds."""
    return np.flatnonzero(mask) + sel.start if isinstance(sel, slice) else sel[mask]


_DENSE_FOLIO_SPAN = 1 << 22  # pfns: above this, page_folio() searches the sorted heads instead


class _VectorWalk:
    """The vectorised walk for one mm (kept on the mm, like the scalar fast path)."""

    def __init__(self, mm: MM, rules: Any) -> None:
        ops = mm.ops
        self.mm, self.ops, self.ram, self.memmap = mm, ops, mm.ram, mm.memmap
        self.rules = rules
        self.tbl = np.frombuffer(mm.ram.buf, dtype=">u8" if mm.ram.big_endian else "<u8")
        hw = ops.hw_level
        names = ("pgd", "p4d", "pud", "pmd", "pte")
        self.index = {n: (_U64(hw(n).shift - 3), _U64((hw(n).entries - 1) << 3)) for n in names}
        self.table_bytes = {n: hw(n).table_size for n in names}
        # An arch with pXd_offset() of its own (s390x) folds per entry: its rules classify every
        # level (a folded level's none/bad depend on the entry too) and its pgd_offset() is asked.
        self.custom = bool(getattr(rules, "lower", None))
        self.folded = {n: ops.folded(n) and not self.custom for n in ("pgd", "p4d", "pud", "pmd")}
        self.same = {u: hw(lower) is hw(u) for u, lower in (("pgd", "p4d"), ("p4d", "pud"), ("pud", "pmd"))}
        # Trace columns: a folded level's entry is its upper neighbour's (pgtable-nop*.h), so its
        # column is an alias of the upper one.
        alias = [0, 1, 2, 3, 4]
        for col, upper in ((1, "pgd"), (2, "p4d"), (3, "pud")):
            if self.same[upper]:
                alias[col] = alias[col - 1]
        self.alias = tuple(alias)
        self.PUD_SIZE = int(ops.PUD_SIZE)
        self.PMD_SIZE = int(ops.PMD_SIZE)
        self.PAGE_SHIFT = _U64(ops.PAGE_SHIFT)
        self._folio_version = -1
        self._heads = np.zeros(0, dtype=np.int64)
        self._orders = np.zeros(0, dtype=np.int64)
        self._dense: np.ndarray | None = None  # pfn - _dense_lo -> index into _heads, or -1
        self._dense_lo = 0
        # PTE value -> swap@pte reason, or a migration entry's pfn (with a struct page), None: other
        self._swap_memo: dict[int, str | int | None] = {}

    def _offset(self, level: str, base: Any, a: np.ndarray) -> np.ndarray:
        s, m = self.index[level]
        return base + ((a >> s) & m)  # type: ignore[no-any-return]

    def _read(self, entp: np.ndarray) -> np.ndarray:
        v = self.tbl[(entp >> _U64(3)).astype(np.intp)]
        return v if v.dtype.isnative else v.astype(np.uint64)  # big-endian guest: native values

    def _pre_reads(self, pgd_base: int) -> tuple[int, ...] | None:
        """The arch's own pgd_offset() on ``mm->pgd`` (its reads, or None: not static)."""
        tbl, size = self.tbl, self.ram.size

        def read(pa: int) -> int:
            if pa & 7 or pa < 0 or pa + 8 > size:
                raise IndexError(pa)  # the reference reports it (unreadable@pgd)
            return int(tbl[pa >> 3])

        return self.rules.pgd_offset_reads(self.ops, pgd_base, read)  # type: ignore[no-any-return]

    def _folios(self) -> None:
        memmap = self.memmap
        heads_l = memmap._heads  # sorted head pfns; MemMap only ever adds folios
        if len(heads_l) == self._folio_version:
            return
        n = len(heads_l)
        om = memmap._orders  # head -> order, in the order added
        heads = np.fromiter(om.keys(), dtype=np.int64, count=n)
        orders = np.fromiter(om.values(), dtype=np.int64, count=n)
        by_pfn = np.argsort(heads, kind="stable")
        heads, orders = heads[by_pfn], orders[by_pfn]
        self._heads, self._orders = heads, orders
        self._folio_version = n
        self._dense = None
        if n:
            sizes = np.int64(1) << orders
            lo = int(heads[0])
            hi = int(heads[-1] + sizes[-1])
            if hi - lo <= _DENSE_FOLIO_SPAN:
                # pfn - lo -> index of its folio: every folio's pages, at once
                dense = np.full(hi - lo, -1, dtype=np.int32)
                if (sizes == 1).all():
                    dense[heads - lo] = np.arange(n, dtype=np.int32)
                else:
                    k = np.repeat(np.arange(n, dtype=np.int32), sizes)
                    starts = np.cumsum(sizes) - sizes
                    within = np.arange(len(k), dtype=np.int64) - np.repeat(starts, sizes)
                    dense[np.repeat(heads - lo, sizes) + within] = k
                self._dense, self._dense_lo = dense, lo

    def page_folio(self, pfn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``page_folio()`` of many pages: (head pfn, order); a pfn in no folio is its own
        order-0 folio (emu/machines/ram.py MemMap)."""
        self._folios()
        heads, orders = self._heads, self._orders
        if not len(heads):
            return pfn, np.zeros(len(pfn), dtype=np.int64)
        if self._dense is not None:
            off = pfn - self._dense_lo
            dense = self._dense
            k = dense[np.clip(off, 0, len(dense) - 1)]
            inside = (off >= 0) & (off < len(dense)) & (k >= 0)
        else:
            k = np.searchsorted(heads, pfn, side="right") - 1
            inside = k >= 0
            k = np.maximum(k, 0)
            inside &= pfn < heads[k] + (np.int64(1) << orders[k])
        if inside.all():
            return heads[k], orders[k]
        return np.where(inside, heads[k], pfn), np.where(inside, orders[k], 0)

    def run(self, b: WalkBatch) -> None:
        """Decide the addresses of a new batch ``b`` that the rules can; leave the rest _SCALAR.
        The steps are folio_walk_start()'s (mm/pagewalk.c), for all addresses at once."""
        r, vma, mm = self.rules, b.vma, self.mm
        status, tpa, tval = b._status, b._tpa, b._tval
        b._alias = self.alias
        lo, hi = 0, len(b)
        a = b.addrs
        # the VMAs: the distinct ones, and which one each address is in (walk_many_cases gives
        # one per address; bounds and flags then act as columns)
        uniq: list[VMA] = [vma]
        which: np.ndarray | None = None  # None: every address is in uniq[0]
        if b.vmas is not None:
            by_id = {id(v): v for v in b.vmas}
            if len(by_id) > 1:
                uniq = list(by_id.values())
                pos = {k: j for j, k in enumerate(by_id)}
                which = np.fromiter((pos[id(v)] for v in b.vmas), dtype=np.intp, count=len(b.vmas))
        vcols = _VmaColumns(uniq, int(self.PAGE_SHIFT))
        pfnmix: Any = bool(vcols.pfnmix[0]) if which is None else vcols.pfnmix[which]
        if which is None:
            inside = (a >= _U64(vma.vm_start)) & (a < _U64(vma.vm_end))
        else:
            inside = (a >= vcols.start[which]) & (a < vcols.end[which])
        sel: Sel = slice(lo, hi)
        if not inside.all():  # WARN_ON_ONCE(addr outside the VMA): not found
            status[_pick(sel, ~inside)] = _OUTSIDE
            sel, (a,) = _narrow(sel, inside, a)
        pgd_base = mm.pgd
        if pgd_base & 7 or pgd_base < 0 or pgd_base + self.table_bytes["pgd"] > self.ram.size:
            return  # everything inside the VMA goes to the scalar walker
        if self.custom:
            pre = self._pre_reads(pgd_base)
            if pre is None:
                return  # pgd_offset() is not the static one here: everything to the scalar walker
            b._pre = pre

        # pgd = pgdp_get(pgd_offset(mm, addr))
        entp = self._offset("pgd", _U64(pgd_base), a)
        v = self._read(entp)
        tpa[0, sel], tval[0, sel] = entp, v
        # pgd_none_or_clear_bad(), p4d_offset(), p4d_none_or_clear_bad(), pud_offset()
        for col, (level, lower, code) in enumerate((("pgd", "p4d", _NONE_PGD), ("p4d", "pud", _NONE_P4D))):
            if self.folded[level]:
                nxt = entp  # unused: the lower level shares this entry
            else:
                none, good, nxt = r.upper(level, v)
                if none.any():
                    status[_pick(sel, none)] = code
                sel, (a, entp, v, nxt) = _narrow(sel, good, a, entp, v, nxt)
            if not self.same[level]:
                sel, (a, nxt) = _narrow(sel, nxt <= _U64(self.ram.size - self.table_bytes[lower]), a, nxt)
                entp = self._offset(lower, nxt, a)
                v = self._read(entp)
                tpa[col + 1, sel], tval[col + 1, sel] = entp, v
        # pud = pudp_get(pudp)
        nxt = entp
        if not self.folded["pud"]:
            none, table, leaf, nxt, pfn = r.pud(v)
            if none.any():
                status[_pick(sel, none)] = _NONE_PUD
            if leaf.any():  # ptl = pud_lock(); a present, normal PUD leaf: found
                # ... if its pfn has a struct page (else page_folio() oopses: the reference says so)
                leaf &= pfn < _U64(self.memmap.section_end_pfn)
                li = _pick(sel, leaf)
                la, lp, lv = a[leaf], entp[leaf], v[leaf]
                nth = (la & _U64(self.PUD_SIZE - 1)) >> self.PAGE_SHIFT
                self._found(b, li, _FOUND_PUD, FW_LEVEL_PUD, lp, lv, pfn[leaf], nth)
            sel, (a, entp, v, nxt) = _narrow(sel, table, a, entp, v, nxt)
        # pmd_table: pmd = pmdp_get_lockless(pmd_offset(pudp, addr))
        if not self.same["pud"]:
            sel, (a, nxt) = _narrow(sel, nxt <= _U64(self.ram.size - self.table_bytes["pmd"]), a, nxt)
            entp = self._offset("pmd", nxt, a)
            v = self._read(entp)
            tpa[3, sel], tval[3, sel] = entp, v
        none, table, leaf, nxt, pfn = r.pmd(v)  # (rules apply pgtable-nopmd.h folding themselves)
        if none.any():
            status[_pick(sel, none)] = _NONE_PMD
        leaf_mix = leaf if pfnmix is True else None  # leaves in VM_PFNMAP/VM_MIXEDMAP VMAs
        if not isinstance(pfnmix, bool):  # per-address VMA flags
            mix = pfnmix[_pick(sel, np.ones(len(leaf), dtype=bool))]
            leaf_mix = leaf & mix
            leaf = leaf & ~mix
        if leaf_mix is not None and leaf_mix.any():
            li = _pick(sel, leaf_mix)
            self._pfnmix_pmd(b, li, np.zeros(len(li), dtype=np.intp) if which is None else which[li], vcols,
                             a[leaf_mix], entp[leaf_mix], v[leaf_mix], pfn[leaf_mix])
        if leaf.any() and pfnmix is not True:
            # ptl = pmd_lock(); vm_normal_page_pmd() gives a page: found
            la, lp, lv, pfn = a[leaf], entp[leaf], v[leaf], pfn[leaf]
            li = _pick(sel, leaf)
            ok = pfn <= _U64(self.memmap.highest_memmap_pfn)
            not_zero = self._not_huge_zero(pfn)
            if not_zero is not None:
                ok &= not_zero  # is_huge_zero_pmd()
            # pfn beyond the memmap (and not the huge zero page's): refused, for every flag set
            self._refused(b, li, ~ok if not_zero is None else ~ok & not_zero, _PMD_BEYOND, FW_LEVEL_PMD, lp, lv)
            li, (la, lp, lv, pfn) = _narrow(li, ok, la, lp, lv, pfn)
            nth = (la & _U64(self.PMD_SIZE - 1)) >> self.PAGE_SHIFT
            self._found(b, li, _FOUND_PMD, FW_LEVEL_PMD, lp, lv, pfn, nth)
        sel, (a, v, nxt) = _narrow(sel, table, a, v, nxt)
        # pte_table: pte_offset_map_lock(); pte = ptep_get(ptep)
        sel, (a, nxt) = _narrow(sel, nxt <= _U64(self.ram.size - self.table_bytes["pte"]), a, nxt)
        entp = self._offset("pte", nxt, a)
        v = self._read(entp)
        tpa[4, sel], tval[4, sel] = entp, v
        none, normal, pfn = r.pte(v)
        if none.any():  # pte_none(): not found, with fw->level/ptep/pte set
            ni = _pick(sel, none)
            status[ni] = _NONE_PTE
            b._level[ni] = FW_LEVEL_PTE
            b._entry_pa[ni] = entp[none]
            b._entry[ni] = v[none]
        in_memmap = pfn <= _U64(self.memmap.highest_memmap_pfn)  # vm_normal_page()
        # ... a normal PTE beyond it is refused (print_bad_pte()), for every flag set unless its
        # pfn is a zero page's (is_zero_pfn(): FW_ZEROPAGE would find it)
        beyond = normal & ~in_memmap
        if beyond.any():
            zp = np.asarray(pfn, dtype=np.uint64) - _U64(mm.zero_pfn)  # (wraps below zero_pfn)
            beyond &= zp >= _U64(mm.zero_page_nr)
            self._refused(b, sel, beyond, _PTE_BEYOND, FW_LEVEL_PTE, entp, v)
        normal &= in_memmap
        other = ~(none | normal | beyond)
        if other.any():
            self._swap_ptes(b, sel, other, entp, v)
        sel, (entp, v, pfn) = _narrow(sel, normal, entp, v, pfn)
        self._found(b, sel, _FOUND_PTE, FW_LEVEL_PTE, entp, v, pfn, None)

    def _swap_ptes(self, b: WalkBatch, sel: Sel, mask: np.ndarray, entp: np.ndarray, v: np.ndarray) -> None:
        """PTEs that are neither none nor present (folio_walk_start()'s ``!pte_none(pte)`` branch,
        mm/pagewalk.c v6.12): a swap entry that is no migration entry is not found, reason
        ``swap@pte:<type>`` whatever the flags.  Each distinct value is asked of the arch's own
        predicates once (pte_present(), pte_none(), pte_to_swp_entry(), is_migration_entry());
        migration entries (FW_MIGRATION finds them) and anything else stay per-address."""
        memo = self._swap_memo
        ops = self.ops
        vals = v[mask]
        reasons: list[str | None] = []
        mig: list[int] = []  # positions in vals of migration entries (with a struct page)
        for k, x in enumerate(vals.tolist()):
            if x in memo:
                r = memo[x]
            else:
                r = None
                if not (ops.pte_present(x) or ops.pte_none(x) or ops.ptep_get_gathers(x)):
                    entry = ops.pte_to_swp_entry(x)
                    if not ops.swap.is_migration_entry(entry):
                        r = f"swap@pte:{ops.swap.name(entry.type)}"
                    elif self.memmap.has_struct_page(ops.swp_offset_pfn(entry)):
                        r = ops.swp_offset_pfn(entry)  # pfn_swap_entry_to_page() finds a page
                if len(memo) > 1 << 16:
                    memo.clear()
                memo[x] = r
            if isinstance(r, int):
                mig.append(k)
                r = None
            reasons.append(r)
        idx = _pick(sel, mask)
        if mig:
            al, pre = self.alias, b._pre
            head = [TraceStep("pgd", pre[j], pre[j + 1]) for j in range(0, len(pre), 2)]
            for k in mig:
                i = int(idx[k])
                x = int(vals[k])
                trace = head + [TraceStep(name, int(b._tpa[al[c], i]), int(b._tval[al[c], i]))
                                for name, c in _PTE_PATH]
                b._migration[i] = (memo[x], trace)  # type: ignore[assignment]
        ok = np.array([r is not None for r in reasons], dtype=bool)
        if not ok.any():
            return
        m = mask.copy()
        m[mask] = ok
        self._refused(b, sel, m, _PTE_SWAP, FW_LEVEL_PTE, entp, v)
        b._reasons.update(zip(idx[ok].tolist(), [r for r in reasons if r is not None], strict=True))

    def _not_huge_zero(self, pfn: np.ndarray) -> np.ndarray | None:
        """``pfn != huge_zero_pfn`` (is_huge_zero_pmd() of a present leaf), None: no huge zero page."""
        hz = self.mm.huge_zero_pfn
        return None if hz is None else pfn != _U64(hz)

    def _refused(self, b: WalkBatch, sel: Sel, mask: np.ndarray, status: int, level: int,
                 entp: np.ndarray, v: np.ndarray) -> None:
        """Not found, with fw->level and the entry set (a present leaf vm_normal_page*() refuses)."""
        if not mask.any():
            return
        idx = _pick(sel, mask)
        b._status[idx] = status
        b._level[idx] = level
        b._entry_pa[idx] = entp[mask]
        b._entry[idx] = v[mask]

    def _pfnmix_pmd(self, b: WalkBatch, li: np.ndarray, w: np.ndarray, vc: _VmaColumns, la: np.ndarray,
                    lp: np.ndarray, lv: np.ndarray, pfn: np.ndarray) -> None:
        """Present normal PMD leaves (not special, not devmap) in VM_PFNMAP/VM_MIXEDMAP VMAs:
        vm_normal_page_pmd() (mm/memory.c, v6.12) then folio_walk_start()'s PMD branch
        (mm/pagewalk.c).  ``w``: each leaf's VMA (index into ``vc``).  Leaves whose outcome a
        FW_* flag could change (the huge zero page: FW_ZEROPAGE) stay with the per-address walker."""
        mixed = vc.mixed[w]
        # VM_MIXEDMAP: pfn_valid() -> the page (no devmap/zero/memmap test), else NULL
        valid = pfn < _U64(self.memmap.section_end_pfn)
        found = mixed & valid
        not_zero = self._not_huge_zero(pfn)
        nz = np.ones(len(pfn), dtype=bool) if not_zero is None else not_zero
        self._refused(b, li, mixed & ~valid & nz, _PMD_MIXEDMAP_INVALID, FW_LEVEL_PMD, lp, lv)
        # VM_PFNMAP: pfn == vm_pgoff + ((addr - vm_start) >> PAGE_SHIFT) -> NULL (linear);
        # !is_cow_mapping() -> NULL; else the normal tests
        pfnmap = ~mixed & vc.pgoff_ok[w]
        linear = pfnmap & (pfn == vc.pgoff[w] + ((la - vc.start[w]) >> self.PAGE_SHIFT))
        self._refused(b, li, linear & nz, _PMD_PFNMAP_LINEAR, FW_LEVEL_PMD, lp, lv)
        pfnmap &= ~linear
        self._refused(b, li, pfnmap & ~vc.cow[w] & nz, _PMD_PFNMAP_NOT_COW, FW_LEVEL_PMD, lp, lv)
        pfnmap &= vc.cow[w] & nz  # (devmap: the rules' leaves have none; huge zero page: scalar)
        beyond = pfnmap & (pfn > _U64(self.memmap.highest_memmap_pfn))
        self._refused(b, li, beyond, _PMD_BEYOND, FW_LEVEL_PMD, lp, lv)
        found |= pfnmap & ~beyond
        if found.any():
            nth = (la[found] & _U64(self.PMD_SIZE - 1)) >> self.PAGE_SHIFT
            self._found(b, li[found], _FOUND_PMD, FW_LEVEL_PMD, lp[found], lv[found], pfn[found], nth)

    def _found(self, b: WalkBatch, sel: Sel, status: int, level: int, entp: np.ndarray,
               v: np.ndarray, pfn: np.ndarray, nth: np.ndarray | None) -> None:
        # found: folio = page_folio(page); fw->page = nth_page(page, offset) (normal pages only)
        b._status[sel] = status
        b._found[sel] = True
        b._level[sel] = level
        b._entry_pa[sel] = entp
        b._entry[sel] = v
        base = pfn.astype(np.int64)
        head, order = self.page_folio(base)
        b._folio_pfn[sel] = head
        b._folio_order[sel] = order
        b._page_pfn[sel] = base if nth is None else base + nth.astype(np.int64)


class _VmaColumns:
    """Per distinct VMA, what the vector pass tests: bounds, VM_PFNMAP/VM_MIXEDMAP,
    is_cow_mapping(), vm_pgoff (``pgoff_ok``: ``vm_pgoff + pages`` fits 64 bits, so the uint64
    sum is the kernel's; a VMA where it does not leaves its PFNMAP leaves to the per-address walker)."""

    def __init__(self, vmas: Sequence[VMA], page_shift: int) -> None:
        self.start = np.array([v.vm_start for v in vmas], dtype=np.uint64)
        self.end = np.array([v.vm_end for v in vmas], dtype=np.uint64)
        self.pfnmix = np.array([bool(v.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)) for v in vmas], dtype=bool)
        self.mixed = np.array([bool(v.vm_flags & VM_MIXEDMAP) for v in vmas], dtype=bool)
        self.cow = np.array([is_cow_mapping(v.vm_flags) for v in vmas], dtype=bool)
        ok = [0 <= v.vm_pgoff and v.vm_pgoff + ((v.vm_end - v.vm_start) >> page_shift) < 1 << 64 for v in vmas]
        self.pgoff_ok = np.array(ok, dtype=bool)
        self.pgoff = np.array([v.vm_pgoff if k else 0 for v, k in zip(vmas, ok, strict=True)], dtype=np.uint64)


def _vector_walker(mm: MM) -> _VectorWalk | None:
    """The mm's vectorised walk: the arch's VECTOR_RULES, else MemoRules (DynamicFoldingRules for
    an arch with pXd_offset() of its own); None where the scalar fast path is off."""
    from emu.mm.pagewalk_fast import fast_walker

    vw: _VectorWalk | None = getattr(mm, "_folio_walk_vector", None)
    if vw is not None and vw.ops is mm.ops and vw.ram is mm.ram and vw.memmap is mm.memmap:
        return vw
    fast = fast_walker(mm)
    if not fast.enabled:
        return None
    rules_cls = VECTOR_RULES.get(mm.ops.arch, DynamicFoldingRules if fast.custom else MemoRules)
    if fast.custom and not issubclass(rules_cls, DynamicFoldingRules):
        return None  # the vector pass inlines static pXd_offset(): only these rules check them
    vw = _VectorWalk(mm, rules_cls(mm.ops, mm))
    mm._folio_walk_vector = vw  # type: ignore[attr-defined]
    return vw


def walk_many(vma: VMA, addrs: Sequence[int] | np.ndarray, flags: int = 0, *, isolated: bool = False,
              vectorize: bool = True) -> WalkBatch:
    """folio_walk_start() + folio_walk_end() for each of ``addrs`` in ``vma``, in order.

    ``flags``: FW_MIGRATION / FW_ZEROPAGE, as for folio_walk_start().  ``isolated``: undo each
    walk's writes (bad entries Linux clears) before the next address, so that every address sees
    the tables as they were at the call.  ``vectorize=False`` walks every address with the
    per-address walker (for comparison).  The mmap lock must be held in read mode.
    Returns a :class:`WalkBatch` (module docstring).
    """
    mm = vma.vm_mm
    if mm is None:
        raise ValueError("VMA is not attached to an mm (mm.add_vma)")
    mm.mmap_assert_locked()
    try:
        arr = np.asarray(addrs, dtype=np.uint64)
    except (OverflowError, ValueError, TypeError) as exc:
        raise ValueError(f"addresses must be 64-bit unsigned integers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError("walk_many takes a flat sequence of addresses")
    b = WalkBatch(vma, arr, flags)
    vw = _vector_walker(mm) if vectorize else None
    if vw is not None and len(arr):
        vw.run(b)
    # The rest, one by one and in order.  In a sequence, a walk that clears a bad entry
    # (pXd_clear_bad()) changes what every later walk reads there: a later address the vector
    # pass decided from that entry's old value (hostile tables can reach one entry at two
    # levels) is walked again, after the clear, by the per-address walker.
    todo = np.flatnonzero(b._status == _SCALAR).tolist()
    heapq.heapify(todo)
    # Many kept records (no cycles among them): the cyclic GC would rescan them over and over.
    gc_was_enabled = gc.isenabled()
    if len(todo) > 1000:
        gc.disable()
    try:
        _walk_each(b, vma, arr, flags, isolated, vw is not None, todo)
    finally:
        if gc_was_enabled:
            gc.enable()
    return b


def walk_many_cases(vmas: Sequence[VMA], addrs: Sequence[int] | np.ndarray,
                    flag_sets: Sequence[int]) -> list[WalkBatch]:
    """``[walk_many(vmas[i], [addrs[i]], f, isolated=True) ...]`` for every flag set ``f``, with
    one VMA per address: one :class:`WalkBatch` per flag set, each record exactly what
    ``walk_many(vma, addrs_in_vma, f, isolated=True)`` gives (every address sees the tables as
    they were at the call).  One vector pass serves every VMA and every flag set (the addresses
    it decides -- normal leaves, none entries, outside the VMA -- no FW_* flag changes); only the
    rest are walked per flag set by the per-address walker.  The mmap lock must be held."""
    if not vmas:
        return [WalkBatch(None, np.zeros(0, dtype=np.uint64), f, []) for f in flag_sets]  # type: ignore[arg-type]
    vma = vmas[0]
    mm = vma.vm_mm
    if mm is None or any(v.vm_mm is not mm for v in vmas):
        raise ValueError("every VMA must be attached to the same mm (mm.add_vma)")
    mm.mmap_assert_locked()
    arr = np.asarray(addrs, dtype=np.uint64)
    if arr.ndim != 1 or len(arr) != len(vmas):
        raise ValueError("walk_many_cases takes one VMA per address")
    vmas = list(vmas)
    out: list[WalkBatch] = []
    first: WalkBatch | None = None
    vw = _vector_walker(mm)
    ram = mm.ram
    addr_of: list[int] = []
    # vector-refused addresses: the reference walker at once (folio_walk_start() would try the
    # fast path first, which gives up on the same entries); without the vector pass, the fast path
    walk = folio_walk_start_reference if vw is not None else folio_walk_start
    # per address: the records walked so far, each with the FW_* bits its walk tested
    done: dict[int, list[tuple[int, int, FolioWalk]]] = {}
    gc_was_enabled = gc.isenabled()
    try:
        for f in flag_sets:
            if first is None:
                b = first = WalkBatch(vma, arr, f, vmas)
                if vw is not None and len(arr):
                    vw.run(b)
                todo = np.flatnonzero(b._status == _SCALAR).tolist()
                migration = b._migration
                if len(todo) > 1000:
                    gc.disable()
                addr_of = arr.tolist() if todo else []
            else:
                b = first._for_flags(f)
            records, unsynced = b._records, b._unsynced
            for i in todo:
                # A walk under flags g that tested only the bits T of its flags took the path
                # every flag set agreeing with g on T takes (folio_walk_start() reads its flags
                # only as ``flags & FW_*``; the tables are as at the call): its record is this
                # one's too.
                seen = done.setdefault(i, [])
                fw = next((r for g, t, r in seen if (g ^ f) & t == 0), None)
                if fw is None and i in migration:
                    fw = _migration_record(mm, vmas[i], b, i, f, *migration[i])
                    seen.append((f, FW_MIGRATION, fw))
                elif fw is None:
                    fw = FolioWalk()
                    tf = _TestedFlags(f)
                    with ram.undo():  # (the vector pass refused it: the fast path would too)
                        if walk(fw, vmas[i], addr_of[i], tf) is not None:
                            folio_walk_end(fw, vmas[i])
                    seen.append((f, tf.tested, fw))
                records[i] = fw
                unsynced.append(i)
            out.append(b)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def _migration_record(mm: MM, vma: VMA, b: WalkBatch, i: int, flags: int, pfn: int,
                      trace: list[TraceStep]) -> FolioWalk:
    """The record folio_walk_start() + folio_walk_end() leave for a walk through good tables to a
    PTE holding a migration entry whose pfn has a struct page (mm/pagewalk.c v6.12, pte_table:
    ``!pte_none(pte)`` and ``(flags & FW_MIGRATION) && is_migration_entry(entry)``): with
    FW_MIGRATION found, ``fw->page`` NULL (expose_page = false), the folio of
    ``pfn_swap_entry_to_page()``; without it not found, ``migration-entry@pte``.  The walk's only
    flag test is FW_MIGRATION (FW_ZEROPAGE is read for present PTEs only)."""
    fw = FolioWalk(level=FW_LEVEL_PTE, entryp=int(b._tpa[4, i]), entry=int(b._tval[4, i]), vma=vma,
                   trace=list(trace))
    if flags & FW_MIGRATION:
        fw.kind = "migration-entry"
        fw.reason = "found"
        fw.folio = mm.memmap.page_folio(mm.memmap.pfn_to_page(pfn))
    else:
        fw.reason = "migration-entry@pte"
    return fw


class _TestedFlags(int):
    """FW_* flags that note which bits were tested (``flags & FW_MIGRATION``)."""

    tested = 0

    def __and__(self, other: Any) -> int:
        self.tested |= int(other)
        return int(self) & int(other)

    __rand__ = __and__


def _walk_each(b: WalkBatch, vma: VMA, arr: np.ndarray, flags: int, isolated: bool, vector: bool,
               todo: list[int]) -> None:
    """The per-address walks of :func:`walk_many`, in address order (``todo`` is a heap)."""
    addr_of = arr.tolist() if len(todo) > len(arr) // 8 else None
    records, unsynced = b._records, b._unsynced
    ram = vma.vm_mm.ram  # type: ignore[union-attr]
    vmas = b.vmas
    while todo:
        i = heapq.heappop(todo)
        a = addr_of[i] if addr_of is not None else int(arr[i])
        if vmas is not None:
            vma = vmas[i]
        fw = FolioWalk()
        if isolated:
            with ram.undo():
                if folio_walk_start(fw, vma, a, flags) is not None:
                    folio_walk_end(fw, vma)
        else:
            if folio_walk_start(fw, vma, a, flags) is not None:
                folio_walk_end(fw, vma)
            if fw._cleared and vector:
                for j in b._decided_after(i, [s.pa for s in fw.cleared]):
                    heapq.heappush(todo, j)
        records[i] = fw
        unsynced.append(i)
