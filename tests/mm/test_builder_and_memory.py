"""Guest RAM, the frame allocator, the folio model and the table builder: right answers, and a
clear error (never a wrong table) for every bad request."""

from __future__ import annotations

import pytest

from archs import get_ops
from archs.linux import Prot
from emu.errors import AddressError, FoliowalkError, MemoryLayoutError
from emu.machines.ram import TAG, FrameAllocator, PhysicalMemory
from emu.mm.mm_types import MemMap, Page
from emu.mm.scenarios import new_address_space

K, M, G = 1 << 12, 1 << 21, 1 << 30


def test_ram_is_one_buffer_shared_by_address() -> None:
    ram = PhysicalMemory(16 * M)
    ram.write_u64(0x1000, 0x1122334455667788)
    assert bytes(ram.buf[0x1000:0x1008]) == bytes.fromhex("8877665544332211")  # little-endian
    be = PhysicalMemory(16 * M, big_endian=True)
    be.write_u64(0x1000, 0x1122334455667788)
    assert bytes(be.buf[0x1000:0x1008]) == bytes.fromhex("1122334455667788")


def test_tags_name_their_own_physical_word() -> None:
    ram = PhysicalMemory(16 * M)
    ram.tag(0x5000, 0x1000)
    word = ram.read_u64(0x5ab8)
    assert word == TAG | 0x5AB8
    assert ram.tagged_pa(word, 0x7F00_0000_0AB8 + 3) == 0x5ABB
    assert ram.tagged_pa(0x1234, 0) is None


def test_undo_restores_writes() -> None:
    ram = PhysicalMemory(16 * M)
    ram.write_u64(0x2000, 7)
    with ram.undo():
        ram.write_u64(0x2000, 9)
        assert ram.read_u64(0x2000) == 9
    assert ram.read_u64(0x2000) == 7


@pytest.mark.parametrize("size", [0, -4096, 4095, 1 << 50])
def test_bad_ram_sizes_are_refused(size: int) -> None:
    with pytest.raises(MemoryLayoutError):
        PhysicalMemory(size)


def test_out_of_range_and_misaligned_entries_are_refused() -> None:
    ram = PhysicalMemory(16 * M)
    with pytest.raises(MemoryLayoutError, match="outside RAM"):
        ram.read_u64(16 * M)
    with pytest.raises(AddressError, match="aligned"):
        ram.write_u64(0x1004, 0)


def test_allocator_aligns_and_reserves() -> None:
    ram = PhysicalMemory(64 * M)
    alloc = FrameAllocator(ram, reserved=[(0, 0x2000)])
    assert alloc.alloc(K) == 0x2000
    assert alloc.alloc(M) == M
    assert alloc.alloc(K) == 0x3000
    with pytest.raises(MemoryLayoutError, match="out of guest RAM"):
        alloc.alloc(64 * M)
    with pytest.raises(MemoryLayoutError, match="already in use"):
        alloc.reserve(0x2000, 0x3000)


def test_folio_model() -> None:
    ram = PhysicalMemory(64 * M)
    mm = MemMap(ram, 12)
    folio = mm.add_folio(0x200, 9)
    assert mm.page_folio(Page(0x3FF)) == folio and mm.page_folio(Page(0x400)).pfn == 0x400
    assert mm.compound_head(Page(0x234)) == Page(0x200) and mm.nth_page(Page(0x200), 5) == Page(0x205)
    with pytest.raises(MemoryLayoutError, match="overlaps"):
        mm.add_folio(0x300, 0)
    with pytest.raises(AddressError, match="aligned"):
        mm.add_folio(0x801, 2)
    assert mm.pfn_valid(mm.highest_memmap_pfn) and not mm.pfn_valid(mm.highest_memmap_pfn + 1)


@pytest.fixture
def builder():  # type: ignore[no-untyped-def]
    ops = get_ops("x86_64:4level")
    _, _, _, _, b = new_address_space(ops, ram_size=64 * M)
    return b


def test_builder_entries_follow_the_sdm_chain(builder) -> None:  # type: ignore[no-untyped-def]
    f = builder.alloc_folio(0)
    builder.map_folio(0x7F12_3456_7000, f, Prot(write=False, exec=True, dirty=False))
    ram, table = builder.mm.ram, builder.mm.pgd
    for shift in (39, 30, 21):
        entry = ram.read_u64(table + ((0x7F12_3456_7000 >> shift) & 511) * 8)
        assert entry & 0xFFF == 0x067  # _PAGE_TABLE: P|RW|US|A|D
        table = entry & 0x000F_FFFF_FFFF_F000
    pte = ram.read_u64(table + ((0x7F12_3456_7000 >> 12) & 511) * 8)
    assert pte == (f.pfn << 12) | 0x025  # P|US|A, read-only, executable (NX clear), clean


def test_builder_refuses_non_canonical_addresses(builder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AddressError, match="not canonical"):
        builder.map_pfn(0x0000_8000_0000_0000, "pte", 5, Prot())


def test_builder_refuses_misaligned_leaves(builder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AddressError, match="not aligned"):
        builder.map_pfn(0x7F00_0010_0000, "pmd", 0x200, Prot())
    with pytest.raises(AddressError, match="not aligned"):
        builder.map_pfn(0x7F00_0020_0000, "pmd", 0x201, Prot())


def test_builder_refuses_targets_beyond_ram(builder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MemoryLayoutError, match="outside RAM"):
        builder.map_pfn(0x7F00_0000_0000, "pte", (64 * M) >> 12, Prot())


def test_builder_refuses_overlapping_mappings(builder) -> None:  # type: ignore[no-untyped-def]
    builder.map_pfn(0x7F00_0020_0000, "pmd", 0x200, Prot())
    with pytest.raises(MemoryLayoutError, match="overlaps"):
        builder.map_pfn(0x7F00_0020_1000, "pte", 0x5, Prot())
    builder.map_pfn(0x7F00_0000_0000, "pte", 0x5, Prot())
    with pytest.raises(MemoryLayoutError, match="already mapped"):
        builder.map_pfn(0x7F00_0000_0000, "pte", 0x6, Prot())


def test_builder_refuses_reserved_ranges(builder) -> None:  # type: ignore[no-untyped-def]
    builder.reserved = [(0xFFFF_FF80_0000_0000, 1 << 64)]
    with pytest.raises(MemoryLayoutError, match="reserved"):
        builder.map_pfn(0xFFFF_FF80_0000_0000, "pte", 5, Prot())


def test_every_builder_error_is_a_foliowalk_error() -> None:
    assert issubclass(AddressError, FoliowalkError) and issubclass(MemoryLayoutError, FoliowalkError)
