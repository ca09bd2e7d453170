"""arm64 (AArch64) stage-1 paging: 4K/16K/64K granules, 36..48-bit VAs and 52-bit VAs with a
52-bit OA (FEAT_LPA2 / FEAT_LVA + FEAT_LPA: the ``*:52`` configurations), and Linux v6.12's view
(and v6.1's, 48-bit only).

Hardware: Arm Architecture Reference Manual for A-profile (DDI 0487), chapter D8 "The AArch64
Virtual Memory System Architecture": D8.2 "Translation process" (granule sizes, initial lookup
level from TxSZ, the table walk), D8.3 "Translation table descriptor formats" (table, block and
page descriptors; the level-0..2 block sizes each granule allows), D8.4 "Memory access control"
(AP[2:1], PXN/UXN, the hierarchical APTable/PXNTable/UXNTable controls).  PAR_EL1 / TCR_EL1 are
in D19 (used by emu/machines/arm64/, never here).

Linux (v6.12; read in a linux-6.12.y tree): arch/arm64/include/asm/pgtable-hwdef.h (bit names,
ARM64_HW_PGTABLE_LEVELS, PGDIR_SHIFT, PTE_ADDR_LOW), pgtable-prot.h (the software bits
PTE_WRITE = PTE_DBM, PTE_DIRTY, PTE_SPECIAL, PTE_DEVMAP, PTE_UFFD_WP, PTE_PRESENT_INVALID = PTE_NG,
PTE_SWP_EXCLUSIVE, PAGE_NONE and the PAGE_* protections), pgtable.h (predicates, the swap entry
layout), pgalloc.h (pXd_populate), sparsemem.h (MAX_PHYSMEM_BITS), arch/arm64/Kconfig
(PGTABLE_LEVELS per granule and VA size; no HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD), and the
asm-generic pgtable-nop4d.h / -nopud.h / -nopmd.h folding.

Linux v6.1 (Debian linux-source-6.1, 6.1.192), keyed by ``kconfig.version``, has the layout arm64
had before v6.10 (PTE_PRESENT_INVALID and uffd-wp support): PROT_NONE is PTE_PROT_NONE (bit 58) instead
of nG without PTE_VALID, a PMD may be PMD_PRESENT_INVALID (bit 59), there is no uffd-wp bit
(arm64 v6.1 selects no HAVE_ARCH_USERFAULTFD_WP), the swap PTE keeps its type in bits 3-7 and its
offset in bits 8-57, and PTE_ADDR_LOW covers output-address bits 47:PAGE_SHIFT only (v6.12: 49).

The 52-bit configurations (issue 17): Linux v6.12 CONFIG_ARM64_VA_BITS_52 + CONFIG_ARM64_PA_BITS_52
(arch/arm64/Kconfig:382-391 PGTABLE_LEVELS, :1461 ARM64_VA_BITS_52, :1512 ARM64_PA_BITS_52, :1531
ARM64_LPA2), pgtable-hwdef.h:174-184 (PTE_ADDR_LOW / PTE_ADDR_HIGH / PTE_ADDR_HIGH_SHIFT /
PHYS_TO_PTE_ADDR_MASK), pgtable.h:75-86 (__pte_to_phys / __phys_to_pte_val), pgtable-prot.h:78-90
(lpa2_is_enabled(), PTE_MAYBE_SHARED, PHYS_MASK_SHIFT), arch/arm64/mm/mmap.c:78-80
(adjust_protection_map() drops PTE_SHARED with LPA2); the Arm ARM's D8.3 descriptor layouts with a
52-bit OA and D8.2's initial level -1 (4KB, TxSZ 12, DS = 1).

Never imports Unicorn.
"""

from __future__ import annotations

import functools

import construct as cs

from .base import U64, EntryFormat, HwLevel, PagingConfig
from .kconfig import KernelConfig
from .linux import DEFAULT_KERNEL, LinuxPgtable, Prot, Reader, SwpEntry
from .translate import Entry, Fault, Permissions, Translation, cpu_facts, parse_access, read_entry

ARCH = "arm64"

#: granule (bytes) -> PAGE_SHIFT.  D8.2: 4KB, 16KB and 64KB translation granules; each table is
#: one granule of 8-byte descriptors, so a level resolves PAGE_SHIFT - 3 VA bits.
GRANULE_SHIFT = {4096: 12, 16384: 14, 65536: 16}
GRANULE_NAME = {4096: "4k", 16384: "16k", 65536: "64k"}

#: Levels that may hold a block descriptor, and what it maps (D8.3, "Block descriptor": without
#: FEAT_LPA/FEAT_LPA2 -- the Cortex-A72 model has neither -- 4KB: level 1 (1GB) and level 2
#: (2MB); 16KB: level 2 (32MB); 64KB: level 2 (512MB)).  Level 3 always holds pages.
BLOCK_LEVELS = {4096: (1, 2), 16384: (2,), 65536: (2,)}

#: The output-address width this module builds for (TCR_EL1.IPS = 48, CONFIG_ARM64_PA_BITS_48).
OA_BITS = 48


def _le(name: str, source: str, *fields: cs.Construct) -> EntryFormat:
    # Fields from bit 63 down to bit 0; ByteSwapped makes the 8 bytes little-endian.
    return EntryFormat(name, cs.ByteSwapped(cs.BitStruct(*fields)), byteorder="little", source=source)


def _bits(name: str, width: int) -> list[cs.Construct]:
    """A field, or nothing when it has no bits (e.g. RES0 between the 4KB granule and bit 12)."""
    return [name / cs.BitsInteger(width)] if width > 0 else []


_D8_TABLE = "Arm ARM DDI 0487 D8.3 (table descriptor, stage 1, 48-bit OA)"
_D8_LEAF = "Arm ARM DDI 0487 D8.3 (block and page descriptors, stage 1, 48-bit OA)"
#: The 52-bit output-address formats (Arm ARM DDI 0487 D8.3 "Translation table descriptor
#: formats", the descriptor layouts "with 52-bit OA"; D8.2 "Translation process", "Input address
#: size" / "Output address size"):
#:
#: * ``lpa2`` -- FEAT_LPA2 with TCR_ELx.DS = 1, the 4KB and 16KB granules: the address field
#:   runs up to bit 49 (NLTA / OA[49:m]) and bits [9:8], SH[1:0] in the 48-bit formats, hold
#:   NLTA / OA[51:50]; shareability comes from TCR_ELx.SH0/SH1 instead.
#: * ``lpa`` -- FEAT_LPA with a 52-bit OA (TCR_ELx.IPS = 0b110), the 64KB granule: the address
#:   field stays 47:m, bits [15:12] hold NLTA / OA[51:48]; bits 49:48 stay RES0 and SH[1:0] stays
#:   in bits [9:8].
#:
#: value: the OA bit the ``oa_hi`` field's lowest bit carries (50 for LPA2, 48 for LPA).
OA_HIGH_BIT = {"lpa2": 50, "lpa": 48}
_D8_52 = {
    "lpa2": "Arm ARM DDI 0487 D8.3 ({what} descriptor, stage 1, 52-bit OA: FEAT_LPA2, TCR_ELx.DS = 1)",
    "lpa": "Arm ARM DDI 0487 D8.3 ({what} descriptor, stage 1, 52-bit OA: FEAT_LPA, 64KB granule)",
}
_LINUX_SW = "linux v6.12 arch/arm64/include/asm/pgtable-prot.h (software bits)"


def table_format(granule: int, oa: str = "48") -> EntryFormat:
    """A level 0..2 descriptor with bits[1:0] = 0b11: the next-level table (D8.3); ``oa``: "48",
    or a 52-bit OA format (:data:`OA_HIGH_BIT`: "lpa2" for 4KB/16KB, "lpa" for 64KB)."""
    m = GRANULE_SHIFT[granule]
    if oa == "lpa2":
        return _le(
            f"table-{GRANULE_NAME[granule]}-lpa2",
            _D8_52[oa].format(what="table"),
            "ns_table" / cs.BitsInteger(1),  # 63 NSTable
            "ap_table" / cs.BitsInteger(2),  # 62:61 APTable
            "uxn_table" / cs.BitsInteger(1),  # 60 UXNTable
            "pxn_table" / cs.BitsInteger(1),  # 59 PXNTable
            "ignored_58_51" / cs.BitsInteger(8),
            "res0_50" / cs.BitsInteger(1),
            "addr" / cs.BitsInteger(50 - m),  # 49:m NLTA[49:m]
            *_bits(f"res0_{m - 1}_12", m - 12),  # 16KB: bits 13:12 RES0
            "ignored_11_10" / cs.BitsInteger(2),
            "oa_hi" / cs.BitsInteger(2),  # 9:8 NLTA[51:50]
            "ignored_7_2" / cs.BitsInteger(6),
            "table" / cs.BitsInteger(1),
            "valid" / cs.BitsInteger(1),
        )
    if oa == "lpa":
        return _le(
            f"table-{GRANULE_NAME[granule]}-lpa",
            _D8_52[oa].format(what="table"),
            "ns_table" / cs.BitsInteger(1),
            "ap_table" / cs.BitsInteger(2),
            "uxn_table" / cs.BitsInteger(1),
            "pxn_table" / cs.BitsInteger(1),
            "ignored_58_51" / cs.BitsInteger(8),
            "res0_50_48" / cs.BitsInteger(3),
            "addr" / cs.BitsInteger(48 - m),  # 47:16 NLTA[47:16]
            "oa_hi" / cs.BitsInteger(4),  # 15:12 NLTA[51:48]
            "ignored_11_2" / cs.BitsInteger(10),
            "table" / cs.BitsInteger(1),
            "valid" / cs.BitsInteger(1),
        )
    return _le(
        f"table-{GRANULE_NAME[granule]}",
        _D8_TABLE,
        "ns_table" / cs.BitsInteger(1),  # 63 NSTable (Secure state only)
        "ap_table" / cs.BitsInteger(2),  # 62:61 APTable: [0] no EL0 access below, [1] read-only below
        "uxn_table" / cs.BitsInteger(1),  # 60 UXNTable: EL0 execute-never below
        "pxn_table" / cs.BitsInteger(1),  # 59 PXNTable: EL1 execute-never below (Linux: user tables)
        "ignored_58_51" / cs.BitsInteger(8),
        "res0_50_48" / cs.BitsInteger(3),  # RES0 with a 48-bit OA (NLTA[49:48] with FEAT_LPA2)
        "addr" / cs.BitsInteger(OA_BITS - m),  # 47:m next-level table address
        *_bits(f"res0_{m - 1}_12", m - 12),  # RES0 below the granule (64KB + FEAT_LPA: NLTA[51:48])
        "ignored_11_2" / cs.BitsInteger(10),
        "table" / cs.BitsInteger(1),  # 1: 1 = table (0 = block)
        "valid" / cs.BitsInteger(1),  # 0
    )


def _upper_attributes(version: str = "6.12") -> list[cs.Construct]:
    """Bits 63..50 of a block or page descriptor: hardware upper attributes and Linux's bits
    (``version``: the kernel whose software-bit names are used)."""
    if version == "6.1":
        return [
            "ignored_63" / cs.BitsInteger(1),
            "pbha_62_60" / cs.BitsInteger(3),  # 62:60 IGNORED, or PBHA[3:1] with FEAT_HPDS2
            # linux v6.1 arch/arm64/include/asm/pgtable-prot.h:28 PMD_PRESENT_INVALID (1 << 59),
            # "only when !PMD_SECT_VALID"; to the hardware IGNORED (PBHA[0] with FEAT_HPDS2)
            "present_invalid" / cs.BitsInteger(1),
            # linux v6.1 pgtable-prot.h:21 PTE_PROT_NONE (1 << 58), "only when !PTE_VALID"
            "prot_none" / cs.BitsInteger(1),
            "devmap" / cs.BitsInteger(1),  # 57 software: Linux PTE_DEVMAP (v6.1 pgtable-prot.h:20)
            "special" / cs.BitsInteger(1),  # 56 software: Linux PTE_SPECIAL (:19)
            "dirty" / cs.BitsInteger(1),  # 55 software: Linux PTE_DIRTY (:18)
            "uxn" / cs.BitsInteger(1),  # 54 UXN (Linux PTE_UXN)
            "pxn" / cs.BitsInteger(1),  # 53 PXN (Linux PTE_PXN)
            "cont" / cs.BitsInteger(1),  # 52 Contiguous hint (Linux PTE_CONT)
            "dbm" / cs.BitsInteger(1),  # 51 DBM; Linux PTE_WRITE == PTE_DBM
            "gp" / cs.BitsInteger(1),  # 50 GP (Linux PTE_GP)
            "res0_49_48" / cs.BitsInteger(2),  # RES0 with a 48-bit OA; v6.1's PTE_ADDR_LOW leaves them out
        ]
    return [
        "ignored_63" / cs.BitsInteger(1),
        "pbha" / cs.BitsInteger(4),  # 62:59 IGNORED, or PBHA[3:0] with FEAT_HPDS2 (POIndex 62:60, S1POE)
        "uffd_wp" / cs.BitsInteger(1),  # 58 software: Linux PTE_UFFD_WP
        "devmap" / cs.BitsInteger(1),  # 57 software: Linux PTE_DEVMAP
        "special" / cs.BitsInteger(1),  # 56 software: Linux PTE_SPECIAL
        "dirty" / cs.BitsInteger(1),  # 55 software: Linux PTE_DIRTY
        "uxn" / cs.BitsInteger(1),  # 54 UXN: EL0 execute-never (Linux PTE_UXN)
        "pxn" / cs.BitsInteger(1),  # 53 PXN: EL1 execute-never (Linux PTE_PXN)
        "cont" / cs.BitsInteger(1),  # 52 Contiguous hint (Linux PTE_CONT)
        "dbm" / cs.BitsInteger(1),  # 51 DBM (FEAT_HAFDBS); Linux PTE_WRITE == PTE_DBM
        "gp" / cs.BitsInteger(1),  # 50 GP, BTI guarded page (FEAT_BTI; Linux PTE_GP)
        "res0_49_48" / cs.BitsInteger(2),  # RES0 with a 48-bit OA; Linux's PTE_ADDR_LOW still reads them
    ]


def _lower_attributes(table_bit: str, oa: str = "48") -> list[cs.Construct]:
    """Bits 11..0 of a block or page descriptor (with FEAT_LPA2's DS = 1, bits 9:8 are OA[51:50])."""
    return [
        "ng" / cs.BitsInteger(1),  # 11 nG; Linux PTE_NG, and PTE_PRESENT_INVALID when valid = 0
        "af" / cs.BitsInteger(1),  # 10 AF, access flag (0: Access flag fault)
        # 9:8 SH[1:0], shareability (Linux PTE_SHARED = 0b11); LPA2: OA[51:50] (Linux PTE_ADDR_HIGH)
        ("oa_hi" if oa == "lpa2" else "sh") / cs.BitsInteger(2),
        "ap2" / cs.BitsInteger(1),  # 7 AP[2]: read-only (Linux PTE_RDONLY)
        "ap1" / cs.BitsInteger(1),  # 6 AP[1]: EL0 access (Linux PTE_USER)
        "ns" / cs.BitsInteger(1),  # 5 NS (Secure state only)
        "attr_indx" / cs.BitsInteger(3),  # 4:2 AttrIndx[2:0] into MAIR_EL1 (Linux MT_NORMAL = 0)
        table_bit / cs.BitsInteger(1),  # 1: page: 1; block: 0 (Linux PTE_TABLE_BIT / PMD_TABLE_BIT)
        "valid" / cs.BitsInteger(1),  # 0 (Linux PTE_VALID)
    ]


def _sw_source(version: str) -> tuple[str, str]:
    """(name suffix, source of the software bits) of the formats of kernel ``version``."""
    return ("", _LINUX_SW) if version == "6.12" else (f"-v{version}", _LINUX_SW.replace("v6.12", f"v{version}"))


def page_format(granule: int, version: str = "6.12", oa: str = "48") -> EntryFormat:
    """A level-3 descriptor with bits[1:0] = 0b11: a page of one granule (D8.3), with the software
    bits of kernel ``version``; ``oa`` as in :func:`table_format`."""
    m = GRANULE_SHIFT[granule]
    suffix, sw = _sw_source(version)
    if oa == "lpa2":
        return _le(
            f"page-{GRANULE_NAME[granule]}{suffix}-lpa2",
            f"{_D8_52[oa].format(what='page')}; {sw}",
            *_upper_attributes(version)[:-1],  # 63:50; bits 49:48 are OA[49:48] here
            "addr" / cs.BitsInteger(50 - m),  # 49:m OA[49:m]
            *_bits(f"res0_{m - 1}_12", m - 12),
            *_lower_attributes("table", oa),  # 9:8 OA[51:50]
        )
    if oa == "lpa":
        return _le(
            f"page-{GRANULE_NAME[granule]}{suffix}-lpa",
            f"{_D8_52[oa].format(what='page')}; {sw}",
            *_upper_attributes(version),  # 49:48 RES0
            "addr" / cs.BitsInteger(48 - m),  # 47:16 OA[47:16]
            "oa_hi" / cs.BitsInteger(4),  # 15:12 OA[51:48]
            *_lower_attributes("table"),
        )
    return _le(
        f"page-{GRANULE_NAME[granule]}{suffix}",
        f"{_D8_LEAF}; {sw}",
        *_upper_attributes(version),
        "addr" / cs.BitsInteger(OA_BITS - m),  # 47:m output address
        *_bits(f"res0_{m - 1}_12", m - 12),  # 16KB: RES0; 64KB: OA[51:48] with FEAT_LPA, else RES0
        *_lower_attributes("table"),
    )


def block_format(granule: int, level: int, version: str = "6.12", oa: str = "48") -> EntryFormat:
    """A level 0..2 descriptor with bits[1:0] = 0b01: a block (D8.3).  Also declared for levels the
    architecture gives no block (D8.3: there 0b01 is invalid), so such an entry can be decoded.
    ``oa`` as in :func:`table_format` (with a 52-bit OA, level -1 of the 4KB granule too)."""
    m = GRANULE_SHIFT[granule]
    n = m + (m - 3) * (3 - level)  # block size 2**n
    suffix, sw = _sw_source(version)
    if oa == "lpa2":
        return _le(
            f"block-l{level}-{GRANULE_NAME[granule]}{suffix}-lpa2",
            f"{_D8_52[oa].format(what='block')}; {sw}",
            *_upper_attributes(version)[:-1],
            "addr" / cs.BitsInteger(50 - n),  # 49:n OA[49:n]
            *_bits(f"res0_{n - 1}_17", n - 17),
            "nt" / cs.BitsInteger(1),  # 16 nT
            "res0_15_12" / cs.BitsInteger(4),
            *_lower_attributes("table", oa),  # 9:8 OA[51:50]
        )
    if oa == "lpa":
        return _le(
            f"block-l{level}-{GRANULE_NAME[granule]}{suffix}-lpa",
            f"{_D8_52[oa].format(what='block')}; {sw}",
            *_upper_attributes(version),
            "addr" / cs.BitsInteger(48 - n),  # 47:n OA[47:n]
            *_bits(f"res0_{n - 1}_17", n - 17),
            "nt" / cs.BitsInteger(1),
            "oa_hi" / cs.BitsInteger(4),  # 15:12 OA[51:48]
            *_lower_attributes("table"),
        )
    return _le(
        f"block-l{level}-{GRANULE_NAME[granule]}{suffix}",
        f"{_D8_LEAF}; {sw}",
        *_upper_attributes(version),
        "addr" / cs.BitsInteger(OA_BITS - n),  # 47:n output address
        *_bits(f"res0_{n - 1}_17", n - 17),
        "nt" / cs.BitsInteger(1),  # 16 nT (FEAT_BBM level 1); RES0 without it
        "res0_15_12" / cs.BitsInteger(4),  # 64KB + FEAT_LPA: OA[51:48]; else RES0
        *_lower_attributes("table"),
    )


#: Linux's non-present swap entry (v6.12 arch/arm64/include/asm/pgtable.h, "Encode and decode a
#: swap entry": bits 0-1 present (must be zero), 2 PG_anon_exclusive, 3 uffd-wp, 6-10 swap type,
#: 11 PTE_PRESENT_INVALID (must be zero), 12-61 swap offset).
SWAP = _le(
    "swap",
    "linux v6.12 arch/arm64/include/asm/pgtable.h (swap entry layout comment, __SWP_* macros)",
    "unused_63_62" / cs.BitsInteger(2),
    "offset" / cs.BitsInteger(50),  # 61:12 __swp_offset (__SWP_OFFSET_SHIFT 12, __SWP_OFFSET_BITS 50)
    "present_invalid" / cs.BitsInteger(1),  # 11 must be 0, else pte_present()
    "type" / cs.BitsInteger(5),  # 10:6 __swp_type (__SWP_TYPE_SHIFT 6, __SWP_TYPE_BITS 5)
    "unused_5_4" / cs.BitsInteger(2),
    "uffd_wp" / cs.BitsInteger(1),  # 3 PTE_SWP_UFFD_WP
    "exclusive" / cs.BitsInteger(1),  # 2 PTE_SWP_EXCLUSIVE
    "present" / cs.BitsInteger(2),  # 1:0 must be 0 (PTE_VALID and the table/page bit)
)

#: Linux v6.1's non-present swap entry (linux v6.1 arch/arm64/include/asm/pgtable.h:1000-1016,
#: "Encode and decode a swap entry": bits 0-1 present (must be zero), 2 PG_anon_exclusive, 3-7
#: swap type, 8-57 swap offset, 58 PTE_PROT_NONE (must be zero); __SWP_TYPE_SHIFT 3,
#: __SWP_OFFSET_SHIFT = __SWP_TYPE_BITS + __SWP_TYPE_SHIFT = 8).  Bit 59 is PMD_PRESENT_INVALID:
#: a PMD swap entry must not have it (pmd_present() would be true).
SWAP_V61 = _le(
    "swap-v6.1",
    "linux v6.1 arch/arm64/include/asm/pgtable.h (swap entry layout comment, __SWP_* macros)",
    "unused_63_60" / cs.BitsInteger(4),
    "present_invalid" / cs.BitsInteger(1),  # 59 PMD_PRESENT_INVALID: must be 0 in a PMD swap entry
    "prot_none" / cs.BitsInteger(1),  # 58 PTE_PROT_NONE: must be 0, else pte_present()
    "offset" / cs.BitsInteger(50),  # 57:8 __swp_offset (__SWP_OFFSET_SHIFT 8, __SWP_OFFSET_BITS 50)
    "type" / cs.BitsInteger(5),  # 7:3 __swp_type (__SWP_TYPE_SHIFT 3, __SWP_TYPE_BITS 5)
    "exclusive" / cs.BitsInteger(1),  # 2 PTE_SWP_EXCLUSIVE (v6.1 pgtable-prot.h:17)
    "present" / cs.BitsInteger(2),  # 1:0 must be 0
)

TABLE = {g: table_format(g) for g in GRANULE_SHIFT}
PAGE = {g: page_format(g) for g in GRANULE_SHIFT}
#: Levels 0..2 of each granule (64KB has no level 0 with VAs of 48 bits or fewer).
LOOKUP_LEVELS = {4096: (0, 1, 2, 3), 16384: (0, 1, 2, 3), 65536: (1, 2, 3)}
BLOCK = {(g, lv): block_format(g, lv) for g in GRANULE_SHIFT for lv in LOOKUP_LEVELS[g][:-1]}
#: The same descriptors with Linux v6.1's software bits (the hardware layout is the same).
PAGE_V61 = {g: page_format(g, "6.1") for g in GRANULE_SHIFT}
BLOCK_V61 = {(g, lv): block_format(g, lv, "6.1") for g in GRANULE_SHIFT for lv in LOOKUP_LEVELS[g][:-1]}
#: kernel version -> (page formats by granule, block formats by (granule, level), swap format).
LINUX_FORMATS: dict[str, tuple[dict[int, EntryFormat], dict[tuple[int, int], EntryFormat], EntryFormat]] = {
    "6.12": (PAGE, BLOCK, SWAP),
    "6.1": (PAGE_V61, BLOCK_V61, SWAP_V61),
}
#: The 52-bit OA formats (Linux v6.12 only): the OA format of each granule as CONFIG_ARM64_PA_BITS_52
#: uses it (arch/arm64/Kconfig: ARM64_LPA2 "depends on ARM64_PA_BITS_52 && !ARM64_64K_PAGES").
OA52 = {4096: "lpa2", 16384: "lpa2", 65536: "lpa"}
#: Lookup levels with a 52-bit VA (D8.2: TxSZ = 12; the 4KB granule starts at level -1).
LOOKUP_LEVELS_52 = {4096: (-1, 0, 1, 2, 3), 16384: (0, 1, 2, 3), 65536: (1, 2, 3)}
#: The levels that hold a block with a 52-bit OA (D8.3, and pseudocode AArch64.BlockDescSupported:
#: 4KB level 0 when DS = 1, 16KB level 1 when DS = 1, 64KB level 1 when the PA size is 52 bits).
BLOCK_LEVELS_52 = {4096: (0, 1, 2), 16384: (1, 2), 65536: (1, 2)}
TABLE52 = {g: table_format(g, OA52[g]) for g in GRANULE_SHIFT}
PAGE52 = {g: page_format(g, "6.12", OA52[g]) for g in GRANULE_SHIFT}
BLOCK52 = {(g, lv): block_format(g, lv, "6.12", OA52[g]) for g in GRANULE_SHIFT for lv in LOOKUP_LEVELS_52[g][:-1]}
FORMATS = (*TABLE.values(), *PAGE.values(), *BLOCK.values(), SWAP, *PAGE_V61.values(), *BLOCK_V61.values(),
           SWAP_V61, *TABLE52.values(), *PAGE52.values(), *BLOCK52.values())

# -- pgtable-hwdef.h / pgtable-prot.h, every mask derived from the declarations above ---------------
_P = PAGE[4096]  # the flag bits are the same in every granule's page and block formats
PTE_VALID = _P.mask("valid")
PTE_TABLE_BIT = _P.mask("table")  # == PMD_TABLE_BIT == PUD_TABLE_BIT
PTE_TYPE_MASK = PTE_VALID | PTE_TABLE_BIT
PTE_TYPE_PAGE = PTE_TYPE_MASK  # == PMD_TYPE_TABLE == PUD_TYPE_TABLE (0b11)
PMD_TYPE_SECT = PTE_VALID  # 0b01 (== PUD_TYPE_SECT)
PTE_ATTRINDX_MASK = _P.mask("attr_indx")
PTE_USER = _P.mask("ap1")  # AP[1]
PTE_RDONLY = _P.mask("ap2")  # AP[2]
PTE_SHARED = _P.mask("sh")  # SH[1:0] = 0b11, inner shareable
PTE_AF = _P.mask("af")
PTE_NG = _P.mask("ng")
PTE_GP = _P.mask("gp")
PTE_DBM = _P.mask("dbm")
PTE_CONT = _P.mask("cont")
PTE_PXN = _P.mask("pxn")
PTE_UXN = _P.mask("uxn")
PTE_WRITE = PTE_DBM  # pgtable-prot.h: "same as DBM (51)"
PTE_DIRTY = _P.mask("dirty")
PTE_SPECIAL = _P.mask("special")
PTE_DEVMAP = _P.mask("devmap")
PTE_UFFD_WP = _P.mask("uffd_wp")
PTE_PRESENT_INVALID = PTE_NG  # "only when !PTE_VALID"
PTE_SWP_EXCLUSIVE = SWAP.mask("exclusive")
PTE_SWP_UFFD_WP = SWAP.mask("uffd_wp")
PXD_TABLE_PXN = TABLE[4096].mask("pxn_table")  # PMD_TABLE_PXN == PUD_TABLE_PXN == P4D_TABLE_PXN
PXD_TABLE_UXN = TABLE[4096].mask("uxn_table")
S1_TABLE_AP = TABLE[4096].mask("ap_table")
_OA_49_48 = _P.mask("res0_49_48")  # RES0 with a 48-bit OA; OA[49:48] to PTE_ADDR_LOW and FEAT_LPA2
MT_NORMAL = 0  # arch/arm64/include/asm/memory.h: "MT_NORMAL must be index 0"
_PAGE_DEFAULT = PTE_TYPE_PAGE | PTE_AF | PTE_SHARED | (MT_NORMAL << _P.masks["attr_indx"][0])
#: PAGE_NONE (pgtable-prot.h): not valid to the MMU, present to Linux.
PAGE_NONE = (_PAGE_DEFAULT & ~PTE_VALID) | PTE_PRESENT_INVALID | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN

# -- linux v6.1 arch/arm64/include/asm/pgtable-prot.h, derived from the v6.1 declarations ------------
_P61 = PAGE_V61[4096]
PTE_PROT_NONE = _P61.mask("prot_none")  # v6.1 pgtable-prot.h:21, bit 58, "only when !PTE_VALID"
PMD_PRESENT_INVALID = _P61.mask("present_invalid")  # v6.1 pgtable-prot.h:28, bit 59
#: v6.1 pgtable-prot.h:100: PAGE_NONE = ((_PAGE_DEFAULT) & ~PTE_VALID) | PTE_PROT_NONE | PTE_RDONLY
#: | PTE_NG | PTE_PXN | PTE_UXN.
PAGE_NONE_V61 = (_PAGE_DEFAULT & ~PTE_VALID) | PTE_PROT_NONE | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN

_SWP_TYPE_SHIFT, _SWP_TYPE_MASK = SWAP.masks["type"][0], (1 << SWAP.width("type")) - 1
_SWP_OFFSET_SHIFT, _SWP_OFFSET_MASK = SWAP.masks["offset"][0], (1 << SWAP.width("offset")) - 1

#: sparsemem.h: MAX_PHYSMEM_BITS = PHYS_MASK_SHIFT = CONFIG_ARM64_PA_BITS (48 unless PA_BITS_52).
MAX_PHYSMEM_BITS = 48


def pte_addr_low(page_shift: int, version: str = "6.12") -> int:
    """pgtable-hwdef.h: ``PTE_ADDR_LOW = ((1 << (50 - PAGE_SHIFT)) - 1) << PAGE_SHIFT``, derived
    from the page format: its address field plus bits 49:48 (RES0 with a 48-bit OA).  Linux v6.1
    (arch/arm64/include/asm/pgtable-hwdef.h:158, ``((1 << (48 - PAGE_SHIFT)) - 1) << PAGE_SHIFT``,
    = PTE_ADDR_MASK without ARM64_PA_BITS_52, :163): the address field alone."""
    fmt = LINUX_FORMATS[version][0][1 << page_shift]
    return fmt.mask("addr") if version == "6.1" else fmt.mask("addr", "res0_49_48")


# -- geometry ----------------------------------------------------------------------------------------
def start_level(granule: int, va_bits: int) -> int:
    """D8.2 initial lookup level: ``4 - ceil((va_bits - PAGE_SHIFT) / (PAGE_SHIFT - 3))``; the same
    count as Linux's ``ARM64_HW_PGTABLE_LEVELS(va_bits) = (va_bits - 4) / (PAGE_SHIFT - 3)``."""
    m = GRANULE_SHIFT[granule]
    return 4 - -(-(va_bits - m) // (m - 3))


def make_config(granule: int, va_bits: int, *, description: str = "") -> PagingConfig:
    """The paging configuration of ``granule`` with ``va_bits``-bit VAs in each half.

    Hardware levels run from :func:`start_level` to 3 (named ``L0``..``L3``, D8.2); the initial
    table resolves only ``va_bits - shift`` bits, so it may be smaller than a granule
    (PTRS_PER_PGD = 1 << (VA_BITS - PGDIR_SHIFT)).  Linux levels (CONFIG_PGTABLE_LEVELS =
    ARM64_HW_PGTABLE_LEVELS(va_bits)): level 3 is the pte, 2 the pmd, 1 the pud, 0 the p4d; the
    levels above the first real one are folded (4 levels: pgtable-nop4d.h folds the pgd into the
    p4d; 3: -nopud.h, pgd and p4d fold into the pud; 2: -nopmd.h, everything above into the pmd).

    ``va_bits`` = 52: Linux v6.12's CONFIG_ARM64_VA_BITS_52 with CONFIG_ARM64_PA_BITS_52 on a CPU
    that has the features (vabits_actual = VA_BITS = 52, so pgtable_l4_enabled() and
    pgtable_l5_enabled() are true: arch/arm64/include/asm/pgtable.h:881-888, :1007-1011).  4KB and
    16KB: FEAT_LPA2 with TCR_EL1.DS = 1 (CONFIG_ARM64_LPA2); the 4KB walk starts at level -1 (``L-1``,
    Linux's pgd, CONFIG_PGTABLE_LEVELS = 5; arch/arm64/Kconfig:382-391).  64KB: FEAT_LVA (TxSZ
    down to 12) and FEAT_LPA (52-bit OA).  ``extra["oa"]`` names the OA format (:data:`OA52`) and
    ``extra["pa_bits"]`` the output-address size (TCR_EL1.IPS = 0b110).
    """
    m = GRANULE_SHIFT[granule]
    per = m - 3
    first = start_level(granule, va_bits)
    wide = va_bits > 48
    if not (-1 if wide else 0) <= first <= 2:
        raise ValueError(f"{va_bits}-bit VAs with the {granule}-byte granule need level {first}")
    names = {-1: "pgd", 0: "p4d", 1: "pud", 2: "pmd", 3: "pte"}
    levels = []
    for level in range(first, 4):
        shift = m + per * (3 - level)
        bits = va_bits - shift if level == first else per
        # Linux's leaves: the levels Linux maps folios at (pud/pmd/pte), also with a 52-bit OA,
        # whose extra block levels (BLOCK_LEVELS_52) Linux never creates
        leaf = 1 << shift if level == 3 or level in BLOCK_LEVELS[granule] else None
        levels.append(HwLevel(f"L{level}", shift, bits, names[level], leaf_size=leaf))
    gname = GRANULE_NAME[granule]
    extra: dict[str, object] = {
        "granule": granule,
        "start_level": first,
        # Both halves: TTBR0_EL1 (bits 63:va_bits all 0) and TTBR1_EL1 (all 1), D8.2.
        "halves": ("low", "high"),
        "half_labels": {"high": "ttbr1"},
    }
    if wide:
        extra.update(oa=OA52[granule], pa_bits=52,
                     features=("FEAT_LPA2",) if OA52[granule] == "lpa2" else ("FEAT_LVA", "FEAT_LPA"))
        feats = "FEAT_LPA2, TCR_EL1.DS = 1" if OA52[granule] == "lpa2" else "FEAT_LVA + FEAT_LPA"
        description = description or (f"{gname.upper()} granule, {va_bits}-bit VA and PA ({feats}), "
                                      f"{4 - first} levels from level {first}")
    return PagingConfig(
        ARCH,
        f"{gname}:{va_bits}",
        tuple(levels),
        m,
        va_bits,
        description or f"{gname.upper()} granule, {va_bits}-bit VA, {4 - first} levels from level {first}",
        extra=extra,
    )


#: The configurations of issue 3 (arch/arm64/Kconfig ARM64_VA_BITS_* x ARM64_*K_PAGES), and of
#: issue 17: CONFIG_ARM64_VA_BITS_52 + CONFIG_ARM64_PA_BITS_52 with each granule.
CONFIGS = {
    c.name: c
    for c in (
        make_config(4096, 39),
        make_config(4096, 48),
        make_config(16384, 36),
        make_config(16384, 47),
        make_config(65536, 42),
        make_config(65536, 48),
        make_config(4096, 52),
        make_config(16384, 52),
        make_config(65536, 52),
    )
}


#: Why the 52-bit configurations have no Linux v6.1 model (get_ops() with a v6.1 kconfig refuses
#: them with this reason).
V61_52BIT = ("the 52-bit configurations are modelled on Linux v6.12 only: v6.1 has no CONFIG_ARM64_LPA2 "
             "(FEAT_LPA2 support came in v6.9), and its 64K CONFIG_ARM64_PA_BITS_52 layout is not modelled")


def is_52bit(config: PagingConfig) -> bool:
    """Whether ``config`` needs FEAT_LPA2 or FEAT_LVA/FEAT_LPA (a 52-bit VA and OA)."""
    return config.arch == ARCH and "oa" in config.extra


class Arm64(LinuxPgtable):
    """Linux v6.12's arm64 page-table API (arch/arm64/include/asm/pgtable.h) for one configuration
    (CONFIG_ARM64_PA_BITS_48 -- or, for the 52-bit configurations, CONFIG_ARM64_PA_BITS_52 with
    LPA2 (4K/16K) or 64K's PTE_ADDR_HIGH in bits 15:12 --, CONFIG_TRANSPARENT_HUGEPAGE, CONFIG_NUMA_BALANCING,
    CONFIG_HAVE_ARCH_USERFAULTFD_WP), or v6.1's when ``kconfig.version`` is "6.1" (the module
    says what differs: PTE_PROT_NONE, PMD_PRESENT_INVALID, the swap layout, PTE_ADDR_LOW)."""

    arch = ARCH
    #: arch/arm64/Kconfig selects no HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD: no PUD THP or DAX PUDs,
    #: so ``pud_devmap()`` is 0 and mm/Kconfig's ARCH_SUPPORTS_PUD_PFNMAP is off (``pud_special()``
    #: is the generic ``false``).  The default scenario puts its devmap case at PMD level.
    HAVE_ARCH_TRANSPARENT_HUGEPAGE_PUD = False

    def __init__(self, config: PagingConfig, kernel: str = DEFAULT_KERNEL, *,
                 kconfig: KernelConfig | None = None) -> None:
        super().__init__(config, kernel, kconfig)
        self.granule = 1 << config.page_shift
        self.pgtable_levels = len(config.levels)  # CONFIG_PGTABLE_LEVELS
        version = self.kconfig.version
        self.PTE_ADDR_LOW = pte_addr_low(config.page_shift, version)
        self.PMD_MASK = ~(self.PMD_SIZE - 1)
        self.PUD_MASK = ~(self.PUD_SIZE - 1)
        # The formats (and the masks that move between versions, derived from them) of this
        # kernel version's headers (LINUX_FORMATS).
        pages, blocks, self.swap_fmt = LINUX_FORMATS[version]
        self.page_fmt = pages[self.granule]
        self.block_fmts = blocks
        self.table_fmt = TABLE[self.granule]
        swap = self.swap_fmt
        self._swp_type_shift, self._swp_type_mask = swap.masks["type"][0], (1 << swap.width("type")) - 1
        self._swp_offset_shift, self._swp_offset_mask = swap.masks["offset"][0], (1 << swap.width("offset")) - 1
        self.PTE_SWP_EXCLUSIVE = swap.mask("exclusive")
        # v6.12 PTE_SWP_UFFD_WP (bit 3); v6.1 arm64 has no uffd-wp (no HAVE_ARCH_USERFAULTFD_WP), so
        # pte_swp_clear_uffd_wp() is the generic no-op
        self.PTE_SWP_UFFD_WP = swap.mask("uffd_wp") if "uffd_wp" in swap.fields else 0
        # CONFIG_ARM64_CONTPTE (v6.12 arch/arm64/Kconfig:2412-2415: "depends on
        # TRANSPARENT_HUGEPAGE", default y; new in v6.9, so not in v6.1): ptep_get() of a valid
        # PTE with PTE_CONT is contpte_ptep_get() (pgtable.h:1632-1640)
        self.contpte = version != "6.1" and self.kconfig.enabled("TRANSPARENT_HUGEPAGE")
        self.PTEP_GET_GATHER = PTE_VALID | PTE_CONT if self.contpte else 0
        # pgtable-hwdef.h:84-85 CONT_PTES = 1 << CONFIG_ARM64_CONT_PTE_SHIFT (Kconfig:304-308:
        # 4 with 4K pages, 7 with 16K, 5 with 64K)
        self.CONT_PTES = 1 << {12: 4, 14: 7, 16: 5}[config.page_shift]
        if version == "6.1":
            # the bit that makes a !PTE_VALID entry present: v6.1 PTE_PROT_NONE (bit 58)
            self._present_invalid = self.page_fmt.mask("prot_none")
            self.PMD_PRESENT_INVALID = self.page_fmt.mask("present_invalid")  # bit 59, PMDs only
            self.PAGE_NONE = PAGE_NONE_V61
        else:
            self._present_invalid = PTE_PRESENT_INVALID  # v6.12: nG (bit 11) "only when !PTE_VALID"
            self.PMD_PRESENT_INVALID = 0  # v6.12 has none: pmd_present() is pte_present()
            self.PAGE_NONE = PAGE_NONE
        # -- a 52-bit VA and OA (CONFIG_ARM64_VA_BITS_52 + CONFIG_ARM64_PA_BITS_52, make_config) --
        #: the OA format: "48", "lpa2" (4K/16K, CONFIG_ARM64_LPA2, TCR_EL1.DS = 1) or "lpa" (64K)
        self.oa = str(config.extra.get("oa", "48"))
        self.hw_block_levels = BLOCK_LEVELS[self.granule]
        self.hw_blocks = BLOCK
        #: pgtable-hwdef.h:175-184 PTE_ADDR_HIGH / PTE_ADDR_HIGH_SHIFT / PHYS_TO_PTE_ADDR_MASK
        #: (CONFIG_ARM64_PA_BITS_52 only; 0 without it)
        self.PTE_ADDR_HIGH = self.PTE_ADDR_HIGH_SHIFT = 0
        self.PHYS_TO_PTE_ADDR_MASK = 0
        #: pgtable-prot.h:78-89 PTE_MAYBE_SHARED: 0 when lpa2_is_enabled() (TCR_EL1.DS set)
        self.PTE_MAYBE_SHARED = PTE_SHARED
        self.phys_mask_shift = MAX_PHYSMEM_BITS
        if self.oa != "48":
            if version != "6.12":
                raise ValueError(f"{config.key}: {V61_52BIT}")
            self.table_fmt, self.page_fmt = TABLE52[self.granule], PAGE52[self.granule]
            self.block_fmts = self.hw_blocks = BLOCK52
            self.hw_block_levels = BLOCK_LEVELS_52[self.granule]
            high = self.page_fmt.masks["oa_hi"]
            self.PTE_ADDR_HIGH = high[1]  # 0xf << 12 (64K) / 0x3 << 8 (LPA2)
            self.PTE_ADDR_HIGH_SHIFT = OA_HIGH_BIT[self.oa] - high[0]  # 36 (64K) / 42 (LPA2)
            if self.oa == "lpa2":
                self.PHYS_TO_PTE_ADDR_MASK = ((1 << 50) - 1) & ~((1 << 8) - 1)  # GENMASK_ULL(49, 8)
                self.PTE_MAYBE_SHARED = 0  # lpa2_is_enabled(): TCR_EL1.DS = 1
            else:
                self.PHYS_TO_PTE_ADDR_MASK = self.PTE_ADDR_LOW | self.PTE_ADDR_HIGH
            # PHYS_MASK_SHIFT (pgtable-prot.h:90, lpa2_is_enabled() ? CONFIG_ARM64_PA_BITS : 48;
            # :81 without LPA2) = 52 = MAX_PHYSMEM_BITS (sparsemem.h:10)
            self.phys_mask_shift = 52
            self.pa_bits = 52

    def section_size_bits(self) -> int:
        # arch/arm64/include/asm/sparsemem.h (v6.12 and v6.1): 29 with CONFIG_ARM64_64K_PAGES,
        # else 27 ("16K follows 4K for simplicity")
        return 29 if self.PAGE_SHIFT == 16 else 27

    def max_physmem_bits(self) -> int:
        return self.phys_mask_shift

    def va_valid(self, va: int) -> bool:
        """D8.2: bits 63:va_bits all 0 (TTBR0_EL1) or all 1 (TTBR1_EL1); TBI off.  Unlike x86-64,
        bit va_bits-1 is an ordinary index bit, not part of a sign extension."""
        if not 0 <= va < 1 << 64:
            return False
        top = va >> self.config.va_bits
        return top == 0 or top == (1 << (64 - self.config.va_bits)) - 1

    def hw_level_number(self, linux: str) -> int:
        """The architectural level (0..3) of the hardware level Linux level ``linux`` uses."""
        return int(self.hw_level(linux).name[1:])

    # -- raw predicates (pgtable.h) ----------------------------------------------------------------
    def __pte_to_phys(self, val: int) -> int:
        """v6.12 arch/arm64/include/asm/pgtable.h:75-86: without CONFIG_ARM64_PA_BITS_52
        ``pte_val & PTE_ADDR_LOW``; with it ``pte_val &= ~PTE_MAYBE_SHARED``, then ``(pte_val &
        PTE_ADDR_LOW) | ((pte_val & PTE_ADDR_HIGH) << PTE_ADDR_HIGH_SHIFT)``."""
        if not self.PTE_ADDR_HIGH:
            return val & self.PTE_ADDR_LOW
        val &= ~self.PTE_MAYBE_SHARED
        return (val & self.PTE_ADDR_LOW) | ((val & self.PTE_ADDR_HIGH) << self.PTE_ADDR_HIGH_SHIFT)

    def __phys_to_pte_val(self, phys: int) -> int:
        """pgtable.h:82-85: ``(phys | (phys >> PTE_ADDR_HIGH_SHIFT)) & PHYS_TO_PTE_ADDR_MASK`` with
        CONFIG_ARM64_PA_BITS_52, else ``phys``."""
        if not self.PTE_ADDR_HIGH:
            return phys
        return (phys | (phys >> self.PTE_ADDR_HIGH_SHIFT)) & self.PHYS_TO_PTE_ADDR_MASK

    @staticmethod
    def pte_valid(pte: int) -> bool:
        return bool(pte & PTE_VALID)

    def pte_present_invalid(self, pte: int) -> bool:
        """v6.12 ``pte_present_invalid()``: PTE_PRESENT_INVALID (nG) without PTE_VALID.  v6.1 has no
        such function; the same question there -- present to Linux, invalid to the MMU -- is
        PTE_PROT_NONE without PTE_VALID (v6.1 pgtable.h:102 pte_present())."""
        return pte & (PTE_VALID | self._present_invalid) == self._present_invalid

    def pte_present(self, pte: int) -> bool:
        return self.pte_valid(pte) or self.pte_present_invalid(pte)

    @staticmethod
    def pte_none(pte: int) -> bool:
        return pte == 0

    @staticmethod
    def pte_special(pte: int) -> bool:
        return bool(pte & PTE_SPECIAL)

    @staticmethod
    def pte_devmap(pte: int) -> bool:
        return bool(pte & PTE_DEVMAP)

    @staticmethod
    def pte_write(pte: int) -> bool:
        return bool(pte & PTE_WRITE)

    @staticmethod
    def pte_rdonly(pte: int) -> bool:
        return bool(pte & PTE_RDONLY)

    @staticmethod
    def pte_user(pte: int) -> bool:
        return bool(pte & PTE_USER)

    @staticmethod
    def pte_user_exec(pte: int) -> bool:
        return not pte & PTE_UXN

    @staticmethod
    def pte_young(pte: int) -> bool:
        return bool(pte & PTE_AF)

    @staticmethod
    def pte_cont(pte: int) -> bool:
        return bool(pte & PTE_CONT)

    @staticmethod
    def pte_uffd_wp(pte: int) -> bool:
        return bool(pte & PTE_UFFD_WP)

    def pte_hw_dirty(self, pte: int) -> bool:
        return self.pte_write(pte) and not self.pte_rdonly(pte)

    def pte_dirty(self, pte: int) -> bool:
        return bool(pte & PTE_DIRTY) or self.pte_hw_dirty(pte)

    def pte_mkdirty(self, pte: int) -> int:
        """v6.12 pgtable.h:226-234: PTE_DIRTY set; PTE_RDONLY cleared if pte_write()."""
        pte |= PTE_DIRTY
        return pte & ~PTE_RDONLY if self.pte_write(pte) else pte

    @staticmethod
    def pte_mkyoung(pte: int) -> int:
        """v6.12 pgtable.h:255-258: PTE_AF set."""
        return pte | PTE_AF

    def ptep_get(self, ptep: int, pte: int, read: Reader) -> int:
        """v6.12 arch/arm64/include/asm/pgtable.h:1632-1640 (CONFIG_ARM64_CONTPTE): a PTE that is
        ``pte_valid_cont()`` (:139, PTE_VALID and PTE_CONT) is ``contpte_ptep_get(ptep, pte)``
        (arch/arm64/mm/contpte.c:155-180): for each of the CONT_PTES entries of the naturally
        aligned block (``contpte_align_down()``, :24-27), ``pte_dirty()`` makes the result
        ``pte_mkdirty()`` and ``pte_young()`` makes it ``pte_mkyoung()`` -- the access and dirty
        bits of the whole block gathered into the entry read.  Else the entry itself."""
        if not self.ptep_get_gathers(pte):
            return pte
        block = ptep & ~(self.CONT_PTES * 8 - 1)
        for i in range(self.CONT_PTES):
            other = read(block + 8 * i)
            if self.pte_dirty(other):
                pte = self.pte_mkdirty(pte)
            if self.pte_young(other):
                pte = self.pte_mkyoung(pte)
        return pte

    def pte_protnone(self, pte: int) -> bool:  # CONFIG_NUMA_BALANCING
        if self.kconfig.version == "6.1":
            # linux v6.1 arch/arm64/include/asm/pgtable.h:451-454:
            # (pte_val(pte) & (PTE_VALID | PTE_PROT_NONE)) == PTE_PROT_NONE
            return self.pte_present_invalid(pte)
        return self.pte_present_invalid(pte) and not self.pte_user(pte) and not self.pte_user_exec(pte)

    def pmd_protnone(self, pmd: int) -> bool:
        return self.pte_protnone(pmd)

    def pte_pfn(self, pte: int) -> int:
        return self.__pte_to_phys(pte) >> self.PAGE_SHIFT

    # -- table pointers ------------------------------------------------------------------------------
    def table_pa(self, linux: str, val: int) -> int:
        """``p4d_page_paddr``/``pud_page_paddr``/``pmd_page_paddr``: ``__pXd_to_phys(val)``."""
        return self.__pte_to_phys(val)

    def pgtable_pa(self, linux: str, val: int) -> int:
        """``__pa(__va(table_pa))``: v6.12 arch/arm64/include/asm/memory.h:353 ``__phys_to_virt(x) =
        ((x) - PHYS_OFFSET) | PAGE_OFFSET`` (:393 ``__va``; :45/:44 ``PAGE_OFFSET = -(1 << VA_BITS)``)
        ORs, so table-address bits at or above VA_BITS (PTE_ADDR_LOW reaches bit 49 with 4K/16K
        pages, :87) vanish into PAGE_OFFSET's and the kernel reads the table at ``pa mod
        2**VA_BITS`` through the linear map (:333-335 ``__is_lm_address()``, ``__lm_to_phys(va) =
        va - PAGE_OFFSET + PHYS_OFFSET``).  PHYS_OFFSET (memstart_addr) is 0: foliowalk's RAM starts
        at 0.  A result outside the linear map (at or above PAGE_END - PAGE_OFFSET = 2**(VA_BITS-1))
        is not RAM: the table address itself is returned, which the walk finds beyond RAM."""
        pa = self.table_pa(linux, val)
        va = pa | (U64 & -(1 << self.config.va_bits))  # __phys_to_virt(), PHYS_OFFSET 0
        lm = va - (U64 & -(1 << self.config.va_bits))  # __lm_to_phys()
        return lm if lm < 1 << (self.config.va_bits - 1) else pa

    # -- none / bad ----------------------------------------------------------------------------------
    def entry_none(self, linux: str, val: int) -> bool:
        # p4d_none: pgtable_l4_enabled() && !p4d_val (l4 is on without LPA2); pud_none, pmd_none: !val
        return val == 0

    def pud_table(self, pud: int) -> bool:
        """``pud_table()``: always true with 64K pages or CONFIG_PGTABLE_LEVELS < 3."""
        if self.granule == 65536 or self.pgtable_levels < 3:
            return True
        return pud & PTE_TYPE_MASK == PTE_TYPE_PAGE

    def pud_sect(self, pud: int) -> bool:
        if self.granule == 65536 or self.pgtable_levels < 3:
            return False
        return pud & PTE_TYPE_MASK == PMD_TYPE_SECT

    @staticmethod
    def pmd_table(pmd: int) -> bool:
        return pmd & PTE_TYPE_MASK == PTE_TYPE_PAGE

    @staticmethod
    def pmd_sect(pmd: int) -> bool:
        return pmd & PTE_TYPE_MASK == PMD_TYPE_SECT

    def entry_bad(self, linux: str, val: int) -> bool:
        if linux in ("pgd", "p4d"):  # p4d_bad: pgtable_l4_enabled() && !(p4d_val(p4d) & 2)
            return not val & PTE_TABLE_BIT
        if linux == "pud":
            # v6.12 arch/arm64/include/asm/pgtable.h (CONFIG_PGTABLE_LEVELS > 2): pud_bad() is
            # "(pud_val(pud) & PUD_TYPE_MASK) != PUD_TYPE_TABLE" -- the type bits, even with 64K
            # pages where pud_table() is constant true (found by the kernel harness on 64k:48)
            return val & PTE_TYPE_MASK != PTE_TYPE_PAGE
        if linux == "pmd":
            return not self.pmd_table(val)
        raise ValueError(f"no {linux}_bad on arm64")

    # -- PUD -----------------------------------------------------------------------------------------
    def _pud_present(self, pud: int) -> bool:
        return self.pte_present(pud)

    def _pud_leaf(self, pud: int) -> bool:
        return self.pte_present(pud) and not self.pud_table(pud)

    def pud_devmap(self, pud: int) -> bool:
        return False  # pgtable.h: static inline int pud_devmap(pud_t pud) { return 0; }

    def pud_special(self, pud: int) -> bool:
        return False  # no CONFIG_ARCH_SUPPORTS_PUD_PFNMAP: include/linux/mm.h's false

    def pud_pfn(self, pud: int) -> int:
        return (self.__pte_to_phys(pud) & self.PUD_MASK) >> self.PAGE_SHIFT

    def pud_page_pfn(self, pud: int) -> int:
        """v6.12 arch/arm64/include/asm/pgtable.h:859 ``pud_page(pud)`` is
        ``phys_to_page(__pud_to_phys(pud))`` (:611 ``__pte_to_phys(pud_pte(pud))`` = ``pud_val &
        PTE_ADDR_LOW``, :87; asm/memory.h:360 ``phys_to_page(phys) = pfn_to_page(__phys_to_pfn(phys))``):
        unlike ``pud_pfn()`` (:613) it does not mask with PUD_MASK, so output-address bits below
        PUD_SIZE (RES0 in a block descriptor) stay in the page.  The same in v6.1."""
        return self.__pte_to_phys(pud) >> self.PAGE_SHIFT

    # -- PMD -----------------------------------------------------------------------------------------
    def _pmd_present(self, pmd: int) -> bool:
        # v6.1 arch/arm64/include/asm/pgtable.h:464-467: pte_present(pmd_pte(pmd)) ||
        # pmd_present_invalid(pmd) (PMD_PRESENT_INVALID, bit 59); v6.12: pte_present(pmd_pte(pmd))
        return self.pte_present(pmd) or bool(pmd & self.PMD_PRESENT_INVALID)

    def _pmd_leaf(self, pmd: int) -> bool:
        return self._pmd_present(pmd) and not self.pmd_table(pmd)  # pmd_present() && !pmd_table()

    def pmd_trans_huge(self, pmd: int) -> bool:
        return pmd != 0 and self.pmd_present(pmd) and not pmd & PTE_TABLE_BIT

    def pmd_devmap(self, pmd: int) -> bool:
        return bool(pmd & PTE_DEVMAP)

    def pmd_special(self, pmd: int) -> bool:  # CONFIG_ARCH_SUPPORTS_PMD_PFNMAP
        return bool(pmd & PTE_SPECIAL)

    def pmd_pfn(self, pmd: int) -> int:
        return (self.__pte_to_phys(pmd) & self.PMD_MASK) >> self.PAGE_SHIFT

    # -- swap entries (pgtable.h __swp_* + include/linux/swapops.h) --------------------------------
    # __SWP_TYPE_SHIFT / __SWP_OFFSET_SHIFT come from this version's swap format (self.swap_fmt)
    def __swp_type(self, val: int) -> int:
        return (val >> self._swp_type_shift) & self._swp_type_mask

    def __swp_offset(self, val: int) -> int:
        return (val >> self._swp_offset_shift) & self._swp_offset_mask

    def __swp_entry(self, swp_type: int, offset: int) -> int:
        return (swp_type << self._swp_type_shift) | (offset << self._swp_offset_shift)

    def pte_to_swp_entry(self, pte: int) -> SwpEntry:
        """``pte_to_swp_entry()``: ``pte_swp_clear_flags()`` (exclusive, uffd-wp -- none in v6.1;
        arm64 has no soft-dirty), then ``__swp_type``/``__swp_offset`` of ``__pte_to_swp_entry``
        (= the value)."""
        val = pte & ~(self.PTE_SWP_EXCLUSIVE | self.PTE_SWP_UFFD_WP)
        return SwpEntry(self.__swp_type(val), self.__swp_offset(val))

    def _pmd_to_swp_entry(self, pmd: int) -> SwpEntry:
        val = pmd & ~self.PTE_SWP_UFFD_WP  # pmd_swp_clear_uffd_wp()
        return SwpEntry(self.__swp_type(val), self.__swp_offset(val))

    def swp_entry_to_pte(self, entry: SwpEntry, *, exclusive: bool = False) -> int:
        """``swp_entry_to_pte()`` = ``__swp_entry_to_pte(__swp_entry(type, offset))``, and
        ``pte_swp_mkexclusive()`` if ``exclusive``."""
        if not 0 <= entry.type <= self._swp_type_mask or not 0 <= entry.offset <= self._swp_offset_mask:
            raise ValueError(f"swap entry {entry} does not fit arm64's 5-bit type / 50-bit offset")
        return self.__swp_entry(entry.type, entry.offset) | (self.PTE_SWP_EXCLUSIVE if exclusive else 0)

    def swp_entry_to_pmd(self, entry: SwpEntry) -> int:
        return self.swp_entry_to_pte(entry)

    # -- building entries ----------------------------------------------------------------------------
    def mk_table(self, linux: str, table_pa: int) -> int:
        """``p4d_populate``/``pud_populate``/``pmd_populate`` for a user mm (pgalloc.h):
        ``PXX_TYPE_TABLE | PXX_TABLE_PXN | pa``."""
        if table_pa % self.granule or not 0 <= table_pa < 1 << self.phys_mask_shift:
            raise ValueError(f"table address {table_pa:#x} is not a {self.granule}-aligned "
                             f"{self.phys_mask_shift}-bit address")
        # __pXd_populate(): set_pXd(pXdp, __pXd(__phys_to_pXd_val(pa) | prot))
        return self.table_fmt.build(valid=1, table=1, pxn_table=1) | self.__phys_to_pte_val(table_pa)

    def prot_bits(self, prot: Prot) -> int:
        """pgprot bits for ``prot`` (pgtable-prot.h), as a fault-in leaves them.

        PROT_NONE: ``PAGE_NONE``.  User: ``_PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG |
        PTE_PXN`` (+ ``PTE_UXN`` unless exec, + ``PTE_WRITE`` if write) as ``PAGE_READONLY`` /
        ``PAGE_SHARED`` / ``*_EXEC``.  Kernel: ``PROT_NORMAL`` (``PTE_PXN | PTE_UXN | PTE_WRITE``;
        exec clears PXN, read-only is ``_PAGE_KERNEL_RO``).  Then ``pte_mkdirty()`` (PTE_DIRTY,
        and PTE_RDONLY cleared if writable), ``pte_mkold()`` if not young, ``pte_mkspecial()`` --
        on PAGE_NONE as on any other pgprot (a NUMA-hinting entry keeps its old AF and dirtiness;
        found by the kernel harness's pfn_pte op).
        """
        if prot.protnone:
            val = self.PAGE_NONE
        else:
            val = _PAGE_DEFAULT | PTE_RDONLY
            if prot.user:
                val |= PTE_USER | PTE_NG | PTE_PXN | (0 if prot.exec else PTE_UXN)
            else:
                val |= PTE_UXN | (0 if prot.exec else PTE_PXN)
            if prot.write:
                val |= PTE_WRITE
        if not self.PTE_MAYBE_SHARED:
            # v6.12 arch/arm64/mm/mmap.c:78-80 adjust_protection_map(): with lpa2_is_enabled() every
            # protection_map[] entry loses PTE_SHARED (bits 9:8 are OA[51:50]); PROT_NORMAL has
            # PTE_MAYBE_SHARED = 0 (pgtable-prot.h:40, :88)
            val &= ~PTE_SHARED
        if prot.dirty:
            val |= PTE_DIRTY
            if val & PTE_WRITE:  # pte_mkdirty(): "if (pte_write(pte))"
                val &= ~PTE_RDONLY
        if not prot.young:
            val &= ~PTE_AF
        if prot.special:
            val |= PTE_SPECIAL
        return val

    def _check_pfn(self, pfn: int, size: int) -> int:
        pa = pfn << self.PAGE_SHIFT
        if pfn < 0 or pa % size or pa >> self.phys_mask_shift:
            raise ValueError(f"pfn {pfn:#x} is not a {size:#x}-aligned {self.phys_mask_shift}-bit physical address")
        return self.__phys_to_pte_val(pa)  # pfn_pte(): __phys_to_pte_val(pfn << PAGE_SHIFT) | prot

    def pfn_pte(self, pfn: int, prot: Prot) -> int:
        """``pfn_pte(pfn, prot)``; devmap is ``pte_mkdevmap()`` (PTE_DEVMAP | PTE_SPECIAL)."""
        val = self._check_pfn(pfn, self.PAGE_SIZE) | self.prot_bits(prot)
        return val | (PTE_DEVMAP | PTE_SPECIAL if prot.devmap else 0)

    def pfn_pmd(self, pfn: int, prot: Prot) -> int:
        """``pmd_mkhuge(pfn_pmd(pfn, prot))``: bits[1:0] = 0b01 (a block, or 0b00 for PROT_NONE);
        devmap is ``pmd_mkdevmap()`` (PTE_DEVMAP only)."""
        self.check_pmd_prot(prot)
        val = self._check_pfn(pfn, self.PMD_SIZE) | self.prot_bits(prot)
        return (val & ~PTE_TABLE_BIT) | (PTE_DEVMAP if prot.devmap else 0)

    def pfn_pud(self, pfn: int, prot: Prot) -> int:
        """``pud_mkhuge(pfn_pud(pfn, prot))``.  ``prot.devmap`` sets PTE_DEVMAP although arm64 has
        no ``pud_mkdevmap()`` and ``pud_devmap()`` ignores it."""
        val = self._check_pfn(pfn, self.PUD_SIZE) | self.prot_bits(prot)
        return (val & ~PTE_TABLE_BIT) | (PTE_DEVMAP if prot.devmap else 0)

    def clear_bad_is_noop(self, linux: str) -> bool:
        """arm64 includes asm-generic/pgtable-nop4d.h below 5 levels and pgtable-nopud.h below 4
        (v6.12 arch/arm64/include/asm/pgtable-types.h), so p4d_clear_bad() / pud_clear_bad() do
        nothing there -- yet with 4 levels p4d_bad() is arm64's own test of the level-0 entry
        (pgtable.h:900): folio_walk_start() returns NULL for a bad level-0 entry and leaves it
        (found by the compiled walk on arm64:4k:48; the model had cleared it)."""
        return (linux == "p4d" and self.pgtable_levels < 5) or (linux == "pud" and self.pgtable_levels < 4)

    @staticmethod
    def pte_mkspecial(pte: int) -> int:
        """v6.12 arch/arm64/include/asm/pgtable.h:260: ``set_pte_bit(pte, PTE_SPECIAL)``."""
        return pte | PTE_SPECIAL

    @staticmethod
    def pmd_mkhuge(pmd: int) -> int:
        """v6.12 arch/arm64/include/asm/pgtable.h:581: ``pmd_val(pmd) & ~PMD_TABLE_BIT``."""
        return pmd & ~PTE_TABLE_BIT

    def pmd_mkinvalid(self, pmd: int) -> int:
        """v6.12 pgtable.h:568 ``pte_mkinvalid()``: PTE_PRESENT_INVALID set, PTE_VALID cleared;
        v6.1 pgtable.h:493: PMD_PRESENT_INVALID (bit 59) set, PMD_SECT_VALID cleared."""
        if self.kconfig.version == "6.1":
            return (pmd | PMD_PRESENT_INVALID) & ~PTE_VALID
        return (pmd | PTE_PRESENT_INVALID) & ~PTE_VALID

    def mk_bad(self, linux: str, val: int) -> int:
        """An entry ``pXd_bad()`` rejects: the table bit cleared (``!(val & 2)``).  To the MMU it
        is then a block descriptor, which levels without blocks must fault on (D8.3)."""
        return val & ~PTE_TABLE_BIT

    # -- decoding for people -------------------------------------------------------------------------
    def entry_format(self, linux: str, val: int) -> EntryFormat:
        """The format an entry at Linux level ``linux`` has, by its own bits."""
        level = self.hw_level_number(linux)
        if not val & PTE_VALID:
            present = self.pte_present_invalid(val) or (linux == "pmd" and self._pmd_present(val))
            if val and linux in ("pmd", "pte") and not present:
                return self.swap_fmt
            if not present:
                return self.page_fmt if level == 3 else self.table_fmt
        if level == 3:
            return self.page_fmt
        if val & PTE_TABLE_BIT:
            return self.table_fmt
        return self.block_fmts[(self.granule, level)]

    def hw_oa(self, fmt: EntryFormat, val: int) -> int:
        """The address a descriptor of format ``fmt`` gives the walk (D8.3): its address field,
        and OA / NLTA[51:50] from bits 9:8 (LPA2) or [51:48] from bits 15:12 (64KB, LPA).  48-bit
        formats: bits 49:48 count too (see :meth:`hw_fault`, step 4).  64KB with a 52-bit OA:
        bits 49:48 are RES0 and not part of the address (QEMU 7.2's walker masks them off)."""
        if "oa_hi" not in fmt.fields:
            return val & (fmt.mask("addr") | _OA_49_48)
        return (val & fmt.mask("addr")) | (fmt.get(val, "oa_hi") << OA_HIGH_BIT[self.oa])

    def decode(self, linux: str, val: int) -> dict[str, int]:
        fmt = self.entry_format(linux, val)
        return {"format": fmt.name, **fmt.parse(val)}  # type: ignore[dict-item]

    # -- the architecture's own view of a descriptor (Arm ARM D8): the third party -------------------
    #: The effective output-address size of the PE that walks the tables: TCR_EL1.IPS capped by
    #: ID_AA64MMFR0_EL1.PARange (Arm ARM D8 "Address size configuration").  Linux programs IPS
    #: from PARange (``tcr_compute_pa_size``), at most CONFIG_ARM64_PA_BITS = 48, so a PE with a
    #: 48-bit PARange has every descriptor address bit (47:m) in range and no Address size fault
    #: can come from an entry.  Set it lower for a PE with a smaller PARange (Unicorn's Cortex-A72:
    #: 44, emu/machines/deviations.py ARM64_EFFECTIVE_PA_BITS; Unicorn never gives the fault, so the rows
    #: are ``emulator-deviation: no-address-size-fault`` before this view is asked).
    pa_bits = OA_BITS

    def hw_fault(self, linux: str, val: int) -> tuple[str, int, str] | None:
        """The fault the architecture's stage-1 walk takes at this descriptor when a lookup
        reaches it, as ``(kind, level, why)`` -- ``kind`` as PAR_EL1.FST names it
        (``translation``, ``address-size``, ``access-flag``) and ``level`` the lookup level
        (0..3) -- or None if the walk goes on through it (a table descriptor) or translates
        with it (a block or page descriptor).

        The checks, in the order the walk makes them (Arm ARM DDI 0487 D8 "Translation table
        descriptor formats", "Address size configuration", "The Access flag"; pseudocode
        AArch64.TranslationTableWalk / AArch64.S1Walk), for this PE: VMSAv8-64 without FEAT_LPA
        / FEAT_LPA2 (48-bit descriptors) -- or, for the 52-bit configurations, with them and the
        52-bit formats (:meth:`hw_oa`; block levels :data:`BLOCK_LEVELS_52`; level -1 for 4KB) --,
        without FEAT_HAFDBS or with TCR_EL1.HA = 0 (no hardware Access flag update), EL1&0 Non-secure:

        1. bit[0] = 0: an invalid descriptor, Translation fault at this level.
        2. bits[1:0] = 0b01 at level 3: the reserved encoding, which behaves as invalid.
        3. bits[1:0] = 0b01 at a level with no block descriptor for the granule
           (:data:`BLOCK_LEVELS`: 4KB level 0, 16KB levels 0 and 1, 64KB level 1; with a 52-bit
           OA :data:`BLOCK_LEVELS_52`: 4KB level -1, 16KB level 0): invalid, Translation fault at
           this level.
        4. A table, block or page address with a bit at or above :attr:`pa_bits`: Address size
           fault at this level (for a table, before the next level is read).  Bits 49:48 count
           as address bits: RES0 with a 48-bit OA, they are OA[49:48] to Linux's PTE_ADDR_LOW,
           to the LPA2 formats and to QEMU's current walker (whose 50-bit descriptor address
           then fails its OA range check); this is the reading the registered
           ``no-address-size-fault`` deviation takes (Unicorn drops them and translates).
        5. A block or page with AF = 0: Access flag fault at this level.

        Permission faults depend on the access, not on the descriptor, and are not named here.
        Other bits the architecture reserves (RES0) or leaves to software (IGNORED) in a valid
        descriptor do not fault: bits n-1:12 of a block are not part of its output address
        (Unicorn ORs them in: the ``block-oa-ored`` deviation), bits 51:50 are DBM/GP in a leaf
        and RES0/IGNORED in a table, and the Contiguous bit's misprogramming check applies only
        to input ranges under 2**34 bytes, smaller than every configuration here.  Whether Linux
        took the entry for a table or a leaf does not matter: the descriptor's own type bits
        decide.
        """
        level = self.hw_level_number(linux)
        if not val & PTE_VALID:
            extra = ""
            if self.kconfig.version == "6.1" and val & PTE_PROT_NONE:
                extra = ", bit 58 set: Linux v6.1's PTE_PROT_NONE"
            elif self.kconfig.version != "6.1" and val & PTE_PRESENT_INVALID:
                extra = ", nG set: Linux's PTE_PRESENT_INVALID"
            return ("translation", level, f"invalid descriptor (bit[0] = 0{extra})")
        if not val & PTE_TABLE_BIT:
            if level == 3:
                return ("translation", level, "reserved descriptor encoding bits[1:0] = 0b01 at level 3 "
                        "(behaves as invalid)")
            if level not in self.hw_block_levels:
                feats = "with a 52-bit OA" if self.oa != "48" else "without FEAT_LPA/FEAT_LPA2"
                return ("translation", level, f"block descriptor (bits[1:0] = 0b01) at level {level}, where "
                        f"the {self.granule // 1024}KB granule has no blocks ({feats})")
            fmt, what = self.hw_blocks[(self.granule, level)], "block output"
        elif level < 3:
            fmt, what = self.table_fmt, "next-level table"
        else:
            fmt, what = self.page_fmt, "page output"
        addr = self.hw_oa(fmt, val)
        if addr >> self.pa_bits:
            return ("address-size", level, f"{what} address {addr:#x} is at or above the {self.pa_bits}-bit "
                    "PA size")
        if fmt is not self.table_fmt and not val & PTE_AF:
            return ("access-flag", level, "AF = 0, an old page (pte_mkold(); no hardware Access flag "
                    "update, TCR_EL1.HA = 0)")
        return None

    _FAULT_NAME = {"translation": "Translation", "address-size": "Address size", "access-flag": "Access flag"}
    _FAULT_SECTION = {
        "translation": "D8 'Translation table descriptor formats'",
        "address-size": "D8 'Address size configuration'",
        "access-flag": "D8 'The Access flag'",
    }

    def hw_rejects(self, linux: str, val: int, *, leaf: bool, addr: int | None = None) -> str | None:
        """Why the MMU faults at this descriptor (:meth:`hw_fault`), with the fault kind and
        level the architecture gives and its Arm ARM section.  Neither ``leaf`` nor ``addr``
        matters on arm64: the descriptor's own type bits decide (not Linux's reading of them),
        and no check depends on the address translated."""
        fault = self.hw_fault(linux, val)
        if fault is None:
            return None
        kind, level, why = fault
        return f"{why}: {self._FAULT_NAME[kind]} fault, level {level} (Arm ARM {self._FAULT_SECTION[kind]})"

    def walk_diverges(self, trace: list[tuple[str, int, int]], addr: int) -> str | None:
        """Linux reads a next-level table through ``__va()`` (:meth:`pgtable_pa`), which ORs a
        table address's bits at or above VA_BITS into PAGE_OFFSET: where the walk went on below
        such an entry, it read the table at ``pa mod 2**VA_BITS``, the MMU at ``pa`` itself (or an
        Address size fault).  The two walks then read other entries -- by Linux's convention."""
        for (lv, pa, val), (nlv, npa, _nval) in zip(trace, trace[1:], strict=False):
            if nlv == lv or lv == "pte":
                continue  # a re-read of the same entry (or the last level)
            linux_table, hw_table = self.pgtable_pa(lv, val), self.table_pa(lv, val)
            size = self.hw_level(nlv).table_size
            if linux_table != hw_table and linux_table <= npa < linux_table + size:
                return (f"__va() ORs the {lv} entry's table address {hw_table:#x} into PAGE_OFFSET "
                        f"({val:#x} at {pa:#x}): Linux reads the {nlv} table at {linux_table:#x}, the MMU "
                        f"at {hw_table:#x}")
        if self.oa == "lpa":
            # 64K with CONFIG_ARM64_PA_BITS_52: v6.12's PTE_ADDR_LOW reaches bit 49
            # (pgtable-hwdef.h:174, widened for LPA2), so __pte_to_phys() takes descriptor bits
            # 49:48 as OA[49:48] (ORed with bits 15:12 << 36); in the 64KB 52-bit OA format they are
            # RES0 and the walk does not use them (hw_oa; QEMU 7.2 masks them off): a table or
            # output address with them set is read at two different places
            for lv, pa, val in trace:
                if not val & PTE_VALID:
                    break
                if self.hw_level_number(lv) == 1 and val & PTE_TYPE_MASK == PMD_TYPE_SECT:
                    # v6.12 pgtable.h:727-729: pud_table() is constant true with 64K pages, so
                    # folio_walk_start() goes on to a pmd table; with a 52-bit PA the 64KB granule
                    # has level-1 blocks (D8.3, AArch64.BlockDescSupported): the MMU maps 4TB
                    return (f"Linux reads the {lv} entry {val:#x} at {pa:#x} as a table (pud_table() is true "
                            "with 64K pages, v6.12 pgtable.h:729), the MMU as a 4TB level-1 block (the 64KB "
                            "granule with a 52-bit PA, Arm ARM D8.3)")
                if val & _OA_49_48:
                    return (f"{lv} entry {val:#x} at {pa:#x} has bits 49:48 set: OA[49:48] to Linux's "
                            "PTE_ADDR_LOW (v6.12 pgtable-hwdef.h:174), RES0 and unused in the Arm ARM's "
                            "64KB 52-bit OA format (D8.3): Linux and the MMU read different addresses")
        return None

    def hw_absent_reason(self, linux: str, val: int) -> str | None:
        """A leaf Linux treats as present (``pte_present()``/``pmd_present()``) that the MMU
        refuses by design: PROT_NONE; ``present-invalid``, nG with bit[0] clear but not PROT_NONE
        (``pte_mkinvalid()``/``pmd_mkinvalid()``, e.g. ``pmdp_invalidate()`` while a THP is
        split); ``old-page``, AF = 0 (``pte_mkold()``: the next access takes an Access flag fault
        and Linux's handler makes it young), where AF is what the walk stops at.  v6.1: a PMD with
        PMD_PRESENT_INVALID (bit 59) and bit[0] clear (v6.1 ``pmd_mkinvalid()``, pgtable.h:493)."""
        why = super().hw_absent_reason(linux, val)
        if why:
            return why
        if self.pte_present_invalid(val):
            return "present-invalid (nG set, bit[0] clear: pte_mkinvalid(); Translation fault)"
        if linux == "pmd" and val & self.PMD_PRESENT_INVALID and not val & PTE_VALID:
            return "present-invalid (PMD_PRESENT_INVALID set, bit[0] clear: pmd_mkinvalid(); Translation fault)"
        fault = self.hw_fault(linux, val)
        if fault is not None and fault[0] == "access-flag":
            return "old-page (AF = 0: pte_mkold(); Access flag fault)"
        return None


OPS_CLASS = Arm64


# -- the architecture's whole walk: foreign tables by the manual (Arm ARM DDI 0487 D8) ------------------
#: CPU facts :func:`translate` takes (``cpu=``): ``pa_bits``, the PE's effective output-address
#: size (TCR_EL1.IPS capped by ID_AA64MMFR0_EL1.PARange; 48 = every descriptor address bit is in
#: range; Unicorn's Cortex-A72: 44, a registered deviation); ``wxn`` (SCTLR_EL1.WXN: writable
#: means execute-never); ``pan`` (PSTATE.PAN applies to this access: no EL1 data access to an
#: EL0-accessible page -- loads/stores and AT S1E1RP/S1E1WP, not AT S1E1R/S1E1W, not fetches);
#: ``ha`` (TCR_EL1.HA as programmed) and ``hafdbs`` (ID_AA64MMFR1_EL1.HAFDBS != 0: FEAT_HAFDBS
#: implemented; without it TCR_EL1.HA is RES0, D19 "TCR_EL1"): hardware Access flag update;
#: ``hpd0``/``hpd1`` (TCR_EL1.HPD0/HPD1 with FEAT_HPDS: hierarchical permissions disabled for the
#: TTBR0/TTBR1 half -- APTable, UXNTable, PXNTable are ignored, D8.4).
TRANSLATE_CPU: dict[str, object] = {"pa_bits": OA_BITS, "wxn": False, "pan": False, "ha": False,
                                    "hafdbs": False, "hpd0": False, "hpd1": False}

#: PAR_EL1.FST / ESR ISS.DFSC fault status codes (D19 PAR_EL1; ``0bKKKKLL``, LL = level).
FST_BASE = {"address-size": 0b000000, "translation": 0b000100, "access-flag": 0b001000, "permission": 0b001100}
#: Level -1 (FEAT_LPA2, 4KB granule, 52-bit VA): D19 PAR_EL1.FST 0b101001 Address size fault,
#: level -1 and 0b101011 Translation fault, level -1 (no block at level -1, so no other kind).
FST_LEVEL_MINUS_1 = {"address-size": 0b101001, "translation": 0b101011}


def fault_status(kind: str, level: int) -> int:
    """PAR_EL1.FST of a ``kind`` fault at lookup ``level`` (-1..3)."""
    return FST_LEVEL_MINUS_1[kind] if level == -1 else FST_BASE[kind] | level
_VA_RANGE = "Arm ARM D8.2 'Translation table base address selection': VA outside both TxSZ ranges"


def parse_config(key: str) -> PagingConfig:
    """``arm64:<granule>:<va_bits>`` (e.g. ``arm64:16k:48``) or ``<granule>:<va_bits>``: any
    granule and VA size whose walk starts at level 0..2 (D8.2), not only the named ones, and
    52 (the 52-bit configurations, :func:`make_config`)."""
    parts = key.split(":")
    if parts and parts[0] in ("arm64", "aarch64"):
        parts = parts[1:]
    names = {v: k for k, v in GRANULE_NAME.items()}
    if len(parts) != 2 or parts[0] not in names or not parts[1].isdigit():
        raise ValueError(f"arm64 configuration {key!r} is not <granule>:<va_bits> with a granule of 4k, 16k or 64k")
    granule, va_bits = names[parts[0]], int(parts[1])
    if not (25 <= va_bits <= 48 or va_bits == 52):
        raise ValueError(f"arm64 {va_bits}-bit VAs: TxSZ {64 - va_bits} is outside 16..39 (D8.2, without FEAT_LVA/"
                         "FEAT_LPA2), and not 52 (CONFIG_ARM64_VA_BITS_52, TxSZ 12)")
    return make_config(granule, va_bits)


def _arm64_ops(config_or_ops: object, va_bits: int | None = None) -> Arm64:
    if isinstance(config_or_ops, Arm64):
        config = config_or_ops.config
    elif isinstance(config_or_ops, PagingConfig):
        config = config_or_ops
    else:
        config = parse_config(str(config_or_ops))
    if config.arch != ARCH:
        raise ValueError(f"{config.key} is not an arm64 configuration")
    if va_bits is not None and va_bits != config.va_bits:
        config = parse_config(f"{GRANULE_NAME[1 << config.page_shift]}:{va_bits}")
    return Arm64(config)


@functools.lru_cache(maxsize=64)
def _arm64_ops_cached(key: str, va_bits: int | None) -> Arm64:
    return _arm64_ops(key, va_bits)


def translate(config_or_ops: object, read: Reader, va: int, access: object = "read", *,
              ttbr0: int | None = None, ttbr1: int | None = None, t1sz: int | None = None,
              cpu: dict[str, object] | None = None, decode: bool = True) -> Translation | Fault:
    """What the Arm ARM says a stage-1 EL1&0 access (``read``/``write``/``fetch``; ``user-``
    prefixed for EL0) to ``va`` does, with TTBR0_EL1 = ``ttbr0`` and TTBR1_EL1 = ``ttbr1`` (None:
    that half disabled, TCR_EL1.EPDn = 1) over the tables ``read(pa)`` returns: an
    :class:`archs.translate.Translation` or :class:`archs.translate.Fault` (level ``L0``..``L3``,
    code the FST).

    ``config_or_ops``: ``arm64:<granule>:<va_bits>`` (TCR_EL1.TG0/TG1 and T0SZ = 64 - va_bits),
    a :class:`PagingConfig` or an :class:`Arm64`; ``t1sz``: TCR_EL1.T1SZ when it differs from T0SZ.
    TBI off; TCR_EL1.HPDn and hardware Access flag management as ``cpu`` says; FEAT_LPA2 (DS = 1) /
    FEAT_LVA + FEAT_LPA only for the 52-bit configurations (``arm64:<granule>:52``: 52-bit OA
    formats, BADDR[51:48] in TTBR bits 5:2, the 4KB walk from level -1 with its fault codes).  The
    rules (D8.2, D8.3, D8.4; pseudocode AArch64.S1Translate / AArch64.S1Walk):

    * bits 63:64-T0SZ all 0 select TTBR0, bits 63:64-T1SZ all 1 TTBR1; anything else, or a
      disabled half: Translation fault, level 0;
    * BADDR (TTBRn bits 47:1, aligned to the initial table) at or above the PA size: Address size
      fault, level 0; each descriptor at ``table + 8 * index`` of the level's VA field;
    * per descriptor (:meth:`Arm64.hw_fault`): invalid, a block where the granule has none, the
      reserved level-3 encoding: Translation fault; an address at or above the PA size: Address
      size fault; AF = 0: Access flag fault -- each at the descriptor's level;
    * AF = 0 in the leaf is an Access flag fault at its level -- before any permission check
      (pseudocode AArch64.TranslationTableWalk "Check the access flag" returns the fault, and
      AArch64.FirstStageTranslate checks permissions only on a walk without one) -- unless the
      hardware manages the Access flag (``ha`` and ``hafdbs``, D8 "Hardware management of the
      Access flag"): then the walk goes on and the PE sets AF (:func:`access_flag`);
    * permissions (D8.4 "Memory access control", pseudocode AArch64.CheckPermission /
      AArch64.S1DirectBasePermissions): AP[2:1] with APTable (APTable[0]: no EL0 access below,
      APTable[1]: read-only below), UXN/PXN ORed with UXNTable/PXNTable (the table controls are
      ignored with ``hpd0``/``hpd1`` for the half walked, D8.4 "Hierarchical control of
      access permissions", TCR_EL1.HPDn), EL0-writable implies
      PXN, WXN (writable at the accessing EL implies execute-never), PAN (``pan``: an EL1 data
      access to a page EL0 can read is refused; instruction fetches are never PAN-checked): a
      violation is a Permission fault at the leaf's level.

    ``decode=False`` leaves each trace entry's ``fields`` empty (campaigns such as ``foliowalk
    conform`` need only the values).
    """

    kind, user = parse_access(access)
    if not 0 <= va < 1 << 64:
        raise ValueError(f"virtual address {va!r} is not a 64-bit value")
    if isinstance(config_or_ops, str):
        low = _arm64_ops_cached(config_or_ops, None)
        high = low if t1sz is None else _arm64_ops_cached(config_or_ops, 64 - t1sz)
    else:
        low = _arm64_ops(config_or_ops)
        high = low if t1sz is None else _arm64_ops(low, 64 - t1sz)
    # a 52-bit configuration's PE has a 52-bit PA size unless ``cpu`` says otherwise (from the
    # configuration: a cached ops' pa_bits is the last call's)
    facts = cpu_facts({**TRANSLATE_CPU, "pa_bits": int(low.config.extra.get("pa_bits", OA_BITS))}, cpu, ARCH)
    if va >> low.config.va_bits == 0:
        ops, ttbr, half = low, ttbr0, "TTBR0_EL1"
    elif va >> high.config.va_bits == (1 << (64 - high.config.va_bits)) - 1:
        ops, ttbr, half = high, ttbr1, "TTBR1_EL1"
    else:
        return Fault("translation", "L0", FST_BASE["translation"],
                     f"bits 63:{low.config.va_bits} of {va:#x} are neither all 0 (T0SZ {64 - low.config.va_bits}) "
                     f"nor bits 63:{high.config.va_bits} all 1 (T1SZ {64 - high.config.va_bits}): {_VA_RANGE}, "
                     "Translation fault level 0", ())
    if ttbr is None:
        return Fault("translation", "L0", FST_BASE["translation"],
                     f"{va:#x} is in the {half} half, whose walks are disabled (TCR_EL1.EPD{half[4]} = 1): "
                     "Arm ARM D19 TCR_EL1.EPDn, Translation fault level 0", ())
    ops.pa_bits = int(facts["pa_bits"])  # type: ignore[call-overload]
    first = ops.config.levels[0]
    size = max(first.table_size, 64)
    base = ttbr & ((1 << OA_BITS) - 1) & ~1  # BADDR, bits 47:1 (bit 0 is CnP)
    if ops.oa != "48":  # D19 TTBRn_EL1 with a 52-bit OA: BADDR[51:48] in bits [5:2], [47:6] above
        base = (ttbr & ((1 << OA_BITS) - 1) & ~0x3F) | (((ttbr >> 2) & 0xF) << 48)
    if base % size:
        raise ValueError(f"{half} {ttbr:#x}: BADDR is not aligned to the {size}-byte level-{first.name[1:]} table "
                         "(D19 TTBRn_EL1: the low bits are RES0)")
    if base >> ops.pa_bits:
        return Fault("address-size", "L0", FST_BASE["address-size"],
                     f"{half} base address {base:#x} is at or above the {ops.pa_bits}-bit PA size: "
                     "Arm ARM D8 'Address size configuration', Address size fault level 0", ())
    trace: list[Entry] = []
    table = base
    no_el0 = read_only = uxn = pxn = False
    hw_af = bool(facts["ha"]) and bool(facts["hafdbs"])
    hpd = bool(facts["hpd0"] if half == "TTBR0_EL1" else facts["hpd1"])
    for lv in ops.config.levels:
        pa = table + 8 * lv.index(va)
        val = read_entry(read, pa)
        fmt = ops.entry_format(lv.linux, val) if val & PTE_VALID else (
            ops.page_fmt if lv.name == "L3" else ops.table_fmt)
        trace.append(Entry(lv.name, pa, val, fmt.name, fmt.parse(val) if decode else {}))
        fault = ops.hw_fault(lv.linux, val)
        if fault is not None and fault[0] == "access-flag" and hw_af:
            fault = None  # the PE sets AF itself (D8 "Hardware management of the Access flag")
        if fault is not None:
            fkind, level, _why = fault
            return Fault(fkind, f"L{level}", fault_status(fkind, level),
                         str(ops.hw_rejects(lv.linux, val, leaf=False)), tuple(trace))
        if fmt is ops.table_fmt and hpd:  # TCR_EL1.HPDn = 1: the table controls are ignored
            table = ops.hw_oa(fmt, val)
            continue
        if fmt is ops.table_fmt:  # hierarchical controls (D8.4, TCR_EL1.HPDn = 0)
            ap_table = fmt.get(val, "ap_table")
            no_el0 |= bool(ap_table & 1)
            read_only |= bool(ap_table & 2)
            uxn |= bool(fmt.get(val, "uxn_table"))
            pxn |= bool(fmt.get(val, "pxn_table"))
            table = ops.hw_oa(fmt, val)
            continue
        leaf = 1 << lv.shift  # a page, or a block of this level (also one Linux never makes)
        out = ops.hw_oa(fmt, val) | (va & (leaf - 1))
        el0 = bool(val & PTE_USER) and not no_el0
        ro = bool(val & PTE_RDONLY) or read_only
        el0_write = el0 and not ro
        if user:
            # EL0 execute is UXN/UXNTable alone, not AP[1]/APTable[0]: AP[1] = 0 with UXN = 0 is
            # execute-only memory at EL0 (pseudocode: ux = NOT(uxn OR uxn_table); Linux's
            # PAGE_EXECONLY relies on it)
            perms = Permissions(read=el0, write=el0_write, execute=not (uxn or val & PTE_UXN), user=el0)
        else:
            pan = bool(facts["pan"]) and el0 and kind != "fetch"  # PAN: data accesses only
            perms = Permissions(read=not pan, write=not ro and not pan,
                                execute=not (pxn or val & PTE_PXN or el0_write), user=el0)
        if facts["wxn"] and perms.write:  # x = x AND NOT(wxn AND w), w of the accessing EL
            perms = Permissions(perms.read, perms.write, False, perms.user)
        refused = {"read": not perms.read, "write": not perms.write, "fetch": not perms.execute}[kind]
        level = int(lv.name[1:])
        if refused:
            return Fault("permission", lv.name, FST_BASE["permission"] | level,
                         f"EL{0 if user else 1} {kind} not permitted ({perms}; AP[2:1] "
                         f"{fmt.get(val, 'ap2')}{fmt.get(val, 'ap1')}, APTable {int(read_only)}{int(no_el0)}, "
                         f"UXN {int(uxn or bool(val & PTE_UXN))}, PXN {int(pxn or bool(val & PTE_PXN))}): Arm ARM D8.4 "
                         f"'Memory access control', Permission fault level {level}", tuple(trace))
        return Translation(out, leaf, perms, tuple(trace))
    raise AssertionError("level 3 holds pages")  # pragma: no cover


# -- the Access flag after an access (Arm ARM D8 "The Access flag") -------------------------------------
#: A descriptor's AF after the access: set, unchanged, or left open by the manual.
AF_SET, AF_KEEP, AF_OPEN = "set", "unchanged", "open"


def access_flag(result: Translation | Fault, cpu: dict[str, object] | None = None) -> tuple[tuple[str, str], ...]:
    """What the access that gave ``result`` (:func:`translate`'s answer, with its ``trace``, run
    with the same ``cpu``) does to the descriptors it read: ``((level, AF), ...)`` top down, AF
    :data:`AF_SET`, :data:`AF_KEEP` or :data:`AF_OPEN`; every other descriptor bit is unchanged.

    Arm ARM D8 "The Access flag": without hardware management (TCR_EL1.HA = 0, or FEAT_HAFDBS
    not implemented, when HA is RES0) the PE never writes a descriptor: AF = 0 gives an Access
    flag fault and software sets AF -- every descriptor is unchanged.  With it ("Hardware
    management of the Access flag"), a translation that completes sets AF in the block or page
    descriptor; pseudocode AArch64.SettingAccessFlagPermitted: after a Permission fault setting
    it is CONSTRAINED UNPREDICTABLE (open), after any other fault it is not set.  Table
    descriptors have no AF (bits 11:2 are IGNORED; FEAT_HAFT, which adds one, is not modelled),
    and the dirty state (AP[2] with DBM, TCR_EL1.HD) is not in this model: descriptors with
    DBM = 0 are never written by it.
    """
    facts = cpu_facts(TRANSLATE_CPU, cpu, ARCH)
    hw_af = bool(facts["ha"]) and bool(facts["hafdbs"])
    trace = result.trace
    out: list[tuple[str, str]] = []
    for i, e in enumerate(trace):
        leaf = i == len(trace) - 1 and e.value & PTE_VALID and (e.level == "L3" or not e.value & PTE_TABLE_BIT)
        if not (hw_af and leaf):
            out.append((e.level, AF_KEEP))
        elif isinstance(result, Translation):
            out.append((e.level, AF_SET))
        else:
            out.append((e.level, AF_OPEN if result.kind == "permission" else AF_KEEP))
    return tuple(out)
