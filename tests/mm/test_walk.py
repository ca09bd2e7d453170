"""folio_walk_start()/folio_walk_end() on hand-built x86-64 tables: every case of the seed patch,
every flag combination, the reported level and page, and the page-table lock discipline.

Expectations come from what each test allocated and from raw entry arithmetic (Intel SDM
layouts), not from the walker's own helpers."""

from __future__ import annotations

import threading

import pytest

from archs import get_ops
from archs.linux import Prot, SwpEntry
from emu.mm.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_MIXEDMAP, VM_PFNMAP, VM_READ, VM_WRITE, VMA, Folio, Page
from emu.mm.pagewalk import (
    FLAG_COMBINATIONS,
    FW_LEVEL_PMD,
    FW_LEVEL_PTE,
    FW_LEVEL_PUD,
    FW_MIGRATION,
    FW_ZEROPAGE,
    FolioWalk,
    folio_walk,
    folio_walk_end,
    folio_walk_start,
)
from emu.mm.scenarios import new_address_space

K, M, G = 1 << 12, 1 << 21, 1 << 30
BASE = 0x7F00_0000_0000  # a 1G-aligned user address
RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE


class Space:
    def __init__(self, config: str = "x86_64:4level", kernel: str = "v6.12") -> None:
        self.ops = get_ops(config, kernel)
        self.ram, self.alloc, self.memmap, self.mm, self.b = new_address_space(self.ops, ram_size=3 * G)
        self.vma = self.mm.add_vma(VMA(BASE, BASE + (1 << 40), RW, name="anon"))

    def walk(self, addr: int, flags: int = 0, vma: VMA | None = None) -> tuple[FolioWalk, Folio | None]:
        fw = FolioWalk()
        vma = vma or self.vma
        with self.mm.mmap_read():
            folio = folio_walk_start(fw, vma, addr, flags)
            held = fw.ptl is not None and fw.ptl.is_locked()
            if folio is not None:
                assert held, "a returned folio must come with its PTL held"
                folio_walk_end(fw, vma)
            else:
                assert fw.ptl is None
            assert not self.any_lock_held()
        return fw, folio

    def any_lock_held(self) -> bool:
        return self.mm.page_table_lock.is_locked() or any(lk.is_locked() for lk in self.mm._ptlocks.values())

    def entry_pa(self, va: int, depth: int) -> int:
        """Hand walk: PML4 -> PDPT -> PD -> PT by raw bits 51:12 (depth 0..3)."""
        table = self.mm.pgd
        for d, shift in enumerate((39, 30, 21, 12)):
            pa = table + ((va >> shift) & 511) * 8
            if d == depth:
                return pa
            table = self.ram.read_u64(pa) & 0x000F_FFFF_FFFF_F000
        raise AssertionError


@pytest.fixture
def space() -> Space:
    return Space()


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_small_folio_page(space: Space, flags: int) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot())
    fw, folio = space.walk(BASE + 0x123, flags)
    assert folio == Folio(f.pfn, 0) and fw.page == Page(f.pfn)
    assert fw.level == FW_LEVEL_PTE and fw.ptep == space.entry_pa(BASE, 3)
    assert fw.pte == space.ram.read_u64(space.entry_pa(BASE, 3))
    assert fw.pte & 0x000F_FFFF_FFFF_F000 == f.pfn << 12


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_page_inside_a_large_folio_is_not_the_head(space: Space, flags: int) -> None:
    f = space.b.alloc_folio(4)
    space.b.map_folio(BASE, f, Prot())
    fw, folio = space.walk(BASE + 11 * K + 0x40, flags)
    assert folio == Folio(f.pfn, 4)
    assert fw.page == Page(f.pfn + 11)


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_pmd_leaf_reports_the_page_at_the_offset(space: Space, flags: int) -> None:
    f = space.b.alloc_folio(9)
    space.b.map_folio(BASE, f, Prot(), linux="pmd")
    fw, folio = space.walk(BASE + 300 * K + 0x10, flags)
    assert folio == Folio(f.pfn, 9) and fw.page == Page(f.pfn + 300)
    assert fw.level == FW_LEVEL_PMD and fw.pmdp == space.entry_pa(BASE, 2)
    assert fw.pmd & 0x80 and fw.pmd & 0x000F_FFFF_FFE0_0000 == f.pfn << 12


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_pud_leaf_reports_the_page_at_the_offset(space: Space, flags: int) -> None:
    f = space.b.alloc_folio(18, tag=False)
    space.b.map_folio(BASE + G, f, Prot(), linux="pud")
    fw, folio = space.walk(BASE + G + 5 * M + 7 * K + 1, flags)
    assert folio == Folio(f.pfn, 18) and fw.page == Page(f.pfn + 5 * 512 + 7)
    assert fw.level == FW_LEVEL_PUD and fw.pudp == space.entry_pa(BASE + G, 1)


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_shared_zero_page_only_with_fw_zeropage(space: Space, flags: int) -> None:
    space.b.map_pfn(BASE, "pte", space.mm.zero_pfn, Prot(write=False, special=True))
    fw, folio = space.walk(BASE, flags)
    if flags & FW_ZEROPAGE:
        assert folio == Folio(space.mm.zero_pfn, 0) and fw.page is None and fw.level == FW_LEVEL_PTE
    else:
        assert folio is None


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_huge_zero_folio_only_with_fw_zeropage(space: Space, flags: int) -> None:
    hz = space.mm.alloc_huge_zero_folio()
    space.b.map_pfn(BASE, "pmd", hz, Prot(write=False))
    fw, folio = space.walk(BASE + 17 * K, flags)
    if flags & FW_ZEROPAGE:
        assert folio == Folio(hz, 9) and fw.page is None and fw.level == FW_LEVEL_PMD
    else:
        assert folio is None


@pytest.mark.parametrize("kind", ["read", "read-exclusive", "write"])
@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_pte_migration_entries(space: Space, kind: str, flags: int) -> None:
    f = space.b.alloc_folio(2)
    space.b.set_migration(BASE, "pte", f, kind, page=3)
    raw = space.ram.read_u64(space.entry_pa(BASE, 3))
    # Hand decode of the x86-64 swap PTE: type in 63:59, ~offset in 58:9, present bit clear.
    # 28/29/30: SWP_MIGRATION_* of the default (6.12 distro) x86-64 kernel, as the compiled kernel says
    assert raw & 1 == 0 and raw >> 59 == {"read": 28, "read-exclusive": 29, "write": 30}[kind]
    assert ((~raw >> 9) & ((1 << 34) - 1)) == f.pfn + 3
    fw, folio = space.walk(BASE + 8, flags)
    if flags & FW_MIGRATION:
        assert folio == Folio(f.pfn, 2) and fw.page is None and fw.level == FW_LEVEL_PTE
    else:
        assert folio is None and fw.reason == "migration-entry@pte"


@pytest.mark.parametrize("kind", ["read", "read-exclusive", "write"])
@pytest.mark.parametrize("kernel", ["v6.12", "aa39ca6940f1"])
def test_pmd_migration_entries_and_the_612_present_check_fix(kind: str, kernel: str) -> None:
    sp = Space(kernel=kernel)
    f = sp.b.alloc_folio(9, tag=False)
    sp.b.set_migration(BASE, "pmd", f, kind)
    raw = sp.ram.read_u64(sp.entry_pa(BASE, 2))
    assert raw & 0x81 == 0  # neither present nor PSE: pmd_leaf() is false on x86-64
    fw, folio = sp.walk(BASE + 3 * K, FW_MIGRATION)
    if kernel == "v6.12":  # "fix usage of pmd_leaf()/pud_leaf() without present check"
        assert folio == Folio(f.pfn, 9) and fw.page is None and fw.level == FW_LEVEL_PMD
    else:  # the seed: pmd_leaf() alone decides, __pte_offset_map() refuses the migration PMD
        assert folio is None and fw.reason == "migration-entry@pmd"
    fw, folio = sp.walk(BASE + 3 * K, 0)
    assert folio is None


@pytest.mark.parametrize("flags", FLAG_COMBINATIONS)
def test_ordinary_swap_entry_is_never_returned(space: Space, flags: int) -> None:
    space.b.set_swap(BASE, "pte", SwpEntry(3, 0x1234))
    fw, folio = space.walk(BASE, flags)
    assert folio is None and fw.reason.startswith("swap@pte")


@pytest.mark.parametrize("vm_flag", [VM_PFNMAP, VM_MIXEDMAP])
def test_special_pte_in_pfnmap_and_mixedmap_vmas(space: Space, vm_flag: int) -> None:
    vma = space.mm.add_vma(VMA(BASE - 8 * G, BASE - 8 * G + M, RW | vm_flag))
    f = space.b.alloc_folio(0)
    space.b.map_pfn(vma.vm_start, "pte", f.pfn, Prot(special=True))
    for flags in FLAG_COMBINATIONS:
        fw, folio = space.walk(vma.vm_start, flags, vma=vma)
        assert folio is None and fw.reason.startswith("not-normal@pte:special")


def test_normal_pte_in_mixedmap_vma_is_returned(space: Space) -> None:
    vma = space.mm.add_vma(VMA(BASE - 8 * G, BASE - 8 * G + M, RW | VM_MIXEDMAP))
    f = space.b.alloc_folio(0)
    space.b.map_folio(vma.vm_start, f, Prot())
    _, folio = space.walk(vma.vm_start, 0, vma=vma)
    assert folio == Folio(f.pfn, 0)


def test_devmap_pud_is_not_found(space: Space) -> None:
    pa = space.alloc.alloc(G)
    space.b.map_pfn(BASE + G, "pud", pa >> 12, Prot(devmap=True))
    assert space.ram.read_u64(space.entry_pa(BASE + G, 1)) & (1 << 57)  # _PAGE_DEVMAP
    for flags in FLAG_COMBINATIONS:
        fw, folio = space.walk(BASE + G + 5 * K, flags)
        assert folio is None and fw.reason == "devmap@pud"


def test_prot_none_pte_is_present_to_linux(space: Space) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot(protnone=True))
    raw = space.ram.read_u64(space.entry_pa(BASE, 3))
    assert raw & 1 == 0 and raw & 0x100  # hardware: not present; Linux: _PAGE_PROTNONE
    fw, folio = space.walk(BASE, 0)
    assert folio == Folio(f.pfn, 0) and fw.page == Page(f.pfn)


@pytest.mark.parametrize("depth,reason", [(0, "none@p4d"), (1, "none@pud"), (2, "none@pmd"), (3, "none@pte")])
def test_none_at_every_level(space: Space, depth: int, reason: str) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot())  # creates PML4E, PDPTE, PDE and one PTE for BASE
    # An address that shares the first `depth` levels with BASE and then hits a none entry.
    addr = BASE + [512 * G, G, M, K][depth]
    fw, folio = space.walk(addr, FW_MIGRATION | FW_ZEROPAGE)
    assert folio is None and fw.reason == reason
    assert len(fw.trace) >= depth + 1


def test_none_at_pml5_with_5_level_paging() -> None:
    sp = Space("x86_64:5level")
    fw, folio = sp.walk(BASE, 0)
    assert folio is None and fw.reason == "none@pgd"


def test_bad_p4d_entry_is_cleared(space: Space) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot())
    pml4e = space.entry_pa(BASE, 0)
    space.ram.write_u64(pml4e, space.ram.read_u64(pml4e) | 1 << 9)  # software bit 9: p4d_bad()
    fw, folio = space.walk(BASE, 0)
    assert folio is None and fw.reason == "bad@p4d"
    assert space.ram.read_u64(pml4e) == 0  # p4d_clear_bad() -> p4d_clear()
    assert any("p4d_ERROR" in w for w in fw.warnings)


def test_bad_pgd_entry_is_cleared_with_5_level_paging() -> None:
    sp = Space("x86_64:5level")
    f = sp.b.alloc_folio(0)
    sp.b.map_folio(BASE, f, Prot())
    pml5e = sp.mm.pgd + ((BASE >> 48) & 511) * 8
    sp.ram.write_u64(pml5e, sp.ram.read_u64(pml5e) & ~0x20)  # pgd_bad(): A missing
    fw, folio = sp.walk(BASE, 0)
    assert folio is None and fw.reason == "bad@pgd" and sp.ram.read_u64(pml5e) == 0


def test_address_outside_the_vma_warns_and_finds_nothing(space: Space) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE - K, f, Prot())
    fw, folio = space.walk(BASE - K, 0)
    assert folio is None and fw.reason == "outside-vma" and fw.warnings and not fw.trace


def test_walk_needs_the_mmap_lock(space: Space) -> None:
    with pytest.raises(RuntimeError, match="mmap_assert_locked"):
        folio_walk_start(FolioWalk(), space.vma, BASE, 0)


def test_lock_held_from_start_to_end_only(space: Space) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot())
    with space.mm.mmap_read():
        fw = FolioWalk()
        assert folio_walk_start(fw, space.vma, BASE, 0) is not None
        ptl = fw.ptl
        assert ptl is not None and ptl.is_locked()
        folio_walk_end(fw, space.vma)
        assert not ptl.is_locked()
        with pytest.raises(RuntimeError):
            folio_walk_end(fw, space.vma)


def test_context_manager_releases_the_lock_on_error(space: Space) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot())
    with space.mm.mmap_read():
        with pytest.raises(ValueError):
            with folio_walk(space.vma, BASE, 0) as fw:
                assert fw.folio == Folio(f.pfn, 0) and fw.ptl is not None
                raise ValueError
    assert not space.any_lock_held()


@pytest.mark.parametrize("leaf", ["pte", "pmd"])
def test_writer_blocks_until_folio_walk_end(space: Space, leaf: str) -> None:
    """A second thread that takes the same PTL to change the entry waits for folio_walk_end()."""
    order = 0 if leaf == "pte" else 9
    f = space.b.alloc_folio(order)
    space.b.map_folio(BASE, f, Prot(), linux=leaf)
    entry = space.entry_pa(BASE, 3 if leaf == "pte" else 2)
    lock = (
        space.mm.pte_lockptr(space.ram.read_u64(space.entry_pa(BASE, 2)))
        if leaf == "pte"
        else space.mm.pmd_lockptr(entry)
    )
    started, done = threading.Event(), threading.Event()

    def writer() -> None:
        started.set()
        with lock:  # what zap_pte_range()/zap_huge_pmd() would take
            space.ram.write_u64(entry, 0)
        done.set()

    with space.mm.mmap_read():
        fw = FolioWalk()
        assert folio_walk_start(fw, space.vma, BASE, 0) is not None
        assert fw.ptl is lock
        t = threading.Thread(target=writer)
        t.start()
        started.wait(5)
        assert not done.wait(0.3), "the writer got the PTL while the walk held it"
        assert space.ram.read_u64(entry) == fw.entry
        folio_walk_end(fw, space.vma)
        t.join(5)
    assert done.is_set() and space.ram.read_u64(entry) == 0


def test_entry_outside_ram_ends_the_walk_cleanly(space: Space) -> None:
    f = space.b.alloc_folio(0)
    space.b.map_folio(BASE, f, Prot())
    pde = space.entry_pa(BASE, 2)
    space.ram.write_u64(pde, (space.ram.size + 0x1000) | 0x67)  # PT beyond RAM
    fw, folio = space.walk(BASE, 0)
    assert folio is None and fw.reason == "unreadable@pte"
