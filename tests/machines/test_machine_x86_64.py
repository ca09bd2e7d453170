"""X86_64Machine: Unicorn's MMU against page tables built here by hand.

Every expectation comes from raw entries written in this file per Intel SDM vol. 3 §4.5
(Tables 4-14 .. 4-20: P=bit 0, R/W=1, U/S=2, PS=7, XD=63, address bits 51:12) and the page-fault
error code of SDM vol. 3 §4.7 (Figure 4-12: P=0, W/R=1, U/S=2, RSVD=3, I/D=4) -- never from the
machine module's own helpers.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu.errors import AddressError, ConfigError
from emu.machines.base import (
    FETCH,
    RAW_ERROR,
    RAW_FAULT,
    RAW_OBSERVED,
    RAW_TAG,
    READ,
    WRITE,
    Access,
    Fault,
    ProbeError,
    Translation,
)
from emu.machines.ram import TAG, FrameAllocator, PhysicalMemory
from emu.machines.x86_64 import CHUNK, GUEST_CODE, GUEST_LABELS, GUEST_USER_CODE, X86_64Machine

# Raw entry bits (SDM vol. 3 §4.5).
P, RW, US, PWT, PCD, A, D, PS = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80
XD = 1 << 63
ADDR = 0x000F_FFFF_FFFF_F000
# Error code bits (SDM vol. 3 §4.7).
EC_P, EC_W, EC_U, EC_RSVD, EC_I = 1, 2, 4, 8, 16

U_READ = Access("read", user=True)
U_WRITE = Access("write", user=True)
U_FETCH = Access("fetch", user=True)


def pf(code: int) -> Fault:
    return Fault("page-fault", None, code, 14)


class Tables:
    """A hand-written x86-64 paging hierarchy in guest RAM (4 or 5 levels)."""

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, levels: int) -> None:
        self.ram, self.alloc, self.levels = ram, alloc, levels
        self.root = self.frame()

    def frame(self) -> int:
        pa = self.alloc.alloc(4096)
        self.ram.write(pa, bytes(4096))
        return pa

    @staticmethod
    def index(va: int, level: int) -> int:  # level 1 = PT ... 5 = PML5
        return (va >> (12 + 9 * (level - 1))) & 0x1FF

    def entry_addr(self, va: int, level: int, inter: int = P | RW | US) -> int:
        """Address of the level-``level`` entry for va, creating tables above it as needed."""
        table = self.root
        for lvl in range(self.levels, level, -1):
            ea = table + 8 * self.index(va, lvl)
            e = self.ram.read_u64(ea)
            if not e & P:
                nxt = self.frame()
                self.ram.write_u64(ea, nxt | inter)
                table = nxt
            else:
                table = e & ADDR
        return table + 8 * self.index(va, level)

    def map(
        self, va: int, pa: int, flags: int = P | RW, *, size: int = 4096, inter: int = P | RW | US
    ) -> int:
        level = {4096: 1, 2 << 20: 2, 1 << 30: 3}[size]
        ea = self.entry_addr(va, level, inter)
        self.ram.write_u64(ea, pa | flags | (PS if level > 1 else 0))
        return ea

    def set(self, va: int, level: int, value: int) -> None:
        self.ram.write_u64(self.entry_addr(va, level), value)

    def get(self, va: int, level: int) -> int:
        return self.ram.read_u64(self.entry_addr(va, level))


def make(levels: int = 4, ram_size: int = 64 << 20, **kw: Any) -> tuple[X86_64Machine, Tables]:
    ram = PhysicalMemory(ram_size)
    alloc = FrameAllocator(ram, reserved=[(0, 0x1000)])
    tables = Tables(ram, alloc, levels)
    machine = X86_64Machine(ram, alloc, levels=levels, **kw)
    machine.set_root(tables.root)
    return machine, tables


def data_frame(t: Tables, size: int = 4096, tag: bool = True) -> int:
    pa = t.alloc.alloc(size)
    if tag:
        t.ram.tag(pa, size)
    return pa


@pytest.fixture(params=[4, 5], ids=["4-level", "5-level"])
def m4(request: pytest.FixtureRequest) -> tuple[X86_64Machine, Tables]:
    return make(request.param)


# -- configuration ---------------------------------------------------------------------------
def test_levels_must_be_4_or_5() -> None:
    ram = PhysicalMemory(16 << 20)
    with pytest.raises(ConfigError, match="4 levels"):
        X86_64Machine(ram, FrameAllocator(ram), levels=3)


def test_probe_before_set_root_is_a_config_error() -> None:
    ram = PhysicalMemory(16 << 20)
    machine = X86_64Machine(ram, FrameAllocator(ram))
    with pytest.raises(ConfigError, match="set_root"):
        machine.probe(0x1000)


def test_guest_code_is_what_the_labels_say() -> None:
    cs = Cs(CS_ARCH_X86, CS_MODE_64)

    def insn(label: str) -> str:
        off = GUEST_LABELS[label]
        i = next(cs.disasm(GUEST_CODE[off : off + 16], off))
        return f"{i.mnemonic} {i.op_str}".strip()

    assert insn("stub") == "sysretq"
    assert insn("p_read.access") == "mov rax, qword ptr [rbx]"
    assert insn("p_write.load") == "mov rax, qword ptr [r8]"
    assert insn("p_write.store") == "mov qword ptr [rbx], rax"
    assert insn("p_fetch") == "jmp rbx"
    assert insn("calib") == "mov ds, eax"  # capstone spells 8e d8 with eax
    start = GUEST_LABELS["b_read"]
    loop = [f"{i.mnemonic} {i.op_str}".strip() for i in cs.disasm(GUEST_CODE[start : start + 32], start, 8)]
    assert loop == [
        "mov rcx, r10",
        "mov rbx, qword ptr [rsi + rcx*8]",
        "mov rax, qword ptr [rbx]",
        "mov qword ptr [rdi + rcx*8], rax",
        "inc rcx",
        "cmp rcx, rdx",
        f"jb {GUEST_LABELS['b_read.loop']:#x}",
        "hlt",  # a CPL-0 run ends with HLT ...
    ]
    # ... a CPL-3 run (the user page's copy, same labels) with SYSCALL, caught by a hook.
    user_end = GUEST_LABELS["b_read.end"]
    assert next(cs.disasm(GUEST_USER_CODE[user_end : user_end + 2], user_end)).mnemonic == "syscall"
    for name, off in GUEST_LABELS.items():
        if name.endswith(".end"):
            assert GUEST_CODE[off] == 0xF4 and GUEST_USER_CODE[off : off + 2] == b"\x0f\x05", name
    assert insn("b_fetch.jump") == "jmp rbx"
    assert insn("b_fetch.after") == "mov rax, qword ptr [r8]"


def test_registers_and_reserved_slot(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    regs = machine.registers()
    assert regs["CR0"] == 0x80010011
    assert regs["CR3"] == t.root
    assert regs["CR4"] & 0x20 and bool(regs["CR4"] & 0x1000) == (t.levels == 5)
    assert regs["EFER"] & 0xD00 == 0xD00  # LME | LMA | NXE
    lo, hi = machine.reserved_va_range()
    # Slot 511 of the root: VA bits 47:39 (PML4) or 56:48 (PML5) all ones, sign-extended.
    assert (lo, hi) == ((0xFFFFFF8000000000 if t.levels == 4 else 0xFFFF000000000000), 1 << 64)
    assert machine.MACHINE_SLOT == 511
    entry = t.ram.read_u64(t.root + 8 * 511)
    assert entry & P and entry & ADDR  # set_root wrote the slot
    for va in (lo, lo + 0x1234, hi - 8):
        assert isinstance(machine.probe(va), ProbeError)
    assert all(isinstance(r, ProbeError) for r in machine.probe_many([lo, hi - 1]))


# -- translations ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [4096, 2 << 20], ids=["4K", "2M"])
def test_leaves_translate(m4: tuple[X86_64Machine, Tables], size: int) -> None:
    machine, t = m4
    pa = data_frame(t, size)
    va = 0x7F12_3440_0000 if t.levels == 4 else 0x00AB_CDEF_4000_0000
    t.map(va, pa, P | RW, size=size)
    for off in (0, 8, 0x7, size // 2 + 0x123, size - 8):
        for access in (READ, WRITE, FETCH):
            assert machine.probe(va + off, access) == Translation(pa + off, "tag"), (off, access)
    offs = [0, 8, 0x7, size // 2 + 0x123, size - 8]
    for access in (READ, WRITE, FETCH):
        assert machine.probe_many([va + o for o in offs], access) == [
            Translation(pa + o, "tag") for o in offs
        ]


@pytest.mark.parametrize("levels", [4, 5])
def test_1g_leaf_translates(levels: int) -> None:
    machine, t = make(levels, ram_size=(2 << 30) + (64 << 20))  # sparse mapping: cheap
    pa = t.alloc.alloc(1 << 30)
    assert pa % (1 << 30) == 0
    offsets = [0, 0x1234_5678, (1 << 30) - 8]
    for off in offsets:  # tag only the frames we probe
        t.ram.tag(pa + (off & ~0xFFF), 4096)
    va = 0x40_0000_0000 if levels == 4 else 0x00AB_0000_4000_0000
    t.map(va, pa, P | RW, size=1 << 30)
    for off in offsets:
        assert machine.probe(va + off) == Translation(pa + off, "tag")
    for access in (WRITE, FETCH):
        assert machine.probe_many([va + o for o in offsets], access) == [
            Translation(pa + o, "tag") for o in offsets
        ]


def test_untagged_frame_is_observed_by_vmem(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t, tag=False)
    t.map(0x5000_0000, pa, P | RW)
    for access in (READ, WRITE, FETCH, U_READ):
        if access.user:
            t.map(0x5000_0000, pa, P | RW | US)
        want = Translation(pa + 0x123, "vmem")
        assert machine.probe(0x5000_0123, access) == want
        assert machine.probe_many([0x5000_0123], access) == [want]


def test_self_referencing_root_entry_translates_without_hanging() -> None:
    """A table loop: root[1] points at the root itself (a recursive mapping)."""
    machine, t = make(4)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)  # creates root[0] -> PDPT -> PD -> PT
    t.ram.write_u64(t.root + 8, t.root | P | RW)
    pdpt = t.ram.read_u64(t.root) & ADDR
    pd = t.ram.read_u64(pdpt) & ADDR
    pt = t.ram.read_u64(pd) & ADDR
    # Indices 1,0,0,0: root[1] = root (as PDPT), root[0] = PDPT (as PD), PDPT[0] = PD (as PT),
    # PD[0] = PT: the "page" is the PT frame.  Indices 1,1,1,1 end in the root frame itself.
    va = 1 << 39
    assert machine.probe(va + 8) == Translation(pt + 8, "vmem")
    assert machine.probe((1 << 39) | (1 << 30) | (1 << 21) | (1 << 12)) == Translation(t.root, "vmem")
    assert machine.probe(va, FETCH) == Translation(pt, "vmem")
    assert t.ram.read_u64(pd + 8) == 0
    assert machine.probe(va | (1 << 12)) == pf(0)  # indices 1,0,0,1: PD[1], empty, as the PTE


# -- faults --------------------------------------------------------------------------------
def test_not_present_at_each_level(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t)
    va = 0x3_2100_0000
    t.map(va, pa, P | RW | US)
    assert machine.probe(va) == Translation(pa, "tag")
    for level in range(1, t.levels + 1):
        saved = t.get(va, level)
        t.set(va, level, saved & ~P)  # everything else kept: P=0 alone decides
        assert machine.probe(va) == pf(0), level
        assert machine.probe(va, WRITE) == pf(EC_W), level
        assert machine.probe(va, FETCH) == pf(EC_I), level
        assert machine.probe(va, U_READ) == pf(EC_U), level
        assert machine.probe(va, U_WRITE) == pf(EC_U | EC_W), level
        assert machine.probe_many([va, va + 8], WRITE) == [pf(EC_W)] * 2, level
        t.set(va, level, saved)
    assert machine.probe(va, U_READ) == Translation(pa, "tag")


def test_read_only_and_wp(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t)
    t.map(0x40_0000, pa, P | US)  # R/W = 0 at the leaf
    t.map(0x80_0000, pa, P | RW | US, inter=P | US)  # R/W = 0 in every non-leaf entry
    for va in (0x40_0000, 0x80_0000):
        assert machine.probe(va) == Translation(pa, "tag")
        assert machine.probe(va, WRITE) == pf(EC_P | EC_W)  # CR0.WP: supervisor writes fault too
        assert machine.probe(va, U_WRITE) == pf(EC_P | EC_W | EC_U)
        assert machine.probe_many([va, va + 16], WRITE) == [pf(EC_P | EC_W)] * 2


def test_nx_fetch(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t)
    t.map(0x60_0000, pa, P | RW | US | XD)
    t.map(0x2_0000_0000, pa, P | RW | US, inter=P | RW | US | XD)  # XD in the non-leaf entries
    for va in (0x60_0000, 0x2_0000_0000):
        assert machine.probe(va) == Translation(pa, "tag")
        assert machine.probe(va, FETCH) == pf(EC_P | EC_I)
        assert machine.probe(va, U_FETCH) == pf(EC_P | EC_I | EC_U)
        assert machine.probe_many([va, va + 3], FETCH) == [pf(EC_P | EC_I)] * 2


def test_cpl3_against_user_supervisor(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t)
    t.map(0x10_0000, pa, P | RW)  # U/S = 0 at the leaf
    t.map(0x1_0000_0000, pa, P | RW | US, inter=P | RW)  # U/S = 0 in the non-leaf entries
    t.map(0x20_0000, pa, P | RW | US)  # a user page
    for va in (0x10_0000, 0x1_0000_0000):
        assert machine.probe(va) == Translation(pa, "tag")  # CPL 0 passes
        assert machine.probe(va, FETCH) == Translation(pa, "tag")
        assert machine.probe(va, U_READ) == pf(EC_P | EC_U)  # CPL 3 faults, U bit set
        assert machine.probe(va, U_WRITE) == pf(EC_P | EC_W | EC_U)
        assert machine.probe(va, U_FETCH) == pf(EC_P | EC_I | EC_U)
        assert machine.probe_many([va], U_READ) == [pf(EC_P | EC_U)]
    for access in (U_READ, U_WRITE, U_FETCH, READ):
        assert machine.probe(0x20_0008, access) == Translation(pa + 8, "tag")
        assert machine.probe_many([0x20_0008], access) == [Translation(pa + 8, "tag")]


def test_reserved_bit_fault() -> None:
    """PS=1 in a PML4 entry is reserved (SDM vol. 3 §4.5, Table 4-15; §4.7 RSVD)."""
    machine, t = make(4)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)
    t.set(0x1000, 4, t.get(0x1000, 4) | PS)
    assert machine.probe(0x1000) == pf(EC_P | EC_RSVD)


def test_non_canonical_is_a_probe_error_and_missing_ram_a_translation() -> None:
    machine, t = make(4)
    t.map(0x7000, 0x4000_0000, P | RW)  # PA beyond the 64 MiB of RAM
    pa = data_frame(t)
    t.map(0x8000, pa, P | RW)
    bad_canon = machine.probe(0x8000_0000_0000)
    assert isinstance(bad_canon, ProbeError) and "#GP" in bad_canon.reason
    assert machine.probe(0x7008) == Translation(0x4000_0008, "vmem")  # no RAM there: no #PF either
    vas = [0x8000, 0x7000, 0x8008, 0x8000_0000_0000, 0x8010]
    got = machine.probe_many(vas)
    assert got == [machine.probe(v) for v in vas]
    assert got[0] == Translation(pa, "tag") and got[2] == Translation(pa + 8, "tag")
    assert got[1] == Translation(0x4000_0000, "vmem") and got[4] == Translation(pa + 16, "tag")


# -- leaves that map physical addresses with no RAM behind them --------------------------------
@pytest.mark.parametrize("levels", [4, 5])
def test_leaf_beyond_ram_translates(levels: int) -> None:
    """A leaf may map any physical address below MAXPHYADDR (40 on this CPU model); where there is
    no memory, hardware reads it without a page fault (SDM vol. 3 §4.5.4: the translation does not
    depend on what is at the physical address).  Unicorn stops such an access with
    UC_ERR_*_UNMAPPED after the walk succeeded; the machine reports the translation itself, from
    uc_vmem_translate.  Faults still come first: W=0 for a write, XD for a fetch, reserved bits."""
    machine, t = make(levels)
    beyond = 64 << 20  # the first byte after RAM
    t.map(0x1000, beyond + 0x3000, P | RW)
    t.map(0x2000, beyond + 0x5000, P)  # read-only, executable
    t.map(0x3000, beyond, P | RW | US | XD)
    t.map(0x4000, (1 << 39) | 0x1000, P | RW)  # the highest address bit below MAXPHYADDR
    t.map(0x5000, (1 << 40) | 0x1000, P | RW)  # bit 40: reserved (bits 51:MAXPHYADDR)
    t.map(0x20_0000, 0x8000_0000, P | RW, size=2 << 20)
    t.map(0x4000_0000, 0xC000_0000, P | RW, size=1 << 30)
    cases = [
        (0x1018, READ, Translation(beyond + 0x3018, "vmem")),
        (0x1018, WRITE, Translation(beyond + 0x3018, "vmem")),
        (0x1018, FETCH, Translation(beyond + 0x3018, "vmem")),
        (0x2020, READ, Translation(beyond + 0x5020, "vmem")),
        (0x2020, WRITE, pf(EC_P | EC_W)),
        (0x2020, FETCH, Translation(beyond + 0x5020, "vmem")),
        (0x3008, U_READ, Translation(beyond + 0x8, "vmem")),
        (0x3008, U_WRITE, Translation(beyond + 0x8, "vmem")),
        (0x3008, U_FETCH, pf(EC_P | EC_U | EC_I)),
        (0x2020, U_READ, pf(EC_P | EC_U)),
        (0x4010, READ, Translation((1 << 39) | 0x1010, "vmem")),
        (0x5010, READ, pf(EC_P | EC_RSVD)),
        (0x21_2340, READ, Translation(0x8001_2340, "vmem")),
        (0x4123_4568, WRITE, Translation(0xC123_4568, "vmem")),
    ]
    for va, access, want in cases:
        assert machine.probe(va, access) == want, (hex(va), access)
        assert machine.probe_many([va], access) == [want], (hex(va), access)
    # In a batch among ordinary addresses (the batch run stops there and goes on after it).
    pa = data_frame(t)
    t.map(0x9000, pa, P | RW)
    vas = [0x9000, 0x1018, 0x9008, 0x5010, 0x21_2340, 0x9010]
    assert machine.probe_many(vas) == [
        Translation(pa, "tag"),
        Translation(beyond + 0x3018, "vmem"),
        Translation(pa + 8, "tag"),
        pf(EC_P | EC_RSVD),
        Translation(0x8001_2340, "vmem"),
        Translation(pa + 16, "tag"),
    ]


def test_fetch_straddling_into_a_page_beyond_ram() -> None:
    """An instruction that starts on the last byte of a page in RAM runs on into a page mapped
    outside RAM: the fetch at the target itself succeeded (a translation in RAM)."""
    machine, t = make(4)
    pa = data_frame(t, tag=False)
    t.ram.write(pa + 0xFFF, b"\x48")  # a REX prefix: decoding needs the next byte
    t.map(0x1000, pa, P | RW)
    t.map(0x2000, 0x4000_0000, P | RW)
    want = Translation(pa + 0xFFF, "vmem")
    assert machine.probe(0x1FFF, FETCH) == want
    assert machine.probe_many([0x1FFF], FETCH) == [want]


def test_table_beyond_ram_reads_as_not_present() -> None:
    """Unicorn's page walk reads zeros where there is no RAM: a table pointer outside RAM gives a
    not-present #PF (on hardware what such a read returns is the platform's business).  The
    beyond-RAM translation above relies on it: UC_ERR_*_UNMAPPED can only come from the access."""
    machine, t = make(4)
    ea = t.entry_addr(0x60_0000, 2)
    t.ram.write_u64(ea, (64 << 20) + 0x1000 | P | RW | US)
    assert machine.probe(0x60_0008) == pf(0)
    assert machine.probe_many([0x60_0008]) == [pf(0)]


def test_without_nxe_xd_is_reserved() -> None:
    """IA32_EFER.NXE=0 (``nxe=False``): XD in an entry with P=1 is reserved (SDM vol. 3 §4.5.4)."""
    ram = PhysicalMemory(64 << 20)
    alloc = FrameAllocator(ram, reserved=[(0, 0x1000)])
    t = Tables(ram, alloc, 4)
    machine = X86_64Machine(ram, alloc, levels=4, nxe=False)
    machine.set_root(t.root)
    assert not machine.registers()["EFER"] & (1 << 11)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)
    t.map(0x2000, pa, P | RW | XD)
    assert machine.probe(0x1008) == Translation(pa + 8, "tag")
    assert machine.probe(0x2008) == pf(EC_P | EC_RSVD)
    assert machine.probe(0x1008, FETCH) == Translation(pa + 8, "tag")  # no XD: nothing forbids it


# -- the #DF trap ----------------------------------------------------------------------------
def test_trap_still_exists_in_raw_unicorn() -> None:
    """ORACLE-NOTES x86-64: without the fix the 2nd #PF arrives as #DF (8)."""
    from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, UC_TLB_CPU
    from unicorn import x86_const as X
    from unicorn.unicorn_py3.unicorn import Uc

    ram = PhysicalMemory(16 << 20)
    alloc = FrameAllocator(ram, reserved=[(0, 0x1000)])
    t = Tables(ram, alloc, 4)
    code = alloc.alloc(4096)
    ram.write(code, bytes.fromhex("488b03f4"))  # mov rax,[rbx]; hlt
    t.map(0x40_0000, code, P)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.ctl_set_tlb_mode(UC_TLB_CPU)
    uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)
    uc.reg_write(X.UC_X86_REG_CR3, t.root)
    uc.reg_write(X.UC_X86_REG_CR4, 0x20)
    uc.reg_write(X.UC_X86_REG_MSR, (0xC0000080, 0xD00))
    uc.reg_write(X.UC_X86_REG_CR0, 0x80010011)
    seen: list[int] = []

    def hook(uc: Uc, intno: int, _: object) -> None:
        seen.append(intno)
        uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, hook)
    for _ in range(2):
        uc.reg_write(X.UC_X86_REG_RBX, 0x80_0000)
        uc.emu_start(0x40_0000, 0x40_0003)
    assert seen == [14, 8]


def test_hundred_faults_in_a_row_are_page_faults(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    for i in range(100):
        assert machine.probe(0x1_0000_0000 + i * 0x1000 + 8 * (i % 3), WRITE if i % 2 else READ) == pf(
            EC_W if i % 2 else 0
        )


def test_ten_thousand_faults_in_one_batch(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t)
    t.map(0x10_0000, pa, P | US)  # read-only
    vas = [0x2_0000_0000 + i * 0x1000 for i in range(5000)] + [0x10_0000 + 8 * (i % 512) for i in range(5000)]
    assert machine.probe_many(vas) == [pf(0)] * 5000 + [
        Translation(pa + 8 * (i % 512), "tag") for i in range(5000)
    ]
    got = machine.probe_many(vas, WRITE)
    assert got == [pf(EC_W)] * 5000 + [pf(EC_P | EC_W)] * 5000
    assert machine.probe_many(vas[:5000], U_FETCH) == [pf(EC_U | EC_I)] * 5000


# -- batch == per-address --------------------------------------------------------------------
def mixed_space(t: Tables) -> tuple[list[int], int]:
    """Mapped, unmapped, read-only, supervisor-only, NX, untagged, 2M pages and odd addresses."""
    rw = data_frame(t, 8 * 4096)
    for i in range(8):
        t.map(0x1000_0000 + i * 0x1000, rw + i * 0x1000, P | RW | US)
    t.map(0x1001_0000, rw, P | US)  # read-only user
    t.map(0x1002_0000, rw + 0x1000, P | RW)  # supervisor-only
    t.map(0x1003_0000, rw + 0x2000, P | RW | US | XD)  # no-execute
    t.map(0x1004_0000, data_frame(t, tag=False), P | RW | US)  # untagged
    big = data_frame(t, 2 << 20)
    t.map(0x2000_0000, big, P | RW | US, size=2 << 20)
    # An instruction that straddles into a page that is not present.
    straddle = data_frame(t, tag=False)
    t.ram.write(straddle + 0xFFE, b"\x48\xb8")  # movabs rax, imm64: needs 8 more bytes
    t.map(0x1005_0000, straddle, P | RW | US)
    rng = np.random.default_rng(7)
    vas = [0x1000_0000 + int(o) for o in rng.integers(0, 8 * 4096, 200)]
    vas += [0x1001_0000 + 8 * i for i in range(20)] + [0x1002_0000 + 3, 0x1003_0010, 0x1004_0100]
    vas += [0x2000_0000 + int(o) for o in rng.integers(0, 2 << 20, 50)]
    vas += [0x3000_0000 + 0x1000 * i for i in range(30)]  # not mapped
    # non-canonical (4-level only / both), then the machine's own slot
    vas += [0x1005_0FFE, 0x1005_0FFF, 0x8000_0000_0000, 0x0100_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFF8]
    order = rng.permutation(len(vas))
    return [vas[i] for i in order], rw


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("access", [READ, WRITE, FETCH, U_READ, U_WRITE, U_FETCH], ids=str)
def test_probe_many_equals_probe(access: Access, levels: int) -> None:
    machine, t = make(levels)
    vas, _ = mixed_space(t)
    one = [machine.probe(v, access) for v in vas]
    assert machine.probe_many(vas, access) == one
    kinds = {type(r).__name__ for r in one}
    assert {"Translation", "Fault", "ProbeError"} <= kinds
    if access.kind == "fetch":  # the straddling instruction: its own page was fetched
        assert machine.probe(0x1005_0FFE, access) == Translation(t.get(0x1005_0000, 1) & ADDR | 0xFFE, "vmem")


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("access", [READ, WRITE, FETCH, U_READ, U_WRITE, U_FETCH], ids=str)
def test_probe_many_raw_decodes_to_probe_many(access: Access, levels: int) -> None:
    """The raw columns (status, pa, #PF error code) and {index: ProbeError} hold exactly
    probe_many's answers: tag and vmem translations, page faults, non-canonical and reserved
    addresses (errors), in any order."""
    machine, t = make(levels)
    vas, _ = mixed_space(t)
    want = machine.probe_many(vas, access)
    raw, errors = machine.probe_many_raw(np.array(vas, dtype=np.uint64), access)
    assert raw.results(errors) == want
    assert len(raw) == len(vas) and raw.status.dtype == np.uint8 and raw.pa.dtype == np.uint64
    for i, r in enumerate(want):
        st = int(raw.status[i])
        if isinstance(r, Translation):
            assert (st, int(raw.pa[i])) == ({"tag": RAW_TAG, "vmem": RAW_OBSERVED}[r.observed_by], r.pa)
        elif isinstance(r, Fault):
            assert (st, int(raw.code[i])) == (RAW_FAULT, r.code)
        else:
            assert st == RAW_ERROR and errors[i] == r
    assert {int(s) for s in raw.status} == {RAW_TAG, RAW_OBSERVED, RAW_FAULT, RAW_ERROR}
    assert machine.probe_many_raw([], access)[0].results({}) == []


def test_probe_many_raw_across_chunks() -> None:
    machine, t = make(4, ram_size=128 << 20)
    frames = data_frame(t, 64 * 4096)
    for i in range(64):
        t.map(0x4000_0000 + i * 0x1000, frames + i * 0x1000, P | RW)
    rng = np.random.default_rng(5)
    vas = 0x4000_0000 + rng.integers(0, 70 * 4096, 2 * CHUNK + 77).astype(np.uint64)
    raw, errors = machine.probe_many_raw(vas)
    assert not errors and raw.results(errors) == machine.probe_many(vas)
    mapped = vas < np.uint64(0x4000_0000 + 64 * 4096)
    assert (raw.status[mapped] == RAW_TAG).all() and (raw.status[~mapped] == RAW_FAULT).all()
    assert (raw.pa[mapped] == vas[mapped] - np.uint64(0x4000_0000) + np.uint64(frames)).all()


def test_large_batch_across_chunks() -> None:
    machine, t = make(4, ram_size=128 << 20)
    frames = data_frame(t, 512 * 4096)
    for i in range(512):
        t.map(0x4000_0000 + i * 0x1000, frames + i * 0x1000, P | RW)
    n = 2 * CHUNK + 1234
    rng = np.random.default_rng(3)
    pages = rng.integers(0, 600, n)  # pages >= 512 are not mapped
    offs = rng.integers(0, 4096, n)
    vas = [0x4000_0000 + int(p) * 0x1000 + int(o) for p, o in zip(pages, offs, strict=True)]
    want = [
        Translation(frames + int(p) * 0x1000 + int(o), "tag") if p < 512 else pf(0)
        for p, o in zip(pages, offs, strict=True)
    ]
    assert machine.probe_many(vas) == want
    assert machine.probe_many(np.array(vas, dtype=np.uint64)) == want
    assert [machine.probe(v) for v in vas[-300:]] == want[-300:]


# -- no side effects on data, no execution ------------------------------------------------------
def test_write_probe_leaves_memory_unchanged(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    pa = data_frame(t, tag=False)
    t.ram.write(pa, bytes(range(256)) * 16)
    t.map(0x70_0000, pa, P | RW | US)
    t.map(0x71_0000, pa, P | US)  # read-only alias
    before = t.ram.read(pa, 4096)
    vas = [0x70_0000 + 8 * i for i in range(512)] + [0x71_0000 + 8 * i for i in range(512)]
    got = machine.probe_many(vas, WRITE)
    assert got[:512] == [Translation(pa + 8 * i, "vmem") for i in range(512)]
    assert got[512:] == [pf(EC_P | EC_W)] * 512
    for v in vas[::37]:
        machine.probe(v, WRITE)
        machine.probe(v, U_WRITE)
    assert t.ram.read(pa, 4096) == before
    assert t.get(0x70_0000, 1) & D  # the store really happened (the MMU set the dirty bit)
    assert not t.get(0x71_0000, 1) & D


@pytest.mark.parametrize("levels", [4, 5])
def test_fetch_of_odd_instructions(levels: int) -> None:
    """Invalid opcodes, over-long instructions and instructions that straddle the page end (into a
    page that is not present, or beyond the canonical lower half) are fetched, not executed."""
    machine, t = make(levels)
    pa = data_frame(t, tag=False)
    t.ram.write(pa, b"\x0f\x0b" + b"\xff\xff" + b"\x66" * 16 + b"\x90")  # ud2, invalid, 17 bytes
    t.map(0x1000, pa, P | RW | US)
    vas = [0x1000, 0x1002, 0x1004]
    want = [Translation(pa + v - 0x1000, "vmem") for v in vas]
    for access in (FETCH, U_FETCH):
        assert [machine.probe(v, access) for v in vas] == want
        assert machine.probe_many(vas, access) == want
    top = (1 << (47 if levels == 4 else 56)) - 0x1000  # the last page of the lower half
    pa2 = data_frame(t, tag=False)
    t.ram.write(pa2 + 0xFFE, b"\x48\xb8")  # movabs rax, imm64: 8 bytes beyond the page
    t.map(top, pa2, P | RW | US)
    assert machine.probe(top + 0xFFE, FETCH) == Translation(pa2 + 0xFFE, "vmem")
    assert machine.probe_many([top + 0xFFE, top + 0xFFF], FETCH) == [
        Translation(pa2 + 0xFFE, "vmem"),
        Translation(pa2 + 0xFFF, "vmem"),
    ]


def test_fetch_never_executes_the_target(m4: tuple[X86_64Machine, Tables]) -> None:
    machine, t = m4
    victim = data_frame(t)
    t.map(0x90_0000, victim, P | RW | US)
    code = data_frame(t, tag=False)
    # movabs rax, 0x900000; mov qword [rax], 0xdead; hlt -- harmful if it ever ran
    harmful = b"\x48\xb8" + (0x90_0000).to_bytes(8, "little") + bytes.fromhex("48c700adde0000") + b"\xf4"
    t.ram.write(code, harmful * 100)
    t.map(0x91_0000, code, P | RW | US)
    before = t.ram.read(victim, 4096)
    starts = [0x91_0000 + len(harmful) * i for i in range(100)]
    for access in (FETCH, U_FETCH):
        assert machine.probe(starts[0], access) == Translation(code, "vmem")
        got = machine.probe_many(starts, access)
        assert got == [Translation(code + (v - 0x91_0000), "vmem") for v in starts]
    assert t.ram.read(victim, 4096) == before


# -- time limits and abnormal stops ------------------------------------------------------------
def test_timeout_becomes_probe_error() -> None:
    machine, t = make(4, timeout_us=50_000)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)
    result = machine.run_code(b"\xeb\xfe")  # jmp $
    assert isinstance(result, ProbeError) and "timeout" in result.reason
    assert machine.probe(0x1000) == Translation(pa, "tag")  # the machine still works
    assert machine.probe(0x5000) == pf(0)


def test_run_code_reports_registers_and_faults() -> None:
    machine, t = make(4)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)
    regs = machine.run_code(bytes.fromhex("488b03"), regs={"rbx": 0x1008})  # mov rax,[rbx]
    assert isinstance(regs, dict) and regs["rax"] == TAG | (pa + 8)
    assert machine.run_code(bytes.fromhex("488b03"), regs={"rbx": 0x9000}) == pf(0)
    assert machine.run_code(bytes.fromhex("488b03"), regs={"rbx": 0x1000}, user=True) == pf(EC_P | EC_U)
    ud = machine.run_code(b"\x0f\x0b")  # ud2: Unicorn reports it as an error, not via the hook
    assert isinstance(ud, ProbeError) and "INSN_INVALID" in ud.reason
    de = machine.run_code(bytes.fromhex("31c9f7f1"))  # xor ecx,ecx; div ecx
    assert isinstance(de, ProbeError) and "vector 0" in de.reason


def test_set_root_restores_its_slot() -> None:
    machine, t = make(4)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)
    t.ram.write_u64(t.root + 8 * 511, 0)  # somebody clobbered the slot
    broken = machine.probe(0x1000)
    assert isinstance(broken, ProbeError) and "set_root" in broken.reason
    assert all(isinstance(r, ProbeError) for r in machine.probe_many([0x1000, 0x2000]))
    assert all(isinstance(r, ProbeError) for r in machine.probe_many([0x1000, 0x2000], U_FETCH))
    machine.set_root(t.root)
    assert machine.probe(0x1000) == Translation(pa, "tag")
    # a second hierarchy: switching roots works and flushes stale translations
    t2 = Tables(t.ram, t.alloc, 4)
    pa2 = data_frame(t)
    t2.map(0x1000, pa2, P | RW)
    machine.set_root(t2.root)
    assert machine.probe(0x1000) == Translation(pa2, "tag")
    assert machine.registers()["CR3"] == t2.root


def test_host_edits_between_probes_are_seen() -> None:
    machine, t = make(4)
    a, b = data_frame(t), data_frame(t)
    t.map(0x1000, a, P | RW)
    assert machine.probe(0x1000) == Translation(a, "tag")
    t.map(0x1000, b, P | RW)
    assert machine.probe(0x1000) == Translation(b, "tag")
    t.map(0x1000, b, 0)
    assert machine.probe_many([0x1000]) == [pf(0)]


def test_error_code_location_is_found_at_run_time() -> None:
    machine, _ = make(4)
    cell = machine._err_cell
    assert cell is not None
    base = machine._ctx.context.value
    offset = ctypes.addressof(cell) - base
    assert 0 < offset < machine._ctx.size


def test_bad_addresses_are_refused() -> None:
    machine, t = make(4)
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW)
    for bad in ([1.5], [-1], [1 << 64], ["0x1000"], [True]):
        with pytest.raises(AddressError):
            machine.probe_many(bad)  # type: ignore[arg-type]
    with pytest.raises(AddressError):
        machine.probe_many(np.array([1.0]))
    with pytest.raises(AddressError):
        machine.probe(-8)
    assert machine.probe_many([]) == []
    big = [0x1000, (1 << 64) - 8]  # mixed sizes: no float64 round trip
    assert machine.probe_many(big)[0] == Translation(pa, "tag")
    assert machine.probe_many(np.array([0x1008], dtype=np.int64)) == [Translation(pa + 8, "tag")]
    assert machine.probe(np.uint64(0x1010)) == Translation(pa + 16, "tag")  # type: ignore[arg-type]
    with machine:
        pass  # close() stops the watchdog thread
