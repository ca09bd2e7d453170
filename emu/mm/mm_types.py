"""``struct page`` / ``struct folio`` and the memmap, ``mm_struct``, VMAs, the mmap lock, page-table
locks and the zero pages.

Linux sources (v6.12): include/linux/mm.h (VM_* flags, is_cow_mapping), include/linux/mm_types.h,
include/linux/mm.h ptlock helpers
(pte_lockptr, pmd_lockptr, pud_lockptr with split PTE/PMD ptlocks), include/linux/huge_mm.h
(is_huge_zero_pmd), include/linux/pgtable.h (is_zero_pfn).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from archs.linux import LinuxPgtable
from emu.errors import AddressError, MemoryLayoutError
from emu.machines.ram import FrameAllocator, PhysicalMemory

# include/linux/mm.h (v6.12)
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_PFNMAP = 0x00000400
VM_IO = 0x00004000
VM_DONTEXPAND = 0x00040000
VM_HUGETLB = 0x00400000
VM_MIXEDMAP = 0x10000000

VM_FLAG_NAMES = {
    VM_READ: "VM_READ",
    VM_WRITE: "VM_WRITE",
    VM_EXEC: "VM_EXEC",
    VM_SHARED: "VM_SHARED",
    VM_MAYREAD: "VM_MAYREAD",
    VM_MAYWRITE: "VM_MAYWRITE",
    VM_MAYEXEC: "VM_MAYEXEC",
    VM_MAYSHARE: "VM_MAYSHARE",
    VM_PFNMAP: "VM_PFNMAP",
    VM_IO: "VM_IO",
    VM_DONTEXPAND: "VM_DONTEXPAND",
    VM_HUGETLB: "VM_HUGETLB",
    VM_MIXEDMAP: "VM_MIXEDMAP",
}


def vm_flags_str(flags: int) -> str:
    return "|".join(n for bit, n in VM_FLAG_NAMES.items() if flags & bit) or "0"


def is_cow_mapping(flags: int) -> bool:
    """``is_cow_mapping()``: private and may be written."""
    return flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE


# -- struct page, struct folio and the memmap (include/linux/mm_types.h, mm.h) ----------------
@dataclass(frozen=True, order=True)
class Page:
    """``struct page``: identified by its pfn (``page_to_pfn``)."""

    pfn: int


@dataclass(frozen=True, order=True)
class Folio:
    """``struct folio``: the head page's pfn and the folio order (``folio_order``)."""

    pfn: int
    order: int

    @property
    def nr_pages(self) -> int:  # folio_nr_pages()
        return 1 << self.order


class MemMap:
    """The memory map (``mem_map`` / vmemmap): pfn -> page, compound heads and orders.

    Only folios that were allocated are compound; any other pfn is its own order-0 folio, as for
    a page that was never part of a large allocation.  ``highest_memmap_pfn`` is the last pfn of
    RAM (mm/mm_init.c memmap_init_range()).

    SPARSEMEM (all three architectures): memory is managed in sections of
    ``2**section_size_bits`` bytes (asm/sparsemem.h SECTION_SIZE_BITS); a section that holds any
    RAM is present and has a struct page for *every* pfn of it (mm/sparse.c; the pfns beyond RAM
    are initialised reserved by init_unavailable_range()), a pfn of no present section has none
    (its vmemmap is not populated: reading its struct page faults).  ``section_size_bits=None``
    makes the memmap end at RAM's end (a section per byte of RAM, as before sections were modelled).
    """

    def __init__(self, ram: PhysicalMemory, page_shift: int, section_size_bits: int | None = None) -> None:
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self.highest_memmap_pfn = (ram.size >> page_shift) - 1
        #: PFN_SECTION_SHIFT = SECTION_SIZE_BITS - PAGE_SHIFT (include/linux/mmzone.h)
        self.pfn_section_shift = (section_size_bits - page_shift) if section_size_bits is not None else None
        if self.pfn_section_shift is None:
            self.section_end_pfn = self.highest_memmap_pfn + 1
        else:
            per = 1 << self.pfn_section_shift
            self.section_end_pfn = (self.highest_memmap_pfn // per + 1) * per
        self._heads: list[int] = []  # sorted head pfns
        self._orders: dict[int, int] = {}

    def pfn_valid(self, pfn: int) -> bool:
        """``pfn_valid()`` (include/linux/mmzone.h, v6.12, CONFIG_SPARSEMEM): the pfn's section is
        present; RAM's sections are early sections, valid for their whole span
        (``early_section(ms) || pfn_section_valid(ms, pfn)``).  With SPARSEMEM_VMEMMAP this is
        also "the pfn has a struct page": :meth:`has_struct_page`."""
        return 0 <= pfn < self.section_end_pfn

    def has_struct_page(self, pfn: int) -> bool:
        """``pfn_to_page(pfn)`` points at a struct page that exists (vmemmap populated for its
        section); the kernel oopses reading any other one."""
        return 0 <= pfn < self.section_end_pfn

    def add_folio(self, pfn: int, order: int) -> Folio:
        """Make ``[pfn, pfn + 2**order)`` one compound folio (``prep_compound_page``)."""
        if pfn & ((1 << order) - 1):
            raise AddressError(f"folio at pfn {pfn:#x} is not aligned to its order {order}")
        if not 0 <= pfn + (1 << order) - 1 <= self.highest_memmap_pfn:
            raise MemoryLayoutError(f"folio pfn {pfn:#x} order {order} is beyond RAM")
        i = bisect.bisect_right(self._heads, pfn)
        if i and self._heads[i - 1] + (1 << self._orders[self._heads[i - 1]]) > pfn:
            raise MemoryLayoutError(f"folio at pfn {pfn:#x} overlaps the folio at {self._heads[i - 1]:#x}")
        if i < len(self._heads) and self._heads[i] < pfn + (1 << order):
            raise MemoryLayoutError(f"folio at pfn {pfn:#x} overlaps the folio at {self._heads[i]:#x}")
        self._heads.insert(i, pfn)
        self._orders[pfn] = order
        return Folio(pfn, order)

    def pfn_to_page(self, pfn: int) -> Page:
        return Page(pfn)

    def page_folio(self, page: Page) -> Folio:
        """``page_folio()``: the folio (compound head) that contains ``page``."""
        i = bisect.bisect_right(self._heads, page.pfn)
        if i:
            head = self._heads[i - 1]
            order = self._orders[head]
            if page.pfn < head + (1 << order):
                return Folio(head, order)
        return Folio(page.pfn, 0)

    def compound_head(self, page: Page) -> Page:
        return Page(self.page_folio(page).pfn)

    @staticmethod
    def nth_page(page: Page, n: int) -> Page:
        """``nth_page()``: the page ``n`` struct pages after ``page``."""
        return Page(page.pfn + n)

    def folios(self) -> list[Folio]:
        return [Folio(h, self._orders[h]) for h in self._heads]


@dataclass
class VMA:
    """``struct vm_area_struct``: ``[vm_start, vm_end)`` with ``vm_flags`` and ``vm_pgoff``."""

    vm_start: int
    vm_end: int
    vm_flags: int = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
    vm_pgoff: int = 0
    name: str = ""
    vm_mm: MM | None = field(default=None, repr=False, compare=False)

    def __contains__(self, addr: int) -> bool:
        return self.vm_start <= addr < self.vm_end


def _vm_start(vma: VMA) -> int:
    return vma.vm_start


class RwSemaphore:
    """``struct rw_semaphore`` for the mmap lock: many readers or one writer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    def down_read(self) -> None:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1

    def up_read(self) -> None:
        with self._cond:
            self._readers -= 1
            self._cond.notify_all()

    def down_write(self) -> None:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True

    def up_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    def is_locked(self) -> bool:  # rwsem_is_locked()
        return self._writer or self._readers > 0


class SpinLock:
    """A ``spinlock_t`` page-table lock; ``name`` says which table (or mm) it guards."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.holder: int | None = None

    def lock(self) -> None:  # spin_lock()
        self._lock.acquire()
        self.holder = threading.get_ident()

    def unlock(self) -> None:  # spin_unlock()
        if not self._lock.locked():
            raise RuntimeError(f"unlock of {self.name}, which is not held")
        self.holder = None
        self._lock.release()

    def is_locked(self) -> bool:  # spin_is_locked()
        return self._lock.locked()

    def __enter__(self) -> SpinLock:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def __repr__(self) -> str:
        return f"<ptl {self.name}{' held' if self.is_locked() else ''}>"


class MM:
    """``struct mm_struct``: the page tables of one address space and what guards them.

    ``pgd`` is the physical address of the top-level table (``mm->pgd``).  The shared zero page
    (``ZERO_PAGE(0)``, pfn ``zero_pfn``) and the huge zero folio (``huge_zero_pfn``) are allocated
    here, as the kernel does at boot.
    """

    def __init__(
        self,
        ops: LinuxPgtable,
        ram: PhysicalMemory,
        alloc: FrameAllocator,
        memmap: MemMap,
        pgd: int,
    ) -> None:
        self.ops = ops
        self.ram = ram
        self.alloc = alloc
        self.memmap = memmap
        self.pgd = pgd
        self.vmas: list[VMA] = []
        self.mmap_lock = RwSemaphore()
        self.page_table_lock = SpinLock("mm->page_table_lock")
        self._ptlocks: dict[int, SpinLock] = {}
        self._ptlocks_guard = threading.Lock()
        page = ops.PAGE_SIZE
        # mm/memory.c: zero_pfn = page_to_pfn(ZERO_PAGE(0)).  One page, or with
        # __HAVE_COLOR_ZERO_PAGE (s390: arch/s390/mm/init.c setup_zero_pages()) 2**ZERO_PAGE_ORDER
        # pages, split_page()d into order-0 pages; ZERO_PAGE(vaddr) picks by vaddr & zero_page_mask.
        zero_order = getattr(ops, "ZERO_PAGE_ORDER", 0)
        zero_pa = alloc.alloc(page << zero_order)
        self.zero_pfn = zero_pa >> ops.PAGE_SHIFT
        self.zero_page_nr = 1 << zero_order
        self.zero_page_mask = ((page << zero_order) - 1) & ~(page - 1)
        for i in range(self.zero_page_nr):
            memmap.add_folio(self.zero_pfn + i, 0)
        self.huge_zero_pfn: int | None = None

    # -- zero pages ----------------------------------------------------------------------------
    def my_zero_pfn(self, addr: int) -> int:
        """``my_zero_pfn(addr)`` = ``page_to_pfn(ZERO_PAGE(addr))``: the (coloured) zero page a PTE
        for ``addr`` maps (do_anonymous_page())."""
        return self.zero_pfn + ((addr & self.zero_page_mask) >> self.ops.PAGE_SHIFT)

    def is_zero_pfn(self, pfn: int) -> bool:
        """``is_zero_pfn()`` (include/linux/pgtable.h; coloured zero pages where the arch has them)."""
        return 0 <= pfn - self.zero_pfn < self.zero_page_nr

    def alloc_huge_zero_folio(self) -> int:
        """``get_huge_zero_folio()``: one zeroed PMD-order folio, its pfn kept in huge_zero_pfn."""
        if self.huge_zero_pfn is None:
            size = self.ops.PMD_SIZE
            pa = self.alloc.alloc(size)
            self.huge_zero_pfn = pa >> self.ops.PAGE_SHIFT
            self.memmap.add_folio(self.huge_zero_pfn, (size >> self.ops.PAGE_SHIFT).bit_length() - 1)
        return self.huge_zero_pfn

    def is_huge_zero_pmd(self, pmd: int) -> bool:
        """``is_huge_zero_pmd()`` (v6.12 huge_mm.h): present and pointing at the huge zero pfn."""
        return (
            self.huge_zero_pfn is not None
            and self.ops.pmd_present(pmd)
            and self.ops.pmd_pfn(pmd) == self.huge_zero_pfn
        )

    # -- VMAs ----------------------------------------------------------------------------------
    def add_vma(self, vma: VMA) -> VMA:
        """Insert ``vma`` (``self.vmas`` stays sorted by ``vm_start``); O(log n) to find its
        place and its neighbours, the only VMAs it could overlap."""
        if vma.vm_start >= vma.vm_end:
            raise AddressError(f"VMA {vma.vm_start:#x}..{vma.vm_end:#x} is empty")
        if vma.vm_start % self.ops.PAGE_SIZE or vma.vm_end % self.ops.PAGE_SIZE:
            raise AddressError(f"VMA {vma.vm_start:#x}..{vma.vm_end:#x} is not page aligned")
        vmas = self.vmas
        i = bisect.bisect_left(vmas, vma.vm_start, key=_vm_start)
        for other in vmas[max(i - 1, 0) : i + 1]:
            if vma.vm_start < other.vm_end and other.vm_start < vma.vm_end:
                raise MemoryLayoutError(
                    f"VMA {vma.name or hex(vma.vm_start)} overlaps VMA {other.name or hex(other.vm_start)}"
                )
        vma.vm_mm = self
        vmas.insert(i, vma)
        return vma

    def find_vma(self, addr: int) -> VMA | None:
        """The VMA that contains ``addr`` (``vma_lookup()``), or None; a binary search (the VMAs
        never overlap, so only the last one starting at or below ``addr`` can hold it)."""
        i = bisect.bisect_right(self.vmas, addr, key=_vm_start) - 1
        if i >= 0 and addr in self.vmas[i]:
            return self.vmas[i]
        return None

    def nearest_vma(self, addr: int) -> VMA | None:
        """The VMA holding ``addr``, else the one whose start or end is closest to it (None when
        there are no VMAs); a binary search."""
        vmas = self.vmas
        i = bisect.bisect_right(vmas, addr, key=_vm_start)
        near = vmas[max(i - 1, 0) : i + 1]
        if not near:
            return None
        return min(near, key=lambda v: 0 if addr in v else min(abs(v.vm_start - addr), abs(v.vm_end - addr)))

    # -- locks ---------------------------------------------------------------------------------
    def mmap_read_lock(self) -> None:
        self.mmap_lock.down_read()

    def mmap_read_unlock(self) -> None:
        self.mmap_lock.up_read()

    @contextmanager
    def mmap_read(self) -> Iterator[MM]:
        """``mmap_read_lock()`` ... ``mmap_read_unlock()`` as a block."""
        self.mmap_read_lock()
        try:
            yield self
        finally:
            self.mmap_read_unlock()

    def mmap_assert_locked(self) -> None:
        if not self.mmap_lock.is_locked():
            raise RuntimeError("mmap_assert_locked: the mmap lock is not held")

    def _ptlock(self, key: int, what: str) -> SpinLock:
        with self._ptlocks_guard:
            lock = self._ptlocks.get(key)
            if lock is None:
                lock = self._ptlocks[key] = SpinLock(f"{what} table {key:#x}")
            return lock

    def pte_lockptr(self, pmd: int) -> SpinLock:
        """``pte_lockptr(mm, pmd)``: split PTE ptlock of the page holding the PTE table
        (USE_SPLIT_PTE_PTLOCKS; s390's 2K tables share the lock of their 4K page)."""
        table = self.ops.table_pa("pmd", pmd) & ~(self.ops.PAGE_SIZE - 1)
        return self._ptlock(table, "pte")

    def pmd_lockptr(self, pmdp: int) -> SpinLock:
        """``pmd_lockptr(mm, pmd)``: split PMD ptlock of the PMD table (USE_SPLIT_PMD_PTLOCKS)."""
        if self.ops.folded("pmd"):
            return self.page_table_lock
        table = pmdp & ~(self.ops.hw_level("pmd").table_size - 1)
        return self._ptlock(table, "pmd")

    def pmd_lock(self, pmdp: int) -> SpinLock:
        lock = self.pmd_lockptr(pmdp)
        lock.lock()
        return lock

    def pud_lock(self, pudp: int) -> SpinLock:
        """``pud_lock()``: ``pud_lockptr()`` is ``&mm->page_table_lock`` (no split PUD locks)."""
        self.page_table_lock.lock()
        return self.page_table_lock
