"""x86-64 MMU conformance: the kvm-unit-tests ``x86/access.c`` space, run on Unicorn's MMU and
compared with the SDM's model (:func:`archs.x86_64.translate`, :func:`archs.x86_64.accessed_dirty`).

A case is one flag word: PDE and PTE bits, the access (kind and privilege) and the CPU controls.
Each case gets its own PDE (its own 2-MByte VA region) and, unless the PDE maps a 2-MByte page,
its own page table whose entry 0 is the case's PTE; the PML4E and PDPTE above are fixed and
permissive (P, R/W, U/S, A).  Cases with the same CPU controls and access run together: the
machine probes one chunk of up to :data:`CHUNK_CASES` addresses per ``emu_start``
(``probe_many_raw``), then the PDE and PTE are read back for their A and D flags.

Per case the model predicts fault or not, the #PF error code (SDM vol. 3A §4.7) or the
physical address, and each entry's A/D flags afterwards (§4.8); the machine's answer is compared
field by field.  A mismatch is explained by :data:`KNOWN` (a registered emulator deviation,
``emu/machines/deviations.py``) or it is unexplained.

Two spaces (:class:`Space`): :data:`SPACE` ("access", the default) without protection keys, and
:data:`PKU` ("access-pku") with access.c's PKU dimensions added: CR4.PKE, PKRU AD1/WD1 and the
leaf's protection key 0 or 1 (SDM vol. 3A §4.6.2), on a CPU model with PKU in CPUID.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archs import x86_64 as X
from archs.translate import Fault, Translation
from emu.conform.digest import Outcomes, outcome_hash
from emu.machines.base import RAW_FAULT, RAW_OBSERVED, RAW_TAG, Access

ARCH = "x86_64"
CONFIG = "x86_64:4level"
CHUNK_CASES = 2048  #: cases per batch (one emu_start); each has its own 4-KByte page table

# -- the dimensions -------------------------------------------------------------------------------
_P, _W, _U, _A, _D, _PS, _NX = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 63
RSVD_TABLE = 1 << 51  # bits 51:MAXPHYADDR (40 here) are reserved in every format (§4.5.4)
RSVD_2M = 1 << 13  # bit 13 is reserved in a PDE that maps a 2-MByte page (Table 4-18)

#: The entry bits varied, by name; "RSVD" is one reserved bit (access.c's one-at-a-time rule):
#: bit 51 in a PTE and in a PDE that references a table, bit 13 in a 2-MByte PDE.
PDE_DIMS = ("P", "W", "U", "A", "D", "NX", "PSE", "RSVD")
PTE_DIMS = ("P", "W", "U", "A", "D", "NX", "RSVD")
ACCESSES = tuple(Access(kind, user) for user in (False, True) for kind in ("read", "write", "fetch"))
#: CPU controls: IA32_EFER.NXE, CR0.WP, CR4.SMEP each on and off; CR4.SMAP with EFLAGS.AC as
#: (off, -), (on, AC=0), (on, AC=1) -- AC changes nothing without SMAP (§4.6.1).
CPUS = tuple(dict(nxe=n, wp=w, smep=s, smap=m, ac=a) for n in (False, True) for w in (False, True)
             for s in (False, True) for m, a in ((False, False), (True, False), (True, True)))
#: The CPU model the machines run (Unicorn's default qemu64 has no SMAP in CPUID: CR4.SMAP can be
#: written but has no effect; Broadwell has SMEP and SMAP).
CPU_MODEL = "BROADWELL"
#: The PKU space's model: SMEP, SMAP and PKU in CPUID (QEMU 5.0 target/i386/cpu.c "Skylake-Server";
#: TCG_7_0_ECX_FEATURES keeps PKU, OSPKE follows CR4.PKE).  Broadwell has no PKU.
PKU_CPU_MODEL = "SKYLAKE_SERVER"
#: access.c's protection-key dimensions (AC_CPU_CR4_PKE, AC_PKU_AD, AC_PKU_WD, AC_PKU_PKEY): CR4.PKE,
#: AD and WD of key 1 in PKRU, and the leaf's key 1 (else 0); AD/WD only with PKE (access.c's rule:
#: "only test protection key faults if CR4.PKE=1").  Innermost in the CPU order.
PKU_SETTINGS = tuple(dict(pke=pke, ad=ad, wd=wd, pkey=key) for pke in (False, True)
                     for ad, wd in ((False, False), (False, True), (True, False), (True, True))
                     if pke or not (ad or wd) for key in (0, 1))
#: PKRU without CR4.PKE: every key but 0 has AD=WD=1 (keys must then change nothing, §4.6.2: "the
#: processor does not associate linear addresses with protection keys"); key 0 is the machine's own.
PKRU_NO_PKE = 0xFFFF_FFFC
#: With CR4.PKE: key 2 has AD=WD=1 -- it is the key a non-leaf PDE carries when the leaf has key 1,
#: and the key of an entry that references a table is ignored (Tables 4-15, 4-17, 4-19).
PKRU_KEY2 = 0x30


def pkru(cpu: dict[str, Any]) -> int:
    """The PKRU value of a PKU setting: AD1 = bit 2, WD1 = bit 3 (SDM vol. 3A §2.7: ADi = PKRU[2i],
    WDi = PKRU[2i+1]), plus :data:`PKRU_KEY2`; :data:`PKRU_NO_PKE` without CR4.PKE."""
    if not cpu["pke"]:
        return PKRU_NO_PKE
    return PKRU_KEY2 | (4 if cpu["ad"] else 0) | (8 if cpu["wd"] else 0)


def model_cpu(cpu: dict[str, Any]) -> dict[str, Any]:
    """The case's CPU controls as :func:`archs.x86_64.translate` facts (the key is the entry's)."""
    out = {k: cpu[k] for k in ("nxe", "wp", "smep", "smap", "ac")}
    if "pke" in cpu:
        out.update(pke=cpu["pke"], pkru=pkru(cpu))
    return out


def machine_controls(cpu: dict[str, Any]) -> dict[str, Any]:
    """The case's CPU controls as ``X86_64Machine.set_controls`` keywords."""
    out = {k: cpu[k] for k in ("wp", "smep", "smap", "ac")}
    if "pke" in cpu:
        out.update(pke=cpu["pke"], pkru=pkru(cpu))
    return out


IN_SPACE = {
    "PDE": "P, R/W, U/S, A, D, XD, PS, one reserved bit (51; 13 with PS=1)",
    "PTE": "P, R/W, U/S, A, D, XD, one reserved bit (51)",
    "access": "read, write, fetch, each at CPL 0 and CPL 3",
    "CPU": "IA32_EFER.NXE, CR0.WP, CR4.SMEP, CR4.SMAP with EFLAGS.AC (Unicorn CPU model Broadwell)",
}
OUT_OF_SPACE = {
    "CR4.SMAP with CPL-3 accesses": "SMAP restricts supervisor-mode accesses only; the machine's CPL-3 loop "
                                    "needs its tables as user pages, which it makes supervisor pages under SMAP",
    "PKU (CR4.PKE, PKRU, protection keys)": "a space of its own, access-pku (foliowalk conform --pku): ten "
                                            "times this one",
    "reserved bit 36 / several at once": "bit 36 is below this CPU's MAXPHYADDR (40): an address bit here; "
                                         "access.c's own rule tests one reserved bit at a time (same error code)",
    "PML4E/PDPTE bits, 1-GByte pages, 5-level": "fixed permissive upper entries, as access.c; the translation "
                                                "checks (foliowalk verify/fuzz) cover those levels",
}
LEGALITY = ("PS=1 in the PDE: the PTE bits are all 0 (no page table is read, SDM Table 4-18)",
            "EFLAGS.AC=1 only with CR4.SMAP=1 (AC only lifts SMAP, §4.6.1)",
            "CR4.SMAP=1 only with CPL-0 accesses (SMAP governs supervisor-mode accesses, §4.6.1)")
PKU_IN_SPACE = {
    **IN_SPACE,
    "CPU": "IA32_EFER.NXE, CR0.WP, CR4.SMEP, CR4.SMAP with EFLAGS.AC (Unicorn CPU model Skylake-Server)",
    "PKU": "CR4.PKE; PKRU AD1 and WD1 (key 2: AD=WD=1; without PKE: 0xfffffffc); the leaf's key 1 or 0 "
           "(a PDE that references a table carries key 2 when the leaf has key 1)",
}
PKU_OUT_OF_SPACE = {k: v for k, v in OUT_OF_SPACE.items() if not k.startswith("PKU")}
PKU_OUT_OF_SPACE["other keys, PKS (CR4.PKS, IA32_PKRS)"] = (
    "access.c varies key 1 only; PKS (supervisor keys) does not exist in Unicorn 2.1.4's QEMU 5.0 (no CR4.PKS)")
PKU_LEGALITY = (*LEGALITY, "PKRU AD1/WD1 only with CR4.PKE=1 (access.c: only test protection key faults "
                           "if CR4.PKE=1)")


def _bits(names: Sequence[str], word: int) -> dict[str, bool]:
    return {n: bool(word >> i & 1) for i, n in enumerate(names)}


def _entry_combos() -> list[tuple[int, int]]:
    """The legal (PDE flag word, PTE flag word) pairs, in a fixed order."""
    out = []
    for pde in range(1 << len(PDE_DIMS)):
        pse = _bits(PDE_DIMS, pde)["PSE"]
        for pte in range(1 << len(PTE_DIMS)):
            if pse and pte:
                continue
            out.append((pde, pte))
    return out


COMBOS = _entry_combos()


@dataclass(frozen=True, eq=False)
class Space:
    """One enumerated space: its CPU settings (outer) x accesses x :data:`COMBOS` (inner)."""

    name: str
    cpus: tuple[dict[str, Any], ...]
    cpu_model: str
    control_bits: int  #: CPU control bits varied before the legality rules (for ``raw_size``)
    in_space: dict[str, str]
    out_of_space: dict[str, str]
    legality: tuple[str, ...]

    @functools.cached_property
    def groups(self) -> tuple[tuple[int, int], ...]:
        """(CPU setting, access) pairs the legality rules keep; a group runs as one batch."""
        return tuple((c, a) for c, a in itertools.product(range(len(self.cpus)), range(len(ACCESSES)))
                     if not (self.cpus[c]["smap"] and ACCESSES[a].user))

    @property
    def size(self) -> int:
        return len(self.groups) * len(COMBOS)

    @property
    def raw_size(self) -> int:
        return 2**self.control_bits * len(ACCESSES) * (1 << len(PDE_DIMS)) * (1 << len(PTE_DIMS))


SPACE = Space("access", CPUS, CPU_MODEL, 5, IN_SPACE, OUT_OF_SPACE, LEGALITY)
#: access.c's space with protection keys: 4 more bits (PKE, AD, WD, key), 10 legal PKU settings.
PKU = Space("access-pku", tuple(dict(c, **k) for c in CPUS for k in PKU_SETTINGS), PKU_CPU_MODEL, 9,
            PKU_IN_SPACE, PKU_OUT_OF_SPACE, PKU_LEGALITY)
SPACES = {s.name: s for s in (SPACE, PKU)}
GROUPS = SPACE.groups
SIZE = SPACE.size
RAW_SIZE = SPACE.raw_size


@dataclass(frozen=True)
class Case:
    """One point of a space: ``index`` in ``range(space.size)``."""

    index: int
    space: Space = SPACE

    @property
    def cpu(self) -> dict[str, bool]:
        return self.space.cpus[self.space.groups[self.index // len(COMBOS)][0]]

    @property
    def access(self) -> Access:
        return ACCESSES[self.space.groups[self.index // len(COMBOS)][1]]

    @property
    def pde_flags(self) -> dict[str, bool]:
        return _bits(PDE_DIMS, COMBOS[self.index % len(COMBOS)][0])

    @property
    def pte_flags(self) -> dict[str, bool]:
        return _bits(PTE_DIMS, COMBOS[self.index % len(COMBOS)][1])

    def describe(self) -> str:
        def on(d: dict[str, bool]) -> str:
            return "|".join(k for k, v in d.items() if v) or "0"
        cpu = ",".join(f"{k}={int(v)}" for k, v in self.cpu.items())
        pte = "" if self.pde_flags["PSE"] else f" pte={on(self.pte_flags)}"
        return f"#{self.index} {self.access} {cpu} pde={on(self.pde_flags)}{pte}"


def entry_value(names: Sequence[str], word: int, target: int, *, big: bool, key: int = 0) -> int:
    """The raw entry for a flag word pointing at ``target`` (``big``: a 2-MByte PDE) with
    protection key ``key`` in bits 62:59 (Tables 4-18, 4-20; ignored in a table PDE, 4-19)."""
    f = _bits(names, word)
    val = target | key << 59
    for name, bit in (("P", _P), ("W", _W), ("U", _U), ("A", _A), ("D", _D), ("NX", _NX), ("PSE", _PS)):
        if f.get(name):
            val |= bit
    if f["RSVD"]:
        val |= RSVD_2M if big else RSVD_TABLE
    return val


# -- expectations ------------------------------------------------------------------------------
def _merge(a: str, b: str) -> str:
    if X.AD_SET in (a, b):
        return X.AD_SET
    return X.AD_OPEN if X.AD_OPEN in (a, b) else X.AD_KEEP


def expected(read: Callable[[int], int], va: int, access: Access, cr3: int, cpu: dict[str, bool]
             ) -> tuple[Translation | Fault, dict[str, tuple[str, str]]]:
    """The model's answer and ``{level: (A, D)}`` for the probe of ``access`` at ``va``.

    The machine probes a write as "load, then store the loaded value back" (emu.machines.x86_64):
    when the write faults but the load is allowed, the load's own A updates (§4.8) happen first,
    so the expectation merges the read's."""
    res = X.translate(CONFIG, read, va, access, cr3=cr3, cpu=cpu, decode=False)
    ad = {lv: (a, d) for lv, a, d in X.accessed_dirty(res, access)}
    if access.kind == "write" and isinstance(res, Fault):
        rd = X.translate(CONFIG, read, va, Access("read", access.user), cr3=cr3, cpu=cpu, decode=False)
        for lv, a, d in X.accessed_dirty(rd, "read"):
            old = ad.get(lv, (X.AD_KEEP, X.AD_KEEP))
            ad[lv] = (_merge(old[0], a), _merge(old[1], d))
    return res, ad


def _flag_ok(want: str, before: bool, after: bool) -> bool:
    return want == X.AD_OPEN or (after if want == X.AD_SET else after == before)


# -- results ------------------------------------------------------------------------------------
@dataclass
class Mismatch:
    case: int
    description: str
    field: str  # "outcome", "code", "pa", "PD.A", "PT.D", ...
    model: str
    machine: str
    explained_by: str | None = None  # a deviation's name, or None: unexplained

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "description": self.description, "field": self.field,
                "model": self.model, "machine": self.machine,
                "class": "emulator-deviation" if self.explained_by else "unexplained",
                "deviation": self.explained_by}


@dataclass
class Report:
    arch: str = ARCH
    size: int = SIZE
    space: str = SPACE.name
    run: int = 0
    agree: int = 0
    faults: int = 0  # cases the model says fault (of those run)
    seconds: float = 0.0
    interrupted: bool = False
    mismatches: list[Mismatch] = field(default_factory=list)
    #: every case's outcome hash (emu.conform.digest): the campaign's digest
    outcomes: Outcomes = field(default_factory=Outcomes)
    #: where the cases ran: None (this process), "N local worker processes", "dask ADDRESS (N workers)"
    ran_on: str | None = None

    def digest(self) -> str | None:
        """The outcomes digest (emu.conform.digest), or None when the space's runner does not
        record every case's outcome."""
        return self.outcomes.digest() if len(self.outcomes) == self.run else None

    @property
    def unexplained(self) -> list[Mismatch]:
        return [m for m in self.mismatches if m.explained_by is None]

    def by_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.mismatches:
            key = m.explained_by or "unexplained"
            out[key] = out.get(key, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "space": space_json(SPACES[self.space]), "run": self.run, "agree": self.agree,
                "model_faults": self.faults, "seconds": round(self.seconds, 3),
                "cases_per_second": round(self.run / self.seconds, 1) if self.seconds else None,
                "interrupted": self.interrupted, "ran_on": self.ran_on, "digest": self.digest(),
                "mismatches_by_class": self.by_class(),
                "mismatches": [m.to_json() for m in self.mismatches]}


def new_report(space: Space = SPACE) -> Report:
    return Report(size=space.size, space=space.name)


def space_json(space: Space = SPACE) -> dict[str, Any]:
    return {"name": space.name, "size": space.size, "before_legality_filter": space.raw_size,
            "in": space.in_space, "out": space.out_of_space, "legality": list(space.legality)}


#: Mismatches a registered deviation explains: (deviation name, does it explain this one?).
KNOWN: list[tuple[str, Callable[[Case, Mismatch], bool]]] = []


# -- the runner ------------------------------------------------------------------------------------
def run_chunks(cases: Iterable[int], group_of: Callable[[int], int], size: int,
               chunk: Callable[[int, list[int], Any], None], report: Any,
               progress: Callable[[Any], None] | None = None) -> Any:
    """Run ``cases`` group by group (``group_of(case)``: the CPU controls and access one machine
    set-up serves), at most ``size`` cases per ``chunk(group, cases, report)`` (one ``emu_start``),
    calling ``progress(report)`` after each; Ctrl-C keeps the chunks that finished
    (``report.interrupted``).  Every architecture's ``Runner.run``."""
    by_group: dict[int, list[int]] = {}
    for i in cases:
        by_group.setdefault(group_of(i), []).append(i)
    t0 = time.perf_counter()
    try:
        for g in sorted(by_group):
            idx = by_group[g]
            for s in range(0, len(idx), size):
                chunk(g, idx[s:s + size], report)
                report.seconds = time.perf_counter() - t0
                if progress:
                    progress(report)
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - t0
    return report


class Runner:
    """Runs cases of ``space`` on two Unicorn machines (IA32_EFER.NXE off and on) sharing nothing."""

    def __init__(self, space: Space = SPACE) -> None:
        from emu.machines.ram import FrameAllocator, PhysicalMemory
        from emu.machines.x86_64 import X86_64Machine

        self.space = space
        self._machines: dict[bool, Any] = {}
        self._make = (PhysicalMemory, FrameAllocator, X86_64Machine)

    def _machine(self, nxe: bool) -> Any:
        m = self._machines.get(nxe)
        if m is not None:
            return m
        PhysicalMemory, FrameAllocator, X86_64Machine = self._make
        ram = PhysicalMemory(32 << 20)
        alloc = FrameAllocator(ram)
        from unicorn import x86_const

        machine = X86_64Machine(ram, alloc, nxe=nxe, cpu_model=getattr(x86_const, f"UC_CPU_X86_{self.space.cpu_model}"))
        big = alloc.alloc(2 << 20, 2 << 20)  # the 2-MByte page every PS=1 PDE maps
        ram.write(big, bytes(4096))
        ram.tag(big, 4096)  # its first page is every 4-KByte page's frame, too
        def frame() -> int:
            pa = alloc.alloc(4096)
            ram.write(pa, bytes(4096))
            return pa
        root, pdpt = frame(), frame()
        pds = [frame() for _ in range(-(-CHUNK_CASES // 512))]
        pts = [frame() for _ in range(CHUNK_CASES)]
        ram.write_u64(root, pdpt | _P | _W | _U | _A)
        for j, pd in enumerate(pds):
            ram.write_u64(pdpt + 8 * j, pd | _P | _W | _U | _A)
        machine.set_root(root)
        m = self._machines[nxe] = (machine, ram, root, pds, pts, big)
        return m

    def tables(self, nxe: bool) -> tuple[int, int, int, int]:
        """``(root, pde_pa, pte_pa, frame)`` of the first case slot on the machine for ``nxe``:
        VA 0 goes through the PDE at ``pde_pa``; a PDE pointing at ``pte_pa``'s table reaches
        the PTE there; ``frame`` is the 2-MByte-aligned tagged frame leaves may map."""
        _m, _ram, root, pds, pts, big = self._machine(nxe)
        return root, pds[0], pts[0], big

    def probe_one(self, pde: int, pte: int, access: Access, cpu: dict[str, bool]) -> tuple[Any, int, int]:
        """Write ``pde`` and ``pte`` (raw values) into the first case slot, probe VA 0 with
        ``access`` under ``cpu`` (``nxe``, ``wp``, ``smep``) and return the machine's result
        (``emu.machines.base`` Translation/Fault/ProbeError) with the PDE and PTE afterwards;
        ``pke`` and ``pkru`` too on a :data:`PKU` runner."""
        machine, ram, _root, pds, pts, _big = self._machine(bool(cpu.get("nxe", True)))
        pku = {k: cpu[k] for k in ("pke", "pkru") if k in cpu}
        machine.set_controls(wp=bool(cpu.get("wp", True)), smep=bool(cpu.get("smep", False)),
                             smap=bool(cpu.get("smap", False)), ac=bool(cpu.get("ac", False)), **pku)
        ram.write_u64(pds[0], pde)
        ram.write_u64(pts[0], pte)
        machine.flush_tlb()
        res = machine.probe(0, access)
        return res, ram.read_u64(pds[0]), ram.read_u64(pts[0])

    def close(self) -> None:
        for m in self._machines.values():
            m[0].close()
        self._machines.clear()

    def run(self, cases: Iterable[int], report: Report, progress: Callable[[Report], None] | None = None) -> Report:
        def group_of(i: int) -> int:
            if not 0 <= i < self.space.size:
                raise ValueError(f"case {i} is not in the {self.space.name} space (0..{self.space.size - 1})")
            return i // len(COMBOS)

        return run_chunks(cases, group_of, CHUNK_CASES, self._chunk, report, progress)

    def _chunk(self, group: int, idx: list[int], report: Report) -> None:
        space = self.space
        cpu = space.cpus[space.groups[group][0]]
        access = ACCESSES[space.groups[group][1]]
        mcpu = model_cpu(cpu)
        key = 1 if cpu.get("pkey") else 0  # the leaf's; a table PDE then carries key 2 (ignored)
        machine, ram, root, pds, pts, big = self._machine(cpu["nxe"])
        machine.set_controls(**machine_controls(cpu))
        n = len(idx)
        vas = np.zeros(n, dtype=np.uint64)
        slots = []
        for k, i in enumerate(idx):
            pde_w, pte_w = COMBOS[i % len(COMBOS)]
            is_big = bool(_bits(PDE_DIMS, pde_w)["PSE"])
            pde_pa = pds[k // 512] + 8 * (k % 512)
            pte_pa = pts[k]
            pde = entry_value(PDE_DIMS, pde_w, big if is_big else pte_pa, big=is_big, key=key if is_big else 2 * key)
            ram.write_u64(pde_pa, pde)
            pte = 0 if is_big else entry_value(PTE_DIMS, pte_w, big, big=False, key=key)
            ram.write_u64(pte_pa, pte)
            vas[k] = (k // 512) << 30 | (k % 512) << 21
            slots.append((pde_pa, pde, pte_pa, pte, is_big))
        for k in range(n, len(pds) * 512):  # a short chunk: the rest of the PDs not present
            ram.write_u64(pds[k // 512] + 8 * (k % 512), 0)
        models = [expected(ram.read_u64, int(vas[k]), access, root, mcpu) for k in range(n)]
        machine.flush_tlb()
        raw, errors = machine.probe_many_raw(vas, access)
        hashes: list[int] = []
        for k, i in enumerate(idx):
            pde_pa, pde, pte_pa, pte, is_big = slots[k]
            res, ad = models[k]
            case = Case(i, space)
            found: list[Mismatch] = []
            miss = functools.partial(_miss, found, i, case.describe())
            st = int(raw.status[k])
            answer = "none"
            if st == RAW_FAULT:
                code = int(raw.code[k])
                answer = f"pf {code:#x}"
                if isinstance(res, Translation):
                    miss("outcome", f"translation pa {res.pa:#x}", f"#PF code {code:#x}")
                elif res.code != code:
                    miss("code", f"#PF code {res.code:#x}", f"#PF code {code:#x}")
            elif st in (RAW_TAG, RAW_OBSERVED):
                pa = int(raw.pa[k])
                answer = f"pa {pa:#x}"
                if isinstance(res, Fault):
                    miss("outcome", f"#PF code {res.code:#x}", f"translation pa {pa:#x}")
                elif res.pa != pa:
                    miss("pa", f"{res.pa:#x}", f"{pa:#x}")
            else:
                err = errors.get(k)
                miss("outcome", str(res), f"no answer: {err.reason if err else 'none recorded'}")
            report.faults += isinstance(res, Fault)
            after = {"PD": ram.read_u64(pde_pa), "PT": ram.read_u64(pte_pa)}
            before = {"PD": pde, "PT": pte}
            for lv in ("PD", "PT"):
                if lv not in ad:
                    continue
                for name, bit, want in (("A", _A, ad[lv][0]), ("D", _D, ad[lv][1])):
                    b, a = bool(before[lv] & bit), bool(after[lv] & bit)
                    if not _flag_ok(want, b, a):
                        miss(f"{lv}.{name}", f"{want} (was {int(b)})", f"{int(a)}")
            for m in found:
                for name, pred in KNOWN:
                    if pred(case, m):
                        m.explained_by = name
                        break
            report.mismatches.extend(found)
            report.agree += not found
            report.run += 1
            # the canonical outcome (emu.conform.digest): nothing that depends on the case's slot
            # in its chunk (entry addresses), only the answer, the A/D flags left and the verdicts
            flags = " ".join(f"{lv}.A={int(bool(after[lv] & _A))} {lv}.D={int(bool(after[lv] & _D))}"
                             for lv in ("PD", "PT"))
            verdict = ",".join(f"{m.field}:{m.explained_by or 'unexplained'}" for m in found) or "agree"
            hashes.append(outcome_hash(f"{answer}; {flags}; {verdict}"))
        report.outcomes.add(idx, hashes)


def _miss(found: list[Mismatch], index: int, description: str, what: str, model: str, got: str) -> None:
    found.append(Mismatch(index, description, what, model, got))


def select(limit: int | None = None, sample: int | None = None, seed: int = 0, space: Space = SPACE) -> list[int]:
    """Case indices of ``space``: all, the first ``limit``, or ``sample`` drawn at random (``seed``)."""
    size = space.size
    if sample is not None:
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(size, size=min(sample, size), replace=False).tolist())
    return list(range(size if limit is None else min(limit, size)))


def key_cases(space: Space = PKU) -> list[int]:
    """The cases of ``space`` where the leaf's protection key can decide (SDM vol. 3A §4.6.2),
    chosen by the space's dimensions alone: CR4.PKE=1, leaf key 1 with AD1 or WD1 set, a data
    access, and a walk that reaches a user-mode leaf (P=1, U/S=1, no reserved bit -- XD counts
    as one without NXE -- in the PDE and, unless PS=1, the PTE): 33,024 cases, 1 in 480."""
    def ok(names: Sequence[str], word: int, nxe: bool) -> bool:
        f = _bits(names, word)
        return f["P"] and f["U"] and not f["RSVD"] and (nxe or not f["NX"])

    combos = {nxe: [k for k, (pde, pte) in enumerate(COMBOS) if ok(PDE_DIMS, pde, nxe)
                    and (_bits(PDE_DIMS, pde)["PSE"] or ok(PTE_DIMS, pte, nxe))] for nxe in (False, True)}
    out: list[int] = []
    for g, (c, a) in enumerate(space.groups):
        cpu = space.cpus[c]
        if cpu.get("pke") and cpu["pkey"] and (cpu["ad"] or cpu["wd"]) and ACCESSES[a].kind != "fetch":
            out.extend(g * len(COMBOS) + k for k in combos[cpu["nxe"]])
    return out


# -- local worker processes ----------------------------------------------------------------------
TASK_CASES = 4 * CHUNK_CASES  #: cases per task handed to a worker process (within one group)
_WORKERS: dict[str, Runner] = {}


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops


def _worker_run(cases: list[int], space: str = SPACE.name) -> Report:
    if space not in _WORKERS:  # each process keeps its own machines (engines cannot be pickled)
        _WORKERS[space] = Runner(SPACES[space])
    return _WORKERS[space].run(cases, new_report(SPACES[space]))


def tasks(cases: Iterable[int]) -> list[list[int]]:
    """``cases`` cut into tasks of at most :data:`TASK_CASES` cases of one control/access group
    each, in case order (so the merged report does not depend on the number of workers)."""
    by_group: dict[int, list[int]] = {}
    for i in cases:
        by_group.setdefault(i // len(COMBOS), []).append(i)
    return [idx[s:s + TASK_CASES] for g in sorted(by_group) for idx in [by_group[g]]
            for s in range(0, len(idx), TASK_CASES)]


def merge(report: Report, part: Report) -> None:
    report.run += part.run
    report.agree += part.agree
    report.faults += part.faults
    report.mismatches.extend(part.mismatches)
    report.outcomes.extend(part.outcomes)


def run_workers(cases: Sequence[int], workers: int, report: Report,
                progress: Callable[[Report], None] | None = None, space: Space = SPACE) -> Report:
    """Run ``cases`` in ``workers`` worker processes (spawned: no Unicorn engine crosses a fork);
    Ctrl-C stops handing out tasks and keeps the reports that came back."""
    return run_pool(tasks(cases), functools.partial(_worker_run, space=space.name), workers, report, progress)


def run_pool(work: list[list[int]], run: Callable[[list[int]], Report], workers: int, report: Report,
             progress: Callable[[Report], None] | None = None) -> Report:
    """Hand the tasks ``work`` to ``run`` (a module-level function, so a spawned process can
    import it) in ``workers`` processes and merge the reports into ``report``, sorted by case."""
    import concurrent.futures as cf
    import multiprocessing

    t0 = time.perf_counter()
    report.ran_on = f"{workers} local worker processes"
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_worker_init)
    futures: list[cf.Future[Report]] = []
    try:
        futures = [pool.submit(run, t) for t in work]
        for fut in cf.as_completed(futures):
            merge(report, fut.result())
            report.seconds = time.perf_counter() - t0
            if progress:
                progress(report)
    except KeyboardInterrupt:
        report.interrupted = True
        for f in futures:
            f.cancel()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    report.mismatches.sort(key=lambda m: (m.case, m.field))
    report.seconds = time.perf_counter() - t0
    return report
