"""Oracle glue for the QEMU machines (the counterpart of :mod:`emu.machines.oracle`'s Unicorn
adapters): which architectures have one, and how each points its MMU at an mm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archs.linux import LinuxPgtable
from emu.machines.oracle import Arm64Oracle, Oracle, S390xOracle
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.mm.mm_types import MM


class QemuX86_64Oracle(Oracle):
    """x86-64 on ``qemu-system-x86_64``: CR3 = mm->pgd, root slot 511 the machine's
    (:mod:`emu.machines.qemu.x86_64`)."""

    emulator = "qemu"
    #: The PC's legacy hole (emu.machines.qemu.x86_64.LEGACY_HOLE: VGA and ROM in QEMU's memory
    #: map, not RAM), which the machine takes out of the allocator itself: a fixture set built on
    #: this oracle records it as in use, and a replay must leave it for the machine to take.
    ram_holes = ((0xA_0000, 0x10_0000),)

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        from emu.machines.qemu.x86_64 import LEGACY_HOLE

        assert tuple(LEGACY_HOLE) == self.ram_holes[0]

        self.machine = self.new_machine(ram, alloc, levels=len(ops.config.levels))

    @staticmethod
    def new_machine(ram: PhysicalMemory, alloc: FrameAllocator, levels: int) -> Any:
        """The machine that runs the x86-64 probe firmware (QEMU here; Bochs's oracle overrides)."""
        from emu.machines.qemu.x86_64 import QemuX86_64Machine

        return QemuX86_64Machine(ram, alloc, levels=levels)

    def reserved_va(self) -> list[tuple[int, int]]:
        return [self.machine.reserved_va_range()]

    def attach(self, mm: MM) -> None:
        self.machine.set_root(mm.pgd)

    def close(self) -> None:
        if self.machine is not None:
            self.machine.close()
        super().close()


class QemuArm64Oracle(Arm64Oracle):
    """arm64 on ``qemu-system-aarch64 -cpu max``: as :class:`~emu.machines.oracle.Arm64Oracle`
    (mm->pgd in TTBR0_EL1 or TTBR1_EL1, the other half disabled; AT from EL3, faults named by
    PAR_EL1.FST with their level) on :mod:`emu.machines.qemu.arm64`."""

    emulator = "qemu"

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        Oracle.__init__(self, ops, ram, alloc)  # not Arm64Oracle's: that builds Unicorn's machine
        from emu.machines.qemu.arm64 import QemuArm64Machine

        # the 52-bit configurations (archs.arm64.make_config): TCR_EL1.IPS = 52 bits, and DS = 1
        # for FEAT_LPA2 (4KB/16KB); 64KB needs only FEAT_LVA + FEAT_LPA
        oa = ops.config.extra.get("oa", "48")
        self.machine = QemuArm64Machine(ram, alloc, granule=ops.PAGE_SIZE, va_bits=ops.config.va_bits,
                                        ips_bits=48 if oa == "48" else 52, ds=oa == "lpa2")


def dat_path_problem(ram: PhysicalMemory, asce: int, addr: int, edat1: bool, edat2: bool,
                     own: list[tuple[int, int]]) -> str | None:
    """Why the MMU's answer for ``addr`` under ``asce`` says nothing about the tables: its DAT
    walk meets a large entry the CPU does not honour (a valid region-third-table entry with FC =
    bit 53 without EDAT-2, a valid segment-table entry with FC without EDAT-1), or reads an entry
    in storage that is the machine's own (``own``: ``[start, end)`` real ranges: the lowcore,
    where the interruptions store, and the firmware's frames, whose contents differ from
    Unicorn's machine); None otherwise.  The path is PoP SA22-7832 ch. 3 "Translation Process":
    ASCE DT (bits 60-61) names the first table, the region-first/-second/-third and segment
    indexes are VA bits 0-10 / 11-21 / 22-32 / 33-43 and the page index 44-51; the leftmost two
    bits of an index must lie within the table offset / length (ASCE TL bits 62-63; a region
    entry's TF bits 56-57 and TL bits 62-63 for the next table); an entry with I (bit 58) or a TT
    (bits 60-61) other than its table's ends the walk; next-table origins are bits 0-51 (region
    entries) and 0-52 (segment entries).  Checks the walk does not need (reserved bits, the
    ASCE's own) are not applied: a path they would cut is still reported (cannot-check, never a
    verdict)."""
    if asce & 0x20:  # real-space designation: no tables
        return None
    dt = (asce >> 2) & 3
    if dt < 3 and addr >> (31 + 11 * (dt + 1)):
        return None  # ASCE-type exception before any table
    origin, first, last = asce & ~0xFFF, 0, asce & 3  # the table's offset and length (ASCE: TL only)
    for level in range(dt, -2, -1):  # 3 region-first .. 1 region-third, 0 segment, -1 page table
        index = (addr >> 12) & 0xFF if level < 0 else (addr >> (20 + 11 * level)) & 0x7FF
        if level >= 0 and not first <= index >> 9 <= last:
            return None  # region-/segment-translation exception (table offset / length)
        slot = origin + 8 * index
        if any(a <= slot < b for a, b in own):
            return f"the MMU's walk reads an entry at {slot:#x}, in the probe machine's own storage"
        if level < 0 or not ram.contains(slot):
            return None
        entry = ram.read_u64(slot)
        if entry & 0x20 or (entry >> 2) & 3 != max(level, 0):
            return None  # invalid, or a table-type mismatch (translation-specification)
        if level == 1 and entry & 0x400 and not edat2:
            return (f"the MMU's walk meets a 2 GB region-third entry (FC=1) at {slot:#x}: EDAT-2 not honoured by "
                    "QEMU 7.2 TCG (no EDAT facility)")
        if level == 0 and entry & 0x400:
            if edat1:
                return None
            return (f"the MMU's walk meets a 1 MB segment entry (FC=1) at {slot:#x}: EDAT-1 not honoured by "
                    "QEMU 7.2 TCG (no EDAT facility)")
        origin = entry & ~(0x7FF if level == 0 else 0xFFF)
        first, last = ((entry >> 6) & 3, entry & 3) if level > 0 else (0, 3)
    return None


class QemuS390xOracle(S390xOracle):
    """s390x on ``qemu-system-s390x -cpu max``: as :class:`~emu.machines.oracle.S390xOracle`
    (the ASCE of the mm in CR7, secondary-space probes, faults named by the program-interruption
    code) on :mod:`emu.machines.qemu.s390x`.  QEMU 7.2's TCG offers no CPU model with the
    enhanced-DAT facilities (STFLE bits 8 and 78 off; ``-cpu max,edat=on`` is refused), so its DAT
    takes FC=1 entries as table pointers and large entries are ``oracle-cannot-check`` here."""

    emulator = "qemu"

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator, *, edat: bool = True) -> None:
        Oracle.__init__(self, ops, ram, alloc)  # not S390xOracle's: that builds Unicorn's machine
        from emu.machines.qemu.s390x import QemuS390xMachine

        self.machine = QemuS390xMachine(ram, alloc, edat=edat)
        ops.storage_size = ram.size  # type: ignore[attr-defined]

    def cannot_check(self, level: str | None, entry: int | None, addr: int | None = None) -> str | None:
        """The deciding entry is a large one (as on Unicorn without EDAT), or -- where Linux read
        none (e.g. outside the VMA) or decided above it -- the MMU's own walk of ``addr`` meets
        one (a CPU without the facility takes FC=1 as a table pointer, so its answer says nothing
        about the configuration's EDAT tables) or reads the machine's own storage
        (:func:`dat_path_problem`)."""
        why = super().cannot_check(level, entry)
        if why is not None:
            return why.replace("this Unicorn build", "QEMU 7.2 TCG (no EDAT facility)")
        if addr is None or self.machine.asce is None:
            return None
        from emu.machines.s390x import LOWCORE_SIZE

        return dat_path_problem(self.ram, self.machine.asce, addr, self.machine.edat1_works,
                                self.machine.edat2_works, [(0, LOWCORE_SIZE), *self.frames])

    def close(self) -> None:
        if self.machine is not None:
            self.machine.close()
        super().close()


QEMU_ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": QemuX86_64Oracle,
    "arm64": QemuArm64Oracle,
    "s390x": QemuS390xOracle,
}
