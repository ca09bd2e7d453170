"""The kernel's own folio_walk_start()/folio_walk_end() (mm/pagewalk.c, mm/memory.c of the 6.12
tree), compiled and run as guest code of each architecture, against foliowalk's Python walker on
the same bytes of guest RAM (issue 13)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import archs
from archs.linux import Prot
from emu.kernel.build import not_yet
from emu.kernel.walk import KernelWalk, KernelWalkResult, WalkBuild
from emu.mm.mm_types import VM_MIXEDMAP, VMA
from emu.mm.pagewalk import FolioWalk, folio_walk_end, folio_walk_start
from emu.mm.scenarios import ANON_FLAGS, build_default, new_address_space

FW_MIGRATION, FW_ZEROPAGE = 1, 2
# stubs a normal walk reaches: __pte_offset_map()'s rcu_read_lock()/rcu_read_unlock(), out of
# line with PREEMPT_RCU (x86-64 and arm64 distro configs; s390's has PREEMPT_NONE: inline)
BOOKKEEPING = {"rcu_read_lock", "rcu_read_unlock"}
PREEMPT_RCU = {"x86_64": True, "arm64": True, "s390x": False}

# the hand-built 4K-page tests run where PMD leaves (2 MiB; s390 1 MiB) and PUD leaves (1 GiB;
# s390 2 GiB region-third entries) exist
HAND_BUILT = ["x86_64:4level", "arm64:4k:48", "s390x:region3"]
#: every configuration with a compiled-kernel harness: not arm64's 52-bit ones, which
#: emu.kernel.build.not_yet() names (tests/kernel/test_harness.py::test_52bit_configs_have_no_harness_yet)
DEFAULT_SCENARIO = [k for k in archs.all_config_keys() if not not_yet(archs.get_config(k))]



def model(vma: VMA, addr: int, flags: int) -> tuple[int | None, ...]:
    fw = FolioWalk()
    folio = folio_walk_start(fw, vma, addr, flags)
    if folio is None:
        return (None, None, None, None, None)
    folio_walk_end(fw, vma)
    return (folio.pfn, fw.page.pfn if fw.page else None, fw.level, fw.entryp, fw.entry)


def kernel(r: KernelWalkResult) -> tuple[int | None, ...]:
    return (r.folio_pfn, r.page_pfn, r.level, r.entryp, r.entry)


def _pmd_order(ops) -> int:  # type: ignore[no-untyped-def]
    return (ops.PMD_SIZE // ops.PAGE_SIZE).bit_length() - 1


@pytest.fixture(params=HAND_BUILT)
def small(walk_build: Callable[[str], WalkBuild], request: pytest.FixtureRequest
          ) -> Iterator[tuple[KernelWalk, VMA, dict[str, int], object]]:
    """A hand-built 16 MiB address space: 4K pages, a none entry, a PMD leaf, the zero page."""
    ops = archs.get_ops(request.param)
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20,
                                                  reserved_low=getattr(ops, "RESERVED_LOW", 0))
    vma = mm.add_vma(VMA(0x4000_0000, 0x4080_0000, ANON_FLAGS, name="anon"))
    f0 = b.alloc_folio(0)
    b.map_folio(0x4000_0000, f0, Prot())
    f2 = b.alloc_folio(2)
    b.map_folio(0x4000_4000, f2, Prot())
    b.map_pfn(0x4000_8000, "pte", mm.my_zero_pfn(0x4000_8000), Prot(write=False, special=True))
    fm = b.alloc_folio(_pmd_order(ops))
    b.map_folio(0x4020_0000, fm, Prot(), linux="pmd")
    addrs = {"pte": 0x4000_0010, "pte-order2-page3": 0x4000_7123, "none-pte": 0x4000_9000,
             "zero": 0x4000_8008, "pmd": 0x4020_5120, "none-pmd": 0x4060_0000}
    kw = KernelWalk(walk_build(request.param), mm)
    assert kw.ARCH == request.param.split(":")[0]
    mm.mmap_lock.down_read()
    yield kw, vma, addrs, mm
    kw.close()


def test_basic_cases_agree_with_the_model(small) -> None:  # type: ignore[no-untyped-def]
    kw, vma, addrs, mm = small
    calls = [(a, f) for a in addrs.values() for f in (0, FW_ZEROPAGE)]
    got = kw.walk(vma, calls)
    for (addr, flags), r in zip(calls, got, strict=True):
        assert kernel(r) == model(vma, addr, flags), (hex(addr), flags)
        assert r.preempt == 0 and r.rcu_nesting == 0
        assert set(r.stubs) <= BOOKKEEPING and not r.warnings
        if r.folio_pfn is not None:
            assert r.ptl_held and r.ptl_released


def test_what_the_kernel_found(small) -> None:  # type: ignore[no-untyped-def]
    kw, vma, addrs, mm = small
    pte, page3, none_pte, zero, pmd, zero_flagged = kw.walk(vma, [
        (addrs["pte"], 0), (addrs["pte-order2-page3"], 0), (addrs["none-pte"], 0), (addrs["zero"], 0),
        (addrs["pmd"], 0), (addrs["zero"], FW_ZEROPAGE)])
    # a 4K PTE-mapped normal page: FW_LEVEL_PTE, a split PTE lock (in the table's struct page)
    assert pte.level == 0 and pte.folio_pfn == pte.page_pfn and not pte.ptl_is_mm_lock
    assert pte.stubs == (("rcu_read_lock", "rcu_read_unlock") if PREEMPT_RCU[kw.ARCH] else ())
    assert page3.page_pfn == page3.folio_pfn + 3
    assert none_pte.folio_pfn is None and not none_pte.ptl_held
    assert zero.folio_pfn is None  # vm_normal_page(): special; not asked for
    # the zero page mapped there (s390: one of the coloured zero pages, ZERO_PAGE(vaddr)); not exposed
    assert zero_flagged.folio_pfn == mm.my_zero_pfn(addrs["zero"]) and zero_flagged.page_pfn is None
    # a 2M PMD leaf: FW_LEVEL_PMD, page 5 of the folio, the split PMD lock
    assert pmd.level == 1 and pmd.page_pfn == pmd.folio_pfn + 5 and not pmd.ptl_is_mm_lock
    assert pmd.stubs == ()


def test_warn_is_reported_per_call(small) -> None:  # type: ignore[no-untyped-def]
    kw, vma, addrs, mm = small
    inside, outside = kw.walk(vma, [(addrs["pte"], 0), (vma.vm_end + 0x1000, 0)])
    assert inside.warnings == ()
    assert outside.folio_pfn is None and outside.warnings == ("mm/pagewalk.c:789",)


@pytest.mark.parametrize("config", HAND_BUILT)
def test_pfn_valid_reads_real_sections(walk_build: Callable[[str], WalkBuild], config: str) -> None:
    """vm_normal_page_pmd() in a VM_MIXEDMAP VMA asks pfn_valid(): the SPARSEMEM sections are
    built over RAM, so a PMD leaf on RAM is a normal page, one beyond RAM is not."""
    ops = archs.get_ops(config)
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20,
                                                  reserved_low=getattr(ops, "RESERVED_LOW", 0))
    mixed = mm.add_vma(VMA(0x4000_0000, 0x4080_0000, ANON_FLAGS | VM_MIXEDMAP, name="mixed"))
    fm = b.alloc_folio(_pmd_order(ops))
    b.map_folio(0x4020_0000, fm, Prot(), linux="pmd")
    b.map_pfn(0x4040_0000, "pmd", 1 << 20, Prot(), in_ram=False)  # 4 GiB: no struct page
    kw = KernelWalk(walk_build(config), mm)
    mm.mmap_lock.down_read()
    calls = [(0x4020_1000, 0), (0x4040_1000, 0)]
    on_ram, beyond = kw.walk(mixed, calls)
    assert on_ram.folio_pfn == fm.pfn and on_ram.page_pfn == fm.pfn + 1
    assert beyond.folio_pfn is None
    for (addr, flags), r in zip(calls, (on_ram, beyond), strict=True):
        assert kernel(r) == model(mixed, addr, flags)
    kw.close()


# page_folio() reads compound_head (offset 8) of the struct page of pfn 1 << 28 in the vmemmap:
# x86 vmemmap_base 0xffffea0000000000; arm64 4K/48 (asm/memory.h): VMEMMAP_START = -1 GiB -
# (2**47 >> 12) * 64 = 0xfffffdffc0000000, + (1 << 28) * 64 + 8; s390 (the guest's vmemmap at
# 2 TiB) names the page of the failing address (TEID): 0x20000000000 + (1 << 28) * 64
OOPS_ON_VMEMMAP = {"x86_64": "page fault at 0xffffea0400000008", "arm64": "data abort at 0xfffffe03c0000008",
                   "s390x": "program interruption (translation of 0x20400000000)"}


@pytest.mark.parametrize("config", HAND_BUILT)
def test_an_oops_ends_one_call_not_the_batch(walk_build: Callable[[str], WalkBuild], config: str) -> None:
    """A PUD leaf whose pfn has no struct page: folio_walk_start() takes the PUD lock, then
    page_folio() reads the missing struct page -- the kernel oopses (here: a page fault in
    vmemmap).  The call is reported as such, the lock it left held is released, and the batch
    goes on.  (The model predicts it: tests/mm/test_sections.py, and the test below.)"""
    ops = archs.get_ops(config)
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20,
                                                  reserved_low=getattr(ops, "RESERVED_LOW", 0))
    vma = mm.add_vma(VMA(0x4000_0000, 0xC000_0000, ANON_FLAGS, name="anon"))
    f0 = b.alloc_folio(0)
    b.map_folio(0x4000_0000, f0, Prot())
    b.map_pfn(0x8000_0000, "pud", 1 << 28, Prot(), in_ram=False)  # 1 TiB: no memmap there
    kw = KernelWalk(walk_build(config), mm)
    before, oops, after, again = kw.walk(vma, [(0x4000_0000, 0), (0x8000_1000, 0), (0x4000_0000, 0),
                                               (0x8000_1000, 0)])
    assert oops.oops is not None and OOPS_ON_VMEMMAP[kw.ARCH] in oops.oops and oops.folio_pfn is None
    assert again.oops == oops.oops
    # the PUD lock (mm->page_table_lock) the oopsed call left held was released
    assert kw._rv(kw._mm + kw.layout["mm_page_table_lock"], 4) == bytes(4)
    for r in (before, after):
        assert r.folio_pfn == f0.pfn and r.ptl_held and r.ptl_released and r.oops is None
        assert r.preempt == 0 and r.rcu_nesting == 0 and "spin_slowpath" not in r.stubs
    kw.close()


@pytest.mark.parametrize("config", HAND_BUILT)
def test_a_bug_is_an_oops(walk_build: Callable[[str], WalkBuild], config: str) -> None:
    """A migration entry of a folio that is not locked: pfn_swap_entry_to_page() BUG()s
    (include/linux/swapops.h swap_entry_migration_sync()).  The architecture's BUG trap (x86
    ud2, arm64 brk #0x800, s390 mc 0,0), found through the kernel's __bug_table, ends that call
    as an oops; with the folio locked the same walk finds it, as the model does."""
    ops = archs.get_ops(config)
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20,
                                                  reserved_low=getattr(ops, "RESERVED_LOW", 0))
    vma = mm.add_vma(VMA(0x4000_0000, 0x4080_0000, ANON_FLAGS, name="anon"))
    folio = b.alloc_folio(0)
    b.set_migration(0x4000_0000, "pte", folio, "read")
    mm.mmap_lock.down_read()
    unlocked = KernelWalk(walk_build(config), mm, locked=[])
    bug, plain, again = unlocked.walk(vma, [(0x4000_0010, FW_MIGRATION), (0x4000_0010, 0),
                                            (0x4000_0010, FW_MIGRATION)])
    assert bug.oops is not None and bug.oops.startswith("BUG() at include/linux/swapops.h:"), bug.oops
    assert bug.folio_pfn is None and again.oops == bug.oops
    # without FW_MIGRATION the walk takes the same PTE lock and finds nothing: the oopsed call's
    # lock was released (a held one would go through the slow-path stub)
    assert plain.oops is None and plain.folio_pfn is None and "spin_slowpath" not in plain.stubs
    unlocked.close()
    locked = KernelWalk(walk_build(config), mm, locked=[folio.pfn])
    (found,) = locked.walk(vma, [(0x4000_0010, FW_MIGRATION)])
    assert found.oops is None and found.folio_pfn == folio.pfn
    assert kernel(found) == model(vma, 0x4000_0010, FW_MIGRATION)
    locked.close()


def test_arm64_contpte_gathers_access_and_dirty(walk_build: Callable[[str], WalkBuild]) -> None:
    """arm64 ptep_get() of a PTE with the contiguous bit is contpte_ptep_get()
    (arch/arm64/mm/contpte.c, compiled unchanged from the tree): fw.pte carries the access and
    dirty bits of the whole 16-entry block (CONT_PTES for 4K pages), set here on other entries."""
    from archs.arm64 import PTE_AF, PTE_CONT, PTE_DIRTY

    ops = archs.get_ops("arm64:4k:48")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20)
    vma = mm.add_vma(VMA(0x4000_0000, 0x4080_0000, ANON_FLAGS, name="anon"))
    folio = b.alloc_folio(4)
    ptes = b.map_folio(0x4000_0000, folio, Prot(write=False, young=False, dirty=False))
    for i, pa in enumerate(ptes):
        ram.write_u64(pa, ram.read_u64(pa) | PTE_CONT | (PTE_AF if i == 3 else 0) | (PTE_DIRTY if i == 5 else 0))
    stored = ram.read_u64(ptes[0])
    assert not stored & (PTE_AF | PTE_DIRTY)
    kw = KernelWalk(walk_build("arm64:4k:48"), mm)
    mm.mmap_lock.down_read()
    (r,) = kw.walk(vma, [(0x4000_0000, 0)])
    # pte_mkyoung() sets PTE_AF; pte_mkdirty() sets PTE_DIRTY (PTE_RDONLY stays: not writable)
    assert r.folio_pfn == folio.pfn and r.entryp == ptes[0] and r.entry == stored | PTE_AF | PTE_DIRTY
    assert ram.read_u64(ptes[0]) == stored  # a read: the table is unchanged
    # the model's ptep_get() (archs/arm64.py, all three walkers) gathers the same bits
    assert kernel(r) == model(vma, 0x4000_0000, 0)
    assert ram.read_u64(ptes[0]) == stored
    kw.close()


def test_arm64_pud_page_keeps_the_bits_below_pud_size(walk_build: Callable[[str], WalkBuild]) -> None:
    """arm64 ``pud_page(pud) = phys_to_page(__pud_to_phys(pud))`` (v6.12 arch/arm64/include/asm/
    pgtable.h:859, :611, :87: ``pud_val & PTE_ADDR_LOW``), not ``pfn_to_page(pud_pfn(pud))``
    (:613 masks with PUD_MASK): a 1 GiB block at physical 0 whose RES0 bits 29:12 hold a folio's
    address is, to folio_walk_start() (mm/pagewalk.c:829), that folio."""
    ops = archs.get_ops("arm64:4k:48")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20)
    vma = mm.add_vma(VMA(0x4000_0000, 0xC000_0000, ANON_FLAGS, name="anon"))
    folio = b.alloc_folio(2)
    pudp = b.map_pfn(0x8000_0000, "pud", 0, Prot(), in_ram=False)
    ram.write_u64(pudp, ram.read_u64(pudp) | folio.pfn << 12)
    assert ops.pud_pfn(ram.read_u64(pudp)) == 0  # the masked pfn: PUD_MASK drops bits 29:12
    kw = KernelWalk(walk_build("arm64:4k:48"), mm)
    mm.mmap_lock.down_read()
    (r,) = kw.walk(vma, [(0x8000_1000, 0)])
    # page = pud_page(pud) = folio.pfn; fw->page = nth_page(page, (addr & (PUD_SIZE - 1)) >> 12)
    assert r.oops is None and r.level == 2 and r.entryp == pudp
    assert r.folio_pfn == folio.pfn and r.page_pfn == folio.pfn + 1
    assert kernel(r) == model(vma, 0x8000_1000, 0)
    kw.close()


def test_s390_p4d_clear_leaves_an_entry_of_another_region_type(walk_build: Callable[[str], WalkBuild]) -> None:
    """A region-second-table entry with the region-first type (TT 11): ``p4d_bad()`` is true for
    a type above R2, so p4d_none_or_clear_bad() calls p4d_clear_bad(), whose ``p4d_clear()``
    (v6.12 arch/s390/include/asm/pgtable.h:1007-1011) stores _REGION2_ENTRY_EMPTY only into an
    entry of type R2: the entry stays as it is, in the kernel and in the model."""
    ops = archs.get_ops("s390x:region1")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20, reserved_low=ops.RESERVED_LOW)
    vma = mm.add_vma(VMA(0x4000_0000, 0x4080_0000, ANON_FLAGS, name="anon"))
    b.map_folio(0x4000_0000, b.alloc_folio(0), Prot())
    p4dp = b.entry_pa(0x4000_0000, "p4d", create=False)
    bad = ram.read_u64(p4dp) | 0xC  # TT 10 -> 11
    ram.write_u64(p4dp, bad)
    assert ops.p4d_bad(bad) and not ops.p4d_none(bad)
    kw = KernelWalk(walk_build("s390x:region1"), mm)
    mm.mmap_lock.down_read()
    (r,) = kw.walk(vma, [(0x4000_0000, 0)])
    assert r.oops is None and r.folio_pfn is None and "printk" in r.stubs  # p4d_ERROR()
    assert ram.read_u64(p4dp) == bad  # not cleared
    fw = FolioWalk()
    assert folio_walk_start(fw, vma, 0x4000_0000, 0) is None
    assert fw.reason == "bad@p4d" and fw.cleared == [] and ram.read_u64(p4dp) == bad
    assert any(w.startswith("p4d_ERROR") for w in fw.warnings)
    kw.close()


def test_s390_table_address_wraps_around_2_to_the_64(walk_build: Callable[[str], WalkBuild]) -> None:
    """A region-third entry whose segment-table origin is the last page of the 64-bit space:
    pmd_offset() = ``(pmd_t *) pud_deref(pud) + pmd_index(address)`` (v6.12
    arch/s390/include/asm/pgtable.h:1513-1518) wraps: 0xffff_ffff_ffff_f000 + 0x7ff * 8 is
    0x2ff8 modulo 2**64, where a segment entry to the folio's page table is put; the kernel and
    the model both find the folio through it."""
    ops = archs.get_ops("s390x:region2")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20, reserved_low=ops.RESERVED_LOW)
    addr = 0x7FF << 20  # segment index 0x7ff, region-third and region-second index 0
    vma = mm.add_vma(VMA(addr, addr + (1 << 20), ANON_FLAGS, name="anon"))
    assert alloc.alloc(0x1000) == 0x2000  # the page the wrapped pointer lands in: ours
    folio = b.alloc_folio(0)
    ptes = b.map_folio(addr, folio, Prot())
    pudp = b.entry_pa(addr, "pud", create=False)
    pmdp = b.entry_pa(addr, "pmd", create=False)
    assert ram.read_u64(0x2FF8) == 0
    ram.write_u64(0x2FF8, ram.read_u64(pmdp))
    ram.write_u64(pmdp, 0x20)  # _SEGMENT_ENTRY_EMPTY: only the wrapped pointer finds the folio
    ram.write_u64(pudp, 0xFFFF_FFFF_FFFF_F000 | ram.read_u64(pudp) & 0xFFF)
    kw = KernelWalk(walk_build("s390x:region2"), mm)
    mm.mmap_lock.down_read()
    (r,) = kw.walk(vma, [(addr, 0)])
    assert r.oops is None and r.folio_pfn == folio.pfn and r.entryp == ptes[0]
    assert kernel(r) == model(vma, addr, 0)
    fw = FolioWalk()
    assert folio_walk_start(fw, vma, addr, 0) is not None
    assert [(s.level, s.pa) for s in fw.trace if s.level == "pmd"][0] == ("pmd", 0x2FF8)
    folio_walk_end(fw, vma)
    kw.close()


def test_arm64_va_ors_table_address_bits_into_page_offset(walk_build: Callable[[str], WalkBuild]) -> None:
    """arm64 ``__va(pa) = (pa - PHYS_OFFSET) | PAGE_OFFSET`` (v6.12 arch/arm64/include/asm/
    memory.h:353, :393): a table address with bit 49 set (PTE_ADDR_LOW, pgtable.h:87, reaches bit
    49 with 4K pages) is read at the address without it, inside the linear map.  A PUD entry so
    made leads the kernel and the model to the PMD table and the folio; a PMD entry so made leads
    to the PTE table, but pte_lockptr() takes the struct page of pmd_page() -- the address WITH
    bit 49 (include/linux/mm.h:3000-3003), not in the vmemmap -- and spin_lock() oopses; the
    model stops there too."""
    ops = archs.get_ops("arm64:4k:48")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20)
    vma = mm.add_vma(VMA(0x4000_0000, 0xC000_0000, ANON_FLAGS, name="anon"))
    f1, f2 = b.alloc_folio(0), b.alloc_folio(0)
    b.map_folio(0x4000_0000, f1, Prot())
    b.map_folio(0x8000_0000, f2, Prot())
    pudp = b.entry_pa(0x4000_0000, "pud", create=False)
    pmdp = b.entry_pa(0x8000_0000, "pmd", create=False)
    pud, pmd = ram.read_u64(pudp) | 1 << 49, ram.read_u64(pmdp) | 1 << 49
    ram.write_u64(pudp, pud)
    ram.write_u64(pmdp, pmd)
    assert ops.table_pa("pud", pud) == (pud & (((1 << 38) - 1) << 12)) and ops.table_pa("pud", pud) >> 48
    assert ops.pgtable_pa("pud", pud) == ops.table_pa("pud", pud) - (1 << 49)
    kw = KernelWalk(walk_build("arm64:4k:48"), mm)
    mm.mmap_lock.down_read()
    via_pud, via_pmd = kw.walk(vma, [(0x4000_0000, 0), (0x8000_0000, 0)])
    assert via_pud.oops is None and via_pud.folio_pfn == f1.pfn
    assert kernel(via_pud) == model(vma, 0x4000_0000, 0)
    # struct page of pfn (pmd & PTE_ADDR_LOW) >> 12 in the vmemmap: VMEMMAP_START (0xfffffdffc0000000)
    # + pfn * 64 wraps around 2**64
    assert via_pmd.oops is not None and "_raw_spin_lock" in via_pmd.oops and via_pmd.folio_pfn is None
    fw = FolioWalk()
    assert folio_walk_start(fw, vma, 0x8000_0000, 0) is None
    assert fw.reason == "unreadable@pte" and "pte_lockptr()" in fw.warnings[-1]
    kw.close()


@pytest.mark.parametrize("config", DEFAULT_SCENARIO)
def test_default_scenario_agrees(walk_build: Callable[[str], WalkBuild], config: str) -> None:
    sc = build_default(archs.get_ops(config), with_oracle=False)
    kw = KernelWalk(walk_build(config), sc.mm)
    sc.mm.mmap_lock.down_read()
    for case in sc.cases:
        for flags in (0, FW_MIGRATION | FW_ZEROPAGE):
            # one call each, kernel first: a bad entry is cleared by whichever walks it first
            (r,) = kw.walk(case.vma, [(case.addr, flags)])
            assert kernel(r) == model(case.vma, case.addr, flags), (case.name, flags)
            assert r.preempt == 0 and r.rcu_nesting == 0, case.name
            if r.folio_pfn is not None:
                assert r.ptl_held and r.ptl_released, case.name
    kw.close()


NEEDS = {"x86_64:4level": {"page_offset_base", "vmemmap_base", "pcpu_hot", "_printk"},
         # s390: the decompressor's layout (vm_layout: __va/__pa), vmemmap, the zero page colours
         "s390x:region3": {"vm_layout", "vmemmap", "zero_page_mask", "arch_spin_lock_wait"},
         # arm64: PHYS_OFFSET; the 2-level configurations' folded set_pmd() also needs the
         # kernel's own table (swapper_pg_dir) and set_swapper_pgd()
         "arm64:4k:48": {"memstart_addr", "mem_section", "_printk"},
         "arm64:16k:36": {"memstart_addr", "swapper_pg_dir", "set_swapper_pgd"}}


@pytest.mark.parametrize("config", list(NEEDS))
def test_the_tree_needs_only_what_the_guest_provides(walk_build: Callable[[str], WalkBuild], config: str) -> None:
    """The undefined symbols of the tree's code alone (after --gc-sections) are what fw_walk.c
    defines (kernel data or a listed stub) -- a new one means a new tree needs more."""
    wb = walk_build(config)
    assert "folio_walk_start" not in wb.undefined_before_stubs
    assert NEEDS[config] <= set(wb.undefined_before_stubs)


def test_the_model_predicts_the_kernels_section_answers(walk_build: Callable[[str], WalkBuild]) -> None:
    """The two classes bench/kernel_walk_diff.py found, on hand-built entries, asked of the
    kernel: pfn_valid() per SPARSEMEM section (the kernel's own PAGES_PER_SECTION) and the oops
    on a struct page that does not exist.  The kernel's answer is the expectation; the model's
    must equal it field for field (emu.kernel.walkview.walk_differs, the judge's comparison)."""
    from emu.kernel.walkview import KernelAnswer, walk_differs
    from emu.mm.scenarios import Case, Scenario
    from emu.verify import walk_cases

    ops = archs.get_ops("x86_64:4level")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20)
    anon = mm.add_vma(VMA(0x4000_0000, 0x1_0000_0000, ANON_FLAGS, name="anon"))
    mixed = mm.add_vma(VMA(0x1_0000_0000, 0x1_4000_0000, ANON_FLAGS | VM_MIXEDMAP, name="mixed"))
    kw = KernelWalk(walk_build("x86_64:4level"), mm)
    per = kw.layout["PAGES_PER_SECTION"]  # the kernel's, from the compiled tree
    assert per == 1 << (ops.section_size_bits() - ops.PAGE_SHIFT)
    read = ops.swap.migration_types["read"]
    b.map_pfn(0x1_0020_0000, "pmd", per - 0x200, Prot(), in_ram=False)  # inside RAM's section
    b.map_pfn(0x1_0040_0000, "pmd", per, Prot(), in_ram=False)  # the next section: absent
    b.map_pfn(0x8000_0000, "pud", 1 << 18, Prot(), in_ram=False)  # no struct page
    b.set_swap(0x4000_0000, "pte", ops.make_pfn_swp_entry(read, per - 1))  # beyond RAM, in the section
    b.set_swap(0x4000_1000, "pte", ops.make_pfn_swp_entry(read, per))  # no struct page
    sc = Scenario(ops, ram, alloc, memmap, mm, b)
    sc.cases = [Case("pmd in section", 0x1_0020_3000, mixed), Case("pmd next section", 0x1_0040_3000, mixed),
                Case("pud", 0x8000_1000, anon), Case("mig in section", 0x4000_0000, anon),
                Case("mig no page", 0x4000_1000, anon)]
    flags = (0, FW_MIGRATION | FW_ZEROPAGE)
    model = walk_cases(sc, sc.cases, flags)
    mm.mmap_lock.down_read()
    got = {}
    for i, c in enumerate(sc.cases):
        for f in flags:
            (got[(i, f)],) = kw.walk(c.vma, [(c.addr, f)])
    kw.close()
    # what the kernel did (the expectation)
    assert got[(0, 0)].folio_pfn == per - 0x200 and got[(0, 0)].page_pfn == per - 0x200 + 3
    assert got[(1, 0)].folio_pfn is None and got[(1, 0)].oops is None
    assert got[(2, 0)].oops and "page fault at 0xffffea" in got[(2, 0)].oops
    assert got[(3, 3)].folio_pfn == per - 1 and got[(3, 3)].oops is None
    assert got[(4, 3)].oops and got[(4, 0)].oops is None and got[(4, 0)].folio_pfn is None
    # ... and the model says the same, row by row
    for key, r in got.items():
        assert walk_differs(model[key], KernelAnswer(r), ops.pxd_clear) is None, (sc.cases[key[0]].name, key[1])
    assert model[(2, 0)].reason == "oops@pud:no-struct-page" and model[(4, 3)].reason == "oops@pte:no-struct-page"


def test_a_bad_level0_entry_is_left_where_linux_folds_p4d(walk_build: Callable[[str], WalkBuild]) -> None:
    """arm64 with 4 levels includes pgtable-nop4d.h, so p4d_clear_bad() is `do { } while (0)`
    (include/linux/pgtable.h:1232-1236, v6.12) while p4d_bad() still tests the level-0 entry
    (arch/arm64/include/asm/pgtable.h:900): the compiled walk returns NULL and leaves the entry;
    the model must too.  x86-64 (X86_5LEVEL=y: p4d not folded at compile time) clears it."""
    for key, kept in (("arm64:4k:48", True), ("x86_64:4level", False)):
        ops = archs.get_ops(key)
        ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=16 << 20)
        vma = mm.add_vma(VMA(0x80_0000_0000, 0x100_0000_0000, ANON_FLAGS, name="anon"))
        f0 = b.alloc_folio(0)
        b.map_folio(0x80_0000_0000, f0, Prot())
        top = mm.pgd + 8 * (0x80_0000_0000 >> 39)
        good = ram.read_u64(top)
        bad = ops.mk_bad("p4d", good)
        assert ops.p4d_bad(bad)
        ram.write_u64(top, bad)
        mm.mmap_lock.down_read()
        kw = KernelWalk(walk_build(key), mm)
        (r,) = kw.walk(vma, [(0x80_0000_0000, 0)])
        kw.close()
        assert r.folio_pfn is None and r.oops is None
        assert (ram.read_u64(top) == bad) is kept  # the kernel's answer
        ram.write_u64(top, bad)
        fw = FolioWalk()
        assert folio_walk_start(fw, vma, 0x80_0000_0000, 0) is None and fw.reason == "bad@p4d"
        assert (ram.read_u64(top) == bad) is kept  # ... and the model's
        mm.mmap_lock.up_read()
