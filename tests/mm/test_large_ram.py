"""Sparse guest RAM far beyond the host's memory (MAP_NORESERVE, emu/machines/ram.py): 1 TiB
maps, a few pages are touched and walked, and only those pages cost host memory."""

from __future__ import annotations

from pathlib import Path

import pytest

import archs
from archs.linux import Prot
from emu.machines.ram import MAP_NORESERVE, PhysicalMemory
from emu.mm.mm_types import VMA
from emu.mm.pagewalk import FolioWalk, folio_walk_end, folio_walk_start
from emu.mm.pagewalk_batch import walk_many
from emu.mm.scenarios import new_address_space

TIB = 1 << 40
_OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory")


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def _strict_overcommit() -> bool:  # mode 2 ignores MAP_NORESERVE: a 1 TiB map fails there by design
    return _OVERCOMMIT.exists() and _OVERCOMMIT.read_text().strip() == "2"


@pytest.mark.skipif(not MAP_NORESERVE or _strict_overcommit(), reason="needs Linux MAP_NORESERVE overcommit")
def test_one_tib_of_sparse_ram_maps_and_touching_pages_costs_only_them() -> None:
    before = _rss()
    ram = PhysicalMemory(TIB)
    try:
        for pa in (0, TIB // 2, TIB - 4096):
            ram.write_u64(pa + 8, 0x1234_5678_9ABC_DEF0 ^ pa)
            assert ram.read_u64(pa + 8) == 0x1234_5678_9ABC_DEF0 ^ pa
        assert _rss() - before < 64 << 20
    finally:
        del ram


@pytest.mark.skipif(not MAP_NORESERVE or _strict_overcommit(), reason="needs Linux MAP_NORESERVE overcommit")
def test_a_page_at_the_top_of_a_large_sparse_guest_is_walked() -> None:
    """64 GiB of guest RAM (beyond this 24 GiB host): a PTE mapping a frame near the top is found
    by folio_walk_start() and walk_many() alike."""
    ops = archs.get_ops("x86_64:4level")
    ram_size = 64 << 30
    ram, alloc, memmap, mm, builder = new_address_space(ops, ram_size=ram_size)
    va = 0x7F00_0000_0000
    pfn = (ram_size >> ops.PAGE_SHIFT) - 1
    builder.map_pfn(va, "pte", pfn, Prot())
    vma = mm.add_vma(VMA(va, va + ops.PAGE_SIZE, 0x73))
    with mm.mmap_read():
        fw = FolioWalk()
        folio = folio_walk_start(fw, vma, va + 0x18, 0)
        assert folio is not None and fw.page is not None and fw.page.pfn == pfn
        folio_walk_end(fw, vma)
        b = walk_many(vma, [va + 0x18], 0)
        assert bool(b.found[0]) and int(b.page_pfn[0]) == pfn
