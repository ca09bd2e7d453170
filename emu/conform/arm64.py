"""arm64 MMU conformance: stage-1 access permissions (Arm ARM DDI 0487 D8.4 "Memory access
control"), the Access flag (D8 "The Access flag") and the fault status codes, in the manner of
kvm-unit-tests ``x86/access.c``, run on Unicorn's MMU and compared with the manual's model
(:func:`archs.arm64.translate`, :func:`archs.arm64.access_flag`).

A case is one flag word: the leaf descriptor's bits (valid, AP[2:1], UXN, PXN, AF), the table
descriptor's bits at the level above it (valid, APTable[1:0], UXNTable, PXNTable), whether the
leaf is a 4KB page (level 3, the table at level 2) or a 2MB block (level 2, the table at level
1), the access (EL1/EL0 read, write, fetch; EL1 read/write with and without the PAN check) and
the CPU controls (PSTATE.PAN, SCTLR_EL1.WXN, TCR_EL1.HA, TCR_EL1.HPD0).  4KB granule, 48-bit VAs, TTBR0_EL1.

Each case gets its own level-1 entry (its own 1GB VA region) and its own level-2 and level-3
tables; level 0 and the fixed level-1 entries above a page are valid, permissive tables.  Data
accesses are asked with AT (``AT S1E1R``/``S1E1W``, ``S1E0R``/``S1E0W``, and ``S1E1RP``/
``S1E1WP`` of FEAT_PAN2, which honour PSTATE.PAN) in guest loops of up to :data:`CHUNK_CASES`
addresses per ``emu_start``, reading PAR_EL1 (PA or FST); an instruction fetch is a real fetch at
EL1/EL0 (an ERET to the first address, then the hooks move the PC from target to target: one
``emu_start`` per chunk too; an abort's ISS.IFSC is the FST) -- AT has no execute check (Arm ARM
C5.5).  Real EL1 loads and stores (LDR/STR, and LDTR/STTR, which EL0's permissions govern) run
the same way: the CPU ERETs to a stub ``<insn> X2, [X1]; BRK #0`` mapped at :data:`STUB_VA` and
the hooks move X1 from address to address (a load's PA is the tag word it loaded; a store
writes the frame's own tag word back).  After the access the two descriptors are read back: the
model says which may have changed (the Access flag) and which must not.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from archs import arm64 as A
from archs.translate import Fault, Translation
from emu.conform import x86_64 as _x86
from emu.conform.digest import outcome_hash
from emu.machines.base import RAW_FAULT, RAW_OBSERVED, RAW_TAG, Access

ARCH = "arm64"
CONFIG = "arm64:4k:48"
CHUNK_CASES = 2048  #: cases per chunk; each has its own 1GB region and level-2/level-3 tables
VA_OFFSET = 0x100  #: the byte probed in each case's page (never VA 0: Unicorn stops a run there)
#: where the machine's code page (the access stubs of probe_access_many) is mapped: level-0 entry
#: 511, away from the cases' entries 0..3
STUB_VA = 511 << 39

# -- descriptor bits (Arm ARM D8.3; the masks come from archs.arm64's formats) --------------------
_V, _T = A.PTE_VALID, A.PTE_TABLE_BIT
_AP1, _AP2, _AF, _PXN, _UXN = A.PTE_USER, A.PTE_RDONLY, A.PTE_AF, A.PTE_PXN, A.PTE_UXN
_APT0, _APT1 = 1 << 61, 1 << 62  # APTable[0] (no EL0 access below), APTable[1] (read-only below)
assert _APT0 | _APT1 == A.S1_TABLE_AP
_UXNT, _PXNT = A.PXD_TABLE_UXN, A.PXD_TABLE_PXN
#: MAIR index 0 (Normal WB, MAIR_EL1 = 0xff) and inner shareable: as Linux's leaves (PTE_SHARED).
_LEAF_ATTRS = A.PTE_SHARED

TABLE_DIMS = ("V", "APTable0", "APTable1", "UXNTable", "PXNTable")
LEAF_DIMS = ("V", "AP1", "AP2", "UXN", "PXN", "AF")
_TABLE_BITS = {"V": _V | _T, "APTable0": _APT0, "APTable1": _APT1, "UXNTable": _UXNT, "PXNTable": _PXNT}
_LEAF_BITS = {"V": _V, "AP1": _AP1, "AP2": _AP2, "UXN": _UXN, "PXN": _PXN, "AF": _AF}
LEAVES = ("page", "block")  #: a 4KB page at level 3 (table at level 2), a 2MB block at level 2


@dataclass(frozen=True)
class Probe:
    """One access kind of the space: ``access`` as the model checks it (kind; EL0 permissions
    when ``user``), ``at``: the AT instruction that asks it, or ``insn``: the load/store run at
    EL1 (LDTR/STTR are checked with EL0's permissions, C6 "LDTR"/"STTR"), neither: a real
    instruction fetch; ``pan_checked``: whether PSTATE.PAN applies to it (EL1 loads/stores and
    AT S1E1RP/WP; not AT S1E1R/W -- C5.5 --, not LDTR/STTR, not instruction fetches -- D8.4
    "Privileged access never")."""

    name: str
    access: Access
    at: str | None
    pan_checked: bool
    insn: str | None = None

    def __str__(self) -> str:
        return self.name


PROBES = (
    Probe("EL1 read (AT S1E1R)", Access("read", False), "S1E1R", False),
    Probe("EL1 write (AT S1E1W)", Access("write", False), "S1E1W", False),
    Probe("EL1 read (AT S1E1RP)", Access("read", False), "S1E1RP", True),
    Probe("EL1 write (AT S1E1WP)", Access("write", False), "S1E1WP", True),
    Probe("EL1 fetch", Access("fetch", False), None, False),
    Probe("EL0 read (AT S1E0R)", Access("read", True), "S1E0R", False),
    Probe("EL0 write (AT S1E0W)", Access("write", True), "S1E0W", False),
    Probe("EL0 fetch", Access("fetch", True), None, False),
    Probe("EL1 load (LDR)", Access("read", False), None, True, "LDR"),
    Probe("EL1 store (STR)", Access("write", False), None, True, "STR"),
    Probe("EL1 unprivileged load (LDTR)", Access("read", True), None, False, "LDTR"),
    Probe("EL1 unprivileged store (STTR)", Access("write", True), None, False, "STTR"),
)
#: CPU controls: PSTATE.PAN, SCTLR_EL1.WXN, TCR_EL1.HA (RES0 without FEAT_HAFDBS: the model is
#: told whether the CPU under test implements it, from its ID_AA64MMFR1_EL1.HAFDBS), TCR_EL1.HPD0
#: (FEAT_HPDS, ID_AA64MMFR1_EL1.HPDS = 1 on the CPU model: the table controls ignored).
CPUS = tuple(dict(pan=p, wxn=w, ha=h, hpd=d) for p in (False, True) for w in (False, True)
             for h in (False, True) for d in (False, True))
#: The CPU model the machines run: Unicorn's "max" (ID_AA64MMFR1_EL1.PAN = 2: FEAT_PAN and
#: FEAT_PAN2's AT S1E1RP/WP; HAFDBS = 0).  The default Cortex-A72 (v8.0) has no PAN.
CPU_MODEL = "MAX"

IN_SPACE = {
    "leaf": "V, AP[2:1], UXN, PXN, AF; a 4KB page (level 3) or a 2MB block (level 2)",
    "table above the leaf": "V, APTable[1:0], UXNTable, PXNTable (level 2 above a page, level 1 above a block)",
    "access": "EL1 read/write (AT S1E1R/W, and AT S1E1RP/WP which honour PAN), EL1 fetch, "
              "EL0 read/write (AT S1E0R/W), EL0 fetch (real fetches), real EL1 LDR/STR and "
              "LDTR/STTR (unprivileged)",
    "CPU": "PSTATE.PAN, SCTLR_EL1.WXN, TCR_EL1.HA, TCR_EL1.HPD0 (Unicorn CPU model max: FEAT_PAN2, "
           "FEAT_HPDS, no FEAT_HAFDBS)",
}
OUT_OF_SPACE = {
    "real EL0 loads and stores": "asked with AT S1E0R/W; LDTR/STTR at EL1 run the same EL0 check as "
                                 "real instructions",
    "PSTATE.UAO (LDTR/STTR checked as EL1)": "UAO = 0",
    "DBM / TCR_EL1.HD (dirty state), FEAT_HAFT, EPAN, PIE/POE": "not implemented by the CPU model (no FEAT_HAFDBS) "
                                                                 "and not in the model",
    "nG, Contiguous, AttrIndx, SH, NSTable, levels 0/1 entries above the varied table": "no effect on access "
                                                                 "rights; fixed permissive upper tables, as access.c",
}
LEGALITY = ("table descriptor invalid (V=0): the leaf bits are all 0 (the leaf is never read, D8.3)",)


def _bits(names: Sequence[str], word: int) -> dict[str, bool]:
    return {n: bool(word >> i & 1) for i, n in enumerate(names)}


def _entry_combos() -> list[tuple[int, int, int]]:
    """The legal (leaf kind, table flag word, leaf flag word) triples, in a fixed order."""
    out = []
    for leaf in range(len(LEAVES)):
        for table in range(1 << len(TABLE_DIMS)):
            valid = _bits(TABLE_DIMS, table)["V"]
            for word in range(1 << len(LEAF_DIMS)):
                if not valid and word:
                    continue
                out.append((leaf, table, word))
    return out


COMBOS = _entry_combos()
GROUPS = tuple(itertools.product(range(len(CPUS)), range(len(PROBES))))
SIZE = len(GROUPS) * len(COMBOS)
RAW_SIZE = len(CPUS) * len(PROBES) * len(LEAVES) * (1 << len(TABLE_DIMS)) * (1 << len(LEAF_DIMS))


@dataclass(frozen=True)
class Case:
    """One point of the space: ``index`` in ``range(SIZE)``."""

    index: int

    @property
    def cpu(self) -> dict[str, bool]:
        return CPUS[GROUPS[self.index // len(COMBOS)][0]]

    @property
    def probe(self) -> Probe:
        return PROBES[GROUPS[self.index // len(COMBOS)][1]]

    @property
    def leaf(self) -> str:
        return LEAVES[COMBOS[self.index % len(COMBOS)][0]]

    @property
    def table_flags(self) -> dict[str, bool]:
        return _bits(TABLE_DIMS, COMBOS[self.index % len(COMBOS)][1])

    @property
    def leaf_flags(self) -> dict[str, bool]:
        return _bits(LEAF_DIMS, COMBOS[self.index % len(COMBOS)][2])

    def describe(self) -> str:
        def on(d: dict[str, bool]) -> str:
            return "|".join(k for k, v in d.items() if v) or "0"
        cpu = ",".join(f"{k}={int(v)}" for k, v in self.cpu.items())
        return f"#{self.index} {self.probe} {cpu} {self.leaf} table={on(self.table_flags)} leaf={on(self.leaf_flags)}"


def table_value(word: int, target: int) -> int:
    """The raw table descriptor for a flag word pointing at the table ``target`` (D8.3: bits[1:0]
    = 0b11; V=0 gives 0b00, an invalid descriptor that still holds the address)."""
    f = _bits(TABLE_DIMS, word)
    val = target | (_T if f["V"] else 0)
    for name, bit in _TABLE_BITS.items():
        if f[name]:
            val |= bit
    return val


def leaf_value(word: int, target: int, *, block: bool) -> int:
    """The raw block (bits[1:0] = 0b01) or page (0b11) descriptor for a flag word, output address
    ``target`` (D8.3)."""
    f = _bits(LEAF_DIMS, word)
    val = target | _LEAF_ATTRS | (0 if block else _T)
    for name, bit in _LEAF_BITS.items():
        if f[name]:
            val |= bit
    return val


# -- expectations ------------------------------------------------------------------------------
def model_cpu(cpu: dict[str, bool], probe: Probe, hafdbs: bool) -> dict[str, object]:
    """The facts :func:`archs.arm64.translate` is given for ``probe`` under ``cpu``: PAN only
    where it applies to the probe (:attr:`Probe.pan_checked`; for EL0 and fetches the model
    ignores it anyway), and whether the CPU implements FEAT_HAFDBS."""
    return {"pan": cpu["pan"] and probe.pan_checked, "wxn": cpu["wxn"], "ha": cpu["ha"], "hafdbs": hafdbs,
            "hpd0": cpu["hpd"]}


def expected(read: Callable[[int], int], va: int, probe: Probe, ttbr0: int, cpu: dict[str, bool],
             hafdbs: bool) -> tuple[Translation | Fault, dict[str, str]]:
    """The model's answer and ``{level: AF after}`` for ``probe`` at ``va``."""
    facts = model_cpu(cpu, probe, hafdbs)
    res = A.translate(CONFIG, read, va, probe.access, ttbr0=ttbr0, cpu=facts, decode=False)
    return res, dict(A.access_flag(res, facts))


def _value_ok(want: str, before: int, after: int) -> bool:
    """A descriptor after the access against the model's AF verdict: every bit but AF unchanged;
    AF set, unchanged or either."""
    if after & ~_AF != before & ~_AF:
        return False
    if want == A.AF_OPEN:
        return True
    return bool(after & _AF) == (True if want == A.AF_SET else bool(before & _AF))


# -- results ------------------------------------------------------------------------------------
Mismatch = _x86.Mismatch


def space_json() -> dict[str, Any]:
    return {"name": "access", "size": SIZE, "before_legality_filter": RAW_SIZE, "in": IN_SPACE, "out": OUT_OF_SPACE,
            "legality": list(LEGALITY)}


@dataclass
class Report(_x86.Report):
    arch: str = ARCH
    size: int = SIZE

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["space"] = space_json()
        return out


#: Mismatches a registered deviation explains: (deviation name, does it explain this one?).
KNOWN: list[tuple[str, Callable[[Case, Mismatch], bool]]] = []


# -- the runner ------------------------------------------------------------------------------------
def new_report() -> Report:
    return Report()


class Runner:
    """Runs cases on one Unicorn arm64 machine (CPU model :data:`CPU_MODEL`)."""

    def __init__(self) -> None:
        self._m: Any = None

    def _machine(self) -> Any:
        if self._m is not None:
            return self._m
        from unicorn import arm64_const

        from emu.machines.arm64 import Arm64Machine
        from emu.machines.ram import FrameAllocator, PhysicalMemory

        ram = PhysicalMemory(48 << 20)
        alloc = FrameAllocator(ram)
        machine = Arm64Machine(ram, alloc, cpu_model=getattr(arm64_const, f"UC_CPU_ARM64_{CPU_MODEL}"))
        block = alloc.alloc(2 << 20, 2 << 20)  # the 2MB block every block leaf maps
        ram.write(block, bytes(4096))
        ram.tag(block, 4096)  # its first page is every page leaf's frame, too

        def frame() -> int:
            pa = alloc.alloc(4096, 4096)
            ram.write(pa, bytes(4096))
            return pa
        l0 = frame()
        stub_tables = [frame() for _ in range(3)]  # L0[511] -> the machine's code page (access stubs)
        for upper, lower in zip([l0 + 8 * 511, *stub_tables[:-1]], stub_tables, strict=True):
            ram.write_u64(upper, lower | _V | _T)
        # AP[2:1] = 11: read-only at both ELs, so executable at EL1 (not EL0-writable) and at EL0
        ram.write_u64(stub_tables[-1], machine.code_pa | _V | _T | _AF | _AP1 | _AP2 | _LEAF_ATTRS)
        l1s = [frame() for _ in range(-(-CHUNK_CASES // 512))]
        mids = [frame() for _ in range(CHUNK_CASES)]  # each case's level-2 table
        lows = [frame() for _ in range(CHUNK_CASES)]  # each case's level-3 table
        for j, l1 in enumerate(l1s):
            ram.write_u64(l0 + 8 * j, l1 | _V | _T)
        machine.set_roots(l0, None)
        hafdbs = bool(machine.id_aa64mmfr1() & 0xF)  # ID_AA64MMFR1_EL1.HAFDBS [3:0]
        regs = machine.registers()
        self._m = (machine, ram, l0, l1s, mids, lows, block, hafdbs, regs["SCTLR_EL1"], regs["TCR_EL1"])
        return self._m

    @property
    def hafdbs(self) -> bool:
        """Whether the CPU under test implements FEAT_HAFDBS (ID_AA64MMFR1_EL1.HAFDBS != 0)."""
        return bool(self._machine()[7])

    def set_controls(self, cpu: dict[str, bool], probe: Probe) -> None:
        """PSTATE.PAN (with AT S1E1RP/WP for ``probe`` if it asks them), SCTLR_EL1.WXN,
        TCR_EL1.HA and TCR_EL1.HPD0."""
        from emu.machines.arm64 import SCTLR_WXN, TCR_HA, TCR_HPD0

        machine, *_rest, sctlr, tcr = self._machine()
        machine.set_pan(cpu["pan"], at_pan=probe.at in ("S1E1RP", "S1E1WP"))
        machine.set_sysreg("SCTLR_EL1", sctlr | SCTLR_WXN if cpu["wxn"] else sctlr & ~SCTLR_WXN)
        machine.set_sysreg("TCR_EL1", tcr & ~(TCR_HA | TCR_HPD0) | (TCR_HA if cpu["ha"] else 0)
                           | (TCR_HPD0 if cpu["hpd"] else 0))

    def tables(self) -> tuple[int, int, int, int, int]:
        """``(ttbr0, l1_pa, mid_pa, low_pa, frame)`` of the first case slot: VA ``VA_OFFSET``
        goes through the level-1 entry at ``l1_pa``, entry 0 of the level-2 table ``mid_pa`` and
        entry 0 of the level-3 table ``low_pa``; ``frame`` is the 2MB-aligned tagged frame."""
        _m, _ram, l0, l1s, mids, lows, block, *_rest = self._machine()
        return l0, l1s[0], mids[0], lows[0], block

    def probe_one(self, l1: int, l2: int, l3: int, probe: Probe, cpu: dict[str, bool]) -> tuple[Any, list[int]]:
        """Write raw descriptors ``l1``, ``l2``, ``l3`` into the first case slot's level-1 entry
        and entries 0 of its level-2 and level-3 tables, ask ``probe`` at VA :data:`VA_OFFSET`
        under ``cpu`` and return the machine's result (``emu.machines.base``
        Translation/Fault/ProbeError) with the three descriptors afterwards."""
        machine, ram, _l0, l1s, mids, lows, *_rest = self._machine()
        self.set_controls(cpu, probe)
        for pa, val in ((l1s[0], l1), (mids[0], l2), (lows[0], l3)):
            ram.write_u64(pa, val)
        machine.flush_tlb()
        if probe.insn is not None:
            block = self._machine()[6]
            res = machine.probe_access_many([VA_OFFSET], probe.insn, stub_va=STUB_VA,
                                            store_value=ram.read_u64(block + VA_OFFSET))[0]
        else:
            res = machine.probe(VA_OFFSET, probe.access)
        return res, [ram.read_u64(pa) for pa in (l1s[0], mids[0], lows[0])]

    def close(self) -> None:
        if self._m is not None:
            self._m[0].close()
        self._m = None

    def run(self, cases: Iterable[int], report: Report, progress: Callable[[Report], None] | None = None) -> Report:
        return _x86.run_chunks(cases, lambda i: i // len(COMBOS), CHUNK_CASES, self._chunk, report, progress)

    def _chunk(self, group: int, idx: list[int], report: Report) -> None:
        cpu = CPUS[GROUPS[group][0]]
        probe = PROBES[GROUPS[group][1]]
        machine, ram, l0, l1s, mids, lows, block, hafdbs, _sctlr, _tcr = self._machine()
        self.set_controls(cpu, probe)
        n = len(idx)
        vas = np.zeros(n, dtype=np.uint64)
        slots = []
        for k, i in enumerate(idx):
            leaf, table_w, leaf_w = COMBOS[i % len(COMBOS)]
            l1_pa = l1s[k // 512] + 8 * (k % 512)
            mid, low = mids[k], lows[k]
            if LEAVES[leaf] == "block":
                tab_pa, tab = l1_pa, table_value(table_w, mid)
                leaf_pa, lf = mid, leaf_value(leaf_w, block, block=True)
            else:
                ram.write_u64(l1_pa, mid | _V | _T)
                tab_pa, tab = mid, table_value(table_w, low)
                leaf_pa, lf = low, leaf_value(leaf_w, block, block=False)
            ram.write_u64(tab_pa, tab)
            ram.write_u64(leaf_pa, lf)
            vas[k] = (k // 512) << 39 | (k % 512) << 30 | VA_OFFSET
            slots.append((tab_pa, tab, leaf_pa, lf))
        for k in range(n, len(l1s) * 512):  # a short chunk: the rest of the level-1 entries invalid
            ram.write_u64(l1s[k // 512] + 8 * (k % 512), 0)
        models = [expected(ram.read_u64, int(vas[k]), probe, l0, cpu, hafdbs) for k in range(n)]
        machine.flush_tlb()
        if probe.insn is not None:  # real loads/stores at EL1, one emu_start for the chunk
            got = machine.probe_access_many(vas, probe.insn, stub_va=STUB_VA,
                                            store_value=ram.read_u64(block + VA_OFFSET))
        elif probe.at is None:  # real fetches, one emu_start for the chunk
            got = machine.probe_fetch_many(vas, probe.access.user)
        else:
            raw, errors = machine.probe_many_raw(vas, probe.access)
            got = []
            for k in range(n):
                st = int(raw.status[k])
                got.append(("fault", int(raw.code[k])) if st == RAW_FAULT else
                           ("pa", int(raw.pa[k])) if st in (RAW_TAG, RAW_OBSERVED) else
                           ("error", errors[k].reason if k in errors else "none recorded"))
        hashes: list[int] = []
        for k, i in enumerate(idx):
            tab_pa, tab, leaf_pa, lf = slots[k]
            res, af = models[k]
            case = Case(i)
            found: list[Mismatch] = []
            miss = functools.partial(_x86._miss, found, i, case.describe())
            answer = _answer(got[k])
            if answer[0] == "fault":
                if isinstance(res, Translation):
                    miss("outcome", f"translation pa {res.pa:#x}", f"FST {answer[1]:#04x}")
                elif res.code != answer[1]:
                    miss("code", f"FST {res.code:#04x} ({res.kind} L{res.level[1:] if res.level else '?'})",
                         f"FST {answer[1]:#04x}")
            elif answer[0] == "pa":
                if isinstance(res, Fault):
                    miss("outcome", f"FST {res.code:#04x} ({res.kind})", f"translation pa {answer[1]:#x}")
                elif res.pa != answer[1]:
                    miss("pa", f"{res.pa:#x}", f"{answer[1]:#x}")
            else:
                miss("outcome", str(res), f"no answer: {answer[1]}")
            report.faults += isinstance(res, Fault)
            by_pa = {e.pa: e.level for e in res.trace}
            changed = []
            for name, pa, before in (("table", tab_pa, tab), ("leaf", leaf_pa, lf)):
                after = ram.read_u64(pa)
                changed.append(f"{name} {after ^ before:#x}")
                want = af.get(by_pa.get(pa, ""), A.AF_KEEP)
                if not _value_ok(want, before, after):
                    miss(f"{name} descriptor", f"AF {want}, {before:#x}", f"{after:#x}")
            for m in found:
                for dev, pred in KNOWN:
                    if pred(case, m):
                        m.explained_by = dev
                        break
            report.mismatches.extend(found)
            report.agree += not found
            report.run += 1
            hashes.append(outcome_hash(_outcome(answer, changed, found)))
        report.outcomes.add(idx, hashes)


def _outcome(answer: tuple[str, Any], changed: list[str], found: list[Mismatch]) -> str:
    """A case's canonical outcome line (emu.conform.digest): the machine's answer (the FST, the PA
    -- every leaf maps the same frame, so it does not depend on the case's slot -- or none), the
    bits the access changed in the table and leaf descriptors (``after ^ before``: the Access
    flag, Arm ARM D8 "The Access flag", and anything else; not the descriptors themselves, whose
    output addresses are the slot's) and the mismatched fields with their class."""
    kind, value = answer
    said = f"fst {value:#04x}" if kind == "fault" else f"pa {value:#x}" if kind == "pa" else "none"
    verdict = ",".join(f"{m.field}:{m.explained_by or 'unexplained'}" for m in found) or "agree"
    return f"{said}; changed {' '.join(changed)}; {verdict}"


def _answer(got: Any) -> tuple[str, Any]:
    """A machine result (a probe object, or the batch's (kind, value) pair) as ("fault", FST),
    ("pa", physical address) or ("error", reason)."""
    if isinstance(got, tuple):
        return got
    code = getattr(got, "code", None)
    if code is not None and getattr(got, "kind", None) is not None:
        return ("fault", int(code))
    pa = getattr(got, "pa", None)
    if pa is not None:
        return ("pa", int(pa))
    return ("error", getattr(got, "reason", str(got)))


def select(limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[int]:
    """Case indices: all, the first ``limit``, or ``sample`` drawn at random (``seed``)."""
    if sample is not None:
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(SIZE, size=min(sample, SIZE), replace=False).tolist())
    return list(range(SIZE if limit is None else min(limit, SIZE)))


# -- local worker processes ----------------------------------------------------------------------
TASK_CASES = CHUNK_CASES  #: cases per task handed to a worker process (within one group)
_WORKER: Runner | None = None


def _worker_run(cases: list[int]) -> Report:
    global _WORKER
    if _WORKER is None:
        _WORKER = Runner()  # each process keeps its own machine (engines cannot be pickled)
    return _WORKER.run(cases, Report())


def tasks(cases: Iterable[int]) -> list[list[int]]:
    """``cases`` cut into tasks of at most :data:`TASK_CASES` cases of one control/access group
    each, in case order."""
    by_group: dict[int, list[int]] = {}
    for i in cases:
        by_group.setdefault(i // len(COMBOS), []).append(i)
    return [idx[s:s + TASK_CASES] for g in sorted(by_group) for idx in [by_group[g]]
            for s in range(0, len(idx), TASK_CASES)]


def run_workers(cases: Sequence[int], workers: int, report: Report,
                progress: Callable[[Report], None] | None = None) -> Report:
    """Run ``cases`` in ``workers`` spawned worker processes (as :func:`emu.conform.x86_64.run_workers`)."""
    _x86.run_pool(tasks(cases), _worker_run, workers, report,
                  None if progress is None else lambda r: progress(report))
    return report
