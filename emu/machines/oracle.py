"""The MMU oracle: one Unicorn machine per scenario, attached to an mm's page tables.

Each architecture registers an adapter that knows how to create its machine for a paging
configuration, what virtual range the machine keeps for itself, how to point the MMU at an mm
(CR3 / TTBRn_EL1 / an ASCE in CR7), and which cases the machine cannot check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from archs.linux import LinuxPgtable
from emu.machines.base import READ, Access, Fault, ProbeError, ProbeResult
from emu.machines.ram import FrameAllocator, PhysicalMemory
from emu.mm.mm_types import MM


class Oracle:
    """Base adapter: subclasses set ``self.machine`` and implement :meth:`attach`.

    ``half`` says which half of the address space the scenario's addresses lie in (``"low"``, or
    ``"high"`` where the configuration lists it in ``config.extra["halves"]``, as arm64's TTBR1);
    the scenario sets it before the first :meth:`attach`.
    """

    machine: Any
    half: str = "low"
    #: Which emulator answers (:data:`emu.machines.oracles.ORACLES`): the deviation registry is placed per emulator.
    emulator: str = "unicorn"
    #: Physical ``[start, end)`` ranges the machine took from the scenario's allocator (its code,
    #: tables and buffers), set by :func:`make_oracle`.  Nothing may write there but the machine:
    #: verify never tags them, whatever frame a (hostile) leaf maps.
    frames: list[tuple[int, int]] = []
    #: Physical ``[start, end)`` ranges the machine reserves in the allocator itself when it starts
    #: (not RAM to its emulator); a rebuilt scenario leaves them free for it (emu/fixtures/load.py).
    ram_holes: tuple[tuple[int, int], ...] = ()

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
        """The MMU's answer for every address (one guest loop per chunk).  The machine's own
        frames are left as they were (see :meth:`_untouched`)."""
        with self._untouched():
            return list(self.machine.probe_many(list(addrs), access))

    def probe(self, addr: int, access: Access = READ) -> ProbeResult:
        """The MMU's answer for one address; the machine's frames are left as they were."""
        with self._untouched():
            return self.machine.probe(addr, access)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _untouched(self) -> Iterator[None]:
        """Put back the RAM a probe writes (``machine.scratch_ranges()``: buffers, stack, s390x
        lowcore).  A hostile table pointer can lead a walk into the machine's frames; what it
        reads there must not depend on which addresses were probed before, or the model and the
        compiled kernel, which walk before and after the probe, read different tables (fuzz
        s390x:region3, seed 0, hierarchy 160: a PMD at 0x8268 in the batch buffer)."""
        saved = self.ram.snapshot(self.machine.scratch_ranges())
        try:
            yield
        finally:
            self.ram.restore(saved)

    def registers(self) -> dict[str, int]:
        return dict(self.machine.registers())

    def close(self) -> None:
        """Drop the machine (and with it Unicorn's mapping of guest RAM)."""
        self.machine = None

    def fault_hw_level(self, fault: Fault) -> str | None:
        """The name (``HwLevel.name``) of the hardware level a fault names, or None where the
        architecture's fault report has no level (x86-64 #PF)."""
        return None

    def cannot_check(self, level: str | None, entry: int | None, addr: int | None = None) -> str | None:
        """Why the MMU cannot check a case whose deciding entry is ``entry`` at Linux level
        ``level`` (e.g. s390x large entries without EDAT), or its translation of ``addr`` (an
        MMU whose own walk meets an entry it cannot honour), or None if it can."""
        return None


class X86_64Oracle(Oracle):
    """x86-64: CR3 = mm->pgd; the machine owns root slot 511 for its code (emu/machines/x86_64/)."""

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        from emu.machines.x86_64 import X86_64Machine

        self.machine = X86_64Machine(ram, alloc, levels=len(ops.config.levels))

    def reserved_va(self) -> list[tuple[int, int]]:
        return [self.machine.reserved_va_range()]

    def attach(self, mm: MM) -> None:
        self.machine.set_root(mm.pgd)


class S390xOracle(Oracle):
    """s390x: the ASCE of ``mm`` (``mm->context.asce``, built through archs.s390x.ASCE: origin
    mm->pgd, the configuration's designation type, TL=3, the user-space control bits) goes into
    CR7 and the probes run in secondary-space mode, so the probe code is fetched from real
    storage and reserves no virtual range (emu/machines/s390x/).

    Large entries -- 1 MB segment entries (EDAT-1) and 2 GB region-third entries (EDAT-2) -- are
    checked only if the machine's start-up self-test proved that this Unicorn build honours
    them (``edat1_works`` / ``edat2_works``); otherwise they are ``oracle-cannot-check``.
    """

    def __init__(
        self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator, *, edat: bool = True
    ) -> None:
        super().__init__(ops, ram, alloc)
        from emu.machines.s390x import S390xMachine

        self.machine = S390xMachine(ram, alloc, edat=edat)
        # The machine's main storage is all of guest RAM from absolute 0: what the architecture's
        # view (archs.s390x S390x.hw_rejects) takes for addressing exceptions.
        ops.storage_size = ram.size  # type: ignore[attr-defined]

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

    def cannot_check(self, level: str | None, entry: int | None, addr: int | None = None) -> str | None:
        if entry is None:
            return None
        ops: Any = self.ops
        if level == "pmd" and ops.pmd_leaf(entry) and not self.machine.edat1_works:
            return "EDAT-1 (1 MB segment entries) not honoured by this Unicorn build"
        if level == "pud" and ops.pud_leaf(entry) and not self.machine.edat2_works:
            return "EDAT-2 (2 GB region-third entries) not honoured by this Unicorn build"
        return None


class Arm64Oracle(Oracle):
    """arm64: an :class:`~emu.machines.arm64.Arm64Machine` with the configuration's granule and
    VA size (TCR_EL1.TG0/TG1, T0SZ = T1SZ = 64 - va_bits); ``mm->pgd`` goes into TTBR0_EL1 for
    the low half or TTBR1_EL1 for the high half, and the other half is disabled (TCR_EL1.EPD0/
    EPD1), so an address in the wrong half faults instead of translating.  The probes are
    ``AT S1E1R``/``S1E1W``/``S1E0R``/``S1E0W`` run at EL3 with its MMU off, so the machine
    reserves no virtual range.  Faults name their level (PAR_EL1.FST), reported as ``L0``..``L3``.
    """

    #: Why this oracle cannot check the configuration at all (None: it can).  Unicorn 2.1.4's CPU
    #: code is QEMU 5.0.1's: its Cortex-A72 model (ID_AA64MMFR0_EL1.PARange 44 bits, TGran4 0b0000)
    #: has neither FEAT_LPA2 (QEMU 7.0) nor FEAT_LVA/FEAT_LPA, so TCR_EL1.DS, TxSZ 12 and the 52-bit
    #: descriptor formats of archs.arm64's 52-bit configurations are beyond it.
    unsupported: str | None = None

    def __init__(self, ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator) -> None:
        super().__init__(ops, ram, alloc)
        from emu.machines.arm64 import Arm64Machine

        features = ops.config.extra.get("features")
        if features:
            self.unsupported = (f"unicorn-no-{features[0].lower().replace('_', '-')}: Unicorn 2.1.4's "
                                f"Cortex-A72 (QEMU 5.0.1 core) has no {' / '.join(features)}, which "
                                f"{ops.config.key} needs (52-bit VA and OA); check it with --oracle qemu")
            self.machine = None
            return
        self.machine = Arm64Machine(ram, alloc, granule=ops.PAGE_SIZE, va_bits=ops.config.va_bits)

    def probe_many(self, addrs: Sequence[int], access: Access = READ) -> list[ProbeResult]:
        if self.unsupported:
            return [ProbeError(f"oracle-cannot-check: {self.unsupported}")] * len(addrs)
        return super().probe_many(addrs, access)

    def probe(self, addr: int, access: Access = READ) -> ProbeResult:
        return self.probe_many([addr], access)[0] if self.unsupported else super().probe(addr, access)

    def registers(self) -> dict[str, int]:
        """The machine's registers; for a configuration it cannot probe, the EL1&0 translation
        registers the regime needs (what the QEMU machine loads for it: TCR_EL1 with IPS 52 bits
        and, for FEAT_LPA2, DS; the roots :meth:`attach` was given), so that fixture sets of it
        still carry what the manual's walk reads."""
        if not self.unsupported:
            return super().registers()
        from emu.machines.arm64.sysregs import MAIR_EL1_DEFAULT, tcr_el1_value
        from emu.machines.qemu.arm64 import SCTLR_EL1

        ttbr0, ttbr1 = self._roots
        tcr = tcr_el1_value(self.ops.PAGE_SIZE, self.ops.config.va_bits, epd0=ttbr0 is None, epd1=ttbr1 is None,
                            ips_bits=52, ds=self.ops.config.extra.get("oa") == "lpa2")
        return {"SCTLR_EL1": SCTLR_EL1, "MAIR_EL1": MAIR_EL1_DEFAULT, "TCR_EL1": tcr,
                "TTBR0_EL1": ttbr0 or 0, "TTBR1_EL1": ttbr1 or 0}

    def cannot_check(self, level: str | None, entry: int | None, addr: int | None = None) -> str | None:
        return self.unsupported

    #: (TTBR0_EL1, TTBR1_EL1) as :meth:`attach` set them, for :meth:`registers` when unsupported
    _roots: tuple[int | None, int | None] = (None, None)

    def attach(self, mm: MM) -> None:
        if self.unsupported:
            self._roots = (None, mm.pgd) if self.half == "high" else (mm.pgd, None)
            return
        if self.half == "high":
            self.machine.set_roots(None, mm.pgd)
        else:
            self.machine.set_roots(mm.pgd, None)

    def fault_hw_level(self, fault: Fault) -> str | None:
        return None if fault.level is None else f"L{fault.level}"

    def close(self) -> None:
        if self.machine is not None:
            self.machine.close()
        super().close()


ORACLES: dict[str, Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]] = {
    "x86_64": X86_64Oracle,
    "arm64": Arm64Oracle,
    "s390x": S390xOracle,
}


def taken_ranges(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the free ranges ``before`` that are no longer free ``after``."""
    taken = []
    for s, e in before:
        pos = s
        for a, b in sorted(after):
            if b <= s or a >= e:
                continue
            if a > pos:
                taken.append((pos, a))
            pos = max(pos, b)
        if pos < e:
            taken.append((pos, e))
    return taken


OracleFactory = Callable[[LinuxPgtable, PhysicalMemory, FrameAllocator], Oracle]


def oracle_factories(emulator: str = "unicorn") -> dict[str, OracleFactory]:
    """arch -> oracle factory of ``emulator`` (the registry: emu/machines/oracles.py)."""
    from emu.machines.oracles import get

    return get(emulator).factories()


def oracle_missing(emulator: str, arch: str) -> str | None:
    """Why ``emulator``'s oracle for ``arch`` cannot run here (what to install), or None (the
    registry's ``needs``, emu/machines/oracles.py)."""
    from emu.machines.oracles import get

    return get(emulator).missing(arch)


def oracle_unsupported(emulator: str) -> dict[str, str]:
    """Configuration key -> why ``emulator``'s machine for its architecture cannot run it (the
    registry's ``config_problem``, emu/machines/oracles.py)."""
    import archs
    from emu.machines.oracles import get

    kind = get(emulator)
    return {k: why for k in archs.all_config_keys() if (why := kind.config_problem(k)) is not None}


def make_oracle(ops: LinuxPgtable, ram: PhysicalMemory, alloc: FrameAllocator, emulator: str = "unicorn") -> Oracle:
    from emu.machines.oracles import get

    factory = get(emulator).factory(ops.arch)
    before = list(alloc._free)  # FrameAllocator keeps its free list private
    oracle = factory(ops, ram, alloc)
    oracle.frames = taken_ranges(before, list(alloc._free))
    return oracle
