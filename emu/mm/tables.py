"""The page-table builder: map ranges at any level and install every kind of Linux entry.

All entries are built by the architecture module (``pfn_pte``, ``pfn_pmd``, ``pfn_pud``,
``mk_table``, ``swp_entry_to_pte``), which builds them through its construct formats.  The
builder refuses what a kernel would never do and what would make a result meaningless: an
address that is not canonical or not aligned to the leaf size, a leaf or a table outside RAM,
and a mapping over an existing one.
"""

from __future__ import annotations

from archs.base import LINUX_LEVELS, HwLevel
from archs.linux import LinuxPgtable, Prot, SwpEntry
from emu.errors import AddressError, MemoryLayoutError
from emu.mm.mm_types import MM, Folio

LEAF_LEVELS = ("pud", "pmd", "pte")


class PageTableBuilder:
    """Builds the page tables of one :class:`~emu.mm.mm_types.MM` in its guest RAM.

    ``reserved`` VA ranges (e.g. the x86-64 probe machine's own top-level slot) cannot be mapped.
    Every table frame the builder allocates is listed in ``tables`` as ``(pa, size)``.
    """

    def __init__(self, mm: MM, *, reserved: list[tuple[int, int]] | None = None) -> None:
        self.mm = mm
        self.ops: LinuxPgtable = mm.ops
        self.reserved = list(reserved or [])
        self.tables: list[tuple[int, int]] = []
        top = self.ops.config.levels[0]
        if mm.pgd is None or mm.pgd < 0:  # pragma: no cover - MM always has a pgd
            raise MemoryLayoutError("mm has no pgd")
        self._note_table(mm.pgd, top)

    # -- tables --------------------------------------------------------------------------------
    def _note_table(self, pa: int, level: HwLevel) -> None:
        self.tables.append((pa, level.table_size))
        empty = self.ops.clear_value(level.linux)
        if empty:
            raw = empty.to_bytes(8, "big" if self.ops.big_endian else "little")
            self.mm.ram.write(pa, raw * level.entries)

    def alloc_table(self, level: HwLevel) -> int:
        """A new, empty table for hardware level ``level`` (``pXd_alloc_one``)."""
        pa = self.mm.alloc.alloc(level.table_size, max(level.table_size, 8))
        self._note_table(pa, level)
        return pa

    def _check_va(self, va: int, size: int) -> None:
        if not self.ops.va_valid(va) or not self.ops.va_valid(va + size - 1):
            raise AddressError(f"virtual address {va:#x} is not canonical for {self.ops.config.key}")
        if va % size:
            raise AddressError(f"virtual address {va:#x} is not aligned to the {size:#x}-byte entry it needs")
        for start, end in self.reserved:
            if va < end and start < va + size:
                raise MemoryLayoutError(f"virtual address {va:#x} is in a range reserved for the probe machine")

    def entry_pa(self, va: int, linux: str, *, create: bool = True) -> int:
        """Physical address of the entry for ``va`` at Linux level ``linux``, allocating the
        tables above it.  Raises if a leaf or a non-table entry is in the way."""
        target = self.ops.hw_level(linux)
        levels = self.ops.config.levels
        table = self.mm.pgd
        for i, lv in enumerate(levels):
            pa = table + lv.index(va) * lv.entry_size
            if lv is target:
                return pa
            val = self.mm.ram.read_u64(pa)
            if self.ops.entry_none(lv.linux, val):
                if not create:
                    raise MemoryLayoutError(f"no {lv.linux} table for {va:#x}")
                child = self.alloc_table(levels[i + 1])
                self.mm.ram.write_u64(pa, self.ops.mk_table(lv.linux, child))
                table = child
            else:
                if lv.linux in LEAF_LEVELS and self._is_leaf(lv.linux, val):
                    raise MemoryLayoutError(
                        f"mapping {va:#x} at {linux} overlaps the {lv.linux} leaf at entry {pa:#x}"
                    )
                table = self.ops.table_pa(lv.linux, val)
        raise MemoryLayoutError(f"{linux} is not a level of {self.ops.config.key}")  # pragma: no cover

    def _is_leaf(self, linux: str, val: int) -> bool:
        if linux == "pud":
            return self.ops.pud_leaf(val) or not self.ops.pud_present(val)
        if linux == "pmd":
            return self.ops.pmd_leaf(val) or not self.ops.pmd_present(val)
        return True

    def set_entry(self, va: int, linux: str, value: int, *, replace: bool = False) -> int:
        """Install a raw entry at Linux level ``linux`` for ``va``; returns its physical address."""
        if linux not in LINUX_LEVELS:
            raise MemoryLayoutError(f"unknown Linux level {linux!r}")
        size = self.level_size(linux)
        self._check_va(va, size)
        pa = self.entry_pa(va, linux)
        old = self.mm.ram.read_u64(pa)
        if not replace and not self.ops.entry_none(self.ops.hw_level(linux).linux, old):
            raise MemoryLayoutError(f"{va:#x} is already mapped at {linux} (entry {pa:#x} = {old:#x})")
        self.mm.ram.write_u64(pa, value)
        return pa

    def level_size(self, linux: str) -> int:
        """The VA span one entry at Linux level ``linux`` covers."""
        return 1 << self.ops.hw_level(linux).shift

    # -- leaves --------------------------------------------------------------------------------
    def map_pfn(self, va: int, linux: str, pfn: int, prot: Prot, *, in_ram: bool = True) -> int:
        """A leaf at ``linux`` (pte, or a pmd/pud block) mapping ``pfn``."""
        size = self.ops.config.leaf_size(linux)
        if size is None or self.ops.folded(linux):
            raise MemoryLayoutError(f"{self.ops.config.key} has no {linux} leaves")
        pa = pfn << self.ops.PAGE_SHIFT
        if pa % size:
            raise AddressError(f"physical address {pa:#x} is not aligned to the {size:#x}-byte {linux} leaf")
        if in_ram:
            self.mm.ram.check_range(pa, size, f"{linux} leaf target")
        make = {"pte": self.ops.pfn_pte, "pmd": self.ops.pfn_pmd, "pud": self.ops.pfn_pud}[linux]  # type: ignore[attr-defined]
        return self.set_entry(va, linux, make(pfn, prot))

    def alloc_folio(self, order: int, *, tag: bool = True) -> Folio:
        """A new folio of ``order`` (naturally aligned); small ones get their data tagged."""
        size = self.ops.PAGE_SIZE << order
        pa = self.mm.alloc.alloc(size)
        folio = self.mm.memmap.add_folio(pa >> self.ops.PAGE_SHIFT, order)
        if tag and size <= (2 << 20):
            self.mm.ram.tag(pa, size)
        return folio

    def map_folio(self, va: int, folio: Folio, prot: Prot, *, linux: str = "pte") -> list[int]:
        """Map all of ``folio`` at ``va``: one leaf at ``linux`` or, for ``pte``, one PTE per page."""
        if linux == "pte":
            return [
                self.map_pfn(va + (i << self.ops.PAGE_SHIFT), "pte", folio.pfn + i, prot)
                for i in range(folio.nr_pages)
            ]
        size = self.ops.config.leaf_size(linux)
        if size != folio.nr_pages << self.ops.PAGE_SHIFT:
            raise MemoryLayoutError(f"an order-{folio.order} folio does not fill a {linux} leaf")
        return [self.map_pfn(va, linux, folio.pfn, prot)]

    # -- non-present entries ---------------------------------------------------------------------
    def set_swap(self, va: int, linux: str, entry: SwpEntry, *, exclusive: bool = False) -> int:
        """A swap/migration entry at ``pte`` or ``pmd`` (``swp_entry_to_pte``/``_pmd``)."""
        if linux == "pte":
            val = self.ops.swp_entry_to_pte(entry, exclusive=exclusive)  # type: ignore[attr-defined]
        elif linux == "pmd":
            val = self.ops.swp_entry_to_pmd(entry)  # type: ignore[attr-defined]
        else:
            raise MemoryLayoutError("swap entries exist only at PTE and PMD level")
        self._check_va(va, self.level_size(linux))
        return self.set_entry(va, linux, val)

    def set_migration(self, va: int, linux: str, folio: Folio, kind: str, *, page: int = 0) -> int:
        """A migration entry (``make_readable/readable_exclusive/writable_migration_entry``) for
        page ``page`` of ``folio``."""
        types = self.ops.swap.migration_types  # empty without CONFIG_MIGRATION
        if kind not in types:
            raise MemoryLayoutError(f"unknown migration entry kind {kind!r} for {self.ops.kconfig.describe()}; "
                                    f"known: {', '.join(types) or 'none (CONFIG_MIGRATION=n)'}")
        entry = self.ops.make_pfn_swp_entry(types[kind], folio.pfn + page)
        return self.set_swap(va, linux, entry)
