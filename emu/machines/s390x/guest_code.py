"""s390x architecture constants the machine uses (PoP ch. 3, 4, 6: PSW, ASCE, lowcore,
program-interruption codes) and the hand-assembled probe routines (LRAG, LG/STG through the
secondary space; PoP ch. 7, 10).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# -- architecture constants (PoP ch. 3, 4, 6) ---------------------------------------------------
#: PSW mask: DAT (bit 5) | ASC = 10 secondary-space (bits 16-17) | EA (bit 31) | BA (bit 32).
PSW_MASK = 0x0400_8001_8000_0000
_PSW_ASC_MASK = 0x0000_C000_0000_0000
_PSW_ASC_ACCESS_REGISTER = 0x0000_4000_0000_0000
assert PSW_MASK & _PSW_ASC_MASK != _PSW_ASC_ACCESS_REGISTER, "access-register mode aborts the process"

#: ASCE with the real-space control (bit 58): identity mapping, used in CR1 for instruction fetch.
REAL_SPACE_ASCE = 0x20
#: CR0 bit 37, secondary-space control (required architecturally for secondary-space mode tools).
CR0_SECONDARY_SPACE = 0x0000_0000_0400_0000
#: CR0 bit 40, enhanced-DAT enablement (EDAT-1; EDAT-2 needs it too).
CR0_EDAT = 0x0000_0000_0080_0000
#: CR0 bit 43, instruction-execution-protection control (facility 130; PoP ch. 3
#: "Instruction-Execution Protection").
CR0_IEP = 0x0000_0000_0010_0000
#: CR0 bit 35, low-address-protection control (PoP ch. 3 "Low-Address Protection").
CR0_LOW_ADDRESS_PROTECTION = 0x0000_0000_1000_0000

LOWCORE_SIZE = 0x2000
#: Translation-exception identification: real locations 168-175.
TEID_ADDRESS = 0xA8

#: Exception number the UC_HOOK_INTR hook receives for every program interruption (EXCP_PGM).
EXCP_PGM = 3

LEVEL_PAGE = 0
LEVEL_SEGMENT = 1
LEVEL_REGION3 = 2
LEVEL_REGION2 = 3
LEVEL_REGION1 = 4

#: Program-interruption code -> fault kind (PoP ch. 6 "Program-Interruption Conditions").
PGM_KINDS: dict[int, str] = {
    0x04: "protection",
    0x05: "addressing",
    0x10: "segment-translation",
    0x11: "page-translation",
    0x12: "translation-specification",
    0x38: "asce-type",
    0x39: "region-first-translation",
    0x3A: "region-second-translation",
    0x3B: "region-third-translation",
}
#: Program-interruption code -> the table level it names (None: no single table).
PGM_LEVELS: dict[int, int | None] = {
    0x04: None,
    0x05: None,
    0x10: LEVEL_SEGMENT,
    0x11: LEVEL_PAGE,
    0x12: None,
    0x38: None,
    0x39: LEVEL_REGION1,
    0x3A: LEVEL_REGION2,
    0x3B: LEVEL_REGION3,
}

U64_MASK = (1 << 64) - 1


# -- guest code -----------------------------------------------------------------------------------
# Hand-encoded (PoP Appendix B formats) so the module needs no assembler at run time; the test file
# disassembles every routine with capstone and checks the instruction list.
def _rxy(op: int, r1: int, b2: int, d2: int = 0) -> bytes:
    """RXY-a (E3 xx): op r1, d2(0, b2) with a 20-bit displacement."""
    return bytes([0xE3, r1 << 4, (b2 << 4) | ((d2 >> 8) & 0xF), d2 & 0xFF, (d2 >> 12) & 0xFF, op])


def _rre(op: int, r1: int, r2: int) -> bytes:
    return bytes([op >> 8, op & 0xFF, 0, (r1 << 4) | r2])


def _lrag(r1: int, b2: int) -> bytes:
    return _rxy(0x03, r1, b2)


def _lg(r1: int, b2: int) -> bytes:
    return _rxy(0x04, r1, b2)


def _stg(r1: int, b2: int) -> bytes:
    return _rxy(0x24, r1, b2)


def _ipm(r1: int) -> bytes:
    return bytes([0xB2, 0x22, 0x00, r1 << 4])


def _nill(r1: int, imm: int) -> bytes:
    return bytes([0xA5, (r1 << 4) | 0x7, imm >> 8, imm & 0xFF])


def _lurag(r1: int, r2: int) -> bytes:
    return _rre(0xB905, r1, r2)


def _sturg(r1: int, r2: int) -> bytes:
    return _rre(0xB925, r1, r2)


def _la(r1: int, b2: int, d2: int) -> bytes:
    return bytes([0x41, r1 << 4, (b2 << 4) | (d2 >> 8), d2 & 0xFF])


def _brctg(r1: int, offset: int) -> bytes:
    """BRANCH RELATIVE ON COUNT (64): offset in bytes from this instruction."""
    return bytes([0xA7, (r1 << 4) | 0x7]) + struct.pack(">h", offset // 2)


@dataclass(frozen=True)
class Routine:
    start: int  # real address of the first instruction
    end: int  # real address after the last one (emu_start's `until`)
    access_pcs: frozenset[int]  # addresses of the LG / STG that may fault
    resume: int  # where the batch loop continues after a faulting access (batch routines)
    n_insns: int


def single_code(write: bool) -> tuple[bytes, list[int], int]:
    """r2 = va -> r1 = LRAG result, r4 = IPM (cc in bits 28-29), r3 = loaded word."""
    parts = [_lrag(1, 2), _ipm(4), _nill(2, 0xFFF8)]
    access = [sum(map(len, parts))]
    parts.append(_lg(3, 2))
    if write:
        access.append(sum(map(len, parts)))
        parts.append(_stg(3, 2))
    return b"".join(parts), access, len(parts)


def batch_code(write: bool) -> tuple[bytes, list[int], int, int]:
    """r6 -> VA array (real), r7 -> 24-byte output records (real), r8 = count (> 0)."""
    parts = [_lurag(2, 6), _lrag(1, 2), _ipm(4), _nill(2, 0xFFF8)]
    access = [sum(map(len, parts))]
    parts.append(_lg(3, 2))
    if write:
        access.append(sum(map(len, parts)))
        parts.append(_stg(3, 2))
    parts += [_sturg(1, 7), _la(9, 7, 8), _sturg(3, 9), _la(9, 7, 16), _sturg(4, 9)]
    resume = sum(map(len, parts))
    parts += [_la(6, 6, 8), _la(7, 7, 24)]
    parts.append(_brctg(8, -sum(map(len, parts))))
    return b"".join(parts), access, resume, len(parts)


def _ske(op: int, r1: int, r2: int) -> bytes:
    """SSKE (B22B, RRF-c with M3 = 0) / ISKE (B229, RRE): storage key of the 4K block at real r2."""
    return bytes([0xB2, op, 0, (r1 << 4) | r2])


def _spka(b2: int) -> bytes:
    """SET PSW KEY FROM ADDRESS (B20A, S format): PSW key := bits 56-59 of 0(b2) (b2 = 0: key 0)."""
    return bytes([0xB2, 0x0A, b2 << 4, 0])


def _basr(r1: int, r2: int) -> bytes:
    return bytes([0x0D, (r1 << 4) | r2])


#: BRANCH ON CONDITION (BCR 15, r14): "br %r14", the only instruction a conform execute target holds.
BR_R14 = bytes([0x07, 0xFE])


def conform_code(kind: str) -> tuple[bytes, list[int], int, int]:
    """The conformance batch loop (emu/conform/s390x.py) for one access ``kind``:
    r6 -> VA array, r11 -> array of the 4K block each case's access should reach (real),
    r7 -> 32-byte records (real), r8 = count (> 0), r13 = the storage key SSKE gives each block
    (ACC, F; R = C = 0), r10 = the PSW key of the access in bits 56-59::

        loop: lurag r2,r6 ; lurag r12,r11 ; sske r13,r12     # the block's storage key
              spka 0(r10)                                     # the access's PSW key
              lg r3,0(r2) | stg r2,0(r2) | basr r14,r2       # the access (a store writes the VA)
        resume:                                               # (a faulting access continues here)
              spka 0 ; iske r5,r12 ; lrag r1,0(r2) ; ipm r4   # key 0, the storage key afterwards, LRAG
              sturg r1,r7 ; sturg r3,8(r7) ; sturg r4,16(r7) ; sturg r5,24(r7)
              la r6,8(r6) ; la r11,8(r11) ; la r7,32(r7) ; brctg r8,loop

    An execute target holds ``br %r14`` (:data:`BR_R14`): it returns to ``resume``.  LRAG comes
    after ISKE because QEMU's LRA sets the reference bit of the block it translates to
    (``mmu_translate()`` -> ``mmu_handle_skey()``).  Returns (code, offsets of the accesses that may
    fault, resume offset, instruction count)."""
    parts = [_lurag(2, 6), _lurag(12, 11), _ske(0x2B, 13, 12), _spka(10)]
    access = [sum(map(len, parts))]
    parts.append({"read": _lg(3, 2), "write": _stg(2, 2), "fetch": _basr(14, 2)}[kind])
    resume = sum(map(len, parts))
    parts += [_spka(0), _ske(0x29, 5, 12), _lrag(1, 2), _ipm(4), _sturg(1, 7)]
    for off, reg in ((8, 3), (16, 4), (24, 5)):
        parts += [_la(9, 7, off), _sturg(reg, 9)]
    parts += [_la(6, 6, 8), _la(11, 11, 8), _la(7, 7, 32)]
    parts.append(_brctg(8, -sum(map(len, parts))))
    return b"".join(parts), access, resume, len(parts)
