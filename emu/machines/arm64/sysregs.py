"""arm64 system registers, granules and TCR_EL1 values, and fault status codes (Arm ARM D19,
D8): the facts the machine sets up and decodes with.
"""

from __future__ import annotations

from emu.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# System registers: (op0, op1, CRn, CRm, op2), Arm ARM D19 (AArch64 System Register Descriptions)
# ---------------------------------------------------------------------------------------------
SYSREGS: dict[str, tuple[int, int, int, int, int]] = {
    "SCTLR_EL1": (3, 0, 1, 0, 0),
    "TCR_EL1": (3, 0, 2, 0, 2),
    "TTBR0_EL1": (3, 0, 2, 0, 0),
    "TTBR1_EL1": (3, 0, 2, 0, 1),
    "MAIR_EL1": (3, 0, 10, 2, 0),
    "PAR_EL1": (3, 0, 7, 4, 0),
    "SCR_EL3": (3, 6, 1, 1, 0),
    "HCR_EL2": (3, 4, 1, 1, 0),
    "SPSR_EL3": (3, 6, 4, 0, 0),
    "ELR_EL3": (3, 6, 4, 0, 1),
    "ID_AA64MMFR0_EL1": (3, 0, 0, 7, 0),
    "ID_AA64MMFR1_EL1": (3, 0, 0, 7, 1),
}

# The EL1&0 translation registers a caller may set directly (fuzzing TCR fields, SCTLR.WXN, ...).
EL1_REGS = ("SCTLR_EL1", "TCR_EL1", "MAIR_EL1", "TTBR0_EL1", "TTBR1_EL1")

SCR_EL3_NS = 1 << 0  # D19 SCR_EL3.NS: EL0/EL1 are Non-secure
SCR_EL3_RW = 1 << 10  # D19 SCR_EL3.RW: the next lower EL is AArch64 (MUST-FIX, ORACLE-NOTES)
HCR_EL2_RW = 1 << 31  # D19 HCR_EL2.RW: EL1 is AArch64
SCTLR_M = 1 << 0  # D19 SCTLR_EL1.M: stage 1 MMU enable

# PSTATE/SPSR values: DAIF masked (0x3c0) | M[3:0] (D1 "Process state, PSTATE"; SPSR_EL3.M)
PSTATE_EL3H = 0x3CD
SPSR_EL1H = 0x3C5
SPSR_EL0T = 0x3C0
PSTATE_PAN = 1 << 22  # PSTATE.PAN / SPSR_ELx.PAN (D1 "Process state, PSTATE"; FEAT_PAN)
SCTLR_WXN = 1 << 19  # D19 SCTLR_EL1.WXN: write permission implies XN
TCR_HA = 1 << 39  # D19 TCR_EL1.HA: hardware Access flag update (RES0 without FEAT_HAFDBS)
TCR_HPD0 = 1 << 41  # D19 TCR_EL1.HPD0: hierarchical permissions disabled, TTBR0 half (FEAT_HPDS)

MAIR_EL1_DEFAULT = 0xFF  # Attr0 = Normal, Inner/Outer Write-Back non-transient RW-allocate

# PAR_EL1 (D19 "PAR_EL1"): F is bit 0.  F == 0: PA[47:12] in bits [47:12] (PA[51:48] in [51:48]
# with FEAT_LPA; RES0 otherwise, kept in the mask so a PE that sets them is seen).  F == 1:
# FST in bits [6:1], PTW bit 8, S bit 9.
PAR_F = 1
PAR_PA_MASK = ((1 << 52) - 1) & ~0xFFF
PAR_FST_SHIFT = 1
PAR_FST_MASK = 0x3F

# Unicorn exception numbers (QEMU target/arm/cpu.h EXCP_*), what UC_HOOK_INTR receives.
EXCP_PREFETCH_ABORT = 3
EXCP_DATA_ABORT = 4
EXCP_BKPT = 7

# ---------------------------------------------------------------------------------------------
# Granules and TCR_EL1 (Arm ARM D19 "TCR_EL1"; D8 "Translation granule", "Input address size")
# ---------------------------------------------------------------------------------------------
# granule -> (page shift, index bits per level): 4KB: 12/9, 16KB: 14/11, 64KB: 16/13.
GRANULES: dict[int, tuple[int, int]] = {4096: (12, 9), 16384: (14, 11), 65536: (16, 13)}
# TCR_EL1.TG0 [15:14]: 0b00 4KB, 0b01 64KB, 0b10 16KB.   TCR_EL1.TG1 [31:30]: 0b01 16KB,
# 0b10 4KB, 0b11 64KB.  (The two fields encode the sizes differently: D19 TCR_EL1.)
_TG0 = {4096: 0b00, 65536: 0b01, 16384: 0b10}
_TG1 = {16384: 0b01, 4096: 0b10, 65536: 0b11}
# TCR_EL1.IPS [34:32]: 0b000 32 bits, 0b001 36, 0b010 40, 0b011 42, 0b100 44, 0b101 48, 0b110 52.
_IPS = {32: 0b000, 36: 0b001, 40: 0b010, 42: 0b011, 44: 0b100, 48: 0b101, 52: 0b110}
VA_BITS_RANGE = range(36, 49)  # what this machine offers, for every granule (TxSZ 16..28)

TCR_T0SZ_SHIFT = 0  # [5:0]
TCR_EPD0 = 1 << 7  # walks through TTBR0_EL1 disabled -> Translation fault
TCR_TG0_SHIFT = 14  # [15:14]
TCR_T1SZ_SHIFT = 16  # [21:16]
TCR_EPD1 = 1 << 23  # walks through TTBR1_EL1 disabled -> Translation fault
TCR_TG1_SHIFT = 30  # [31:30]
TCR_IPS_SHIFT = 32  # [34:32]
TCR_DS = 1 << 59  # FEAT_LPA2: 52-bit VA/OA with the 4KB and 16KB granules (descriptor bits 9:8 = OA[51:50])
#: TxSZ = 12 (52-bit VAs): FEAT_LPA2 with DS = 1 (4KB/16KB) or FEAT_LVA (64KB); D8 "Input address size"
VA_BITS_52 = 52


def tcr_el1_value(granule: int, va_bits: int, *, epd0: bool = False, epd1: bool = False,
                  ips_bits: int = 48, ds: bool = False) -> int:
    """TCR_EL1 for ``granule`` and ``va_bits``-bit VAs in both halves (Arm ARM D19 "TCR_EL1").

    T0SZ = T1SZ = 64 - va_bits (the region size is 2**(64-TxSZ) bytes); TG0/TG1 select the
    granule (different encodings, see ``_TG0``/``_TG1``); IPS = ``ips_bits`` (48 as in the
    ORACLE-NOTES working values); EPD0/EPD1 disable a half.  IRGN/ORGN/SH (walk cacheability and
    shareability), A1 (ASID from TTBR0), AS (8-bit ASID), TBI0/TBI1 (top byte is part of the
    address) and HPD0/HPD1 (hierarchical permissions enabled) are all left 0.  ``ds``: TCR_EL1.DS
    (bit 59, FEAT_LPA2; the 4KB and 16KB granules only): 52-bit descriptors, TxSZ down to 12.
    """
    if ds and granule == 65536:
        raise ConfigError("TCR_EL1.DS applies to the 4KB and 16KB granules (FEAT_LPA2), not 64KB")
    if granule not in GRANULES:
        raise ConfigError(f"arm64 granule {granule} is not one of 4096, 16384, 65536")
    if ips_bits not in _IPS:
        raise ConfigError(f"TCR_EL1.IPS cannot encode {ips_bits}-bit physical addresses")
    txsz = 64 - va_bits
    if not 0 <= txsz < 64:
        raise ConfigError(f"va_bits {va_bits} gives an unencodable TxSZ {txsz}")
    value = (txsz << TCR_T0SZ_SHIFT) | (_TG0[granule] << TCR_TG0_SHIFT)
    value |= (txsz << TCR_T1SZ_SHIFT) | (_TG1[granule] << TCR_TG1_SHIFT)
    value |= _IPS[ips_bits] << TCR_IPS_SHIFT
    if epd0:
        value |= TCR_EPD0
    if epd1:
        value |= TCR_EPD1
    if ds:
        value |= TCR_DS
    return value


def start_level(granule: int, va_bits: int) -> int:
    """Initial lookup level (D8 "Translation table walks"; pseudocode AArch64.S1StartLevel):
    ``4 - ceil((va_bits - page_shift) / bits_per_level)``."""
    shift, bits = GRANULES[granule]
    return 4 - -(-(va_bits - shift) // bits)


# ---------------------------------------------------------------------------------------------
# Fault status codes (PAR_EL1.FST = ESR_ELx.ISS.{I,D}FSC; D19 "PAR_EL1", "ESR_EL1")
# ---------------------------------------------------------------------------------------------
_FST_KIND = {0b0000: "address-size", 0b0001: "translation", 0b0010: "access-flag",
             0b0011: "permission", 0b0101: "walk-external-abort"}
#: FEAT_LPA2's level -1 codes (D19 PAR_EL1.FST): Address size / Translation fault, level -1.
_FST_LEVEL_MINUS_1 = {0b101001: "address-size", 0b101011: "translation"}


def decode_fst(fst: int) -> tuple[str, int] | None:
    """(kind, level) for a 6-bit fault status code, or None for codes this oracle does not name.

    0b0000LL Address size fault, 0b0001LL Translation fault, 0b0010LL Access flag fault,
    0b0011LL Permission fault, 0b0101LL Synchronous External abort on translation table walk --
    each at level LL; with FEAT_LPA2, 0b101001 Address size fault and 0b101011 Translation fault,
    level -1.  (TLB conflict 0b110000 and the rest: None.)
    """
    if fst in _FST_LEVEL_MINUS_1:
        return _FST_LEVEL_MINUS_1[fst], -1
    kind = _FST_KIND.get((fst >> 2) & 0xF)
    if kind is None or fst > 0x3F:
        return None
    return kind, fst & 3
