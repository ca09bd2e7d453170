"""Leaves Linux sees as present that the MMU refuses by design: PROT_NONE on every architecture,
and on s390x an *old* page (no hardware young bit: pte_mkold() sets _PAGE_INVALID)."""

from __future__ import annotations

import pytest

import archs
from archs.linux import Prot
from emu.machines.base import Fault
from emu.mm import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, VMA
from emu.scenarios import Case, build_default
from emu.verify import verify_scenario

RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE


@pytest.mark.parametrize(
    "config,prot,verdict",
    [
        ("x86_64:4level", Prot(protnone=True), "linux-only: prot-none"),
        ("arm64:4k:48", Prot(protnone=True), "linux-only: prot-none"),
        ("s390x:region3", Prot(protnone=True), "linux-only: prot-none"),
        ("s390x:region3", Prot(young=False), "linux-only: old-page (_PAGE_INVALID tracks young)"),
        ("x86_64:4level", Prot(young=False), "agree"),  # x86 has a hardware accessed bit
    ],
)
def test_present_to_linux_absent_to_the_mmu(config: str, prot: Prot, verdict: str) -> None:
    ops = archs.get_ops(config)
    sc = build_default(ops)
    try:
        # Above every VMA of the default scenario, inside the configuration's VA range.
        base = 0x3F0_0000_0000 if config.startswith("s390x") else 0x7000_0000_0000
        vma = sc.mm.add_vma(VMA(base, base + (2 << 20), RW, name="extra"))
        folio = sc.builder.alloc_folio(0)
        sc.builder.map_folio(base, folio, prot)
        sc.cases = [Case("extra", base + 0x18, vma)]
        rows = verify_scenario(sc, flag_sets=(0,))
        assert rows[0].walk.found and rows[0].walk.page_pfn == folio.pfn
        assert rows[0].verdict == verdict
        if verdict != "agree":
            assert isinstance(rows[0].mmu, Fault)
    finally:
        sc.close()
