"""Where each registered deviation occurs: per emulator (Unicorn 2.1.4, QEMU 7.2 system
emulation, Bochs 2.7), each cell produced by running the deviation on that emulator where a check
exists.  Bochs is an independent x86 implementation: a deviation Bochs shares with QEMU is more
likely a reading of the manual than a QEMU bug.

The registry (:mod:`emu.machines.deviations`) was measured on Unicorn.  A deviation that QEMU 7.2
shares is a QEMU bug-report candidate (still upstream in 7.2); one that only Unicorn shows was
fixed in QEMU after 5.0.1 or is Unicorn's own.  The judge lets a deviation explain a row of an
emulator only where :data:`RECORDED` places it on that emulator, so a Unicorn-only deviation
never excuses a QEMU row; ``tests/machines/test_placement.py`` re-runs every check and fails if
a recorded cell no longer holds.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archs.linux import LinuxPgtable
from emu.errors import EmulatorError, FoliowalkError
from emu.machines import deviations
from emu.machines.base import Fault, ProbeError, Translation
from emu.machines.deviations import Deviation
from emu.machines.oracles import ORACLES
from emu.machines.ram import FrameAllocator, PhysicalMemory

#: Display names, in the registry's order (emu/machines/oracles.py is the one list of oracles).
EMULATOR_NAMES = {name: kind.display for name, kind in ORACLES.items()}


@dataclass(frozen=True)
class Cell:
    """One deviation on one emulator: ``present`` / ``absent`` (a check ran here), ``registered``
    (Unicorn: from the registry's measurements, no live check) or ``not-checked``, and what was run
    (or why nothing could be)."""

    status: str
    detail: str


#: What the checks found (tests/machines/test_placement.py proves each cell still holds).
RECORDED: dict[str, dict[str, str]] = {
    "x86-1g-pages-without-pdpe1gb": {"unicorn": "present", "qemu": "present", "bochs": "absent"},
    "x86-la57-cleared-in-long-mode": {"unicorn": "present", "qemu": "absent", "bochs": "not-checked"},
    "x86-rsvd-fault-without-p": {"unicorn": "absent", "qemu": "present", "bochs": "absent"},
    "block-at-any-level": {"unicorn": "present", "qemu": "present"},
    "block-oa-ored": {"unicorn": "present", "qemu": "absent"},
    "walk-outside-ram-reads-zero": {"unicorn": "present", "qemu": "absent"},
    "no-address-size-fault": {"unicorn": "present", "qemu": "absent"},
    "tgran16-unimplemented-but-used": {"unicorn": "present", "qemu": "absent"},
    "oa-bits-49-48-ignored": {"unicorn": "present", "qemu": "present"},
    "s390x-lra-cc3-for-every-exception": {"unicorn": "present", "qemu": "present"},
    "s390x-edat-not-in-cpu-models": {"unicorn": "present", "qemu": "present"},
    "s390x-access-register-mode-aborts": {"qemu": "present"},
    "s390x-key-controlled-protection-not-implemented": {"qemu": "present"},
}


def occurs_on(name: str, emulator: str) -> bool:
    """Whether deviation ``name`` explains rows of ``emulator``: where :data:`RECORDED` places it,
    else on Unicorn only (the registry was measured there)."""
    recorded = RECORDED.get(name, {}).get(emulator)
    return recorded == "present" if recorded is not None else emulator == "unicorn"


_PLACED: dict[tuple[str, str], list[Deviation]] = {}


def explain(ops: LinuxPgtable, walk: Any, mmu: Any, emulator: str) -> Deviation | None:
    """The first registered deviation placed on ``emulator`` whose detector the row hits (the
    registry's order), or None: :func:`emu.machines.deviations.explain` for one emulator."""
    key = (ops.arch, emulator)
    placed = _PLACED.get(key)
    if placed is None:
        placed = _PLACED[key] = [d for d in deviations.for_arch(ops.arch)
                                 if d.detect is not None and occurs_on(d.name, emulator)]
    for dev in placed:
        if dev.detect is not None and dev.detect(ops, walk, mmu):
            return dev
    return None


# -- the checks: each builds its own guest RAM and machine, and closes both ---------------------
P, RW, PS, A, D = 1, 2, 0x80, 0x20, 0x40
GIB = 1 << 30


def _x86_machine(emulator: str, ram: PhysicalMemory, alloc: FrameAllocator, levels: int):  # type: ignore[no-untyped-def]
    if emulator == "bochs":  # the CPU model without Page1GB, as qemu64 (the 1-GByte check needs it)
        from emu.machines.bochs.x86_64 import BochsX86_64Machine

        return BochsX86_64Machine(ram, alloc, levels=levels, gbpages=False)
    if emulator == "qemu":
        from emu.machines.qemu.x86_64 import QemuX86_64Machine

        return QemuX86_64Machine(ram, alloc, levels=levels)
    from emu.machines.x86_64 import X86_64Machine

    return X86_64Machine(ram, alloc, levels=levels)


def check_x86_1g_pages(emulator: str) -> Cell:
    """A PDPTE with PS = 1 (a 1-GByte page) on a CPU model whose CPUID.80000001H:EDX.Page1GB[26]
    is 0 (Unicorn and QEMU run QEMU's ``qemu64`` model; Bochs runs ``bx_generic`` with
    ``cpuid: 1g_pages=0``): SDM vol. 3A §4.5.5 makes PS reserved there, so a read must give #PF
    with P | RSVD (error code 0x9)."""
    # The 1-GByte frame at 1 GiB needs RAM only where it is read: its first 64 MiB (kept from
    # the allocator), so every emulator starts with a small guest.
    ram = PhysicalMemory(GIB + (64 << 20))
    alloc = FrameAllocator(ram, reserved=[(0, 0x10000), (GIB, GIB + (64 << 20))])
    machine = None
    try:
        machine = _x86_machine(emulator, ram, alloc, 4)
        root, pdpt = alloc.alloc(4096), alloc.alloc(4096)
        ram.write(root, bytes(4096))
        ram.write(pdpt, bytes(4096))
        page = GIB
        ram.tag(page + 0x1000, 4096)
        ram.write_u64(root + 8 * 1, pdpt | P | RW | A)
        ram.write_u64(pdpt, page | P | RW | PS | A | D)
        machine.set_root(root)
        va = (1 << 39) + 0x1010
        got = machine.probe(va)
    finally:
        if machine is not None:
            machine.close()
        ram.close()
    if got == Translation(page + 0x1010, "tag"):
        return Cell("present", f"read of {va:#x} through a 1-GByte PDPTE translated to {page + 0x1010:#x}")
    if isinstance(got, Fault) and got.code == 0x9:
        return Cell("absent", f"read of {va:#x}: #PF error code 0x9 (P|RSVD), as the SDM requires")
    return Cell("not-checked", f"unexpected answer {got}")


def check_x86_rsvd_error_code(emulator: str) -> Cell:
    """A PTE with bit 45 set (above MAXPHYADDR = 40 of qemu64: reserved, SDM vol. 3A Table 4-20):
    a read must give #PF with P | RSVD (0x9), SDM §4.7."""
    ram = PhysicalMemory(64 << 20)
    alloc = FrameAllocator(ram, reserved=[(0, 0x10000)])
    machine = None
    try:
        machine = _x86_machine(emulator, ram, alloc, 4)
        root, pdpt, pd, pt, page = (alloc.alloc(4096) for _ in range(5))
        for table in (root, pdpt, pd, pt):
            ram.write(table, bytes(4096))
        ram.write_u64(root, pdpt | P | RW | A)
        ram.write_u64(pdpt, pd | P | RW | A)
        ram.write_u64(pd, pt | P | RW | A)
        ram.write_u64(pt + 8, page | P | RW | A | D | (1 << 45))
        machine.set_root(root)
        got = machine.probe(0x1000)
    finally:
        if machine is not None:
            machine.close()
        ram.close()
    if isinstance(got, Fault) and got.code == 0x8:
        return Cell("present", "read through a PTE with reserved bit 45: #PF error code 0x8 (RSVD without P)")
    if isinstance(got, Fault) and got.code == 0x9:
        return Cell("absent", "read through a PTE with reserved bit 45: #PF error code 0x9 (P|RSVD)")
    return Cell("not-checked", f"unexpected answer {got}")


def check_x86_la57(emulator: str) -> Cell:
    """MOV to CR4 clearing LA57 in 64-bit mode with 5-level paging: #GP(0) (SDM vol. 3A §4.1.1).
    Bochs 2.7 has no 5-level paging: its 4-level machine reads CPUID.(EAX=07H,ECX=0):ECX.LA57[16]
    and the cell says what the CPU reported."""
    if emulator == "bochs":
        ram = PhysicalMemory(64 << 20)
        try:
            from emu.machines.bochs.x86_64 import BochsX86_64Machine

            with BochsX86_64Machine(ram, FrameAllocator(ram, reserved=[(0, 0x10000)])) as bochs:
                la57 = bochs.la57
        finally:
            ram.close()
        if la57:
            return Cell("not-checked", "Bochs reports LA57 but its machine runs 4-level paging only")
        return Cell("not-checked", "Bochs 2.7 has no 5-level paging: CPUID.(EAX=07H,ECX=0):ECX.LA57[16] = 0 "
                                   "(run in its 4-level machine), so there is no LA57 to clear")
    ram = PhysicalMemory(64 << 20)
    alloc = FrameAllocator(ram, reserved=[(0, 0x10000)])
    machine = None
    try:
        machine = _x86_machine(emulator, ram, alloc, 5)
        root = alloc.alloc(4096)
        ram.write(root, bytes(4096))
        machine.set_root(root)
        if emulator == "qemu":
            err = machine.flip_la57()
        else:  # mov rax, cr4; btr rax, 12; mov cr4, rax
            res = machine.run_code(bytes.fromhex("0f20e0 480fbaf00c 0f22e0"))
            err = res if isinstance(res, ProbeError) else None
            if err is not None and err.reason.startswith("#GP"):
                # The guest's MOV is refused; the registered deviation is Unicorn's register
                # interface (uc_reg_write), which changes LA57 in long mode all the same.
                from unicorn import x86_const

                uc = machine._uc
                cr4 = uc.reg_read(x86_const.UC_X86_REG_CR4)
                uc.reg_write(x86_const.UC_X86_REG_CR4, cr4 & ~(1 << 12))
                if not uc.reg_read(x86_const.UC_X86_REG_CR4) & (1 << 12):
                    return Cell("present", "uc_reg_write(CR4) clears LA57 with EFER.LMA = 1 (a guest MOV to CR4 "
                                           f"raises #GP as the SDM requires: {err.reason})")
    except EmulatorError as exc:
        return Cell("not-checked", f"the machine failed: {exc}")
    finally:
        if machine is not None:
            machine.close()
        ram.close()
    if err is None:
        return Cell("present", "MOV to CR4 clearing LA57 with EFER.LMA = 1 completed without #GP")
    if err.reason.startswith("#GP"):
        return Cell("absent", f"MOV to CR4 clearing LA57 with EFER.LMA = 1: {err.reason}")
    return Cell("not-checked", f"unexpected answer {err.reason}")


# -- arm64: 4KB granule, 48-bit VA, TTBR0 (raw descriptors: Arm ARM D8 "Translation table
# descriptor formats": bits[1:0] 0b11 table/page, 0b01 block; AF = bit 10) --------------------------
AF = 1 << 10


def _arm64_run(emulator: str, build: Callable[[PhysicalMemory, FrameAllocator, int], list[int]], *,
               granule: int = 4096, va_bits: int = 48, ips_bits: int = 48) -> list[object]:
    """A 64 MiB machine; ``build(ram, alloc, root)`` writes descriptors and returns the VAs to
    probe (kernel reads: AT S1E1R).  TCR_EL1.IPS = ``ips_bits``.  The last element is the CPU's
    ID_AA64MMFR0_EL1."""
    ram = PhysicalMemory(64 << 20)
    alloc = FrameAllocator(ram)
    machine: Any = None
    try:
        if emulator == "qemu":
            from emu.machines.qemu.arm64 import QemuArm64Machine

            machine = QemuArm64Machine(ram, alloc, granule=granule, va_bits=va_bits, ips_bits=ips_bits)
        else:
            from emu.machines.arm64 import Arm64Machine

            machine = Arm64Machine(ram, alloc, granule=granule, va_bits=va_bits)
        root = alloc.alloc(granule, granule)
        ram.write(root, bytes(granule))
        vas = build(ram, alloc, root)
        machine.set_roots(root, None)
        if emulator != "qemu":
            from emu.machines.arm64.sysregs import tcr_el1_value

            machine.set_sysreg("TCR_EL1", tcr_el1_value(granule, va_bits, epd1=True, ips_bits=ips_bits))
        return [*machine.probe_many(vas), machine.id_aa64mmfr0()]
    finally:
        if machine is not None:
            machine.close()
        ram.close()


def check_arm64_block_at_level0(emulator: str) -> Cell:
    """A level-0 descriptor with bits[1:0] = 0b01 and AF (4KB granule): no block at level 0, so
    a Translation fault at level 0 (Arm ARM D8)."""
    def build(ram: PhysicalMemory, alloc: FrameAllocator, root: int) -> list[int]:
        ram.write_u64(root + 8, (1 << 39) | 1 | AF)
        return [(1 << 39) + 0x10]
    res = _arm64_run(emulator, build)[0]
    if isinstance(res, Translation):
        return Cell("present", f"a level-0 'block' translated {(1 << 39) + 0x10:#x} to {res.pa:#x}")
    if isinstance(res, Fault) and res.kind == "translation" and res.level == 0:
        return Cell("absent", "level-0 descriptor 0b01: Translation fault, level 0")
    return Cell("not-checked", f"unexpected answer {res}")


def check_arm64_block_oa_ored(emulator: str) -> Cell:
    """A level-1 block (1GB) whose RES0 bit 21 is set: the PA is OA[47:30]:VA[29:0], bit 21
    of the descriptor does not reach it (Arm ARM D8)."""
    def build(ram: PhysicalMemory, alloc: FrameAllocator, root: int) -> list[int]:
        l1 = alloc.alloc(4096)
        ram.write(l1, bytes(4096))
        ram.write_u64(root, l1 | 3)
        ram.write_u64(l1 + 8, GIB | (1 << 21) | 1 | AF)
        return [GIB + 0x1234]
    res = _arm64_run(emulator, build)[0]
    if res == Translation(GIB + (1 << 21) + 0x1234, "at"):
        return Cell("present", f"block with RES0 bit 21 set: PA {GIB + (1 << 21) + 0x1234:#x} (bit OR'ed in)")
    if res == Translation(GIB + 0x1234, "at"):
        return Cell("absent", f"block with RES0 bit 21 set: PA {GIB + 0x1234:#x}")
    return Cell("not-checked", f"unexpected answer {res}")


def check_arm64_walk_outside_ram(emulator: str) -> Cell:
    """A level-0 table descriptor pointing at 0x10_0000_0000 (below PA size 2**44, no RAM): the walk
    reads no memory there -- a Synchronous External abort on the walk (FST 0b0101LL), not a
    Translation fault from reading zeros."""
    def build(ram: PhysicalMemory, alloc: FrameAllocator, root: int) -> list[int]:
        ram.write_u64(root, 0x10_0000_0000 | 3)
        return [0x1000]
    res = _arm64_run(emulator, build)[0]
    if isinstance(res, Fault) and res.kind == "translation" and res.level == 1:
        return Cell("present", "table beyond RAM read as zeros: Translation fault, level 1")
    if isinstance(res, Fault) and res.kind == "walk-external-abort":
        return Cell("absent", f"table beyond RAM: external abort on the walk (FST {res.code:#x})")
    return Cell("not-checked", f"unexpected answer {res}")


def _arm64_chain(ram: PhysicalMemory, alloc: FrameAllocator, root: int, levels: int, granule: int = 4096) -> int:
    """Tables below ``root`` along entry 0 down to the last level; returns that table."""
    table = root
    for _ in range(levels - 1):
        nxt = alloc.alloc(granule, granule)
        ram.write(nxt, bytes(granule))
        ram.write_u64(table, nxt | 3)
        table = nxt
    return table


def check_arm64_address_size(emulator: str) -> Cell:
    """TCR_EL1.IPS = 40 bits and a page whose OA has bit 42 set: an Address size fault at
    level 3 (Arm ARM D8 "Address size configuration"; FST 0b000011)."""
    def build(ram: PhysicalMemory, alloc: FrameAllocator, root: int) -> list[int]:
        ram.write_u64(_arm64_chain(ram, alloc, root, 4) + 8, (1 << 42) | 3 | AF)
        return [0x1010]
    res = _arm64_run(emulator, build, ips_bits=40)[0]
    if res == Translation((1 << 42) + 0x10, "at"):
        return Cell("present", f"IPS 40 bits, OA {1 << 42:#x}: translated")
    if isinstance(res, Fault) and res.kind == "address-size" and res.level == 3:
        return Cell("absent", "IPS 40 bits, OA 2**42: Address size fault, level 3")
    return Cell("not-checked", f"unexpected answer {res}")


def check_arm64_oa_bits_49_48(emulator: str) -> Cell:
    """A 4KB page descriptor with bit 48 set (TCR_EL1.DS = 0, IPS 48 bits): the project reads it
    as the Unicorn registry does -- an Address size fault at level 3; dropping the bit is the
    deviation."""
    def build(ram: PhysicalMemory, alloc: FrameAllocator, root: int) -> list[int]:
        page = alloc.alloc(4096)
        ram.tag(page, 4096)
        ram.write_u64(_arm64_chain(ram, alloc, root, 4) + 8, (1 << 48) | page | 3 | AF)
        return [0x1010]
    res = _arm64_run(emulator, build)[0]
    if isinstance(res, Translation) and not res.pa >> 48:
        return Cell("present", f"descriptor bit 48 set: translated to {res.pa:#x} (bit dropped)")
    if isinstance(res, Fault) and res.kind == "address-size":
        return Cell("absent", "descriptor bit 48 set: Address size fault")
    return Cell("not-checked", f"unexpected answer {res}")


def check_arm64_tgran16(emulator: str) -> Cell:
    """The 16KB granule used where ID_AA64MMFR0_EL1.TGran16 [23:20] says it is not implemented."""
    def build(ram: PhysicalMemory, alloc: FrameAllocator, root: int) -> list[int]:
        page = alloc.alloc(16384, 16384)
        ram.write_u64(_arm64_chain(ram, alloc, root, 3, 16384) + 8 * 5, page | 3 | AF)
        return [5 * 16384 + 0x10]
    res, mmfr0 = _arm64_run(emulator, build, granule=16384, va_bits=47)
    tgran16 = (int(mmfr0) >> 20) & 0xF  # type: ignore[call-overload]
    if tgran16 == 0 and isinstance(res, Translation):
        return Cell("present", "TGran16 = 0 (not implemented), yet a 16KB-granule page translates")
    if tgran16 != 0:
        return Cell("absent", f"TGran16 = {tgran16:#x}: the 16KB granule is implemented")
    return Cell("not-checked", f"TGran16 = 0 and the probe gave {res}")


# -- s390x: a region-third table -> segment table -> page table along entry 0 (raw entries, PoP
# SA22-7832 ch. 3 "Translation Tables": I = bit 58 of region/segment entries, bit 53 of a PTE;
# TT bits 60-61; STE.FC bit 53; ASCE DT bits 60-61) ------------------------------------------------
S390X_R3_ASCE, S390X_REGION_INVALID, S390X_SEGMENT_INVALID = 0x04, 0x24, 0x20
S390X_PTE_INVALID, S390X_STE_FC = 0x400, 0x400


def _s390x_run(emulator: str, probe: Callable[[Any, PhysicalMemory, int, int, str], Cell], *, edat: bool = True
               ) -> Cell:
    """A 64 MiB machine whose ASCE designates a region-third table; entry 0 of each table
    designates the next, the page table maps page 0 to a tagged frame ``data`` and nothing else.
    ``probe(machine, ram, segment_table, data, emulator)`` runs the check."""
    ram = PhysicalMemory(64 << 20, big_endian=True)
    alloc = FrameAllocator(ram, reserved=[(0, 0x2000)])
    machine: Any = None
    try:
        if emulator == "qemu":
            from emu.machines.qemu.s390x import QemuS390xMachine

            machine = QemuS390xMachine(ram, alloc, edat=edat)
        else:
            from emu.machines.s390x import S390xMachine

            machine = S390xMachine(ram, alloc, edat=edat)
        r3t, st, pt = (alloc.alloc(4096) for _ in range(3))
        data = alloc.alloc(1 << 20, 1 << 20)
        ram.tag(data, 1 << 20)
        for i in range(512):
            ram.write_u64(r3t + 8 * i, S390X_REGION_INVALID)
            ram.write_u64(st + 8 * i, S390X_SEGMENT_INVALID)
        for i in range(256):
            ram.write_u64(pt + 8 * i, S390X_PTE_INVALID)
        ram.write_u64(r3t, st | S390X_R3_ASCE)
        ram.write_u64(st, pt)
        ram.write_u64(pt, data)
        machine.set_asce(r3t | S390X_R3_ASCE)
        return probe(machine, ram, st, data, emulator)
    finally:
        if emulator == "qemu" and machine is not None:
            machine.close()
        ram.close()


def check_s390x_lra_cc3(emulator: str) -> Cell:
    """LRAG of an address whose page-table entry is invalid: condition code 2 with the PTE's real
    address in R1 (PoP ch. 10 LOAD REAL ADDRESS); the deviation is cc 3 for every exception."""
    def probe(machine: Any, ram: PhysicalMemory, st: int, data: int, emulator: str) -> Cell:
        if emulator == "qemu":
            cc, r1 = machine.lrag(0x1000)
        else:  # the single-probe routine faults at its LG; LRAG's R1 and IPM are still in r1/r4
            from unicorn import s390x_const

            machine.probe(0x1000)
            r1 = machine.uc.reg_read(s390x_const.UC_S390X_REG_R1)
            cc = (machine.uc.reg_read(s390x_const.UC_S390X_REG_R4) >> 28) & 3
        if cc == 3:
            return Cell("present", f"LRAG of 0x1000 (PTE invalid): cc 3, R1 {r1:#x}")
        if cc == 2:
            return Cell("absent", f"LRAG of 0x1000 (PTE invalid): cc 2, R1 {r1:#x}")
        return Cell("not-checked", f"LRAG of 0x1000 (PTE invalid): cc {cc}, R1 {r1:#x}")
    return _s390x_run(emulator, probe)


def check_s390x_edat(emulator: str) -> Cell:
    """A segment-table entry with FC = 1 (a 1 MB frame) read with CR0.EDAT (bit 40) set, on the
    machine's CPU model without turning the facility on (Unicorn: no library patch, edat=False;
    QEMU: ``-cpu max``): the deviation is that the entry is still taken as a page-table origin."""
    def probe(machine: Any, ram: PhysicalMemory, st: int, data: int, emulator: str) -> Cell:
        from emu.machines.s390x import CR0_EDAT, CR0_SECONDARY_SPACE

        ram.write_u64(st + 8 * 3, data | S390X_STE_FC)
        va = (3 << 20) + 0x5008
        note = ""
        if emulator == "qemu":
            from emu.machines.qemu.s390x import FACILITY_EDAT1, FACILITY_EDAT2

            machine.set_cr0(CR0_SECONDARY_SPACE | CR0_EDAT)
            note = (f" (STFLE facility 8 {'on' if machine.has_facility(FACILITY_EDAT1) else 'off'}, "
                    f"78 {'on' if machine.has_facility(FACILITY_EDAT2) else 'off'})")
        else:
            from unicorn import s390x_const

            machine.uc.reg_write(s390x_const.UC_S390X_REG_CR0, CR0_SECONDARY_SPACE | CR0_EDAT)
        got = machine.probe(va)
        if got == Translation(data + 0x5008, "tag"):
            return Cell("absent", f"1 MB segment entry with CR0.EDAT: {va:#x} -> {data + 0x5008:#x}{note}")
        return Cell("present", f"1 MB segment entry with CR0.EDAT: {va:#x} gave {got}, not {data + 0x5008:#x}{note}")
    return _s390x_run(emulator, probe, edat=False)


def check_s390x_access_register_mode(emulator: str) -> Cell:
    """The probe loop entered with PSW ASC = 01 (access-register mode; access register 0 = 0
    designates the primary space, PoP ch. 5 "Access-Register Translation").  Only on QEMU, whose
    process is not this one: on Unicorn the abort() would end foliowalk."""
    if emulator != "qemu":
        return Cell("registered", "measured on Unicorn (ORACLE-NOTES); not re-run: abort() would end this process")

    def probe(machine: Any, ram: PhysicalMemory, st: int, data: int, emulator: str) -> Cell:
        from emu.machines.qemu.s390x import MB_PROBE_PSW
        from emu.machines.s390x import PSW_MASK

        ar_mode = PSW_MASK & ~0x0000_C000_0000_0000 | 0x0000_4000_0000_0000
        ram.write_u64(machine.mailbox + MB_PROBE_PSW, ar_mode)
        proc = machine._qemu.proc
        try:
            got = machine.probe(0x8)
        except EmulatorError as exc:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            if proc.returncode == -signal.SIGABRT:
                return Cell("present", f"PSW {ar_mode:#x} (ASC 01): QEMU aborted (SIGABRT): "
                                       f"{machine._qemu.log_tail(1) or exc}")
            raise
        return Cell("absent", f"PSW {ar_mode:#x} (ASC 01): the probe of 0x8 gave {got}")
    return _s390x_run(emulator, probe)


def check_s390x_key_protection(emulator: str) -> Cell:
    """A fetch from a frame whose storage key is 0x38 (access-control 3, fetch-protection on)
    with PSW key 5: key-controlled protection must give a protection exception, code 0x04 (PoP
    ch. 3 "Key-Controlled Protection": neither key 0 nor a match, and fetch-protected).  The
    record buffer gets key 5 first, so the loop's own stores match.  QEMU only: the Unicorn machine
    runs with PSW key 0 and has no SSKE step."""
    if emulator != "qemu":
        return Cell("registered", "measured on Unicorn (ORACLE-NOTES); no live check here: the test its "
                                  "reference names shows it still exists")

    def probe(machine: Any, ram: PhysicalMemory, st: int, data: int, emulator: str) -> Cell:
        from emu.machines.qemu.s390x import CHUNK, RECORD

        machine.set_storage_key(machine.obuf, RECORD * CHUNK, 0x50)
        machine.probe(0x8)
        machine.set_storage_key(data, 4096, 0x38)
        machine.set_psw_key(5)
        got = machine.probe(0x8)
        key = machine.storage_key_read()
        if key & 0xF8 != 0x38:
            return Cell("not-checked", f"ISKE read key {key:#x} back, not 0x38")
        if got == Translation(data + 8, "tag"):
            return Cell("present", f"fetch with PSW key 5 from a frame with storage key {key:#x}: translated, "
                                   "no protection exception")
        if isinstance(got, Fault) and got.code == 0x04:
            return Cell("absent", f"fetch with PSW key 5 from a frame with storage key {key:#x}: protection (0x04)")
        return Cell("not-checked", f"unexpected answer {got}")
    return _s390x_run(emulator, probe)


CHECKS: dict[str, Callable[[str], Cell]] = {
    "no-address-size-fault": check_arm64_address_size,
    "tgran16-unimplemented-but-used": check_arm64_tgran16,
    "oa-bits-49-48-ignored": check_arm64_oa_bits_49_48,
    "block-at-any-level": check_arm64_block_at_level0,
    "block-oa-ored": check_arm64_block_oa_ored,
    "walk-outside-ram-reads-zero": check_arm64_walk_outside_ram,
    "x86-1g-pages-without-pdpe1gb": check_x86_1g_pages,
    "x86-la57-cleared-in-long-mode": check_x86_la57,
    "x86-rsvd-fault-without-p": check_x86_rsvd_error_code,
    "s390x-lra-cc3-for-every-exception": check_s390x_lra_cc3,
    "s390x-edat-not-in-cpu-models": check_s390x_edat,
    "s390x-access-register-mode-aborts": check_s390x_access_register_mode,
    "s390x-key-controlled-protection-not-implemented": check_s390x_key_protection,
}

#: Why a deviation has no check on any emulator.
UNCHECKABLE = {
    "x86-pat-pcd-pwt-g-ignored": "no translation result depends on PAT/PCD/PWT/G (memory type, TLB-global): "
                                 "a probe cannot observe it",
}


def check(name: str, arch: str, emulator: str) -> Cell:
    """Run deviation ``name`` on ``emulator`` (``not-checked`` with the reason where no check
    or no machine exists, or the emulator is not installed)."""
    if name in UNCHECKABLE:
        return Cell("not-checked", UNCHECKABLE[name])
    if emulator in ("qemu", "bochs"):
        from emu.machines.oracle import oracle_factories, oracle_missing

        if arch not in oracle_factories(emulator):
            return Cell("not-checked", f"no {EMULATOR_NAMES[emulator]} machine for {arch}"
                                       + (" (Bochs emulates x86 only)" if emulator == "bochs" else " yet"))
        problem = oracle_missing(emulator, arch)
        if problem:
            return Cell("not-checked", problem)
    run = CHECKS.get(name)
    if run is None:
        if emulator == "unicorn":
            return Cell("registered", "measured on Unicorn (ORACLE-NOTES); no live check here: the test its "
                                      "reference names shows it still exists")
        return Cell("not-checked", "no check for this deviation on this emulator yet")
    try:
        return run(emulator)
    except FoliowalkError as exc:
        return Cell("not-checked", f"{type(exc).__name__}: {exc}")


def placement(cells: dict[str, Cell]) -> str:
    """``unicorn only`` / ``qemu too`` / ``qemu only`` / ``unicorn (qemu not checked)`` from a
    row's cells, followed by ``, bochs too`` / ``, not bochs`` where Bochs ran the check."""
    where = _placement_unicorn_qemu(cells)
    b = cells.get("bochs")
    if b is not None and b.status in ("present", "absent"):
        where += ", bochs too" if b.status == "present" else ", not bochs"
    return where


def _placement_unicorn_qemu(cells: dict[str, Cell]) -> str:
    u, q = cells.get("unicorn"), cells.get("qemu")
    if u is None or u.status not in ("present", "registered"):
        if u is not None and u.status == "absent" and q is not None and q.status == "present":
            return "qemu only"
        return "?"
    if q is None or q.status == "not-checked":
        return "unicorn (qemu not checked)"
    return "qemu too" if q.status == "present" else "unicorn only"
