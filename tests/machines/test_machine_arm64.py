"""arm64 machine: Unicorn's MMU against hand-built VMSAv8-64 descriptors (Arm ARM DDI 0487, D8).

Every expectation here comes from raw descriptor bits written by the tests themselves (the
``Tables`` helper below knows only the architecture's geometry), never from the module's helpers.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from unicorn import UC_HOOK_INTR

from emu.errors import AddressError, ConfigError, MemoryLayoutError
from emu.machines import arm64
from emu.machines.arm64 import DEVIATIONS, Arm64Machine
from emu.machines.arm64 import machine as arm64_machine
from emu.machines.base import READ, WRITE, Access, Fault, ProbeError, Translation
from emu.machines.ram import FrameAllocator, PhysicalMemory

# -- raw descriptor bits (Arm ARM D8 "Translation table descriptor formats") -------------------
VALID = 1 << 0
TABLE = 0b11  # levels 0-2: next-level table
PAGE = 0b11  # level 3: page
BLOCK = 0b01  # levels 1/2 (4K), 2 (16K/64K): block
AF = 1 << 10
AP1_EL0 = 1 << 6  # AP[1]: EL0 access
AP2_RO = 1 << 7  # AP[2]: read-only
CONT = 1 << 52
PXN = 1 << 53
UXN = 1 << 54
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
APTABLE_NO_EL0 = 1 << 61  # APTable[0]
APTABLE_RO = 1 << 62  # APTable[1]

USER_READ = Access("read", user=True)
USER_WRITE = Access("write", user=True)
FETCH = Access("fetch")
USER_FETCH = Access("fetch", user=True)

SHIFT = {4096: 12, 16384: 14, 65536: 16}
CONFIGS = [(4096, 39), (4096, 48), (16384, 36), (16384, 47), (65536, 42), (65536, 48)]


def fst(kind: str, level: int) -> int:
    """FST per D19 PAR_EL1 / ESR_ELx: 0b0001LL translation, 0b0010LL AF, 0b0011LL permission."""
    return {"address-size": 0b0000, "translation": 0b0001, "access-flag": 0b0010, "permission": 0b0011}[
        kind
    ] << 2 | level


class Tables:
    """Hand-built stage-1 tables for one granule / VA size (geometry from Arm ARM D8 only)."""

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, granule: int, va_bits: int) -> None:
        self.ram, self.alloc, self.granule, self.va_bits = ram, alloc, granule, va_bits
        self.shift = SHIFT[granule]
        self.bits = self.shift - 3  # 8-byte entries per granule-sized table
        levels = -(-(va_bits - self.shift) // self.bits)
        self.start = 4 - levels
        root_bytes = max(8 << (va_bits - self.level_shift(self.start)), 64)
        self.roots = {0: alloc.alloc(root_bytes), 1: alloc.alloc(root_bytes)}
        for root in self.roots.values():
            ram.write(root, bytes(root_bytes))

    def level_shift(self, level: int) -> int:
        return self.shift + self.bits * (3 - level)

    def index(self, va: int, level: int) -> int:
        width = self.va_bits - self.level_shift(level) if level == self.start else self.bits
        return (va >> self.level_shift(level)) & ((1 << width) - 1)

    def entry_pa(self, va: int, level: int) -> int:
        """Physical address of the level-``level`` entry for ``va`` (tables must exist)."""
        table = self.roots[va >> 63]
        for lvl in range(self.start, level):
            desc = self.ram.read_u64(table + 8 * self.index(va, lvl))
            assert desc & 3 == TABLE, f"no table at level {lvl} for {va:#x}"
            table = desc & ((1 << 48) - 1) & ~(self.granule - 1)
        return table + 8 * self.index(va, level)

    def map(self, va: int, pa: int, level: int = 3, attrs: int = AF, table_attrs: int = 0) -> int:
        """Map ``va`` at ``level`` (page at 3, block above) with raw ``attrs``; returns entry PA."""
        table = self.roots[va >> 63]
        for lvl in range(self.start, level):
            slot = table + 8 * self.index(va, lvl)
            desc = self.ram.read_u64(slot)
            if desc & 3 != TABLE:
                nxt = self.alloc.alloc(self.granule)
                self.ram.write(nxt, bytes(self.granule))
                desc = nxt | TABLE
            self.ram.write_u64(slot, desc | table_attrs)
            table = desc & ((1 << 48) - 1) & ~(self.granule - 1)
        slot = table + 8 * self.index(va, level)
        self.ram.write_u64(slot, pa | (PAGE if level == 3 else BLOCK) | attrs)
        return slot


def machine(granule: int = 4096, va_bits: int = 48, ram_size: int = 32 << 20):
    ram = PhysicalMemory(ram_size)
    alloc = FrameAllocator(ram)
    m = Arm64Machine(ram, alloc, granule=granule, va_bits=va_bits)
    t = Tables(ram, alloc, granule, va_bits)
    m.set_roots(t.roots[0], t.roots[1])
    return m, t, ram, alloc


def high(va_bits: int, offset: int) -> int:
    """A TTBR1 address: bits [63:va_bits] all ones."""
    return ((1 << 64) - (1 << va_bits)) | offset


# -- set-up ----------------------------------------------------------------------------------------
def test_guest_code_disassembles_as_intended():
    import capstone
    m, *_ = machine()
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    code = m.ram.read(m.code_pa, 0x600)

    def dis(off: int, n: int) -> list[str]:
        return [f"{i.mnemonic} {i.op_str}".strip() for i in md.disasm(code[off : off + 4 * n], off)]

    assert dis(0x00, 2) == ["at s1e1r, x1", "mrs x2, par_el1"]
    assert dis(0x10, 1) == ["at s1e1w, x1"]
    assert dis(0x20, 1) == ["at s1e0r, x1"]
    assert dis(0x30, 1) == ["at s1e0w, x1"]
    assert dis(0x40, 1) == ["at s1e1rp, x1"]  # FEAT_PAN2 (C5.5)
    assert dis(0x50, 1) == ["at s1e1wp, x1"]
    assert dis(0x100 + 0x40 * 5 + 4, 1) == ["at s1e1wp, x1"]
    loop = dis(0x100, 6)
    assert loop[:5] == ["ldr x1, [x0]", "at s1e1r, x1", "mrs x2, par_el1", "str x2, [x0], #8",
                        "subs x3, x3, #1"]
    assert loop[5] == "b.ne #0x100"
    assert dis(0x100 + 0x40 * 3 + 4, 1) == ["at s1e0w, x1"]
    assert dis(0x300, 1) == ["eret"]
    assert dis(0x400, 2) == ["ldr x2, [x1]", "brk #0"]
    assert [dis(off, 2) for off in (0x500, 0x510, 0x520, 0x530)] == [
        ["ldr x2, [x1]", "brk #0"], ["str x2, [x1]", "brk #0"], ["ldtr x2, [x1]", "brk #0"],
        ["sttr x2, [x1]", "brk #0"]]


def test_tcr_values_match_oracle_notes():
    # ORACLE-NOTES working values (4K/16K/64K, 48-bit, both halves, IPS 48).
    assert arm64.tcr_el1_value(4096, 48) == 0x580100010
    assert arm64.tcr_el1_value(16384, 48) == 0x540108010
    assert arm64.tcr_el1_value(65536, 48) == 0x5C0104010
    # "4K/48-bit TTBR0-only 0x580990010": same but EPD1; its T1SZ (25) is irrelevant with EPD1.
    t1sz = 0x3F << 16
    m, t, *_ = machine()
    m.set_roots(t.roots[0], None)
    assert m.registers()["TCR_EL1"] & ~t1sz == 0x580990010 & ~t1sz
    # Field by field from the D19 TCR_EL1 layout, for every supported configuration.
    for granule in (4096, 16384, 65536):
        for va_bits in range(36, 49):
            v = arm64.tcr_el1_value(granule, va_bits, epd1=True)
            assert v & 0x3F == 64 - va_bits and (v >> 16) & 0x3F == 64 - va_bits  # T0SZ, T1SZ
            assert (v >> 14) & 3 == {4096: 0, 65536: 1, 16384: 2}[granule]  # TG0
            assert (v >> 30) & 3 == {16384: 1, 4096: 2, 65536: 3}[granule]  # TG1
            assert (v >> 32) & 7 == 0b101 and not v & (1 << 7) and v & (1 << 23)  # IPS, EPD0/1


def test_registers_and_must_fix_setup():
    m, t, ram, alloc = machine()
    regs = m.registers()
    assert set(regs) >= {"SCTLR_EL1", "TCR_EL1", "MAIR_EL1", "TTBR0_EL1", "TTBR1_EL1", "SCR_EL3"}
    assert regs["SCR_EL3"] & (1 << 10) and regs["SCR_EL3"] & 1  # RW, NS
    assert regs["HCR_EL2"] & (1 << 31)  # RW
    assert regs["SCTLR_EL1"] & 1  # M
    assert regs["MAIR_EL1"] == 0xFF
    assert (regs["TTBR0_EL1"], regs["TTBR1_EL1"]) == (t.roots[0], t.roots[1])
    # The MUST-FIX still matters: with SCR_EL3.RW = 0 EL1 is AArch32 and its tables are walked in
    # the 3-level LPAE format, so a 4-level mapping breaks (ORACLE-NOTES arm64).
    t.map(0x5000, 0x300000)
    assert m.probe(0x5000) == Translation(0x305000 - 0x5000, "at")
    scr = regs["SCR_EL3"]
    m.uc.cpr_write(3, 6, 1, 1, 0, scr & ~(1 << 10))
    m.flush_tlb()
    assert m.probe(0x5000) == Fault("translation", 3, fst("translation", 3), 0)
    m.uc.cpr_write(3, 6, 1, 1, 0, scr)
    m.flush_tlb()
    assert m.probe(0x5000) == Translation(0x300000, "at")


def test_bad_configurations_raise_config_error():
    ram = PhysicalMemory(8 << 20)
    alloc = FrameAllocator(ram)
    for kwargs in ({"granule": 8192}, {"va_bits": 35}, {"va_bits": 49}, {"va_bits": 52},
                   {"granule": 16384, "va_bits": 30}, {"timeout_us": 0}):
        with pytest.raises(ConfigError):
            Arm64Machine(ram, alloc, **kwargs)


def test_set_roots_validates_alignment_and_range():
    m, t, ram, alloc = machine()
    with pytest.raises(AddressError):
        m.set_roots(t.roots[0] + 8, None)
    with pytest.raises(MemoryLayoutError):
        m.set_roots(ram.size, None)
    with pytest.raises(AddressError):
        m.probe(-1)


# -- translation: pages and blocks, both halves ----------------------------------------------------
@pytest.mark.parametrize("granule,va_bits", CONFIGS)
def test_pages_and_blocks_translate(granule, va_bits):
    m, t, ram, alloc = machine(granule, va_bits)
    rng = random.Random(granule + va_bits)
    cases = []  # (va, expected pa)
    page_pa = alloc.alloc(granule)
    lo = 7 << t.shift
    t.map(lo, page_pa)
    hi = high(va_bits, 9 << t.shift)
    t.map(hi, page_pa)
    for off in (0, 0x123, granule - 8, rng.randrange(granule)):
        cases += [(lo + off, page_pa + off), (hi + off, page_pa + off)]
    # Blocks: 4K level 1 (1G) and level 2 (2M); 16K level 2 (32M); 64K level 2 (512M).
    block_levels = [1, 2] if granule == 4096 else [2]
    for level in block_levels:
        if level < t.start:
            continue
        size = 1 << t.level_shift(level)
        out = 5 * size  # PA beyond RAM: AT reports it without touching memory
        for va in (3 * size, high(va_bits, 2 * size)):
            t.map(va, out, level)
            for off in (0, 0x1234 & (size - 1), size - 8, rng.randrange(size) & ~7):
                cases.append((va + off, out + off))
    for va, pa in cases:
        for acc in (READ, WRITE, FETCH):
            assert m.probe(va, acc) == Translation(pa, "at"), (hex(va), acc)
    vas = [va for va, _ in cases]
    assert m.probe_many(vas) == [Translation(pa, "at") for _, pa in cases]


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_every_va_size_translates_both_halves(granule):
    for va_bits in range(36, 49):
        m, t, ram, alloc = machine(granule, va_bits, ram_size=8 << 20)
        pa = alloc.alloc(granule)
        top = (1 << va_bits) - granule  # the last page of each half
        t.map(top, pa)
        t.map(high(va_bits, top), pa)
        assert m.probe_many([top + 8, high(va_bits, top + 8)]) == [Translation(pa + 8, "at")] * 2
        # one address past the low half, and one below the high half: the gap (level 0 fault)
        gap = [1 << va_bits, high(va_bits, 0) - 8]
        assert m.probe_many(gap) == [Fault("translation", 0, fst("translation", 0), 0)] * 2


def test_page_offsets_above_4k_come_from_the_mmu():
    # PAR_EL1.PA holds PA[47:12]; with 16K/64K granules bits 15:12 of the offset must still be right.
    for granule in (16384, 65536):
        m, t, ram, alloc = machine(granule, 48)
        pa = alloc.alloc(granule)
        t.map(0x40 << t.shift, pa)
        for off in (0x1000, 0x2ABC, granule - 0x10):
            assert m.probe((0x40 << t.shift) + off) == Translation(pa + off, "at")


def test_big_blocks_in_big_ram_reach_the_tagged_word():
    """2 GiB+ sparse RAM: a real EL1 load through 1G / 512M / 32M blocks reads the tag of the PA
    that AT reports."""
    for granule, level, block in ((4096, 1, 1 << 30), (4096, 2, 2 << 20), (65536, 2, 512 << 20),
                                  (16384, 2, 32 << 20)):
        m, t, ram, alloc = machine(granule, 48, ram_size=3 << 30)
        out = alloc.alloc(block, block)
        va = 0x12 * block if level == 2 or granule != 4096 else 0x42 * block
        t.map(va, out, level)
        code_va = 0x7F << t.shift
        t.map(code_va, m.code_pa)  # EL1-executable page holding the load stub
        stub_va = code_va + (m.load_stub_pa - m.code_pa)
        for off in (0, block // 3 & ~0xFFF, block - 0x1000):
            ram.tag(out + off, 0x1000)
            addr = va + off + 0x238
            at = m.probe(addr)
            assert at == Translation(out + off + 0x238, "at")
            word = m.load_u64(addr, stub_va=stub_va)
            assert isinstance(word, int) and ram.tagged_pa(word, addr) == at.pa


# -- faults -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("granule,va_bits", CONFIGS)
def test_translation_fault_at_each_level(granule, va_bits):
    m, t, ram, alloc = machine(granule, va_bits)
    va = (0x5 << t.level_shift(t.start)) % (1 << va_bits) | (0x3 << t.shift)
    t.map(va, alloc.alloc(granule))
    assert isinstance(m.probe(va), Translation)
    for level in range(3, t.start - 1, -1):  # knock out the entry at each level, deepest first
        ram.write_u64(t.entry_pa(va, level), 0)
        expect = Fault("translation", level, fst("translation", level), 0)
        assert m.probe(va) == expect
        assert m.probe(va, USER_WRITE) == expect
        assert m.probe(va, FETCH) == Fault("translation", level, fst("translation", level), 3)


def test_access_flag_fault_at_its_level():
    m, t, ram, alloc = machine(4096, 48)
    cases = [(0x1000, 3), (0x4000_0000 + 0x20_0000, 2), (0x80_0000_0000, 1)]
    for va, level in cases:
        slot = t.map(va, 0x4000_0000 if level < 3 else alloc.alloc(4096), level, attrs=0)
        expect = Fault("access-flag", level, fst("access-flag", level), 0)
        for acc in (READ, WRITE, USER_READ, USER_WRITE):
            assert m.probe(va + 0x10, acc) == expect
        assert m.probe(va, FETCH) == Fault("access-flag", level, fst("access-flag", level), 3)
        ram.write_u64(slot, ram.read_u64(slot) | AF)
        assert isinstance(m.probe(va + 0x10), Translation)  # the probe flushed the TLB


def test_reserved_level3_encoding_faults():
    m, t, ram, alloc = machine()
    slot = t.map(0x3000, alloc.alloc(4096))
    ram.write_u64(slot, ram.read_u64(slot) & ~2)  # bits[1:0] = 0b01 at level 3: reserved
    assert m.probe(0x3000) == Fault("translation", 3, fst("translation", 3), 0)


def test_disabled_half_and_gap_fault_at_level_0():
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    t.map(0x6000, pa)
    t.map(high(48, 0x6000), pa)
    m.set_roots(t.roots[0], None)  # EPD1
    l0 = Fault("translation", 0, fst("translation", 0), 0)
    assert m.probe_many([0x6000, high(48, 0x6000), 0x0001_0000_0000_6000]) == [
        Translation(pa, "at"), l0, l0]
    m.set_roots(None, t.roots[1])  # EPD0
    assert m.probe_many([0x6000, high(48, 0x6000)]) == [l0, Translation(pa, "at")]
    m.set_roots(None, None)
    assert m.probe(high(48, 0x6000), FETCH) == Fault("translation", 0, 4, 3)


# Arm ARM D8 "Data access permissions", AP[2:1] for the EL1&0 regime: (EL1, EL0) access.
AP_TABLE = {0b00: ("rw", ""), 0b01: ("rw", "rw"), 0b10: ("r", ""), 0b11: ("r", "r")}


@pytest.mark.parametrize("granule", [4096, 65536])
def test_ap_data_permissions_at_el1_and_el0(granule):
    m, t, ram, alloc = machine(granule, 48)
    pa = alloc.alloc(granule)
    for ap, (el1, el0) in AP_TABLE.items():
        va = (0x10 + ap) << t.shift
        t.map(va, pa, attrs=AF | ap << 6)
        for acc, allowed in ((READ, "r" in el1), (WRITE, "w" in el1), (USER_READ, "r" in el0),
                             (USER_WRITE, "w" in el0)):
            expect = Translation(pa + 8, "at") if allowed else Fault("permission", 3, fst("permission", 3), 0)
            assert m.probe(va + 8, acc) == expect, (ap, acc)
            assert m.probe_many([va + 8], acc) == [expect]


def test_execute_permissions_from_real_fetches():
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    perm3 = Fault("permission", 3, fst("permission", 3), 3)
    ok = Translation(pa, "at")
    rows = [  # (attrs, EL1 fetch, EL0 fetch) -- Arm ARM D8 "Instruction execution permissions"
        (AF, ok, ok),  # AP=00: EL0 has no data access, but EL0 may still execute (execute-only)
        (AF | PXN, perm3, ok),
        (AF | UXN, ok, perm3),
        (AF | PXN | UXN, perm3, perm3),
        (AF | AP1_EL0, perm3, ok),  # writable at EL0 => treated as PXN at EL1
        (AF | AP1_EL0 | AP2_RO, ok, ok),  # read-only at EL0: not implicitly PXN
    ]
    for i, (attrs, el1, el0) in enumerate(rows):
        va = (0x20 + i) << 12
        t.map(va, pa, attrs=attrs)
        assert m.probe(va, FETCH) == el1, i
        assert m.probe(va, USER_FETCH) == el0, i
        assert m.probe_many([va, va], FETCH) == [el1, el1]
        assert isinstance(m.probe(va), Translation)  # AT ignores execute permission


def test_hierarchical_table_permissions():
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    perm = Fault("permission", 3, fst("permission", 3), 0)
    ok = Translation(pa, "at")
    # Each case gets its own level-0 subtree (512 GiB apart) so the table attributes do not mix.
    cases = [
        (APTABLE_NO_EL0, {READ: ok, WRITE: ok, USER_READ: perm, USER_WRITE: perm}),
        (APTABLE_RO, {READ: ok, WRITE: perm, USER_READ: ok, USER_WRITE: perm}),
    ]
    for i, (tattr, expect) in enumerate(cases):
        va = (i + 1) << 39
        t.map(va, pa, attrs=AF | AP1_EL0, table_attrs=tattr)
        for acc, res in expect.items():
            assert m.probe(va, acc) == res, (hex(tattr), acc)
    # PXNTable / UXNTable: execute-never for everything below (real fetches).
    va = 3 << 39
    t.map(va, pa, attrs=AF, table_attrs=PXN_TABLE)
    assert m.probe(va, FETCH) == Fault("permission", 3, fst("permission", 3), 3)
    assert m.probe(va, USER_FETCH) == ok
    va = 4 << 39
    t.map(va, pa, attrs=AF, table_attrs=UXN_TABLE)
    assert m.probe(va, FETCH) == ok
    assert m.probe(va, USER_FETCH) == Fault("permission", 3, fst("permission", 3), 3)


def test_fetch_and_load_faults_in_a_row_each_come_back():
    m, t, ram, alloc = machine()
    code_va = 0x7000
    t.map(code_va, m.code_pa)
    stub = code_va + (m.load_stub_pa - m.code_pa)
    t.map(0x9000, alloc.alloc(4096), attrs=0)  # AF fault
    assert [m.probe(0x8000, FETCH) for _ in range(100)] == [Fault("translation", 3, 7, 3)] * 100
    assert [m.load_u64(0x9000, stub_va=stub) for _ in range(100)] == [Fault("access-flag", 3, 11, 4)] * 100
    assert [m.load_u64(0x8000, stub_va=stub) for _ in range(3)] == [Fault("translation", 3, 7, 4)] * 3


def test_misaligned_fetch_probes_its_page():
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    t.map(0x5000, pa)
    t.map(0x6000, pa, attrs=AF | PXN)
    assert m.probe(0x5002, FETCH) == Translation(pa + 2, "at")
    assert m.probe(0x6ffe, FETCH) == Fault("permission", 3, fst("permission", 3), 3)


def test_host_pstate_write_needs_a_cp_reg_write_to_take_effect():
    """ORACLE-NOTES: PSTATE from the host leaves QEMU's cached hflags (EL, MMU index) stale until
    a CP_REG write; the machine relies on this when it returns to EL3 after a real fetch."""
    from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_X1

    m, t, ram, alloc = machine()
    t.map(0x5000, alloc.alloc(4096))
    assert isinstance(m.probe(0x5000, FETCH), Translation)  # the fetch engine is now at EL1
    fx = m._fx
    assert fx is not None
    fx.reg_write(UC_ARM64_REG_PSTATE, arm64.PSTATE_EL3H)
    fx.reg_write(UC_ARM64_REG_X1, 0x5000)
    m._fx_state.clear()
    fx.emu_start(m.code_pa, m.code_pa + 8, count=4)  # EL3 code, but fetched with EL1's MMU
    assert m._fx_state.get("intno") == 3 and fx.reg_read(UC_ARM64_REG_PC) == m.code_pa
    fx.reg_write(UC_ARM64_REG_PSTATE, arm64.PSTATE_EL3H)
    fx.cpr_write(3, 0, 10, 2, 0, 0xFF)  # any CP_REG write (MAIR_EL1, unchanged) refreshes hflags
    m._fx_state.clear()
    fx.emu_start(m.code_pa, m.code_pa + 8, count=4)
    assert "intno" not in m._fx_state and fx.reg_read(UC_ARM64_REG_PC) == m.code_pa + 8


def test_fetch_of_a_pa_outside_ram_translates():
    m, t, ram, alloc = machine()
    t.map(0x5000, ram.size + 0x10_0000)
    assert m.probe(0x5000, FETCH) == Translation(ram.size + 0x10_0000, "at")


def test_user_load_agrees_with_at_s1e0r():
    m, t, ram, alloc = machine()
    code_va = 0x7000
    t.map(code_va, m.code_pa, attrs=AF | AP1_EL0 | AP2_RO)  # EL0 may execute the stub
    stub = code_va + (m.load_stub_pa - m.code_pa)
    pa = alloc.alloc(4096)
    ram.tag(pa, 4096)
    for ap in range(4):
        va = (0x30 + ap) << 12
        t.map(va, pa, attrs=AF | ap << 6)
        at = m.probe(va + 0x40, USER_READ)
        word = m.load_u64(va + 0x40, stub_va=stub, user=True)
        if isinstance(at, Translation):
            assert isinstance(word, int) and ram.tagged_pa(word, va + 0x40) == at.pa
        else:
            assert word == Fault(at.kind, at.level, at.code, 4)


def test_tlb_is_flushed_between_probes():
    m, t, ram, alloc = machine()
    a, b = alloc.alloc(4096), alloc.alloc(4096)
    slot = t.map(0x5000, a)
    assert m.probe(0x5000, FETCH) == Translation(a, "at")
    ram.write_u64(slot, b | PAGE | AF)
    assert m.probe(0x5000, FETCH) == Translation(b, "at")
    assert m.probe(0x5000) == Translation(b, "at")


# -- the batch probe ------------------------------------------------------------------------------
def mixed_world():
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    vas = []
    for i, attrs in enumerate([AF, AF | AP2_RO, AF | AP1_EL0, AF | AP1_EL0 | AP2_RO, 0, AF | PXN, AF | UXN]):
        t.map((0x100 + i) << 12, pa, attrs=attrs)
        vas += [(0x100 + i) << 12, ((0x100 + i) << 12) + 0xFF8]
    t.map(0x4000_0000, 0x8000_0000, level=2)
    t.map(0x8000_0000, 0xC000_0000, level=1, attrs=AF | AP2_RO)
    t.map(high(48, 0x3000), pa)
    vas += [0x4000_0000 + 0x12345, 0x8000_0000 + 0x1234567, high(48, 0x3010), high(48, 0x9000),
            0x120000, 0x5000_0000, 0x10_0000_0000, 0x0001_0000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 0]
    return m, t, vas


@pytest.mark.parametrize("access", [READ, WRITE, USER_READ, USER_WRITE, FETCH, USER_FETCH], ids=str)
def test_probe_many_equals_probe_on_a_mixed_set(access):
    m, t, vas = mixed_world()
    single = [m.probe(va, access) for va in vas]
    assert m.probe_many(vas, access) == single
    assert m.probe_many(np.array(vas, dtype=np.uint64), access) == single
    kinds = {type(r).__name__ for r in single}
    assert "Translation" in kinds and "Fault" in kinds


@pytest.mark.parametrize("access", [FETCH, USER_FETCH], ids=str)
def test_probe_fetch_many_over_chunks_equals_probe(access):
    """Batched real fetches (the hooks move the PC from target to target) give what one fetch
    per emu_start gives, also across chunk boundaries and with VA 0 (the stop address)."""
    m, t, vas = mixed_world()
    single = [m.probe(va, access) for va in vas]
    m.chunk = 5
    assert m.probe_fetch_many(vas * 3, access.user) == single * 3


def test_probe_access_many_agrees_with_at():
    """Real EL1 LDR/STR/LDTR/STTR in one emu_start (the hooks move X1) fault and translate as
    AT S1E1R/S1E1W/S1E0R/S1E0W say -- LDTR/STTR with EL0's permissions (C6 "LDTR"/"STTR") --
    over pages of every AP[2:1], AF=0 and invalid; a load reaches the tagged word; a store of the
    word itself leaves memory as it was; chunk boundaries change nothing."""
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    ram.tag(pa, 4096)
    t.map(0x40_0000, m.code_pa, attrs=AF | AP2_RO)  # the stubs: EL1 read-only code
    rng = random.Random(3)
    vas = []
    for j in range(1, 120):
        attrs = rng.choice([AF, AF | AP1_EL0, AF | AP2_RO, AF | AP1_EL0 | AP2_RO, AP1_EL0])
        t.map(j << 12, pa, attrs=attrs)
        vas.append((j << 12) + 0x80)
    vas.append(0x7F_0000)  # not mapped: Translation fault
    m.chunk = 50
    word = ram.read_u64(pa + 0x80)
    for insn, access in (("LDR", READ), ("STR", WRITE), ("LDTR", USER_READ), ("STTR", USER_WRITE)):
        at = m.probe_many(vas, access)
        real = m.probe_access_many(vas, insn, stub_va=0x40_0000, store_value=word)
        for va, a, r in zip(vas, at, real, strict=True):
            if isinstance(a, Translation):
                assert isinstance(r, Translation) and r.pa == a.pa, (insn, hex(va), r)
            else:
                assert r == Fault(a.kind, a.level, a.code, 4), (insn, hex(va), r)
    assert ram.read_u64(pa + 0x80) == word
    with pytest.raises(ConfigError):
        m.probe_access_many(vas, "LDP", stub_va=0x40_0000)


def test_set_pan_needs_the_feature_and_reaches_at_s1e1rp():
    m, t, ram, alloc = machine()  # Cortex-A72: ARMv8.0, no PAN
    with pytest.raises(ConfigError, match="PAN = 0"):
        m.set_pan(True)
    from unicorn.arm64_const import UC_CPU_ARM64_MAX

    ram = PhysicalMemory(4 << 20)
    alloc = FrameAllocator(ram)
    m = Arm64Machine(ram, alloc, cpu_model=UC_CPU_ARM64_MAX)
    t = Tables(ram, alloc, 4096, 48)
    m.set_roots(t.roots[0], None)
    pa = alloc.alloc(4096)
    t.map(0x1000, pa, attrs=AF | AP1_EL0)  # EL0 read/write: PAN forbids EL1 data accesses
    m.set_pan(True)
    assert m.probe(0x1000) == Fault("permission", 3, fst("permission", 3), 0)  # AT S1E1RP
    assert m.probe(0x1000, FETCH) == Fault("permission", 3, fst("permission", 3), 3)  # EL0-writable: PXN
    m.set_pan(True, at_pan=False)
    assert m.probe(0x1000) == Translation(pa, "at")  # AT S1E1R: no PAN check
    m.set_pan(False, at_pan=True)
    assert m.probe(0x1000) == Translation(pa, "at")  # AT S1E1RP with PSTATE.PAN = 0


def test_probe_many_pipelined_chunks_equal_probe():
    m, t, vas = mixed_world()
    m.chunk = 1024  # force the pipelined path over several chunks
    many = vas * 150
    random.Random(1).shuffle(many)
    expect = {va: m.probe(va) for va in vas}
    assert m.probe_many(many) == [expect[va] for va in many]
    pars, errors = m.probe_many_par(many)
    assert not errors and len(pars) == len(many)


@pytest.mark.parametrize("access", [READ, WRITE, USER_READ, USER_WRITE], ids=str)
def test_probe_many_raw_decodes_to_probe_many(access, monkeypatch):
    """The raw columns (status, pa, FST) and {index: ProbeError} hold exactly probe_many's
    answers: translations, every fault of the mixed set, and addresses a budget cut off."""
    from emu.machines.base import RAW_ERROR, RAW_FAULT, RAW_OBSERVED

    m, t, vas = mixed_world()
    m.chunk = 16  # several chunks
    many = vas * 3
    want = m.probe_many(many, access)
    raw, errors = m.probe_many_raw(many, access)
    assert raw.results(errors) == want and not errors
    for i, r in enumerate(want):
        if isinstance(r, Translation):
            assert (int(raw.status[i]), int(raw.pa[i])) == (RAW_OBSERVED, r.pa)
        else:
            assert (int(raw.status[i]), int(raw.code[i])) == (RAW_FAULT, r.code)
    monkeypatch.setattr(arm64_machine, "BATCH_INSNS", 2)  # budget for about a third of the loop
    raw, errors = m.probe_many_raw(many, access)
    assert errors and raw.results(errors) == m.probe_many(many, access)
    assert set(errors) == set(np.flatnonzero(raw.status == RAW_ERROR).tolist())


def test_batch_of_10000_faulting_addresses():
    m, t, ram, alloc = machine()
    n = 10_000
    base = 0x40_0000_0000
    # L3 entries with AF = 0 for the first 5000 pages, nothing (translation fault) for the rest.
    t.map(base, alloc.alloc(4096), attrs=0)
    for i in range(1, 5000):
        t.map(base + (i << 12), alloc.alloc(4096) if i < 8 else 0x10_0000, attrs=0)
    vas = [base + (i << 12) + (i & 0xFF8) for i in range(n)]
    res = m.probe_many(vas)
    af3 = Fault("access-flag", 3, fst("access-flag", 3), 0)
    tr3 = Fault("translation", 3, fst("translation", 3), 0)
    tr2 = Fault("translation", 2, fst("translation", 2), 0)
    expect = []
    for i in range(n):
        if i < 5000:
            expect.append(af3)
        elif (base + (i << 12)) >> 21 == (base + (4999 << 12)) >> 21:
            expect.append(tr3)  # same L3 table as the mapped pages
        else:
            expect.append(tr2)
    assert res == expect
    assert res[::997] == [m.probe(va) for va in vas[::997]]


def test_batch_timeout_reports_unreached_addresses():
    m, t, vas = mixed_world()
    m.timeout_us = 1
    many = vas * 2000
    res = m.probe_many(many)
    expect = {va: m.probe(va) for va in vas}
    for va, r in zip(many, res, strict=True):
        assert r == expect[va] or (isinstance(r, ProbeError) and "stopped" in r.reason)


def test_batch_budget_exhausted_gives_probe_errors_not_wrong_answers(monkeypatch):
    m, t, vas = mixed_world()
    expect = [m.probe(va) for va in vas]
    monkeypatch.setattr(arm64_machine, "BATCH_INSNS", 2)  # budget for about a third of the loop
    res = m.probe_many(vas)
    done = [r for r in res if not isinstance(r, ProbeError)]
    assert 0 < len(done) < len(vas)
    assert res[: len(done)] == expect[: len(done)]
    assert all(isinstance(r, ProbeError) and "stopped after" in r.reason for r in res[len(done):])


def test_batch_api_edges():
    m, t, vas = mixed_world()
    assert m.probe_many([]) == []
    with pytest.raises(AddressError):
        m.probe_many([0x1000, -1])
    with pytest.raises(ConfigError):
        m.probe_many_par(vas, FETCH)
    pars, errors = m.probe_many_par(vas, WRITE)
    assert not errors and pars.dtype == np.uint64
    assert [bool(p & 1) for p in pars] == [isinstance(m.probe(va, WRITE), Fault) for va in vas]


# -- Unicorn deviations (each must still exist; DEVIATIONS holds the facts) -----------------------
def test_deviation_registry_is_complete():
    names = [d.name for d in DEVIATIONS]
    assert len(set(names)) == len(names) >= 5
    for d in DEVIATIONS:
        assert d.summary and "Arm ARM" in d.arm_arm_reference
        assert callable(globals().get(d.test)), f"{d.name}: no test {d.test}"


@pytest.mark.parametrize("granule,level", [(4096, 0), (16384, 0), (16384, 1), (65536, 1)])
def test_deviation_block_at_any_level(granule, level):
    m, t, ram, alloc = machine(granule, 48)
    size = 1 << t.level_shift(level)
    va = size  # index 1 at that level
    out = 0x40_0000_0000 & ~(size - 1)  # size-aligned (0 for the largest blocks)
    t.map(va, out, level)  # bits[1:0] = 0b01 where the architecture has no block descriptor
    r = m.probe(va + 0x5678)
    # Arm ARM: Translation fault at `level`.  Unicorn: a block of 2**level_shift bytes.
    assert r == Translation(out + 0x5678, "at")
    assert r != Fault("translation", level, fst("translation", level), 0)


def test_deviation_block_oa_ored():
    m, t, ram, alloc = machine()
    va = 0x4000_0000
    t.map(va, 0x20_0000 | 0x1000, level=2)  # 2M block with RES0 bit 12 set in the OA field
    # Arm ARM: PA = OA[47:21]:VA[20:0] = 0x200234.  Unicorn ORs: 0x201000 | 0x234.
    assert m.probe(va + 0x234) == Translation(0x201234, "at")
    assert m.probe(va + 0x1234) == Translation(0x201234, "at")


def test_deviation_no_address_size_fault():
    m, t, ram, alloc = machine()
    parange = m.id_aa64mmfr0() & 0xF
    assert parange == 0b0100  # 44-bit PAs on this model; TCR.IPS says 48
    t.map(0x5000, 1 << 45)  # OA above the effective 44-bit PA size
    assert m.probe(0x5000) == Translation(1 << 45, "at")  # Arm ARM: Address size fault, level 3
    t.map(0x6000, (1 << 48) | 0x7000)  # descriptor bit 48: dropped
    assert m.probe(0x6000) == Translation(0x7000, "at")


def test_deviation_contiguous_ignored():
    m, t, ram, alloc = machine()
    base = 0x10_0000  # 16-entry aligned run of 4K pages
    pas = [alloc.alloc(4096) for _ in range(16)]
    for i in (0, 3, 7):  # a misprogrammed run: only some entries valid, unrelated OAs
        t.map(base + (i << 12), pas[i], attrs=AF | CONT)
    res = m.probe_many([base + (i << 12) for i in range(16)])
    for i in range(16):
        expect = Translation(pas[i], "at") if i in (0, 3, 7) else Fault("translation", 3, 7, 0)
        assert res[i] == expect


def test_deviation_txsz_clamped():
    m, t, ram, alloc = machine()
    pa = alloc.alloc(4096)
    t.map(0x5000, pa)
    tcr = m.registers()["TCR_EL1"]
    # T0SZ = 8 (56-bit VA, needs FEAT_LVA): behaves exactly as T0SZ = 16.
    m.set_sysreg("TCR_EL1", tcr & ~0x3F | 8)
    assert m.probe(0x5000) == Translation(pa, "at")
    assert m.probe(1 << 50) == Fault("translation", 0, 4, 0)
    # T0SZ = 48 (16-bit VA, needs FEAT_TTST): behaves as T0SZ = 39 -- a 25-bit VA, walk from
    # level 2, so TTBR0 is used as a level-2 table and 0x1_0000 (outside 16 bits) still walks.
    l2 = alloc.alloc(4096)
    l3 = alloc.alloc(4096)
    ram.write_u64(l2, l3 | TABLE)
    ram.write_u64(l3 + 8 * 0x10, pa | PAGE | AF)
    m.set_sysreg("TCR_EL1", tcr & ~0x3F | 48)
    m.set_sysreg("TTBR0_EL1", l2)
    assert m.probe(0x10000) == Translation(pa, "at")
    assert m.probe(1 << 25) == Fault("translation", 0, 4, 0)


def test_deviation_tgran16_unimplemented_but_used():
    m, t, ram, alloc = machine(16384, 47)
    assert (m.id_aa64mmfr0() >> 20) & 0xF == 0  # TGran16: 16KB granule not implemented
    pa = alloc.alloc(16384)
    t.map(0x4000 * 5, pa)
    assert m.probe(0x4000 * 5 + 0x3210) == Translation(pa + 0x3210, "at")


def test_deviation_walk_outside_ram_reads_zero():
    m, t, ram, alloc = machine()
    va = 0x40_0000_0000
    t.map(va, 0x1000)
    l1_slot = t.entry_pa(va, 1)
    ram.write_u64(l1_slot, (ram.size + 0x10_0000) | TABLE)  # level-2 table beyond RAM
    # A real system: Synchronous External abort on the walk (FST 0b010110).  Unicorn: reads 0.
    assert m.probe(va) == Fault("translation", 2, fst("translation", 2), 0)


def test_unicorn_until_retranslation_artifact_still_exists():
    """Why fetch probes use until=0: with until=X Unicorn re-translates X-1 through the MMU after
    the run (in the regime the CPU ended in), and a fault there reaches the interrupt hook as a
    prefetch abort that never happened.  (Use a VA never fetched before: Unicorn also keeps a
    cached TB at X from an earlier run instead of its "stop here" stub.)"""
    from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE

    m, t, ram, alloc = machine()
    t.map(0x5000, alloc.alloc(4096))  # mapped and executable; 0x4000 (holding 0x4fff) is not
    fx = m._fetch_engine()
    seen = []
    fx.hook_add(UC_HOOK_INTR, lambda uc, n, d: seen.append(n))
    m._fx_state.clear()
    fx.reg_write(UC_ARM64_REG_PSTATE, arm64.PSTATE_EL3H)
    fx.cpr_write(3, 6, 4, 0, 0, arm64.SPSR_EL1H)  # SPSR_EL3
    fx.cpr_write(3, 6, 4, 0, 1, 0x5000)  # ELR_EL3
    m.flush_tlb()
    fx.emu_start(m.code_pa + 0x300, 0x5000, count=8)  # ERET, then stop at 0x5000
    assert fx.reg_read(UC_ARM64_REG_PC) == 0x5000  # the run itself reached 0x5000 fine ...
    assert seen == [3]  # ... yet a prefetch abort (for 0x4fff) was reported
