"""The MMU oracle: one Unicorn machine per scenario, attached to an mm's page tables.

Each architecture registers an adapter that knows how to create its machine for a paging
configuration, what virtual range the machine keeps for itself, how to point the MMU at an mm
(CR3 / TTBRn_EL1 / an ASCE in CR7), and which cases the machine cannot check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from archs.linux import LinuxPgtable

from .errors import ConfigError
from .machines.base import READ, Access, Fault, ProbeResult
from .memory import FrameAllocator, PhysicalMemory
from .mm import MM


class Oracle:
    """Base adapter: subclasses set ``self.machine`` and implement :meth:`attach`."""

    machine: Any

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        self.ops = ops
        self.ram = ram
        self.alloc = alloc

    def reserved_va(self) -> list[tuple[int, int]]:
        """Virtual ranges the machine maps for its own code (the scenario must leave them)."""
        return []

    def attach(self, mm: MM) -> None:
        raise NotImplementedError

    def probe_many(self, addrs: Sequence[int], access: Access = READ) -> list[ProbeResult]:
        return list(self.machine.probe_many(list(addrs), access))

    def probe(self, addr: int, access: Access = READ) -> ProbeResult:
        return self.machine.probe(addr, access)  # type: ignore[no-any-return]

    def registers(self) -> dict[str, int]:
        return dict(self.machine.registers())

    def close(self) -> None:
        """Drop the machine (and with it Unicorn's mapping of guest RAM)."""
        self.machine = None

    def fault_hw_level(self, fault: Fault) -> str | None:
        """The name (``HwLevel.name``) of the hardware level a fault names, or None where the
        architecture's fault report has no level (x86-64 #PF)."""
        return None

    def cannot_check(self, level: str | None, entry: int | None) -> str | None:
        """Why the MMU cannot check a case whose deciding entry is ``entry`` at Linux level
        ``level`` (e.g. s390x large entries without EDAT), or None if it can."""
        return None


class X86_64Oracle(Oracle):
    """x86-64: CR3 = mm->pgd; the machine owns root slot 511 for its code (emu/machines/x86_64.py)."""

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        from .machines.x86_64 import X86_64Machine

        self.machine = X86_64Machine(ram, alloc, levels=len(ops.config.levels))

    def reserved_va(self) -> list[tuple[int, int]]:
        return [self.machine.reserved_va_range()]

    def attach(self, mm: MM) -> None:
        self.machine.set_root(mm.pgd)


class S390xOracle(Oracle):
    """s390x: the ASCE of ``mm`` (``mm->context.asce``, built through archs.s390x.ASCE: origin
    mm->pgd, the configuration's designation type, TL=3, the user-space control bits) goes into
    CR7 and the probes run in secondary-space mode, so the probe code is fetched from real
    storage and reserves no virtual range (emu/machines/s390x.py).

    Large entries -- 1 MB segment entries (EDAT-1) and 2 GB region-third entries (EDAT-2) -- are
    checked only if the machine's start-up self-test proved that this Unicorn build honours
    them (``edat1_works`` / ``edat2_works``); otherwise they are ``oracle-cannot-check``.
    """

    def __init__(
        self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator, *, edat: bool = True
    ) -> None:
        super().__init__(ops, ram, alloc)
        from .machines.s390x import S390xMachine

        self.machine = S390xMachine(ram, alloc, edat=edat)

    def asce(self, mm: MM) -> int:
        return int(self.ops.asce(mm.pgd))  # type: ignore[attr-defined]

    def attach(self, mm: MM) -> None:
        self.machine.set_asce(self.asce(mm))

    def fault_hw_level(self, fault: Fault) -> str | None:
        """The table a translation exception names (the machine's ``Fault.level``: 0 page table
        ... 4 region-first table, from the program-interruption code); None for the codes that
        name no table (protection, addressing, translation specification, ASCE type)."""
        from archs.s390x import LEVEL_NAMES

        return None if fault.level is None else LEVEL_NAMES.get(fault.level)

    def cannot_check(self, level: str | None, entry: int | None) -> str | None:
        if entry is None:
            return None
        ops: Any = self.ops
        if level == "pmd" and ops.pmd_leaf(entry) and not self.machine.edat1_works:
            return "EDAT-1 (1 MB segment entries) not honoured by this Unicorn build"
        if level == "pud" and ops.pud_leaf(entry) and not self.machine.edat2_works:
            return "EDAT-2 (2 GB region-third entries) not honoured by this Unicorn build"
        return None


ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": X86_64Oracle,
    "s390x": S390xOracle,
}


def make_oracle(ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> Oracle:
    try:
        factory = ORACLES[ops.arch]
    except KeyError:
        raise ConfigError(f"no MMU oracle for architecture {ops.arch!r}") from None
    return factory(ops, ram, alloc)
