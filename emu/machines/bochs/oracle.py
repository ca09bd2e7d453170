"""Oracle glue for the Bochs machine (the counterpart of :mod:`emu.machines.qemu.oracle`): which
architectures and configurations it has, and how it points its MMU at an mm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archs.linux import LinuxPgtable
from emu.machines.oracle import Oracle
from emu.machines.qemu.oracle import QemuX86_64Oracle
from emu.machines.ram import FrameAllocator, PhysicalMemory


class BochsX86_64Oracle(QemuX86_64Oracle):
    """x86-64 on Bochs 2.7: as the QEMU oracle (CR3 = mm->pgd, root slot 511 the machine's, the
    same probe firmware) on :mod:`emu.machines.bochs.x86_64`; 4-level paging only."""

    emulator = "bochs"  # ram_holes: the PC's legacy hole, which this machine takes out too

    @staticmethod
    def new_machine(ram: PhysicalMemory, alloc: FrameAllocator, levels: int) -> Any:
        from emu.machines.bochs.x86_64 import BochsX86_64Machine

        return BochsX86_64Machine(ram, alloc, levels=levels)


BOCHS_ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": BochsX86_64Oracle,
}

#: Configurations of a covered architecture that the Bochs machine cannot run, and why.
BOCHS_UNSUPPORTED = {
    "x86_64:5level": "Bochs 2.7 does not implement 5-level paging (no CR4.LA57, no CPUID.07H:ECX.LA57; "
                     "docs/oracles.md)",
}
