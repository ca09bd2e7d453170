"""Hand-built page-table vectors, written from the manuals (not from foliowalk's code): each
vector is a set of entries at physical addresses, a root as the architecture names it, an access
and the answer the manual gives, with the section that gives it.

Used by tests/archs/test_translate_*.py (the architecture's walk, ``archs.<arch>.translate``) and
tests/machines/test_translate_mmu.py (the same vectors on the Unicorn machines).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class T:
    """Expected translation: physical address and page/block size."""

    pa: int
    size: int


@dataclass(frozen=True)
class F:
    """Expected fault: kind, level (None where the manual names none) and the reported code."""

    kind: str
    level: str | None
    code: int


@dataclass(frozen=True)
class Vector:
    """One case: ``config``, ``roots`` (translate()'s root keywords), ``va``, ``access``,
    ``expect``, the manual reference ``ref``; ``entries`` as {pa: value}; ``cpu`` facts;
    ``deviation``: the registered Unicorn deviation that changes the MMU's answer, if any."""

    name: str
    config: str
    entries: dict[int, int]
    roots: dict[str, Any]
    va: int
    access: str
    expect: T | F
    ref: str
    cpu: dict[str, Any] = field(default_factory=dict)
    deviation: str | None = None


# -- x86-64 (Intel SDM vol. 3A ch. 4): 4-level tables with the PML4 at physical 0 ------------------
P, RW, US, PS, XD = 1, 2, 4, 0x80, 1 << 63
X86_TABLES = {
    0x0000: 0x1000 | P | RW | US,  # PML4[0] -> PDPT at 0x1000 (Table 4-15)
    0x0008: 0x1000 | P | RW | US | PS,  # PML4[1]: PS is reserved in a PML4E (Table 4-15)
    0x1000: 0x2000 | P | RW | US,  # PDPT[0] -> PD at 0x2000 (Table 4-17)
    0x1008: 0x4000_0000 | P | RW | US | PS,  # PDPT[1]: 1-GByte page at 1 GiB (Table 4-16)
    0x2000: 0x3000 | P | RW | US,  # PD[0] -> PT at 0x3000 (Table 4-19)
    0x2008: 0x20_0000 | P | RW | US | PS,  # PD[1]: 2-MByte page at 2 MiB (Table 4-18)
    0x2010: 0x40_0000 | P | RW | US | PS | (1 << 13),  # PD[2]: bit 13 reserved in a 2-MByte PDE
    0x3000: 0x5000 | P | RW | US,  # PT[0]: user, writable (Table 4-20)
    0x3008: 0x6000 | P | US,  # PT[1]: user, read-only
    # PT[2] absent: not present
    0x3018: 0x7000 | P | RW | US | XD,  # PT[3]: execute-disable
    0x3020: (1 << 45) | 0x8000 | P | RW | US,  # PT[4]: address bit 45 >= MAXPHYADDR 40
    0x3028: 0x9000 | P,  # PT[5]: supervisor, read-only
}
_PF = "SDM vol. 3A §4.7 (page-fault error code)"
X86_VECTORS = [
    Vector("x86-4k-root-at-0", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0xABC, "read", T(0x5ABC, 0x1000),
           "SDM vol. 3A §4.5.4, Figure 4-8: 4-KByte page through PML4E, PDPTE, PDE, PTE (CR3 = 0)"),
    Vector("x86-1g-page", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x4001_2345, "read", T(0x4001_2345, 1 << 30),
           "SDM vol. 3A §4.5.4, Figure 4-10 and Table 4-16: PDPTE with PS=1 maps a 1-GByte page"),
    Vector("x86-2m-page", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x20_5678, "write", T(0x20_5678, 1 << 21),
           "SDM vol. 3A §4.5.4, Figure 4-9 and Table 4-18: PDE with PS=1 maps a 2-MByte page"),
    Vector("x86-not-present", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x2000, "read", F("page-fault", "PT", 0),
           f"SDM vol. 3A §4.5.4 (P=0 in the PTE); {_PF}: P=0"),
    Vector("x86-not-present-user-write", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x2000, "user-write",
           F("page-fault", "PT", 6), f"{_PF}: P=0, W/R=1, U/S=1"),
    Vector("x86-user-write-read-only", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x1008, "user-write",
           F("page-fault", "PT", 7), f"SDM vol. 3A §4.6.1 (user write needs R/W=1 everywhere); {_PF}: P=1 W/R=1 U/S=1"),
    Vector("x86-user-read-read-only", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x1008, "user-read", T(0x6008, 0x1000),
           "SDM vol. 3A §4.6.1: user reads need U/S=1 only"),
    Vector("x86-supervisor-write-wp", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x5000, "write",
           F("page-fault", "PT", 3), f"SDM vol. 3A §4.6.1 (CR0.WP=1: supervisor writes need R/W=1); {_PF}: P=1 W/R=1"),
    Vector("x86-supervisor-write-no-wp", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x5000, "write", T(0x9000, 0x1000),
           "SDM vol. 3A §4.6.1 (CR0.WP=0: supervisor writes to any supervisor-mode address)", cpu={"wp": False}),
    Vector("x86-user-read-supervisor-page", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x5000, "user-read",
           F("page-fault", "PT", 5), f"SDM vol. 3A §4.6.1 (U/S=0: supervisor-mode address); {_PF}: P=1 U/S=1"),
    Vector("x86-fetch-xd", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x3000, "fetch", F("page-fault", "PT", 0x11),
           f"SDM vol. 3A §4.6.1 (XD=1 with IA32_EFER.NXE=1); {_PF}: P=1 I/D=1"),
    Vector("x86-read-xd", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x3010, "read", T(0x7010, 0x1000),
           "SDM vol. 3A §4.6.1: XD only forbids instruction fetches"),
    Vector("x86-xd-reserved-without-nxe", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x3010, "read",
           F("page-fault", "PT", 9), f"SDM vol. 3A §4.5.4 (XD is reserved with IA32_EFER.NXE=0); {_PF}: P=1 RSVD=1",
           cpu={"nxe": False}),
    Vector("x86-rsvd-maxphyaddr", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x4000, "read", F("page-fault", "PT", 9),
           f"SDM vol. 3A §4.5.4, Table 4-20 (bits 51:MAXPHYADDR reserved, MAXPHYADDR 40); {_PF}: P=1 RSVD=1"),
    Vector("x86-maxphyaddr-46", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x4000, "read", T((1 << 45) | 0x8000, 0x1000),
           "SDM vol. 3A §4.5.4, Table 4-20: with MAXPHYADDR 46, bit 45 is an address bit", cpu={"maxphyaddr": 46}),
    Vector("x86-rsvd-2m", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x40_0000, "read", F("page-fault", "PD", 9),
           f"SDM vol. 3A Table 4-18 (bits 20:13 of a 2-MByte PDE reserved); {_PF}: P=1 RSVD=1"),
    Vector("x86-rsvd-ps-pml4e", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x80_0000_0000, "read",
           F("page-fault", "PML4", 9), f"SDM vol. 3A Table 4-15 (PS reserved in a PML4E); {_PF}: P=1 RSVD=1"),
    Vector("x86-non-canonical", "x86_64:4level", X86_TABLES, {"cr3": 0}, 0x0000_8000_0000_0000, "read",
           F("general-protection", None, 0), "SDM vol. 3A §3.3.7.1 / §6.15: a non-canonical address is #GP(0)"),
    # 5-level: PML5 at 0x10000, entry 0 -> the PML4 above (at physical 0)
    Vector("x86-5level", "x86_64:5level", {**X86_TABLES, 0x10000: 0x0000 | P | RW | US}, {"cr3": 0x10000}, 0xABC,
           "read", T(0x5ABC, 0x1000), "SDM vol. 3A §4.5.4, Figure 4-8 with a PML5E (Table 4-14), CR4.LA57=1"),
    Vector("x86-5level-pml5-absent", "x86_64:5level", {**X86_TABLES, 0x10000: 0x0000 | P | RW | US}, {"cr3": 0x10000},
           0x0080_0000_0000_0000, "read", F("page-fault", "PML5", 0),
           f"SDM vol. 3A §3.3.7.1 (57-bit canonical with LA57) and §4.5.4 (PML5E P=0); {_PF}"),
    Vector("x86-5level-non-canonical", "x86_64:5level", {0x10000: 0}, {"cr3": 0x10000}, 0x0100_0000_0000_0000,
           "read", F("general-protection", None, 0), "SDM vol. 3A §3.3.7.1: bits 63:56 must equal bit 56 with LA57"),
]

# -- arm64 (Arm ARM DDI 0487 D8), 4KB granule, 48-bit VAs, TTBR0 at 0, TTBR1 at 0xA000 -------------------
V, TBL, AF, AP1, AP2 = 1, 2, 1 << 10, 1 << 6, 1 << 7
UXN, PXN = 1 << 54, 1 << 53
A64_4K = {
    0x0000: 0x1000 | V | TBL,  # L0[0] -> L1 table (D8.3 table descriptor)
    0x0008: 0x80_0000_0000 | V | AF,  # L0[1]: block descriptor at level 0: none with 4KB (D8.3)
    0x1000: 0x2000 | V | TBL,  # L1[0] -> L2 table
    0x1008: 0x4000_0000 | V | AF | AP1,  # L1[1]: 1GB block, EL0 read/write
    0x1010: 0x4000 | V | TBL | (1 << 61),  # L1[2] -> L2 table at 0x4000, APTable[0]: no EL0 below
    0x2000: 0x3000 | V | TBL,  # L2[0] -> L3 table
    0x2008: 0x20_0000 | V | AF,  # L2[1]: 2MB block, EL1 only
    0x4000: 0x8000_0000 | V | AF | AP1,  # L2 (under APTable) [0]: 2MB block, EL0 by AP, not by APTable
    0x3000: 0x5000 | V | TBL | AF,  # L3[0]: page, EL1 read/write
    0x3008: 0x6000 | V | TBL,  # L3[1]: AF = 0
    # L3[2] absent (0): invalid
    0x3018: 0x7000 | V | TBL | AF | AP2 | AP1,  # L3[3]: read-only at EL1 and EL0
    0x3020: 0x8000 | V | AF,  # L3[4]: bits[1:0] = 0b01 at level 3: reserved, invalid
    0x3028: (1 << 48) | 0x9000 | V | TBL | AF,  # L3[5]: output address bit 48 (a 48-bit PA size)
    0x3030: 0xB000 | V | TBL | AF | AP1 | PXN,  # L3[6]: EL0 read/write, PXN
    0xA000: 0x1000 | V | TBL,  # TTBR1's L0[0] -> the same L1 table
}
_D83 = "Arm ARM D8.3 'Translation table descriptor formats'"
_D84 = "Arm ARM D8.4 'Memory access control'"
_R = {"ttbr0": 0, "ttbr1": 0xA000}
ARM64_VECTORS = [
    Vector("a64-4k-page-root-at-0", "arm64:4k:48", A64_4K, _R, 0x10, "read", T(0x5010, 0x1000),
           f"{_D83}: table, table, table, page from TTBR0_EL1 = 0 (D8.2 initial level 0 for 48 bits)"),
    Vector("a64-ttbr1-half", "arm64:4k:48", A64_4K, _R, 0xFFFF_0000_0000_0010, "read", T(0x5010, 0x1000),
           "Arm ARM D8.2 'Translation table base address selection': bits 63:48 all 1 select TTBR1_EL1"),
    Vector("a64-1g-block", "arm64:4k:48", A64_4K, _R, 0x4000_1234, "user-write", T(0x4000_1234, 1 << 30),
           f"{_D83}: 4KB level-1 block (1GB); {_D84}: AP[2:1] = 01, EL0 read/write"),
    Vector("a64-2m-block", "arm64:4k:48", A64_4K, _R, 0x20_5678, "write", T(0x20_5678, 1 << 21),
           f"{_D83}: 4KB level-2 block (2MB)"),
    Vector("a64-invalid-l3", "arm64:4k:48", A64_4K, _R, 0x2000, "read", F("translation", "L3", 0x07),
           f"{_D83}: bit[0] = 0, Translation fault level 3 (FST 0b000111)"),
    Vector("a64-access-flag", "arm64:4k:48", A64_4K, _R, 0x1000, "read", F("access-flag", "L3", 0x0B),
           "Arm ARM D8 'The Access flag': AF = 0 without hardware update, Access flag fault level 3 (FST 0b001011)"),
    Vector("a64-el0-no-access", "arm64:4k:48", A64_4K, _R, 0x0, "user-read", F("permission", "L3", 0x0F),
           f"{_D84}: AP[2:1] = 00, no EL0 access; Permission fault level 3 (FST 0b001111)"),
    Vector("a64-read-only-write", "arm64:4k:48", A64_4K, _R, 0x3000, "write", F("permission", "L3", 0x0F),
           f"{_D84}: AP[2] = 1, read-only; Permission fault level 3"),
    Vector("a64-read-only-read", "arm64:4k:48", A64_4K, _R, 0x3008, "user-read", T(0x7008, 0x1000),
           f"{_D84}: AP[2:1] = 11, EL0 and EL1 read"),
    Vector("a64-aptable-no-el0", "arm64:4k:48", A64_4K, _R, 0x8000_0000, "user-read", F("permission", "L2", 0x0E),
           f"{_D84} hierarchical controls: APTable[0] = 1 removes EL0 access below; Permission fault level 2"),
    Vector("a64-aptable-el1-ok", "arm64:4k:48", A64_4K, _R, 0x8000_0010, "read", T(0x8000_0010, 1 << 21),
           f"{_D84}: APTable[0] does not restrict EL1"),
    Vector("a64-l3-reserved-encoding", "arm64:4k:48", A64_4K, _R, 0x4000, "read", F("translation", "L3", 0x07),
           f"{_D83}: bits[1:0] = 0b01 at level 3 is reserved and behaves as invalid"),
    Vector("a64-block-at-l0", "arm64:4k:48", A64_4K, _R, 0x80_0000_0000, "read", F("translation", "L0", 0x04),
           f"{_D83}: the 4KB granule has no level-0 block; invalid, Translation fault level 0",
           deviation="block-at-any-level"),
    Vector("a64-address-size", "arm64:4k:48", A64_4K, _R, 0x5000, "read", F("address-size", "L3", 0x03),
           "Arm ARM D8 'Address size configuration': output address bit 48 with a 48-bit PA size, Address size "
           "fault level 3 (FST 0b000011)", deviation="no-address-size-fault"),
    Vector("a64-out-of-range", "arm64:4k:48", A64_4K, _R, 0x0001_0000_0000_0000, "read", F("translation", "L0", 0x04),
           "Arm ARM D8.2: bits 63:48 neither all 0 nor all 1, Translation fault level 0"),
    Vector("a64-ttbr1-disabled", "arm64:4k:48", A64_4K, {"ttbr0": 0}, 0xFFFF_0000_0000_0010, "read",
           F("translation", "L0", 0x04),
           "Arm ARM D19 TCR_EL1.EPD1 = 1: a TTBR1_EL1 walk is a Translation fault level 0"),
    Vector("a64-pxn", "arm64:4k:48", A64_4K, _R, 0x6000, "fetch", F("permission", "L3", 0x0F),
           f"{_D84}: PXN = 1 forbids EL1 execution; Permission fault level 3"),
    # 16KB granule, 48-bit VA: level 0 has 2 entries (bit 47), levels 1..3 have 2048 (D8.2)
    Vector("a64-16k-ttbr0-at-0", "arm64:16k:48",
           {0x0: 0x4000 | V | TBL, 0x4000: 0x8000 | V | TBL, 0x8000: 0xC000 | V | TBL,
            0xC008: 0x10_0000 | V | TBL | AF},
           {"ttbr0": 0, "ttbr1": 0x40}, 0x4123, "read", T(0x10_0123, 0x4000),
           "Arm ARM D8.2: 16KB granule, 48-bit VA: L0 resolves bit 47, L1 46:36, L2 35:25, L3 24:14"),
    Vector("a64-16k-ttbr1", "arm64:16k:48",
           {0x0: 0x4000 | V | TBL, 0x48: 0x4000 | V | TBL, 0x4000: 0x8000 | V | TBL, 0x8000: 0xC000 | V | TBL,
            0xC008: 0x10_0000 | V | TBL | AF}, {"ttbr0": 0, "ttbr1": 0x40}, 0xFFFF_8000_0000_4123, "read",
           T(0x10_0123, 0x4000),
           "Arm ARM D8.2: TTBR1 half, L0 index 1 of the 2-entry table at TTBR1 (0x40 + 8; D19: BADDR 64-byte aligned)"),
    Vector("a64-16k-32m-block", "arm64:16k:48",
           {0x0: 0x4000 | V | TBL, 0x4000: 0x8000 | V | TBL, 0x8008: 0x200_0000 | V | AF}, {"ttbr0": 0}, 0x200_1234,
           "read", T(0x200_1234, 1 << 25), f"{_D83}: 16KB level-2 block (32MB)"),
    Vector("a64-16k-block-at-l1", "arm64:16k:48", {0x0: 0x4000 | V | TBL, 0x4000: 0x10_0000_0000 | V | AF},
           {"ttbr0": 0}, 0x1234, "read", F("translation", "L1", 0x05),
           f"{_D83}: the 16KB granule has no level-1 block (without FEAT_LPA2)", deviation="block-at-any-level"),
    Vector("a64-64k-512m-block", "arm64:64k:42", {0x0: 0x2000_0000 | V | AF}, {"ttbr0": 0}, 0x1234_5678, "read",
           T(0x3234_5678, 1 << 29), f"{_D83}: 64KB level-2 block (512MB); 42-bit VA starts at level 2 (D8.2)"),
]

# -- s390x (PoP SA22-7832 ch. 3), big-endian entries ------------------------------------------------------
# Bits by PoP number (bit 0 = MSB): region entry I = bit 58 (0x20), TT bits 60-61, TL bits 62-63,
# TF bits 56-57; segment FC bit 53 (0x400), P bit 54 (0x200); PTE I bit 53 (0x400), P 54 (0x200),
# bit 52 (0x800).
RI, RTL3, FC, PB = 0x20, 0x3, 0x400, 0x200


def _asce(origin: int, dt: int, tl: int = 3, private: bool = False) -> int:
    return origin | (0x100 if private else 0) | (dt << 2) | tl  # PoP ASCE: origin 0-51, P 55, DT 60-61, TL 62-63


def _rte(origin: int, tt: int, tl: int = 3, tf: int = 0) -> int:
    return origin | (tf << 6) | (tt << 2) | tl


S390_SEG = {  # segment table at 0x4000, page table at 0x8000, frames above
    0x4000: 0x8000,  # STE[0] -> page table at 0x8000 (FC=0, TT=00)
    0x4008: 0x10_0000 | FC,  # STE[1]: EDAT-1 1MB frame at 1 MiB
    0x4010: 0x8800 | PB,  # STE[2]: page table at 0x8800, DAT-protected
    0x4018: 0x8000 | 0x20,  # STE[3]: segment-invalid
    0x4020: 0x8000 | (1 << 2),  # STE[4]: table type 01 in a segment table
    0x8000: 0x5000,  # PTE[0]: frame 0x5000
    0x8008: 0x6000 | 0x400,  # PTE[1]: page-invalid
    0x8010: 0x7000 | 0x800,  # PTE[2]: bit 52 one
    0x8800: 0x9000,  # PTE[0] under the protected segment
}
_TP = "PoP SA22-7832 ch. 3 'Translation Process'"
S390_VECTORS = [
    Vector("s390-segment-asce-4k", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x123, "read",
           T(0x5123, 0x1000), f"{_TP}: ASCE DT=00 designates a segment table; STE, PTE, page frame"),
    Vector("s390-segment-edat1-1m", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x12_3456, "read",
           T(0x12_3456, 1 << 20), "PoP ch. 3 'Enhanced DAT': STE with FC=1 is a 1 MB segment frame (EDAT-1)"),
    Vector("s390-segment-no-edat1", "s390x:segment", {**S390_SEG, 0x10_0000 + 0x18 * 8: 0xA000},
           {"asce": _asce(0x4000, 0)}, 0x11_8000, "read", T(0xA000, 0x1000),
           "PoP ch. 3: without EDAT-1 the STE's FC bit is not used: the entry designates the page table at 1 MiB",
           cpu={"edat1": False}),
    Vector("s390-page-invalid", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x1000, "read",
           F("page-translation", "page", 0x11), f"{_TP}: page-invalid bit 53; page-translation exception (0x11)"),
    Vector("s390-pte-bit52", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x2000, "read",
           F("translation-specification", None, 0x12), f"{_TP}: PTE bit 52 one; translation-specification (0x12)"),
    Vector("s390-segment-invalid", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x30_0000, "read",
           F("segment-translation", "segment", 0x10), f"{_TP}: segment-invalid bit 58; segment-translation (0x10)"),
    Vector("s390-segment-tt-mismatch", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x40_0000, "read",
           F("translation-specification", None, 0x12), f"{_TP}: table type 01 in a segment-table entry (0x12)"),
    Vector("s390-dat-protection", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x20_0010, "write",
           F("protection", None, 0x04), "PoP ch. 3 'DAT Protection': segment P bit 54; protection exception (0x04)"),
    Vector("s390-dat-protection-read", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x20_0010, "read",
           T(0x9010, 0x1000), "PoP ch. 3 'DAT Protection': fetches are allowed"),
    Vector("s390-asce-tl", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0, tl=0)}, 0x4000_0000, "read",
           F("segment-translation", "segment", 0x10),
           "PoP ch. 3 'Lookup in a Table Designated by an ASCE': SX bits 33-34 (10) above TL 0"),
    Vector("s390-asce-type", "s390x:segment", S390_SEG, {"asce": _asce(0x4000, 0)}, 0x8000_0000, "read",
           F("asce-type", None, 0x38), f"{_TP}: bits 0-32 non-zero with a segment-table ASCE; ASCE-type (0x38)"),
    # region-third ASCE: region-third table at 0x10000 (16K), its entry 0 -> segment table 0x4000
    Vector("s390-region3-asce", "s390x:region3", {**S390_SEG, 0x10000: _rte(0x4000, 1)},
           {"asce": _asce(0x10000, 1)}, 0x123, "read", T(0x5123, 0x1000),
           f"{_TP}: ASCE DT=01, region-third entry (TT=01) designates the segment table"),
    Vector("s390-region3-tl", "s390x:region3", {**S390_SEG, 0x10000: _rte(0x4000, 1, tl=0)},
           {"asce": _asce(0x10000, 1)}, 0x4000_0000, "read", F("segment-translation", "segment", 0x10),
           f"{_TP}: region-third entry TL 0, SX leftmost bits 10; segment-translation (0x10)"),
    Vector("s390-region3-edat2", "s390x:region3", {0x10000: 0x8000_0000 | FC | (1 << 2)},
           {"asce": _asce(0x10000, 1)}, 0x1234_5678, "read", T(0x9234_5678, 1 << 31),
           "PoP ch. 3 'Enhanced DAT': region-third entry with FC=1 is a 2 GB region frame (EDAT-2)"),
    Vector("s390-region3-invalid", "s390x:region3", {0x10000: _rte(0x4000, 1) | RI}, {"asce": _asce(0x10000, 1)},
           0x123, "read", F("region-third-translation", "region-third", 0x3B),
           f"{_TP}: region-invalid bit; region-third-translation (0x3B)"),
    Vector("s390-region3-asce-type", "s390x:region3", {}, {"asce": _asce(0x10000, 1)}, 1 << 42, "read",
           F("asce-type", None, 0x38), f"{_TP}: bits 0-21 non-zero with a region-third ASCE"),
    # region-second ASCE: region-second table at 0x20000 -> region-third at 0x10000
    Vector("s390-region2-asce", "s390x:region2",
           {**S390_SEG, 0x10000: _rte(0x4000, 1), 0x20000: _rte(0x10000, 2)}, {"asce": _asce(0x20000, 2)}, 0x123,
           "read", T(0x5123, 0x1000), f"{_TP}: ASCE DT=10, region-second entry TT=10"),
    Vector("s390-region2-tf", "s390x:region2",
           {**S390_SEG, 0x10000: _rte(0x4000, 1), 0x20000: _rte(0x10000, 2, tf=1)}, {"asce": _asce(0x20000, 2)}, 0x123,
           "read", F("region-third-translation", "region-third", 0x3B),
           f"{_TP}: region-second entry table offset 1, RTX leftmost bits 00; region-third-translation (0x3B)"),
    # region-first ASCE: region-first table at 0x30000 -> region-second at 0x20000
    Vector("s390-region1-asce", "s390x:region1",
           {**S390_SEG, 0x10000: _rte(0x4000, 1), 0x20000: _rte(0x10000, 2), 0x30000: _rte(0x20000, 3)},
           {"asce": _asce(0x30000, 3)}, 0x123, "read", T(0x5123, 0x1000),
           f"{_TP}: ASCE DT=11, region-first entry TT=11"),
    Vector("s390-region1-invalid", "s390x:region1", {0x30000: _rte(0x20000, 3) | RI}, {"asce": _asce(0x30000, 3)},
           0x123, "read", F("region-first-translation", "region-first", 0x39),
           f"{_TP}: region-invalid bit; region-first-translation (0x39)"),
    Vector("s390-common-segment-private", "s390x:segment", {0x4000: 0x8000 | 0x10, 0x8000: 0x5000},
           {"asce": _asce(0x4000, 0, private=True)}, 0x123, "read", F("translation-specification", None, 0x12),
           f"{_TP}: common-segment bit 59 with the ASCE's private-space control; translation-specification"),
    Vector("s390-common-segment-shared", "s390x:segment", {0x4000: 0x8000 | 0x10, 0x8000: 0x5000},
           {"asce": _asce(0x4000, 0)}, 0x123, "read", T(0x5123, 0x1000),
           f"{_TP}: common-segment bit 59 is allowed without private-space control"),
    Vector("s390-table-at-0", "s390x:segment", {0x0: 0x8000, 0x8000: 0x5000}, {"asce": _asce(0x0, 0)}, 0x123, "read",
           T(0x5123, 0x1000), f"{_TP}: a segment table at real 0 (the lowcore on a machine)"),
]

ALL_VECTORS = X86_VECTORS + ARM64_VECTORS + S390_VECTORS

# Region-table DAT protection applies only with EDAT-1 (PoP ch. 3 "DAT Protection").
S390_VECTORS += [
    Vector("s390-region-protection-edat1", "s390x:region3", {**S390_SEG, 0x10000: _rte(0x4000, 1) | PB},
           {"asce": _asce(0x10000, 1)}, 0x123, "write", F("protection", None, 0x04),
           "PoP ch. 3 'DAT Protection': with EDAT-1 the region-third entry's P bit 54 protects what it maps"),
    Vector("s390-region-protection-no-edat1", "s390x:region3", {**S390_SEG, 0x10000: _rte(0x4000, 1) | PB},
           {"asce": _asce(0x10000, 1)}, 0x123, "write", T(0x5123, 0x1000),
           "PoP ch. 3 'DAT Protection': without EDAT-1 region-table entries have no DAT-protection bit",
           cpu={"edat1": False}),
]
ALL_VECTORS = X86_VECTORS + ARM64_VECTORS + S390_VECTORS
