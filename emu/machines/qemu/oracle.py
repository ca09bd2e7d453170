"""Oracle glue for the QEMU machines (the counterpart of :mod:`emu.machines.oracle`'s Unicorn
adapters): which architectures have one, and how each points its MMU at an mm."""

from __future__ import annotations

from collections.abc import Callable

from archs.linux import LinuxPgtable
from emu.machines.oracle import Arm64Oracle, Oracle, S390xOracle
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.mm.mm_types import MM


class QemuX86_64Oracle(Oracle):
    """x86-64 on ``qemu-system-x86_64``: CR3 = mm->pgd, root slot 511 the machine's
    (:mod:`emu.machines.qemu.x86_64`)."""

    emulator = "qemu"

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        from emu.machines.qemu.x86_64 import QemuX86_64Machine

        self.machine = QemuX86_64Machine(ram, alloc, levels=len(ops.config.levels))

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

        self.machine = QemuArm64Machine(ram, alloc, granule=ops.PAGE_SIZE, va_bits=ops.config.va_bits)


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

    def cannot_check(self, level: str | None, entry: int | None) -> str | None:
        why = super().cannot_check(level, entry)
        return None if why is None else why.replace("this Unicorn build", "QEMU 7.2 TCG (no EDAT facility)")

    def close(self) -> None:
        if self.machine is not None:
            self.machine.close()
        super().close()


QEMU_ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": QemuX86_64Oracle,
    "arm64": QemuArm64Oracle,
    "s390x": QemuS390xOracle,
}
