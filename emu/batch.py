"""``walk_many()``: folio_walk_start() + folio_walk_end() over many addresses in one call.

``walk_many(vma, addrs, flags)`` gives, for every address, exactly the record that

    fw = FolioWalk()
    if folio_walk_start(fw, vma, addr, flags) is not None:
        folio_walk_end(fw, vma)

leaves behind (``emu/walk.py``; mm/pagewalk.c v6.12 or the seed ``aa39ca6940f1``, as ``ops.kernel``
says), with the addresses walked one after another in the order given -- so a bad entry that
``pgd_none_or_clear_bad()`` clears for one address is already clear for the next.  With
``isolated=True`` every address instead sees the tables as they were when the call began (each
walk's writes are undone, as ``foliowalk verify`` needs).

How it is fast: for architectures that register *vector rules* (:data:`VECTOR_RULES`; x86-64 so
far) the walk is done for all addresses at once with numpy -- index extraction, the table reads
(``np.frombuffer`` over guest RAM: the same bytes the MMU reads), and Linux's predicates for the
shapes nearly every entry has: good table entries, present normal leaves (PTE, PMD, PUD) and none
entries at any level, and addresses outside the VMA.  Every other address (swap, migration,
PROT_NONE, special, devmap, zero-page and bad entries, entries outside RAM, ...) is walked by
:func:`~emu.walk.folio_walk_start` itself, in order.  Architectures without vector rules are walked
address by address with the scalar walker (still exact, just slower).

The result, :class:`WalkBatch`, is columns (numpy arrays, one element per address) that verify and
the fuzzer read without building any Python object per address, plus ``batch[i]`` which
materialises the :class:`~emu.walk.FolioWalk` record of address ``i`` (trace, warnings and cleared
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

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from .memory import Folio, Page
from .mm import MM, VM_MIXEDMAP, VM_PFNMAP, VMA
from .walk import (
    FW_LEVEL_PMD,
    FW_LEVEL_PTE,
    FW_LEVEL_PUD,
    FolioWalk,
    TraceStep,
    folio_walk_end,
    folio_walk_start,
    outside_vma_warning,
)

__all__ = ["walk_many", "WalkBatch", "VECTOR_RULES", "X86_64Rules"]

_U64 = np.uint64

# Outcome codes of the vectorised walk (WalkBatch._status).  0: decided by the per-address walker.
_SCALAR = 0
_FOUND_PTE, _FOUND_PMD, _FOUND_PUD = 1, 2, 3
_NONE_PGD, _NONE_P4D, _NONE_PUD, _NONE_PMD, _NONE_PTE = 4, 5, 6, 7, 8
_OUTSIDE = 9
_REASON = {
    _FOUND_PTE: "found", _FOUND_PMD: "found", _FOUND_PUD: "found",
    _NONE_PGD: "none@pgd", _NONE_P4D: "none@p4d", _NONE_PUD: "none@pud", _NONE_PMD: "none@pmd",
    _NONE_PTE: "none@pte", _OUTSIDE: "outside-vma",
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
}


class WalkBatch(Sequence[FolioWalk]):
    """The records of :func:`walk_many`: numpy columns plus lazily built :class:`FolioWalk`\\ s
    (see the module docstring for the columns).  ``batch[i]`` equals the ``fw`` that
    folio_walk_start()/folio_walk_end() leave for ``addrs[i]`` (``ptl`` is None: the walk ended)."""

    def __init__(self, vma: VMA, addrs: np.ndarray, flags: int) -> None:
        n = len(addrs)
        self.vma = vma
        self.flags = flags
        self.addrs = addrs
        self.found = np.zeros(n, dtype=bool)
        self.level = np.full(n, -1, dtype=np.int8)
        self.entry_pa = np.zeros(n, dtype=np.uint64)
        self.entry = np.zeros(n, dtype=np.uint64)
        self.folio_pfn = np.full(n, -1, dtype=np.int64)
        self.folio_order = np.full(n, -1, dtype=np.int8)
        self.page_pfn = np.full(n, -1, dtype=np.int64)
        self._status = np.zeros(n, dtype=np.int8)
        # The entries each vectorised walk read, per Linux level (pgd, p4d, pud, pmd, pte).
        # (Only the columns an outcome's trace names are ever read: np.empty is enough.)
        self._tpa = np.empty((5, n), dtype=np.uint64)
        self._tval = np.empty((5, n), dtype=np.uint64)
        self._alias: tuple[int, ...] = (0, 1, 2, 3, 4)  # folded level -> its upper level's column
        self._records: dict[int, FolioWalk] = {}  # the per-address walker's records

    @property
    def scalar(self) -> np.ndarray:
        return self._status == _SCALAR

    def __len__(self) -> int:
        return len(self.addrs)

    def reason(self, i: int) -> str:
        rec = self._records.get(i)
        return rec.reason if rec is not None else _REASON[int(self._status[i])]

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
        tpa, tval, al = self._tpa, self._tval, self._alias
        return [(name, int(tpa[al[c], i]), int(tval[al[c], i])) for name, c in _TRACE[int(self._status[i])]]

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
        fw = FolioWalk(vma=self.vma, reason=_REASON[st])
        if st == _OUTSIDE:
            fw.warnings.append(outside_vma_warning(int(self.addrs[i]), self.vma))
            return fw
        lvl = int(self.level[i])
        if lvl >= 0:
            fw.level, fw.entryp, fw.entry = lvl, int(self.entry_pa[i]), int(self.entry[i])
        if st in (_FOUND_PTE, _FOUND_PMD, _FOUND_PUD):
            fw.kind = "normal"
            fw.folio = Folio(int(self.folio_pfn[i]), int(self.folio_order[i]))
            fw.page = Page(int(self.page_pfn[i]))
        fw.trace = [TraceStep(name, pa, val) for name, pa, val in self.trace(i)]
        return fw

    def __iter__(self) -> Iterator[FolioWalk]:
        for i in range(len(self)):
            yield self[i]

    def records(self) -> list[FolioWalk]:
        return list(self)

    def _put_record(self, i: int, fw: FolioWalk) -> None:
        self._records[i] = fw
        self._status[i] = _SCALAR
        self.found[i] = fw.folio is not None
        self.level[i] = -1 if fw.level is None else fw.level
        self.entry_pa[i] = fw.entryp or 0
        self.entry[i] = fw.entry or 0
        self.folio_pfn[i] = fw.folio.pfn if fw.folio is not None else -1
        self.folio_order[i] = fw.folio.order if fw.folio is not None else -1
        self.page_pfn[i] = fw.page.pfn if fw.page is not None else -1


# -- vector rules: Linux's predicates over arrays of entries, per architecture --------------------


class X86_64Rules:
    """x86-64 (arch/x86/include/asm/pgtable.h, v6.12) over uint64 arrays, for the shapes the
    vectorised walk decides; everything else goes to the scalar walker.  Every mask is the one
    archs/x86_64.py derives from its construct declarations (never a second hand-typed copy);
    tests/test_batch_walk.py checks these rules against the scalar predicates on random entries.
    """

    def __init__(self, ops: Any) -> None:
        from archs import x86_64 as x

        self.ops = ops
        self.P = _U64(x._PAGE_PRESENT)
        self.PSE = _U64(x._PAGE_PSE)
        self.SPECIAL = _U64(x._PAGE_SPECIAL)
        self.DEVMAP = _U64(x._PAGE_DEVMAP)
        self.PFN = _U64(x.PTE_PFN_MASK)
        self.PMD_PFN = _U64(x.PHYSICAL_PMD_PAGE_MASK)
        self.PUD_PFN = _U64(x.PHYSICAL_PUD_PAGE_MASK)
        self.FLAGS = _U64(x.PTE_FLAGS_MASK)
        self.NOT_KNL = _U64(~x._PAGE_KNL_ERRATUM_MASK & x.U64)
        nx = x._PAGE_NX if getattr(ops, "pti", True) else 0
        self.KERNPG = _U64(x._KERNPG_TABLE)
        # pgd_bad(): (flags & ~(USER | NX?)) != _KERNPG_TABLE
        self.PGD_BAD_KEEP = _U64(x.PTE_FLAGS_MASK & ~(x._PAGE_USER | nx) & x.U64)
        # p4d_bad(): flags & ~(_KERNPG_TABLE | USER | NX?) != 0
        self.P4D_BAD = _U64(x.PTE_FLAGS_MASK & ~(x._KERNPG_TABLE | x._PAGE_USER | nx) & x.U64)
        # pmd_bad(): (flags & ~(USER | ACCESSED)) != (_KERNPG_TABLE & ~ACCESSED)
        self.PMD_BAD_KEEP = _U64(x.PTE_FLAGS_MASK & ~(x._PAGE_USER | x._PAGE_ACCESSED) & x.U64)
        self.PMD_TABLE = _U64(x._KERNPG_TABLE & ~x._PAGE_ACCESSED)
        self.PAGE_SHIFT = _U64(x.PAGE_SHIFT)
        self.v612 = ops.kernel == "v6.12"

    def none(self, level: str, v: np.ndarray) -> np.ndarray:
        """``pXd_none()`` of a real level: pgd is ``!val``, the others ignore the KNL A/D bits."""
        if level == "pgd":
            return v == 0
        return (v & self.NOT_KNL) == 0

    def upper_good(self, level: str, v: np.ndarray) -> np.ndarray:
        """pgd/p4d: neither none nor bad (pgd_none_or_clear_bad() walks on)."""
        if level == "pgd":
            return (v != 0) & ((v & self.PGD_BAD_KEEP) == self.KERNPG)
        return ((v & self.NOT_KNL) != 0) & ((v & self.P4D_BAD) == 0)

    def table_pa(self, level: str, v: np.ndarray) -> np.ndarray:
        """pgd_page_vaddr/p4d_pgtable/pud_pgtable/pmd_page_vaddr of entries without _PAGE_PSE."""
        return v & self.PFN

    def pud_table(self, v: np.ndarray) -> np.ndarray:
        """Not none, not pud_leaf(), pud_present(): the walk goes on to the PMD table."""
        return (v & (self.PSE | self.P)) == self.P

    def pud_leaf_found(self, v: np.ndarray) -> np.ndarray:
        """A present PUD leaf that folio_walk_start() returns: not devmap (v6.12: not special)."""
        ok = ((v & (self.PSE | self.P)) == (self.PSE | self.P)) & ((v & self.DEVMAP) == 0)
        if self.v612:
            ok &= (v & self.SPECIAL) == 0
        return ok

    def pud_pfn(self, v: np.ndarray) -> np.ndarray:  # present: no inversion (pgtable-invert.h)
        return (v & self.PUD_PFN) >> self.PAGE_SHIFT

    def pmd_table(self, v: np.ndarray) -> np.ndarray:
        """A table __pte_offset_map() accepts: present, no PSE/DEVMAP, not pmd_bad()."""
        return (((v & (self.PSE | self.P)) == self.P) & ((v & self.DEVMAP) == 0)
                & ((v & self.PMD_BAD_KEEP) == self.PMD_TABLE))

    def pmd_leaf_normal(self, v: np.ndarray) -> np.ndarray:
        """A present PMD leaf that is neither pmd_special() nor pmd_devmap() (the rest of
        vm_normal_page_pmd() -- VMA flags, huge zero pfn, highest_memmap_pfn -- is generic)."""
        return ((v & (self.PSE | self.P)) == (self.PSE | self.P)) & ((v & (self.SPECIAL | self.DEVMAP)) == 0)

    def pmd_pfn(self, v: np.ndarray) -> np.ndarray:
        return (v & self.PMD_PFN) >> self.PAGE_SHIFT

    def pte_normal(self, v: np.ndarray) -> np.ndarray:
        """pte_present() through _PAGE_PRESENT and not pte_special() (vm_normal_page() then
        only checks highest_memmap_pfn)."""
        return (v & (self.P | self.SPECIAL)) == self.P

    def pte_pfn(self, v: np.ndarray) -> np.ndarray:
        return (v & self.PFN) >> self.PAGE_SHIFT


#: arch -> vector rules class.  An architecture without an entry is walked address by address.
#: A rules class must send every entry that pgd/p4d/pmd_bad() would make the walk clear (and
#: anything else it cannot decide exactly) to the per-address walker: that keeps a sequence of
#: walks with clears exact (walk_many) -- tests/test_batch_walk.py checks it for each entry here.
VECTOR_RULES: dict[str, Any] = {"x86_64": X86_64Rules}


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
        self.folded = {n: ops.folded(n) for n in ("pgd", "p4d", "pud", "pmd")}
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
        self._folio_version = -1
        self._heads = np.zeros(0, dtype=np.int64)
        self._orders = np.zeros(0, dtype=np.int64)
        self._dense: np.ndarray | None = None  # pfn - _dense_lo -> index into _heads, or -1
        self._dense_lo = 0

    def _offset(self, level: str, base: Any, a: np.ndarray) -> np.ndarray:
        s, m = self.index[level]
        return base + ((a >> s) & m)  # type: ignore[no-any-return]

    def _read(self, entp: np.ndarray) -> np.ndarray:
        return self.tbl[(entp >> _U64(3)).astype(np.intp)]  # type: ignore[no-any-return]

    def _folios(self) -> None:
        memmap = self.memmap
        if len(memmap._heads) == self._folio_version:  # MemMap only ever adds folios
            return
        folios = memmap.folios()
        self._heads = np.array([f.pfn for f in folios], dtype=np.int64)
        self._orders = np.array([f.order for f in folios], dtype=np.int64)
        self._folio_version = len(folios)
        self._dense = None
        if folios:
            lo = folios[0].pfn
            hi = folios[-1].pfn + folios[-1].nr_pages
            if hi - lo <= _DENSE_FOLIO_SPAN:
                dense = np.full(hi - lo, -1, dtype=np.int32)
                for k, f in enumerate(folios):
                    dense[f.pfn - lo : f.pfn - lo + f.nr_pages] = k
                self._dense, self._dense_lo = dense, lo

    def page_folio(self, pfn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``page_folio()`` of many pages: (head pfn, order); a pfn in no folio is its own
        order-0 folio (emu/memory.py MemMap)."""
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
        inside = (a >= _U64(vma.vm_start)) & (a < _U64(vma.vm_end))
        sel: Sel = slice(lo, hi)
        if not inside.all():  # WARN_ON_ONCE(addr outside the VMA): not found
            status[_pick(sel, ~inside)] = _OUTSIDE
            sel, (a,) = _narrow(sel, inside, a)
        pgd_base = mm.pgd
        if pgd_base & 7 or pgd_base < 0 or pgd_base + self.table_bytes["pgd"] > self.ram.size:
            return  # everything inside the VMA goes to the scalar walker

        # pgd = pgdp_get(pgd_offset(mm, addr))
        entp = self._offset("pgd", _U64(pgd_base), a)
        v = self._read(entp)
        tpa[0, sel], tval[0, sel] = entp, v
        # pgd_none_or_clear_bad(), p4d_offset(), p4d_none_or_clear_bad(), pud_offset()
        for col, (level, lower, code) in enumerate((("pgd", "p4d", _NONE_PGD), ("p4d", "pud", _NONE_P4D))):
            if not self.folded[level]:
                none = r.none(level, v)
                if none.any():
                    status[_pick(sel, none)] = code
                sel, (a, entp, v) = _narrow(sel, r.upper_good(level, v), a, entp, v)
            if not self.same[level]:
                base = r.table_pa(level, v)
                sel, (a, base) = _narrow(sel, base <= _U64(self.ram.size - self.table_bytes[lower]), a, base)
                entp = self._offset(lower, base, a)
                v = self._read(entp)
                tpa[col + 1, sel], tval[col + 1, sel] = entp, v
        # pud = pudp_get(pudp)
        if not self.folded["pud"]:
            none = r.none("pud", v)
            if none.any():
                status[_pick(sel, none)] = _NONE_PUD
            leaf = r.pud_leaf_found(v)
            if leaf.any():  # ptl = pud_lock(); a present, normal PUD leaf: found
                li = _pick(sel, leaf)
                la, lp, lv = a[leaf], entp[leaf], v[leaf]
                nth = (la & _U64(self.PUD_SIZE - 1)) >> r.PAGE_SHIFT
                self._found(b, li, _FOUND_PUD, FW_LEVEL_PUD, lp, lv, r.pud_pfn(lv), nth)
            sel, (a, entp, v) = _narrow(sel, r.pud_table(v), a, entp, v)
        # pmd_table: pmd = pmdp_get_lockless(pmd_offset(pudp, addr))
        if not self.same["pud"]:
            base = r.table_pa("pud", v)
            sel, (a, base) = _narrow(sel, base <= _U64(self.ram.size - self.table_bytes["pmd"]), a, base)
            entp = self._offset("pmd", base, a)
            v = self._read(entp)
            tpa[3, sel], tval[3, sel] = entp, v
        if not self.folded["pmd"]:
            none = r.none("pmd", v)
            if none.any():
                status[_pick(sel, none)] = _NONE_PMD
            if not vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP):
                leaf = r.pmd_leaf_normal(v)
                if leaf.any():  # ptl = pmd_lock(); vm_normal_page_pmd() gives a page: found
                    la, lp, lv = a[leaf], entp[leaf], v[leaf]
                    li = _pick(sel, leaf)
                    pfn = r.pmd_pfn(lv)
                    ok = pfn <= _U64(self.memmap.highest_memmap_pfn)
                    if mm.huge_zero_pfn is not None:
                        ok &= pfn != _U64(mm.huge_zero_pfn)  # is_huge_zero_pmd()
                    li, (la, lp, lv, pfn) = _narrow(li, ok, la, lp, lv, pfn)
                    nth = (la & _U64(self.PMD_SIZE - 1)) >> r.PAGE_SHIFT
                    self._found(b, li, _FOUND_PMD, FW_LEVEL_PMD, lp, lv, pfn, nth)
            sel, (a, entp, v) = _narrow(sel, r.pmd_table(v), a, entp, v)
        # pte_table: pte_offset_map_lock(); pte = ptep_get(ptep)
        base = r.table_pa("pmd", v)
        sel, (a, base) = _narrow(sel, base <= _U64(self.ram.size - self.table_bytes["pte"]), a, base)
        entp = self._offset("pte", base, a)
        v = self._read(entp)
        tpa[4, sel], tval[4, sel] = entp, v
        none = r.none("pte", v)
        if none.any():  # pte_none(): not found, with fw->level/ptep/pte set
            ni = _pick(sel, none)
            status[ni] = _NONE_PTE
            b.level[ni] = FW_LEVEL_PTE
            b.entry_pa[ni] = entp[none]
            b.entry[ni] = v[none]
        pfn = r.pte_pfn(v)
        normal = r.pte_normal(v) & (pfn <= _U64(self.memmap.highest_memmap_pfn))  # vm_normal_page()
        sel, (entp, v, pfn) = _narrow(sel, normal, entp, v, pfn)
        self._found(b, sel, _FOUND_PTE, FW_LEVEL_PTE, entp, v, pfn, None)

    def _found(self, b: WalkBatch, sel: Sel, status: int, level: int, entp: np.ndarray,
               v: np.ndarray, pfn: np.ndarray, nth: np.ndarray | None) -> None:
        # found: folio = page_folio(page); fw->page = nth_page(page, offset) (normal pages only)
        b._status[sel] = status
        b.found[sel] = True
        b.level[sel] = level
        b.entry_pa[sel] = entp
        b.entry[sel] = v
        base = pfn.astype(np.int64)
        head, order = self.page_folio(base)
        b.folio_pfn[sel] = head
        b.folio_order[sel] = order
        b.page_pfn[sel] = base if nth is None else base + nth.astype(np.int64)


def _vector_walker(mm: MM) -> _VectorWalk | None:
    rules_cls = VECTOR_RULES.get(mm.ops.arch)
    if rules_cls is None:
        return None
    vw: _VectorWalk | None = getattr(mm, "_folio_walk_vector", None)
    if vw is None or vw.ops is not mm.ops or vw.ram is not mm.ram or vw.memmap is not mm.memmap:
        vw = _VectorWalk(mm, rules_cls(mm.ops))
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
    # The rest, one by one and in order.  Vector rules never decide an address whose walk reads
    # an entry that pXd_clear_bad() clears (they send bad entries here), so a clear done below
    # cannot change a vector-decided record: sequential semantics hold.
    undo = mm.ram.undo if isolated else nullcontext
    for i in np.flatnonzero(b._status == _SCALAR).tolist():
        fw = FolioWalk()
        with undo():
            if folio_walk_start(fw, vma, int(arr[i]), flags) is not None:
                folio_walk_end(fw, vma)
        b._put_record(i, fw)
    return b
