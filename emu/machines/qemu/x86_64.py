"""The x86-64 machine on QEMU system emulation (``qemu-system-x86_64 -machine pc -accel tcg -cpu
qemu64``, the CPU model Unicorn's x86-64 engine defaults to; ``+la57`` for 5-level paging).

The probe firmware (``x86_64_probe.S``, assembled with binutils at start-up and loaded with
``-bios``) enters IA-32e mode with the machine's own tables and then waits, halted, for requests
in its mailbox.  Like the Unicorn machine (:mod:`emu.machines.x86_64`), the machine owns top-level
slot 511 of every root it probes (its code -- the ROM itself --, mailbox, descriptor tables,
stack and batch tables); ``set_root`` writes that slot.  Unlike Unicorn, exceptions are
delivered architecturally: the IDT's #PF handler records the error code and CR2 (Intel SDM vol.
3A §4.7, §6.15) and resumes at the next address.  A read is an 8-byte load at ``va & ~7``; a
write that load and a store of the loaded value (a faulting load is followed by the store alone,
so the error code is the write's).  The physical address is observed: the loaded word is a tag
(:meth:`PhysicalMemory.tag`), else QEMU's own translation (``gva2gpa``, the debug walk of the same
MMU code) after the access succeeded (``observed_by="gva2gpa"``).

The legacy hole of the PC (``0xa0000..0xfffff``: VGA window, option and BIOS ROM shadows) is not
RAM to the guest, so the machine takes it from the frame allocator.  RAM must lie below the PCI
hole (at most 3.5 GiB, ``pc``'s ``max-ram-below-4g``), so guest physical = offset in the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from emu.errors import AddressError, ConfigError, EmulatorError
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
    address_ndarray,
)
from emu.machines.qemu import missing, qemu_binary
from emu.machines.qemu.process import QemuProcess
from emu.machines.qemu.shared_ram import share
from emu.machines.ram import TAG, TAG_MASK, FrameAllocator, PhysicalMemory

PAGE = 4096
ENT_P, ENT_RW, ENT_US, ENT_A, ENT_D = 1, 2, 4, 0x20, 0x40
ENT_XD = 1 << 63
CR0, CR4_PAE, CR4_LA57 = 0x8001_0011, 1 << 5, 1 << 12
EFER = 0x900  # LME | NXE, set by the firmware; LMA follows (SDM vol. 3A §9.8.5)
VEC_PF = 14

ROM_BASE = 0xFFFF_0000
ROM_SIZE = 0x1_0000
#: The slot's pages: 0..15 the ROM, then RAM (the layout of x86_64_probe.S).
PG_MAILBOX, PG_DESC, PG_STACK, PG_ATAB = 16, 17, 18, 32
CHUNK = 4096
ATAB_PAGES = CHUNK * 8 // PAGE
RTAB_PAGES = CHUNK * 16 // PAGE
SLOT_PAGES = PG_ATAB + ATAB_PAGES + RTAB_PAGES  # pages 0..n-1 of the slot
MB_REQ, MB_DONE, MB_CR3, MB_COUNT, MB_KIND, MB_PANIC = 0x00, 0x08, 0x10, 0x18, 0x20, 0x28
MB_PANIC_RIP, MB_PANIC_CODE, MB_PANIC_CR2, MB_ALIVE = 0x30, 0x38, 0x40, 0x48
#: Not RAM to a PC guest: the VGA window and the option-ROM/BIOS shadows (i440FX PAM at reset).
LEGACY_HOLE = (0xA_0000, 0x10_0000)
MAX_RAM = 0xE000_0000
ST_OK, ST_PF, ST_EXC, ST_STORE_AFTER_FAULT = 1, 3, 4, 5
VECTOR_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 6: "#UD", 8: "#DF", 12: "#SS", 13: "#GP", 14: "#PF", 17: "#AC"}
SOURCE = Path(__file__).with_name("x86_64_probe.S")


def page_fault(code: int) -> Fault:
    return Fault("page-fault", None, code, VEC_PF)


def _firmware(source: Path = SOURCE, emulator: str = "qemu",
              check: Callable[[], str | None] = lambda: missing("x86_64")) -> tuple[bytes, dict[str, int]]:
    """The assembled probe firmware ``source`` (64 KiB, linked at 0xffff0000) and its symbols'
    ROM offsets, cached by the source's hash under $FOLIOWALK_CACHE (or a temporary directory)
    in ``emulator``'s folder (the Bochs machine's firmware is built here too)."""
    SOURCE = source  # noqa: N806 -- the one file this call assembles
    src = SOURCE.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    cache = Path(os.environ.get("FOLIOWALK_CACHE") or Path(tempfile.gettempdir()) / "foliowalk") / emulator
    bin_path, sym_path = cache / f"x86_64-{digest}.bin", cache / f"x86_64-{digest}.sym"
    if not (bin_path.exists() and sym_path.exists()):
        problem = check()
        if problem:
            raise ConfigError(problem)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            try:
                for cmd in (["as", "--64", "-o", str(t / "p.o"), str(SOURCE)],
                            ["ld", "-m", "elf_x86_64", f"-Ttext={ROM_BASE:#x}", "-e", "reset", "-o", str(t / "p.elf"),
                             str(t / "p.o")],
                            ["objcopy", "-O", "binary", str(t / "p.elf"), str(t / "p.bin")]):
                    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
                nm = subprocess.run(["nm", str(t / "p.elf")], check=True, capture_output=True, text=True,
                                    timeout=60).stdout
            except subprocess.CalledProcessError as err:
                raise EmulatorError(f"assembling {SOURCE.name} failed: {err.stderr.strip()}") from None
            data = (t / "p.bin").read_bytes()
            if len(data) != ROM_SIZE:
                raise EmulatorError(f"{SOURCE.name} assembled to {len(data)} bytes, not {ROM_SIZE}")
            # unique names, then atomic renames (symbols first): workers may assemble at once
            tmp_sym, tmp_bin = cache / f".{sym_path.name}.{os.getpid()}", cache / f".{bin_path.name}.{os.getpid()}"
            tmp_sym.write_text(nm)
            os.replace(tmp_sym, sym_path)
            shutil.copyfile(t / "p.bin", tmp_bin)
            os.replace(tmp_bin, bin_path)
    syms = {}
    for line in sym_path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            syms[parts[2]] = int(parts[0], 16) - ROM_BASE
    return bin_path.read_bytes(), syms


_M = TypeVar("_M", bound="FirmwareProbes")


class FirmwareProbes:
    """The probe interface of a machine that runs the x86-64 probe firmware (x86_64_probe.S, or the
    Bochs machine's firmware derived from it): ``probe``/``probe_many``/``probe_many_raw`` over
    ``_batch()``, which each machine implements with its own transport.  ``NAME`` names the
    emulator in errors, ``WALKER`` the emulator's own walk that answers accesses without a tag."""

    NAME = ""
    WALKER = ""
    MACHINE_SLOT = 511
    _root: int | None
    _slot_base: int

    def __enter__(self: _M) -> _M:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def _batch(self, vas: np.ndarray, idx: np.ndarray, write: bool, raw: RawProbes,
               errors: dict[int, ProbeError]) -> None:
        raise NotImplementedError

    # -- probes ----------------------------------------------------------------------------------
    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        return self.probe_many([va], access)[0]

    def probe_many(self, vas: Sequence[int], access: Access = READ) -> list[ProbeResult]:
        raw, errors = self.probe_many_raw(np.asarray(list(vas), dtype=np.uint64) if len(vas) else
                                          np.zeros(0, dtype=np.uint64), access)
        return raw.results(errors)

    def probe_many_raw(self, vas: np.ndarray, access: Access = READ) -> tuple[RawProbes, dict[int, ProbeError]]:
        if self._root is None:
            raise ConfigError(f"{type(self).__name__}: call set_root(root_pa) before probing")
        if not isinstance(access, Access) or access.kind not in ("read", "write") or access.user:
            raise ConfigError(f"the {self.NAME} x86-64 machine probes kernel reads and writes, not {access}")
        vas = address_ndarray(vas)
        n = len(vas)
        raw = RawProbes(np.zeros(n, np.uint8), np.zeros(n, np.uint64), np.zeros(n, np.uint32), self.WALKER,
                        page_fault)
        errors: dict[int, ProbeError] = {}
        mine = vas >= np.uint64(self._slot_base)
        for i in np.flatnonzero(mine).tolist():
            errors[i] = ProbeError(f"{int(vas[i]):#x} lies in the machine's own top-level slot "
                                   f"{self.MACHINE_SLOT} ({self._slot_base:#x}..): it cannot be probed")
        todo = np.flatnonzero(~mine)
        for start in range(0, len(todo), CHUNK):
            idx = todo[start : start + CHUNK]
            self._batch(vas[idx], idx, access.kind == "write", raw, errors)
        return raw, errors


class QemuX86_64Machine(FirmwareProbes):
    """x86-64 long mode on ``qemu-system-x86_64``, probing tables in ``ram`` (see the module
    docstring).  ``levels``: 4 (PML4) or 5 (PML5, CR4.LA57).  ``timeout_s`` bounds start-up and
    each batch (plus 1 ms per address); an overrun kills QEMU and raises :class:`EmulatorError`.
    Only kernel-privilege reads and writes are probed (``Access.user`` and fetches are refused
    with :class:`ConfigError`)."""

    NAME = "qemu"
    WALKER = "gva2gpa"
    CHUNK = CHUNK
    emulator = "qemu"

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, *, levels: int = 4, timeout_s: float = 20.0) -> None:
        if levels not in (4, 5):
            raise ConfigError(f"x86-64 paging has 4 levels (PML4) or 5 levels (PML5, CR4.LA57), not {levels!r}")
        if ram.big_endian:
            raise ConfigError("x86-64 guest RAM must be little-endian")
        if ram.size > MAX_RAM or ram.size % (1 << 20):
            raise ConfigError(f"the qemu x86-64 machine needs RAM of whole MiB up to {MAX_RAM:#x}, not {ram.size:#x}")
        binary = qemu_binary("x86_64")
        rom, self._syms = _firmware()
        self.ram, self.alloc, self.levels, self.timeout_s = ram, alloc, levels, timeout_s
        top_shift = 39 if levels == 4 else 48
        self._slot_base = ((((1 << 64) - 1) << (top_shift + 9)) | (self.MACHINE_SLOT << top_shift)) & ((1 << 64) - 1)
        try:
            alloc.reserve(*LEGACY_HOLE)
        except Exception as err:
            hole = f"{LEGACY_HOLE[0]:#x}..{LEGACY_HOLE[1]:#x}"
            raise EmulatorError(f"the PC's legacy hole {hole} is not free: {err}") from None
        self._build(rom)
        self._root: int | None = None
        self._req = 0
        self._tmp = tempfile.mkdtemp(prefix="foliowalk-qemu-")
        rom_path = os.path.join(self._tmp, "probe.rom")
        Path(rom_path).write_bytes(self._rom)
        cpu = "qemu64,+la57" if levels == 5 else "qemu64"
        mib = ram.size >> 20
        self.command = [
            binary, "-machine", "pc,memory-backend=ram0", "-accel", "tcg", "-cpu", cpu, "-m", f"{mib}M",
            "-object", f"memory-backend-file,id=ram0,size={mib}M,mem-path={share(ram)},share=on",
            "-bios", rom_path, "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-serial", "none", "-monitor", "none", "-no-reboot",
            "-qmp", f"unix:{os.path.join(self._tmp, 'qmp.sock')},server=on,wait=off",
        ]
        self._qemu = QemuProcess(self, self.command, binary, self._tmp)
        try:
            self._qemu.connect(timeout_s)
            deadline = time.monotonic() + timeout_s
            while not self._mb(MB_ALIVE):
                self._check_alive("starting")
                if time.monotonic() > deadline:
                    raise EmulatorError(f"the probe firmware did not reach long mode within {timeout_s} s")
                time.sleep(0.002)
        except BaseException:
            self.close()
            raise

    # -- the machine's own frames and tables ----------------------------------------------------
    def _page(self) -> int:
        pa = self.alloc.alloc(PAGE)
        self.ram.buf[pa : pa + PAGE] = bytes(PAGE)
        return pa

    def _build(self, rom: bytes) -> None:
        ram, w = self.ram, self.ram.write_u64
        inter = ENT_P | ENT_RW | ENT_A
        root = self._page()
        if root >= 1 << 32:
            raise EmulatorError("the qemu x86-64 machine's root table must lie below 4 GiB")
        # Identity map of the ROM's 64 KiB at 0xffff0000 (the switch to long mode runs there).
        chain = [self._page() for _ in range(self.levels - 1)]
        w(root, chain[0] | inter)  # root[0]
        idx = [(ROM_BASE >> s) & 511 for s in ((39, 30, 21) if self.levels == 4 else (48, 39, 30, 21))]
        for upper, lower, i in zip(chain[:-1], chain[1:], idx[1:], strict=True):
            w(upper + 8 * i, lower | inter)
        for k in range(ROM_SIZE // PAGE):
            w(chain[-1] + 8 * (((ROM_BASE >> 12) & 511) + k), (ROM_BASE + k * PAGE) | ENT_P | ENT_A)
        # The slot: root[511] -> entry 0 at every level below -> one page table.
        slot = [self._page() for _ in range(self.levels - 1)]
        for upper, lower in zip(slot[:-1], slot[1:], strict=True):
            w(upper, lower | inter)
        self._slot_next = slot[0]
        w(root + 8 * self.MACHINE_SLOT, self._slot_next | inter)
        pt = slot[-1]
        for k in range(ROM_SIZE // PAGE):
            w(pt + 8 * k, (ROM_BASE + k * PAGE) | ENT_P | ENT_A)
        block = self.alloc.alloc((SLOT_PAGES - PG_MAILBOX) * PAGE, PAGE)
        ram.buf[block : block + (SLOT_PAGES - PG_MAILBOX) * PAGE] = bytes((SLOT_PAGES - PG_MAILBOX) * PAGE)
        self._pa = {k: block + (k - PG_MAILBOX) * PAGE for k in range(PG_MAILBOX, SLOT_PAGES)}
        for k, pa in self._pa.items():
            w(pt + 8 * k, pa | ENT_P | ENT_RW | ENT_A | ENT_D | ENT_XD)
        self._scratch_root = root
        self._mailbox = self._pa[PG_MAILBOX]
        self._atab = self._pa[PG_ATAB]
        self._rtab = self._pa[PG_ATAB + ATAB_PAGES]
        # GDT (0x08 64-bit code, 0x10 data) and IDT (32 interrupt gates), SDM vol. 3A §3.4.5, §6.14.1.
        desc = self._pa[PG_DESC]
        desc_va = self._va(PG_DESC)
        gdt = [0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF]
        ram.write(desc + 0x100, struct.pack(f"<{len(gdt)}Q", *gdt))
        ram.write(desc, struct.pack("<HQ", 8 * len(gdt) - 1, desc_va + 0x100))
        stubs = self._slot_base + self._syms["stubs"]
        for v in range(32):
            off = stubs + 16 * v
            lo = (off & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | (((off >> 16) & 0xFFFF) << 48)
            ram.write(desc + 0x200 + 16 * v, struct.pack("<QQ", lo, off >> 32))
        ram.write(desc + 0x10, struct.pack("<HQ", 32 * 16 - 1, desc_va + 0x200))
        cr4 = CR4_PAE | (CR4_LA57 if self.levels == 5 else 0)
        self._cr4 = cr4
        self._rom = struct.pack("<IIQII", root, 0, self._slot_base, cr4, 0) + rom[24:]

    def _va(self, page: int) -> int:
        return self._slot_base + page * PAGE

    def _mb(self, off: int) -> int:
        return self.ram.read_u64(self._mailbox + off)

    def _check_alive(self, doing: str) -> None:
        self._qemu.check_running(doing)
        panic = self._mb(MB_PANIC)
        if panic:
            raise EmulatorError(
                f"the probe firmware took vector {panic & 0xFF} in its own code at RIP {self._mb(MB_PANIC_RIP):#x} "
                f"(error code {self._mb(MB_PANIC_CODE):#x}, CR2 {self._mb(MB_PANIC_CR2):#x})")

    # -- public API ----------------------------------------------------------------------------
    def reserved_va_range(self) -> tuple[int, int]:
        return (self._slot_base, 1 << 64)

    def set_root(self, root_pa: int) -> None:
        """Probe through the root table (PML4 / PML5) at ``root_pa``; its entry 511 becomes the
        machine's slot (as the Unicorn machine's)."""
        if not isinstance(root_pa, int) or root_pa & (PAGE - 1):
            raise AddressError(f"root table address {root_pa!r} is not a 4 KiB-aligned integer")
        self.ram.check_range(root_pa, PAGE, "root table")
        self.ram.write_u64(root_pa + 8 * self.MACHINE_SLOT, self._slot_next | ENT_P | ENT_RW | ENT_A)
        self._root = root_pa

    def scratch_ranges(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of the RAM a probe writes: the mailbox, the stack (exception frames) and
        the batch tables."""
        return [(self._mailbox, PAGE), (self._pa[PG_STACK], 2 * PAGE),
                (self._atab, (ATAB_PAGES + RTAB_PAGES) * PAGE)]

    def registers(self) -> dict[str, int]:
        """CR0, CR3, CR4 and EFER as QEMU reports them (``info registers``)."""
        self._usable()
        text = self._qemu.qmp[0].hmp("info registers")
        out = {}
        for name in ("CR0", "CR3", "CR4", "EFER"):
            at = text.find(name + "=")
            if at >= 0:
                out[name] = int(text[at + len(name) + 1 :].split()[0], 16)
        return out

    def close(self) -> None:
        """Quit QEMU (killed if it does not quit within 5 s) and remove its socket directory."""
        self._qemu.finalizer()

    def _batch(self, vas: np.ndarray, idx: np.ndarray, write: bool, raw: RawProbes,
               errors: dict[int, ProbeError]) -> None:
        self._usable()
        n = len(vas)
        aligned = vas & np.uint64(~7 & ((1 << 64) - 1))
        buf = self.ram.buf
        buf[self._atab : self._atab + 8 * n] = aligned.astype("<u8").tobytes()
        buf[self._rtab : self._rtab + 16 * n] = bytes(16 * n)
        w = self.ram.write_u64
        w(self._mailbox + MB_CR3, self._root or 0)
        w(self._mailbox + MB_COUNT, n)
        w(self._mailbox + MB_KIND, 1 if write else 0)
        self._req += 1
        w(self._mailbox + MB_REQ, self._req)
        self._wait(n)
        res = np.frombuffer(buf[self._rtab : self._rtab + 16 * n], dtype="<u8").reshape(n, 2)
        status, word = res[:, 0], res[:, 1]
        decode_results(status, word, aligned, vas, idx, raw, errors, self._gva2gpa, "gva2gpa")

    def flip_la57(self) -> ProbeResult | None:
        """Run MOV to CR4 with CR4.LA57 flipped in 64-bit mode (the architecture: #GP(0), SDM
        vol. 3A §4.1.1).  Returns the exception's ProbeError (``#GP (vector 13 ...``) or None if
        the write took effect -- then the CPU walks its tables in the other paging mode and QEMU
        usually stops (:class:`EmulatorError` from the next request)."""
        if self._root is None:
            raise ConfigError("QemuX86_64Machine: call set_root(root_pa) before running code")
        self._usable()
        self.ram.buf[self._rtab : self._rtab + 16] = bytes(16)
        w = self.ram.write_u64
        w(self._mailbox + MB_CR3, self._root)
        w(self._mailbox + MB_COUNT, 0)
        w(self._mailbox + MB_KIND, 2)
        self._req += 1
        w(self._mailbox + MB_REQ, self._req)
        self._wait(1)
        status = self.ram.read_u64(self._rtab)
        if status & 0xFF == ST_OK:
            return None
        vec, code = (status >> 8) & 0xFF, status >> 32
        return ProbeError(f"{VECTOR_NAMES.get(vec, 'exception')} (vector {vec}, error code {code:#x})")

    def _usable(self) -> None:
        if not self._qemu.finalizer.alive or not self._qemu.qmp:
            raise EmulatorError("the QEMU process was stopped (closed, or killed after an earlier error)")

    def _gva2gpa(self, va: int) -> int | None:
        try:
            text = self._qemu.qmp[0].hmp(f"gva2gpa {va:#x}")
        except EmulatorError as err:
            self.close()
            raise EmulatorError(f"QEMU did not answer gva2gpa: {err} (killed)") from None
        if text.startswith("gpa:"):
            return int(text.split()[1], 16)
        return None

    def _wait(self, n: int) -> None:
        """Wake the guest (NMI) and wait until it has served request ``self._req``."""
        budget = self.timeout_s + n * 1e-3
        try:
            self._wait_inner(n, budget)
        except EmulatorError as err:
            self.close()
            raise EmulatorError(f"QEMU did not answer a batch of {n} addresses within {budget:.1f} s: {err} "
                                "(killed)") from None

    def _wait_inner(self, n: int, budget: float) -> None:
        deadline = time.monotonic() + budget
        qmp = self._qemu.qmp[0]
        qmp.execute("inject-nmi")
        nudge = time.monotonic() + 0.05
        pause = 20e-6
        while self._mb(MB_DONE) != self._req:
            now = time.monotonic()
            if now > deadline:
                raise EmulatorError("no answer in the mailbox")
            self._check_alive("probing")
            if now > nudge:  # an NMI that arrived before the guest halted wakes nobody: again
                qmp.execute("inject-nmi")
                nudge = now + 0.05
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)


def decode_results(status: np.ndarray, word: np.ndarray, aligned: np.ndarray, vas: np.ndarray, idx: np.ndarray,
                   raw: RawProbes, errors: dict[int, ProbeError], walk: Callable[[int], int | None],
                   walker: str) -> None:
    """Read one batch of the x86-64 probe firmware's results (``status``, ``word`` per address:
    x86_64_probe.S, and the Bochs machine's firmware derived from it) into ``raw``/``errors`` at
    ``idx``: a tagged load is the PA; a #PF whose CR2 is the address is the fault; an access that
    read no tag asks the emulator's own walk ``walk`` (named ``walker``); anything else is a
    ProbeError naming what the firmware saw."""
    st = (status & np.uint64(0xFF)).astype(np.uint8)
    ok = st == ST_OK
    tagged = ok & ((word & np.uint64(TAG_MASK)) == np.uint64(TAG))
    pa = (word & np.uint64(0x0000_FFFF_FFFF_FFFF)) | (vas & np.uint64(7))
    raw.status[idx[tagged]] = RAW_TAG
    raw.pa[idx[tagged]] = pa[tagged]
    pf = st == ST_PF
    good_pf = pf & (word == aligned)
    raw.status[idx[good_pf]] = RAW_FAULT
    raw.code[idx[good_pf]] = (status[good_pf] >> np.uint64(32)).astype(np.uint32)
    for k in np.flatnonzero(ok & ~tagged).tolist():  # not a tag: ask the emulator's own walk
        va = int(vas[k])
        got = walk(va)
        i = int(idx[k])
        if got is None:
            raw.status[i] = RAW_ERROR
            errors[i] = ProbeError(f"the access at {va:#x} succeeded but {walker} finds no translation")
        else:
            raw.status[i], raw.pa[i] = RAW_OBSERVED, got
    for k in np.flatnonzero(~ok & ~good_pf).tolist():
        s, i, code = int(st[k]), int(idx[k]), int(status[k]) >> 32
        vec = (int(status[k]) >> 8) & 0xFF
        if s == ST_PF:
            why = f"page fault with CR2 {int(word[k]):#x}, expected {int(aligned[k]):#x} (error code {code:#x})"
        elif s == ST_EXC:
            why = (f"{VECTOR_NAMES.get(vec, 'exception')} (vector {vec}, error code {code:#x}) instead of a "
                   "page fault; e.g. #GP for a non-canonical address")
        elif s == ST_STORE_AFTER_FAULT:
            why = f"the store to {int(vas[k]):#x} succeeded although the load faulted"
        else:
            why = "the probe firmware recorded no result for this address"
        raw.status[i] = RAW_ERROR
        errors[i] = ProbeError(why)
