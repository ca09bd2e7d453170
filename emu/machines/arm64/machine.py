"""The arm64 machine: Unicorn set up for EL1&0 stage-1 translation, probed with AT + PAR_EL1 for
data accesses and with a real fetch for instruction fetches (see the package docstring).
"""

from __future__ import annotations

import gc
import struct
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import Any, cast

import numpy as np
from unicorn import (
    UC_ARCH_ARM64,
    UC_ERR_FETCH_UNMAPPED,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_MODE_ARM,
    UC_PROT_ALL,
    UC_TLB_CPU,
    Uc,
    UcError,
)
from unicorn.arm64_const import (
    UC_ARM64_REG_PC,
    UC_ARM64_REG_PSTATE,
    UC_ARM64_REG_X0,
    UC_ARM64_REG_X1,
    UC_ARM64_REG_X2,
    UC_ARM64_REG_X3,
)
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from emu.errors import AddressError, ConfigError, EmulatorError, MemoryLayoutError
from emu.machines.arm64.guest_code import (
    ACCESS_STUB_OFF,
    AT_NAME,
    AT_OP,
    AT_OP_PAN,
    AT_OPS,
    BATCH_END,
    BATCH_INSNS,
    BATCH_OFF,
    BRK0,
    ERET,
    ERET_OFF,
    LOAD_STUB_OFF,
    SINGLE_LEN,
    SINGLE_OFF,
    a64_ldr,
    a64_ldtr,
    a64_str,
    a64_sttr,
    batch_code,
    pack_words,
    single_code,
)
from emu.machines.arm64.sysregs import (
    EL1_REGS,
    EXCP_BKPT,
    EXCP_DATA_ABORT,
    EXCP_PREFETCH_ABORT,
    GRANULES,
    HCR_EL2_RW,
    MAIR_EL1_DEFAULT,
    PAR_F,
    PAR_FST_MASK,
    PAR_FST_SHIFT,
    PAR_PA_MASK,
    PSTATE_EL3H,
    PSTATE_PAN,
    SCR_EL3_NS,
    SCR_EL3_RW,
    SCTLR_M,
    SPSR_EL0T,
    SPSR_EL1H,
    SYSREGS,
    TCR_EPD0,
    TCR_EPD1,
    VA_BITS_RANGE,
    decode_fst,
    start_level,
    tcr_el1_value,
)
from emu.machines.base import (
    RAW_ERROR,
    RAW_FAULT,
    RAW_OBSERVED,
    READ,
    Access,
    Fault,
    ProbeError,
    ProbeResult,
    RawProbes,
    Translation,
    address_ndarray,
)
from emu.machines.ram import FrameAllocator, PhysicalMemory

# ---------------------------------------------------------------------------------------------
# Fast construction of result objects (the batch path's Python cost is building objects).
# ---------------------------------------------------------------------------------------------
_obj_new = object.__new__
_obj_setattr = object.__setattr__


def _bulk_translations_ok() -> bool:
    """Can Translation objects be built by setting ``__dict__`` directly (no dataclass __init__)?

    Only if Translation is still a plain frozen dataclass with exactly (pa, observed_by), no
    ``__post_init__`` and no ``__slots__``; and the result must compare and hash equal to one
    built normally.  Otherwise the ordinary constructor is used.
    """
    fields = getattr(Translation, "__dataclass_fields__", None)
    if fields is None or list(fields) != ["pa", "observed_by"]:
        return False
    if hasattr(Translation, "__post_init__") or hasattr(Translation, "__slots__"):
        return False
    try:
        o = _obj_new(Translation)
        _obj_setattr(o, "__dict__", {"pa": 0x1234, "observed_by": "at"})
        ref = Translation(0x1234, "at")
        return bool(o == ref and hash(o) == hash(ref) and repr(o) == repr(ref))
    except Exception:  # pragma: no cover - defensive
        return False


_BULK_OK = _bulk_translations_ok()


def _translations(pas: list[int]) -> list[Translation]:
    """``[Translation(pa, "at") for pa in pas]``, built about 1.5x faster, with the cyclic GC paused
    (allocating many GC-tracked objects otherwise triggers collections that dominate the cost)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if not _BULK_OK:
            return [Translation(p, "at") for p in pas]
        objs: list[Translation] = list(map(_obj_new, repeat(Translation, len(pas))))
        dicts = [{"pa": p, "observed_by": "at"} for p in pas]
        deque(map(_obj_setattr, objs, repeat("__dict__"), dicts), maxlen=0)
        return objs
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
class Arm64Machine:
    """An AArch64 PE whose EL1&0 stage-1 MMU translates through tables in ``ram``.

    ``granule``: 4096, 16384 or 65536 (Arm ARM D8 "Translation granule").  ``va_bits``: 36..48
    for every granule (TCR_EL1.TxSZ = 64 - va_bits, both halves); the walk starts at level
    :attr:`start_level` (e.g. 4KB/48: level 0, 4KB/39: level 1, 16KB/47: level 1, 16KB/36:
    level 2, 64KB/48: level 1, 64KB/42: level 2).  ``timeout_us`` bounds each batch run.

    Public API: :meth:`set_roots`, :meth:`probe`, :meth:`probe_many` (and the raw
    :meth:`probe_many_par`), :meth:`flush_tlb`, :meth:`registers`, :meth:`set_sysreg`,
    :meth:`load_u64` (a real EL1/EL0 data load), :meth:`id_aa64mmfr0`, :meth:`close`.
    Attributes: ``granule``, ``va_bits``, ``start_level``, ``root_table_size`` (bytes of the
    level-``start_level`` table a root must hold), ``code_pa`` (the machine's guest-code page,
    one granule, taken from ``alloc``), ``load_stub_pa``, ``buf_pa``/``chunk`` (the batch buffer
    in guest RAM, ``chunk`` 8-byte slots, also taken from ``alloc``), ``uc`` (the main engine).

    Call :meth:`set_roots` before probing; until then both halves are disabled (TCR_EL1.EPD0/
    EPD1) and every probe is a level 0 Translation fault.  Not thread-safe: one caller at a time.
    """

    arch = "arm64"
    CHUNK = 16384  # addresses per batch emu_start (the batch buffer holds CHUNK 8-byte slots)

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, *, granule: int = 4096,
                 va_bits: int = 48, timeout_us: int = 1_000_000, cpu_model: int | None = None) -> None:
        if granule not in GRANULES:
            raise ConfigError(
                f"arm64 granule {granule!r} is not supported: use 4096, 16384 or 65536 bytes"
            )
        if not isinstance(va_bits, int) or va_bits not in VA_BITS_RANGE:
            raise ConfigError(
                f"arm64 va_bits {va_bits!r} is not supported with the {granule // 1024}KB granule: "
                f"use {VA_BITS_RANGE.start}..{VA_BITS_RANGE.stop - 1} (TCR_EL1.TxSZ 16..28)"
            )
        if not isinstance(timeout_us, int) or timeout_us <= 0:
            raise ConfigError(f"timeout_us must be a positive integer, not {timeout_us!r}")
        if ram.big_endian:
            raise ConfigError("arm64 guest RAM must be little-endian (PhysicalMemory(big_endian=False))")
        self.ram = ram
        self.alloc = alloc
        self.granule = granule
        self.va_bits = va_bits
        self.timeout_us = timeout_us
        self.cpu_model = cpu_model
        self.page_shift, self.bits_per_level = GRANULES[granule]
        self.start_level = start_level(granule, va_bits)
        #: entries in the level-``start_level`` table and its size in bytes (>= 64, D19 TTBRn_EL1)
        self.root_entries = 1 << (va_bits - self.page_shift - self.bits_per_level * (3 - self.start_level))
        self.root_table_size = max(8 * self.root_entries, 64)

        # Guest code: one granule page (so load_u64 callers can map it with one page entry).
        self.code_pa = alloc.alloc(granule, granule)
        pieces = [(ERET_OFF, [ERET]), (LOAD_STUB_OFF, [a64_ldr(2, 1), BRK0])]
        for insn, encode in (("LDR", a64_ldr), ("STR", a64_str), ("LDTR", a64_ldtr), ("STTR", a64_sttr)):
            pieces.append((ACCESS_STUB_OFF[insn], [encode(2, 1), BRK0]))
        for op in range(AT_OPS):
            pieces.append((SINGLE_OFF + 0x10 * op, single_code(op)))
            pieces.append((BATCH_OFF + 0x40 * op, batch_code(op)))
        for offset, words in pieces:
            ram.write(self.code_pa + offset, pack_words(words))
        #: physical address of ``LDR X2, [X1]; BRK #0`` run by :meth:`load_u64`
        self.load_stub_pa = self.code_pa + LOAD_STUB_OFF
        chunk = self.CHUNK
        while True:  # a smaller batch buffer for a small RAM
            try:
                self.buf_pa = alloc.alloc(8 * chunk, 4096)
                break
            except MemoryLayoutError:
                if chunk <= 512:
                    raise
                chunk //= 2
        self.chunk = chunk

        self._regs: dict[str, int] = {
            "MAIR_EL1": MAIR_EL1_DEFAULT,
            "TCR_EL1": tcr_el1_value(granule, va_bits, epd0=True, epd1=True),
            "TTBR0_EL1": 0,
            "TTBR1_EL1": 0,
        }
        self._intr: list[int] = []
        self._pan = self._pan_at = False  # PSTATE.PAN, and AT S1E1RP/WP for EL1 data (set_pan)
        self.uc = self._new_uc(self._on_intr_main)
        self._regs["SCTLR_EL1"] = self._rd(self.uc, "SCTLR_EL1")
        # The fetch/load engine (second Uc, same RAM) is built on first use.
        self._fx: UcAArch64 | None = None
        self._fx_state: dict[str, Any] = {}
        self._exc_off: int | None = None
        self._pool: ThreadPoolExecutor | None = None  # the batch pipeline's worker, on first use
        self.flush_tlb()

    # -- engine set-up ------------------------------------------------------------------------
    @staticmethod
    def _rd(uc: UcAArch64, name: str) -> int:
        op0, op1, crn, crm, op2 = SYSREGS[name]
        return int(uc.cpr_read(op0, op1, crn, crm, op2))

    @staticmethod
    def _wr(uc: UcAArch64, name: str, value: int) -> None:
        """Write a system register (a CP_REG write also rebuilds QEMU's hflags)."""
        op0, op1, crn, crm, op2 = SYSREGS[name]
        uc.cpr_write(op0, op1, crn, crm, op2, value)

    def _new_uc(self, on_intr: Callable[[UcAArch64, int, Any], None]) -> UcAArch64:
        uc = cast(UcAArch64, Uc(UC_ARCH_ARM64, UC_MODE_ARM))
        if self.cpu_model is not None:  # a UC_CPU_ARM64_* model (default: Unicorn's Cortex-A72)
            uc.ctl_set_cpu_model(self.cpu_model)
        uc.ctl_set_tlb_mode(UC_TLB_CPU)
        uc.mem_map_ptr(0, self.ram.size, UC_PROT_ALL, self.ram.host_address)
        uc.hook_add(UC_HOOK_INTR, on_intr)
        # ORACLE-NOTES MUST-FIX: SCR_EL3.RW, else EL1 tables are walked as AArch32 LPAE.  NS: the
        # EL1&0 regime is the Non-secure one (as Linux); then EL2 is in the way, so HCR_EL2.RW.
        self._wr(uc, "SCR_EL3", self._rd(uc, "SCR_EL3") | SCR_EL3_RW | SCR_EL3_NS)
        self._wr(uc, "HCR_EL2", self._rd(uc, "HCR_EL2") | HCR_EL2_RW)
        sctlr = self._regs.get("SCTLR_EL1", self._rd(uc, "SCTLR_EL1") | SCTLR_M)
        for name in ("MAIR_EL1", "TCR_EL1", "TTBR0_EL1", "TTBR1_EL1"):
            self._wr(uc, name, self._regs[name])
        # Run at EL3 (AT needs no mapping of its own code); the CP_REG write after the PSTATE
        # write refreshes the cached hflags (ORACLE-NOTES).
        uc.reg_write(UC_ARM64_REG_PSTATE, PSTATE_EL3H)
        self._wr(uc, "SCTLR_EL1", sctlr)
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        return uc

    def _engines(self) -> list[UcAArch64]:
        return [self.uc] if self._fx is None else [self.uc, self._fx]

    def _on_intr_main(self, uc: UcAArch64, intno: int, _data: Any) -> None:
        self._intr.append(intno)
        uc.emu_stop()

    # -- registers ----------------------------------------------------------------------------
    def set_roots(self, ttbr0_pa: int | None, ttbr1_pa: int | None) -> None:
        """Load TTBR0_EL1 (VAs with bits [63:va_bits] all 0) and TTBR1_EL1 (all 1).

        A ``None`` half gets TCR_EL1.EPD0/EPD1 = 1: walks through it are disabled and every
        address in it is a Translation fault (level 0).  A root must be aligned to the size of
        the level-:attr:`start_level` table (at least 64 bytes; D19 "TTBR0_EL1" BADDR) and lie in
        RAM.  The TLB is flushed.
        """
        for name, pa in (("TTBR0_EL1", ttbr0_pa), ("TTBR1_EL1", ttbr1_pa)):
            if pa is None:
                continue
            if not isinstance(pa, int) or pa < 0 or pa >= 1 << 48:
                raise AddressError(f"{name} root {pa!r} is not a 48-bit physical address")
            if pa % self.root_table_size:
                raise AddressError(
                    f"{name} root {pa:#x} is not aligned to the {self.root_table_size}-byte "
                    f"level-{self.start_level} table"
                )
            self.ram.check_range(pa, self.root_table_size, f"{name} root table")
        tcr = tcr_el1_value(self.granule, self.va_bits, epd0=ttbr0_pa is None, epd1=ttbr1_pa is None)
        self._set({"TCR_EL1": tcr, "TTBR0_EL1": ttbr0_pa or 0, "TTBR1_EL1": ttbr1_pa or 0})

    def set_sysreg(self, name: str, value: int) -> None:
        """Write one EL1&0 translation register (SCTLR_EL1, TCR_EL1, MAIR_EL1, TTBR0_EL1,
        TTBR1_EL1) verbatim on every engine and flush the TLB -- for experiments beyond
        :meth:`set_roots` (TCR.HPD, SCTLR.WXN, out-of-range TxSZ, ...)."""
        if name not in EL1_REGS:
            raise ConfigError(f"set_sysreg: {name!r} is not one of {', '.join(EL1_REGS)}")
        if not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ConfigError(f"set_sysreg: {name} value {value!r} is not a 64-bit value")
        self._set({name: value})

    def _set(self, values: dict[str, int]) -> None:
        self._regs.update(values)
        for uc in self._engines():
            for name, value in values.items():
                self._wr(uc, name, value)
        self.flush_tlb()

    def scratch_ranges(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of the guest RAM a probe writes: the batch buffer (addresses in, PAR_EL1
        values out).  Exceptions push nothing to memory on arm64."""
        return [(self.buf_pa, 8 * self.chunk)]

    def registers(self) -> dict[str, int]:
        """The translation registers as the CPU holds them (for fixture manifests):
        SCTLR_EL1, TCR_EL1, MAIR_EL1, TTBR0_EL1, TTBR1_EL1, SCR_EL3 and HCR_EL2."""
        names = ("SCTLR_EL1", "TCR_EL1", "MAIR_EL1", "TTBR0_EL1", "TTBR1_EL1", "SCR_EL3", "HCR_EL2")
        return {name: self._rd(self.uc, name) for name in names}

    def id_aa64mmfr0(self) -> int:
        """ID_AA64MMFR0_EL1 of the CPU model (PARange [3:0], TGran16 [23:20], ...)."""
        return self._rd(self.uc, "ID_AA64MMFR0_EL1")

    def flush_tlb(self) -> None:
        """Invalidate every engine's TLB (host edits to tables are invisible until this)."""
        for uc in self._engines():
            uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    # -- probes -------------------------------------------------------------------------------
    def _at_op(self, access: Access) -> int:
        """The AT instruction for a data access: S1E0R/W at EL0; at EL1 S1E1R/W, or S1E1RP/WP
        while :meth:`set_pan` is on (C5.5: AT S1E1R/W ignore PSTATE.PAN, S1E1RP/WP honour it)."""
        if access.kind not in ("read", "write"):
            raise ConfigError(f"access kind {access.kind!r} is not read, write or fetch")
        if self._pan_at and not access.user:
            return AT_OP_PAN[access.kind == "write"]
        return AT_OP[(bool(access.user), access.kind == "write")]

    def id_aa64mmfr1(self) -> int:
        """ID_AA64MMFR1_EL1 of the CPU model (HAFDBS [3:0], PAN [23:20], ...; D19)."""
        return self._rd(self.uc, "ID_AA64MMFR1_EL1")

    def set_pan(self, pan: bool, *, at_pan: bool | None = None) -> None:
        """PSTATE.PAN for the probes (FEAT_PAN, Arm ARM D19 "PAN"; ID_AA64MMFR1_EL1.PAN != 0):
        set in EL3's PSTATE, which AT S1E1RP/S1E1WP read (C5.5), and in SPSR_EL3.PAN (bit 22)
        of every ERET into EL1/EL0 (fetch probes, :meth:`load_u64`).  ``at_pan`` (default:
        ``pan``): EL1 read/write probes use AT S1E1RP/S1E1WP (FEAT_PAN2, ID_AA64MMFR1_EL1.PAN
        >= 2) instead of AT S1E1R/S1E1W, which never apply PAN.  The TLB is flushed."""
        at_pan = pan if at_pan is None else at_pan
        level = self.id_aa64mmfr1() >> 20 & 0xF
        if (pan and level < 1) or (at_pan and level < 2):
            raise ConfigError(f"this CPU model has ID_AA64MMFR1_EL1.PAN = {level}: "
                              f"{'FEAT_PAN2 (AT S1E1RP/WP)' if at_pan else 'FEAT_PAN'} not implemented")
        self._pan, self._pan_at = bool(pan), bool(at_pan)
        self.uc.reg_write(UC_ARM64_REG_PSTATE, PSTATE_EL3H | (PSTATE_PAN if pan else 0))
        self._wr(self.uc, "MAIR_EL1", self._regs["MAIR_EL1"])  # CP_REG write: rebuild the hflags
        self.flush_tlb()

    @staticmethod
    def _check_va(va: int) -> int:
        if not isinstance(va, (int, np.integer)) or not 0 <= int(va) < 1 << 64:
            raise AddressError(f"virtual address {va!r} is not a 64-bit value")
        return int(va)

    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        """Translate one access at ``va`` with the MMU (one ``emu_start``).

        read/write: ``AT S1E1R``/``S1E1W`` (``AT S1E0R``/``S1E0W`` for ``access.user``) from EL3,
        then PAR_EL1: ``Translation(pa, "at")`` or ``Fault(kind, level, code=FST, vector=0)``.
        fetch: a real instruction fetch at EL1/EL0 (see the module docstring);
        ``Fault(..., vector=3)`` from the prefetch abort's syndrome.
        """
        va = self._check_va(va)
        if access.kind == "fetch":
            return self._probe_fetch(va, access.user)
        op = self._at_op(access)
        uc = self.uc
        self.flush_tlb()
        entry = self.code_pa + SINGLE_OFF + 0x10 * op
        uc.reg_write(UC_ARM64_REG_X1, va)
        self._intr.clear()
        try:
            uc.emu_start(entry, entry + SINGLE_LEN, count=2 * len(single_code(op)))
        except UcError as e:
            return ProbeError(f"unicorn error during AT {AT_NAME[op]} at {va:#x}: {e}")
        if self._intr:
            return ProbeError(f"unexpected exception {self._intr[0]} during AT {AT_NAME[op]} at {va:#x}")
        pc = uc.reg_read(UC_ARM64_REG_PC)
        if pc != entry + SINGLE_LEN:
            return ProbeError(f"AT probe at {va:#x} stopped at pc {pc:#x}")
        return self._decode_par(int(uc.reg_read(UC_ARM64_REG_X2)), va)

    @staticmethod
    def _fault_from_fst(fst: int, vector: int, what: str) -> Fault | ProbeError:
        decoded = decode_fst(fst)
        if decoded is None:
            return ProbeError(f"{what}: fault status code {fst:#08b} is not one this oracle names")
        kind, level = decoded
        return Fault(kind, level, fst, vector)

    def _decode_par(self, par: int, va: int) -> ProbeResult:
        if par & PAR_F:
            return self._fault_from_fst((par >> PAR_FST_SHIFT) & PAR_FST_MASK, 0, "PAR_EL1")
        return Translation((par & PAR_PA_MASK) | (va & 0xFFF), "at")

    def probe_many(self, vas: Sequence[int], access: Access = READ) -> list[ProbeResult]:
        """Batch probe: ``[self.probe(va, access) for va in vas]``, with the same results.

        read/write: guest code loops over the addresses (written into guest RAM) doing AT + MRS
        PAR_EL1 and stores each PAR over its address: one ``emu_start`` per :attr:`chunk`
        addresses.  Large batches are pipelined: a worker thread runs the guest on chunk k+1
        (Unicorn releases the GIL) while this thread turns chunk k's PARs into result objects.
        fetch: real fetches, :meth:`probe_fetch_many`.
        """
        if access.kind == "fetch":
            return self.probe_fetch_many(vas, access.user)
        op = self._at_op(access)
        va_arr = self._va_array(vas)
        n = len(va_arr)
        self.flush_tlb()
        if n <= self.chunk:
            pars, errors = self._run_chunk(va_arr, op)
            return self._decode_pars(pars, va_arr, errors)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arm64-batch")
        c = self.chunk
        out: list[ProbeResult] = []
        pending = self._pool.submit(self._run_chunk, va_arr[:c], op)
        for first in range(0, n, c):
            pars, errors = pending.result()
            if first + c < n:
                pending = self._pool.submit(self._run_chunk, va_arr[first + c : first + 2 * c], op)
            out += self._decode_pars(pars, va_arr[first : first + c], errors)
        return out

    @staticmethod
    def _va_array(vas: Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(vas, np.ndarray):
            return address_ndarray(vas)
        try:
            return np.fromiter(vas, dtype=np.uint64, count=len(vas))
        except (OverflowError, TypeError, ValueError):
            for va in vas:
                Arm64Machine._check_va(va)
            raise

    def probe_many_par(self, vas: Sequence[int] | np.ndarray, access: Access = READ
                       ) -> tuple[np.ndarray, dict[int, ProbeError]]:
        """The raw batch: PAR_EL1 per address (uint64 array) and ``{index: ProbeError}`` for any
        address the guest did not reach.  For callers that decode PARs with numpy themselves."""
        if access.kind == "fetch":
            raise ConfigError("probe_many_par: fetch probes have no PAR (use probe_many)")
        op = self._at_op(access)
        va_arr = self._va_array(vas)
        self.flush_tlb()
        parts = [self._run_chunk(va_arr[i : i + self.chunk], op) for i in range(0, len(va_arr), self.chunk)]
        pars = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, dtype=np.uint64)
        errors = {i * self.chunk + k: e for i, (_, errs) in enumerate(parts) for k, e in errs.items()}
        return pars, errors

    def probe_many_raw(self, vas: Sequence[int] | np.ndarray, access: Access = READ
                       ) -> tuple[RawProbes, dict[int, ProbeError]]:
        """:meth:`probe_many_par` decoded into the raw columns every machine gives
        (:class:`~emu.machines.base.RawProbes`: status, physical address from PAR_EL1, PAR_EL1.FST
        for a fault) and ``{index: ProbeError}``; ``raw.results(errors)`` is exactly
        :meth:`probe_many`'s list.  Read and write probes (a fetch has no PAR)."""
        va_arr = self._va_array(vas)
        pars, errors = self.probe_many_par(va_arr, access)
        ok = (pars & np.uint64(PAR_F)) == 0
        status = np.where(ok, RAW_OBSERVED, RAW_FAULT).astype(np.uint8)
        if errors:
            status[list(errors)] = RAW_ERROR
        pa = (pars & np.uint64(PAR_PA_MASK)) | (va_arr & np.uint64(0xFFF))
        code = np.where(ok, 0, (pars >> np.uint64(PAR_FST_SHIFT)) & np.uint64(PAR_FST_MASK)).astype(np.uint32)
        return RawProbes(status, pa, code, "at", self._fault_table().__getitem__), errors

    def _run_chunk(self, part: np.ndarray, op: int) -> tuple[np.ndarray, dict[int, ProbeError]]:
        """One ``emu_start`` of the batch loop over ``part`` (at most :attr:`chunk` addresses):
        PAR_EL1 per address, and a ProbeError for each address the loop did not reach (Unicorn
        error, unexpected exception, ``timeout_us`` or instruction budget exhausted)."""
        k = len(part)
        pars = np.zeros(k, dtype=np.uint64)
        errors: dict[int, ProbeError] = {}
        if not k:
            return pars, errors
        entry = self.code_pa + BATCH_OFF + 0x40 * op
        end = entry + BATCH_END
        uc, buf = self.uc, self.buf_pa
        self.ram.buf[buf : buf + 8 * k] = part.astype("<u8", copy=False).tobytes()
        uc.reg_write(UC_ARM64_REG_X0, buf)
        uc.reg_write(UC_ARM64_REG_X3, k)
        self._intr.clear()
        reason = None
        try:
            uc.emu_start(entry, end, timeout=self.timeout_us, count=BATCH_INSNS * k + 2)
        except UcError as e:
            reason = f"unicorn error in the AT {AT_NAME[op]} batch: {e}"
        done = max(0, min((int(uc.reg_read(UC_ARM64_REG_X0)) - buf) // 8, k))
        if reason is None and (self._intr or uc.reg_read(UC_ARM64_REG_PC) != end or done != k):
            reason = (f"AT {AT_NAME[op]} batch stopped after {done} of {k} addresses"
                      + (f" (exception {self._intr[0]})" if self._intr else " (timeout or budget)"))
        pars[:done] = np.frombuffer(self.ram.buf[buf : buf + 8 * done].tobytes(), "<u8")
        if reason is not None:
            err = ProbeError(reason)
            errors.update((i, err) for i in range(done, k))
        return pars, errors

    def _decode_pars(self, pars: np.ndarray, vas: np.ndarray, errors: dict[int, ProbeError]
                     ) -> list[ProbeResult]:
        """PAR_EL1 values -> result objects, vectorised: translations are built in bulk, faults
        are shared objects per FST, and the two are merged by an index permutation."""
        ok = (pars & np.uint64(PAR_F)) == 0
        if errors:
            ok[list(errors)] = False
        pas = ((pars[ok] & np.uint64(PAR_PA_MASK)) | (vas[ok] & np.uint64(0xFFF))).tolist()
        translations: list[ProbeResult] = _translations(pas)  # type: ignore[assignment]
        if len(pas) == len(pars):
            return translations
        bad = ~ok
        fst = ((pars[bad] >> np.uint64(PAR_FST_SHIFT)) & np.uint64(PAR_FST_MASK)).tolist()
        others: list[ProbeResult] = list(map(self._fault_table().__getitem__, fst))
        if errors:
            bad_index = {int(i): k for k, i in enumerate(np.flatnonzero(bad))}
            for i, err in errors.items():
                others[bad_index[i]] = err
        # position of each address's result in translations + others
        perm = np.where(ok, np.cumsum(ok) - 1, len(translations) + np.cumsum(bad) - 1)
        pool = translations + others
        return list(map(pool.__getitem__, perm.tolist()))

    _FAULTS: list[ProbeResult] | None = None

    @classmethod
    def _fault_table(cls) -> list[ProbeResult]:
        """One shared (immutable) result object per FST value, for the batch decoder."""
        if cls._FAULTS is None:
            cls._FAULTS = [cls._fault_from_fst(fst, 0, "PAR_EL1") for fst in range(64)]
        return cls._FAULTS

    # -- real fetches and loads (second engine) -----------------------------------------------
    def _fetch_engine(self) -> UcAArch64:
        if self._fx is None:
            fx = self._new_uc(self._on_intr_fx)
            fx.hook_add(UC_HOOK_CODE, self._on_code_fx, begin=1, end=0)
            self._fx = fx
            try:
                self._exc_off = self._locate_exception_record(fx)
            except EmulatorError:
                self._fx = None
                raise
        return self._fx

    def _on_intr_fx(self, uc: UcAArch64, intno: int, _data: Any) -> None:
        st = self._fx_state
        if "batch" in st:
            self._batch_fetch_abort(uc, intno, st)
            return
        if "data_batch" in st:
            self._data_batch_event(uc, intno, st)
            return
        if "intno" not in st:
            st["intno"] = intno
            st["blob"] = bytes(uc.context_save())
        uc.emu_stop()

    def _on_code_fx(self, uc: UcAArch64, address: int, _size: int, _data: Any) -> None:
        st = self._fx_state
        if "batch" in st:
            self._batch_fetch_reached(uc, address, st)
            return
        if "data_batch" in st:
            return  # the interrupt hook drives data batches
        st["insns"] = st.get("insns", 0) + 1
        if st["insns"] == 2 and st.get("stop_at_target"):
            # 1st instruction: the ERET at EL3; 2nd: the first instruction at the target, which
            # the MMU has just let the CPU fetch.  Stop before it executes.
            st["reached"] = address
            uc.emu_stop()

    def _eret_to(self, fx: UcAArch64, target: int, spsr: int, *, stop_at_target: bool,
                 x1: int = 0) -> dict[str, Any]:
        """ERET from EL3 into EL1/EL0 at ``target``; return what the hooks saw."""
        st = self._fx_state
        st.clear()
        st["stop_at_target"] = stop_at_target
        fx.reg_write(UC_ARM64_REG_PSTATE, PSTATE_EL3H)
        fx.reg_write(UC_ARM64_REG_X1, x1)
        self._wr(fx, "SPSR_EL3", spsr | (PSTATE_PAN if self._pan else 0))
        self._wr(fx, "ELR_EL3", target)  # CP_REG write: hflags now say EL3
        self.flush_tlb()
        try:
            # until=0: Unicorn skips its post-run re-translation of "until - 1" (module docstring).
            fx.emu_start(self.code_pa + ERET_OFF, 0, count=8)
        except UcError as e:
            st["error"] = e
        return dict(st)

    def _exception_record(self, blob: bytes) -> tuple[int, int]:
        """(syndrome, faulting VA) of the last exception from QEMU's ``env->exception``."""
        assert self._exc_off is not None
        syndrome = struct.unpack_from("<I", blob, self._exc_off - 8)[0]
        vaddress = struct.unpack_from("<Q", blob, self._exc_off)[0]
        return syndrome, vaddress

    def _locate_exception_record(self, fx: UcAArch64) -> int:
        """Find ``env->exception`` {u32 syndrome; u32 fsr; u64 vaddress; ...} in the context blob.

        Two marker instruction aborts with all walks disabled (TCR_EL1.EPD0/EPD1) must each leave
        the marker VA at the same offset, preceded by an Instruction Abort syndrome (EC 0x21,
        taken from EL1 to EL1) -- or fetch probes cannot name their faults.
        """
        saved = self._regs["TCR_EL1"]
        self._wr(fx, "TCR_EL1", saved | TCR_EPD0 | TCR_EPD1)
        found: list[set[int]] = []
        try:
            for marker in (0x0000_5A5A_5A5A_5000, 0x0000_3C3C_3C3C_3000):
                st = self._eret_to(fx, marker, SPSR_EL1H, stop_at_target=True)
                if st.get("intno") != EXCP_PREFETCH_ABORT:
                    raise EmulatorError(
                        f"calibration fetch at {marker:#x} gave exception {st.get('intno')} / "
                        f"{st.get('error')}, not a prefetch abort"
                    )
                blob = st["blob"]
                hits = set()
                for off in range(8, len(blob) - 8, 8):
                    if struct.unpack_from("<Q", blob, off)[0] == marker:
                        syn = struct.unpack_from("<I", blob, off - 8)[0]
                        if syn >> 26 == 0x21:
                            hits.add(off)
                found.append(hits)
        finally:
            self._wr(fx, "TCR_EL1", saved)
            self.flush_tlb()
        common = set.intersection(*found)
        if len(common) != 1:
            raise EmulatorError(f"cannot locate the exception record in the CPU state blob ({found})")
        return common.pop()

    # -- batched real fetches: one emu_start, the hooks move the PC from target to target ------
    def probe_fetch_many(self, vas: Sequence[int] | np.ndarray, user: bool = False) -> list[ProbeResult]:
        """Real instruction fetches at EL1 (EL0 if ``user``) at each of ``vas``, in one
        ``emu_start`` per :attr:`chunk` addresses: one ERET into EL1/EL0 at the first target;
        then, the code hook sees each target the MMU let the CPU fetch, and the interrupt hook
        each prefetch abort (ISS.IFSC from QEMU's exception record), and either hook writes the
        next target into the PC before the instruction there runs (Unicorn leaves the TB and
        resumes at the new PC; the PE stays at the EL it was ERET to, with the same PSTATE).
        A reached target's PA comes from one batched AT S1E1R afterwards (the walk is the same;
        only the permission check differs).  The same results as ``[probe(va, fetch)]``.
        """
        va_arr = self._va_array(vas)
        out: list[ProbeResult] = []
        for first in range(0, len(va_arr), self.chunk):
            out += self._fetch_chunk(va_arr[first:first + self.chunk], user)
        return out

    def _fetch_chunk(self, part: np.ndarray, user: bool) -> list[ProbeResult]:
        n = len(part)
        results: list[ProbeResult | None] = [None] * n
        targets = [int(va) & ~3 for va in part.tolist()]  # A64 instructions are 4-byte aligned
        for k, t in enumerate(targets):
            if t == 0:  # emu_start's until=0 stops there: what the single probe says (module docstring)
                results[k] = self._probe_fetch(int(part[k]), user)
        todo = [k for k in range(n) if results[k] is None]
        if todo:
            try:
                fx = self._fetch_engine()
            except EmulatorError as e:
                return [ProbeError(f"fetch probes not supported: {e}")] * n
            st = self._fx_state
            st.clear()
            st.update(batch=True, targets=[targets[k] for k in todo], i=0, got=[None] * len(todo))
            err = None
            while st["i"] < len(todo):
                fx.reg_write(UC_ARM64_REG_PSTATE, PSTATE_EL3H)
                self._wr(fx, "SPSR_EL3", (SPSR_EL0T if user else SPSR_EL1H) | (PSTATE_PAN if self._pan else 0))
                self._wr(fx, "ELR_EL3", st["targets"][st["i"]])
                self.flush_tlb()
                left = len(todo) - st["i"]
                try:
                    fx.emu_start(self.code_pa + ERET_OFF, 0, timeout=self.timeout_us * max(1, left // 1024),
                                 count=4 * left + 8)
                    break
                except UcError as e:
                    if getattr(e, "errno", None) != UC_ERR_FETCH_UNMAPPED or st["got"][st["i"]] is not None:
                        err = e
                        break
                    # the MMU let the fetch through to a PA outside RAM (as _probe_fetch): reached;
                    # go on from the next target with a new ERET
                    st["got"][st["i"]] = True
                    st["i"] += 1
            got = st["got"]
            st.clear()
            what = "EL0" if user else "EL1"
            for j, k in enumerate(todo):
                g = got[j]
                if g is None:
                    results[k] = ProbeError(f"{what} fetch at {int(part[k]):#x}: the batch stopped before it"
                                            + (f" (unicorn error {err})" if err else ""))
                elif isinstance(g, tuple):
                    syndrome, vaddress = g
                    if syndrome >> 26 not in (0x20, 0x21) or vaddress != targets[k]:
                        results[k] = ProbeError(f"{what} fetch at {int(part[k]):#x}: abort record "
                                                f"{syndrome:#x} @ {vaddress:#x} does not match")
                    else:
                        results[k] = self._fault_from_fst(syndrome & 0x3F, EXCP_PREFETCH_ABORT,
                                                          f"{what} fetch at {int(part[k]):#x}")
                else:
                    results[k] = g
        reached = [k for k in range(n) if results[k] is True]  # type: ignore[comparison-overlap]
        if reached:
            pars, errors = self.probe_many_par(part[reached], READ)
            for j, k in enumerate(reached):
                at = ProbeError(errors[j].reason) if j in errors else self._decode_par(int(pars[j]), int(part[k]))
                results[k] = at if isinstance(at, Translation) else ProbeError(
                    f"fetch at {int(part[k]):#x} succeeded but AT S1E1R says {at}")
        return cast("list[ProbeResult]", results)

    # -- batched real data accesses: an access stub the tables map, the hooks move X1 -----------
    def probe_access_many(self, vas: Sequence[int] | np.ndarray, insn: str, *, user: bool = False,
                          stub_va: int, store_value: int = 0) -> list[ProbeResult]:
        """Real data accesses ``insn`` (``LDR``, ``STR``, ``LDTR``, ``STTR``: 8 bytes at X1) at
        EL1 (EL0 if ``user``) to each of ``vas``, one ``emu_start`` per :attr:`chunk` addresses.

        The tables under test must map ``stub_va`` -- the VA of :attr:`code_pa` (the machine's
        code page) -- executable at that EL: the CPU ERETs to the stub ``<insn> X2, [X1]; BRK
        #0`` there; the interrupt hook takes the BRK (the access completed) or the data abort
        (ISS.DFSC and FAR from QEMU's exception record, Arm ARM D19 ESR_EL1), puts the next
        address in X1 (and ``store_value`` in X2 for a store) and the stub's address in the PC.
        A load's result is ``Translation(pa, "tag")`` when the word loaded is a ``ram.tag``
        word (the PA the load reached), else a ProbeError naming the word; a store's PA comes
        from one AT S1E1R batch afterwards.  LDTR/STTR at EL1 are checked with EL0's
        permissions (PSTATE.UAO = 0) and without PAN; ``set_pan`` applies to the others.
        """
        if insn not in ACCESS_STUB_OFF:
            raise ConfigError(f"probe_access_many: {insn!r} is not one of {', '.join(ACCESS_STUB_OFF)}")
        va_arr = self._va_array(vas)
        fx = self._fetch_engine()
        stub = stub_va + ACCESS_STUB_OFF[insn]
        out: list[ProbeResult] = []
        for first in range(0, len(va_arr), self.chunk):
            part = va_arr[first:first + self.chunk]
            st = self._fx_state
            st.clear()
            st.update(data_batch=True, vas=[int(v) for v in part.tolist()], i=0, got=[None] * len(part),
                      stub=stub, value=store_value)
            fx.reg_write(UC_ARM64_REG_PSTATE, PSTATE_EL3H)
            fx.reg_write(UC_ARM64_REG_X1, st["vas"][0] if len(part) else 0)
            fx.reg_write(UC_ARM64_REG_X2, store_value)
            self._wr(fx, "SPSR_EL3", (SPSR_EL0T if user else SPSR_EL1H) | (PSTATE_PAN if self._pan else 0))
            self._wr(fx, "ELR_EL3", stub)
            self.flush_tlb()
            err = None
            if len(part):
                try:
                    fx.emu_start(self.code_pa + ERET_OFF, 0, timeout=self.timeout_us * max(1, len(part) // 1024),
                                 count=4 * len(part) + 8)
                except UcError as e:
                    err = e
            got = st["got"]
            st.clear()
            what = f"{'EL0' if user else 'EL1'} {insn}"
            results: list[ProbeResult | None] = [None] * len(part)
            stored = []
            for k, g in enumerate(got):
                va = int(part[k])
                if g is None:
                    results[k] = ProbeError(f"{what} at {va:#x}: the batch stopped before it"
                                            + (f" (unicorn error {err})" if err else ""))
                elif isinstance(g, ProbeError):
                    results[k] = g
                elif g[0] == "abort":
                    syndrome, vaddress = g[1]
                    if syndrome >> 26 not in (0x24, 0x25) or vaddress != va:
                        results[k] = ProbeError(f"{what} at {va:#x}: abort record {syndrome:#x} @ {vaddress:#x} "
                                                "does not match")
                    else:
                        results[k] = self._fault_from_fst(syndrome & 0x3F, EXCP_DATA_ABORT, f"{what} at {va:#x}")
                elif insn in ("LDR", "LDTR"):
                    pa = self.ram.tagged_pa(g[1], va)
                    results[k] = (Translation(pa, "tag") if pa is not None else
                                  ProbeError(f"{what} at {va:#x} loaded {g[1]:#x}, not a tagged word"))
                else:
                    stored.append(k)
            if stored:
                pars, errors = self.probe_many_par(part[stored], READ)
                for j, k in enumerate(stored):
                    at = ProbeError(errors[j].reason) if j in errors else self._decode_par(int(pars[j]), int(part[k]))
                    results[k] = at if isinstance(at, Translation) else ProbeError(
                        f"{what} at {int(part[k]):#x} completed but AT S1E1R says {at}")
            out += cast("list[ProbeResult]", results)
        return out

    def _data_batch_event(self, uc: UcAArch64, intno: int, st: dict[str, Any]) -> None:
        i = st["i"]
        if i >= len(st["vas"]):
            uc.emu_stop()
            return
        if intno == EXCP_BKPT:
            st["got"][i] = ("done", int(uc.reg_read(UC_ARM64_REG_X2)))
        elif intno == EXCP_DATA_ABORT:
            st["got"][i] = ("abort", self._exception_record(bytes(uc.context_save())))
        else:
            st["got"][i] = ProbeError(f"access at {st['vas'][i]:#x}: unexpected exception {intno} "
                                      "(is the access stub mapped and executable?)")
            uc.emu_stop()
            return
        st["i"] = i + 1
        if st["i"] < len(st["vas"]):
            uc.reg_write(UC_ARM64_REG_X1, st["vas"][st["i"]])
            uc.reg_write(UC_ARM64_REG_X2, st["value"])
            uc.reg_write(UC_ARM64_REG_PC, st["stub"])
        else:
            uc.emu_stop()

    def _batch_next(self, uc: UcAArch64, st: dict[str, Any]) -> None:
        st["i"] += 1
        if st["i"] < len(st["targets"]):
            uc.reg_write(UC_ARM64_REG_PC, st["targets"][st["i"]])
        else:
            uc.emu_stop()

    def _batch_fetch_reached(self, uc: UcAArch64, address: int, st: dict[str, Any]) -> None:
        i = st["i"]
        if i >= len(st["targets"]) or address != st["targets"][i]:
            return  # the ERET at EL3 (or the PC being moved): not a target
        st["got"][i] = True
        self._batch_next(uc, st)

    def _batch_fetch_abort(self, uc: UcAArch64, intno: int, st: dict[str, Any]) -> None:
        i = st["i"]
        if intno != EXCP_PREFETCH_ABORT or i >= len(st["targets"]):
            if i < len(st["targets"]):
                st["got"][i] = ProbeError(f"fetch at {st['targets'][i]:#x}: unexpected exception {intno}")
            uc.emu_stop()
            return
        st["got"][i] = self._exception_record(bytes(uc.context_save()))
        self._batch_next(uc, st)

    def _probe_fetch(self, va: int, user: bool) -> ProbeResult:
        """A real instruction fetch at EL1 (or EL0) at ``va``; PA from AT S1E1R (same walk).

        The fetch goes to ``va & ~3`` (A64 instructions are 4-byte aligned; a misaligned PC would
        raise a PC alignment fault before any translation), which lies in the same page.
        """
        try:
            fx = self._fetch_engine()
        except EmulatorError as e:
            return ProbeError(f"fetch probes not supported: {e}")
        target = va & ~3
        st = self._eret_to(fx, target, SPSR_EL0T if user else SPSR_EL1H, stop_at_target=True)
        what = f"{'EL0' if user else 'EL1'} fetch at {va:#x}"
        if "intno" in st:
            if st["intno"] != EXCP_PREFETCH_ABORT:
                return ProbeError(f"{what}: unexpected exception {st['intno']}")
            syndrome, vaddress = self._exception_record(st["blob"])
            if syndrome >> 26 not in (0x20, 0x21) or vaddress != target:
                return ProbeError(f"{what}: abort record {syndrome:#x} @ {vaddress:#x} does not match")
            return self._fault_from_fst(syndrome & 0x3F, EXCP_PREFETCH_ABORT, what)
        err = st.get("error")
        reached = st.get("reached") == target
        if err is not None and getattr(err, "errno", None) == UC_ERR_FETCH_UNMAPPED:
            reached = True  # the MMU allowed the fetch; the PA it gave is outside RAM
        elif err is not None:
            return ProbeError(f"{what}: unicorn error {err}")
        if not reached:
            return ProbeError(f"{what}: the fetch neither completed nor faulted")
        at = self.probe(va, READ)
        if not isinstance(at, Translation):
            return ProbeError(f"{what} succeeded but AT S1E1R says {at}")
        return at

    def load_u64(self, va: int, *, stub_va: int, user: bool = False) -> int | Fault | ProbeError:
        """A real 8-byte data load at EL1 (EL0 if ``user``) from ``va`` through the tables.

        The CPU ERETs to ``stub_va`` and runs ``LDR X2, [X1]; BRK #0`` there, so the tables under
        test must map ``stub_va`` to :attr:`load_stub_pa` (= :attr:`code_pa` + 0x400; mapping the
        granule page at :attr:`code_pa` does it), executable at that EL.  Returns the loaded word
        (e.g. a ``ram.tag`` word, which proves the PA reached), a ``Fault`` from the data abort's
        syndrome (``vector`` 4), or a ``ProbeError`` (also when the stub itself cannot be fetched).
        """
        va = self._check_va(va)
        fx = self._fetch_engine()
        st = self._eret_to(fx, stub_va, SPSR_EL0T if user else SPSR_EL1H, stop_at_target=False, x1=va)
        what = f"{'EL0' if user else 'EL1'} load at {va:#x}"
        intno = st.get("intno")
        if intno == EXCP_BKPT:
            return int(fx.reg_read(UC_ARM64_REG_X2))
        if intno == EXCP_DATA_ABORT:
            syndrome, vaddress = self._exception_record(st["blob"])
            if syndrome >> 26 not in (0x24, 0x25) or vaddress != va:
                return ProbeError(f"{what}: abort record {syndrome:#x} @ {vaddress:#x} does not match")
            return self._fault_from_fst(syndrome & 0x3F, EXCP_DATA_ABORT, what)
        if intno == EXCP_PREFETCH_ABORT:
            return ProbeError(f"{what}: the load stub at {stub_va:#x} could not be fetched")
        return ProbeError(f"{what}: the load stub did not finish ({st.get('error')})")

    def close(self) -> None:
        """Stop the batch worker thread and drop the fetch engine (the main engine goes with the
        machine object; RAM belongs to the caller)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._fx = None
