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

IN_SPACE = {
    "PDE": "P, R/W, U/S, A, D, XD, PS, one reserved bit (51; 13 with PS=1)",
    "PTE": "P, R/W, U/S, A, D, XD, one reserved bit (51)",
    "access": "read, write, fetch, each at CPL 0 and CPL 3",
    "CPU": "IA32_EFER.NXE, CR0.WP, CR4.SMEP, CR4.SMAP with EFLAGS.AC (Unicorn CPU model Broadwell)",
}
OUT_OF_SPACE = {
    "CR4.SMAP with CPL-3 accesses": "SMAP restricts supervisor-mode accesses only; the machine's CPL-3 loop "
                                    "needs its tables as user pages, which it makes supervisor pages under SMAP",
    "PKU (CR4.PKE, PKRU, protection keys)": "the machine sets no PKRU and the model has no keys yet",
    "reserved bit 36 / several at once": "bit 36 is below this CPU's MAXPHYADDR (40): an address bit here; "
                                         "access.c's own rule tests one reserved bit at a time (same error code)",
    "PML4E/PDPTE bits, 1-GByte pages, 5-level": "fixed permissive upper entries, as access.c; the translation "
                                                "checks (foliowalk verify/fuzz) cover those levels",
}
LEGALITY = ("PS=1 in the PDE: the PTE bits are all 0 (no page table is read, SDM Table 4-18)",
            "EFLAGS.AC=1 only with CR4.SMAP=1 (AC only lifts SMAP, §4.6.1)",
            "CR4.SMAP=1 only with CPL-0 accesses (SMAP governs supervisor-mode accesses, §4.6.1)")


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
GROUPS = tuple((c, a) for c, a in itertools.product(range(len(CPUS)), range(len(ACCESSES)))
               if not (CPUS[c]["smap"] and ACCESSES[a].user))
SIZE = len(GROUPS) * len(COMBOS)
RAW_SIZE = 2**5 * len(ACCESSES) * (1 << len(PDE_DIMS)) * (1 << len(PTE_DIMS))  # 5 CPU control bits


@dataclass(frozen=True)
class Case:
    """One point of the space: ``index`` in ``range(SIZE)``."""

    index: int

    @property
    def cpu(self) -> dict[str, bool]:
        return CPUS[GROUPS[self.index // len(COMBOS)][0]]

    @property
    def access(self) -> Access:
        return ACCESSES[GROUPS[self.index // len(COMBOS)][1]]

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


def entry_value(names: Sequence[str], word: int, target: int, *, big: bool) -> int:
    """The raw entry for a flag word pointing at ``target`` (``big``: a 2-MByte PDE)."""
    f = _bits(names, word)
    val = target
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

    def digest(self) -> str:
        return self.outcomes.digest()

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
        return {"arch": self.arch, "space": space_json(), "run": self.run, "agree": self.agree,
                "model_faults": self.faults, "seconds": round(self.seconds, 3),
                "cases_per_second": round(self.run / self.seconds, 1) if self.seconds else None,
                "interrupted": self.interrupted, "ran_on": self.ran_on, "digest": self.digest(),
                "mismatches_by_class": self.by_class(),
                "mismatches": [m.to_json() for m in self.mismatches]}


def space_json() -> dict[str, Any]:
    return {"size": SIZE, "before_legality_filter": RAW_SIZE, "in": IN_SPACE, "out": OUT_OF_SPACE,
            "legality": list(LEGALITY)}


#: Mismatches a registered deviation explains: (deviation name, does it explain this one?).
KNOWN: list[tuple[str, Callable[[Case, Mismatch], bool]]] = []


# -- the runner ------------------------------------------------------------------------------------
class Runner:
    """Runs cases on two Unicorn machines (IA32_EFER.NXE off and on) sharing nothing."""

    def __init__(self) -> None:
        from emu.machines.ram import FrameAllocator, PhysicalMemory
        from emu.machines.x86_64 import X86_64Machine

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

        machine = X86_64Machine(ram, alloc, nxe=nxe, cpu_model=getattr(x86_const, f"UC_CPU_X86_{CPU_MODEL}"))
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
        (``emu.machines.base`` Translation/Fault/ProbeError) with the PDE and PTE afterwards."""
        machine, ram, _root, pds, pts, _big = self._machine(bool(cpu.get("nxe", True)))
        machine.set_controls(wp=bool(cpu.get("wp", True)), smep=bool(cpu.get("smep", False)),
                             smap=bool(cpu.get("smap", False)), ac=bool(cpu.get("ac", False)))
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
        by_group: dict[int, list[int]] = {}
        for i in cases:
            by_group.setdefault(i // len(COMBOS), []).append(i)
        t0 = time.perf_counter()
        try:
            for g in sorted(by_group):
                idx = by_group[g]
                for s in range(0, len(idx), CHUNK_CASES):
                    self._chunk(g, idx[s:s + CHUNK_CASES], report)
                    report.seconds = time.perf_counter() - t0
                    if progress:
                        progress(report)
        except KeyboardInterrupt:
            report.interrupted = True
        report.seconds = time.perf_counter() - t0
        return report

    def _chunk(self, group: int, idx: list[int], report: Report) -> None:
        cpu = CPUS[GROUPS[group][0]]
        access = ACCESSES[GROUPS[group][1]]
        machine, ram, root, pds, pts, big = self._machine(cpu["nxe"])
        machine.set_controls(wp=cpu["wp"], smep=cpu["smep"], smap=cpu["smap"], ac=cpu["ac"])
        n = len(idx)
        vas = np.zeros(n, dtype=np.uint64)
        slots = []
        for k, i in enumerate(idx):
            pde_w, pte_w = COMBOS[i % len(COMBOS)]
            is_big = bool(_bits(PDE_DIMS, pde_w)["PSE"])
            pde_pa = pds[k // 512] + 8 * (k % 512)
            pte_pa = pts[k]
            pde = entry_value(PDE_DIMS, pde_w, big if is_big else pte_pa, big=is_big)
            ram.write_u64(pde_pa, pde)
            pte = 0 if is_big else entry_value(PTE_DIMS, pte_w, big, big=False)
            ram.write_u64(pte_pa, pte)
            vas[k] = (k // 512) << 30 | (k % 512) << 21
            slots.append((pde_pa, pde, pte_pa, pte, is_big))
        for k in range(n, len(pds) * 512):  # a short chunk: the rest of the PDs not present
            ram.write_u64(pds[k // 512] + 8 * (k % 512), 0)
        models = [expected(ram.read_u64, int(vas[k]), access, root, cpu) for k in range(n)]
        machine.flush_tlb()
        raw, errors = machine.probe_many_raw(vas, access)
        hashes: list[int] = []
        for k, i in enumerate(idx):
            pde_pa, pde, pte_pa, pte, is_big = slots[k]
            res, ad = models[k]
            case = Case(i)
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


def select(limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[int]:
    """Case indices: all, the first ``limit``, or ``sample`` drawn at random (``seed``)."""
    if sample is not None:
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(SIZE, size=min(sample, SIZE), replace=False).tolist())
    return list(range(SIZE if limit is None else min(limit, SIZE)))


# -- local worker processes ----------------------------------------------------------------------
TASK_CASES = 4 * CHUNK_CASES  #: cases per task handed to a worker process (within one group)
_WORKER: Runner | None = None


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops


def _worker_run(cases: list[int]) -> Report:
    global _WORKER
    if _WORKER is None:
        _WORKER = Runner()  # each process keeps its own machines (engines cannot be pickled)
    return _WORKER.run(cases, Report())


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
                progress: Callable[[Report], None] | None = None) -> Report:
    """Run ``cases`` in ``workers`` worker processes (spawned: no Unicorn engine crosses a fork);
    Ctrl-C stops handing out tasks and keeps the reports that came back."""
    import concurrent.futures as cf
    import multiprocessing

    t0 = time.perf_counter()
    report.ran_on = f"{workers} local worker processes"
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_worker_init)
    futures: list[cf.Future[Report]] = []
    try:
        futures = [pool.submit(_worker_run, t) for t in tasks(cases)]
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
