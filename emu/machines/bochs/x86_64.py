"""The x86-64 machine on Bochs 2.7 (``cpu: model=bx_generic`` with x86-64, NX and -- the processor
:data:`archs.x86_64.CPU` describes -- 1-GByte pages; MAXPHYADDR 40 as Bochs's default build).

The probe firmware (``x86_64_probe.S``, assembled with binutils and loaded as Bochs's
``romimage``) is the QEMU machine's, with the transfer Bochs needs: Bochs cannot map the host's
RAM, so the machine keeps the guest's copy in step.  Before every request it writes a stream of
records -- the RAM pages that changed since the last request (literal words, runs of tag words,
runs of zeros) -- to an ATA disk image; the firmware reads it with PIO, re-enters IA-32e mode
through the machine's own tables, probes the batch with the probed root in CR3 and stops at
Bochs's magic breakpoint, where the host reads the results with the debugger's ``writemem`` and,
for a load that returned no tag word, Bochs's own translation (the debugger's ``page``, its debug
walk of the same paging code; ``observed_by="bochs-page"``).

As on QEMU, the machine owns top-level slot 511 of every root it probes (``set_root`` writes
it), exceptions are delivered architecturally through a real IDT, a read is an 8-byte load at
``va & ~7`` and a write that load and a store of the loaded value.  Accessed/dirty bits the
guest's walks set stay in the guest's copy (the host's tables are the ones sent).  5-level paging
is refused: Bochs 2.7 has no LA57 (docs/oracles.md, "Bochs").
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from emu.errors import AddressError, ConfigError, EmulatorError
from emu.machines.base import (
    ProbeError,
    RawProbes,
)
from emu.machines.bochs import bochs_binary, missing
from emu.machines.bochs.process import BochsProcess
from emu.machines.qemu.shared_ram import _resident_runs
from emu.machines.qemu.x86_64 import (
    ATAB_PAGES,
    CHUNK,
    CR4_PAE,
    ENT_A,
    ENT_D,
    ENT_P,
    ENT_RW,
    ENT_XD,
    LEGACY_HOLE,
    MB_ALIVE,
    MB_COUNT,
    MB_CR3,
    MB_DONE,
    MB_KIND,
    MB_PANIC,
    MB_PANIC_CODE,
    MB_PANIC_CR2,
    MB_PANIC_RIP,
    MB_REQ,
    PAGE,
    PG_ATAB,
    PG_DESC,
    PG_MAILBOX,
    PG_STACK,
    RTAB_PAGES,
    SLOT_PAGES,
    FirmwareProbes,
    _firmware,
    decode_results,
)
from emu.machines.ram import TAG, FrameAllocator, PhysicalMemory

ROM_BASE = 0xFFFF_0000
ROM_SIZE = 0x1_0000
MB_CPUID1, MB_CPUID8, MB_CPUID7 = 0x50, 0x58, 0x60
PG_BUF, BUF_PAGES = 20, 12  # the loader's disk buffer (BUFSECT = 96 sectors)
MAGIC = 0x7478656B6C6F6621
REC_LITERAL, REC_TAG, REC_ZERO = 0, 1, 2
#: RAM below the ROM/APIC area (no PCI hole remapping is needed: the loader addresses RAM with
#: 32-bit physical addresses, paging off).
MAX_RAM = 0xE000_0000
SECTOR = 512
HEADS, SPT = 16, 63
SOURCE = Path(__file__).with_name("x86_64_probe.S")
BLOCK = 1 << 20  # RAM compared with the guest's copy in blocks of this size (memcmp), then per page
_memcmp = ctypes.CDLL(None).memcmp
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]


class BochsX86_64Machine(FirmwareProbes):
    """x86-64 long mode on Bochs 2.7, probing tables in ``ram`` (see the module docstring).
    ``levels``: 4 only (5 is refused with :class:`ConfigError`: Bochs 2.7 has no LA57).
    ``gbpages``: whether the CPU model reports 1-GByte pages (CPUID.80000001H:EDX[26]; the
    configurations' processor does).  ``timeout_s`` bounds start-up and each batch (plus 1 ms per
    address); an overrun kills Bochs and raises :class:`EmulatorError`.  Only kernel-privilege
    reads and writes are probed."""

    NAME = "bochs"
    WALKER = "bochs-page"
    CHUNK = CHUNK
    emulator = "bochs"

    def __init__(self, ram: PhysicalMemory, alloc: FrameAllocator, *, levels: int = 4, gbpages: bool = True,
                 timeout_s: float = 30.0) -> None:
        if levels == 5:
            raise ConfigError("the bochs oracle has no 5-level paging: Bochs 2.7 does not implement CR4.LA57 "
                              "(its CPUID models and cpuid: options have no LA57; docs/oracles.md)")
        if levels != 4:
            raise ConfigError(f"x86-64 paging has 4 levels (PML4) or 5 levels (PML5, CR4.LA57), not {levels!r}")
        if ram.big_endian:
            raise ConfigError("x86-64 guest RAM must be little-endian")
        if ram.size > MAX_RAM or ram.size % (1 << 20):
            raise ConfigError(f"the bochs x86-64 machine needs RAM of whole MiB up to {MAX_RAM:#x}, not {ram.size:#x}")
        binary = bochs_binary()
        rom, self._syms = _firmware(SOURCE, "bochs", lambda: missing("x86_64"))
        self.ram, self.alloc, self.levels, self.timeout_s, self.gbpages = ram, alloc, levels, timeout_s, gbpages
        self._slot_base = ((((1 << 64) - 1) << 48) | (self.MACHINE_SLOT << 39)) & ((1 << 64) - 1)
        try:
            alloc.reserve(*LEGACY_HOLE)
        except Exception as err:
            hole = f"{LEGACY_HOLE[0]:#x}..{LEGACY_HOLE[1]:#x}"
            raise EmulatorError(f"the PC's legacy hole {hole} is not free: {err}") from None
        self._build(rom)
        self._root: int | None = None
        self._req = 0
        # What the guest's copy of RAM holds (as sent): a lazily zero-filled shadow of the host's
        # RAM, and which pages were ever sent non-zero.
        self._shadow = np.zeros(ram.size // 8, dtype=np.uint64)
        self._sent = np.zeros(ram.size // PAGE, dtype=bool)
        # never sent: the guest's own scratch pages, and the legacy hole (no RAM there in a PC)
        self._skip = np.zeros(ram.size // PAGE, dtype=bool)
        for pa, size in ((self._pa[PG_STACK], 2 * PAGE), (self._pa[PG_BUF], BUF_PAGES * PAGE),
                         (self._rtab, RTAB_PAGES * PAGE), (LEGACY_HOLE[0], LEGACY_HOLE[1] - LEGACY_HOLE[0])):
            self._skip[pa // PAGE : (pa + size) // PAGE] = True
        self._tmp = tempfile.mkdtemp(prefix="foliowalk-bochs-")
        Path(self._tmp, "probe.rom").write_bytes(self._rom)
        # the largest stream: every page literal, one 24-byte record header per page
        cylinders = -(-(ram.size + ram.size // 128 + (1 << 20)) // (HEADS * SPT * SECTOR))
        self._disk_size = cylinders * HEADS * SPT * SECTOR
        self._disk = os.path.join(self._tmp, "request.img")
        with open(self._disk, "wb") as f:
            f.truncate(self._disk_size)  # sparse
        mib = ram.size >> 20
        Path(self._tmp, "bochsrc").write_text("\n".join([
            f"romimage: file={self._tmp}/probe.rom, address={ROM_BASE:#x}",
            f"memory: guest={mib}, host={min(mib, 2048)}",  # Bochs 2.7 allocates at most 2 GiB of host memory
            "cpu: model=bx_generic, count=1, ips=50000000, reset_on_triple_fault=0",
            f"cpuid: x86_64=1, 1g_pages={int(gbpages)}",
            "display_library: term",
            "magic_break: enabled=1",
            "ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14",
            f"ata0-master: type=disk, path={self._disk}, mode=flat, cylinders={cylinders}, heads={HEADS}, spt={SPT}",
            "speaker: enabled=0",
            "log: -",
            "panic: action=fatal",
            "error: action=report",
            "info: action=ignore",
            "debug: action=ignore",
            "",
        ]))
        t0 = time.perf_counter()
        self._bochs = BochsProcess(self, binary, self._tmp)
        try:
            self._bochs.until_prompt(timeout_s, "starting")  # the debugger stops before the first instruction
            self._request(0, False, self._scratch_root, "starting")
            if not self._mb(MB_ALIVE):
                raise EmulatorError("the probe firmware did not reach long mode")
            self.cpuid_80000001_edx = self._mb(MB_CPUID1)
            self.maxphyaddr = self._mb(MB_CPUID8) & 0xFF
            self.la57 = bool(self._mb(MB_CPUID7) >> 16 & 1)
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - t0

    # -- the machine's own frames and tables ----------------------------------------------------
    def _page(self) -> int:
        pa = self.alloc.alloc(PAGE)
        self.ram.buf[pa : pa + PAGE] = bytes(PAGE)
        return pa

    def _build(self, rom: bytes) -> None:
        """As the QEMU machine's tables (4-level): ROM identity-mapped, root[511] -> the slot."""
        ram, w = self.ram, self.ram.write_u64
        inter = ENT_P | ENT_RW | ENT_A
        root = self._page()
        if root >= 1 << 32:
            raise EmulatorError("the bochs x86-64 machine's root table must lie below 4 GiB")
        chain = [self._page() for _ in range(3)]
        w(root, chain[0] | inter)
        idx = [(ROM_BASE >> s) & 511 for s in (39, 30, 21)]
        for upper, lower, i in zip(chain[:-1], chain[1:], idx[1:], strict=True):
            w(upper + 8 * i, lower | inter)
        for k in range(ROM_SIZE // PAGE):
            w(chain[-1] + 8 * (((ROM_BASE >> 12) & 511) + k), (ROM_BASE + k * PAGE) | ENT_P | ENT_A)
        slot = [self._page() for _ in range(3)]
        for upper, lower in zip(slot[:-1], slot[1:], strict=True):
            w(upper, lower | inter)
        self._slot_next = slot[0]
        w(root + 8 * self.MACHINE_SLOT, self._slot_next | inter)
        pt = slot[-1]
        for k in range(ROM_SIZE // PAGE):
            w(pt + 8 * k, (ROM_BASE + k * PAGE) | ENT_P | ENT_A)
        block = self.alloc.alloc((SLOT_PAGES - PG_MAILBOX) * PAGE, PAGE)
        if block + (SLOT_PAGES - PG_MAILBOX) * PAGE > 1 << 32:
            raise EmulatorError("the bochs x86-64 machine's pages must lie below 4 GiB")
        ram.buf[block : block + (SLOT_PAGES - PG_MAILBOX) * PAGE] = bytes((SLOT_PAGES - PG_MAILBOX) * PAGE)
        self._pa = {k: block + (k - PG_MAILBOX) * PAGE for k in range(PG_MAILBOX, SLOT_PAGES)}
        for k, pa in self._pa.items():
            w(pt + 8 * k, pa | ENT_P | ENT_RW | ENT_A | ENT_D | ENT_XD)
        self._scratch_root = root
        self._mailbox = self._pa[PG_MAILBOX]
        self._atab = self._pa[PG_ATAB]
        self._rtab = self._pa[PG_ATAB + ATAB_PAGES]
        # GDT (0x08 64-bit code, 0x10 data, 0x18 32-bit code for leaving IA-32e mode) and IDT
        # (32 interrupt gates), SDM vol. 3A §3.4.5, §6.14.1.
        desc = self._pa[PG_DESC]
        desc_va = self._va(PG_DESC)
        gdt = [0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00CF9B000000FFFF]
        ram.write(desc + 0x100, struct.pack(f"<{len(gdt)}Q", *gdt))
        ram.write(desc, struct.pack("<HQ", 8 * len(gdt) - 1, desc_va + 0x100))
        stubs = self._slot_base + self._syms["stubs"]
        for v in range(32):
            off = stubs + 16 * v
            lo = (off & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | (((off >> 16) & 0xFFFF) << 48)
            ram.write(desc + 0x200 + 16 * v, struct.pack("<QQ", lo, off >> 32))
        ram.write(desc + 0x10, struct.pack("<HQ", 32 * 16 - 1, desc_va + 0x200))
        stack_top = self._pa[PG_STACK] + 2 * PAGE
        params = struct.pack("<IIQIIII", root, 0, self._slot_base, CR4_PAE, self._pa[PG_BUF], stack_top, 0)
        self._rom = params + rom[len(params) :]

    def _va(self, page: int) -> int:
        return self._slot_base + page * PAGE

    # -- the transfer ------------------------------------------------------------------------------
    def _stream(self) -> bytes:
        """The request stream: MAGIC, the record count, then records ``(pa, words, kind)`` (a
        literal record followed by its words) covering every page whose content differs from the
        guest's copy."""
        cur = np.frombuffer(self.ram.buf, dtype="<u8")
        pages: list[np.ndarray] = []
        resident = np.zeros(len(self._sent), dtype=bool)
        shadow_at = self._shadow.ctypes.data
        for a, b in _resident_runs(self.ram.host_address, self.ram.size):  # only these can be non-zero
            resident[a // PAGE : b // PAGE] = True
            for lo in range(a, b, BLOCK):  # memcmp first: most of RAM is as it was
                hi = min(lo + BLOCK, b)
                if not _memcmp(self.ram.host_address + lo, shadow_at + lo, hi - lo):
                    continue
                c = cur[lo // 8 : hi // 8].reshape(-1, 512)
                s = self._shadow[lo // 8 : hi // 8].reshape(-1, 512)
                changed = (c != s).any(axis=1) & ~self._skip[lo // PAGE : hi // PAGE]
                pages.append(np.flatnonzero(changed) + lo // PAGE)
        idx = np.concatenate(pages) if pages else np.zeros(0, dtype=np.int64)
        # pages sent non-zero whose host copy is no longer resident (hence zero)
        gone = np.flatnonzero(self._sent & ~resident & ~self._skip)
        idx = np.union1d(idx, gone).astype(np.int64)
        if not len(idx):
            return struct.pack("<QQ", MAGIC, 0)
        data = cur.reshape(-1, 512)[idx]
        # word by word: zero, tag (TAG | own address) or literal; a record is a run of one kind
        # over consecutive addresses (page tables are mostly zero words: few literal words)
        words = data.ravel()
        addr = (idx.astype(np.uint64)[:, None] * np.uint64(PAGE) + np.arange(0, PAGE, 8, dtype=np.uint64)).ravel()
        kind = np.full(len(words), REC_LITERAL, dtype=np.int8)
        kind[words == (addr | np.uint64(TAG))] = REC_TAG
        kind[words == 0] = REC_ZERO
        breaks = np.flatnonzero((np.diff(addr) != 8) | (np.diff(kind) != 0)) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(words)]))
        head = np.empty((len(starts), 3), dtype="<u8")
        head[:, 0], head[:, 1], head[:, 2] = addr[starts], ends - starts, kind[starts]
        lit = kind[starts] == REC_LITERAL
        out = [struct.pack("<QQ", MAGIC, len(starts))]
        if not lit.any():
            out.append(head.tobytes())
        else:
            for r, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
                out.append(head[r].tobytes())
                if lit[r]:
                    out.append(words[s:e].astype("<u8").tobytes())
        self._shadow.reshape(-1, 512)[idx] = data
        self._sent[idx] = data.any(axis=1)
        return b"".join(out)

    def _mb(self, off: int) -> int:
        return int(self._guest_mailbox[off // 8])

    def _request(self, n: int, write: bool, cr3: int, doing: str) -> None:
        """Send the RAM that changed (with the mailbox and address table), run the firmware to its
        breakpoint, and read back the guest's mailbox."""
        w = self.ram.write_u64
        w(self._mailbox + MB_CR3, cr3)
        w(self._mailbox + MB_COUNT, n)
        w(self._mailbox + MB_KIND, 1 if write else 0)
        self._req += 1
        w(self._mailbox + MB_REQ, self._req)
        stream = self._stream()
        if len(stream) > self._disk_size:
            raise EmulatorError(f"the request stream ({len(stream)} bytes) exceeds the disk image")
        fd = os.open(self._disk, os.O_WRONLY)
        try:
            done = 0
            while done < len(stream):
                done += os.pwrite(fd, stream[done:], done)
        finally:
            os.close(fd)
        budget = self.timeout_s + n * 1e-3 + 2 * len(stream) / (1 << 20)  # + 2 s per MiB sent (PIO)
        try:
            stop = self._bochs.command("c", budget, doing)
            mb = os.path.join(self._tmp, "mailbox.bin")
            self._bochs.command(f"writemem \"{mb}\" {self._va(PG_MAILBOX):#x} {PAGE}", budget, doing)
            self._guest_mailbox = np.frombuffer(Path(mb).read_bytes(), dtype="<u8")
        except EmulatorError as err:
            self._bochs.proc.kill()  # it may be running or stopped: no "quit" would reach it
            self.close()
            raise EmulatorError(f"Bochs did not answer a request of {n} addresses: {err} (killed)") from None
        panic = self._mb(MB_PANIC)
        if panic:
            self.close()
            raise EmulatorError(
                f"the probe firmware took vector {panic & 0xFF} in its own code at RIP {self._mb(MB_PANIC_RIP):#x} "
                f"(error code {self._mb(MB_PANIC_CODE):#x}, CR2 {self._mb(MB_PANIC_CR2):#x}) (killed)")
        if self._mb(MB_DONE) != self._req:
            where = " ".join(stop.strip().splitlines()[-2:])
            self.close()
            raise EmulatorError(f"the probe firmware stopped outside its batch ({where}) (killed)")

    # -- public API ----------------------------------------------------------------------------
    def reserved_va_range(self) -> tuple[int, int]:
        return (self._slot_base, 1 << 64)

    def set_root(self, root_pa: int) -> None:
        """Probe through the root table (PML4) at ``root_pa``; its entry 511 becomes the machine's
        slot (as the Unicorn and QEMU machines')."""
        if not isinstance(root_pa, int) or root_pa & (PAGE - 1):
            raise AddressError(f"root table address {root_pa!r} is not a 4 KiB-aligned integer")
        self.ram.check_range(root_pa, PAGE, "root table")
        self.ram.write_u64(root_pa + 8 * self.MACHINE_SLOT, self._slot_next | ENT_P | ENT_RW | ENT_A)
        self._root = root_pa

    def scratch_ranges(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of the host RAM a probe writes: the mailbox and the address table
        (the guest's stack, disk buffer and results live in its own copy only)."""
        return [(self._mailbox, PAGE), (self._atab, ATAB_PAGES * PAGE)]

    def registers(self) -> dict[str, int]:
        """CR0, CR3, CR4 and EFER as Bochs's debugger reports them (``creg``) at the last batch."""
        text = self._bochs.command("creg", self.timeout_s, "reading registers")
        out = {}
        for name in ("CR0", "CR3", "CR4", "EFER"):
            at = text.find(name + "=")
            if at >= 0:
                out[name] = int(text[at + len(name) + 1 :].split(":")[0].split()[0].rstrip(","), 16)
        return out

    def close(self) -> None:
        """Quit Bochs (killed if it does not quit within 5 s) and remove its folder."""
        bochs = getattr(self, "_bochs", None)
        if bochs is not None:
            bochs.finalizer()

    def _batch(self, vas: np.ndarray, idx: np.ndarray, write: bool, raw: RawProbes,
               errors: dict[int, ProbeError]) -> None:
        n = len(vas)
        aligned = vas & np.uint64(~7 & ((1 << 64) - 1))
        self.ram.buf[self._atab : self._atab + 8 * n] = aligned.astype("<u8").tobytes()
        self._request(n, write, self._root or 0, "probing")
        rt = os.path.join(self._tmp, "results.bin")
        self._bochs.command(f"writemem \"{rt}\" {self._va(PG_ATAB + ATAB_PAGES):#x} {16 * n}", self.timeout_s,
                            "reading results")
        res = np.frombuffer(Path(rt).read_bytes(), dtype="<u8").reshape(n, 2)
        status, word = res[:, 0], res[:, 1]
        decode_results(status, word, aligned, vas, idx, raw, errors, self._page_walk, "Bochs's page walk")

    def _page_walk(self, va: int) -> int | None:
        """Bochs's translation of ``va`` through the probed root (debugger ``page``, which walks
        the tables with the CPU's own paging code): the physical address, or None."""
        text = self._bochs.command(f"page {va:#x}", self.timeout_s, "asking Bochs's page walk")
        for line in text.splitlines():
            if "maps to" in line:
                return int(line.split("maps to")[1].split()[-1].rstrip(".,"), 16) | (va & 0xFFF)
        return None
