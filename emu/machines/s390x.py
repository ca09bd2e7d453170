"""s390x: Unicorn's emulated z/Architecture MMU as the oracle for DAT tables in guest RAM.

References: z/Architecture Principles of Operation, SA22-7832 (PoP), chapter 3 "Storage" --
"Dynamic Address Translation" (the address-space-control element, "Translation Tables",
"Translation Process", "Enhanced DAT"), "Address Spaces" / "Address-Space Control",
"Prefixing", "Protection" (DAT protection); chapter 4 "Control" (program-status word); chapter 6
"Interruptions" ("Program-Interruption Conditions", "Translation-Exception Identification",
assigned storage locations); chapter 10 "Control Instructions" (LOAD REAL ADDRESS, LOAD USING REAL
ADDRESS, STORE USING REAL ADDRESS).  Measured emulator facts: ``shared/ORACLE-NOTES.md``, s390x
section.

How a probe works
-----------------
The CPU runs in **secondary-space mode** (PSW mask ``0x0400800180000000``: DAT on, ASC = 10,
64-bit addressing; PoP ch. 4 "Program-Status Word", ch. 3 "Address-Space Control").  In that mode
instructions are fetched from the *primary* space and operands live in the *secondary* space, so
CR1 holds a real-space ASCE (``0x20``, R bit: identity mapping, PoP ch. 3 "Address-Space-Control
Element") and the probe code is fetched from real storage, never through the tables under test;
CR7 holds the ASCE under test (ORACLE-NOTES: "secondary space ... CR1 = 0x20 ... CR7 = ASCE under
test").  The guest routine for one address is::

    lrag  %r1, 0(%r2)      # LOAD REAL ADDRESS: the real address DAT produces (observed, cc 0)
    ipm   %r4              # its condition code
    nill  %r2, 0xfff8      # align the access to the 8-byte word
    lg    %r3, 0(%r2)      # the real access through CR7: faults with the true interruption code
    stg   %r3, 0(%r2)      # (write probes only) store the same value back

``Translation.pa`` is the LRAG result, i.e. observed by the MMU, never computed from our own walk;
when the loaded word is a tag (``PhysicalMemory.tag``) it must name the same physical word, and the
translation is reported as ``observed_by="tag"`` (otherwise ``"lrag"``); a mismatch is a
:class:`ProbeError`.  The batch routine (:meth:`S390xMachine.probe_many`) is the same sequence in a
loop that reads its addresses with LURAG and writes LRAG result / loaded word / condition code with
STURG (real-address accesses, PoP ch. 10), so the bookkeeping never goes through CR7 either.

Why not LRAG alone: Unicorn/QEMU's LRA/LRAG set cc 3 for *every* exception (ORACLE-NOTES
"Deviations"; the PoP distinguishes cc 1/2/3), and a read-only LRAG cannot see DAT protection or an
addressing exception for a frame outside RAM.  So LRAG is the fast path and the program-interruption
code always comes from the real LG/STG access.

Faults
------
Program interruptions are not delivered architecturally (no PSW swap, ORACLE-NOTES "Common"): the
``UC_HOOK_INTR`` hook receives exception number 3 and the PSW still addresses the faulting
instruction.  The program-interruption code is not exposed as a register; it is read from the CPU
state blob (``context_save``) at an offset located **at run time**: the start-up self-test provokes
five known interruptions on scratch tables and keeps the single offset that holds each code
(ORACLE-NOTES "marker technique").  The translation-exception identification (TEID, PoP ch. 6) is
stored at real locations 168-175 (``0xa8``); each probe clears it first and reports it as
:attr:`S390xMachine.last_teid` / :attr:`S390xMachine.last_teids` (None when no TEID was stored --
an addressing exception stores none).

Kinds (PoP ch. 6 "Program-Interruption Conditions"): 0x04 protection, 0x05 addressing, 0x10
segment-translation, 0x11 page-translation, 0x12 translation-specification, 0x38 ASCE-type, 0x39 /
0x3a / 0x3b region-first / -second / -third-translation.  ``Fault.level`` names the table whose
entry (or table-length check) caused the translation exception: :data:`LEVEL_PAGE` (0),
:data:`LEVEL_SEGMENT` (1), :data:`LEVEL_REGION3` (2), :data:`LEVEL_REGION2` (3),
:data:`LEVEL_REGION1` (4); ``None`` for ASCE-type, translation-specification, protection and
addressing (the code does not name one table).

Access kinds
------------
* read: 8-byte load through the secondary space.
* write: load, then store the same value back; DAT protection faults with code 0x04 and storage is
  unchanged (PoP ch. 3 "DAT Protection": the store is suppressed).
* fetch: basic z/Architecture DAT has no execute permission (that is the separate
  instruction-execution-protection facility, which no CPU model here enables), and an instruction
  fetch is translated exactly like an operand fetch.  A fetch probe is therefore executed as a read
  (executing bytes from the tables under test could run an instruction that switches to
  access-register mode, see below).
* ``Access.user``: DAT and DAT protection do not depend on the problem-state bit (PoP ch. 3
  "Protection"); key-controlled protection is not implemented by Unicorn (ORACLE-NOTES).  User
  probes run like supervisor probes.

DANGER: access-register mode
----------------------------
PSW ASC bits ``01`` select access-register mode, which this QEMU fork does not implement:
``cpu_mmu_index()`` calls ``abort()`` and ``lowprot_enabled()`` calls ``exit(1)`` -- the WHOLE
PROCESS dies (ORACLE-NOTES).  This module writes only the constant secondary-space PSW mask
(asserted at import), and the guest routines contain no instruction that can change the
address-space control (SAC, SACF, LPSW, LPSWE, PC, PR, ...); ``tests/test_machine_s390x.py``
disassembles them to prove it.  Never probe by executing code out of the tables under test.

EDAT-1 / EDAT-2
---------------
Large entries (1 MB segment-table entries with STE.FC, 2 GB region-third entries with RTTE.FC; PoP
ch. 3 "Enhanced DAT") are honoured by QEMU only if ``CR0.EDAT`` (bit 40) is set *and* the CPU
model has the EDAT facility (STFLE bit 8; bit 78 for EDAT-2): ``mmu_translate_asce()`` tests
``s390_has_feat(S390_FEAT_EDAT)`` / ``S390_FEAT_EDAT_2`` (target/s390x/mmu_helper.c).  In Unicorn
2.1.4 **no** CPU model has them: every named model (z900 ... gen15b, 36 of them) is created from
its *base* feature list (``is_static``), and no base list contains EDAT; the ``qemu`` and ``max``
models' lists do not either (measured: all 38 models ignore FC with CR0.EDAT set).  The facility
list is not part of the CPU state blob (it lives in the heap-allocated ``S390CPUModel``), so it
cannot be edited through ``context_restore``.

What this module does when ``edat=True``: it selects the z13 model (real z13 machines have both
facilities), locates that model's static ``S390CPUDef`` record inside the loaded
``libunicorn.so`` at run time (find the name string ``"z13"`` in the library's mappings, then the
pointer to it in the library's writable data, then check the record's generation / type / EC-GA /
description and that its bitmaps look like feature bitmaps), sets the two feature bits in the
record's ``base_init`` list just while the CPU is created (the CPU copies the bits into its own
model), and restores the record at once, so later ``Uc`` instances are unaffected (a module lock
serialises machines; another thread creating a z13 ``Uc`` in that window would see the bits too).
No CPU model is patched when ``edat=False``; the z13 model is used either way.  This is
fragile by nature (it depends on this build's struct layout and feature numbering), so it is never
trusted: the start-up self-test builds a 1 MB segment entry and a 2 GB region-third entry on
scratch tables, requires the load to reach the right tagged real word, requires the FC=0 path to
still translate and fault as before, and requires the same large entries to be *ignored* with
``CR0.EDAT`` off (so the result cannot be a coincidence).  Only then are :attr:`edat1_works` /
:attr:`edat2_works` True; otherwise large entries are a case the oracle cannot check (the reason is
in :attr:`edat_note`) and ``CR0.EDAT`` stays off.

Lowcore
-------
Prefix 0: real 0..0x1fff is the lowcore and every fault overwrites 0xa8..0xaf (TEID).  The caller
must keep tables and data out of it (reserve ``0..0x2000`` in the :class:`FrameAllocator`; if that
range is still free, the machine reserves it).  The machine's own code, buffers and self-test
tables come from the allocator (about 150 KiB with the default chunk size).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
from unicorn import (
    UC_ARCH_S390X,
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_HOOK_INTR,
    UC_MODE_BIG_ENDIAN,
    UC_PROT_ALL,
    UC_TLB_CPU,
)
from unicorn import s390x_const as S
from unicorn.unicorn_py3 import Uc, UcError  # the Python 3 binding (mypy follows the py2 branch)

from emu.errors import AddressError, ConfigError, EmulatorError, MemoryLayoutError
from emu.machines.base import (
    RAW_ERROR,
    RAW_FAULT,
    RAW_OBSERVED,
    RAW_TAG,
    READ,
    Access,
    Fault,
    ProbeError,
    ProbeResult,
    RawProbes,
    Translation,
)
from emu.machines.ram import TAG, TAG_MASK, FrameAllocator, PhysicalMemory

__all__ = [
    "S390xMachine",
    "PSW_MASK",
    "REAL_SPACE_ASCE",
    "LOWCORE_SIZE",
    "TEID_ADDRESS",
    "PGM_KINDS",
    "PGM_LEVELS",
    "LEVEL_PAGE",
    "LEVEL_SEGMENT",
    "LEVEL_REGION3",
    "LEVEL_REGION2",
    "LEVEL_REGION1",
    "EXCP_PGM",
]

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

_U64 = (1 << 64) - 1


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
class _Routine:
    start: int  # real address of the first instruction
    end: int  # real address after the last one (emu_start's `until`)
    access_pcs: frozenset[int]  # addresses of the LG / STG that may fault
    resume: int  # where the batch loop continues after a faulting access (batch routines)
    n_insns: int


def _single_code(write: bool) -> tuple[bytes, list[int], int]:
    """r2 = va -> r1 = LRAG result, r4 = IPM (cc in bits 28-29), r3 = loaded word."""
    parts = [_lrag(1, 2), _ipm(4), _nill(2, 0xFFF8)]
    access = [sum(map(len, parts))]
    parts.append(_lg(3, 2))
    if write:
        access.append(sum(map(len, parts)))
        parts.append(_stg(3, 2))
    return b"".join(parts), access, len(parts)


def _batch_code(write: bool) -> tuple[bytes, list[int], int, int]:
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


# -- EDAT enablement inside the loaded library (see module docstring) ----------------------------
_EDAT_MODEL = S.UC_CPU_S390X_Z13
_EDAT_MODEL_NAME = b"z13"
_EDAT_MODEL_DESC = b"IBM z13 GA1"
_EDAT_MODEL_ID = (13, 0x2964, 1)  # generation, machine type, EC GA (cpu_models.c CPUDEF_INIT)
# S390Feat enum indices (target/s390x/cpu_features_def.inc.h of this QEMU 5.0 fork).
_FEAT_EDAT = 7  # "edat", STFLE bit 8
_FEAT_EDAT_2 = 66  # "edat2", STFLE bit 78
_FEAT_ESAN3, _FEAT_ZARCH = 0, 1
# struct S390CPUDef (target/s390x/cpu_models.h) on LP64: name*, desc*, u8 gen, u16 type, u8 ec_ga,
# u8 mha_pow, u32 hmfai, then base_feat (bitmap) and base_init (u64 list), 5 words each.
_DEF_GEN, _DEF_TYPE, _DEF_EC_GA = 16, 18, 20
_DEF_BASE_FEAT, _DEF_BASE_INIT, _FEAT_WORDS = 32, 72, 5

_edat_lock = threading.Lock()


def _library_mappings() -> list[tuple[int, int, str]]:
    """(start, end, perms) of every mapping of the loaded libunicorn."""
    from unicorn.unicorn_py3 import unicorn as _ucmod

    path = os.path.realpath(getattr(_ucmod.uclib, "_name", "") or "")
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == path:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                out.append((lo, hi, fields[1]))
    return out


_cpu_def_cache: list[tuple[int | None, str]] = []


def _find_cpu_def() -> tuple[int | None, str]:
    """Locate the z13 ``S390CPUDef`` record in the loaded library once per process."""
    if not _cpu_def_cache:
        _cpu_def_cache.append(_search_cpu_def())
    return _cpu_def_cache[0]


def _search_cpu_def() -> tuple[int | None, str]:
    """Search the loaded library for the z13 ``S390CPUDef`` record; (address, note)."""
    if sys.byteorder != "little" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None, "the record layout is only known for little-endian 64-bit hosts"
    try:
        maps = _library_mappings()
    except (OSError, ImportError, AttributeError, ValueError) as exc:
        return None, f"cannot read the library's mappings: {exc}"
    if not maps:
        return None, "libunicorn's mappings not found in /proc/self/maps"
    readable = [(lo, hi) for lo, hi, p in maps if p.startswith("r")]
    writable = [(lo, hi) for lo, hi, p in maps if p.startswith("rw")]

    def inside(addr: int, n: int, ranges: list[tuple[int, int]]) -> bool:
        return any(lo <= addr and addr + n <= hi for lo, hi in ranges)

    names = []
    for lo, hi in readable:
        blob = ctypes.string_at(lo, hi - lo)
        i = blob.find(_EDAT_MODEL_NAME + b"\0")
        while i >= 0:
            names.append(lo + i)
            i = blob.find(_EDAT_MODEL_NAME + b"\0", i + 1)
    found = []
    for lo, hi in writable:
        words = np.frombuffer(ctypes.string_at(lo, hi - lo), dtype="<u8")
        for name in names:
            for idx in np.nonzero(words == name)[0]:
                addr = lo + 8 * int(idx)
                if not inside(addr, _DEF_BASE_INIT + 8 * _FEAT_WORDS, writable):
                    continue
                raw = ctypes.string_at(addr, _DEF_BASE_INIT + 8 * _FEAT_WORDS)
                desc = struct.unpack_from("<Q", raw, 8)[0]
                if not inside(desc, len(_EDAT_MODEL_DESC) + 1, readable):
                    continue
                if ctypes.string_at(desc, len(_EDAT_MODEL_DESC) + 1) != _EDAT_MODEL_DESC + b"\0":
                    continue
                ident = (raw[_DEF_GEN], struct.unpack_from("<H", raw, _DEF_TYPE)[0], raw[_DEF_EC_GA])
                if ident != _EDAT_MODEL_ID:
                    continue
                feat = struct.unpack_from(f"<{_FEAT_WORDS}Q", raw, _DEF_BASE_FEAT)
                init = struct.unpack_from(f"<{_FEAT_WORDS}Q", raw, _DEF_BASE_INIT)
                if init[0] & 0b11 != 0b11:  # esan3 + zarch are in every base list
                    continue
                if any(feat) and any(i & ~f for i, f in zip(init, feat, strict=True)):
                    continue  # an initialised bitmap always contains its init list
                found.append(addr)
    if len(found) != 1:
        return None, f"found {len(found)} candidate z13 CPU definitions in libunicorn (need exactly 1)"
    return found[0], f"z13 CPU definition at library offset {found[0] - maps[0][0]:#x}"


@contextmanager
def _edat_facilities_enabled(enable: bool) -> Iterator[str]:
    """While active, CPUs created with the z13 model get the EDAT-1/EDAT-2 facility bits."""
    if not enable:
        yield "EDAT not requested (edat=False)"
        return
    with _edat_lock:
        addr, note = _find_cpu_def()
        if addr is None:
            yield f"EDAT facility bits not enabled: {note}"
            return
        touched: list[tuple[int, int]] = []  # (feature index, bit mask in its word) we set
        for feat in (_FEAT_EDAT, _FEAT_EDAT_2):
            word = addr + _DEF_BASE_INIT + 8 * (feat // 64)
            bit = 1 << (feat % 64)
            cell = ctypes.c_uint64.from_address(word)
            if not cell.value & bit:
                cell.value |= bit
                touched.append((feat, bit))
        how = "set in" if touched else "already present in"
        try:
            yield f"EDAT facility bits {how} the {note} while the CPU was created"
        finally:
            # Restore: clear what we set in base_init and in the bitmap the CPU init OR'ed it into.
            for feat, bit in touched:
                for base in (_DEF_BASE_INIT, _DEF_BASE_FEAT):
                    cell = ctypes.c_uint64.from_address(addr + base + 8 * (feat // 64))
                    cell.value &= ~bit


# -- the machine ------------------------------------------------------------------------------------
_SINGLE, _BATCH, _CALIBRATE = 0, 1, 2
_RESULT_REGS = (S.UC_S390X_REG_R1, S.UC_S390X_REG_R3, S.UC_S390X_REG_R4)


class S390xMachine:
    """An emulated z/Architecture CPU whose DAT walks the tables in ``ram`` (see module docstring).

    ``set_asce()`` selects the address space under test; ``probe()`` translates one address with one
    ``emu_start``; ``probe_many()`` translates a batch in one guest loop per chunk of ``chunk``
    addresses.  ``edat1_works`` / ``edat2_works`` say whether 1 MB / 2 GB large entries are really
    honoured (proved by the start-up self-test), ``edat_note`` says how that was decided.

    Parameters: ``ram`` must be big-endian; ``alloc`` must have ``0..0x2000`` (the lowcore)
    reserved -- if it is still free the machine reserves it.  ``edat`` asks for EDAT-1/EDAT-2 (see
    the module docstring for how, and why it may still end up off).  ``timeout_us`` bounds each
    batch ``emu_start`` (an unfinished batch yields ``ProbeError("timed out ...")`` for the
    addresses not reached); a single probe is straight-line code bounded by an instruction budget
    instead, because a Unicorn timeout starts and joins a thread per ``emu_start`` (measured: 7.7k
    instead of 88k runs/s).  ``chunk``: addresses per batch ``emu_start`` (32 bytes of RAM each).

    Raises :class:`EmulatorError` if the self-test cannot locate the program-interruption code or
    the 4K translation path misbehaves.  Not thread-safe: one thread per machine.
    """

    def __init__(
        self,
        ram: PhysicalMemory,
        alloc: FrameAllocator,
        *,
        edat: bool = True,
        timeout_us: int = 1_000_000,
        chunk: int = 4096,
    ) -> None:
        if not ram.big_endian:
            raise ConfigError("s390x needs big-endian guest RAM (PhysicalMemory(..., big_endian=True))")
        if ram.size < 4 * LOWCORE_SIZE:
            raise MemoryLayoutError(f"RAM of {ram.size:#x} bytes is too small for the s390x machine")
        if timeout_us <= 0 or chunk <= 0:
            raise ConfigError("timeout_us and chunk must be positive")
        self.ram = ram
        self.alloc = alloc
        self.timeout_us = timeout_us
        self.chunk = chunk
        self.asce: int | None = None
        self.last_teid: int | None = None
        self.last_teids: list[int | None] = []
        self.edat1_works = False
        self.edat2_works = False
        self.edat_note = ""
        try:  # the documented contract is that the caller reserved the lowcore; make sure of it
            alloc.reserve(0, LOWCORE_SIZE)
        except MemoryLayoutError:
            pass

        # Unicorn: model chosen before the CPU exists; ctl_set_tlb_mode creates it (UC_INIT).
        self.uc = uc = Uc(UC_ARCH_S390X, UC_MODE_BIG_ENDIAN)
        uc.ctl_set_cpu_model(_EDAT_MODEL)
        with _edat_facilities_enabled(edat) as note:
            uc.ctl_set_tlb_mode(UC_TLB_CPU)
        self._edat_patch_note = note
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)

        # The machine's own frames.
        code_pa = self._alloc(0x1000)
        blob = bytearray()
        self._routines: dict[tuple[str, bool], _Routine] = {}
        for write in (False, True):
            code, access, n = _single_code(write)
            start = code_pa + len(blob)
            self._routines[("single", write)] = _Routine(
                start, start + len(code), frozenset(start + a for a in access), start + len(code), n
            )
            blob += code
            code, access, resume, n = _batch_code(write)
            start = code_pa + len(blob)
            self._routines[("batch", write)] = _Routine(
                start, start + len(code), frozenset(start + a for a in access), start + resume, n
            )
            blob += code
        ram.write(code_pa, bytes(blob))
        self._code = (code_pa, bytes(blob))
        self._vbuf = self._alloc(8 * chunk)
        self._obuf = self._alloc(24 * chunk)

        self._ctx = uc.context_save()
        self._ctx_ptr = int(self._ctx.context.value or 0)
        self._ctx_size = int(self._ctx.size)
        self._code_offset: int | None = None
        self._mode = _SINGLE
        self._routine: _Routine | None = None
        self._events: list[tuple[int, int, int | None, int | None, bytes | None]] = []
        self._batch_faults: dict[int, tuple[int, int, int | None, int | None]] = {}
        self._abort: str | None = None
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)

        self._cr0 = CR0_SECONDARY_SPACE
        uc.reg_write(S.UC_S390X_REG_CR0, self._cr0)
        uc.reg_write(S.UC_S390X_REG_CR1, REAL_SPACE_ASCE)
        uc.reg_write(S.UC_S390X_REG_PSWM, PSW_MASK)
        self._self_test(edat)
        self.asce = None
        uc.reg_write(S.UC_S390X_REG_CR7, 0)

    # -- public API ---------------------------------------------------------------------------
    def set_asce(self, asce: int) -> None:
        """Load CR7 (the secondary ASCE, PoP ch. 3 "Address-Space-Control Element") and flush."""
        if not isinstance(asce, int) or not 0 <= asce <= _U64:
            raise AddressError(f"ASCE {asce!r} is not a 64-bit value")
        self.asce = asce
        self.uc.reg_write(S.UC_S390X_REG_CR7, asce)
        self.flush_tlb()

    def flush_tlb(self) -> None:
        """Drop QEMU's TLB: table edits and CR writes are not seen otherwise (ORACLE-NOTES)."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def registers(self) -> dict[str, int]:
        """The translation-relevant CPU state, for fixture manifests: CR0 (bit 37 secondary-space
        control, bit 40 EDAT when enabled), CR1 (real-space ASCE for instruction fetch), CR7 (the
        ASCE under test) and the PSW mask every probe runs with."""
        return {
            "CR0": self.uc.reg_read(S.UC_S390X_REG_CR0),
            "CR1": self.uc.reg_read(S.UC_S390X_REG_CR1),
            "CR7": self.uc.reg_read(S.UC_S390X_REG_CR7),
            "PSW_MASK": PSW_MASK,
        }

    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        """Translate one address by one guest access (one ``emu_start``)."""
        self._require_asce()
        va = self._check_va(va)
        result, teid = self._probe_one(va, self._is_write(access))
        self.last_teid = teid
        return result

    def probe_many(self, vas: Iterable[int] | np.ndarray, access: Access = READ) -> list[ProbeResult]:
        """Translate many addresses: one guest loop (one ``emu_start``) per ``chunk`` addresses.

        Results are identical to ``[probe(va, access) for va in vas]``; ``last_teids`` holds the
        TEID of each faulting address (None elsewhere).  Built on :meth:`probe_many_raw`.
        """
        raw, errors = self.probe_many_raw(vas, access)
        results = raw.results(errors)
        teid = raw.extra["teid"]
        teids: list[int | None] = [None] * len(results)
        for i in np.flatnonzero(teid).tolist():
            teids[i] = int(teid[i])
        self.last_teids = teids
        self.last_teid = teids[-1] if teids else None
        return results

    def probe_many_raw(self, vas: Iterable[int] | np.ndarray, access: Access = READ
                       ) -> tuple[RawProbes, dict[int, ProbeError]]:
        """The batch probe's results as numpy columns (:class:`~emu.machines.base.RawProbes`:
        status, physical address as LRAG gave it, program-interruption code, and ``extra["teid"]``,
        0 where no TEID was stored) and ``{index: ProbeError}``: no Python object per address.
        ``raw.results(errors)`` is exactly :meth:`probe_many`'s list (which does not change
        ``last_teid`` / ``last_teids``)."""
        self._require_asce()
        arr = self._va_array(vas)
        write = self._is_write(access)
        n = len(arr)
        status = np.zeros(n, dtype=np.uint8)
        pa = np.zeros(n, dtype=np.uint64)
        code = np.zeros(n, dtype=np.uint32)
        teid = np.zeros(n, dtype=np.uint64)
        errors: dict[int, ProbeError] = {}
        for first in range(0, n, self.chunk):
            part = slice(first, min(n, first + self.chunk))
            errs = self._run_chunk(arr[part], write, status[part], pa[part], code[part], teid[part])
            errors.update((first + i, e) for i, e in errs.items())
        return RawProbes(status, pa, code, "lrag", self._fault_of_code, {"teid": teid}), errors

    @staticmethod
    def _va_array(vas: Iterable[int] | np.ndarray) -> np.ndarray:
        if isinstance(vas, np.ndarray):
            if vas.ndim != 1 or vas.dtype.kind not in "iu":
                raise AddressError(f"virtual addresses must be a flat integer array, not {vas.dtype}{vas.shape}")
            if vas.dtype.kind == "i" and len(vas) and int(vas.min()) < 0:
                raise AddressError("virtual addresses must not be negative")
            return vas.astype(np.uint64, copy=False)
        values = list(vas)
        if not all(type(v) is int for v in values):
            values = [S390xMachine._check_va(v) for v in values]
        if values and (min(values) < 0 or max(values) > _U64):
            bad = next(v for v in values if not 0 <= v <= _U64)
            raise AddressError(f"virtual address {bad!r} is not a 64-bit address")
        return np.array(values, dtype=np.uint64)

    @staticmethod
    def _fault_of_code(code: int) -> ProbeResult:
        """The :class:`Fault` for a program-interruption code at the probe access."""
        kind = PGM_KINDS.get(code)
        if kind is None:
            return ProbeError(f"unexpected program-interruption code {code:#x}")
        return Fault(kind=kind, level=PGM_LEVELS[code], code=code, vector=EXCP_PGM)

    # -- internals ---------------------------------------------------------------------------
    def _alloc(self, size: int) -> int:
        pa = self.alloc.alloc(size, 0x1000)
        if pa < LOWCORE_SIZE:
            raise MemoryLayoutError(f"allocator handed out {pa:#x} inside the s390x lowcore")
        return pa

    def _require_asce(self) -> None:
        if self.asce is None:
            raise ConfigError("S390xMachine: call set_asce() before probing")

    @staticmethod
    def _check_va(va: int) -> int:
        if not isinstance(va, int | np.integer) or not 0 <= int(va) <= _U64:
            raise AddressError(f"virtual address {va!r} is not a 64-bit address")
        return int(va)

    @staticmethod
    def _is_write(access: Access) -> bool:
        # fetch: no execute permission in basic DAT -> translated like a read (module docstring).
        return access.kind == "write"

    def _clear_teid(self) -> None:
        struct.pack_into(">Q", self.ram.buf, TEID_ADDRESS, 0)

    def _take_teid(self) -> int | None:
        # A stored TEID is never 0 in secondary-space mode (bits 62-63 = 10), so 0 means "none".
        teid = struct.unpack_from(">Q", self.ram.buf, TEID_ADDRESS)[0]
        self._clear_teid()
        return int(teid) or None

    def _on_interrupt(self, uc: Uc, intno: int, _user_data: object) -> None:
        try:
            pc = uc.reg_read(S.UC_S390X_REG_PC)
            uc.context_update(self._ctx)
            code = None
            if self._code_offset is not None:
                code = ctypes.c_uint32.from_address(self._ctx_ptr + self._code_offset).value
            teid = self._take_teid()
            routine = self._routine
            if self._mode == _BATCH and routine is not None:
                index = (uc.reg_read(S.UC_S390X_REG_R6) - self._vbuf) // 8
                if intno == EXCP_PGM and pc in routine.access_pcs:
                    self._batch_faults[index] = (intno, pc, code, teid)
                    uc.reg_write(S.UC_S390X_REG_PC, routine.resume)
                    return
                self._abort = f"exception {intno} (code {code}) at {pc:#x} outside the probe access"
                self._batch_faults[index] = (intno, pc, code, teid)
                uc.emu_stop()
                return
            blob = bytes(self._ctx) if self._mode == _CALIBRATE else None
            self._events.append((intno, pc, code, teid, blob))
            uc.emu_stop()
        except BaseException as exc:  # never let an exception unwind through the C callback
            self._abort = f"interrupt hook failed: {exc!r}"
            try:
                uc.emu_stop()
            except UcError:
                pass

    def _fault(self, intno: int, pc: int, code: int | None, routine: _Routine) -> ProbeResult:
        if intno != EXCP_PGM:
            return ProbeError(f"unexpected exception {intno} at {pc:#x}")
        if pc not in routine.access_pcs:
            return ProbeError(f"program interruption at {pc:#x}, not at the probe access")
        if code is None:
            return ProbeError("program-interruption code could not be located in the CPU state")
        kind = PGM_KINDS.get(code)
        if kind is None:
            return ProbeError(f"unexpected program-interruption code {code:#x}")
        return Fault(kind=kind, level=PGM_LEVELS[code], code=code, vector=intno)

    def _translation(self, va: int, lrag: int, word: int, ipm: int) -> ProbeResult:
        cc = (ipm >> 28) & 3
        if cc:
            return ProbeError(f"LRAG ended with cc {cc} ({lrag:#x}) but the access did not fault")
        tagged = self.ram.tagged_pa(word, va)
        if tagged is None:
            return Translation(pa=lrag, observed_by="lrag")
        if tagged != lrag:
            return ProbeError(f"LRAG gave {lrag:#x} but the load returned the tag of {tagged:#x}")
        return Translation(pa=lrag, observed_by="tag")

    def _start(self, routine: _Routine, **limits: int) -> str | None:
        """Run ``routine``; the reason it failed, or None."""
        self._routine = routine
        self._abort = None
        self.uc.reg_write(S.UC_S390X_REG_PSWM, PSW_MASK)
        try:
            self.uc.emu_start(routine.start, routine.end, **limits)
        except UcError as exc:
            return f"Unicorn error: {exc}"
        except Exception as exc:  # e.g. an exception recorded by the binding's hook guard
            return f"emulation failed: {exc!r}"
        return self._abort

    def _probe_one(self, va: int, write: bool, mode: int = _SINGLE) -> tuple[ProbeResult, int | None]:
        uc = self.uc
        routine = self._routines[("single", write)]
        self.flush_tlb()
        self._mode = mode
        self._events.clear()
        self._clear_teid()
        uc.reg_write(S.UC_S390X_REG_R2, va)
        # Straight-line code: an instruction budget bounds the run as surely as a timer would, at a
        # tenth of the cost (a timeout makes Unicorn start and join a thread per emu_start).
        failure = self._start(routine, count=routine.n_insns + 4)
        if failure:
            return ProbeError(failure), None
        if self._events:
            intno, pc, code, teid, _ = self._events[0]
            result = self._fault(intno, pc, code, routine)
            return result, (teid if isinstance(result, Fault) else None)
        pc = uc.reg_read(S.UC_S390X_REG_PC)
        if pc != routine.end:
            return ProbeError(f"probe stopped at {pc:#x} before the end (instruction budget)"), None
        # The routine ran to its end, so LRAG wrote r1, LG wrote r3 and IPM wrote r4's cc bits.
        lrag, word, ipm = uc.reg_read_batch(_RESULT_REGS)
        return self._translation(va, lrag, word, ipm), None

    def _run_chunk(self, vas: np.ndarray, write: bool, status: np.ndarray, pa: np.ndarray, code: np.ndarray,
                   teid: np.ndarray) -> dict[int, ProbeError]:
        """One ``emu_start`` of the batch loop over ``vas`` (at most ``chunk`` addresses): fills
        this chunk's slices of the raw columns, returns its ``{index: ProbeError}``."""
        uc = self.uc
        n = len(vas)
        routine = self._routines[("batch", write)]
        self.ram.buf[self._vbuf : self._vbuf + 8 * n] = vas.astype(">u8").tobytes()
        self.flush_tlb()
        self._mode = _BATCH
        self._batch_faults = {}
        self._clear_teid()
        uc.reg_write(S.UC_S390X_REG_R6, self._vbuf)
        uc.reg_write(S.UC_S390X_REG_R7, self._obuf)
        uc.reg_write(S.UC_S390X_REG_R8, n)
        failure = self._start(routine, timeout=self.timeout_us)
        self._mode = _SINGLE
        done = n
        pc = uc.reg_read(S.UC_S390X_REG_PC)
        if failure is None and pc != routine.end:
            failure = f"timed out after {self.timeout_us} us (batch of {n}) at {pc:#x}"
        if failure is not None:
            done = max(0, min(n, (uc.reg_read(S.UC_S390X_REG_R6) - self._vbuf) // 8))
        rec = np.frombuffer(self.ram.buf, dtype=">u8", count=3 * n, offset=self._obuf).reshape(n, 3)
        lrag, word, ipm = (rec[:, k].astype(np.uint64) for k in range(3))
        # _translation() for every record at once (a faulting access left its record stale: the
        # fault is patched in below)
        cc = (ipm >> np.uint64(28)) & np.uint64(3)
        is_tag = (word & np.uint64(TAG_MASK)) == np.uint64(TAG)
        tag_pa = (word & np.uint64(~TAG_MASK & _U64)) | (vas & np.uint64(7))
        status[:] = np.where(is_tag, RAW_TAG, RAW_OBSERVED)
        pa[:] = lrag
        errors: dict[int, ProbeError] = {}
        faulted = set()
        for i, (intno, pc_i, pcode, pteid) in self._batch_faults.items():
            if 0 <= i < done:
                faulted.add(i)
                fault = self._fault(intno, pc_i, pcode, routine)
                if isinstance(fault, Fault):
                    status[i], code[i], teid[i] = RAW_FAULT, fault.code, pteid or 0
                else:
                    status[i] = RAW_ERROR
                    errors[i] = cast(ProbeError, fault)
        for i in np.flatnonzero((cc != 0) | (is_tag & (tag_pa != lrag))).tolist():
            if i < done and i not in faulted:  # the scalar path words the ProbeError
                res = self._translation(int(vas[i]), int(lrag[i]), int(word[i]), int(ipm[i]))
                if isinstance(res, ProbeError):
                    status[i] = RAW_ERROR
                    errors[i] = res
        if done < n:
            status[done:] = RAW_ERROR
            err = ProbeError(failure or "batch did not finish")
            errors.update((i, err) for i in range(done, n))
        return errors

    # -- start-up self-test -------------------------------------------------------------------
    def _self_test(self, edat: bool) -> None:
        """Locate the program-interruption code in the CPU state; prove (or refute) EDAT.

        Scratch tables (raw entries, PoP ch. 3 "Translation Tables"): a region-third table (ASCE
        DT=01, TL=0) whose entry 0 designates a segment table, whose entry 0 designates a page
        table mapping VA 0 to a tagged frame DATA.
        """
        ram = self.ram
        r3t, st, pt, data = (self._alloc(0x1000) for _ in range(4))
        ram.tag(data, 0x1000)
        invalid_region3 = 0x20 | 0x04  # I bit 58, TT=01 (region-third)
        for i in range(512):
            ram.write_u64(r3t + 8 * i, invalid_region3)
            ram.write_u64(st + 8 * i, 0x20)  # I bit 58
        for i in range(256):
            ram.write_u64(pt + 8 * i, 0x400)  # I bit 53
        ram.write_u64(r3t, st | 0x04)  # TT=01, TF=0, TL=0
        ram.write_u64(st, pt)  # TT=00, valid
        ram.write_u64(pt, data)  # page 0 -> DATA
        ram.write_u64(pt + 8 * 2, data | 0x200)  # page 2 -> DATA, DAT-protected (bit 54)
        asce = r3t | 0x04  # DT=01 region-third, TL=0
        self.asce = asce
        self.uc.reg_write(S.UC_S390X_REG_CR7, asce)

        # 1. Where is the program-interruption code?  Five known interruptions, one offset.
        provoke = [
            (0x1000, False, 0x11),  # page 1: PTE invalid
            (0x200000, False, 0x10),  # segment 2: STE invalid
            (2 << 31, False, 0x3B),  # region-third entry 2 invalid
            (1 << 42, False, 0x38),  # region-second index != 0 under a region-third ASCE
            (0x2000, True, 0x04),  # store into a DAT-protected page
        ]
        blobs = []
        for va, write, code in provoke:
            self._probe_one(va, write, mode=_CALIBRATE)
            if len(self._events) != 1 or self._events[0][0] != EXCP_PGM or self._events[0][4] is None:
                raise EmulatorError(f"s390x self-test: no program interruption for {va:#x} (code {code:#x})")
            blobs.append((self._events[0][4], code))
        size = min(len(b) for b, _ in blobs)
        offsets = [
            off
            for off in range(0, size - 3, 4)
            if all(struct.unpack_from("=I", b, off)[0] == c for b, c in blobs)
        ]
        if len(offsets) != 1:
            raise EmulatorError(
                f"s390x self-test: program-interruption code found at {len(offsets)} offsets of the "
                "CPU state (need exactly 1)"
            )
        self._code_offset = offsets[0]
        for va, write, code in provoke:
            res, _ = self._probe_one(va, write)
            if not (isinstance(res, Fault) and res.code == code):
                raise EmulatorError(f"s390x self-test: {va:#x} gave {res}, expected code {code:#x}")
        res, _ = self._probe_one(8, False)
        if res != Translation(data + 8, "tag"):
            raise EmulatorError(f"s390x self-test: VA 0x8 gave {res}, expected {data + 8:#x}")

        # 2. EDAT: large entries pointing at DATA's 1 MB / 2 GB frame.
        if not edat:
            self.edat_note = self._edat_patch_note
            return
        seg_va = (3 << 20) + (data & 0xFFFFF) + 8
        ram.write_u64(st + 8 * 3, (data & ~0xFFFFF) | 0x400)  # STE.FC (bit 53), SFAA
        reg_va = (1 << 31) + (data & 0x7FFF_FFFF) + 16
        ram.write_u64(r3t + 8 * 1, (data & ~0x7FFF_FFFF) | 0x400 | 0x04)  # RTTE.FC, RFAA, TT=01

        def check(cr0: int) -> tuple[bool, bool, bool]:
            self._cr0 = cr0
            self.uc.reg_write(S.UC_S390X_REG_CR0, cr0)
            seg = self._probe_one(seg_va, False)[0] == Translation(data + 8, "tag")
            reg = self._probe_one(reg_va, False)[0] == Translation(data + 16, "tag")
            small = (
                self._probe_one(8, False)[0] == Translation(data + 8, "tag")
                and self._probe_one(0x1000, False)[0] == Fault("page-translation", LEVEL_PAGE, 0x11, 3)
                and self._probe_one(0x2000, True)[0] == Fault("protection", None, 0x04, 3)
            )
            return seg, reg, small

        seg_on, reg_on, small_on = check(CR0_SECONDARY_SPACE | CR0_EDAT)
        seg_off, reg_off, small_off = check(CR0_SECONDARY_SPACE)
        self.edat1_works = seg_on and small_on and small_off and not seg_off
        self.edat2_works = self.edat1_works and reg_on and not reg_off
        verdict = (
            f"self-test: 1 MB segment entry {'translates' if seg_on else 'does not translate'}, "
            f"2 GB region-third entry {'translates' if reg_on else 'does not translate'} with CR0.EDAT; "
            f"{'ignored' if not (seg_off or reg_off) else 'NOT ignored'} without; "
            f"4K path {'intact' if small_on and small_off else 'BROKEN'}"
        )
        self.edat_note = f"{self._edat_patch_note}; {verdict}"
        self._cr0 = CR0_SECONDARY_SPACE | (CR0_EDAT if self.edat1_works else 0)
        self.uc.reg_write(S.UC_S390X_REG_CR0, self._cr0)
