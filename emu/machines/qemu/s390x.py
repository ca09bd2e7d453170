"""The s390x machine on QEMU system emulation (``qemu-system-s390x -machine s390-ccw-virtio
-cpu max``, TCG: guest RAM at absolute 0, one CPU).

The probe firmware (``s390x_probe.S``, assembled with ``s390x-linux-gnu-as`` at start-up) is
position independent; the host writes it into a frame of guest RAM it allocated, and QEMU's IPL
of a raw ``-kernel`` image starts it: the image is only an 8-byte short-format IPL PSW (PoP ch. 4
"Short PSW": bit 12 one, bit 32 BA, bits 33-63 the address) loaded at absolute 0, whose address
QEMU 7.2 takes as the start address and enters in 64-bit addressing mode with DAT off
(hw/s390x/ipl.c ``s390_ipl_realize``: "if not Linux load the address of the (short) IPL PSW";
``s390_ipl_prepare_cpu``: ``psw.mask = IPL_PSW_MASK``).  The prefix register is 0 after the
reset, so the lowcore is real and absolute 0..0x1fff, as on the Unicorn machine.

Probes are those of :class:`~emu.machines.s390x.S390xMachine` (see :mod:`emu.machines.s390x`):
secondary-space mode with CR1 = a real-space ASCE and CR7 = the ASCE under test; LRAG, then LG
(and STG for writes) per address; a program interruption at that access goes to the firmware's
program-check handler, which records the program-interruption code (real 142-143) and the TEID
(real 168-175) and resumes with the next address (PoP ch. 6).  The results -- status, the LRAG
real address, the interruption code, ``extra["teid"]`` -- are the Unicorn machine's columns.

EDAT: CR0 bit 40 is set when STFLE (stored by the firmware at start) reports facility 8
(EDAT-1); 2 GB region-third entries need facility 78 (EDAT-2) as well, and QEMU's DAT honours
them only with both (target/s390x/mmu_helper.c ``mmu_translate_asce``).  ``-cpu max`` has both.

Control: the VM is paused (QMP ``stop``) between requests; the host writes a request to the
mailbox, QMP ``cont`` runs the guest's polling loop, and the host pauses it again once DONE
equals the request number.  The TLB is purged (PTLB) at every request.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from emu.errors import AddressError, ConfigError, EmulatorError, MemoryLayoutError
from emu.machines.base import (
    RAW_ERROR,
    RAW_FAULT,
    RAW_OBSERVED,
    RAW_TAG,
    READ,
    Access,
    ProbeError,
    ProbeResult,
    RawProbes,
)
from emu.machines.qemu import qemu_binary, raw_firmware
from emu.machines.qemu.process import QemuProcess
from emu.machines.qemu.shared_ram import share
from emu.machines.ram import TAG, TAG_MASK, FrameAllocator, PhysicalMemory
from emu.machines.s390x.guest_code import (
    CR0_EDAT,
    CR0_SECONDARY_SPACE,
    LOWCORE_SIZE,
    PSW_MASK,
    REAL_SPACE_ASCE,
    U64_MASK,
)
from emu.machines.s390x.machine import S390xMachine

SOURCE = Path(__file__).with_name("s390x_probe.S")
MB_REQ, MB_DONE, MB_CR0, MB_CR1, MB_CR7, MB_COUNT, MB_OP, MB_BUF = 0x00, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38
MB_OUT, MB_ALIVE, MB_PANIC, MB_PANIC_ADDR, MB_PROBE_PSW, MB_STFLE = 0x40, 0x48, 0x50, 0x58, 0x60, 0x80
MB_SKEY_ADDR, MB_SKEY_FRAMES, MB_SKEY, MB_SKEY_READ = 0xA0, 0xA8, 0xB0, 0xB8
#: Bytes per result record: LRAG result, loaded word, IPM, interruption code, TEID.
RECORD = 40
CHUNK = 16384
#: STFLE facility numbers (PoP ch. 4 "Facility Indications"): 8 enhanced-DAT 1, 78 enhanced-DAT 2.
FACILITY_EDAT1, FACILITY_EDAT2 = 8, 78
#: Short IPL PSW (PoP ch. 4 "Short PSW"): bit 12 = 1 in the mask word; the address word has BA (bit 32).
SHORT_PSW_MASK, SHORT_PSW_BA = 0x0008_0000, 0x8000_0000


def _firmware() -> bytes:
    return raw_firmware("s390x", SOURCE, ("-m64", "-march=z10"))


class QemuS390xMachine:
    """z/Architecture DAT on ``qemu-system-s390x -cpu max`` (see the module docstring), with the
    interface of :class:`~emu.machines.s390x.S390xMachine`: ``set_asce()``, ``probe()``,
    ``probe_many()``, ``probe_many_raw()``, ``last_teid`` / ``last_teids``, ``edat1_works`` /
    ``edat2_works`` / ``edat_note``, ``scratch_ranges()``, ``registers()``.

    ``ram`` must be big-endian, of whole MiB; ``alloc`` must keep the lowcore (real 0..0x2000)
    free of tables -- if that range is still free the machine reserves it."""

    arch = "s390x"
    emulator = "qemu"
    CHUNK = CHUNK

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, *, edat: bool = True,
                 timeout_s: float = 20.0, cpu: str = "max") -> None:
        if not ram.big_endian:
            raise ConfigError("s390x needs big-endian guest RAM (PhysicalMemory(..., big_endian=True))")
        if ram.size % (1 << 20):
            raise ConfigError(f"the qemu s390x machine needs RAM of whole MiB, not {ram.size:#x}")
        binary = qemu_binary("s390x")
        fw = _firmware()
        try:
            alloc.reserve(0, LOWCORE_SIZE)
        except MemoryLayoutError:
            pass
        self.ram, self.alloc, self.timeout_s = ram, alloc, timeout_s
        self.asce: int | None = None
        self.last_teid: int | None = None
        self.last_teids: list[int | None] = []
        self.mailbox = self._alloc(4096)
        self.code_pa = self._alloc(-(-len(fw) // 4096) * 4096)
        self.vbuf = self._alloc(8 * CHUNK)
        self.obuf = self._alloc(RECORD * CHUNK)
        if self.code_pa >= 1 << 31:
            raise MemoryLayoutError(f"the s390x probe firmware at {self.code_pa:#x} is beyond the 31-bit IPL PSW")
        ram.write(self.mailbox, bytes(4096))
        ram.write(self.code_pa, fw[:8] + self.mailbox.to_bytes(8, "big") + fw[16:])
        w = ram.write_u64
        w(self.mailbox + MB_CR1, REAL_SPACE_ASCE)
        w(self.mailbox + MB_BUF, self.vbuf)
        w(self.mailbox + MB_OUT, self.obuf)
        self._cr0 = CR0_SECONDARY_SPACE
        self._req = 0
        self._tmp = tempfile.mkdtemp(prefix="foliowalk-qemu-")
        ipl = os.path.join(self._tmp, "ipl-psw.bin")
        Path(ipl).write_bytes(struct.pack(">II", SHORT_PSW_MASK, SHORT_PSW_BA | self.code_pa))
        mib = ram.size >> 20
        self.command = [
            binary, "-machine", "s390-ccw-virtio,memory-backend=ram0", "-accel", "tcg", "-cpu", cpu,
            "-m", f"{mib}M", "-object", f"memory-backend-file,id=ram0,size={mib}M,mem-path={share(ram)},share=on",
            "-kernel", ipl,
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "none", "-monitor", "none",
            "-S", "-qmp", f"unix:{os.path.join(self._tmp, 'qmp.sock')},server=on,wait=off",
        ]
        self._qemu = QemuProcess(self, self.command, binary, self._tmp)
        try:
            self._qemu.connect(timeout_s)
            self._run_until(lambda: self.ram.read_u64(self.mailbox + MB_ALIVE) == 1, "starting")
        except EmulatorError as err:
            time.sleep(0.05)
            tail = self._qemu.log_tail(2)
            self.close()
            raise EmulatorError(f"{err}{': ' + tail if tail else ''}") from None
        except BaseException:
            self.close()
            raise
        has1, has2 = self.has_facility(FACILITY_EDAT1), self.has_facility(FACILITY_EDAT2)
        self.edat1_works = edat and has1
        self.edat2_works = edat and has1 and has2
        self.edat_note = (f"qemu-system-s390x -cpu {cpu}: STFLE facility 8 (EDAT-1) {'on' if has1 else 'off'}, "
                          f"78 (EDAT-2) {'on' if has2 else 'off'}; CR0.EDAT "
                          f"{'set' if self.edat1_works else 'clear (EDAT not requested)' if has1 else 'clear'}")
        if self.edat1_works:
            self._cr0 |= CR0_EDAT

    # -- host side of the mailbox ------------------------------------------------------------------
    def _alloc(self, size: int) -> int:
        pa = self.alloc.alloc(size, 0x1000)
        if pa < LOWCORE_SIZE:
            raise MemoryLayoutError(f"allocator handed out {pa:#x} inside the s390x lowcore")
        return pa

    def _check_alive(self, doing: str) -> None:
        panic = self.ram.read_u64(self.mailbox + MB_PANIC)
        if panic:
            addr = self.ram.read_u64(self.mailbox + MB_PANIC_ADDR)
            raise EmulatorError(f"the probe firmware took program interruption {panic & 0xFFFF:#x} in its own "
                                f"code (old PSW address {addr:#x})")
        self._qemu.check_running(doing)

    def _run_until(self, done: Callable[[], bool], doing: str, budget: float | None = None) -> None:
        """QMP cont, wait until ``done()``, QMP stop; on a timeout QEMU is killed."""
        self._qemu.run_until(done, doing, self.timeout_s if budget is None else budget, self._check_alive, self.close)

    def has_facility(self, bit: int) -> bool:
        """Whether STFLE (run by the firmware at start) reports facility ``bit`` (bit 0 is the
        leftmost bit of the first doubleword, PoP ch. 10 STORE FACILITY LIST EXTENDED)."""
        word = self.ram.read_u64(self.mailbox + MB_STFLE + 8 * (bit // 64))
        return bool(word >> (63 - bit % 64) & 1)

    # -- the interface of S390xMachine ----------------------------------------------------------------
    def set_asce(self, asce: int) -> None:
        """The ASCE loaded into CR7 at the next request (PoP ch. 3 "Address-Space-Control Element")."""
        if not isinstance(asce, int) or not 0 <= asce <= U64_MASK:
            raise AddressError(f"ASCE {asce!r} is not a 64-bit value")
        self.asce = asce

    def set_cr0(self, cr0: int) -> None:
        """The CR0 loaded at the next request (default: secondary-space control, and EDAT where
        the facility is installed); the placement check sets CR0.EDAT without the facility."""
        self._cr0 = cr0

    def set_storage_key(self, pa: int, size: int, key: int) -> None:
        """SET STORAGE KEY EXTENDED (PoP ch. 10; key bits 0-3 access-control, 4 fetch-protection)
        of the 4K frames of ``[pa, pa + size)``, run by the firmware at the next request."""
        self.ram.check_range(pa, size, "storage-key range")
        w = self.ram.write_u64
        w(self.mailbox + MB_SKEY_ADDR, pa & ~0xFFF)
        w(self.mailbox + MB_SKEY_FRAMES, -(-(pa % 4096 + size) // 4096))
        w(self.mailbox + MB_SKEY, key)

    def storage_key_read(self) -> int:
        """INSERT STORAGE KEY EXTENDED of the first frame the last :meth:`set_storage_key` set
        (read back by the firmware right after setting it)."""
        return self.ram.read_u64(self.mailbox + MB_SKEY_READ) & 0xFF

    def set_psw_key(self, key: int) -> None:
        """The PSW key (PSW bits 8-11) the probe loop runs with from the next request (0: the
        default, which passes every key-controlled check, PoP ch. 3 "Key-Controlled Protection")."""
        mask = self.ram.read_u64(self.mailbox + MB_PROBE_PSW) & ~(0xF << 52)
        self.ram.write_u64(self.mailbox + MB_PROBE_PSW, mask | (key & 0xF) << 52)

    def lrag(self, va: int) -> tuple[int, int]:
        """LOAD REAL ADDRESS's condition code and R1 for a read of ``va`` (the loop runs LRAG
        before the access, whether or not the access then faults; PoP ch. 10)."""
        self.probe_many_raw([va])
        lrag, ipm = self.ram.read_u64(self.obuf), self.ram.read_u64(self.obuf + 16)
        return (ipm >> 28) & 3, lrag

    def flush_tlb(self) -> None:
        """Nothing to do: the firmware purges the TLB (PTLB) at every request."""

    def scratch_ranges(self) -> list[tuple[int, int]]:
        """The RAM a probe writes: the lowcore (old PSWs, interruption code, TEID), the mailbox and
        the batch's address and record buffers."""
        return [(0, LOWCORE_SIZE), (self.mailbox, 4096), (self.vbuf, 8 * CHUNK), (self.obuf, RECORD * CHUNK)]

    def registers(self) -> dict[str, int]:
        """CR0, CR1, CR7 and the PSW mask of the probe loop, as on the Unicorn machine."""
        return {"CR0": self._cr0, "CR1": REAL_SPACE_ASCE, "CR7": self.asce or 0, "PSW_MASK": PSW_MASK}

    def close(self) -> None:
        self._qemu.finalizer()

    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        result = self.probe_many([va], access)[0]
        self.last_teid = self.last_teids[0]
        return result

    def probe_many(self, vas: Iterable[int] | np.ndarray, access: Access = READ) -> list[ProbeResult]:
        """As :meth:`S390xMachine.probe_many`: ``last_teids`` holds each faulting address's TEID."""
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
        """The columns of :meth:`S390xMachine.probe_many_raw` (fetches are reads, and user probes
        supervisor probes, for the reasons given in :mod:`emu.machines.s390x`)."""
        if self.asce is None:
            raise ConfigError("QemuS390xMachine: call set_asce() before probing")
        if not isinstance(access, Access):
            raise ConfigError(f"not an access: {access!r}")
        if not self._qemu.finalizer.alive:
            raise EmulatorError("the QEMU process was stopped (closed, or killed after an earlier error)")
        arr = S390xMachine._va_array(vas)
        n = len(arr)
        status = np.zeros(n, dtype=np.uint8)
        pa = np.zeros(n, dtype=np.uint64)
        code = np.zeros(n, dtype=np.uint32)
        teid = np.zeros(n, dtype=np.uint64)
        errors: dict[int, ProbeError] = {}
        write = access.kind == "write"
        for first in range(0, n, CHUNK):
            part = slice(first, min(n, first + CHUNK))
            errs = self._chunk(arr[part], write, status[part], pa[part], code[part], teid[part])
            errors.update((first + i, e) for i, e in errs.items())
        return RawProbes(status, pa, code, "lrag", S390xMachine._fault_of_code, {"teid": teid}), errors

    def _chunk(self, vas: np.ndarray, write: bool, status: np.ndarray, pa: np.ndarray, code: np.ndarray,
               teid: np.ndarray) -> dict[int, ProbeError]:
        k = len(vas)
        mb, w = self.mailbox, self.ram.write_u64
        self.ram.buf[self.vbuf : self.vbuf + 8 * k] = vas.astype(">u8").tobytes()
        w(mb + MB_CR0, self._cr0)
        w(mb + MB_CR7, self.asce or 0)
        w(mb + MB_COUNT, k)
        w(mb + MB_OP, int(write))
        self._req += 1
        req = self._req
        w(mb + MB_REQ, req)
        self._run_until(lambda: self.ram.read_u64(mb + MB_DONE) == req, f"a batch of {k} addresses",
                        self.timeout_s + k * 1e-3)
        w(mb + MB_SKEY_ADDR, 0)  # storage keys are set once
        rec = np.frombuffer(self.ram.buf, dtype=">u8", count=5 * k, offset=self.obuf).reshape(k, 5).astype(np.uint64)
        lrag, word, ipm, pcode, pteid = (rec[:, j] for j in range(5))
        fault = pcode != 0
        cc = (ipm >> np.uint64(28)) & np.uint64(3)
        is_tag = (word & np.uint64(TAG_MASK)) == np.uint64(TAG)
        tag_pa = (word & np.uint64(~TAG_MASK & U64_MASK)) | (vas & np.uint64(7))
        status[:] = np.where(fault, RAW_FAULT, np.where(is_tag, RAW_TAG, RAW_OBSERVED))
        pa[:] = np.where(fault, 0, lrag)
        code[:] = pcode.astype(np.uint32)
        teid[:] = np.where(fault, pteid, 0)
        errors: dict[int, ProbeError] = {}
        for i in np.flatnonzero(~fault & ((cc != 0) | (is_tag & (tag_pa != lrag)))).tolist():
            res = self._translation(int(vas[i]), int(lrag[i]), int(word[i]), int(ipm[i]))
            if isinstance(res, ProbeError):
                status[i] = RAW_ERROR
                errors[i] = res
        return errors

    def _translation(self, va: int, lrag: int, word: int, ipm: int) -> ProbeResult:
        return S390xMachine._translation(self, va, lrag, word, ipm)  # type: ignore[arg-type]
