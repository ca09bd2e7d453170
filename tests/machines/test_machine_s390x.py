"""S390xMachine against hand-built DAT tables.

Every entry here is built from the z/Architecture Principles of Operation (SA22-7832) ch. 3 bit
layouts with the PoP's own numbering -- 64-bit big-endian entries, bit 0 is the MSB -- through the
small helpers below, never through emu.machines.s390x.  Expectations (real addresses, program-
interruption codes) follow from the PoP, not from the module under test.
"""

from __future__ import annotations

import ctypes
import struct

import capstone
import numpy as np
import pytest
import unicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import s390x_const as S

from emu.errors import AddressError, ConfigError, MemoryLayoutError
from emu.machines import s390x as mod
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
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.machines.s390x import S390xMachine
from emu.machines.s390x import edat as s390x_edat

MB, GB = 1 << 20, 1 << 30


# -- PoP bit numbering ------------------------------------------------------------------------
def bit(n: int) -> int:
    """PoP bit n of a 64-bit doubleword (bit 0 = most significant)."""
    return 1 << (63 - n)


def field(first: int, last: int, value: int) -> int:
    """``value`` placed in PoP bits first..last."""
    width = last - first + 1
    assert 0 <= value < (1 << width)
    return value << (63 - last)


def addr_field(first: int, last: int, address: int) -> int:
    """An address field whose bits first..last hold the same bits of ``address`` (origins)."""
    mask = field(first, last, (1 << (last - first + 1)) - 1)
    assert address & ~mask == 0, f"{address:#x} is not aligned for bits {first}-{last}"
    return address


# Virtual-address fields (PoP ch. 3 "Translation Process"): RFX 0-10, RSX 11-21, RTX 22-32,
# SX 33-43, PX 44-51, BX 52-63.
def va_of(rfx: int = 0, rsx: int = 0, rtx: int = 0, sx: int = 0, px: int = 0, bx: int = 0) -> int:
    return (
        field(0, 10, rfx) | field(11, 21, rsx) | field(22, 32, rtx) | field(33, 43, sx)
        | field(44, 51, px) | field(52, 63, bx)
    )


DT_REGION1, DT_REGION2, DT_REGION3, DT_SEGMENT = 3, 2, 1, 0  # ASCE bits 60-61 / TT bits 60-61


def asce(origin: int, dt: int, tl: int = 3) -> int:
    """ASCE: table origin bits 0-51, DT bits 60-61, TL bits 62-63."""
    return addr_field(0, 51, origin) | field(60, 61, dt) | field(62, 63, tl)


def region_entry(origin: int, tt: int, *, tf: int = 0, tl: int = 3, invalid: bool = False) -> int:
    """Region-table entry: next-table origin 0-51, TF 56-57, I 58, TT 60-61, TL 62-63."""
    return (
        addr_field(0, 51, origin) | field(56, 57, tf) | (bit(58) if invalid else 0)
        | field(60, 61, tt) | field(62, 63, tl)
    )


def region3_large(frame: int, *, protect: bool = False) -> int:
    """EDAT-2 region-third entry: RFAA bits 0-32, FC bit 53, P bit 54, TT=01."""
    return addr_field(0, 32, frame) | bit(53) | (bit(54) if protect else 0) | field(60, 61, DT_REGION3)


def segment_entry(pt_origin: int, *, invalid: bool = False, protect: bool = False, tt: int = 0) -> int:
    """Segment-table entry (FC=0): page-table origin bits 0-52, P 54, I 58, TT 60-61 (00)."""
    return (
        addr_field(0, 52, pt_origin) | (bit(54) if protect else 0) | (bit(58) if invalid else 0)
        | field(60, 61, tt)
    )


def segment_large(frame: int, *, protect: bool = False) -> int:
    """EDAT-1 segment-table entry: SFAA bits 0-43, FC bit 53, P bit 54."""
    return addr_field(0, 43, frame) | bit(53) | (bit(54) if protect else 0)


def page_entry(frame: int, *, invalid: bool = False, protect: bool = False, bit52: bool = False) -> int:
    """Page-table entry: PFRA bits 0-51, bit 52 must be 0, I 53, P 54."""
    return (
        addr_field(0, 51, frame) | (bit(52) if bit52 else 0) | (bit(53) if invalid else 0)
        | (bit(54) if protect else 0)
    )


PGM = {
    0x04: "protection", 0x05: "addressing", 0x10: "segment-translation", 0x11: "page-translation",
    0x12: "translation-specification", 0x38: "asce-type", 0x39: "region-first-translation",
    0x3A: "region-second-translation", 0x3B: "region-third-translation",
}
LEVEL = {0x11: 0, 0x10: 1, 0x3B: 2, 0x3A: 3, 0x39: 4}


def fault(code: int) -> Fault:
    return Fault(kind=PGM[code], level=LEVEL.get(code), code=code, vector=3)


# -- a hand-rolled hierarchy ------------------------------------------------------------------
class Space:
    """A DAT hierarchy built entry by entry; tables are full size (TL=3, 2048 / 256 entries)."""

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, top: int, tl: int = 3) -> None:
        self.ram, self.alloc, self.top = ram, alloc, top
        self.root = self.table(top)
        self.asce = asce(self.root, top, tl)

    def table(self, tt: int) -> int:
        """A region (tt 3/2/1) or segment (tt 0) table of 2048 invalid entries."""
        t = self.alloc.alloc(0x4000)
        blank = region_entry(0, tt, invalid=True) if tt else segment_entry(0, invalid=True)
        self.ram.write(t, struct.pack(">Q", blank) * 2048)
        return t

    def page_table(self) -> int:
        t = self.alloc.alloc(0x800)
        self.ram.write(t, struct.pack(">Q", page_entry(0, invalid=True)) * 256)
        return t

    def frame(self, tag: bool = True) -> int:
        f = self.alloc.alloc(0x1000)
        if tag:
            self.ram.tag(f, 0x1000)
        return f

    def walk_to(self, va: int, level: int) -> int:
        """Create tables down to ``level`` (3..0 = region-first..segment table, -1 = page table);
        return the physical address of the entry for ``va`` at that level."""
        idx = {3: (0, 10), 2: (11, 21), 1: (22, 32), 0: (33, 43), -1: (44, 51)}
        table = self.root
        for lvl in range(self.top, level, -1):
            first, last = idx[lvl]
            slot = table + 8 * ((va >> (63 - last)) & ((1 << (last - first + 1)) - 1))
            entry = self.ram.read_u64(slot)
            if entry & bit(58):  # invalid: make the next table
                nxt = self.table(lvl - 1) if lvl > 0 else self.page_table()
                entry = region_entry(nxt, lvl) if lvl > 0 else segment_entry(nxt)
                self.ram.write_u64(slot, entry)
            table = entry & ~0x7FF if lvl == 0 else entry & ~0xFFF
        first, last = idx[level]
        return table + 8 * ((va >> (63 - last)) & ((1 << (last - first + 1)) - 1))

    def map4k(self, va: int, frame: int, **kw: bool) -> int:
        slot = self.walk_to(va, -1)
        self.ram.write_u64(slot, page_entry(frame, **kw))
        return slot


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env() -> tuple[PhysicalMemory, FrameAllocator, S390xMachine]:
    ram = PhysicalMemory(256 * MB, big_endian=True)
    alloc = FrameAllocator(ram, reserved=[(0, 0x2000)])
    return ram, alloc, S390xMachine(ram, alloc)


@pytest.fixture
def ram(env):  # type: ignore[no-untyped-def]
    return env[0]


@pytest.fixture
def alloc(env):  # type: ignore[no-untyped-def]
    return env[1]


@pytest.fixture
def m(env):  # type: ignore[no-untyped-def]
    return env[2]


# -- translation with each ASCE type ----------------------------------------------------------
VA_FOR_TOP = {
    DT_REGION1: va_of(rfx=5, rsx=6, rtx=7, sx=8, px=9, bx=0x128),
    DT_REGION2: va_of(rsx=6, rtx=7, sx=8, px=9, bx=0x128),
    DT_REGION3: va_of(rtx=7, sx=8, px=9, bx=0x128),
    DT_SEGMENT: va_of(sx=8, px=9, bx=0x128),
}


@pytest.mark.parametrize("top", [DT_REGION1, DT_REGION2, DT_REGION3, DT_SEGMENT])
def test_each_asce_type_translates_a_4k_page(ram, alloc, m, top) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, top)
    va = VA_FOR_TOP[top]
    frame = sp.frame()
    sp.map4k(va, frame)
    m.set_asce(sp.asce)
    assert m.probe(va) == Translation(frame + 0x128, "tag")
    assert m.probe(va + 3) == Translation(frame + 0x12B, "tag")  # byte offset kept
    assert m.last_teid is None
    before = ram.read(frame, 0x1000)
    assert m.probe(va, WRITE) == Translation(frame + 0x128, "tag")
    assert ram.read(frame, 0x1000) == before  # the write probe stores the loaded value back
    assert m.registers()["CR7"] == sp.asce


def test_untagged_frame_is_observed_by_lrag(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    frame = sp.frame(tag=False)
    sp.map4k(va_of(sx=1, px=2), frame)
    m.set_asce(sp.asce)
    assert m.probe(va_of(sx=1, px=2, bx=0x10)) == Translation(frame + 0x10, "lrag")


def test_pa_is_observed_not_assumed(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    """A frame holding another frame's tags: LRAG and the loaded tag disagree -> ProbeError."""
    sp = Space(ram, alloc, DT_SEGMENT)
    real, fake = sp.frame(), sp.frame(tag=False)
    ram.write(fake, ram.read(real, 0x1000))
    sp.map4k(va_of(sx=1), fake)
    m.set_asce(sp.asce)
    res = m.probe(va_of(sx=1, bx=8))
    assert isinstance(res, ProbeError) and f"{fake + 8:#x}" in res.reason and f"{real + 8:#x}" in res.reason
    assert m.probe_many([va_of(sx=1, bx=8)]) == [res]


# -- invalid bits, table lengths and offsets, ASCE type ---------------------------------------
@pytest.mark.parametrize(
    "level,code", [(3, 0x39), (2, 0x3A), (1, 0x3B), (0, 0x10), (-1, 0x11)],
)
def test_invalid_bit_at_each_level(ram, alloc, m, level, code) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_REGION1)
    va = VA_FOR_TOP[DT_REGION1]
    sp.map4k(va, sp.frame())
    slot = sp.walk_to(va, level)
    ram.write_u64(slot, ram.read_u64(slot) | (bit(53) if level == -1 else bit(58)))
    m.set_asce(sp.asce)
    assert m.probe(va) == fault(code)
    teid = m.last_teid
    assert teid is not None
    assert teid >> 12 == va >> 12  # TEID bits 0-51: the failing page (PoP ch. 6)
    assert teid & 3 == 0b10  # bits 62-63: ASCE identification = secondary space


def test_table_length_checks(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    """The two leftmost index bits are compared with the ASCE's TL (PoP ch. 3 "Translation")."""
    cases = []
    for top, name, code in [
        (DT_REGION1, "rfx", 0x39), (DT_REGION2, "rsx", 0x3A), (DT_REGION3, "rtx", 0x3B),
        (DT_SEGMENT, "sx", 0x10),
    ]:
        sp = Space(ram, alloc, top, tl=1)  # entries 0..1023 exist
        inside, outside = va_of(**{name: 1023}), va_of(**{name: 1024})
        sp.map4k(inside, sp.frame())
        sp.map4k(outside, sp.frame())  # present in the table but beyond TL
        m.set_asce(sp.asce)
        assert isinstance(m.probe(inside), Translation)
        assert m.probe(outside) == fault(code)
        cases.append(code)
    assert cases == [0x39, 0x3A, 0x3B, 0x10]


@pytest.mark.parametrize("level,code", [(3, 0x3A), (2, 0x3B), (1, 0x10)])
def test_region_entry_offset_and_length(ram, alloc, m, level, code) -> None:  # type: ignore[no-untyped-def]
    """A region entry's TF/TL bound the next table's index (its two leftmost bits)."""
    sp = Space(ram, alloc, DT_REGION1)
    nxt = {3: "rsx", 2: "rtx", 1: "sx"}[level]
    base = dict(rfx=1, rsx=1, rtx=1, sx=1, px=1)
    vas = {k: va_of(**{**base, nxt: k * 512 + 1}) for k in range(4)}
    for va in vas.values():
        sp.map4k(va, sp.frame())
    slot = sp.walk_to(vas[0], level)
    e = ram.read_u64(slot)
    ram.write_u64(slot, (e & ~(field(56, 57, 3) | field(62, 63, 3))) | field(56, 57, 1) | field(62, 63, 2))
    m.set_asce(sp.asce)
    got = [m.probe(vas[k]) for k in range(4)]
    assert got[0] == fault(code)  # below the table offset
    assert isinstance(got[1], Translation) and isinstance(got[2], Translation)
    assert got[3] == fault(code)  # beyond the table length


@pytest.mark.parametrize(
    "top,va",
    [
        (DT_SEGMENT, va_of(rtx=1)), (DT_SEGMENT, va_of(rfx=1)), (DT_REGION3, va_of(rsx=1)),
        (DT_REGION2, va_of(rfx=1)),
    ],
)
def test_asce_type_exception(ram, alloc, m, top, va) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, top)
    m.set_asce(sp.asce)
    assert m.probe(va) == fault(0x38)


# -- protection, translation specification, addressing ----------------------------------------
def test_page_protection_faults_on_store_only(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_REGION3)
    frame = sp.frame()
    va = va_of(rtx=2, sx=3, px=4, bx=0x40)
    sp.map4k(va, frame, protect=True)
    m.set_asce(sp.asce)
    before = ram.read(frame, 0x1000)
    assert m.probe(va) == Translation(frame + 0x40, "tag")
    assert m.probe(va, WRITE) == fault(0x04)
    teid = m.last_teid
    assert teid is not None and teid & bit(61)  # bit 61: DAT protection
    assert ram.read(frame, 0x1000) == before


def test_segment_protection(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    va = va_of(sx=5, px=1)
    sp.map4k(va, sp.frame())
    slot = sp.walk_to(va, 0)
    ram.write_u64(slot, ram.read_u64(slot) | bit(54))
    m.set_asce(sp.asce)
    assert isinstance(m.probe(va), Translation)
    assert m.probe(va, WRITE) == fault(0x04)


def test_translation_specification(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_REGION2)
    va1, va2, va3 = va_of(rsx=1, px=1), va_of(rsx=2, px=1), va_of(rsx=3, px=1)
    sp.map4k(va1, sp.frame(), bit52=True)  # PTE bit 52 must be zero
    sp.map4k(va2, sp.frame())
    slot = sp.walk_to(va2, 0)  # segment entry with TT=01
    ram.write_u64(slot, ram.read_u64(slot) | field(60, 61, 1))
    sp.map4k(va3, sp.frame())
    slot = sp.walk_to(va3, 2)  # region-second entry claiming to be a region-third entry
    ram.write_u64(slot, (ram.read_u64(slot) & ~field(60, 61, 3)) | field(60, 61, DT_REGION3))
    m.set_asce(sp.asce)
    assert [m.probe(v) for v in (va1, va2, va3)] == [fault(0x12)] * 3


def test_addressing_exceptions(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    beyond = ram.size + 0x10000
    sp.map4k(va_of(sx=1), beyond)  # frame outside RAM
    slot = sp.walk_to(va_of(sx=2), 0)
    ram.write_u64(slot, segment_entry(beyond))  # page table outside RAM
    m.set_asce(sp.asce)
    assert m.probe(va_of(sx=1)) == fault(0x05)
    assert m.last_teid is None  # an addressing exception stores no TEID
    assert m.probe(va_of(sx=2)) == fault(0x05)


def test_fetch_and_user_probes_translate_like_reads(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    frame = sp.frame()
    sp.map4k(va_of(sx=1), frame, protect=True)
    m.set_asce(sp.asce)
    for va in (va_of(sx=1, bx=8), va_of(sx=2)):
        want = m.probe(va)
        assert m.probe(va, FETCH) == want
        assert m.probe(va, Access("read", user=True)) == want
        assert m.probe_many([va], FETCH) == [want]
    assert m.probe(va_of(sx=1), Access("write", user=True)) == fault(0x04)


def test_tables_edits_are_seen_at_the_next_probe(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    a, b = sp.frame(), sp.frame()
    va = va_of(sx=1)
    slot = sp.map4k(va, a)
    m.set_asce(sp.asce)
    assert m.probe(va) == Translation(a, "tag")
    ram.write_u64(slot, page_entry(b))
    assert m.probe(va) == Translation(b, "tag")
    assert m.probe_many([va]) == [Translation(b, "tag")]
    ram.write_u64(slot, page_entry(b, invalid=True))
    assert m.probe(va) == fault(0x11)


# -- EDAT-1 / EDAT-2 ----------------------------------------------------------------------------
def _large_space(ram, alloc):  # type: ignore[no-untyped-def]
    """1 MB segment entry and 2 GB region-third entry (PoP ch. 3 "Enhanced DAT")."""
    sp = Space(ram, alloc, DT_REGION3)
    seg_frame = alloc.alloc(MB)  # a 1 MB-aligned frame; only the probed page is touched
    ram.tag(seg_frame + 0x5000, 0x1000)
    seg_va = va_of(rtx=1, sx=7, px=5, bx=0x18)
    slot = sp.walk_to(seg_va, 0)
    ram.write_u64(slot, segment_large(seg_frame))
    target = sp.frame()  # RAM is < 2 GB: the 2 GB frame at real 0 holds `target`
    reg_va = va_of(rtx=2) + target + 0x20
    ram.write_u64(sp.walk_to(reg_va, 1), region3_large(0))
    return sp, (seg_va, seg_frame + 0x5018), (reg_va, target + 0x20)


def test_edat_self_test_verdict_matches_reality(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp, (seg_va, seg_pa), (reg_va, reg_pa) = _large_space(ram, alloc)
    m.set_asce(sp.asce)
    seg_real = m.probe(seg_va) == Translation(seg_pa, "tag")
    reg_real = m.probe(reg_va) == Translation(reg_pa, "tag")
    assert m.edat1_works == seg_real, m.edat_note
    assert m.edat2_works == reg_real, m.edat_note
    # Pinned fact for this build: the facility bits can be enabled and large entries translate.
    if unicorn.__version__ == "2.1.4":
        assert m.edat1_works and m.edat2_works, m.edat_note
    assert bool(m.registers()["CR0"] & bit(40)) == m.edat1_works  # CR0 bit 40: EDAT enablement


def test_large_entries_when_edat_works(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    if not m.edat1_works:  # another Unicorn build: the self-test must say why, and 2.1.4 must work
        assert unicorn.__version__ != "2.1.4" and m.edat_note
        return
    sp, (seg_va, seg_pa), (reg_va, reg_pa) = _large_space(ram, alloc)
    m.set_asce(sp.asce)
    assert m.probe_many([seg_va, reg_va]) == [Translation(seg_pa, "tag"), Translation(reg_pa, "tag")]
    slot = sp.walk_to(seg_va, 0)
    ram.write_u64(slot, ram.read_u64(slot) | bit(54))  # EDAT-1 STE protection
    assert m.probe(seg_va, WRITE) == fault(0x04)
    assert isinstance(m.probe(seg_va), Translation)


def test_without_edat_large_entries_are_ignored(ram, alloc) -> None:  # type: ignore[no-untyped-def]
    plain = S390xMachine(ram, alloc, edat=False)
    assert not plain.edat1_works and not plain.edat2_works
    assert not plain.registers()["CR0"] & bit(40)
    sp, (seg_va, seg_pa), (reg_va, reg_pa) = _large_space(ram, alloc)
    plain.set_asce(sp.asce)
    assert plain.probe(seg_va) != Translation(seg_pa, "tag")
    assert plain.probe(reg_va) != Translation(reg_pa, "tag")


def test_edat_unavailable_is_reported_not_faked(ram, alloc, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """If the library record cannot be found, large entries are 'cannot check', never agreement."""
    monkeypatch.setattr(s390x_edat, "_find_cpu_def", lambda: (None, "simulated: record not found"))
    blind = S390xMachine(ram, alloc, edat=True)
    assert not blind.edat1_works and not blind.edat2_works
    assert "simulated: record not found" in blind.edat_note
    assert not blind.registers()["CR0"] & bit(40)
    sp, (seg_va, seg_pa), (reg_va, reg_pa) = _large_space(ram, alloc)
    blind.set_asce(sp.asce)
    assert blind.probe(seg_va) != Translation(seg_pa, "tag")
    assert blind.probe(reg_va) != Translation(reg_pa, "tag")


def test_edat_patch_does_not_leak_into_other_unicorn_instances(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    """The library's z13 record is restored: a fresh z13 Uc still ignores FC with CR0.EDAT."""
    sp, (seg_va, seg_pa), _ = _large_space(ram, alloc)
    uc = unicorn.Uc(unicorn.UC_ARCH_S390X, unicorn.UC_MODE_BIG_ENDIAN)
    uc.ctl_set_cpu_model(S.UC_CPU_S390X_Z13)
    uc.ctl_set_tlb_mode(unicorn.UC_TLB_CPU)
    uc.mem_map_ptr(0, ram.size, unicorn.UC_PROT_ALL, ram.host_address)
    code = alloc.alloc(0x1000)
    ram.write(code, bytes.fromhex("e31020000003"))  # lrag %r1,0(%r2)
    uc.reg_write(S.UC_S390X_REG_CR0, bit(37) | bit(40))
    uc.reg_write(S.UC_S390X_REG_CR1, bit(58))
    uc.reg_write(S.UC_S390X_REG_CR7, sp.asce)
    uc.reg_write(S.UC_S390X_REG_R2, seg_va)
    uc.reg_write(S.UC_S390X_REG_PSWM, bit(5) | bit(16) | bit(31) | bit(32))
    uc.emu_start(code, code + 6)
    assert uc.reg_read(S.UC_S390X_REG_R1) != seg_pa
    if m.edat1_works:
        m.set_asce(sp.asce)
        assert m.probe(seg_va) == Translation(seg_pa, "tag")


# -- batches ------------------------------------------------------------------------------------
def _mixed(ram, alloc):  # type: ignore[no-untyped-def]
    """A region-first space with translations, every fault kind, protection and addressing."""
    sp = Space(ram, alloc, DT_REGION1)
    vas = []
    for i in range(40):
        va = va_of(rfx=1, rsx=2, rtx=3, sx=4, px=i, bx=8 * i)
        kind = i % 8
        if kind == 0:
            sp.map4k(va, sp.frame())
        elif kind == 1:
            sp.map4k(va, sp.frame(tag=False))
        elif kind == 2:
            sp.map4k(va, sp.frame(), protect=True)
        elif kind == 3:
            sp.map4k(va, 0, invalid=True)
        elif kind == 4:
            sp.map4k(va, sp.frame(), bit52=True)
        elif kind == 5:
            sp.map4k(va, ram.size + 0x1000 * i)
        vas.append(va)
    vas += [
        va_of(rfx=1, rsx=2, rtx=3, sx=9),  # invalid STE
        va_of(rfx=1, rsx=2, rtx=9),  # invalid RTTE
        va_of(rfx=1, rsx=9),  # invalid RSTE
        va_of(rfx=9),  # invalid RFTE
        va_of(rfx=1500),  # invalid RFTE in the upper part of the table
        va_of(rfx=1, rsx=2, rtx=3, sx=4, px=0, bx=3),  # unaligned byte
    ]
    return sp, vas


@pytest.mark.parametrize("access", [READ, WRITE])
def test_probe_many_equals_probe(ram, alloc, m, access) -> None:  # type: ignore[no-untyped-def]
    sp, vas = _mixed(ram, alloc)
    m.set_asce(sp.asce)
    single, teids = [], []
    for va in vas:
        single.append(m.probe(va, access))
        teids.append(m.last_teid)
    batch = m.probe_many(vas, access)
    assert batch == single
    assert m.last_teids == teids
    kinds = {r.kind for r in single if isinstance(r, Fault)}
    want = {"page-translation", "translation-specification", "addressing", "segment-translation",
            "region-third-translation", "region-second-translation", "region-first-translation"}
    assert kinds >= want | ({"protection"} if access == WRITE else set())
    assert {r.observed_by for r in single if isinstance(r, Translation)} == {"tag", "lrag"}


@pytest.mark.parametrize("access", [READ, WRITE])
def test_probe_many_raw_decodes_to_probe_many(ram, alloc, access) -> None:  # type: ignore[no-untyped-def]
    """The raw batch (numpy columns + {index: ProbeError}) holds exactly probe_many's answers:
    every kind of fault and translation, errors (a chunk that times out), TEIDs; across chunks
    and for numpy input."""
    small = S390xMachine(ram, alloc, edat=False, chunk=7)
    sp, vas = _mixed(ram, alloc)
    small.set_asce(sp.asce)
    vas = vas + vas[::-1]
    want = small.probe_many(vas, access)
    teids = small.last_teids
    raw, errors = small.probe_many_raw(np.array(vas, dtype=np.uint64), access)
    assert raw.results(errors) == want
    assert [int(t) or None for t in raw.extra["teid"]] == teids
    assert raw.status.dtype == np.uint8 and raw.pa.dtype == np.uint64 and len(raw) == len(vas)
    for i, r in enumerate(want):
        st = int(raw.status[i])
        if isinstance(r, Translation):
            assert (st, int(raw.pa[i])) == ({"tag": RAW_TAG, "lrag": RAW_OBSERVED}[r.observed_by], r.pa)
        elif isinstance(r, Fault):
            assert (st, int(raw.code[i])) == (RAW_FAULT, r.code)
        else:
            assert st == RAW_ERROR and errors[i] == r
    assert small.probe_many_raw([])[0].results({}) == []


def test_probe_many_raw_errors(ram, alloc) -> None:  # type: ignore[no-untyped-def]
    slow = S390xMachine(ram, alloc, edat=False, timeout_us=300)
    sp = Space(ram, alloc, DT_SEGMENT)
    slow.set_asce(sp.asce)
    vas = [va_of(sx=2 + i % 1000) for i in range(4000)]
    raw, errors = slow.probe_many_raw(vas)
    assert errors and set(errors) == set(np.flatnonzero(raw.status == RAW_ERROR).tolist())
    assert raw.results(errors) == [fault(0x10)] * (4000 - len(errors)) + [errors[4000 - len(errors)]] * len(errors)


def test_probe_many_chunks_and_duplicates(ram, alloc) -> None:  # type: ignore[no-untyped-def]
    small = S390xMachine(ram, alloc, edat=False, chunk=7)
    sp, vas = _mixed(ram, alloc)
    small.set_asce(sp.asce)
    vas = vas + vas[::-1] + [vas[0]] * 5
    assert small.probe_many(vas) == [small.probe(v) for v in vas]
    assert small.probe_many([]) == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 45), min_size=1, max_size=60))
def test_probe_many_equals_probe_random_order(ram, alloc, m, picks) -> None:  # type: ignore[no-untyped-def]
    sp, vas = _mixed(ram, alloc)
    m.set_asce(sp.asce)
    chosen = [vas[i] for i in picks]
    assert m.probe_many(chosen) == [m.probe(v) for v in chosen]


def test_ten_thousand_consecutive_faults(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    """Each fault comes back with its own code: no state left over from the previous one."""
    sp = Space(ram, alloc, DT_REGION3, tl=0)
    for px in range(256):
        sp.map4k(va_of(sx=1, px=px), 0, invalid=True)
    m.set_asce(sp.asce)
    vas, want = [], []
    for i in range(10_000):
        r = i % 4
        if r == 0:
            vas.append(va_of(sx=1, px=i % 256, bx=8)), want.append(fault(0x11))
        elif r == 1:
            vas.append(va_of(sx=2 + i % 500)), want.append(fault(0x10))
        elif r == 2:
            vas.append(va_of(rtx=1 + i % 511)), want.append(fault(0x3B))
        else:
            vas.append(va_of(rsx=1 + i % 2000)), want.append(fault(0x38))
    assert m.probe_many(vas) == want
    assert all(t is not None and t >> 12 == v >> 12 for t, v in zip(m.last_teids, vas, strict=True))
    assert [m.probe(v) for v in vas] == want


# -- errors never escape ------------------------------------------------------------------------
def test_timeout_becomes_probe_error(ram, alloc) -> None:  # type: ignore[no-untyped-def]
    slow = S390xMachine(ram, alloc, edat=False, timeout_us=300)
    sp = Space(ram, alloc, DT_SEGMENT)
    good = sp.frame()
    sp.map4k(va_of(sx=1), good)
    slow.set_asce(sp.asce)
    vas = [va_of(sx=2 + i % 1000) for i in range(4000)]  # faults cost a hook round trip each
    res = slow.probe_many(vas)
    assert len(res) == 4000
    errors = [r for r in res if isinstance(r, ProbeError)]
    assert errors and all("timed out" in r.reason for r in errors)
    first = res.index(errors[0])
    assert res[:first] == [fault(0x10)] * first and len(errors) == 4000 - first
    assert slow.probe(va_of(sx=1)) == Translation(good, "tag")  # still usable afterwards


def test_unicorn_errors_become_probe_errors(ram, alloc, m, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    m.set_asce(sp.asce)

    def broken(*_a: object, **_k: object) -> None:
        raise unicorn.UcError(unicorn.UC_ERR_EXCEPTION)

    monkeypatch.setattr(m.uc, "emu_start", broken)
    assert isinstance(m.probe(va_of(sx=1)), ProbeError)
    assert all(isinstance(r, ProbeError) for r in m.probe_many([va_of(sx=1)] * 3))
    monkeypatch.undo()
    assert m.probe(va_of(sx=1)) == fault(0x10)


def test_bad_inputs(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AddressError):
        m.probe(-1)
    with pytest.raises(AddressError):
        m.probe_many([1 << 64])
    with pytest.raises(AddressError):
        m.set_asce(1 << 64)
    with pytest.raises(ConfigError):
        S390xMachine(PhysicalMemory(16 * MB), FrameAllocator(PhysicalMemory(16 * MB)))


def test_probe_before_set_asce_is_refused() -> None:
    ram = PhysicalMemory(16 * MB, big_endian=True)
    alloc = FrameAllocator(ram)  # lowcore not reserved: the machine reserves it itself
    fresh = S390xMachine(ram, alloc, edat=False)
    with pytest.raises(ConfigError):
        fresh.probe(0x1000)
    with pytest.raises(MemoryLayoutError):
        alloc.reserve(0, 0x2000)


# -- the guest code cannot select access-register mode ----------------------------------------
def test_psw_and_control_registers(ram, alloc, m) -> None:  # type: ignore[no-untyped-def]
    sp = Space(ram, alloc, DT_SEGMENT)
    m.set_asce(sp.asce)
    m.probe(va_of(sx=3))
    regs = m.registers()
    assert regs["PSW_MASK"] == bit(5) | bit(16) | bit(31) | bit(32)  # DAT, ASC=10, EA, BA
    assert regs["CR1"] == bit(58)  # real-space ASCE: the code is fetched untranslated
    assert regs["CR0"] & bit(37)  # secondary-space control
    assert regs["CR7"] == sp.asce
    live = m.uc.reg_read(S.UC_S390X_REG_PSWM)
    assert (live >> (63 - 17)) & 3 == 0b10  # still secondary space, never access-register (01)


def test_guest_code_never_changes_address_space_control(m) -> None:  # type: ignore[no-untyped-def]
    """Disassemble the machine's code: only the probe instructions, nothing that sets the ASC."""
    start, blob = m._code
    md = capstone.Cs(capstone.CS_ARCH_SYSZ, capstone.CS_MODE_BIG_ENDIAN)
    insns = list(md.disasm(blob, start))
    assert sum(i.size for i in insns) == len(blob)  # everything decodes
    mnemonics = {i.mnemonic for i in insns}
    assert mnemonics == {"lrag", "ipm", "nill", "lg", "stg", "lurag", "sturg", "la", "brctg"}
    text = [f"{i.mnemonic} {i.op_str}" for i in insns]
    assert text[:4] == ["lrag %r1, 0(%r2)", "ipm %r4", "nill %r2, 0xfff8", "lg %r3, 0(%r2)"]


def test_program_interruption_code_located_at_run_time(m) -> None:  # type: ignore[no-untyped-def]
    """The offset was found by the start-up self-test, inside the saved CPU state."""
    assert m._code_offset is not None and 0 < m._code_offset < m._ctx_size
    ctypes.c_uint32.from_address(m._ctx_ptr + m._code_offset)  # readable
    assert mod.PSW_MASK & (3 << (63 - 17)) == 0b10 << (63 - 17)
