"""The arm64 machine on QEMU system emulation (``qemu-system-aarch64 -machine none -cpu max``:
guest RAM at physical 0, the CPU resets into EL3, AArch64, MMU off).

The probe firmware (``arm64_probe.S``, assembled with ``aarch64-linux-gnu-as`` at start-up and
placed in guest RAM by ``-device loader``) does what the Unicorn machine's guest code does
(:mod:`emu.machines.arm64`): at EL3, ``AT S1E1R``/``S1E1W``/``S1E0R``/``S1E0W`` on every address
and ``PAR_EL1`` stored over it (Arm ARM D19 "PAR_EL1": F, FST, PA), for the EL1&0 regime set up
from the request (TCR_EL1 of the configuration, TTBR0_EL1/TTBR1_EL1, SCTLR_EL1.M, MAIR_EL1).  The
results are those of :class:`~emu.machines.arm64.Arm64Machine`: ``Translation(pa, "at")`` or the
fault PAR_EL1.FST names.  ``-cpu max`` implements the 4K, 16K and 64K granules and 52-bit PAs
(TCR_EL1.IPS = 48 here, as on Unicorn, whose Cortex-A72 caps it to PARange = 44).

Control: the VM is paused (QMP ``stop``) between requests; a request is written to the mailbox,
QMP ``cont`` runs the guest's polling loop, and the host pauses it again once DONE equals the
request number.  Instruction fetches are not probed (AT ignores execute permission; a real fetch
would need EL1 exception vectors): :class:`ConfigError`.  A synchronous External abort on an
AT's walk (a table outside RAM) is taken as an exception to EL3; the firmware's vector turns
ESR_EL3's DFSC into the PAR_EL1 value F = 1, FST = DFSC (a ``walk-external-abort`` fault).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from emu.errors import AddressError, ConfigError, EmulatorError
from emu.machines.arm64.guest_code import AT_OP
from emu.machines.arm64.machine import Arm64Machine
from emu.machines.arm64.sysregs import (
    GRANULES,
    MAIR_EL1_DEFAULT,
    PAR_F,
    PAR_FST_MASK,
    PAR_FST_SHIFT,
    PAR_PA_MASK,
    TCR_EPD0,
    TCR_EPD1,
    start_level,
    tcr_el1_value,
)
from emu.machines.base import (
    RAW_ERROR,
    RAW_FAULT,
    RAW_OBSERVED,
    READ,
    Access,
    ProbeError,
    ProbeResult,
    RawProbes,
    address_ndarray,
)
from emu.machines.qemu import qemu_binary, raw_firmware
from emu.machines.qemu.process import QemuProcess
from emu.machines.qemu.shared_ram import share
from emu.machines.ram import FrameAllocator, PhysicalMemory

SOURCE = Path(__file__).with_name("arm64_probe.S")
MB_REQ, MB_DONE, MB_TCR, MB_TTBR0, MB_TTBR1, MB_COUNT, MB_OP = 0x00, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30
MB_SCTLR, MB_MAIR, MB_ALIVE, MB_BUF, MB_PANIC, MB_PANIC_ELR, MB_MMFR0 = 0x38, 0x40, 0x48, 0x50, 0x58, 0x60, 0x68
MB_MMFR2 = 0x70
#: SCTLR_EL1: the RES1 bits of Armv8.0 (D19 "SCTLR_EL1": 29, 28, 23, 22, 20, 11) and M.
SCTLR_EL1 = 0x30D0_0801
CHUNK = 16384
#: QEMU 7.2 cannot report a fault at lookup level -1 (FEAT_LPA2, 4KB granule, 52-bit VA): its
#: long-descriptor fault-status encoder asserts ``fi->level >= 0 && fi->level <= 3``
#: (target/arm/internals.h:479 arm_fi_to_lfsc) and the process aborts, so an AT whose walk would
#: fault there is not run; those addresses are answered with this reason (an oracle-cannot-check).
QEMU_LEVEL_MINUS_1 = ("oracle-cannot-check: qemu-7.2-no-level-minus-1-fault: the level -1 descriptor faults "
                      "(Translation fault, level -1), which QEMU 7.2 cannot report (arm_fi_to_lfsc asserts "
                      "level 0..3 and aborts)")


def _firmware() -> bytes:
    return raw_firmware("arm64", SOURCE)


class QemuArm64Machine:
    """arm64 EL1&0 stage-1 translation on ``qemu-system-aarch64 -cpu max``, observed with AT
    (see the module docstring); the interface of :class:`~emu.machines.arm64.Arm64Machine`
    for reads and writes."""

    arch = "arm64"
    emulator = "qemu"
    CHUNK = CHUNK

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, *, granule: int = 4096, va_bits: int = 48,
                 timeout_s: float = 20.0, ips_bits: int = 48, ds: bool = False) -> None:
        if granule not in GRANULES:
            raise ConfigError(f"arm64 granule {granule!r} is not supported: use 4096, 16384 or 65536 bytes")
        if ram.big_endian:
            raise ConfigError("arm64 guest RAM must be little-endian")
        if ram.size % (1 << 20):
            raise ConfigError(f"the qemu arm64 machine needs RAM of whole MiB, not {ram.size:#x}")
        binary = qemu_binary("arm64")
        fw = _firmware()
        self.ram, self.alloc, self.granule, self.va_bits, self.timeout_s = ram, alloc, granule, va_bits, timeout_s
        self.ips_bits = ips_bits  # TCR_EL1.IPS (the CPU's PARange is 52 bits: -cpu max has FEAT_LPA)
        # TCR_EL1.DS (FEAT_LPA2: -cpu max has ID_AA64MMFR0_EL1.TGran4 = 0b0001, TGran16 = 0b0010)
        self.ds = ds
        self.page_shift, self.bits_per_level = GRANULES[granule]
        self.start_level = start_level(granule, va_bits)
        self.root_entries = 1 << (va_bits - self.page_shift - self.bits_per_level * (3 - self.start_level))
        self.root_table_size = max(8 * self.root_entries, 64)
        self.mailbox = alloc.alloc(4096)
        self.code_size = -(-len(fw) // 4096) * 4096
        # never 0 (the mailbox is first): -device loader,addr=0 means "no address"
        self.code_pa = alloc.alloc(self.code_size, 4096)
        self.buf_pa = alloc.alloc(8 * CHUNK, 4096)
        ram.write(self.mailbox, bytes(4096))
        ram.write(self.code_pa, fw[:8] + self.mailbox.to_bytes(8, "little") + fw[16:])
        if self.code_pa % 2048:
            raise EmulatorError("the arm64 probe firmware must be 2 KiB aligned (VBAR_EL3)")
        w = ram.write_u64
        w(self.mailbox + MB_BUF, self.buf_pa)
        w(self.mailbox + MB_MAIR, MAIR_EL1_DEFAULT)
        w(self.mailbox + MB_SCTLR, SCTLR_EL1)
        self._regs = {"TCR_EL1": tcr_el1_value(granule, va_bits, epd0=True, epd1=True, ips_bits=ips_bits, ds=ds),
                      "TTBR0_EL1": 0,
                      "TTBR1_EL1": 0}
        self._req = 0
        self._tmp = tempfile.mkdtemp(prefix="foliowalk-qemu-")
        fw_path = os.path.join(self._tmp, "probe.bin")
        Path(fw_path).write_bytes(ram.read(self.code_pa, len(fw)))
        mib = ram.size >> 20
        self.command = [
            binary, "-machine", "none,memory-backend=ram0", "-accel", "tcg", "-cpu", "max", "-m", f"{mib}M",
            "-object", f"memory-backend-file,id=ram0,size={mib}M,mem-path={share(ram)},share=on",
            "-device", f"loader,file={fw_path},addr={self.code_pa:#x},force-raw=on",
            "-device", f"loader,addr={self.code_pa:#x},cpu-num=0",
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

    def _check_alive(self, doing: str) -> None:
        panic = self.ram.read_u64(self.mailbox + MB_PANIC)
        if panic:
            elr = self.ram.read_u64(self.mailbox + MB_PANIC_ELR)
            raise EmulatorError(f"the probe firmware took an exception in its own code (ESR_EL3 "
                                f"{panic & ~(1 << 62):#x}, ELR_EL3 {elr:#x})")
        self._qemu.check_running(doing)

    def _run_until(self, done: Callable[[], bool], doing: str, budget: float | None = None) -> None:
        """QMP cont, wait until ``done()``, QMP stop; on a timeout QEMU is killed."""
        self._qemu.run_until(done, doing, self.timeout_s if budget is None else budget, self._check_alive, self.close)

    # -- the interface of Arm64Machine -------------------------------------------------------------
    def set_roots(self, ttbr0_pa: int | None, ttbr1_pa: int | None) -> None:
        for name, pa in (("TTBR0_EL1", ttbr0_pa), ("TTBR1_EL1", ttbr1_pa)):
            if pa is None:
                continue
            if not isinstance(pa, int) or pa < 0 or pa >= 1 << 48 or pa % self.root_table_size:
                raise AddressError(f"{name} root {pa!r} is not a {self.root_table_size}-byte aligned 48-bit address")
            self.ram.check_range(pa, self.root_table_size, f"{name} root table")
        self._regs = {"TCR_EL1": tcr_el1_value(self.granule, self.va_bits, epd0=ttbr0_pa is None,
                                               epd1=ttbr1_pa is None, ips_bits=self.ips_bits, ds=self.ds),
                      "TTBR0_EL1": ttbr0_pa or 0, "TTBR1_EL1": ttbr1_pa or 0}

    def set_sysreg(self, name: str, value: int) -> None:
        """Load TCR_EL1, TTBR0_EL1 or TTBR1_EL1 verbatim at the next request (the firmware writes
        the mailbox's values before its ATs) -- as :meth:`Arm64Machine.set_sysreg`, for experiments
        beyond :meth:`set_roots` (out-of-range TxSZ, ...)."""
        if name not in self._regs:
            raise ConfigError(f"set_sysreg: {name!r} is not one of {', '.join(self._regs)}")
        if not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ConfigError(f"set_sysreg: {name} value {value!r} is not a 64-bit value")
        self._regs[name] = value

    def scratch_ranges(self) -> list[tuple[int, int]]:
        return [(self.mailbox, 4096), (self.buf_pa, 8 * CHUNK)]

    def id_aa64mmfr0(self) -> int:
        """ID_AA64MMFR0_EL1 as the firmware read it at start-up (PARange [3:0], TGran16 [23:20])."""
        return self.ram.read_u64(self.mailbox + MB_MMFR0)

    def id_aa64mmfr2(self) -> int:
        """ID_AA64MMFR2_EL1 as the firmware read it at start-up (VARange [19:16]: 0b0001 = FEAT_LVA,
        52-bit VAs with the 64KB granule)."""
        return self.ram.read_u64(self.mailbox + MB_MMFR2)

    def registers(self) -> dict[str, int]:
        """The EL1&0 translation registers the firmware loads for each request."""
        return {"SCTLR_EL1": SCTLR_EL1, "MAIR_EL1": MAIR_EL1_DEFAULT, **self._regs}

    def close(self) -> None:
        self._qemu.finalizer()

    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        return self.probe_many([va], access)[0]

    def probe_many(self, vas: Sequence[int], access: Access = READ) -> list[ProbeResult]:
        raw, errors = self.probe_many_raw(np.fromiter(vas, dtype=np.uint64, count=len(vas)), access)
        return raw.results(errors)

    def probe_many_raw(self, vas: np.ndarray, access: Access = READ) -> tuple[RawProbes, dict[int, ProbeError]]:
        if not isinstance(access, Access) or access.kind not in ("read", "write"):
            raise ConfigError(f"the qemu arm64 machine probes reads and writes (AT), not {access}")
        if not self._qemu.finalizer.alive:
            raise EmulatorError("the QEMU process was stopped (closed, or killed after an earlier error)")
        vas = address_ndarray(vas)
        op = AT_OP[(bool(access.user), access.kind == "write")]
        skip = self._faults_at_level_minus_1(vas)
        run = vas[~skip]
        pars = np.zeros(len(run), dtype=np.uint64)
        for first in range(0, len(run), CHUNK):
            part = run[first : first + CHUNK]
            pars[first : first + len(part)] = self._chunk(part, op)
        ok = (pars & np.uint64(PAR_F)) == 0
        status = np.full(len(vas), RAW_ERROR, dtype=np.uint8)
        pa = np.zeros(len(vas), dtype=np.uint64)
        code = np.zeros(len(vas), dtype=np.uint32)
        status[~skip] = np.where(ok, RAW_OBSERVED, RAW_FAULT)
        pa[~skip] = (pars & np.uint64(PAR_PA_MASK)) | (run & np.uint64(0xFFF))
        code[~skip] = np.where(ok, 0, (pars >> np.uint64(PAR_FST_SHIFT)) & np.uint64(PAR_FST_MASK))
        error = ProbeError(QEMU_LEVEL_MINUS_1)
        errors = {int(i): error for i in np.flatnonzero(skip)}
        return RawProbes(status, pa, code, "at", Arm64Machine._fault_table().__getitem__), errors

    def _faults_at_level_minus_1(self, vas: np.ndarray) -> np.ndarray:
        """Which addresses' walks start at level -1 and fault there (see
        :data:`QEMU_LEVEL_MINUS_1`): the half the address selects is enabled (TCR_EL1.EPDn = 0)
        and its level -1 descriptor, at ``TTBRn + 8 * VA[51:48]``, is invalid (bit[0] = 0) or has
        bits[1:0] = 0b01 (no block at level -1: invalid, Arm ARM D8.3).  Addresses outside both
        halves and disabled halves fault at level 0 (D8.2), which QEMU reports."""
        skip = np.zeros(len(vas), dtype=bool)
        if self.start_level != -1:
            return skip
        top = vas >> np.uint64(self.va_bits)
        ones = np.uint64((1 << (64 - self.va_bits)) - 1)
        tcr = self._regs["TCR_EL1"]
        for sel, root, off in ((top == 0, self._regs["TTBR0_EL1"], TCR_EPD0),
                               (top == ones, self._regs["TTBR1_EL1"], TCR_EPD1)):
            if tcr & off or not sel.any():
                continue
            index = ((vas[sel] >> np.uint64(self.va_bits - 4)) & np.uint64(0xF)).astype(np.int64)
            descs = np.array([self.ram.read_u64(root + 8 * k) for k in range(16)], dtype=np.uint64)[index]
            skip[sel] = (descs & np.uint64(1) == 0) | (descs & np.uint64(3) == 1)
        return skip

    def _chunk(self, part: np.ndarray, op: int) -> np.ndarray:
        k = len(part)
        buf, mb, w = self.buf_pa, self.mailbox, self.ram.write_u64
        self.ram.buf[buf : buf + 8 * k] = part.astype("<u8").tobytes()
        w(mb + MB_TCR, self._regs["TCR_EL1"])
        w(mb + MB_TTBR0, self._regs["TTBR0_EL1"])
        w(mb + MB_TTBR1, self._regs["TTBR1_EL1"])
        w(mb + MB_COUNT, k)
        w(mb + MB_OP, op)
        self._req += 1
        w(mb + MB_REQ, self._req)
        req = self._req
        self._run_until(lambda: self.ram.read_u64(mb + MB_DONE) == req, f"a batch of {k} addresses",
                        self.timeout_s + k * 1e-3)
        return np.frombuffer(self.ram.buf[buf : buf + 8 * k], dtype="<u8").copy()
