"""``folio_walk_start()`` / ``folio_walk_end()``: Linux's walk to the folio mapped at an address.

The control flow mirrors mm/pagewalk.c line for line.  Two kernel versions are modelled
(``ops.kernel``):

* ``aa39ca6940f1`` -- the seed patch "mm/pagewalk: introduce folio_walk_start() +
  folio_walk_end()" (David Hildenbrand, Aug 2024), exactly as written there.
* ``v6.12`` (default) -- the release, which adds to it
  - "mm/pagewalk: check pfnmap for folio_walk_start()" (Peter Xu): ``pud_special()`` in the PUD
    branch (vm_normal_page_pmd() got ``pmd_special()`` in the same series, see emu/mm/memory.py);
  - "mm/pagewalk: fix usage of pmd_leaf()/pud_leaf() without present check" (Hildenbrand, Oct
    2024): a non-present PUD/PMD also takes the leaf branch, so a PMD migration entry -- whose
    _PAGE_PSE is clear on x86-64 -- is found with FW_MIGRATION instead of being skipped.

All architecture knowledge comes from ``vma.vm_mm.ops`` (an :class:`archs.linux.LinuxPgtable`).
Beyond the kernel's return value, every walk records *why* it ended (``fw.reason``), the entries
it read (``fw.trace``), the bad entries it cleared and the WARN_ON_ONCE()s it hit.

The three walkers (``emu/mm/WALKERS.md`` says the same at more length)
-------------------------------------------------------------------------
* **The specification: ``_Walker``** (this module, :func:`folio_walk_start_reference`).  It
  mirrors mm/pagewalk.c line for line -- re-reading under the lock, falling through to the next
  level when a leaf turned into a table, ``pXd_none_or_clear_bad()`` clearing a bad entry, the
  PTL held exactly while a folio is returned -- and it alone may decide *every* case and write
  guest RAM (clearing a bad entry).  When the kernel changes, this is the walker to change.
* **A fast form: ``FastWalk``** (:mod:`emu.mm.pagewalk_fast`).  :func:`folio_walk_start` tries it
  first.  It takes the reference's steps for the common shapes only (good tables down to a
  present normal leaf, or a none entry) with memoised predicates; it never writes RAM and never
  decides anything else: any other entry returns ``FALLBACK`` and the reference walks the
  address from the beginning.
* **A vector form: the vector rules of** :mod:`emu.mm.pagewalk_batch` (``walk_many()``: numpy over
  many addresses; ``X86_64Rules`` with masks derived from archs' construct formats,
  ``MemoRules`` and ``DynamicFoldingRules`` asking the arch's own predicates once per distinct
  value).  Same limits as the fast form: it decides only good tables, present normal leaves,
  none entries and addresses outside the VMA; every other address is walked by
  :func:`folio_walk_start`, in order.

What ties them: ``tests/mm/test_batch_walk.py::test_random_hierarchies_batch_fast_and_reference_agree``
(Hypothesis: random hierarchies of random entries, both kernels, every flag combination and VMA
kind; the reference, ``folio_walk_start()`` and ``walk_many()`` sequential and isolated must
leave identical records and identical tables), with the s390x retyped-table variant and
``test_x86_vector_rules_imply_the_scalar_predicates`` (every x86 mask rule implies the arch's
scalar predicate).

"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from emu.mm.memory import vm_normal_page_pmd_why, vm_normal_page_why
from emu.mm.mm_types import MM, VMA, Folio, Page, SpinLock
from emu.mm.pagewalk_fast import FALLBACK, FastWalk, fast_walker
from emu.mm.pagewalk_h import (
    FLAG_COMBINATIONS,
    FW_LEVEL_PMD,
    FW_LEVEL_PTE,
    FW_LEVEL_PUD,
    FW_MIGRATION,
    FW_ZEROPAGE,
    LEVEL_NAMES,
    LINUX_LEVELS5,
    FolioWalk,
    TraceStep,
    flags_str,
)

# struct folio_walk and the FW_* flags (include/linux/pagewalk.h) are part of this API, as the
# header is of the kernel's.
__all__ = [
    "FLAG_COMBINATIONS", "FW_LEVEL_PMD", "FW_LEVEL_PTE", "FW_LEVEL_PUD", "FW_MIGRATION", "FW_ZEROPAGE",
    "LEVEL_NAMES", "LINUX_LEVELS5", "FolioWalk", "TraceStep", "flags_str",
    "folio_walk_start", "folio_walk_start_reference", "folio_walk_end", "folio_walk",
    "vma_pgtable_walk_begin", "vma_pgtable_walk_end", "outside_vma_warning",
]

# CONFIG_PGTABLE_HAS_HUGE_LEAVES: THP or hugetlb; set on every configuration we model.
CONFIG_PGTABLE_HAS_HUGE_LEAVES = True
_PTE_MAP_RETRIES = 1000  # __pte_offset_map_lock() retries until pmd_same(); bound it


def outside_vma_warning(addr: int, vma: VMA) -> str:
    """The WARN_ON_ONCE(addr < vma->vm_start || addr >= vma->vm_end) of folio_walk_start()."""
    return f"address {addr:#x} outside the VMA {vma.vm_start:#x}..{vma.vm_end:#x}"


class _Unreadable(Exception):
    """An entry address outside RAM: the kernel would oops; we end the walk and say so."""

    def __init__(self, level: str, pa: int, why: str | None = None) -> None:
        super().__init__(why or f"{level} entry at {pa:#x} is outside RAM")
        self.level = level
        self.pa = pa


class _Oops(Exception):
    """The kernel would oops here: it reads the struct page of a pfn that has none (no memmap
    for its SPARSEMEM section, so ``vmemmap + pfn`` is not mapped).  The walk ends and says so:
    ``fw.reason`` ``oops@<level>:no-struct-page``, and a warning naming the pfn."""

    def __init__(self, level: str, pfn: int) -> None:
        super().__init__(oops_no_struct_page(pfn))
        self.level = level
        self.pfn = pfn


def oops_no_struct_page(pfn: int) -> str:
    """The model's named outcome for a struct page the kernel reads but that does not exist."""
    return f"kernel oops: struct page of pfn {pfn:#x} does not exist"


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

    def page_of(self, level: str, pfn: int) -> Page:
        """``pfn_to_page(pfn)`` whose struct page the kernel is about to read (``page_folio()``
        after ``pud_page()``; ``PageLocked()`` in ``pfn_swap_entry_to_page()``): a pfn without a
        struct page oopses (include/linux/swapops.h, include/linux/page-flags.h, v6.12)."""
        if not self.mm.memmap.has_struct_page(pfn):
            raise _Oops(level, pfn)
        return self.mm.memmap.pfn_to_page(pfn)

    def warn(self, what: str) -> None:
        self.fw.warnings.append(what)

    def clear_bad(self, level: str, pa: int, val: int) -> None:
        """``pXd_clear_bad()``: ``pXd_ERROR()`` then ``pXd_clear()`` (mm/pgtable-generic.c:25-56);
        ``pXd_clear()`` may store nothing (s390: an entry of another region type, ``ops.pxd_clear``),
        and only a stored clear is recorded in ``fw.cleared``."""
        if self.ops.clear_bad_is_noop(level):
            return
        self.warn(f"{level}_ERROR: bad {level} {val:#018x} at {pa:#x}")
        new = self.ops.pxd_clear(level, val)
        if new is not None:
            self.fw.cleared.append(TraceStep(level, pa, val))
            self.mm.ram.write_u64(pa, new)

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
            # pte_lockptr() = ptlock_ptr(page_ptdesc(pmd_page(*pmd))) (include/linux/mm.h:3000-3003):
            # the lock is in the struct page of the table's own address, which arm64's __va()
            # may alias elsewhere (ops.pgtable_pa); spin_lock() (mm/pgtable-generic.c:375) on a
            # struct page the memmap lacks oopses.  (A table outside RAM: the PTE read says so.)
            table = ops.table_pa("pmd", pmdval)
            if not self.mm.memmap.pfn_valid(table >> ops.PAGE_SHIFT) and self.mm.ram.contains(ptep, 8):
                raise _Unreadable("pte", ptep, f"the PTE table at {ptep & ~(ops.PAGE_SIZE - 1):#x} is read "
                                  f"as __va({table:#x}), whose struct page (pte_lockptr()) is not in the memmap")
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
                    # pud_page() keeps the address bits below PUD_SIZE (arm64); page_of(): the
                    # kernel oopses where no struct page exists (read by page_folio())
                    page = self.page_of("pud", ops.pud_page_pfn(pud))  # mm/pagewalk.c:829
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
                    # ptep_get(): the entry read, or more (arm64 contiguous PTEs, archs ptep_get())
                    pte = ops.ptep_get(ptep, self.get("pte", ptep), mm.ram.read_u64)

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
        except _Oops as err:
            # The task dies holding the PTL; the kernel view releases it (emu/kernel/walk.py), and
            # so does the model: no lock is left held by a walk that returned nothing.
            if ptl is not None and ptl.is_locked():
                ptl.unlock()
            self.warn(str(err))
            fw.reason = f"oops@{err.level}:no-struct-page"
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
            page, why = vm_normal_page_pmd_why(self.vma, self.addr, pmd)
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
            return self.page_of("pmd", ops.swp_offset_pfn(entry))  # pfn_swap_entry_to_page()
        entry = ops.pmd_to_swp_entry(pmd)
        fw.reason = (
            "migration-entry@pmd" if ops.swap.is_migration_entry(entry) else f"swap@pmd:{ops.swap.name(entry.type)}"
        )
        return None

    def pte_page(self, pte: int) -> Page | None:
        """The PTE branch once the lock is held: normal page, zero page, migration entry."""
        fw, ops, mm = self.fw, self.ops, self.mm
        if ops.pte_present(pte):
            page, why = vm_normal_page_why(self.vma, self.addr, pte)
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
            if self.flags & FW_MIGRATION and ops.swap.is_migration_entry(entry):
                fw.kind = "migration-entry"
                return self.page_of("pte", ops.swp_offset_pfn(entry))  # pfn_swap_entry_to_page()
            fw.reason = (
                "migration-entry@pte" if ops.swap.is_migration_entry(entry)
                else f"swap@pte:{ops.swap.name(entry.type)}"
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


def folio_walk_start(fw: FolioWalk, vma: VMA, addr: int, flags: int = 0) -> Folio | None:
    """``folio_walk_start()`` (mm/pagewalk.c): walk the page tables of ``vma`` to the folio
    mapped at ``addr``.  Takes a :class:`~emu.mm.mm_types.VMA`; returns the :class:`~emu.machines.ram.Folio`
    with the page-table lock held (call :func:`folio_walk_end`), or None with no lock held.
    The mmap lock must be held in read mode (``with mm.mmap_read():``)."""
    mm = vma.vm_mm
    assert mm is not None, "VMA is not attached to an mm (mm.add_vma)"
    if not mm.mmap_lock.is_locked():
        mm.mmap_assert_locked()  # raises
    fast: FastWalk | None = getattr(mm, "_folio_walk_fast", None)
    if fast is None or fast.ops is not mm.ops or fast.ram is not mm.ram or fast.memmap is not mm.memmap:
        fast = fast_walker(mm)
    if fast.enabled:
        try:
            folio = fast.start(fw, vma, addr, flags)
        except IndexError:  # an entry outside RAM: the reference reports unreadable@<level>
            folio = FALLBACK
        if folio is not FALLBACK:
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
