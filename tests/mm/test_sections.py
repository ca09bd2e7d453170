"""SPARSEMEM in the model: pfn_valid() per memory section, and the oops the kernel takes reading
the struct page of a pfn that has none (issue 13: the two model-vs-kernel difference classes
bench/kernel_walk_diff.py found).  The expectations are the kernel's constants, typed here from
the v6.12 headers, and the kernel's code paths -- not values the model computes."""

from __future__ import annotations

import pytest

import archs
from archs.linux import Prot
from emu.mm.mm_types import VM_MIXEDMAP, VMA
from emu.mm.pagewalk import FW_MIGRATION, folio_walk_start_reference
from emu.mm.pagewalk_h import FolioWalk
from emu.mm.scenarios import ANON_FLAGS, new_address_space
from emu.verify import walk_cases

# arch/x86/include/asm/sparsemem.h (v6.12), X86_64: SECTION_SIZE_BITS 27 -> 128 MiB sections,
# PAGES_PER_SECTION = 1 << (27 - 12) = 0x8000
X86_SECTION_PFNS = 0x8000
# arch/arm64/include/asm/sparsemem.h: 29 with 64K pages (0x2000 pfns), else 27;
# arch/s390/include/asm/sparsemem.h: 28
SECTION_BITS = {"x86_64:4level": 27, "x86_64:5level": 27, "arm64:4k:48": 27, "arm64:16k:47": 27,
                "arm64:64k:48": 29, "s390x:region3": 28}
RAM = 16 << 20  # 0x1000 pfns: RAM ends inside the first section


def _space(vm_flags: int = ANON_FLAGS):  # type: ignore[no-untyped-def]
    ops = archs.get_ops("x86_64:4level")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=RAM)
    vma = mm.add_vma(VMA(0x4000_0000, 0x1_0000_0000, vm_flags, name="test"))
    return ops, mm, b, vma


def _walk(vma: VMA, addr: int, flags: int = 0) -> tuple[FolioWalk, object]:
    mm = vma.vm_mm
    assert mm is not None
    fw = FolioWalk()
    with mm.mmap_read():
        folio = folio_walk_start_reference(fw, vma, addr, flags)
        if folio is not None:
            fw.ptl.unlock()
    return fw, folio


@pytest.mark.parametrize("key", sorted(SECTION_BITS))
def test_section_size_bits_are_the_headers(key: str) -> None:
    assert archs.get_ops(key).section_size_bits() == SECTION_BITS[key]


def test_pfn_valid_is_per_section() -> None:
    ops, mm, b, vma = _space()
    assert mm.memmap.highest_memmap_pfn == 0xFFF
    assert mm.memmap.pfn_valid(0x1000) and mm.memmap.pfn_valid(X86_SECTION_PFNS - 1)
    assert not mm.memmap.pfn_valid(X86_SECTION_PFNS) and not mm.memmap.pfn_valid(-1)


def test_mixedmap_pmd_beyond_ram_inside_the_section_is_a_normal_page() -> None:
    """vm_normal_page_pmd() (mm/memory.c v6.12) in a VM_MIXEDMAP VMA returns the page iff
    pfn_valid(); the section of RAM's last pfn is valid up to its end."""
    ops, mm, b, vma = _space(ANON_FLAGS | VM_MIXEDMAP)
    inside = X86_SECTION_PFNS - 0x200  # the last 2 MiB of the first 128 MiB section
    b.map_pfn(0x4020_0000, "pmd", inside, Prot(), in_ram=False)
    b.map_pfn(0x4040_0000, "pmd", X86_SECTION_PFNS, Prot(), in_ram=False)  # the next section: absent
    fw, folio = _walk(vma, 0x4020_3000)
    assert fw.reason == "found" and (folio.pfn, folio.order, fw.page.pfn) == (inside, 0, inside + 3)  # type: ignore[attr-defined]
    fw, folio = _walk(vma, 0x4040_3000)
    assert folio is None and fw.reason == "not-normal@pmd:mixedmap-invalid-pfn"


def test_pud_leaf_without_struct_page_is_a_kernel_oops() -> None:
    """folio_walk_start()'s PUD branch: page = pud_page(pud); ... return page_folio(page) reads
    the struct page (include/linux/page-flags.h): none exists beyond the present sections."""
    ops, mm, b, vma = _space()
    b.map_pfn(0x8000_0000, "pud", 1 << 18, Prot(), in_ram=False)  # 1 GiB: beyond every section
    fw, folio = _walk(vma, 0x8000_1000)
    assert folio is None and fw.reason == "oops@pud:no-struct-page"
    assert fw.warnings[-1] == "kernel oops: struct page of pfn 0x40000 does not exist"
    assert not mm.page_table_lock.is_locked()  # what the kernel view releases too


@pytest.mark.parametrize("pfn, oops", [(0x1234, False), (X86_SECTION_PFNS - 1, False), (X86_SECTION_PFNS, True)])
def test_migration_entry_struct_page(pfn: int, oops: bool) -> None:
    """pfn_swap_entry_to_page() (include/linux/swapops.h v6.12) reads PageLocked() of the entry's
    page: beyond RAM but inside the section it exists (initialised reserved), beyond it not."""
    ops, mm, b, vma = _space()
    entry = ops.make_pfn_swp_entry(ops.swap.migration_types["read"], pfn)
    b.set_swap(0x4000_0000, "pte", entry)
    fw, folio = _walk(vma, 0x4000_0000, FW_MIGRATION)
    if oops:
        assert folio is None and fw.reason == "oops@pte:no-struct-page"
        assert fw.warnings[-1] == f"kernel oops: struct page of pfn {pfn:#x} does not exist"
    else:
        assert fw.reason == "found" and fw.kind == "migration-entry" and (folio.pfn, folio.order) == (pfn, 0)  # type: ignore[attr-defined]
    fw, folio = _walk(vma, 0x4000_0000, 0)
    assert folio is None and fw.reason == "migration-entry@pte"  # without FW_MIGRATION: no page read


def test_batch_and_fast_walkers_hand_the_oops_to_the_reference() -> None:
    """walk_many() and the fast path decide present PUD leaves themselves: one whose pfn has no
    struct page must come out as the reference's oops, not as a folio."""
    from emu.mm.pagewalk import folio_walk_start
    from emu.mm.scenarios import Case, Scenario

    ops, mm, b, vma = _space()
    b.map_pfn(0x8000_0000, "pud", 1 << 18, Prot(), in_ram=False)
    f = b.alloc_folio(0)
    b.map_folio(0x4000_0000, f, Prot())
    sc = Scenario(ops, mm.ram, mm.alloc, mm.memmap, mm, b)
    sc.cases = [Case("pte", 0x4000_0000, vma), Case("pud", 0x8000_1000, vma)]
    got = walk_cases(sc, sc.cases, (0,))
    assert got[(0, 0)].reason == "found" and got[(1, 0)].reason == "oops@pud:no-struct-page"
    fw = FolioWalk()
    with mm.mmap_read():
        for _ in range(3):  # the fast path memoises the PUD value: ask it more than once
            assert folio_walk_start(fw, vma, 0x8000_1000, 0) is None and fw.reason == "oops@pud:no-struct-page"
