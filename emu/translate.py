"""Anyone's tables: translate entries at any physical address by the manual and by the MMU.

:class:`AddressSpace` holds foreign page tables -- ``{pa: value}`` entries or a raw physical
image -- with the roots the architecture names (x86-64 ``cr3``; arm64 ``ttbr0``/``ttbr1`` and
``t1sz``; s390x ``asce``), any configuration the architecture allows (``x86_64:4level``,
``arm64:16k:48``, ``s390x`` -- the ASCE's designation type decides) and CPU facts.  Then:

* :meth:`AddressSpace.translate` -- the manual's answer (``archs.<arch>.translate``);
* :meth:`AddressSpace.mmu` -- a Unicorn MMU's answer: the probe machine of ``emu/machines/`` in a
  RAM of its own holding the entries where they are (a root at 0 included), its own code and
  data in frames the entries do not touch, the user's root never overwritten (x86-64: CR3 points
  at a copy of the root that also holds the machine's slot 511);
* :meth:`AddressSpace.check` -- both, and a verdict per address: ``agree``, ``emulator-deviation:
  <names>`` (every registered deviation that explains the difference, emu/machines/deviations.py),
  ``oracle-cannot-check: <why>`` or ``disagree: <what differs>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import archs.arm64
import archs.s390x
import archs.x86_64
from archs.linux import LinuxPgtable
from archs.translate import Fault, Reader, Translation, entries_reader, image_reader, parse_access
from emu.errors import ConfigError
from emu.machines.oracle import taken_ranges

TRANSLATORS = {"x86_64": archs.x86_64.translate, "arm64": archs.arm64.translate, "s390x": archs.s390x.translate}
ROOTS = {"x86_64": ("cr3",), "arm64": ("ttbr0", "ttbr1", "t1sz"), "s390x": ("asce",)}
#: The CPU facts of each probe machine where they differ from a manual default or are fixed: a
#: manual answer under other facts cannot be checked on the machine.
MACHINE_CPU: dict[str, dict[str, Any]] = {
    "x86_64": dict(archs.x86_64.TRANSLATE_CPU),  # the machine's CPU model (archs.x86_64.CPU, CR0.WP)
    "arm64": {"wxn": False, "pan": False},
    "s390x": {"iep": False},
}
#: s390x real 0..0x1fff: the lowcore, where the CPU itself stores interruption data (PoP ch. 3
#: "Assigned Storage Locations": program-interruption code at 0x8c, TEID at 0xa8, old PSWs).
S390X_LOWCORE = 0x2000
_SPARE = 64 << 20  # RAM beyond the entries for the machine's own code, tables and buffers


def arch_of(config: str) -> str:
    """``x86_64:4level`` -> ``x86_64`` (aliases allowed); an unknown architecture is a ConfigError."""
    arch = archs.ALIASES.get(config.split(":", 1)[0], config.split(":", 1)[0])
    if arch not in TRANSLATORS:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(sorted(TRANSLATORS))}")
    return arch


@dataclass(frozen=True)
class Row:
    """One address: the manual's answer, the MMU's (None if not asked) and the verdict."""

    va: int
    access: str
    manual: Translation | Fault
    mmu: Any
    verdict: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"va": hex(self.va), "access": self.access, "manual": self.manual.to_json(),
                "mmu": mmu_json(self.mmu), "verdict": self.verdict}


def mmu_json(result: Any) -> dict[str, Any] | None:
    """A machine's ProbeResult as a JSON-ready dict."""
    from emu.machines.base import Fault as MFault
    from emu.machines.base import Translation as MTranslation

    if result is None:
        return None
    if isinstance(result, MTranslation):
        return {"result": "translation", "pa": hex(result.pa), "observed_by": result.observed_by}
    if isinstance(result, MFault):
        return {"result": "fault", "kind": result.kind, "level": result.level, "code": hex(result.code)}
    return {"result": "error", "reason": str(getattr(result, "reason", result))}


def mmu_str(result: Any) -> str:
    """A machine's ProbeResult for people."""
    d = mmu_json(result)
    if d is None:
        return "-"
    if d["result"] == "translation":
        return f"pa {d['pa']} ({d['observed_by']})"
    if d["result"] == "fault":
        level = "" if d["level"] is None else f" level {d['level']}"
        return f"{d['kind']}{level} code {d['code']}"
    return f"error: {d['reason']}"


class AddressSpace:
    """Foreign page tables plus the roots and CPU facts to walk them with.

    ``config``: ``x86_64:4level``/``x86_64:5level``, ``arm64:<4k|16k|64k>:<va_bits>``, ``s390x``
    (or ``s390x:<type>``; the ASCE decides).  ``entries``: ``{pa: value}``; or ``image`` (raw
    bytes, byte 0 at physical ``image_base``).  ``roots``: ``cr3=`` / ``ttbr0=``, ``ttbr1=``,
    ``t1sz=`` / ``asce=``.  ``cpu``: the arch module's ``TRANSLATE_CPU`` facts; on s390x
    ``storage_size`` defaults to the main storage of the machine :meth:`mmu` builds.
    """

    def __init__(self, config: str, *, entries: dict[int, int] | None = None, image: bytes | None = None,
                 image_base: int = 0, cpu: dict[str, Any] | None = None, **roots: int | None) -> None:
        self.config = config
        self.arch = arch_of(config)
        unknown = set(roots) - set(ROOTS[self.arch])
        if unknown:
            raise ConfigError(f"{self.arch} roots are {', '.join(ROOTS[self.arch])}, not {', '.join(sorted(unknown))}")
        if self.arch == "x86_64" and roots.get("cr3") is None:
            raise ConfigError("x86_64 needs CR3 (cr3=, --cr3): the root table's physical address")
        if self.arch == "s390x" and roots.get("asce") is None:
            raise ConfigError("s390x needs the address-space-control element (asce=, --asce)")
        if self.arch == "arm64" and roots.get("ttbr0") is None and roots.get("ttbr1") is None:
            raise ConfigError("arm64 needs TTBR0_EL1 and/or TTBR1_EL1 (ttbr0=/ttbr1=, --ttbr0/--ttbr1; "
                              "a missing half is disabled)")
        if (entries is None) == (image is None):
            raise ConfigError("give the tables as entries {pa: value} or as a raw image, not both or neither")
        self.entries = dict(entries or {})
        for pa, value in self.entries.items():
            if pa < 0 or pa % 8 or not 0 <= value < 1 << 64:
                raise ConfigError(f"entry {pa:#x}: {value:#x} is not a 64-bit value at an 8-byte aligned address")
        self.image, self.image_base = image, image_base
        self.roots = {k: v for k, v in roots.items() if v is not None}
        self.byteorder = "big" if self.arch == "s390x" else "little"
        self.read: Reader = entries_reader(self.entries) if image is None else image_reader(
            image, base=image_base, byteorder=self.byteorder)
        self.cpu = dict(cpu or {})
        if self.arch == "s390x" and "storage_size" not in self.cpu:
            self.cpu["storage_size"] = self.ram_size()
        self.translate(0)  # bad roots / configuration / CPU facts: refused now, in one line
        self._machine: Any = None
        self._cannot: str | None = None
        self._frames: list[tuple[int, int]] = []

    # -- the manual ------------------------------------------------------------------------------
    def translate(self, va: int, access: Any = "read") -> Translation | Fault:
        """The architecture's answer for one access (see ``archs.<arch>.translate``)."""
        try:
            return TRANSLATORS[self.arch](self.config, self.read, va, access, cpu=self.cpu or None,
                                          **self.roots)  # type: ignore[operator]
        except ValueError as err:
            raise ConfigError(str(err)) from None

    # -- the MMU ----------------------------------------------------------------------------------
    def _extent(self) -> int:
        ends = [pa + 8 for pa in self.entries] + [0]
        if self.image is not None:
            ends.append(self.image_base + len(self.image))
        return max(ends)

    def ram_size(self) -> int:
        """Bytes of RAM the probe machine gets: every entry, then 64 MiB for the machine's own
        frames, in whole MiB -- on s390x the ``storage_size`` CPU fact when one is given and it
        holds that much (main storage is what the machine's RAM is)."""
        need = ((self._extent() + _SPARE + (1 << 20) - 1) >> 20) << 20
        given = self.cpu.get("storage_size") if self.arch == "s390x" else None
        if isinstance(given, int) and given >= need and given % (1 << 20) == 0:
            return given
        return need

    def _occupied(self) -> list[tuple[int, int]]:
        """Physical memory never handed to the machine: everything from 0 up to the last entry
        (whole 64 KiB), so that memory your tables reach but do not give reads as zeros on the
        machine as in the manual's walk; the machine's own frames go above."""
        return [(0, (self._extent() + 0xFFFF) & ~0xFFFF)]

    def cannot_check(self) -> str | None:
        """Why the probe machine cannot answer for these tables at all, or None."""
        fixed = MACHINE_CPU[self.arch]
        for fact, value in self.cpu.items():
            if fact in fixed and fixed[fact] != value:
                return f"the probe machine's CPU has {fact}={fixed[fact]!r}, not {value!r}"
        if self.arch == "s390x":
            if self.cpu.get("storage_size") != self.ram_size():
                return (f"the probe machine's main storage must hold the entries and 64 MiB of its own in whole "
                        f"MiB: {self.ram_size():#x} bytes, not {self.cpu['storage_size']}")
            low = [pa for pa in self.entries if pa < S390X_LOWCORE and self.entries[pa]]
            if self.image is not None and self.image_base < S390X_LOWCORE and any(
                    self.image[:S390X_LOWCORE - self.image_base]):
                low.append(self.image_base)
            if low:
                return (f"entries in the s390x lowcore (real {min(low):#x}; 0..0x1fff is where the CPU stores "
                        "interruption data, PoP ch. 3 'Assigned Storage Locations')")
        if self.arch == "arm64":
            cfg = archs.arm64.parse_config(self.config)
            if "t1sz" in self.roots and 64 - self.roots["t1sz"] != cfg.va_bits:
                return "the probe machine sets T1SZ = T0SZ"
            if not 36 <= cfg.va_bits <= 48:
                return f"the probe machine takes 36..48-bit VAs, not {cfg.va_bits}"
        return None

    def _build(self) -> Any:
        from emu.machines.ram import FrameAllocator, PhysicalMemory

        ram = PhysicalMemory(self.ram_size(), big_endian=self.arch == "s390x")
        if self.image is not None:
            ram.write(self.image_base, self.image)
        for pa, value in self.entries.items():
            ram.write_u64(pa, value)
        reserved = self._occupied()
        if self.arch == "s390x":  # the machine reserves the lowcore itself
            reserved = [(max(s, S390X_LOWCORE), e) for s, e in reserved if e > S390X_LOWCORE]
        alloc = FrameAllocator(ram, reserved=reserved)
        before = list(alloc._free)  # FrameAllocator keeps its free list private
        if self.arch == "x86_64":
            from emu.machines.x86_64 import X86_64Machine

            levels = len(archs.x86_64.CONFIGS[self.config.split(":", 1)[-1]].levels)
            machine: Any = X86_64Machine(ram, alloc, levels=levels)
            root = self.roots["cr3"] & archs.x86_64.PTE_PFN_MASK
            shadow = alloc.alloc(0x1000)  # a copy of the root: set_root() writes its entry 511
            ram.write(shadow, ram.read(root, 0x1000))
            machine.set_root(shadow)
        elif self.arch == "arm64":
            from emu.machines.arm64 import Arm64Machine

            cfg = archs.arm64.parse_config(self.config)
            machine = Arm64Machine(ram, alloc, granule=cfg.page_size, va_bits=cfg.va_bits)
            machine.set_roots(self.roots.get("ttbr0"), self.roots.get("ttbr1"))
        else:
            from emu.machines.s390x import S390xMachine

            machine = S390xMachine(ram, alloc, edat=True)
            for fact, works in (("edat1", machine.edat1_works), ("edat2", machine.edat2_works)):
                if self.cpu.get(fact, True) != works:
                    self._cannot = f"the probe machine has {fact}={works} (emu/machines/s390x/edat.py)"
            machine.set_asce(self.roots["asce"])
        self._frames = taken_ranges(before, list(alloc._free))
        return machine

    def machine_frame(self, answer: Translation | Fault) -> int | None:
        """The first entry the manual's walk read inside one of the probe machine's own frames
        (its code, tables, buffers: memory your entries do not give, which the manual reads as
        zeros and the machine has filled), or None."""
        for e in answer.trace:
            if any(start <= e.pa < end for start, end in self._frames):
                return e.pa
        return None

    def mmu(self, vas: Sequence[int], access: Any = "read") -> list[Any]:
        """The probe machine's answer per address: ``emu.machines.base`` Translation / Fault /
        ProbeError (x86-64 #GP becomes ``Fault("general-protection", None, code, 13)``)."""
        from emu.machines.base import Access, ProbeError

        kind, user = parse_access(access)
        why = self.cannot_check()
        if why is None and self._machine is None:
            try:
                self._machine = self._build()
            except Exception as err:  # noqa: BLE001 -- the emulator's failure is an answer, not a crash
                self._cannot = f"the probe machine could not be built: {err}"
        why = why or self._cannot
        if why is not None:
            return [ProbeError(f"oracle-cannot-check: {why}") for _ in vas]
        out = []
        for va in vas:
            try:
                out.append(_typed(self._machine.probe(va, Access(kind, user))))  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001
                out.append(ProbeError(str(err)))
        return out

    def check(self, vas: Sequence[int], access: Any = "read", *, mmu: bool = True) -> list[Row]:
        """Per address: the manual's answer, the MMU's (unless ``mmu`` is False) and the verdict."""
        answers = self.mmu(vas, access) if mmu else [None] * len(vas)
        rows = []
        for va, got in zip(vas, answers, strict=True):
            manual = self.translate(va, access)
            verdict = "manual-only" if got is None else judge(self.ops_for(va), manual, got)
            hit = None if got is None else self.machine_frame(manual)
            if hit is not None and not verdict.startswith("oracle-cannot-check"):
                verdict = (f"oracle-cannot-check: the walk reads {hit:#x}, in the probe machine's own frames "
                           "(beyond the entries given)")
            rows.append(Row(va, str(access), manual, got, verdict))
        return rows

    def ops_for(self, va: int) -> LinuxPgtable:
        """The arch module's ops of the configuration that translates ``va`` (the deviation
        detectors read the walk's entries through it)."""
        if self.arch == "x86_64":
            return archs.x86_64.X86_64(archs.x86_64.CONFIGS[self.config.split(":", 1)[-1]])
        if self.arch == "arm64":
            cfg = archs.arm64.parse_config(self.config)
            if va >> cfg.va_bits and "t1sz" in self.roots:
                cfg = archs.arm64.make_config(cfg.page_size, 64 - self.roots["t1sz"])
            return archs.arm64.Arm64(cfg)
        return archs.s390x.S390x(archs.s390x.config_of_asce(self.roots["asce"]))

    def __enter__(self) -> AddressSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the probe machine."""
        if self._machine is not None and hasattr(self._machine, "close"):
            self._machine.close()
        self._machine = None


def _typed(result: Any) -> Any:
    """x86-64: the machine reports a #GP as a ProbeError ("#GP (vector 13) instead of a page fault
    (error code 0x0)..."); it is the architecture's general-protection fault (SDM vol. 3A §6.15)."""
    from emu.machines.base import Fault as MFault
    from emu.machines.base import ProbeError

    if isinstance(result, ProbeError) and result.reason.startswith("#GP (vector 13) instead of a page fault"):
        code = result.reason.split("error code ", 1)[1].split(")", 1)[0]
        return MFault("general-protection", None, int(code, 16), 13)
    return result


def judge(ops: LinuxPgtable, manual: Translation | Fault, mmu: Any) -> str:
    """``agree`` / ``emulator-deviation: <names>`` / ``oracle-cannot-check: <why>`` /
    ``disagree: <what>`` for one address."""
    from emu.machines.base import Fault as MFault
    from emu.machines.base import ProbeError
    from emu.machines.base import Translation as MTranslation
    from emu.machines.deviations import explain_answers

    if isinstance(mmu, ProbeError):
        why = mmu.reason.removeprefix("oracle-cannot-check: ")
        return f"oracle-cannot-check: {why}"
    if isinstance(manual, Translation) and isinstance(mmu, MTranslation) and manual.pa == mmu.pa:
        return "agree"
    if isinstance(manual, Fault) and isinstance(mmu, MFault) and (manual.kind, manual.code) == (mmu.kind, mmu.code):
        return "agree"
    devs = explain_answers(ops, manual, mmu)
    if devs:
        return "emulator-deviation: " + ", ".join(d.name for d in devs)
    return f"disagree: manual {manual}, MMU {mmu_str(mmu)}"
