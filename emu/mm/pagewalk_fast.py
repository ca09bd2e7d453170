"""The fast path of ``folio_walk_start()``: the reference walker's steps for the shapes almost
every walk has, handing everything else back to it (see the comment below and
``emu/mm/WALKERS.md``).
"""

from __future__ import annotations

from typing import Any

from emu.mm.mm_types import MM, VM_MIXEDMAP, VM_PFNMAP, VMA, Folio, Page, SpinLock
from emu.mm.pagewalk_h import FW_LEVEL_PMD, FW_LEVEL_PTE, FW_LEVEL_PUD, LINUX_LEVELS5, NO_LIST, FolioWalk

# -- the fast path ---------------------------------------------------------------------------------
#
# _Walker (emu/mm/pagewalk.py) is the reference: it mirrors mm/pagewalk.c line for line and decides every case.
# FastWalk takes the same steps for the shapes almost every walk has -- upper entries that are
# good tables, then a present normal PTE, a present normal PMD/PUD leaf, or a none entry -- and
# hands anything else (bad entries to clear, swap/migration/PROT_NONE/special/devmap/zero-page
# entries, entries outside RAM, addresses outside the VMA, an entry that changed between two
# reads) to _Walker from the beginning.  It never writes guest RAM, so a restart is the same as
# the walk simply having started a little later.  Where does the time go instead:
#
# * Linux's predicates on upper entries (pXd_none/pXd_bad/pXd_leaf/pXd_present, table_pa,
#   pte_lockptr) are pure functions of the entry value, and a hierarchy has few distinct table
#   entries: each verdict is computed ONCE per distinct value by the arch's own LinuxPgtable
#   methods and memoised (the arch module stays the single source of truth; no second copy).
# * Entries are read from a ``memoryview.cast("Q")`` of guest RAM (little-endian hosts and
#   guests), one index operation per entry instead of struct.unpack_from + range checks: a table
#   is only memoised as good if all of it lies inside RAM.
# * struct page / struct folio objects are values: one per pfn is kept (the kernel's vmemmap
#   holds one struct page per pfn, too), and page_folio() is memoised until a folio is added.
# * The trace is kept as one flat tuple and turned into TraceStep objects when read.
# * The normal-page test is vm_normal_page()'s (mm/memory.c) for CONFIG_ARCH_HAS_PTE_SPECIAL:
#   !pte_special() and pfn <= highest_memmap_pfn; vm_normal_page_pmd()'s likewise.  Anything it
#   refuses goes to the reference, which names the branch.
# * Folding: pgd/p4d/pud/pmd_offset() are inlined for LinuxPgtable's static folding; an arch with
#   its own (s390x) is called for the pointers (walk_custom), and its pgd_offset()'s reads lead
#   the trace, as in the reference.
#
# tests/mm/test_batch_walk.py proves, on random hierarchies of random entries, on every landed
# configuration and both kernels, that the fast path gives the reference's record field for field.

FALLBACK: Any = object()  # "let the reference walker decide"
C_OTHER, C_NONE, C_SAME, C_LEAF = -4, -3, -2, -1  # memo codes; >= 0: the next table's address
_MEMO_LIMIT = 1 << 16  # memo entries per level before the memo is dropped and rebuilt
_T_PTE = ("pgd", "p4d", "pud", "pmd", "pmd", "pte")  # the traced reads of a walk to a PTE
_T_PMD = ("pgd", "p4d", "pud", "pmd", "pmd")  # ... to a PMD leaf
_T_PUD = ("pgd", "p4d", "pud", "pud")  # ... to a PUD leaf
_T_NONE = {n: _T_PTE[: _T_PTE.index(n) + 1] for n in ("pgd", "p4d", "pud", "pmd")}


class _BigEndianEntries:
    """``q[pa >> 3]`` for a big-endian guest (a memoryview cast is host-endian only)."""

    def __init__(self, ram: Any) -> None:
        import struct

        self._unpack = struct.Struct(">Q").unpack_from
        self._map = ram.buf
        self._len = ram.size >> 3

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self._len:
            raise IndexError(i)
        return int(self._unpack(self._map, i << 3)[0])


def _generic(ops: Any, name: str) -> bool:
    from archs.linux import LinuxPgtable

    return getattr(type(ops), name) is getattr(LinuxPgtable, name)


class FastWalk:
    """folio_walk_start() for the common shapes, per mm (see the comment above)."""

    def __init__(self, mm: MM) -> None:
        import sys

        ops = mm.ops
        self.mm, self.ops, self.ram, self.memmap = mm, ops, mm.ram, mm.memmap
        # The fast path inlines LinuxPgtable's generic pte_offset() and static folding.  An arch
        # with pgd/p4d/pud/pmd_offset() of its own (s390x: folding by the table type of the entry
        # in hand, arch/s390/include/asm/pgtable.h) is asked for those pointers on every walk.
        self.enabled = all(_generic(ops, n) for n in ("pte_offset", "hw_level", "folded")) and all(
            ops.hw_level(n).entry_size == 8 for n in ("pgd", "p4d", "pud", "pmd", "pte")
        )
        self.custom = not all(_generic(ops, n) for n in ("pgd_offset", "p4d_offset", "pud_offset", "pmd_offset"))
        self.off: tuple[Any, ...] | None = None
        if self.custom:
            self.off = tuple(self._aligned(getattr(ops, n)) for n in ("p4d_offset", "pud_offset", "pmd_offset"))
        self.start = self.walk_custom if self.custom else self.walk
        self.v612 = ops.kernel == "v6.12"
        if mm.ram.big_endian or sys.byteorder != "little":
            self.q: Any = _BigEndianEntries(mm.ram) if mm.ram.big_endian else None
            if self.q is None:  # pragma: no cover - little-endian guest on a big-endian host
                self.enabled = False
        else:
            self.q = mm.ram.buf.cast("Q")
        hw = ops.hw_level
        # Per level: (shift - 3, (entries - 1) << 3), so ((addr >> s) & m) is index * 8.
        self.geo_t = tuple(x for n in LINUX_LEVELS5 for x in (hw(n).shift - 3, (hw(n).entries - 1) << 3))
        # Which lower level shares its upper neighbour's entry (pgtable-nop4d.h, -nopud.h, -nopmd.h).
        self.same = {u: hw(lower) is hw(u) for u, lower in (("pgd", "p4d"), ("p4d", "pud"), ("pud", "pmd"))}
        self.table_bytes = {n: hw(n).table_size for n in LINUX_LEVELS5}
        self.PAGE_SHIFT = ops.PAGE_SHIFT
        self.pte_present, self.pte_special, self.pte_pfn, self.pte_none = (
            ops.pte_present, ops.pte_special, ops.pte_pfn, ops.pte_none)  # type: ignore[attr-defined]
        self.gather = int(ops.PTEP_GET_GATHER)  # arm64 contiguous PTEs: ptep_get() reads the block
        self.memo: dict[str, dict[int, Any]] = {n: {} for n in ("pgd", "p4d", "pud", "pmd")}
        self.memo_t = tuple(self.memo[n] for n in ("pgd", "p4d", "pud", "pmd"))
        self.pud_leaf_pfn: dict[int, int] = {}
        self.pmd_locks: dict[int, SpinLock] = {}
        self.pages: dict[int, Page] = {}
        self.folios: dict[int, Folio] = {}
        self.folio_version = -1
        self.pgd_ok = -1  # mm->pgd checked to be an aligned table inside RAM

    # -- memoised verdicts on upper entries: the arch's own predicates, once per value ----------
    @staticmethod
    def _aligned(offset: Any) -> Any:
        """An arch's pXd_offset(), refusing (IndexError: the reference decides) a pointer that is
        not 8-byte aligned."""
        def call(upperp: int, upper: int, addr: int) -> int:
            p = int(offset(upperp, upper, addr))
            if p & 7 or p < 0:
                raise IndexError(p)
            return p

        return call

    def _next(self, upper: str, lower: str, val: int) -> int:
        """What pXd_offset() of the level below needs: C_SAME (folded: the same entry; with the
        arch's own pXd_offset(): ask it), or the next table's address if all of that table lies
        inside RAM (else C_OTHER)."""
        if self.same[upper] or self.custom:
            return C_SAME
        base = int(self.ops.pgtable_pa(upper, val))  # __pa(__va()) of the table: pXd_offset()
        if base & 7 or base < 0 or base + self.table_bytes[lower] > self.ram.size:
            return C_OTHER
        return base

    def _upper(self, level: str, lower: str, val: int) -> int:
        """pgd/p4d: ``pXd_none_or_clear_bad()`` then the lower pointer."""
        ops = self.ops
        if getattr(ops, f"{level}_none")(val):
            code = C_NONE
        elif getattr(ops, f"{level}_bad")(val):
            code = C_OTHER  # the reference clears it
        else:
            code = self._next(level, lower, val)
        return self._remember(level, val, code)

    def _pud(self, val: int) -> int:
        ops = self.ops
        if ops.pud_none(val):
            code = C_NONE
        elif ops.pud_leaf(val) or (self.v612 and not ops.pud_present(val)):
            # The PUD-leaf branch: found only for a present, non-devmap (v6.12: non-special) leaf.
            if (ops.pud_present(val) and ops.pud_leaf(val) and not ops.pud_devmap(val)  # type: ignore[attr-defined]
                    and not (self.v612 and ops.pud_special(val))  # type: ignore[attr-defined]
                    and self.memmap.has_struct_page(int(ops.pud_page_pfn(val)))):  # type: ignore[attr-defined]
                # (pud_page() of a pfn without a struct page: the kernel oopses in page_folio();
                # the reference says so)
                code = C_LEAF
                self.pud_leaf_pfn[val] = int(ops.pud_page_pfn(val))  # pud_page(), mm/pagewalk.c:829
            else:
                code = C_OTHER
        elif ops.pud_present(val):
            code = self._next("pud", "pmd", val)
        else:
            code = C_OTHER  # the seed walks on below a non-present, non-leaf PUD
        return self._remember("pud", val, code)

    def _pmd(self, val: int) -> tuple[int, int, Any]:
        """(code, table address | leaf pfn, pte ptl | leaf refused by vm_normal_page_pmd)."""
        ops, mm = self.ops, self.mm
        out: tuple[int, int, Any]
        if ops.pmd_none(val):
            out = (C_NONE, 0, None)
        elif ops.pmd_leaf(val) or (self.v612 and not ops.pmd_present(val)):
            if ops.pmd_present(val) and ops.pmd_leaf(val):
                refused = bool(ops.pmd_special(val) or ops.pmd_devmap(val))  # type: ignore[attr-defined]
                out = (C_LEAF, int(ops.pmd_pfn(val)), refused)  # type: ignore[attr-defined]
            else:
                out = (C_OTHER, 0, None)
        elif (ops.pmd_present(val) and not ops.is_pmd_migration_entry(val)
              and not ops.pmd_trans_huge(val) and not ops.pmd_devmap(val)  # type: ignore[attr-defined]
              and not ops.pmd_bad(val)):
            # A table that __pte_offset_map() accepts: pte_offset() and pte_lockptr() of it.
            base = int(ops.pgtable_pa("pmd", val))  # pte_offset_kernel(): __va(pmd_page_paddr())
            if (base & 7 or base < 0 or base + self.table_bytes["pte"] > self.ram.size
                    or not self.memmap.pfn_valid(int(ops.table_pa("pmd", val)) >> ops.PAGE_SHIFT)):
                # (the last: pte_lockptr()'s struct page is missing, the reference says why)
                out = (C_OTHER, 0, None)
            else:
                out = (base, base, mm.pte_lockptr(val))
        else:
            out = (C_OTHER, 0, None)
        memo = self.memo["pmd"]
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[val] = out
        return out

    def _remember(self, level: str, val: int, code: int) -> int:
        memo = self.memo[level]
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
            if level == "pud":
                self.pud_leaf_pfn.clear()
        memo[val] = code
        return code

    # -- struct page / struct folio ------------------------------------------------------------
    def _page(self, pfn: int) -> Page:
        page = self.pages.get(pfn)
        if page is None:
            if len(self.pages) >= 1 << 20:
                self.pages.clear()
            page = self.pages[pfn] = self.memmap.pfn_to_page(pfn)
        return page

    def _folio(self, page: Page) -> Folio:
        """``page_folio()``, memoised while the set of folios does not change.  MemMap only ever
        adds folios (add_folio), so their number is the version of the memmap."""
        memmap = self.memmap
        version = len(memmap._heads)
        if version != self.folio_version:
            self.folios.clear()
            self.folio_version = version
        folio = self.folios.get(page.pfn)
        if folio is None:
            if len(self.folios) >= 1 << 20:
                self.folios.clear()
            folio = self.folios[page.pfn] = memmap.page_folio(page)
        return folio

    def _found(self, fw: FolioWalk, vma: VMA, level: int, entryp: int, entry: int, ptl: SpinLock,
               pfn: int, nth: int, trace: tuple[Any, ...]) -> Folio:
        # found: fw->page = nth_page(page, ...) only for normal pages (all the fast path finds).
        page = self._page(pfn)
        folio = self._folio(page)
        fw.page = self._page(pfn + nth) if nth else page
        fw.level = level
        fw.entryp = entryp
        fw.entry = entry
        fw.vma = vma
        fw.ptl = ptl
        fw.folio = folio
        fw.reason = "found"
        fw.kind = "normal"
        fw._trace = trace
        fw._cleared = fw._warnings = NO_LIST
        return folio

    @staticmethod
    def _none(fw: FolioWalk, vma: VMA, level: str, trace: tuple[Any, ...],
              fwlevel: int | None = None, entryp: int | None = None, entry: int | None = None) -> None:
        fw.page = fw.ptl = fw.folio = None
        fw.level, fw.entryp, fw.entry = fwlevel, entryp, entry
        fw.vma = vma
        fw.reason = "none@" + level
        fw.kind = ""
        fw._trace = trace
        fw._cleared = fw._warnings = NO_LIST

    def walk_custom(self, fw: FolioWalk, vma: VMA, addr: int, flags: int) -> Any:
        """:meth:`walk` for an arch with its own pXd_offset(): its pgd_offset() may read entries
        (s390x: the first entry of the top table, whose type gives the index shift), which the
        trace records first, as the reference walker's does."""
        pre: list[int] = []
        q = self.q

        def read(pa: int) -> int:
            if pa & 7 or pa < 0:
                raise IndexError(pa)
            val: int = q[pa >> 3]
            pre.extend((pa, val))
            return val

        pgdp = int(self.ops.pgd_offset(self.mm.pgd, addr, read))
        if pgdp & 7 or pgdp < 0:
            return FALLBACK
        folio = self.walk(fw, vma, addr, flags, pgdp)
        if folio is not FALLBACK and pre:
            t: Any = fw._trace
            fw._trace = (("pgd",) * (len(pre) // 2) + t[0], *pre, *t[1:])
        return folio

    def walk(self, fw: FolioWalk, vma: VMA, addr: int, flags: int, pgdp: int = -1) -> Any:
        """folio_walk_start() for the common shapes, or FALLBACK (nothing held, nothing written).
        Hand-inlined: every attribute and call here is paid once per walk.  ``pgdp``: the arch's
        own pgd_offset() (walk_custom), else the generic one is computed here."""
        if addr < vma.vm_start or addr >= vma.vm_end:
            return FALLBACK  # WARN_ON_ONCE + not_found: the reference records it
        mm = self.mm
        q = self.q
        s0, m0, s1, m1, s2, m2, s3, m3, s4, m4 = self.geo_t
        mpgd, mp4d, mpud, mpmd = self.memo_t
        off = self.off  # the arch's own p4d/pud/pmd_offset(), or None (generic folding)
        if pgdp < 0:
            # pgd_offset(mm, addr); 8-byte entries: ((addr >> shift) & mask) is index * 8.
            pgd_base = mm.pgd
            if pgd_base != self.pgd_ok:
                if pgd_base & 7 or pgd_base < 0 or pgd_base + self.table_bytes["pgd"] > self.ram.size:
                    return FALLBACK
                self.pgd_ok = pgd_base
            pgdp = pgd_base + ((addr >> s0) & m0)
        pgd = q[pgdp >> 3]
        # pgd_none_or_clear_bad()
        c = mpgd.get(pgd)
        if c is None:
            c = self._upper("pgd", "p4d", pgd)
        if c >= 0:  # p4d_offset()
            p4dp = c + ((addr >> s1) & m1)
        elif c == C_SAME:
            p4dp = pgdp if off is None else off[0](pgdp, pgd, addr)
        elif c == C_NONE:
            self._none(fw, vma, "pgd", (_T_NONE["pgd"], pgdp, pgd))
            return None
        else:
            return FALLBACK
        p4d = q[p4dp >> 3]
        # p4d_none_or_clear_bad()
        c = mp4d.get(p4d)
        if c is None:
            c = self._upper("p4d", "pud", p4d)
        if c >= 0:  # pud_offset()
            pudp = c + ((addr >> s2) & m2)
        elif c == C_SAME:
            pudp = p4dp if off is None else off[1](p4dp, p4d, addr)
        elif c == C_NONE:
            self._none(fw, vma, "p4d", (_T_NONE["p4d"], pgdp, pgd, p4dp, p4d))
            return None
        else:
            return FALLBACK
        pud = q[pudp >> 3]  # pudp_get()
        c = mpud.get(pud)
        if c is None:
            c = self._pud(pud)
        if c >= 0:  # pmd_table: pmd_offset()
            pmdp = c + ((addr >> s3) & m3)
        elif c == C_SAME:
            pmdp = pudp if off is None else off[2](pudp, pud, addr)
        elif c == C_NONE:
            self._none(fw, vma, "pud", (_T_NONE["pud"], pgdp, pgd, p4dp, p4d, pudp, pud))
            return None
        elif c == C_LEAF:
            # ptl = pud_lock(); pud = pudp_get(pudp): a present normal PUD leaf.
            ptl = mm.pud_lock(pudp)
            if q[pudp >> 3] != pud:
                ptl.unlock()
                return FALLBACK
            nth = (addr & (self.ops.PUD_SIZE - 1)) >> self.PAGE_SHIFT
            return self._found(fw, vma, FW_LEVEL_PUD, pudp, pud, ptl, self.pud_leaf_pfn[pud], nth,
                               (_T_PUD, pgdp, pgd, p4dp, p4d, pudp, pud, pudp, pud))
        else:
            return FALLBACK
        # (pmd_table's VM_WARN_ON_ONCE()s cannot fire below a good table entry)
        pmd = q[pmdp >> 3]  # pmdp_get_lockless()
        t = mpmd.get(pmd)
        if t is None:
            t = self._pmd(pmd)
        c = t[0]
        if c >= 0:
            # pte_table: pte_offset_map_lock() -> __pte_offset_map() reads the PMD again, then
            # takes the PTE table's lock and checks pmd_same().
            if q[pmdp >> 3] != pmd:
                return FALLBACK
            ptep = c + ((addr >> s4) & m4)
            ptl = t[2]
            ptl.lock()
            if q[pmdp >> 3] != pmd:
                ptl.unlock()
                return FALLBACK
            pte = q[ptep >> 3]  # ptep_get()
            g = self.gather
            if g and pte & g == g:  # ptep_get() reads more than this entry: the reference decides
                ptl.unlock()
                return FALLBACK
            if self.pte_present(pte):
                if not self.pte_special(pte):  # vm_normal_page(): a normal PTE
                    pfn = self.pte_pfn(pte)
                    memmap = self.memmap
                    if pfn <= memmap.highest_memmap_pfn:
                        # found: (PAGE_SIZE entry: nth_page(page, 0) is the page itself)
                        page = self.pages.get(pfn)
                        if page is None:
                            page = self._page(pfn)
                        if len(memmap._heads) == self.folio_version:
                            folio = self.folios.get(pfn)
                            if folio is None:
                                folio = self._folio(page)
                        else:
                            folio = self._folio(page)
                        fw.page = page
                        fw.level = FW_LEVEL_PTE
                        fw.entryp = ptep
                        fw.entry = pte
                        fw.vma = vma
                        fw.ptl = ptl
                        fw.folio = folio
                        fw.reason = "found"
                        fw.kind = "normal"
                        fw._trace = (_T_PTE, pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd, pmdp, pmd, ptep, pte)
                        fw._cleared = fw._warnings = NO_LIST
                        return folio
            elif self.pte_none(pte):
                ptl.unlock()  # pte_unmap_unlock()
                self._none(fw, vma, "pte", (_T_PTE, pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd, pmdp, pmd,
                                            ptep, pte), FW_LEVEL_PTE, ptep, pte)
                return None
            ptl.unlock()
            return FALLBACK
        if c == C_NONE:
            self._none(fw, vma, "pmd", (_T_NONE["pmd"], pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd))
            return None
        if c == C_LEAF:
            # ptl = pmd_lock(); pmd = pmdp_get(): a present PMD leaf; vm_normal_page_pmd() decides.
            pfn, refused = t[1], t[2]
            if (refused or vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP) or pfn == mm.huge_zero_pfn
                    or pfn > self.memmap.highest_memmap_pfn):
                return FALLBACK
            lock = self.pmd_locks.get(pmdp)
            if lock is None:
                if len(self.pmd_locks) >= _MEMO_LIMIT:
                    self.pmd_locks.clear()
                lock = self.pmd_locks[pmdp] = mm.pmd_lockptr(pmdp)
            ptl = lock
            ptl.lock()
            if q[pmdp >> 3] != pmd:
                ptl.unlock()
                return FALLBACK
            nth = (addr & (self.ops.PMD_SIZE - 1)) >> self.PAGE_SHIFT
            return self._found(fw, vma, FW_LEVEL_PMD, pmdp, pmd, ptl, pfn, nth,
                               (_T_PMD, pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd, pmdp, pmd))
        return FALLBACK


def fast_walker(mm: MM) -> FastWalk:
    """The mm's :class:`FastWalk` (kept on the mm; rebuilt if its ops, RAM or memmap change)."""
    fast: FastWalk | None = getattr(mm, "_folio_walk_fast", None)
    if fast is None or fast.ops is not mm.ops or fast.ram is not mm.ram or fast.memmap is not mm.memmap:
        fast = FastWalk(mm)
        mm._folio_walk_fast = fast  # type: ignore[attr-defined]
    return fast
