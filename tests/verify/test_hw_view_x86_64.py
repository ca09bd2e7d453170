"""The architecture as third party on x86-64: ``X86_64.hw_rejects()`` against the real MMU.

Each entry under test is written here from the Intel SDM vol. 3A layout (Tables 4-14..4-20: P=bit
0, R/W=1, U/S=2, A=5, D=6, PS=7, XD=63, address bits 51:12; §4.5.4 reserved bits), never from
archs.x86_64's masks.  For every reason the MMU shows the fault (#PF error code, §4.7: RSVD=bit 3
set for reserved bits, P=bit 0 clear for a not-present entry) and the verify verdict names the
entry and the reason.  The CPU facts the view relies on (MAXPHYADDR, IA32_EFER.NXE, 1-GByte
pages) are checked against the probe machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

import archs
from archs.linux import LinuxPgtable
from archs.x86_64 import CPU, TABLE, X86_64
from emu.fuzz import HierarchyGenerator, Target
from emu.machines import deviations
from emu.machines.base import Fault, Translation
from emu.machines.oracle import ORACLES, Oracle, make_oracle
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.machines.x86_64 import X86_64Machine
from emu.mm.mm_types import (
    MM,
    VM_IO,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VMA,
)
from emu.mm.scenarios import Case, Scenario, new_address_space
from emu.verify import Row, verify_scenario

# Entry bits (SDM vol. 3A Tables 4-14..4-20) and Linux's software bit 9 (_PAGE_SPECIAL).
P, RW, US, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
XD = 1 << 63
SPECIAL = 1 << 9
LEAF = P | RW | US | A | D  # what Linux writes in a present user leaf, bar NX
TABLE_BITS = P | RW | US | A | D  # _PAGE_TABLE
# #PF error code (SDM vol. 3A §4.7, Figure 4-12).
EC_P, EC_RSVD = 1, 8

ANON = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
PFNMAP = ANON | VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO
BASE = 0x7000_0000_0000  # far from everything; 1G-aligned
GIB = 1 << 30

CONFIGS = ["x86_64:4level", "x86_64:5level"]


def pf(code: int) -> Fault:
    return Fault("page-fault", None, code, 14)


class NoNxeOracle(Oracle):
    """The x86-64 oracle on a machine with IA32_EFER.NXE=0."""

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        self.machine = X86_64Machine(ram, alloc, levels=len(ops.config.levels), nxe=False)

    def reserved_va(self) -> list[tuple[int, int]]:
        return [self.machine.reserved_va_range()]

    def attach(self, mm: MM) -> None:
        self.machine.set_root(mm.pgd)


@pytest.fixture
def space(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scenario]:
    """An empty address space (3 GiB of RAM: room for a 1-GByte folio) with the MMU oracle;
    ``(key, False)`` for a CPU running with IA32_EFER.NXE=0 (view and machine alike)."""
    key, nxe = request.param if isinstance(request.param, tuple) else (request.param, True)
    ops = archs.get_ops(key)
    if not nxe:
        ops = X86_64(dataclasses.replace(ops.config, extra={**ops.config.extra, "nxe": False}))
        monkeypatch.setitem(ORACLES, "x86_64", NoNxeOracle)
    ram, alloc, memmap, mm, builder = new_address_space(ops, ram_size=3 * GIB, reserved_low=X86_64.RESERVED_LOW)
    sc = Scenario(ops, ram, alloc, memmap, mm, builder)
    sc.oracle = make_oracle(ops, ram, alloc)
    builder.reserved = sc.oracle.reserved_va()
    try:
        yield sc
    finally:
        sc.close()


def hw(sc: Scenario, linux: str) -> str:
    return sc.ops.hw_level(linux).name


def put(sc: Scenario, va: int, linux: str, value: int) -> int:
    """Write a raw entry for ``va`` at Linux level ``linux`` (tables above built by Linux)."""
    pa = sc.builder.entry_pa(va, linux)
    sc.ram.write_u64(pa, value)
    return pa


def one_row(sc: Scenario, va: int, flags: int = PFNMAP) -> Row:
    vma = sc.mm.find_vma(va) or sc.mm.add_vma(VMA(BASE, BASE + 4 * GIB, flags, name="hw-view"))
    sc.cases = [Case("hw-view", va, vma)]
    (row,) = verify_scenario(sc, flag_sets=(0,))
    return row


def named(row: Row, level: str, pa: int, value: int, why: str) -> None:
    """The verdict names the entry the architecture rejects and why."""
    assert row.verdict == f"linux-only: {level} entry {value:#x} at {pa:#x} is rejected by the architecture: {why}"


# -- each reason, with the MMU's fault and the verdict -------------------------------------------
@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_reserved_bit_in_a_1g_leaf(space: Scenario) -> None:
    """Table 4-16: bits 29:13 of a PDPTE that maps a 1-GByte page are reserved."""
    sc = space
    folio = sc.builder.alloc_folio(18)
    value = (folio.pfn << 12) | LEAF | PS | 1 << 17
    pa = put(sc, BASE, "pud", value)
    row = one_row(sc, BASE + 0x1234_5678, ANON)
    assert row.walk.found and row.walk.level == "PUD" and row.walk.folio_pfn == folio.pfn
    assert row.mmu == pf(EC_P | EC_RSVD)
    why = sc.ops.hw_rejects("pud", value, leaf=True)
    assert why is not None and "PDPTE: bit 17 of reserved bits 29:13" in why and "Table 4-16" in why
    named(row, "PDPT", pa, value, why)


@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_reserved_bits_in_a_2m_leaf(space: Scenario) -> None:
    """Table 4-18: bits 20:13 of a PDE that maps a 2-MByte page are reserved."""
    sc = space
    folio = sc.builder.alloc_folio(9)
    value = (folio.pfn << 12) | LEAF | PS | 1 << 20 | 1 << 13
    pa = put(sc, BASE, "pmd", value)
    row = one_row(sc, BASE + 0x1_2348, ANON)
    assert row.walk.found and row.walk.level == "PMD"
    assert row.mmu == pf(EC_P | EC_RSVD)
    why = sc.ops.hw_rejects("pmd", value, leaf=True)
    assert why is not None and "PDE: bits 20, 13 of reserved bits 20:13" in why and "Table 4-18" in why
    named(row, "PD", pa, value, why)


@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_address_bit_at_maxphyaddr_in_a_pte(space: Scenario) -> None:
    """Table 4-20: bits 51:MAXPHYADDR are reserved; MAXPHYADDR is 40 on this CPU model.  A special
    PTE in a VM_PFNMAP VMA: Linux refuses the page (vm_normal_page) but sees it present."""
    sc = space
    value = 1 << 40 | 0x6000_000 | LEAF | SPECIAL
    pa = put(sc, BASE, "pte", value)
    row = one_row(sc, BASE + 0x18)
    assert row.walk.reason == "not-normal@pte:special-pfnmap"
    assert row.mmu == pf(EC_P | EC_RSVD)
    why = sc.ops.hw_rejects("pte", value, leaf=True)
    assert why is not None and "PTE: address bit 40 at or above MAXPHYADDR (40)" in why and "Table 4-20" in why
    named(row, "PT", pa, value, why)


@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_not_present_pml4e_that_linux_walks_through(space: Scenario) -> None:
    """p4d_bad() does not look at P: a PML4E with RW|US|A|D and P=0 is a table to Linux and a
    not-present entry to the MMU (§4.5.4: P must be 1 to reference a PDPT)."""
    sc = space
    folio = sc.builder.alloc_folio(0)
    sc.builder.set_entry(BASE, "pte", (folio.pfn << 12) | LEAF)
    pdpt = sc.builder.entry_pa(BASE, "pud") & ~0xFFF
    value = pdpt | RW | US | A | D
    pa = put(sc, BASE, "p4d", value)
    row = one_row(sc, BASE + 0x10, ANON)
    assert row.walk.found and row.walk.page_pfn == folio.pfn
    assert row.mmu == pf(0)  # P=0 in the error code, no RSVD: a not-present entry
    why = sc.ops.hw_rejects("p4d", value, leaf=False)
    assert why is not None and why.startswith("P=0 in the PML4E: not present")
    named(row, "PML4", pa, value, why)


@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_pmd_with_only_pse(space: Scenario) -> None:
    """The THP-split state (pmdp_invalidate): P cleared, PSE kept, the pfn inverted because P is
    clear (L1TF, pgtable-invert.h).  pmd_present() is true (it checks PSE); the MMU sees P=0."""
    sc = space
    folio = sc.builder.alloc_folio(9)
    value = (~(folio.pfn << 12) & 0x000F_FFFF_FFE0_0000) | PS
    pa = put(sc, BASE, "pmd", value)
    row = one_row(sc, BASE + 0x3000, ANON)
    assert row.walk.found and row.walk.level == "PMD" and row.walk.folio_pfn == folio.pfn
    assert row.mmu == pf(0)
    why = sc.ops.hw_rejects("pmd", value, leaf=True)
    assert why is not None and why.startswith("P=0 in the PDE: not present")
    named(row, "PD", pa, value, why)


@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_ps_in_the_top_entries(space: Scenario) -> None:
    """Tables 4-14, 4-15: PS (bit 7) is reserved in a PML5E and a PML4E.  Linux's pgd_bad() /
    p4d_bad() reject such an entry too (and clear it), so the row agrees: both stop there."""
    sc = space
    folio = sc.builder.alloc_folio(0)
    sc.builder.set_entry(BASE, "pte", (folio.pfn << 12) | LEAF)
    linux_levels = ["pgd", "p4d"] if len(sc.ops.config.levels) == 5 else ["p4d"]
    for linux in linux_levels:
        pa = sc.builder.entry_pa(BASE, linux)
        good = sc.ram.read_u64(pa)
        value = (good & 0x000F_FFFF_FFFF_F000) | TABLE_BITS | PS
        sc.ram.write_u64(pa, value)
        why = sc.ops.hw_rejects(linux, value, leaf=False)
        entry = hw(sc, linux) + "E"
        assert why is not None and f"PS=1 (bit 7 is reserved in a {entry})" in why
        row = one_row(sc, BASE + 0x10, ANON)
        assert row.mmu == pf(EC_P | EC_RSVD)
        assert row.walk.reason == f"bad@{linux}" and row.verdict == "agree"
        sc.ram.write_u64(pa, good)
        assert one_row(sc, BASE + 0x10, ANON).verdict == "agree"
        assert sc.ops.hw_rejects(linux, good, leaf=False) is None


@pytest.mark.parametrize("space", [("x86_64:4level", False)], indirect=True)
def test_xd_without_nxe(space: Scenario) -> None:
    """§4.5.4: with IA32_EFER.NXE=0, XD (bit 63) in an entry with P=1 is reserved."""
    sc = space
    assert sc.ops.config.extra["nxe"] is False
    assert not sc.oracle.registers()["EFER"] & 1 << 11
    folio = sc.builder.alloc_folio(0)
    value = XD | (folio.pfn << 12) | LEAF
    pa = put(sc, BASE, "pte", value)
    row = one_row(sc, BASE + 0x8, ANON)
    assert row.walk.found and row.mmu == pf(EC_P | EC_RSVD)
    why = sc.ops.hw_rejects("pte", value, leaf=True)
    assert why is not None and "XD=1 with IA32_EFER.NXE=0" in why
    named(row, "PT", pa, value, why)
    # The same entry with NXE=1 (the configurations as they are) is fine.
    assert archs.get_ops("x86_64:4level").hw_rejects("pte", value, leaf=True) is None


def test_ps_in_a_pdpte_without_1g_pages() -> None:
    """§4.5.4: without 1-GByte pages, PS in a PDPTE with P=1 is reserved.  The CPU model lacks
    them but translates them (deviation x86-1g-pages-without-pdpe1gb), so the configurations
    describe a CPU with them, as Linux needs for PUD leaves; the MMU cannot show this one."""
    ops = archs.get_ops("x86_64:4level")
    no1g = X86_64(dataclasses.replace(ops.config, extra={**ops.config.extra, "gbpages": False}))
    value = 0x4000_0000 | LEAF | PS
    assert ops.hw_rejects("pud", value, leaf=True) is None
    why = no1g.hw_rejects("pud", value, leaf=True)
    assert why is not None and "PS=1 without 1-GByte pages" in why
    assert no1g.hw_rejects("pmd", 0x20_0000 | LEAF | PS, leaf=True) is None


# -- entries the architecture takes ------------------------------------------------------------
@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_ignored_bits_are_accepted(space: Scenario) -> None:
    """Ignored bits (Table 4-20: 58:52 and, with CR4.PKE=0, the protection key 62:59; Tables
    4-15/4-17/4-19: 11:8 and 62:52 of a table entry) and the highest address bit below
    MAXPHYADDR: the MMU translates, the architecture's view rejects nothing."""
    sc = space
    folio = sc.builder.alloc_folio(0)
    leaf = (folio.pfn << 12) | LEAF | 0x7F << 52 | 0xF << 59
    put(sc, BASE, "pte", leaf)
    row = one_row(sc, BASE + 0x28, ANON)
    assert row.walk.found and row.verdict == "agree"
    assert row.mmu == Translation((folio.pfn << 12) + 0x28, "tag")
    assert sc.ops.hw_rejects("pte", leaf, leaf=True) is None
    # A PDE that references a page table with bits 9 and 56:52 set: pmd_bad() in Linux (bit 57
    # would be _PAGE_DEVMAP, which Linux takes for a leaf: leaf@pmd).
    pde_pa = sc.builder.entry_pa(BASE, "pmd")
    pde = sc.ram.read_u64(pde_pa) | 1 << 9 | 0x1F << 52
    sc.ram.write_u64(pde_pa, pde)
    assert sc.ops.hw_rejects("pmd", pde, leaf=False) is None
    row = one_row(sc, BASE + 0x28, ANON)
    assert row.walk.reason == "bad@pmd" and row.verdict == "linux-only: bad@pmd"
    assert row.mmu == Translation((folio.pfn << 12) + 0x28, "tag")
    # Address bit 39 = MAXPHYADDR - 1: a physical address with no RAM, translated all the same.
    high = 1 << 39 | 0x5000 | LEAF | SPECIAL
    put(sc, BASE + 0x1000, "pte", high)
    assert sc.ops.hw_rejects("pte", high, leaf=True) is None
    sc.oracle.attach(sc.mm)  # verify_scenario() put the tables back as built, root slot 511 too
    assert sc.oracle.probe(BASE + 0x1010) == Translation(1 << 39 | 0x5010, "vmem")


# -- the CPU facts, from the machine ------------------------------------------------------------
def test_cpu_facts_are_the_probe_machines() -> None:
    """``archs.x86_64.CPU``: MAXPHYADDR is CPUID.80000008H:EAX[7:0] of the machine's CPU model,
    NXE is what the machine runs with, and 1-GByte pages are the documented deviation."""
    for key in CONFIGS:
        assert archs.get_config(key).extra == CPU
    ops = archs.get_ops("x86_64:4level")
    ram, alloc, _memmap, mm, _b = new_address_space(ops, ram_size=64 << 20, reserved_low=X86_64.RESERVED_LOW)
    machine = X86_64Machine(ram, alloc, levels=4)
    try:
        machine.set_root(mm.pgd)
        regs = machine.run_code(bytes.fromhex("b808000080" "0fa2"), regs={"rcx": 0})  # mov eax,0x80000008; cpuid
        assert isinstance(regs, dict) and regs["rax"] & 0xFF == CPU["maxphyaddr"] == 40
        assert bool(machine.registers()["EFER"] & 1 << 11) == CPU["nxe"]
        regs = machine.run_code(bytes.fromhex("b801000080" "0fa2"), regs={"rcx": 0})  # leaf 80000001H
        assert isinstance(regs, dict) and not regs["rdx"] & 1 << 26  # Page1GB not reported...
        assert CPU["gbpages"]  # ...but 1G pages translate (test_machine_x86_64: test_1g_leaf_translates)
        assert "x86-1g-pages-without-pdpe1gb" in {d.name for d in deviations.for_arch("x86_64")}
    finally:
        machine.close()
        ram.close()


# -- the view bit by bit and on random hierarchies ------------------------------------------------
def sdm_walk(ops: X86_64, read: Callable[[int], int | None], root: int, va: int) -> tuple[str, int, int | str | None]:
    """The MMU's walk by the architecture's view alone: ``("reject", entry pa, reason)``,
    ``("leaf", entry pa, physical address)`` or ``("outside", pa, None)`` (a table outside RAM)."""
    table = root
    for lv in ops.config.levels:
        pa = table + lv.index(va) * 8
        val = read(pa)
        if val is None:
            return ("outside", pa, None)
        why = ops.hw_rejects(lv.linux, val, leaf=False)
        if why:
            return ("reject", pa, why)
        fmt = ops.hw_format(lv.linux, val)
        if fmt is not TABLE:
            size = 1 << fmt.masks["addr"][0]
            return ("leaf", pa, (val & fmt.mask("addr")) | (va & (size - 1)))
        table = val & TABLE.mask("addr")
    raise AssertionError("no leaf at the last level")


def agrees(kind: str, x: int | str | None, mmu: object) -> bool:
    if kind == "reject":
        assert isinstance(x, str)
        want = EC_P | EC_RSVD if x.startswith("reserved bits") else 0
        return isinstance(mmu, Fault) and mmu.code & (EC_P | EC_RSVD) == want
    return isinstance(mmu, Translation) and mmu.pa == x


@pytest.mark.parametrize("space", CONFIGS, indirect=True)
def test_every_single_bit_of_every_entry(space: Scenario) -> None:
    """Each of the 64 bits set or cleared in each entry of a 4K, a 2M and a 1G path (in a table
    entry, the address bits below MAXPHYADDR only while they stay out of RAM): the MMU
    faults exactly where the architecture's view rejects an entry (RSVD exactly for reserved
    bits) and translates where it says a leaf maps."""
    sc = space
    ops = sc.ops
    assert isinstance(ops, X86_64)
    b = sc.builder
    b.set_entry(BASE, "pte", (b.alloc_folio(0).pfn << 12) | LEAF)
    b.set_entry(BASE + (2 << 20), "pmd", (b.alloc_folio(9).pfn << 12) | LEAF | PS)
    b.set_entry(BASE + GIB, "pud", (b.alloc_folio(18).pfn << 12) | LEAF | PS)
    paths = [(BASE, "pte"), (BASE + (2 << 20), "pmd"), (BASE + GIB, "pud")]
    levels = [lv.linux for lv in ops.config.levels]
    machine = sc.oracle.machine
    sc.oracle.attach(sc.mm)

    def read(pa: int) -> int | None:
        return sc.ram.read_u64(pa) if sc.ram.contains(pa, 8) else None

    checked = 0
    for va, last in paths:
        for linux in levels[: levels.index(last) + 1]:
            pa = b.entry_pa(va, linux, create=False)
            good = sc.ram.read_u64(pa)
            for bit in range(64):
                if linux != last and 12 <= bit < 40:
                    continue  # another table, not another entry (and the MMU would set A bits there)
                sc.ram.write_u64(pa, good ^ 1 << bit)
                saved = sc.ram.snapshot(b.tables)
                probe_va = va + 0x1238
                kind, _where, x = sdm_walk(ops, read, sc.mm.pgd, probe_va)
                mmu = machine.probe(probe_va)
                sc.ram.restore(saved)
                assert kind != "outside" and agrees(kind, x, mmu), (linux, bit, hex(good ^ 1 << bit), kind, x, mmu)
                checked += 1
            sc.ram.write_u64(pa, good)
    # 64 bits of each leaf, 36 of each table entry above it (bits 11:0 and 63:40).
    assert checked == sum(64 + 36 * levels.index(last) for _va, last in paths)


@pytest.mark.parametrize("key", CONFIGS)
def test_view_predicts_the_mmu_on_random_hierarchies(key: str) -> None:
    """On the fuzzer's hierarchies (every kind of entry, hostile pointers, noise) the walk by the
    architecture's view alone gives the MMU's answer for every address, and every verdict that
    names a rejected entry names the one that walk stops at."""
    gen = HierarchyGenerator(key)
    stats = {"reject": 0, "leaf": 0, "outside": 0, "named": 0}
    with Target(key) as t:

        def read(pa: int) -> int | None:
            return t.sc.ram.read_u64(pa) if t.sc.ram.contains(pa, 8) else None

        for i in range(12):
            ev = t.evaluate(gen.generate(20240, i))
            # The tables as the MMU read them: with the probe machine's root slot 511, which a
            # hostile pointer to the root can reach as a lower-level entry (hierarchy 2 does).
            t.sc.oracle.attach(t.sc.mm)
            for k, va in enumerate(ev.addrs):
                assert isinstance(t.ops, X86_64)
                kind, where, x = sdm_walk(t.ops, read, t.layout.root, va)
                stats[kind] += 1
                if kind == "outside":
                    continue
                assert agrees(kind, x, ev.probes[k]), (i, hex(va), kind, x, ev.probes[k])
                for v in ev.verdicts[k]:
                    if "is rejected by the architecture" in v:
                        assert kind == "reject" and f" at {where:#x} is rejected" in v, (v, kind, hex(where))
                        stats["named"] += 1
    assert stats["reject"] > 100 and stats["leaf"] > 100 and stats["named"] > 50, stats
