"""A64 encodings of the few instructions the probe code needs (Arm ARM C6), and the single and
batch probe routines built from them; the tests disassemble them with capstone.
"""

from __future__ import annotations

import struct

from emu.machines.arm64.sysregs import SYSREGS


# ---------------------------------------------------------------------------------------------
# A64 encodings of the few instructions the probe code needs (Arm ARM C6 "A64 Base Instruction
# Descriptions"); the tests disassemble them with capstone.
# ---------------------------------------------------------------------------------------------
def _sys(op1: int, crn: int, crm: int, op2: int, rt: int) -> int:
    """SYS #op1, Cn, Cm, #op2, Xt (C6 "SYS"): 1101010100 0 01 op1 CRn CRm op2 Rt."""
    return 0xD5080000 | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def _mrs(rt: int, reg: tuple[int, int, int, int, int]) -> int:
    """MRS Xt, <sysreg> (C6 "MRS"): 1101010100 1 1 o0 op1 CRn CRm op2 Rt, op0 = 2 + o0."""
    op0, op1, crn, crm, op2 = reg
    return 0xD5300000 | ((op0 - 2) << 19) | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def _at(op: int, rt: int) -> int:
    """AT <op> Xt (C5.5 "A64 System instructions for address translation"): ops 0..3 are
    S1E1R/S1E1W/S1E0R/S1E0W = SYS #0, C7, C8, #op2 with op2 = 0/1/2/3; ops 4/5 are S1E1RP/S1E1WP
    (FEAT_PAN2: the EL1 read/write check that honours PSTATE.PAN) = SYS #0, C7, C9, #0/#1."""
    return _sys(0, 7, 9, op - 4, rt) if op >= 4 else _sys(0, 7, 8, op, rt)


def a64_ldr(rt: int, rn: int) -> int:
    """LDR Xt, [Xn] (C6 "LDR (immediate)", unsigned offset 0)."""
    return 0xF9400000 | (rn << 5) | rt


def a64_str(rt: int, rn: int) -> int:
    """STR Xt, [Xn] (C6 "STR (immediate)", unsigned offset 0)."""
    return 0xF9000000 | (rn << 5) | rt


def a64_ldtr(rt: int, rn: int) -> int:
    """LDTR Xt, [Xn] (C6 "LDTR": an EL1 load checked with EL0's permissions, PSTATE.UAO = 0)."""
    return 0xF8400800 | (rn << 5) | rt


def a64_sttr(rt: int, rn: int) -> int:
    """STTR Xt, [Xn] (C6 "STTR": an EL1 store checked with EL0's permissions)."""
    return 0xF8000800 | (rn << 5) | rt


def _str_post(rt: int, rn: int, imm: int) -> int:
    """STR Xt, [Xn], #imm (C6 "STR (immediate)", post-index)."""
    return 0xF8000400 | ((imm & 0x1FF) << 12) | (rn << 5) | rt


def _subs_imm(rd: int, rn: int, imm: int) -> int:
    """SUBS Xd, Xn, #imm (C6 "SUBS (immediate)")."""
    return 0xF1000000 | (imm << 10) | (rn << 5) | rd


def _b_ne(offset: int) -> int:
    """B.NE <label> (C6 "B.cond"), ``offset`` bytes from this instruction."""
    return 0x54000001 | (((offset // 4) & 0x7FFFF) << 5)


ERET = 0xD69F03E0
BRK0 = 0xD4200000
_NOP = 0xD503201F

# AT op2 by (user, write): D19/C5 AT S1E1R=0, S1E1W=1, S1E0R=2, S1E0W=3.
AT_OP = {(False, False): 0, (False, True): 1, (True, False): 2, (True, True): 3}
AT_NAME = {0: "S1E1R", 1: "S1E1W", 2: "S1E0R", 3: "S1E0W", 4: "S1E1RP", 5: "S1E1WP"}
#: AT op by write for the EL1 checks that honour PSTATE.PAN (FEAT_PAN2): S1E1RP=4, S1E1WP=5.
AT_OP_PAN = {False: 4, True: 5}
AT_OPS = 6

# Code page layout (physical = EL3 virtual address; SCTLR_EL3.M = 0).
SINGLE_OFF = 0x000  # + 0x10 * op (op 0..5): AT <op>, X1 ; MRS X2, PAR_EL1   (until = entry + 8)
SINGLE_LEN = 8
BATCH_OFF = 0x100  # + 0x40 * op (op 0..5): the batch loop          (until = entry + 0x18)
BATCH_END = 0x18
ERET_OFF = 0x300  # fetch engine: ERET into EL1/EL0 at ELR_EL3
LOAD_STUB_OFF = 0x400  # LDR X2, [X1] ; BRK #0  (run at EL1/EL0 through the tables, load_u64)
#: access stubs for batched real data accesses (probe_access_many): <insn> X2, [X1] ; BRK #0
ACCESS_STUB_OFF = {"LDR": 0x500, "STR": 0x510, "LDTR": 0x520, "STTR": 0x530}
BATCH_INSNS = 6


def single_code(op: int) -> list[int]:
    return [_at(op, 1), _mrs(2, SYSREGS["PAR_EL1"])]


def batch_code(op: int) -> list[int]:
    """X0 -> table of VAs (each slot overwritten with its PAR_EL1), X3 = count (>= 1)."""
    return [
        a64_ldr(1, 0),  # loop: X1 = VA
        _at(op, 1),  #       AT <op>, X1
        _mrs(2, SYSREGS["PAR_EL1"]),  # X2 = PAR_EL1
        _str_post(2, 0, 8),  # [X0] = X2 ; X0 += 8
        _subs_imm(3, 3, 1),  # X3 -= 1
        _b_ne(-20),  # B.NE loop
    ]


def pack_words(words: list[int]) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)
