"""Leaves Linux sees as present that the MMU refuses by design: PROT_NONE on every architecture,
and on s390x an *old* page (no hardware young bit: pte_mkold() sets _PAGE_INVALID)."""

from __future__ import annotations

import pytest

import archs
from archs.linux import Prot
from emu.machines.base import Fault
from emu.mm.mm_types import VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_WRITE, VMA
from emu.mm.scenarios import Case, build_default
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


def test_a_fault_above_the_leaf_names_the_entry_the_mmu_stopped_at() -> None:
    """An old page (AF = 0) under an L0 descriptor with bit[0] clear (p4d_none()/p4d_bad() let
    Linux walk through it): the MMU faults at L0, so the verdict names the L0 entry, not the leaf."""
    from emu.machines.oracle import make_oracle
    from emu.mm.scenarios import Scenario, new_address_space

    ops = archs.get_ops("arm64:4k:48")
    ram, alloc, memmap, mm, b = new_address_space(ops, ram_size=256 << 20)
    sc = Scenario(ops, ram, alloc, memmap, mm, b, oracle=make_oracle(ops, ram, alloc))
    try:
        va = 1 << 39
        vma = mm.add_vma(VMA(va, va + (1 << 30), RW, name="anon"))
        b.map_folio(va, b.alloc_folio(0), Prot(young=False))
        p4d = b.entry_pa(va, "p4d")
        ram.write_u64(p4d, ram.read_u64(p4d) & ~1)  # bits[1:0] = 0b10: invalid to the MMU
        sc.cases = [Case("old page under an invalid L0 entry", va + 8, vma)]
        [row] = verify_scenario(sc, flag_sets=(0,))
        assert row.walk.found and isinstance(row.mmu, Fault) and row.mmu.level == 0
        assert row.verdict.startswith(f"linux-only: L0 entry {ram.read_u64(p4d):#x}")
    finally:
        sc.close()


def test_a_machine_that_does_not_start_gives_counted_oracle_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify keeps going when a probe machine fails to start: the walks still run and every row
    of that configuration is an oracle-error naming why (never skipped, never agree)."""
    import emu.machines.oracle
    from emu.errors import EmulatorError
    from emu.verify import verify_configs

    def broken(*args: object, **kwargs: object) -> None:
        raise EmulatorError("calibration failed (test double)")

    monkeypatch.setattr(emu.machines.oracle, "make_oracle", broken)
    report = verify_configs(["x86_64:4level"])
    assert report.rows and report.counts() == {"oracle-error": len(report.rows)}
    assert all("did not start: calibration failed" in r.verdict for r in report.rows)
    assert any(r.walk.found for r in report.rows)  # the walks ran
