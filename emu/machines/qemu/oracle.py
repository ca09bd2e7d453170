"""Oracle glue for the QEMU machines (the counterpart of :mod:`emu.machines.oracle`'s Unicorn
adapters): which architectures have one, and how each points its MMU at an mm."""

from __future__ import annotations

from collections.abc import Callable

from archs.linux import LinuxPgtable
from emu.machines.oracle import Arm64Oracle, Oracle
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

        # the 52-bit configurations (archs.arm64.make_config): TCR_EL1.IPS = 52 bits, and DS = 1
        # for FEAT_LPA2 (4KB/16KB); 64KB needs only FEAT_LVA + FEAT_LPA
        oa = ops.config.extra.get("oa", "48")
        self.machine = QemuArm64Machine(ram, alloc, granule=ops.PAGE_SIZE, va_bits=ops.config.va_bits,
                                        ips_bits=48 if oa == "48" else 52, ds=oa == "lpa2")


QEMU_ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": QemuX86_64Oracle,
    "arm64": QemuArm64Oracle,
}
