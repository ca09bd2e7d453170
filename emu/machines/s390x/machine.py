"""The s390x machine: Unicorn in secondary-space mode with the ASCE under test in CR7, probed
with LRAG and guest loads/stores (see the package docstring).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
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
    address_ndarray,
)
from emu.machines.ram import TAG, TAG_MASK, FrameAllocator, PhysicalMemory
from emu.machines.s390x.edat import EDAT_MODEL, edat_facilities_enabled
from emu.machines.s390x.guest_code import (
    CR0_EDAT,
    CR0_IEP,
    CR0_LOW_ADDRESS_PROTECTION,
    CR0_SECONDARY_SPACE,
    EXCP_PGM,
    LEVEL_PAGE,
    LOWCORE_SIZE,
    PGM_KINDS,
    PGM_LEVELS,
    PSW_MASK,
    REAL_SPACE_ASCE,
    TEID_ADDRESS,
    U64_MASK,
    Routine,
    batch_code,
    single_code,
)

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
    the module docstring for how, and why it may still end up off); ``iep`` also sets the
    instruction-execution-protection facility bit (130) the same way (effective with CR0 bit 43,
    :meth:`set_controls`); ``cpu_model`` (a ``UC_CPU_S390X_*``) other than z13 only without
    either.  ``timeout_us`` bounds each
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
        iep: bool = False,
        cpu_model: int = EDAT_MODEL,
        timeout_us: int = 1_000_000,
        chunk: int = 4096,
    ) -> None:
        if not ram.big_endian:
            raise ConfigError("s390x needs big-endian guest RAM (PhysicalMemory(..., big_endian=True))")
        if ram.size < 4 * LOWCORE_SIZE:
            raise MemoryLayoutError(f"RAM of {ram.size:#x} bytes is too small for the s390x machine")
        if timeout_us <= 0 or chunk <= 0:
            raise ConfigError("timeout_us and chunk must be positive")
        if cpu_model != EDAT_MODEL and (edat or iep):
            raise ConfigError("the EDAT/IEP facility bits can only be set in the z13 model (edat=False, iep=False)")
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
        uc.ctl_set_cpu_model(cpu_model)
        with edat_facilities_enabled(edat, iep) as note:
            uc.ctl_set_tlb_mode(UC_TLB_CPU)
        self._edat_patch_note = note
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)

        # The machine's own frames.
        code_pa = self._alloc(0x1000)
        blob = bytearray()
        self._routines: dict[tuple[str, bool], Routine] = {}
        for write in (False, True):
            code, access, n = single_code(write)
            start = code_pa + len(blob)
            self._routines[("single", write)] = Routine(
                start, start + len(code), frozenset(start + a for a in access), start + len(code), n
            )
            blob += code
            code, access, resume, n = batch_code(write)
            start = code_pa + len(blob)
            self._routines[("batch", write)] = Routine(
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
        self._routine: Routine | None = None
        self._events: list[tuple[int, int, int | None, int | None, bytes | None]] = []
        self._batch_faults: dict[int, tuple[int, int, int | None, int | None]] = {}
        self._abort: str | None = None
        self._ctrl_c = False
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
        if not isinstance(asce, int) or not 0 <= asce <= U64_MASK:
            raise AddressError(f"ASCE {asce!r} is not a 64-bit value")
        self.asce = asce
        self.uc.reg_write(S.UC_S390X_REG_CR7, asce)
        self.flush_tlb()

    def set_controls(self, *, edat: bool, iep: bool = False, lap: bool = False) -> None:
        """CR0: secondary-space control (bit 37) always, CR0.EDAT (bit 40), CR0.IEP (bit 43,
        instruction-execution-protection control) and the low-address-protection control (bit 35;
        PoP ch. 3) as asked; flushes the TLB.  EDAT can only be turned on where the self-test
        proved it (:attr:`edat1_works`)."""
        if edat and not self.edat1_works:
            raise ConfigError(f"CR0.EDAT asked for but EDAT does not work on this machine: {self.edat_note}")
        self._cr0 = CR0_SECONDARY_SPACE | (CR0_EDAT if edat else 0) | (CR0_IEP if iep else 0)
        self._cr0 |= CR0_LOW_ADDRESS_PROTECTION if lap else 0
        self.uc.reg_write(S.UC_S390X_REG_CR0, self._cr0)
        self.flush_tlb()

    def set_primary_asce(self, asce: int) -> None:
        """Load CR1, the primary ASCE instructions are fetched through (secondary-space mode, PoP
        ch. 3 "Address-Space Control"): :data:`REAL_SPACE_ASCE` normally; a conformance run that
        executes in the space under test loads an ASCE that also maps its own code."""
        self.uc.reg_write(S.UC_S390X_REG_CR1, asce)
        self.flush_tlb()

    def load_routine(self, code: bytes, access: Iterable[int], resume: int, n_insns: int) -> Routine:
        """Place a caller's batch routine (e.g. ``guest_code.conform_code``) in fresh frames of
        guest RAM: offsets of its faulting accesses and resume point become real addresses."""
        start = self._alloc(-(-len(code) // 0x1000) * 0x1000)
        self.ram.write(start, code)
        return Routine(start, start + len(code), frozenset(start + a for a in access), start + resume, n_insns)

    def run_routine(self, routine: Routine, vas: np.ndarray, regs: dict[int, int],
                    fault_pcs: Iterable[int] = ()) -> tuple[dict[int, tuple[int, int, int | None, int | None]],
                                                            str | None, int]:
        """One ``emu_start`` of a caller's batch loop over ``vas`` (at most ``chunk``), which
        must read its addresses from the machine's address buffer through r6 (set here, with the
        count in r8) like :meth:`probe_many_raw`'s loop; ``regs`` sets the other registers.  A
        program interruption at one of the routine's accesses or at an address of ``fault_pcs``
        (an instruction fetch that faults stops at the fetched address) resumes the loop at
        ``routine.resume``.  Returns ``({index: (exception, pc, code, TEID or None)}, failure
        or None, addresses done)``."""
        n = len(vas)
        if not 0 < n <= self.chunk:
            raise ConfigError(f"run_routine: 1..{self.chunk} addresses, not {n}")
        uc = self.uc
        self.ram.buf[self._vbuf : self._vbuf + 8 * n] = address_ndarray(vas).astype(">u8").tobytes()
        for reg, value in regs.items():
            uc.reg_write(reg, value)
        uc.reg_write(S.UC_S390X_REG_R6, self._vbuf)
        uc.reg_write(S.UC_S390X_REG_R8, n)
        extra = frozenset(int(p) for p in fault_pcs)
        routine = Routine(routine.start, routine.end, routine.access_pcs | extra, routine.resume, routine.n_insns)
        self.flush_tlb()
        self._mode = _BATCH
        self._batch_faults = {}
        self._clear_teid()
        try:
            failure = self._start(routine, timeout=self.timeout_us)
        finally:
            self._mode = _SINGLE
        done = n
        pc = uc.reg_read(S.UC_S390X_REG_PC)
        if failure is None and pc != routine.end:
            failure = f"timed out after {self.timeout_us} us (batch of {n}) at {pc:#x}"
        if failure is not None:
            done = max(0, min(n, (uc.reg_read(S.UC_S390X_REG_R6) - self._vbuf) // 8))
        return dict(self._batch_faults), failure, done

    def flush_tlb(self) -> None:
        """Drop QEMU's TLB: table edits and CR writes are not seen otherwise (ORACLE-NOTES)."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def scratch_ranges(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of the guest RAM a probe writes: the lowcore (a program interruption
        stores the old PSW, the interruption code and the TEID there, PoP ch. 6) and the batch's
        address and result buffers."""
        return [(0, LOWCORE_SIZE), (self._vbuf, 8 * self.chunk), (self._obuf, 24 * self.chunk)]

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
            return address_ndarray(vas)
        values = list(vas)
        if not all(type(v) is int for v in values):
            values = [S390xMachine._check_va(v) for v in values]
        if values and (min(values) < 0 or max(values) > U64_MASK):
            bad = next(v for v in values if not 0 <= v <= U64_MASK)
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
        if not isinstance(va, int | np.integer) or not 0 <= int(va) <= U64_MASK:
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
            self._ctrl_c = isinstance(exc, KeyboardInterrupt)
            try:
                uc.emu_stop()
            except UcError:
                pass

    def _fault(self, intno: int, pc: int, code: int | None, routine: Routine) -> ProbeResult:
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

    def _start(self, routine: Routine, **limits: int) -> str | None:
        """Run ``routine``; the reason it failed, or None."""
        self._routine = routine
        self._abort = None
        self._ctrl_c = False
        self.uc.reg_write(S.UC_S390X_REG_PSWM, PSW_MASK)
        try:
            self.uc.emu_start(routine.start, routine.end, **limits)
        except UcError as exc:
            return f"Unicorn error: {exc}"
        except Exception as exc:  # e.g. an exception recorded by the binding's hook guard
            return f"emulation failed: {exc!r}"
        if self._ctrl_c:  # Ctrl-C arrived inside the hook: the caller's to handle, not a probe error
            raise KeyboardInterrupt
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
        tag_pa = (word & np.uint64(~TAG_MASK & U64_MASK)) | (vas & np.uint64(7))
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
