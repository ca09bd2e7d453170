"""The built-in default scenario: one address space holding every case folio_walk distinguishes.

It is generic: positions come from the configuration's geometry (PAGE_SIZE, PMD_SIZE, PUD_SIZE,
top-level span) and every entry is built by the architecture module, so the same case list
serves x86-64, arm64 and s390x.  Cases a configuration cannot have (PUD leaves where the PUD is
folded, say) are left out and listed in ``Scenario.omitted`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archs.linux import LinuxPgtable, Prot, SwpEntry
from emu.errors import MemoryLayoutError
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.mm.mm_types import (
    MM,
    VM_IO,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VMA,
    MemMap,
)
from emu.mm.tables import PageTableBuilder

SMALL_RAM = 64 << 20  # tables, small folios, the zero page, the probe machine's own frames
ANON_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
PFNMAP_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO
MIXEDMAP_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE | VM_MIXEDMAP
DAX_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE


@dataclass(frozen=True)
class Case:
    """One address to walk and probe, in ``vma``; ``name`` says what is mapped there."""

    name: str
    addr: int
    vma: VMA


@dataclass
class Scenario:
    """An address space built in guest RAM, with the cases to check in it."""

    ops: LinuxPgtable
    ram: PhysicalMemory
    alloc: FrameAllocator
    memmap: MemMap
    mm: MM
    builder: PageTableBuilder
    cases: list[Case] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)
    oracle: Any = None
    oracle_error: str = ""  # why there is no oracle, when its machine failed to start
    half: str = "low"

    @property
    def config(self) -> str:
        """The configuration key; for the high half of a configuration with two halves (arm64's
        TTBR1) the key plus the half's label, e.g. ``arm64:4k:48:ttbr1``."""
        if self.half == "low":
            return self.ops.config.key
        label = self.ops.config.extra.get("half_labels", {}).get(self.half, self.half)
        return f"{self.ops.config.key}:{label}"

    def add(self, name: str, addr: int, vma: VMA) -> None:
        self.cases.append(Case(name, addr, vma))

    def close(self) -> None:
        """Release the emulator, then guest RAM (RAM last: the emulator maps it)."""
        if self.oracle is not None:
            self.oracle.close()
            self.oracle = None
        self.ram.close()


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def halves(ops: LinuxPgtable) -> tuple[str, ...]:
    """The halves of the address space a configuration translates: ``("low",)``, or
    ``("low", "high")`` where ``config.extra["halves"]`` says so (arm64: TTBR0_EL1 and TTBR1_EL1)."""
    return tuple(ops.config.extra.get("halves", ("low",)))


def half_base(ops: LinuxPgtable, half: str) -> int:
    """The first virtual address of ``half``: 0, or for the high half 2**64 - 2**va_bits."""
    if half not in halves(ops):
        raise MemoryLayoutError(f"{ops.config.key} has no {half!r} half; it has {', '.join(halves(ops))}")
    return 0 if half == "low" else (1 << 64) - (1 << ops.config.va_bits)


def ram_size_for(ops: LinuxPgtable) -> int:
    """RAM that holds SMALL_RAM plus the default scenario's PMD- and PUD-sized folios."""
    pmd = ops.PMD_SIZE
    pud = ops.config.leaf_size("pud") if not ops.folded("pud") else None
    size = _align(SMALL_RAM, pmd) + 4 * pmd
    if pud:
        size = _align(size, pud) + 2 * pud
    return size


def new_address_space(
    ops: LinuxPgtable, *, ram_size: int | None = None, reserved_low: int = 0
) -> tuple[PhysicalMemory, FrameAllocator, MemMap, MM, PageTableBuilder]:
    """Empty guest RAM with an mm whose pgd table is allocated (``mm_alloc`` + ``pgd_alloc``)."""
    ram = PhysicalMemory(ram_size or ram_size_for(ops), big_endian=ops.big_endian)
    alloc = FrameAllocator(ram, reserved=[(0, reserved_low)] if reserved_low else None)
    memmap = MemMap(ram, ops.PAGE_SHIFT, ops.section_size_bits())
    top = ops.config.levels[0]
    pgd = alloc.alloc(top.table_size, max(top.table_size, 8))
    mm = MM(ops, ram, alloc, memmap, pgd)
    return ram, alloc, memmap, mm, PageTableBuilder(mm)


def build_default(ops: LinuxPgtable, *, with_oracle: bool = True, half: str = "low",
                  emulator: str = "unicorn") -> Scenario:
    """Build the default scenario for ``ops.config`` (see docs/verify.md: the case list), with the MMU
    oracle attached unless ``with_oracle`` is False (walk-only use).  ``half="high"`` (where
    :func:`halves` lists it) puts every VMA in the high half, walked from the same ``mm->pgd``
    and probed through the high half's root (arm64: TTBR1_EL1).  ``emulator`` picks the oracle's
    emulator (emu.machines.oracles.ORACLES)."""
    base = half_base(ops, half)
    ram, alloc, memmap, mm, b = new_address_space(ops, reserved_low=getattr(ops, "RESERVED_LOW", 0))
    sc = Scenario(ops, ram, alloc, memmap, mm, b, half=half)
    if with_oracle:
        from emu.machines.oracle import make_oracle

        sc.oracle = make_oracle(ops, ram, alloc, emulator)
        sc.oracle.half = half
        b.reserved = sc.oracle.reserved_va()
    P, M = ops.PAGE_SIZE, ops.PMD_SIZE
    has_pud_leaf = not ops.folded("pud") and ops.config.leaf_size("pud") is not None
    U = ops.config.leaf_size("pud") if has_pud_leaf else None
    big = U or M
    top_span = 1 << ops.config.levels[0].shift
    rw = Prot()

    # -- the anonymous VMA: several top-level entries, so every level has none entries -----------
    anon_start = base + max(top_span, big)
    anon_size = _align(max(4 * top_span, 16 * big), top_span)
    anon = mm.add_vma(VMA(anon_start, anon_start + anon_size, ANON_FLAGS, name="anon"))
    cursor = anon_start

    def take(size: int, align: int) -> int:
        nonlocal cursor
        va = _align(cursor, align)
        cursor = va + size
        if cursor > anon.vm_end:
            raise MemoryLayoutError("default scenario does not fit its VMA")  # pragma: no cover
        return va

    ptes = take(M, M)
    f0 = b.alloc_folio(0)
    b.map_folio(ptes, f0, rw)
    sc.add(f"{P >> 10}K page, order-0 folio", ptes + 0x10, anon)
    f4 = b.alloc_folio(4)
    b.map_folio(ptes + 16 * P, f4, rw)
    sc.add(f"{P >> 10}K page 5 of an order-4 folio", ptes + 21 * P + 0x238, anon)
    b.map_pfn(ptes + 40 * P, "pte", mm.my_zero_pfn(ptes + 40 * P), Prot(write=False, special=True))
    sc.add("shared zero page (special PTE)", ptes + 40 * P + 0x8, anon)
    for i, kind in enumerate(("read", "read-exclusive", "write")):
        target = b.alloc_folio(2)
        b.set_migration(ptes + (41 + i) * P, "pte", target, kind, page=1)
        sc.add(f"migration entry ({kind}) for page 1 of an order-2 folio, PTE", ptes + (41 + i) * P + 0x40, anon)
    b.set_swap(ptes + 44 * P, "pte", SwpEntry(3, 0x1234))
    sc.add("swap entry (type 3, offset 0x1234), PTE", ptes + 44 * P, anon)
    fp = b.alloc_folio(0)
    b.map_folio(ptes + 45 * P, fp, Prot(protnone=True))
    sc.add("PROT_NONE PTE", ptes + 45 * P + 0x18, anon)
    sc.add("none PTE", ptes + 46 * P, anon)
    # A raw swap type whose meaning is Kconfig's (include/linux/swap.h, v6.12): 24 is migration-read
    # with DEVICE_PRIVATE=y (SWP_DEVICE_NUM 4), an ordinary swap file without -- for page 2 of f4.
    b.set_swap(ptes + 47 * P, "pte", SwpEntry(24, f4.pfn + 2))
    sc.add("swap type 24 for page 2 of the order-4 folio (migration-read iff DEVICE_PRIVATE=y), PTE",
           ptes + 47 * P + 0x10, anon)

    pmd_leaf = take(M, M)
    fm = b.alloc_folio((M // P).bit_length() - 1)
    b.map_folio(pmd_leaf, fm, rw, linux="pmd")
    sc.add(f"PMD leaf ({M >> 20}M folio), page 5", pmd_leaf + 5 * P + 0x120, anon)
    hz = take(M, M)
    b.map_pfn(hz, "pmd", mm.alloc_huge_zero_folio(), Prot(write=False))
    sc.add("huge zero folio (PMD)", hz + 3 * P + 0x10, anon)
    if ops.has_thp_migration:
        migr_target = b.alloc_folio((M // P).bit_length() - 1, tag=False)
        for kind in ("read", "read-exclusive", "write"):
            va = take(M, M)
            b.set_migration(va, "pmd", migr_target, kind)
            sc.add(f"migration entry ({kind}), PMD", va + 7 * P, anon)
    else:
        sc.omitted.append("migration entries, PMD: no CONFIG_ARCH_ENABLE_THP_MIGRATION on this architecture")
    if U:
        pud_leaf = take(U, U)
        fu = b.alloc_folio((U // P).bit_length() - 1, tag=False)
        b.map_folio(pud_leaf, fu, rw, linux="pud")
        sc.add(f"PUD leaf ({U >> 30}G folio), page 3 of PMD 2", pud_leaf + 2 * M + 3 * P + 0x48, anon)
    else:
        sc.omitted.append("PUD leaf: this configuration has no PUD-level leaves")

    # -- bad entries Linux clears (pgd/p4d: pgd_none_or_clear_bad, p4d_none_or_clear_bad) -------
    for i, lv in enumerate(ops.config.levels):
        if lv.linux not in ("pgd", "p4d"):
            continue
        va = _free_entry(b, anon, i)
        fb = b.alloc_folio(0)
        b.map_folio(va, fb, rw)
        pa = b.entry_pa(va, lv.linux, create=False)
        ram.write_u64(pa, ops.mk_bad(lv.linux, ram.read_u64(pa)))  # type: ignore[attr-defined]
        sc.add(f"bad {lv.linux} entry ({lv.name}), Linux clears it", va + 0x28, anon)

    # -- none at every level ----------------------------------------------------------------------
    for i, lv in enumerate(ops.config.levels):
        if i == len(ops.config.levels) - 1:
            break  # the PTE "none" case is above
        va = _free_entry(b, anon, i)
        sc.add(f"none {lv.linux} entry ({lv.name})", va + P + 0x30, anon)

    # -- VMAs after the anonymous one -------------------------------------------------------------
    nxt = anon.vm_end
    pfnmap = mm.add_vma(VMA(nxt, nxt + M, PFNMAP_FLAGS, name="pfnmap"))
    dev = b.alloc_folio(0)
    pfnmap.vm_pgoff = dev.pfn  # remap_pfn_range() sets vm_pgoff to the first pfn
    b.map_pfn(pfnmap.vm_start, "pte", dev.pfn, Prot(special=True))
    sc.add("special PTE in a VM_PFNMAP VMA", pfnmap.vm_start + 0x50, pfnmap)
    mixed = mm.add_vma(VMA(nxt + M, nxt + 2 * M, MIXEDMAP_FLAGS, name="mixedmap"))
    dev2 = b.alloc_folio(0)
    b.map_pfn(mixed.vm_start, "pte", dev2.pfn, Prot(special=True))
    sc.add("special PTE in a VM_MIXEDMAP VMA", mixed.vm_start + 0x58, mixed)
    normal = b.alloc_folio(0)
    b.map_folio(mixed.vm_start + P, normal, rw)
    sc.add("normal page (vm_insert_page) in a VM_MIXEDMAP VMA", mixed.vm_start + P + 0x60, mixed)

    dax_start = _align(nxt + 2 * M, big)
    if ops.has_pte_devmap:
        dax = mm.add_vma(VMA(dax_start, dax_start + big, DAX_FLAGS, name="fsdax"))
        dev_pa = alloc.alloc(big)
        # A devmap PUD needs CONFIG_HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD (x86-64; not arm64).
        devmap_level = "pud" if U and getattr(ops, "HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD", True) else "pmd"
        devmap_va = dax.vm_start + (M if devmap_level == "pmd" and big > M else 0)
        devmap_pa = dev_pa + (devmap_va - dax.vm_start)
        b.map_pfn(devmap_va, devmap_level, devmap_pa >> ops.PAGE_SHIFT, Prot(devmap=True))
        case_off = M if devmap_level == "pud" else 0
        sc.add(f"devmap {devmap_level.upper()} (fsdax)", devmap_va + case_off + 2 * P + 0x68, dax)
    else:
        sc.omitted.append("devmap (fsdax) leaf: no CONFIG_ARCH_HAS_PTE_DEVMAP on this architecture")

    # -- a mapping outside every VMA --------------------------------------------------------------
    outside = dax_start + big + M
    fo = b.alloc_folio(0)
    b.map_folio(outside, fo, rw)
    sc.add("mapped page outside the VMA (WARN, not found)", outside + 0x70, anon)
    return sc


def _free_entry(b: PageTableBuilder, vma: VMA, i: int) -> int:
    """The start VA of a none entry at hardware level ``i`` whose whole span lies in ``vma`` and
    whose upper tables exist; searched depth-first through the existing tables, last entry first."""
    ops = b.ops
    levels = ops.config.levels

    def search(depth: int, table: int, base: int) -> int | None:
        lv = levels[depth]
        span = 1 << lv.shift
        for idx in reversed(range(lv.entries)):
            va = base + idx * span
            if va + span <= vma.vm_start or va >= vma.vm_end:
                continue
            val = b.mm.ram.read_u64(table + idx * lv.entry_size)
            none = ops.entry_none(lv.linux, val)
            if depth == i:
                if none and vma.vm_start <= va and va + span <= vma.vm_end:
                    return va
                continue
            if none or (lv.linux in ("pud", "pmd") and b._is_leaf(lv.linux, val)):
                continue
            if not ops.folded(lv.linux) and lv.linux in ("pgd", "p4d") and ops.entry_bad(lv.linux, val):
                continue  # below a bad entry the walk stops at the bad entry
            found = search(depth + 1, ops.table_pa(lv.linux, val), va)
            if found is not None:
                return found
        return None

    va = search(0, b.mm.pgd, vma.vm_start & ~((1 << ops.config.va_bits) - 1))  # the VMA's half
    if va is None:
        raise MemoryLayoutError(f"no free {levels[i].name} entry in VMA {vma.name}")  # pragma: no cover
    return va
