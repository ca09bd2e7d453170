"""``folio_walk_start()`` / ``folio_walk_end()``: Linux's walk to the folio mapped at an address.

The control flow mirrors mm/pagewalk.c line for line.  Two kernel versions are modelled
(``ops.kernel``):

* ``aa39ca6940f1`` -- the seed patch "mm/pagewalk: introduce folio_walk_start() +
  folio_walk_end()" (David Hildenbrand, Aug 2024), exactly as written there.
* ``v6.12`` (default) -- the release, which adds to it
  - "mm/pagewalk: check pfnmap for folio_walk_start()" (Peter Xu): ``pud_special()`` in the PUD
    branch (vm_normal_page_pmd() got ``pmd_special()`` in the same series, see emu/mm/mm_types.py);
  - "mm/pagewalk: fix usage of pmd_leaf()/pud_leaf() without present check" (Hildenbrand, Oct
    2024): a non-present PUD/PMD also takes the leaf branch, so a PMD migration entry -- whose
    _PAGE_PSE is clear on x86-64 -- is found with FW_MIGRATION instead of being skipped.

All architecture knowledge comes from ``vma.vm_mm.ops`` (an :class:`archs.linux.LinuxPgtable`).
Beyond the kernel's return value, every walk records *why* it ended (``fw.reason``), the entries
it read (``fw.trace``), the bad entries it cleared and the WARN_ON_ONCE()s it hit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from archs.linux import is_migration_entry, swap_type_name
from emu.machines.ram import Folio, Page
from emu.mm.mm_types import MM, VM_MIXEDMAP, VM_PFNMAP, VMA, SpinLock

LINUX_LEVELS5 = ("pgd", "p4d", "pud", "pmd", "pte")

# include/linux/pagewalk.h
FW_MIGRATION = 1 << 0  # walk migration entries as well
FW_ZEROPAGE = 1 << 1  # walk shared zeropages (small + huge) as well
FW_LEVEL_PTE = 0
FW_LEVEL_PMD = 1
FW_LEVEL_PUD = 2
LEVEL_NAMES = {FW_LEVEL_PTE: "PTE", FW_LEVEL_PMD: "PMD", FW_LEVEL_PUD: "PUD"}
FLAG_COMBINATIONS = (0, FW_MIGRATION, FW_ZEROPAGE, FW_MIGRATION | FW_ZEROPAGE)

# CONFIG_PGTABLE_HAS_HUGE_LEAVES: THP or hugetlb; set on every configuration we model.
CONFIG_PGTABLE_HAS_HUGE_LEAVES = True
_PTE_MAP_RETRIES = 1000  # __pte_offset_map_lock() retries until pmd_same(); bound it


def flags_str(flags: int) -> str:
    names = [n for bit, n in ((FW_MIGRATION, "FW_MIGRATION"), (FW_ZEROPAGE, "FW_ZEROPAGE")) if flags & bit]
    return "|".join(names) or "0"


@dataclass
class TraceStep:
    """One entry the walk read: Linux level, its physical address and raw value."""

    level: str
    pa: int
    value: int


_NO_LIST: tuple[()] = ()


class FolioWalk:
    """``struct folio_walk``: filled by folio_walk_start() on success.

    Public (as in the kernel): ``page``, ``level``, the entry pointer (``ptep``/``pmdp``/``pudp``,
    a physical address here) and the entry value (``pte``/``pmd``/``pud``).  Private: ``vma`` and
    ``ptl``.  foliowalk's own record: ``folio`` (the return value), ``reason`` ("found" or why
    not), ``kind`` of what was found, ``trace``, ``cleared`` and ``warnings``.

    A plain slotted class rather than a dataclass: folio_walk_start() fills one per call, and the
    fast path (see :class:`_FastWalk`) stores its trace as one flat tuple that ``trace`` turns
    into :class:`TraceStep` objects only when someone reads it.
    """

    __slots__ = ("page", "level", "entryp", "entry", "vma", "ptl", "folio", "reason", "kind",
                 "_trace", "_cleared", "_warnings")

    def __init__(
        self,
        page: Page | None = None,
        level: int | None = None,
        entryp: int | None = None,
        entry: int | None = None,
        vma: VMA | None = None,
        ptl: SpinLock | None = None,
        folio: Folio | None = None,
        reason: str = "",
        kind: str = "",
        trace: list[TraceStep] | None = None,
        cleared: list[TraceStep] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.page = page
        self.level = level
        self.entryp = entryp
        self.entry = entry
        self.vma = vma
        self.ptl = ptl
        self.folio = folio
        self.reason = reason
        self.kind = kind
        # A list, or the fast path's flat tuple ``(names, pa0, val0, pa1, val1, ...)``.
        self._trace: list[TraceStep] | tuple[Any, ...] = trace if trace is not None else []
        self._cleared: list[TraceStep] | tuple[()] = cleared if cleared is not None else _NO_LIST
        self._warnings: list[str] | tuple[()] = warnings if warnings is not None else _NO_LIST

    # foliowalk's record, materialised on first use.
    @property
    def trace(self) -> list[TraceStep]:
        """The entries the walk read, in order (``pXdp_get()`` / ``READ_ONCE`` calls)."""
        t: Any = self._trace
        if type(t) is not list:
            t = self._trace = [TraceStep(n, t[1 + 2 * i], t[2 + 2 * i]) for i, n in enumerate(t[0])]
        return t  # type: ignore[no-any-return]

    @trace.setter
    def trace(self, value: list[TraceStep]) -> None:
        self._trace = value

    @property
    def cleared(self) -> list[TraceStep]:
        """Bad entries the walk cleared (``pXd_clear_bad()``)."""
        c = self._cleared
        if type(c) is not list:
            c = self._cleared = []
        return c

    @cleared.setter
    def cleared(self, value: list[TraceStep]) -> None:
        self._cleared = value

    @property
    def warnings(self) -> list[str]:
        """WARN_ON_ONCE()s and pXd_ERROR()s the walk hit."""
        w = self._warnings
        if type(w) is not list:
            w = self._warnings = []
        return w

    @warnings.setter
    def warnings(self, value: list[str]) -> None:
        self._warnings = value

    def trace_tuples(self) -> list[tuple[str, int, int]]:
        """``trace`` as ``(level, pa, value)`` tuples, without building TraceStep objects."""
        t: Any = self._trace
        if type(t) is list:
            return [(s.level, s.pa, s.value) for s in t]
        return [(n, t[1 + 2 * i], t[2 + 2 * i]) for i, n in enumerate(t[0])]

    def _fields(self) -> tuple[Any, ...]:
        return (self.page, self.level, self.entryp, self.entry, self.vma, self.ptl, self.folio,
                self.reason, self.kind, self.trace, self.cleared, self.warnings)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FolioWalk):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        names = ("page", "level", "entryp", "entry", "vma", "ptl", "folio", "reason", "kind",
                 "trace", "cleared", "warnings")
        fields = zip(names, self._fields(), strict=True)
        return "FolioWalk(" + ", ".join(f"{n}={v!r}" for n, v in fields) + ")"

    # The unions of struct folio_walk, by their kernel names.
    @property
    def ptep(self) -> int | None:
        return self.entryp if self.level == FW_LEVEL_PTE else None

    @property
    def pmdp(self) -> int | None:
        return self.entryp if self.level == FW_LEVEL_PMD else None

    @property
    def pudp(self) -> int | None:
        return self.entryp if self.level == FW_LEVEL_PUD else None

    @property
    def pte(self) -> int | None:
        return self.entry if self.level == FW_LEVEL_PTE else None

    @property
    def pmd(self) -> int | None:
        return self.entry if self.level == FW_LEVEL_PMD else None

    @property
    def pud(self) -> int | None:
        return self.entry if self.level == FW_LEVEL_PUD else None


def outside_vma_warning(addr: int, vma: VMA) -> str:
    """The WARN_ON_ONCE(addr < vma->vm_start || addr >= vma->vm_end) of folio_walk_start()."""
    return f"address {addr:#x} outside the VMA {vma.vm_start:#x}..{vma.vm_end:#x}"


class _Unreadable(Exception):
    """An entry address outside RAM: the kernel would oops; we end the walk and say so."""

    def __init__(self, level: str, pa: int) -> None:
        super().__init__(f"{level} entry at {pa:#x} is outside RAM")
        self.level = level
        self.pa = pa


class _Walker:
    """One folio_walk_start() call; its methods are the kernel helpers it uses."""

    def __init__(self, fw: FolioWalk, vma: VMA, addr: int, flags: int) -> None:
        assert vma.vm_mm is not None, "VMA is not attached to an mm (mm.add_vma)"
        self.fw = fw
        self.vma = vma
        self.mm: MM = vma.vm_mm
        self.ops: Any = self.mm.ops  # an archs LinuxPgtable subclass (pte_* etc. are the arch's)
        self.addr = addr
        self.flags = flags
        self.v612 = self.ops.kernel == "v6.12"

    def get(self, level: str, pa: int) -> int:
        """``pXdp_get()`` / ``READ_ONCE(*pXdp)``: read one entry, recorded in the trace."""
        if not self.mm.ram.contains(pa, 8) or pa & 7:
            raise _Unreadable(level, pa)
        val = self.mm.ram.read_u64(pa)
        self.fw.trace.append(TraceStep(level, pa, val))
        return val

    def warn(self, what: str) -> None:
        self.fw.warnings.append(what)

    def clear_bad(self, level: str, pa: int, val: int) -> None:
        """``pXd_clear_bad()``: ``pXd_ERROR()`` then ``pXd_clear()`` (mm/pgtable-generic.c)."""
        self.warn(f"{level}_ERROR: bad {level} {val:#018x} at {pa:#x}")
        self.fw.cleared.append(TraceStep(level, pa, val))
        self.mm.ram.write_u64(pa, self.ops.clear_value(level))

    def none_or_clear_bad(self, level: str, pa: int) -> bool:
        """``pgd_none_or_clear_bad()`` / ``p4d_none_or_clear_bad()`` (include/linux/pgtable.h)."""
        val = self.get(level, pa)
        if getattr(self.ops, f"{level}_none")(val):
            self.fw.reason = f"none@{level}"
            return True
        if getattr(self.ops, f"{level}_bad")(val):
            self.clear_bad(level, pa, val)
            self.fw.reason = f"bad@{level}"
            return True
        return False

    def pte_offset_map_lock(self, pmdp: int) -> tuple[int | None, SpinLock | None]:
        """``pte_offset_map_lock()`` = ``__pte_offset_map()`` + lock + ``pmd_same()`` recheck
        (mm/pgtable-generic.c, v6.12)."""
        ops = self.ops
        for _ in range(_PTE_MAP_RETRIES):
            pmdval = self.get("pmd", pmdp)  # pmdp_get_lockless()
            if ops.pmd_none(pmdval):
                self.fw.reason = "none@pmd"
                return None, None
            if ops.is_pmd_migration_entry(pmdval):
                self.fw.reason = "migration-entry@pmd"
                return None, None
            if ops.pmd_trans_huge(pmdval) or ops.pmd_devmap(pmdval):
                self.fw.reason = "leaf@pmd"
                return None, None
            if ops.pmd_bad(pmdval):
                self.clear_bad("pmd", pmdp, pmdval)
                self.fw.reason = "bad@pmd"
                return None, None
            ptep = ops.pte_offset(pmdval, self.addr)
            ptl = self.mm.pte_lockptr(pmdval)
            ptl.lock()
            if self.mm.ram.read_u64(pmdp) == pmdval:  # pmd_same(pmdval, pmdp_get_lockless(pmd))
                return ptep, ptl
            ptl.unlock()
        self.warn("pte_offset_map_lock: the PMD kept changing")
        self.fw.reason = "pmd-unstable"
        return None, None

    def run(self) -> Folio | None:
        fw, ops, mm, addr, vma = self.fw, self.ops, self.mm, self.addr, self.vma
        ptl: SpinLock | None = None
        expose_page = True
        page: Page | None = None
        entry_size = 0

        mm.mmap_assert_locked()
        vma_pgtable_walk_begin(vma)

        if addr < vma.vm_start or addr >= vma.vm_end:  # WARN_ON_ONCE
            self.warn(outside_vma_warning(addr, vma))
            fw.reason = "outside-vma"
            return self.not_found()

        try:
            pgdp = ops.pgd_offset(mm.pgd, addr, lambda pa: self.get("pgd", pa))
            if self.none_or_clear_bad("pgd", pgdp):
                return self.not_found()
            pgd = mm.ram.read_u64(pgdp)

            p4dp = ops.p4d_offset(pgdp, pgd, addr)
            if self.none_or_clear_bad("p4d", p4dp):
                return self.not_found()
            p4d = mm.ram.read_u64(p4dp)

            pudp = ops.pud_offset(p4dp, p4d, addr)
            pud = self.get("pud", pudp)  # pudp_get()
            if ops.pud_none(pud):
                fw.reason = "none@pud"
                return self.not_found()
            goto_pmd_table = True
            if CONFIG_PGTABLE_HAS_HUGE_LEAVES and (
                ops.pud_leaf(pud) or (self.v612 and not ops.pud_present(pud))
            ):
                ptl = mm.pud_lock(pudp)
                pud = self.get("pud", pudp)

                entry_size = ops.PUD_SIZE
                fw.level = FW_LEVEL_PUD
                fw.entryp = pudp
                fw.entry = pud

                special = self.v612 and ops.pud_special(pud)
                if not ops.pud_present(pud) or ops.pud_devmap(pud) or special:
                    ptl.unlock()
                    fw.reason = (
                        "not-present@pud" if not ops.pud_present(pud)
                        else "devmap@pud" if ops.pud_devmap(pud) else "special@pud"
                    )
                    return self.not_found()
                elif not ops.pud_leaf(pud):
                    ptl.unlock()
                    ptl = None
                else:
                    # TODO in the kernel: vm_normal_page_pud() for PFNMAP/MIXEDMAP PUD mappings.
                    page = mm.memmap.pfn_to_page(ops.pud_pfn(pud))  # pud_page()
                    fw.kind = "normal"
                    goto_pmd_table = False

            if goto_pmd_table:
                # pmd_table:
                if self.v612:
                    if not ops.pud_present(pud) or ops.pud_leaf(pud):
                        self.warn("VM_WARN_ON_ONCE(!pud_present(pud) || pud_leaf(pud))")
                elif ops.pud_leaf(mm.ram.read_u64(pudp)):
                    self.warn("VM_WARN_ON_ONCE(pud_leaf(*pudp))")
                pmdp = ops.pmd_offset(pudp, pud, addr)
                pmd = self.get("pmd", pmdp)  # pmdp_get_lockless()
                if ops.pmd_none(pmd):
                    fw.reason = "none@pmd"
                    return self.not_found()
                goto_pte_table = True
                if CONFIG_PGTABLE_HAS_HUGE_LEAVES and (
                    ops.pmd_leaf(pmd) or (self.v612 and not ops.pmd_present(pmd))
                ):
                    ptl = mm.pmd_lock(pmdp)
                    pmd = self.get("pmd", pmdp)  # pmdp_get()

                    entry_size = ops.PMD_SIZE
                    fw.level = FW_LEVEL_PMD
                    fw.entryp = pmdp
                    fw.entry = pmd

                    table = (
                        ops.pmd_present(pmd) and not ops.pmd_leaf(pmd) if self.v612 else not ops.pmd_leaf(pmd)
                    )
                    if ops.pmd_none(pmd):
                        ptl.unlock()
                        fw.reason = "none@pmd"
                        return self.not_found()
                    elif table:
                        ptl.unlock()
                        ptl = None
                    else:
                        page = self.pmd_leaf_page(pmd)
                        if page is None:
                            ptl.unlock()
                            return self.not_found()
                        goto_pte_table = False

                if goto_pte_table:
                    # pte_table:
                    if self.v612:
                        if not ops.pmd_present(pmd) or ops.pmd_leaf(pmd):
                            self.warn("VM_WARN_ON_ONCE(!pmd_present(pmd) || pmd_leaf(pmd))")
                    elif ops.pmd_leaf(mm.ram.read_u64(pmdp)):
                        self.warn("VM_WARN_ON_ONCE(pmd_leaf(pmdp_get_lockless(pmdp)))")
                    ptep, ptl = self.pte_offset_map_lock(pmdp)
                    if ptep is None or ptl is None:
                        return self.not_found()
                    pte = self.get("pte", ptep)  # ptep_get()

                    entry_size = ops.PAGE_SIZE
                    fw.level = FW_LEVEL_PTE
                    fw.entryp = ptep
                    fw.entry = pte

                    page = self.pte_page(pte)
                    if page is None:
                        ptl.unlock()  # pte_unmap_unlock()
                        return self.not_found()
        except _Unreadable as err:
            if ptl is not None and ptl.is_locked():
                ptl.unlock()
            self.warn(str(err))
            fw.reason = f"unreadable@{err.level}"
            return self.not_found()

        # found:
        assert page is not None  # every branch that gets here has a page
        expose_page = fw.kind == "normal"
        if expose_page:
            # Note: Offset from the mapped page, not the folio start.
            fw.page = mm.memmap.nth_page(page, (addr & (entry_size - 1)) >> ops.PAGE_SHIFT)
        else:
            fw.page = None
        fw.ptl = ptl
        fw.reason = "found"
        fw.folio = mm.memmap.page_folio(page)
        return fw.folio

    def pmd_leaf_page(self, pmd: int) -> Page | None:
        """The PMD-leaf branch once the lock is held: normal page, huge zero page, migration."""
        fw, ops, mm = self.fw, self.ops, self.mm
        if ops.pmd_present(pmd):
            page, why = mm.vm_normal_page_pmd_why(self.vma, self.addr, pmd)
            if page is not None:
                fw.kind = "normal"
                return page
            elif self.flags & FW_ZEROPAGE and mm.is_huge_zero_pmd(pmd):
                fw.kind = "huge-zero-page"
                return mm.memmap.pfn_to_page(ops.pmd_pfn(pmd))
            fw.reason = f"not-normal@pmd:{why}"
            return None
        elif self.flags & FW_MIGRATION and ops.is_pmd_migration_entry(pmd):
            entry = ops.pmd_to_swp_entry(pmd)
            fw.kind = "migration-entry"
            return mm.memmap.pfn_to_page(ops.swp_offset_pfn(entry))  # pfn_swap_entry_to_page()
        entry = ops.pmd_to_swp_entry(pmd)
        fw.reason = (
            "migration-entry@pmd" if is_migration_entry(entry) else f"swap@pmd:{swap_type_name(entry.type)}"
        )
        return None

    def pte_page(self, pte: int) -> Page | None:
        """The PTE branch once the lock is held: normal page, zero page, migration entry."""
        fw, ops, mm = self.fw, self.ops, self.mm
        if ops.pte_present(pte):
            page, why = mm.vm_normal_page_why(self.vma, self.addr, pte)
            if page is not None:
                fw.kind = "normal"
                return page
            if self.flags & FW_ZEROPAGE and mm.is_zero_pfn(ops.pte_pfn(pte)):
                fw.kind = "zero-page"
                return mm.memmap.pfn_to_page(ops.pte_pfn(pte))
            fw.reason = f"not-normal@pte:{why}"
            return None
        elif not ops.pte_none(pte):
            entry = ops.pte_to_swp_entry(pte)
            if self.flags & FW_MIGRATION and is_migration_entry(entry):
                fw.kind = "migration-entry"
                return mm.memmap.pfn_to_page(ops.swp_offset_pfn(entry))  # pfn_swap_entry_to_page()
            fw.reason = (
                "migration-entry@pte" if is_migration_entry(entry)
                else f"swap@pte:{swap_type_name(entry.type)}"
            )
            return None
        fw.reason = "none@pte"
        return None

    def not_found(self) -> Folio | None:
        # not_found:
        vma_pgtable_walk_end(self.vma)
        self.fw.ptl = None
        self.fw.page = None
        self.fw.folio = None
        return None


def vma_pgtable_walk_begin(vma: VMA) -> None:
    """``vma_pgtable_walk_begin()``: takes the hugetlb VMA lock for VM_HUGETLB VMAs.  Our hugetlb
    VMAs have no PMD sharing, so there is nothing to hold: a no-op, as for other VMAs."""


def vma_pgtable_walk_end(vma: VMA) -> None:
    """``vma_pgtable_walk_end()``: the counterpart of :func:`vma_pgtable_walk_begin`."""


# -- the fast path ---------------------------------------------------------------------------------
#
# _Walker above is the reference: it mirrors mm/pagewalk.c line for line and decides every case.
# _FastWalk takes the same steps for the shapes almost every walk has -- upper entries that are
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
# tests/test_batch_walk.py proves, on random hierarchies of random entries, on every landed
# configuration and both kernels, that the fast path gives the reference's record field for field.

_FALLBACK: Any = object()  # "let the reference walker decide"
_C_OTHER, _C_NONE, _C_SAME, _C_LEAF = -4, -3, -2, -1  # memo codes; >= 0: the next table's address
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


class _FastWalk:
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
        """What pXd_offset() of the level below needs: _C_SAME (folded: the same entry; with the
        arch's own pXd_offset(): ask it), or the next table's address if all of that table lies
        inside RAM (else _C_OTHER)."""
        if self.same[upper] or self.custom:
            return _C_SAME
        base = int(self.ops.table_pa(upper, val))
        if base & 7 or base < 0 or base + self.table_bytes[lower] > self.ram.size:
            return _C_OTHER
        return base

    def _upper(self, level: str, lower: str, val: int) -> int:
        """pgd/p4d: ``pXd_none_or_clear_bad()`` then the lower pointer."""
        ops = self.ops
        if getattr(ops, f"{level}_none")(val):
            code = _C_NONE
        elif getattr(ops, f"{level}_bad")(val):
            code = _C_OTHER  # the reference clears it
        else:
            code = self._next(level, lower, val)
        return self._remember(level, val, code)

    def _pud(self, val: int) -> int:
        ops = self.ops
        if ops.pud_none(val):
            code = _C_NONE
        elif ops.pud_leaf(val) or (self.v612 and not ops.pud_present(val)):
            # The PUD-leaf branch: found only for a present, non-devmap (v6.12: non-special) leaf.
            if (ops.pud_present(val) and ops.pud_leaf(val) and not ops.pud_devmap(val)  # type: ignore[attr-defined]
                    and not (self.v612 and ops.pud_special(val))):  # type: ignore[attr-defined]
                code = _C_LEAF
                self.pud_leaf_pfn[val] = int(ops.pud_pfn(val))  # type: ignore[attr-defined]
            else:
                code = _C_OTHER
        elif ops.pud_present(val):
            code = self._next("pud", "pmd", val)
        else:
            code = _C_OTHER  # the seed walks on below a non-present, non-leaf PUD
        return self._remember("pud", val, code)

    def _pmd(self, val: int) -> tuple[int, int, Any]:
        """(code, table address | leaf pfn, pte ptl | leaf refused by vm_normal_page_pmd)."""
        ops, mm = self.ops, self.mm
        out: tuple[int, int, Any]
        if ops.pmd_none(val):
            out = (_C_NONE, 0, None)
        elif ops.pmd_leaf(val) or (self.v612 and not ops.pmd_present(val)):
            if ops.pmd_present(val) and ops.pmd_leaf(val):
                refused = bool(ops.pmd_special(val) or ops.pmd_devmap(val))  # type: ignore[attr-defined]
                out = (_C_LEAF, int(ops.pmd_pfn(val)), refused)  # type: ignore[attr-defined]
            else:
                out = (_C_OTHER, 0, None)
        elif (ops.pmd_present(val) and not ops.is_pmd_migration_entry(val)
              and not ops.pmd_trans_huge(val) and not ops.pmd_devmap(val)  # type: ignore[attr-defined]
              and not ops.pmd_bad(val)):
            # A table that __pte_offset_map() accepts: pte_offset() and pte_lockptr() of it.
            base = int(ops.table_pa("pmd", val))
            if base & 7 or base < 0 or base + self.table_bytes["pte"] > self.ram.size:
                out = (_C_OTHER, 0, None)
            else:
                out = (base, base, mm.pte_lockptr(val))
        else:
            out = (_C_OTHER, 0, None)
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
        fw._cleared = fw._warnings = _NO_LIST
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
        fw._cleared = fw._warnings = _NO_LIST

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
            return _FALLBACK
        folio = self.walk(fw, vma, addr, flags, pgdp)
        if folio is not _FALLBACK and pre:
            t: Any = fw._trace
            fw._trace = (("pgd",) * (len(pre) // 2) + t[0], *pre, *t[1:])
        return folio

    def walk(self, fw: FolioWalk, vma: VMA, addr: int, flags: int, pgdp: int = -1) -> Any:
        """folio_walk_start() for the common shapes, or _FALLBACK (nothing held, nothing written).
        Hand-inlined: every attribute and call here is paid once per walk.  ``pgdp``: the arch's
        own pgd_offset() (walk_custom), else the generic one is computed here."""
        if addr < vma.vm_start or addr >= vma.vm_end:
            return _FALLBACK  # WARN_ON_ONCE + not_found: the reference records it
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
                    return _FALLBACK
                self.pgd_ok = pgd_base
            pgdp = pgd_base + ((addr >> s0) & m0)
        pgd = q[pgdp >> 3]
        # pgd_none_or_clear_bad()
        c = mpgd.get(pgd)
        if c is None:
            c = self._upper("pgd", "p4d", pgd)
        if c >= 0:  # p4d_offset()
            p4dp = c + ((addr >> s1) & m1)
        elif c == _C_SAME:
            p4dp = pgdp if off is None else off[0](pgdp, pgd, addr)
        elif c == _C_NONE:
            self._none(fw, vma, "pgd", (_T_NONE["pgd"], pgdp, pgd))
            return None
        else:
            return _FALLBACK
        p4d = q[p4dp >> 3]
        # p4d_none_or_clear_bad()
        c = mp4d.get(p4d)
        if c is None:
            c = self._upper("p4d", "pud", p4d)
        if c >= 0:  # pud_offset()
            pudp = c + ((addr >> s2) & m2)
        elif c == _C_SAME:
            pudp = p4dp if off is None else off[1](p4dp, p4d, addr)
        elif c == _C_NONE:
            self._none(fw, vma, "p4d", (_T_NONE["p4d"], pgdp, pgd, p4dp, p4d))
            return None
        else:
            return _FALLBACK
        pud = q[pudp >> 3]  # pudp_get()
        c = mpud.get(pud)
        if c is None:
            c = self._pud(pud)
        if c >= 0:  # pmd_table: pmd_offset()
            pmdp = c + ((addr >> s3) & m3)
        elif c == _C_SAME:
            pmdp = pudp if off is None else off[2](pudp, pud, addr)
        elif c == _C_NONE:
            self._none(fw, vma, "pud", (_T_NONE["pud"], pgdp, pgd, p4dp, p4d, pudp, pud))
            return None
        elif c == _C_LEAF:
            # ptl = pud_lock(); pud = pudp_get(pudp): a present normal PUD leaf.
            ptl = mm.pud_lock(pudp)
            if q[pudp >> 3] != pud:
                ptl.unlock()
                return _FALLBACK
            nth = (addr & (self.ops.PUD_SIZE - 1)) >> self.PAGE_SHIFT
            return self._found(fw, vma, FW_LEVEL_PUD, pudp, pud, ptl, self.pud_leaf_pfn[pud], nth,
                               (_T_PUD, pgdp, pgd, p4dp, p4d, pudp, pud, pudp, pud))
        else:
            return _FALLBACK
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
                return _FALLBACK
            ptep = c + ((addr >> s4) & m4)
            ptl = t[2]
            ptl.lock()
            if q[pmdp >> 3] != pmd:
                ptl.unlock()
                return _FALLBACK
            pte = q[ptep >> 3]  # ptep_get()
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
                        fw._cleared = fw._warnings = _NO_LIST
                        return folio
            elif self.pte_none(pte):
                ptl.unlock()  # pte_unmap_unlock()
                self._none(fw, vma, "pte", (_T_PTE, pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd, pmdp, pmd,
                                            ptep, pte), FW_LEVEL_PTE, ptep, pte)
                return None
            ptl.unlock()
            return _FALLBACK
        if c == _C_NONE:
            self._none(fw, vma, "pmd", (_T_NONE["pmd"], pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd))
            return None
        if c == _C_LEAF:
            # ptl = pmd_lock(); pmd = pmdp_get(): a present PMD leaf; vm_normal_page_pmd() decides.
            pfn, refused = t[1], t[2]
            if (refused or vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP) or pfn == mm.huge_zero_pfn
                    or pfn > self.memmap.highest_memmap_pfn):
                return _FALLBACK
            lock = self.pmd_locks.get(pmdp)
            if lock is None:
                if len(self.pmd_locks) >= _MEMO_LIMIT:
                    self.pmd_locks.clear()
                lock = self.pmd_locks[pmdp] = mm.pmd_lockptr(pmdp)
            ptl = lock
            ptl.lock()
            if q[pmdp >> 3] != pmd:
                ptl.unlock()
                return _FALLBACK
            nth = (addr & (self.ops.PMD_SIZE - 1)) >> self.PAGE_SHIFT
            return self._found(fw, vma, FW_LEVEL_PMD, pmdp, pmd, ptl, pfn, nth,
                               (_T_PMD, pgdp, pgd, p4dp, p4d, pudp, pud, pmdp, pmd, pmdp, pmd))
        return _FALLBACK


def _fast_walker(mm: MM) -> _FastWalk:
    """The mm's :class:`_FastWalk` (kept on the mm; rebuilt if its ops, RAM or memmap change)."""
    fast: _FastWalk | None = getattr(mm, "_folio_walk_fast", None)
    if fast is None or fast.ops is not mm.ops or fast.ram is not mm.ram or fast.memmap is not mm.memmap:
        fast = _FastWalk(mm)
        mm._folio_walk_fast = fast  # type: ignore[attr-defined]
    return fast


def folio_walk_start(fw: FolioWalk, vma: VMA, addr: int, flags: int = 0) -> Folio | None:
    """``folio_walk_start()`` (mm/pagewalk.c): walk the page tables of ``vma`` to the folio
    mapped at ``addr``.  Takes a :class:`~emu.mm.mm_types.VMA`; returns the :class:`~emu.machines.ram.Folio`
    with the page-table lock held (call :func:`folio_walk_end`), or None with no lock held.
    The mmap lock must be held in read mode (``with mm.mmap_read():``)."""
    mm = vma.vm_mm
    assert mm is not None, "VMA is not attached to an mm (mm.add_vma)"
    if not mm.mmap_lock.is_locked():
        mm.mmap_assert_locked()  # raises
    fast: _FastWalk | None = getattr(mm, "_folio_walk_fast", None)
    if fast is None or fast.ops is not mm.ops or fast.ram is not mm.ram or fast.memmap is not mm.memmap:
        fast = _fast_walker(mm)
    if fast.enabled:
        try:
            folio = fast.start(fw, vma, addr, flags)
        except IndexError:  # an entry outside RAM: the reference reports unreadable@<level>
            folio = _FALLBACK
        if folio is not _FALLBACK:
            return folio  # type: ignore[no-any-return]
    return folio_walk_start_reference(fw, vma, addr, flags)


def folio_walk_start_reference(fw: FolioWalk, vma: VMA, addr: int, flags: int = 0) -> Folio | None:
    """``folio_walk_start()`` by the reference walker alone (no fast path): the kernel's control
    flow step by step.  Same result as :func:`folio_walk_start`; tests compare the two."""
    fw.__init__()  # type: ignore[misc]
    fw.vma = vma
    return _Walker(fw, vma, addr, flags).run()


def folio_walk_end(fw: FolioWalk, vma: VMA) -> None:
    """``folio_walk_end()`` (include/linux/pagewalk.h): drop the PTL (and the PTE mapping)."""
    ptl = fw.ptl
    if ptl is None:
        raise RuntimeError("folio_walk_end() without a successful folio_walk_start()")
    ptl.unlock()  # spin_unlock(); pte_unmap() is a no-op without HIGHPTE
    fw.ptl = None
    vma_pgtable_walk_end(vma)


@contextmanager
def folio_walk(vma: VMA, addr: int, flags: int = 0) -> Iterator[FolioWalk]:
    """``with folio_walk(vma, addr, flags) as fw:`` -- ``fw.folio`` is the result; the walk is
    always ended (lock released) when the block exits."""
    fw = FolioWalk()
    folio = folio_walk_start(fw, vma, addr, flags)
    try:
        yield fw
    finally:
        if folio is not None and fw.ptl is not None:
            folio_walk_end(fw, vma)
