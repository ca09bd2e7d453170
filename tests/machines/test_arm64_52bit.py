"""arm64's 52-bit configurations (arm64:4k:52, 16k:52, 64k:52; archs/arm64.py make_config).

Descriptors are written here by hand from the Arm ARM's bit positions (DDI 0487 D8.3
"Translation table descriptor formats", the 52-bit OA layouts): FEAT_LPA2 with TCR_EL1.DS = 1
(4KB/16KB) puts OA[49:m] in place and OA[51:50] in bits [9:8]; FEAT_LPA with the 64KB granule
puts OA[47:16] in place and OA[51:48] in bits [15:12].  The expected Linux values are
v6.12's literals: pgtable-hwdef.h:175-184 (PTE_ADDR_HIGH 0x3 << 8 / shift 42 for LPA2, 0xf << 12 /
shift 36 for 64K) and mm/mmap.c:78-80 (no PTE_SHARED with LPA2).  The same tables are then walked
by QEMU 7.2 (``-cpu max``: FEAT_LPA2, FEAT_LVA, FEAT_LPA), whose AT answers are compared with the
hand-computed ones and with archs.arm64.translate().
"""

from __future__ import annotations

from typing import Any

import pytest

import archs
from archs import arm64 as a64
from archs.linux import Prot
from archs.translate import Fault as ArchFault
from archs.translate import Translation as ArchTranslation
from emu.machines.base import Fault, Translation
from emu.machines.ram import FrameAllocator, PhysicalMemory
from tests.machines.test_machine_qemu_x86_64 import need_qemu

AF, TABLE, PAGE, BLOCK = 1 << 10, 3, 3, 1

#: (config, output address with bits 51:48 set, its page descriptor written by hand)
PAGES = [
    # OA 0xf_0000_1234_5000: bits 49:12 in place (0x3_0000_1234_5000), OA[51:50] = 0b11 -> bits 9:8
    ("arm64:4k:52", 0xF_0000_1234_5000, 0x0003_0000_1234_5000 | 0x300 | AF | PAGE),
    # OA 0x5_0000_1234_4000: bits 49:14 in place (0x1_0000_1234_4000), OA[51:50] = 0b01 -> bits 9:8
    ("arm64:16k:52", 0x5_0000_1234_4000, 0x0001_0000_1234_4000 | 0x100 | AF | PAGE),
    # OA 0xa_0000_1235_0000: bits 47:16 in place, OA[51:48] = 0xa -> bits 15:12; SH = 0b11 stays
    ("arm64:64k:52", 0xA_0000_1235_0000, 0x0000_0000_1235_0000 | 0xA000 | 0x300 | AF | PAGE),
]


@pytest.mark.parametrize(("key", "oa", "desc"), PAGES)
def test_page_descriptor_from_the_manual(key: str, oa: int, desc: int) -> None:
    ops: Any = archs.get_ops(key)
    fmt = ops.page_fmt
    fields = fmt.parse(desc)
    assert fields["valid"] == fields["table"] == fields["af"] == 1
    assert fmt.build(**fields) == desc  # construct round trip
    assert ops.hw_oa(fmt, desc) == oa  # the architecture's OA
    assert ops.pte_pfn(desc) == oa >> ops.PAGE_SHIFT  # Linux's __pte_to_phys()
    assert ops.hw_fault("pte", desc) is None
    built = ops.pfn_pte(oa >> ops.PAGE_SHIFT, Prot(young=True, dirty=True))  # __phys_to_pte_val() | prot
    addr_bits = ops.PTE_ADDR_LOW | ops.PTE_ADDR_HIGH
    # 64K: PTE_ADDR_LOW reaches bit 49 in v6.12 (pgtable-hwdef.h:174, for LPA2), so
    # __phys_to_pte_val() keeps phys bits 49:48 in descriptor bits 49:48 too -- RES0 in the
    # 64KB 52-bit format, ignored by the walk (test_qemu_translates_the_hand_tables)
    extra = oa & (0x3 << 48) if ops.oa == "lpa" else 0
    assert built & addr_bits == desc & addr_bits | extra
    assert ops.pte_pfn(built) == oa >> ops.PAGE_SHIFT


def test_linux_constants_are_v6_12s() -> None:
    """pgtable-hwdef.h:174-184 literals, and the Kconfig levels (arch/arm64/Kconfig:382-391)."""
    lpa2, lpa = archs.get_ops("arm64:4k:52"), archs.get_ops("arm64:64k:52")
    assert (lpa2.PTE_ADDR_HIGH, lpa2.PTE_ADDR_HIGH_SHIFT) == (0x3 << 8, 42)  # type: ignore[attr-defined]
    assert lpa2.PHYS_TO_PTE_ADDR_MASK == 0x0003_FFFF_FFFF_FF00  # type: ignore[attr-defined]  # GENMASK(49, 8)
    assert (lpa.PTE_ADDR_HIGH, lpa.PTE_ADDR_HIGH_SHIFT) == (0xF << 12, 36)  # type: ignore[attr-defined]
    assert lpa.PTE_ADDR_LOW == 0x0003_FFFF_FFFF_0000  # type: ignore[attr-defined]  # (1 << (50 - 16)) - 1 << 16
    assert [len(archs.get_config(k).levels) for k in ("arm64:4k:52", "arm64:16k:52", "arm64:64k:52")] == [5, 4, 3]
    assert [lv.bits for lv in archs.get_config("arm64:4k:52").levels] == [4, 9, 9, 9, 9]  # PTRS_PER_PGD 16
    assert archs.get_config("arm64:16k:52").levels[0].bits == 5  # level 0: 32 entries
    assert archs.get_config("arm64:64k:52").levels[0].bits == 10  # level 1: 1024 entries
    assert lpa2.max_physmem_bits() == lpa.max_physmem_bits() == 52
    # mm/mmap.c adjust_protection_map(): LPA2 drops PTE_SHARED from every protection; 64K keeps it
    for prot in (Prot(), Prot(write=False), Prot(protnone=True), Prot(user=False)):
        assert not lpa2.pfn_pte(0x10, prot) & 0x300
        assert lpa.pfn_pte(0x10, prot) & 0x300 == 0x300
    pa = 0x4_0000_0004_0000  # a table at OA bit 50: NLTA[51:50] = 0b01 in bits 9:8
    entry = lpa2.mk_table("pmd", pa)
    assert entry == 0x0000_0000_0004_0000 | 0x100 | (1 << 59) | TABLE  # PXNTable, user table
    assert lpa2.table_pa("pmd", entry) == pa


def test_block_levels_with_a_52_bit_oa() -> None:
    """4KB level 0 is a block level with DS = 1 (512GB); 16KB level 0 is not; level -1 never."""
    ops: Any = archs.get_ops("arm64:4k:52")
    block = 0x0000_0080_0000_0000 | 0x300 | AF | BLOCK  # OA 0xc_0080_0000_0000
    assert ops.hw_fault("p4d", block) is None
    assert ops.hw_oa(ops.hw_blocks[(4096, 0)], block) == 0xC_0080_0000_0000
    assert ops.hw_fault("pgd", block)[:2] == ("translation", -1)
    assert ops.hw_fault("pgd", 0)[:2] == ("translation", -1)
    o16: Any = archs.get_ops("arm64:16k:52")
    assert o16.hw_fault("p4d", 0x4000_0000_0000 | AF | BLOCK)[:2] == ("translation", 0)
    assert o16.hw_fault("pud", 0x10_0000_0000 | AF | BLOCK) is None  # 64GB block, level 1


def hand_tables(key: str, oa: int, desc: int, write: Any, alloc: Any) -> tuple[int, int, dict[int, int]]:
    """Tables from the root down to a page ``desc`` for VA ``va`` (bits 51:48 not zero), the page
    Linux's pfn_pte() makes of the same pfn after it, and a block with an OA over 48 bits: 512GB
    at level 0 (4K), 64GB at level 1 (16K), 4TB at level 1 (64K).  Returns (root, va, {va: pa})."""
    config = archs.get_config(key)
    levels = config.levels
    va = (0xB << 48) | (0x5 << levels[-2].shift) | (0x3 << config.page_shift) | 0x123
    tables = [alloc(max(lv.table_size, 64) if i == 0 else 1 << config.page_shift) for i, lv in enumerate(levels)]
    for upper, lower, lv in zip(tables, tables[1:], levels, strict=False):
        write(upper + 8 * lv.index(va), lower | TABLE)
    write(tables[-1] + 8 * levels[-1].index(va), desc)
    want = {va: oa | (va & ((1 << config.page_shift) - 1))}
    # the next page: the descriptor Linux builds for the same pfn (pfn_pte(), __phys_to_pte_val())
    ops: Any = archs.get_ops(key)
    write(tables[-1] + 8 * (levels[-1].index(va) + 1), ops.pfn_pte(oa >> config.page_shift, Prot()))
    want[va + (1 << config.page_shift)] = want[va]
    blk_level = {"arm64:4k:52": 1, "arm64:16k:52": 1, "arm64:64k:52": 0}[key]  # index in levels
    lv = levels[blk_level]
    bva = (0xB << 48) | (0x7 << lv.shift) | 0x4321
    boa = 0xD << 48 | (1 << lv.shift)  # OA[51:48] = 0xd
    fmt = ops.hw_blocks[(1 << config.page_shift, int(lv.name[1:]))]
    bdesc = fmt.build(valid=1, af=1, addr=(boa & ((1 << 50) - 1)) >> lv.shift if ops.oa == "lpa2"
                      else (boa & ((1 << 48) - 1)) >> lv.shift, oa_hi=boa >> a64.OA_HIGH_BIT[ops.oa])
    if blk_level == 1:
        write(tables[1] + 8 * lv.index(bva), bdesc)
    else:
        write(tables[0] + 8 * lv.index(bva), bdesc)
    want[bva] = boa | (bva & ((1 << lv.shift) - 1))
    return tables[0], va, want


@pytest.mark.parametrize(("key", "oa", "desc"), PAGES)
def test_translate_walks_the_hand_tables(key: str, oa: int, desc: int) -> None:
    """archs.arm64.translate() (the manual's walk) on the hand-built tables."""
    mem: dict[int, int] = {}
    free = [0x10_0000]

    def alloc(size: int) -> int:
        pa = free[0]
        free[0] += 0x10000
        return pa

    root, va, want = hand_tables(key, oa, desc, mem.__setitem__, alloc)
    for addr, pa in want.items():
        got = a64.translate(key, lambda p: mem.get(p, 0), addr, ttbr0=root)
        assert isinstance(got, ArchTranslation) and got.pa == pa, (hex(addr), got)
    if key == "arm64:4k:52":
        none = a64.translate(key, lambda p: mem.get(p, 0), 0x2 << 48, ttbr0=root)
        assert isinstance(none, ArchFault) and (none.level, none.code) == ("L-1", 0b101011)


def test_qemu_advertises_lpa2_lva_and_lpa() -> None:
    """ID_AA64MMFR0_EL1 (D19): PARange [3:0] = 0b0110 (52 bits, FEAT_LPA), TGran16 [23:20] =
    0b0010 and TGran4 [31:28] = 0b0001 (52-bit with FEAT_LPA2); ID_AA64MMFR2_EL1.VARange [19:16]
    = 0b0001 (FEAT_LVA)."""
    need_qemu("arm64")
    from emu.machines.qemu.arm64 import QemuArm64Machine

    ram = PhysicalMemory(64 << 20)
    m = QemuArm64Machine(ram, FrameAllocator(ram))
    try:
        mmfr0, mmfr2 = m.id_aa64mmfr0(), m.id_aa64mmfr2()
        assert (mmfr0 & 0xF, (mmfr0 >> 20) & 0xF, (mmfr0 >> 28) & 0xF) == (0b0110, 0b0010, 0b0001)
        assert (mmfr2 >> 16) & 0xF == 0b0001
    finally:
        m.close()
        ram.close()


@pytest.mark.parametrize(("key", "oa", "desc"), PAGES)
def test_qemu_translates_the_hand_tables(key: str, oa: int, desc: int) -> None:
    """QEMU 7.2's AT on the same tables (TCR_EL1.IPS = 52 bits, DS = 1 for LPA2): the PAs with
    bits 51:48 set; the level -1 fault QEMU 7.2 cannot report is not run but named."""
    need_qemu("arm64")
    from emu.machines.qemu.arm64 import QEMU_LEVEL_MINUS_1, QemuArm64Machine

    config = archs.get_config(key)
    ram = PhysicalMemory(64 << 20)
    alloc = FrameAllocator(ram)
    oa_kind = config.extra["oa"]
    m = QemuArm64Machine(ram, alloc, granule=1 << config.page_shift, va_bits=52, ips_bits=52,
                         ds=oa_kind == "lpa2")
    try:
        def new_table(size: int) -> int:
            pa = alloc.alloc(max(size, 4096), max(size, 4096))
            ram.write(pa, bytes(max(size, 4096)))
            return pa

        root, va, want = hand_tables(key, oa, desc, ram.write_u64, new_table)
        m.set_roots(root, None)
        assert m.registers()["TCR_EL1"] >> 32 & 7 == 0b110  # IPS 52 bits
        assert bool(m.registers()["TCR_EL1"] & (1 << 59)) == (oa_kind == "lpa2")  # DS
        got = m.probe_many(list(want))
        assert got == [Translation(pa, "at") for pa in want.values()]
        # a VA in the disabled TTBR1 half: Translation fault, level 0 (EPD1)
        assert m.probe((1 << 64) - (1 << 52) + 0x1000) == Fault("translation", 0, 0b000100, 0)
        if key == "arm64:4k:52":
            assert m.probe(0x2 << 48).reason == QEMU_LEVEL_MINUS_1  # type: ignore[union-attr]
        else:  # an empty first-level entry: Translation fault at that level
            first = int(config.levels[0].name[1:])
            assert m.probe(0x2 << 48) == Fault("translation", first, 0b000100 | first, 0)
    finally:
        m.close()
        ram.close()


def test_qemu_verify_4k_52_disagrees_nowhere() -> None:
    """The default scenario of the 5-level configuration on QEMU: no disagree; the rows QEMU
    cannot answer are exactly the level -1 faults (none and bad pgd entries), by name."""
    need_qemu("arm64")
    from emu.verify import verify_configs

    report = verify_configs(["arm64:4k:52"], harness="off", emulator="qemu")
    counts = report.counts()
    assert report.ok and counts.get("disagree", 0) == 0 and counts.get("oracle-error", 0) == 0
    assert counts["agree"] > 100
    cannot = [r for r in report.rows if r.verdict_class == "oracle-cannot-check"]
    assert cannot and {r.case for r in cannot} == {"none pgd entry (L-1)", "bad pgd entry (L-1), Linux clears it"}
    assert all("qemu-7.2-no-level-minus-1-fault" in r.verdict for r in cannot)


def test_64k_conventions_linux_reads_otherwise() -> None:
    """Two 64K-with-52-bit-PA entries Linux v6.12 reads otherwise than the Arm ARM (found by
    ``foliowalk fuzz --oracle qemu --config arm64:64k:52``; QEMU answers as the manual): a
    level-1 block (Linux: pud_table() is always true with 64K pages) and bits 49:48 (Linux's
    PTE_ADDR_LOW reads them, the 64KB 52-bit format leaves them RES0).  Both are walk_diverges()
    facts (linux-only); the 4K LPA2 format, where bits 49:48 are OA[49:48], has neither."""
    o64: Any = archs.get_ops("arm64:64k:52")
    block = 0x2_2000_0000 | AF | BLOCK  # OA 0: bits 41:17 RES0 in a 4TB block
    trace = [("pgd", 0xA30, block), ("p4d", 0xA30, block), ("pud", 0xA30, block)]
    assert o64.hw_fault("pud", block) is None
    assert "4TB level-1 block" in o64.walk_diverges(trace, 0x7C_FE2D_AEA8)
    page = (1 << 48) | 0x1234_0000 | AF | PAGE
    assert o64.pte_pfn(page) << 16 == 0x1_0000_1234_0000 and o64.hw_oa(o64.page_fmt, page) == 0x1234_0000
    assert "bits 49:48 set" in o64.walk_diverges([("pmd", 0x10000, 0x20000 | TABLE), ("pte", 0x20008, page)], 0x10000)
    o4: Any = archs.get_ops("arm64:4k:52")
    page4 = (1 << 48) | 0x1234_5000 | AF | PAGE
    assert o4.pte_pfn(page4) << 12 == o4.hw_oa(o4.page_fmt, page4) == 0x1_0000_1234_5000
    assert o4.walk_diverges([("pmd", 0x10000, 0x20000 | TABLE), ("pte", 0x20008, page4)], 0x10000) is None
