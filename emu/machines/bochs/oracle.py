"""Oracle glue for the Bochs machine (the counterpart of :mod:`emu.machines.qemu.oracle`): which
architectures and configurations it has, and how it points its MMU at an mm."""

from __future__ import annotations

from collections.abc import Callable

from archs.linux import LinuxPgtable
from emu.machines.oracle import Oracle
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.mm.mm_types import MM


class BochsX86_64Oracle(Oracle):
    """x86-64 on Bochs 2.7: CR3 = mm->pgd, root slot 511 the machine's
    (:mod:`emu.machines.bochs.x86_64`); 4-level paging only."""

    emulator = "bochs"
    #: The PC's legacy hole, which the machine takes out of the allocator itself (as QEMU's:
    #: :attr:`emu.machines.oracle.Oracle.ram_holes`); a rebuilt fixture set leaves it free.
    ram_holes = ((0xA_0000, 0x10_0000),)

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        from emu.machines.bochs.x86_64 import LEGACY_HOLE, BochsX86_64Machine

        assert tuple(LEGACY_HOLE) == self.ram_holes[0]

        self.machine = BochsX86_64Machine(ram, alloc, levels=len(ops.config.levels))

    def reserved_va(self) -> list[tuple[int, int]]:
        return [self.machine.reserved_va_range()]

    def attach(self, mm: MM) -> None:
        self.machine.set_root(mm.pgd)

    def close(self) -> None:
        if self.machine is not None:
            self.machine.close()
        super().close()


BOCHS_ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": BochsX86_64Oracle,
}

#: Configurations of a covered architecture that the Bochs machine cannot run, and why.
BOCHS_UNSUPPORTED = {
    "x86_64:5level": "Bochs 2.7 does not implement 5-level paging (no CR4.LA57, no CPUID.07H:ECX.LA57; "
                     "docs/oracles.md)",
}
