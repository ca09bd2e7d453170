"""s390x access-rights conformance: DAT protection, instruction-execution protection (IEP) and
the translation exceptions on the way, run as real loads, stores and instruction fetches on
Unicorn's z/Architecture MMU and compared with the Principles of Operation's model
(:func:`archs.s390x.translate`, :func:`archs.s390x.reference_change`,
:func:`archs.s390x.translation_exception_identification`).

A case is one flag word per table entry -- region-second (I, P), region-third (I, P, FC, IEP),
segment (I, P, FC, IEP), page (I, P, IEP, bit 52) -- the access (operand fetch ``LG``, store
``STG``, instruction fetch: ``BASR`` into the page), CR0's EDAT (bit 40) and IEP (bit 43) controls,
the PSW key and the block's storage key. PoP SA22-7832 ch. 3: "DAT Protection" (bit 54 of the page-
and segment-table entry, of region-table entries when EDAT-1 applies), "Instruction-Execution
Protection" (bit 55 of the PTE and of FC=1 segment / region-third entries, effective with CR0 bit
43, facility 130), "Enhanced DAT" (FC=1: a 1-MB segment frame with EDAT-1, a 2-GB region-third
frame with EDAT-2), "Translation Process" (the I bits: region-second/-third, segment,
page-translation exceptions 0x3A, 0x3B, 0x10, 0x11; PTE bit 52: translation-specification 0x12);
ch. 6 "Translation-Exception Identification". s390x entries have no accessed/dirty bits: the record
is the reference (R) and change (C) bits of the storage key of the 4K block (ch. 3 "Storage Key"),
which Unicorn keeps (QEMU's skeys device: ``mmu_handle_skey()`` on every TLB fill, SSKE/ISKE): each
case's block gets its storage key (SSKE: ACC, F, R = C = 0) just before the access and is read back
(ISKE) just after it. The storage key and the PSW key (SPKA around the access) are dimensions too:
key-controlled protection (ch. 3 "Key-Controlled Protection",
:func:`archs.s390x.key_controlled_protection`).

Layout: an ASCE designating a region-second table (DT=10, TL=3: 2048 entries; 256 used).  Entry 0 maps the
first 16 MB of real storage one to one (the probe loop is fetched through it: instruction fetches
go through the primary space, CR1, and CR1 = CR7 = the ASCE under test).  Entries 1..255 are case
slots: slot ``k`` has its own region-third table (one valid entry), segment table (one valid
entry), page table (one valid entry) and 4K frame ``F``; its address is ``k << 42 | F``, so the
page-table entry, a 1-MB segment frame (SFAA ``F & ~0xFFFFF``) and a 2-GB region-third frame
(RFAA 0) all reach ``F``.  The 32 low-address cases (low-address protection, CR0 bit 35, with the
ASCE's private-space control) go through entry 0 to the lowcore.  Cases with the same CR0, keys and
access run together, one ``emu_start``
per chunk of up to :data:`SLOTS` cases (``guest_code.conform_code``).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from archs import s390x as Z
from archs.translate import Fault, Permissions, Translation
from emu.conform.digest import outcome_hash
from emu.conform.x86_64 import Mismatch, _miss, run_chunks
from emu.conform.x86_64 import Report as _Report

ARCH = "s390x"
RAM_SIZE = 16 << 20
SLOTS = 255  #: case slots: region-second entries 1..255 (entry 0 maps the probe code); a group has <= 190 cases

# -- entry bits (PoP ch. 3 "Translation Tables"; bit n of the PoP is 1 << (63 - n)) ----------------
_I_REGION = _I_SEGMENT = 1 << 5  # bit 58: region-/segment-invalid bit
_I_PAGE = 1 << 10  # bit 53: page-invalid bit
_FC = 1 << 10  # bit 53: format control (segment and region-third entries)
_P = 1 << 9  # bit 54: DAT-protection bit
_IEP = 1 << 8  # bit 55: instruction-execution-protection bit (PTE; FC=1 segment/region-third)
_B52 = 1 << 11  # bit 52 of a PTE: must be zero (translation-specification exception)
_TT_R2, _TT_R3 = 0b10 << 2, 0b01 << 2  # bits 60-61: table type
_DT_R2, _TL_FULL = 0b10 << 2, 0b11  # ASCE bits 60-61 designation type, 62-63 table length

RSTE_DIMS = ("I", "P")
RTTE_DIMS = ("I", "P", "FC", "IEP")
STE_DIMS = ("I", "P", "FC", "IEP")
PTE_DIMS = ("I", "P", "IEP", "B52")
LEVELS = (("RSTE", RSTE_DIMS), ("RTTE", RTTE_DIMS), ("STE", STE_DIMS), ("PTE", PTE_DIMS))
ACCESSES = ("read", "write", "fetch")
#: CR0.EDAT (bit 40; EDAT-1 and EDAT-2 installed) and CR0.IEP (bit 43; facility 130 installed) for
#: the case slots; then CR0's low-address-protection control (bit 35) with the ASCE's private-space
#: control (bit 55) for the low-address cases (``low``: addresses :data:`LOW_ADDRESSES`).
CPUS = tuple(dict(edat=e, iep=i, lap=False, private=False, low=False) for e in (False, True) for i in (False, True))
LAP_CPUS = tuple(dict(edat=False, iep=False, lap=lap, private=p, low=True) for lap in (False, True)
                 for p in (False, True))
#: Low-address protection covers effective addresses 0-511 and 4096-4607 (PoP ch. 3): the last
#: doubleword inside each range and the first outside it.  Entry 0 maps them to the lowcore.
LOW_ADDRESSES = (0x1F8, 0x200, 0x11F8, 0x1200)
_ASCE_PRIVATE = 1 << 8  # ASCE bit 55, the private-space control
#: Key-controlled protection (PoP ch. 3): the PSW key of the access (0: the master key, or 9) and
#: the storage key of the block it reaches (ACC 9: the PSW key's, or 5: another; F: fetch protection).
KEYS = tuple(dict(psw=p, acc=a, f=f) for p in (0, 9) for a in (9, 5) for f in (False, True))

IN_SPACE = {
    "region-second entry": "I (bit 58), P (bit 54, DAT protection when EDAT-1 applies)",
    "region-third entry": "I, P, FC (bit 53, 2-GB frame with EDAT-2), IEP (bit 55 with FC=1)",
    "segment entry": "I, P, FC (bit 53, 1-MB frame with EDAT-1), IEP (bit 55 with FC=1)",
    "page entry": "I (bit 53), P (bit 54), IEP (bit 55), bit 52 (must be 0)",
    "access": "operand fetch (LG), store (STG), instruction fetch (BASR into the page)",
    "CPU": "CR0.EDAT (bit 40), CR0.IEP (bit 43); z13 model with EDAT-1/-2 and IEP (facility 130) "
           "set in its facility list",
    "keys": "PSW key 0 or 9; the block's storage key: ACC 9 or 5, fetch-protection bit F 0 or 1 "
            "(key-controlled protection)",
    "low addresses": "loads and stores at 0x1f8, 0x200, 0x11f8, 0x1200 with CR0 bit 35 (low-address "
                     "protection) and the ASCE's private-space control (bit 55) each 0 or 1",
    "observed": "fault or not, program-interruption code, TEID (PoP-defined bits), real address "
                "(LRAG and the loaded tag / stored marker), storage key R and C after the access",
}
OUT_OF_SPACE = {
    "instruction fetches from low addresses": "the lowcore holds no code of the probe's; low-address "
                                              "protection refuses stores only",
    "problem state (PSW bit 15)": "DAT and its protections do not depend on it (PoP ch. 3) and the "
                                  "loop's SSKE/ISKE/LRAG/LURAG are privileged",
    "FC=1 with CR0.EDAT=0": "the entry then designates a table at its frame address (data, not a table); "
                            "the machine's start-up self-test proves FC is ignored without CR0.EDAT",
    "region-first tables, ASCE types, table offsets/lengths, private space": "covered by foliowalk "
                                                                             "verify/fuzz (the walk checks)",
}
LEGALITY = (
    "FC=1 (region-third or segment entry) only with CR0.EDAT=1 (without it FC is ignored and the entry "
    "designates a table at the frame's address)",
    "IEP (bit 55) in a region-third or segment entry only with FC=1 (in an FC=0 entry bit 55 is not "
    "the IEP bit)",
    "an entry with I=1 or FC=1 ends the walk: the entries below have no bits set (they are not read)",
    "low-address cases: loads and stores only, PSW key 0 and storage key ACC 9 (the keys are a dimension "
    "of the slot cases)",
)


def _bits(names: Sequence[str], word: int) -> dict[str, bool]:
    return {n: bool(word >> i & 1) for i, n in enumerate(names)}


@functools.cache
def _flags(words: tuple[int, ...]) -> dict[str, dict[str, bool]]:
    return {name: _bits(dims, w) for (name, dims), w in zip(LEVELS, words, strict=True)}


def _legal_entry(names: Sequence[str], word: int, edat: bool) -> bool:
    f = _bits(names, word)
    if f.get("FC") and not edat:
        return False
    return not (f.get("IEP") and "FC" in f and not f["FC"])


def _ends_walk(names: Sequence[str], word: int) -> bool:
    f = _bits(names, word)
    return f["I"] or f.get("FC", False)


def _entry_combos(edat: bool, level: int = 0) -> list[tuple[int, ...]]:
    """The legal flag-word tuples from ``LEVELS[level]`` down, in a fixed order."""
    names = LEVELS[level][1]
    out: list[tuple[int, ...]] = []
    for w in range(1 << len(names)):
        if not _legal_entry(names, w, edat):
            continue
        if level == len(LEVELS) - 1:
            out.append((w,))
        elif _ends_walk(names, w):
            out.append((w,) + (0,) * (len(LEVELS) - 1 - level))
        else:
            out.extend((w,) + rest for rest in _entry_combos(edat, level + 1))
    return out


COMBOS = {edat: _entry_combos(edat) for edat in (False, True)}
#: (CPU, keys, access) per chunk: cases of one group share CR0, the PSW key, the storage key and the routine.
#: The low-address groups come last: CPUS[len(CPUS):] are LAP_CPUS, with key setting 0, loads and stores.
GROUPS = tuple(itertools.product(range(len(CPUS)), range(len(KEYS)), range(len(ACCESSES)))) + tuple(
    (len(CPUS) + c, 0, a) for c in range(len(LAP_CPUS)) for a in (0, 1))
_ALL_CPUS = CPUS + LAP_CPUS


def _group_size(cpu: dict[str, bool]) -> int:
    return len(LOW_ADDRESSES) if cpu["low"] else len(COMBOS[cpu["edat"]])


_GROUP_START = list(itertools.accumulate((_group_size(_ALL_CPUS[c]) for c, _k, _a in GROUPS), initial=0))
SIZE = _GROUP_START[-1]
RAW_SIZE = (len(CPUS) * len(KEYS) * len(ACCESSES) * 2 ** sum(len(d) for _n, d in LEVELS)
            + len(LAP_CPUS) * len(LOW_ADDRESSES) * len(ACCESSES))


def _locate(index: int) -> tuple[int, int]:
    """``(group, combo)`` of case ``index``."""
    g = bisect.bisect_right(_GROUP_START, index) - 1
    return g, index - _GROUP_START[g]


@dataclass(frozen=True)
class Case:
    """One point of the space: ``index`` in ``range(SIZE)``."""

    index: int

    @property
    def cpu(self) -> dict[str, bool]:
        return _ALL_CPUS[GROUPS[_locate(self.index)[0]][0]]

    @property
    def low_address(self) -> int | None:
        """The address of a low-address case (None: a slot case)."""
        g, c = _locate(self.index)
        return LOW_ADDRESSES[c] if _ALL_CPUS[GROUPS[g][0]]["low"] else None

    @property
    def keys(self) -> dict[str, Any]:
        return KEYS[GROUPS[_locate(self.index)[0]][1]]

    @property
    def access(self) -> str:
        return ACCESSES[GROUPS[_locate(self.index)[0]][2]]

    @property
    def storage_key(self) -> int:
        """The seven-bit storage key SSKE gives the case's block (R = C = 0)."""
        return self.keys["acc"] << 4 | (Z.KEY_F if self.keys["f"] else 0)

    def key_refused(self) -> bool:
        """Key-controlled protection alone refuses this access (whatever DAT says)."""
        probe = Translation(0, 1 << 12, Permissions(True, True, True, None))
        return isinstance(Z.key_controlled_protection(probe, self.access, psw_key=self.keys["psw"],
                                                      storage_key=self.storage_key), Fault)

    @property
    def words(self) -> tuple[int, ...]:
        """The entries' flag words (a low-address case goes through entry 0 and varies none)."""
        g, c = _locate(self.index)
        cpu = _ALL_CPUS[GROUPS[g][0]]
        return (0,) * len(LEVELS) if cpu["low"] else COMBOS[cpu["edat"]][c]

    def flags(self) -> dict[str, dict[str, bool]]:
        return _flags(self.words)

    def describe(self) -> str:
        if self.low_address is not None:
            return (f"#{self.index} {self.access} lap={int(self.cpu['lap'])} private={int(self.cpu['private'])} "
                    f"va={self.low_address:#x}")
        parts = []
        for name, f in self.flags().items():
            parts.append(f"{name.lower()}={'|'.join(k for k, v in f.items() if v) or '0'}")
            if f["I"] or f.get("FC"):
                break
        cpu = ",".join(f"{k}={int(v)}" for k, v in self.cpu.items() if k in ("edat", "iep"))
        keys = f"pswkey={self.keys['psw']} skey={self.storage_key:#04x}"
        return f"#{self.index} {self.access} {cpu} {keys} {' '.join(parts)}"


def entry_values(words: tuple[int, ...], frame: int, r3t: int, st: int, pt: int) -> tuple[int, int, int, int]:
    """The raw region-second, region-third, segment and page entries of a case whose tables are
    at ``r3t``/``st``/``pt`` and whose frame is ``frame`` (PoP ch. 3 entry formats)."""
    rs, rt, se, pe = (_bits(d, w) for (_n, d), w in zip(LEVELS, words, strict=True))
    rste = r3t | _TT_R2 | (_I_REGION if rs["I"] else 0) | (_P if rs["P"] else 0)  # TF=0, TL=0: 512 entries
    rtte = (0 if rt["FC"] else st) | _TT_R3 | (_I_REGION if rt["I"] else 0) | (_P if rt["P"] else 0)
    rtte |= (_FC if rt["FC"] else 0) | (_IEP if rt["IEP"] else 0)  # FC=1: RFAA 0 (the frame is below 2 GB)
    ste = (frame & ~0xFFFFF if se["FC"] else pt) | (_I_SEGMENT if se["I"] else 0) | (_P if se["P"] else 0)
    ste |= (_FC if se["FC"] else 0) | (_IEP if se["IEP"] else 0)
    pte = frame | (_I_PAGE if pe["I"] else 0) | (_P if pe["P"] else 0) | (_IEP if pe["IEP"] else 0)
    pte |= _B52 if pe["B52"] else 0
    return rste, rtte, ste, pte


#: The one s390x space (the CLI passes a space around: x86-64 has two, ``access`` and ``access-pku``).
SPACE = "protection"


def space_json(space: object = SPACE) -> dict[str, Any]:
    return {"name": SPACE, "size": SIZE, "before_legality_filter": RAW_SIZE, "in": IN_SPACE,
            "out": OUT_OF_SPACE, "legality": list(LEGALITY)}


@dataclass
class Report(_Report):
    arch: str = ARCH
    size: int = SIZE
    space: str = SPACE

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "space": space_json(), "run": self.run, "agree": self.agree,
                "model_faults": self.faults, "seconds": round(self.seconds, 3),
                "cases_per_second": round(self.run / self.seconds, 1) if self.seconds else None,
                "interrupted": self.interrupted, "ran_on": self.ran_on, "digest": self.digest(),
                "mismatches_by_class": self.by_class(),
                "mismatches": [m.to_json() for m in self.mismatches]}


def new_report(space: object = SPACE) -> Report:
    return Report()


def _key_protection_ignored(case: Case, m: Mismatch) -> bool:
    """emu/machines/deviations.py ``s390x-key-controlled-protection-not-implemented``: the access that
    key-controlled protection refuses happens -- the model's protection exception is the machine's
    access (outcome), and a store it made sets the change bit (key.C)."""
    if not (case.key_refused() and m.model.endswith(f"({KEY_CAUSE})")):  # DAT allowed it, the key refused
        return False
    if m.field == "outcome":
        return m.machine.startswith("allowed")
    return m.field == "key.C" and case.access == "write" and m.machine == "1"


KEY_CAUSE = "key-controlled protection"
LAP_CAUSE = "low-address protection"


def _cause(res: Translation | Fault) -> str:
    """What refused the access, for the mismatch text: key-controlled protection when DAT allowed
    it (:func:`archs.s390x.key_controlled_protection` turns only translations into faults)."""
    if not isinstance(res, Fault):
        return "allowed"
    for marker, cause in (("Key-Controlled Protection", KEY_CAUSE), ("Low-Address Protection", LAP_CAUSE),
                          ("by instruction-execution protection",
                          "instruction-execution protection"), ("by DAT protection", "DAT protection")):
        if marker in res.reason:
            return cause
    return res.kind


#: Mismatches a registered deviation explains: (deviation name, does it explain this one?).
KNOWN: list[tuple[str, Callable[[Case, Mismatch], bool]]] = [
    ("s390x-key-controlled-protection-not-implemented", _key_protection_ignored),
]


# -- the runner ------------------------------------------------------------------------------------
class Runner:
    """Runs cases on one Unicorn s390x machine: the z13 model with the EDAT-1/-2 and IEP facility
    bits set (the default), or ``cpu_model`` (a ``UC_CPU_S390X_*``) as Unicorn builds it -- then
    without EDAT, so only the CR0.EDAT=0 groups can run (the IEP set-up checks)."""

    def __init__(self, space: object = SPACE, *, cpu_model: int | None = None) -> None:
        from emu.errors import EmulatorError
        from emu.machines.ram import FrameAllocator, PhysicalMemory
        from emu.machines.s390x import LOWCORE_SIZE, S390xMachine
        from emu.machines.s390x.guest_code import conform_code

        ram = self.ram = PhysicalMemory(RAM_SIZE, big_endian=True)
        alloc = FrameAllocator(ram, reserved=[(0, LOWCORE_SIZE)])
        if cpu_model is None:
            m = self.machine = S390xMachine(ram, alloc, edat=True, iep=True, chunk=SLOTS)
        else:
            m = self.machine = S390xMachine(ram, alloc, edat=False, cpu_model=cpu_model, chunk=SLOTS)
        if cpu_model is None and not (m.edat1_works and m.edat2_works):
            raise EmulatorError(f"s390x conform needs EDAT-1 and EDAT-2 on the machine: {m.edat_note}")
        self.routines = {kind: m.load_routine(*conform_code(kind)) for kind in ACCESSES}
        self.records = alloc.alloc(32 * SLOTS, 0x1000)
        self.frame_list = alloc.alloc(8 * SLOTS, 0x1000)

        def table(size: int, fill: int, count: int) -> int:
            pa = alloc.alloc(size, 0x1000)
            ram.write(pa, fill.to_bytes(8, "big") * count)
            return pa

        r2t = table(0x4000, _TT_R2 | _I_REGION, 2048)
        self.asce = r2t | _DT_R2 | _TL_FULL
        # entry 0: real storage [0, RAM_SIZE) one to one, 4K pages, no protection
        r3t0, st0 = table(0x1000, _TT_R3 | _I_REGION, 512), table(0x1000, _I_SEGMENT, 512)
        ram.write_u64(r2t, r3t0 | _TT_R2)
        ram.write_u64(r3t0, st0 | _TT_R3)
        for seg in range(RAM_SIZE >> 20):
            pt = alloc.alloc(0x800, 0x800)
            ram.write(pt, b"".join((seg << 20 | p << 12).to_bytes(8, "big") for p in range(256)))
            ram.write_u64(st0 + 8 * seg, pt)
        self.slots = []  # (rste_pa, r3t, st, pt, frame, va) per slot 1..SLOTS
        for k in range(1, SLOTS + 1):
            r3t, st = table(0x1000, _TT_R3 | _I_REGION, 512), table(0x1000, _I_SEGMENT, 512)
            pt = alloc.alloc(0x800, 0x800)
            ram.write(pt, _I_PAGE.to_bytes(8, "big") * 256)
            frame = alloc.alloc(0x1000, 0x1000)
            self.slots.append((r2t + 8 * k, r3t, st, pt, frame, k << 42 | frame))
        if self.slots[-1][4] + 0x1000 > RAM_SIZE:  # pragma: no cover - layout arithmetic
            raise EmulatorError("s390x conform: the case frames do not fit the identity-mapped RAM")
        ram.write(self.frame_list, b"".join(s[4].to_bytes(8, "big") for s in self.slots))
        m.set_asce(self.asce)
        m.set_primary_asce(self.asce)
        self.facilities = m.edat_note

    def close(self) -> None:
        """Release guest RAM (the machine is not run again)."""
        self.ram.close()

    def write_case(self, k: int, words: tuple[int, ...]) -> tuple[int, int]:
        """Write case ``words`` into slot ``k`` (0-based); returns ``(va, frame)``."""
        rste_pa, r3t, st, pt, frame, va = self.slots[k]
        rste, rtte, ste, pte = entry_values(words, frame, r3t, st, pt)
        ram = self.ram
        ram.write_u64(rste_pa, rste)
        ram.write_u64(r3t, rtte)
        ram.write_u64(st + 8 * ((frame >> 20) & 0x7FF), ste)
        ram.write_u64(pt + 8 * ((frame >> 12) & 0xFF), pte)
        return va, frame

    def asce_of(self, cpu: dict[str, bool]) -> int:
        return self.asce | (_ASCE_PRIVATE if cpu["private"] else 0)

    def model(self, va: int, access: str, cpu: dict[str, bool], psw_key: int = 0, storage_key: int = 0
              ) -> Translation | Fault:
        """The PoP's answer: DAT (EDAT-1 and -2 apply with CR0.EDAT: both facilities are
        installed; IEP with CR0.IEP), low-address protection (CR0 bit 35), then key-controlled
        protection of the block reached."""
        facts: dict[str, object] = {"edat1": cpu["edat"], "edat2": cpu["edat"], "iep": cpu["iep"],
                                    "storage_size": RAM_SIZE}
        asce = self.asce_of(cpu)
        res = Z.translate(None, self.ram.read_u64, va, access, asce=asce, cpu=facts, decode=False)
        res = Z.low_address_protection(res, va, access, enabled=cpu["lap"], asce=asce)
        return Z.key_controlled_protection(res, access, psw_key=psw_key, storage_key=storage_key)

    def run(self, cases: Iterable[int], report: Report, progress: Callable[[Report], None] | None = None) -> Report:
        return run_chunks(cases, lambda i: _locate(i)[0], SLOTS, self._chunk, report, progress)

    def _chunk(self, group: int, idx: list[int], report: Report) -> None:
        from unicorn import s390x_const as S

        from emu.machines.s390x.guest_code import BR_R14

        cpu, keys, access = _ALL_CPUS[GROUPS[group][0]], KEYS[GROUPS[group][1]], ACCESSES[GROUPS[group][2]]
        skey = Case(idx[0]).storage_key
        m, ram = self.machine, self.ram
        m.set_controls(edat=cpu["edat"], iep=cpu["iep"], lap=cpu["lap"])
        if m.asce != self.asce_of(cpu):
            m.set_asce(self.asce_of(cpu))
            m.set_primary_asce(self.asce_of(cpu))
        n = len(idx)
        vas = np.zeros(n, dtype=np.uint64)
        frames = []
        for k, i in enumerate(idx):
            low = Case(i).low_address
            if low is not None:  # through entry 0 to the lowcore: tag just the word accessed
                va, frame = low, low & ~0xFFF
                ram.tag(va, 8)
            else:
                va, frame = self.write_case(k, Case(i).words)
                if access != "fetch":
                    ram.tag(frame, 0x1000)
            vas[k] = va
            frames.append(frame)
        ram.write(self.frame_list, b"".join(f.to_bytes(8, "big") for f in frames))
        if access == "fetch":  # every slot's frame: even a misrouted fetch runs only "br %r14"
            for slot in self.slots:
                ram.write(slot[4], BR_R14 * 2048)
        for k in range(n, SLOTS):  # a short chunk: the other slots invalid
            ram.write_u64(self.slots[k][0], _TT_R2 | _I_REGION)
        models = [self.model(int(vas[k]), access, cpu, keys["psw"], skey) for k in range(n)]
        key_refused = Case(idx[0]).key_refused()
        regs = {S.UC_S390X_REG_R7: self.records, S.UC_S390X_REG_R11: self.frame_list,
                S.UC_S390X_REG_R13: skey, S.UC_S390X_REG_R10: keys["psw"] << 4}
        faults, failure, done = m.run_routine(self.routines[access], vas, regs,
                                              fault_pcs=vas.tolist() if access == "fetch" else ())
        rec = np.frombuffer(ram.buf, dtype=">u8", count=4 * n, offset=self.records).reshape(n, 4)
        hashes: list[int] = []
        for k, i in enumerate(idx):
            case = Case(i)
            found: list[Mismatch] = []
            miss = functools.partial(_miss, found, i, case.describe())
            res = models[k]
            va, frame = int(vas[k]), frames[k]
            report.faults += isinstance(res, Fault)
            # the machine's answer for the digest, without what depends on the case's slot (the
            # slot's VA and frame): the interruption code and the TEID's low 12 bits (PoP ch. 6
            # "Translation-Exception Identification": access-exception fetch/store indication,
            # ASCE identification -- bits 0-51 are the page's address), or LRAG's real address as
            # an offset from the slot's frame with its condition code
            answer = "none"
            if k >= done:
                miss("outcome", str(res), f"no answer: {failure}")
            elif k in faults:
                intno, pc, code, teid = faults[k]
                answer = (f"program {code:#x}" if code is not None else f"exception {intno}") \
                    + (f" teid {teid & 0xFFF:#05x}" if teid is not None else "")
                self._compare_fault(miss, res, va, access, intno, code, teid, key_refused)
            else:
                lrag, word, ipm = (int(x) for x in rec[k, :3])
                answer = f"allowed frame{lrag - frame:+#x} cc {(ipm >> 28) & 3}"
                self._compare_allowed(miss, res, va, frame, access, lrag, word, ipm)
            if k < done:
                key = int(rec[k, 3])
                answer += f"; key {key & 0xFE:#04x}"  # ACC, F, R, C after the access (ISKE)
                want_r, want_c = Z.reference_change(res, access)
                for name, bit, want in (("R", Z.KEY_R, want_r), ("C", Z.KEY_C, want_c)):
                    got = bool(key & bit)
                    if want == Z.RC_SET and not got or want == Z.RC_KEEP and got:
                        miss(f"key.{name}", f"{want}, was 0 ({_cause(res)})", f"{int(got)}")
            for mm in found:
                for name, pred in KNOWN:
                    if pred(case, mm):
                        mm.explained_by = name
                        break
            report.mismatches.extend(found)
            report.agree += not found
            report.run += 1
            verdict = ",".join(f"{mm.field}:{mm.explained_by or 'unexplained'}" for mm in found) or "agree"
            hashes.append(outcome_hash(f"{answer}; {verdict}"))
        report.outcomes.add(idx, hashes)

    def _compare_fault(self, miss: Callable[..., None], res: Translation | Fault, va: int, access: str,
                       intno: int, code: int | None, teid: int | None, key_refused: bool) -> None:
        """Code and TEID of a fault the machine took, against the model's answer."""
        got = f"program interruption code {code:#x}" if code is not None else f"exception {intno}"
        if isinstance(res, Translation):
            miss("outcome", f"real address {res.pa:#x}", got)
            return
        if code != res.code:
            miss("code", f"program interruption code {res.code:#x}", got)
            return
        want = Z.translation_exception_identification(res, va, access, Z.ASC_SECONDARY, key_protected=key_refused,
                                                      low_address=_cause(res) == LAP_CAUSE)
        if want is not None:
            value, mask = want
            if teid is None or (teid & mask) != value:
                miss("teid", f"{value:#018x} under mask {mask:#018x}",
                     "none stored" if teid is None else f"{teid:#018x}")

    def _compare_allowed(self, miss: Callable[..., None], res: Translation | Fault, va: int, frame: int,
                         access: str, lrag: int, word: int, ipm: int) -> None:
        if isinstance(res, Fault):
            miss("outcome", f"program interruption code {res.code:#x} ({_cause(res)})", f"allowed (LRAG {lrag:#x})")
            return
        cc = (ipm >> 28) & 3
        if cc or lrag != res.pa:
            miss("pa", f"{res.pa:#x}", f"LRAG {lrag:#x} cc {cc}")
        if access == "read" and self.ram.tagged_pa(word, va) != res.pa:
            miss("pa", f"load of {res.pa:#x}'s tag", f"loaded {word:#018x}")
        if access == "write" and self.ram.read_u64(res.pa) != va:
            miss("pa", f"store of {va:#x} at {res.pa:#x}", f"{self.ram.read_u64(res.pa):#018x} there")


def select(limit: int | None = None, sample: int | None = None, seed: int = 0, space: object = SPACE) -> list[int]:
    """Case indices: all, the first ``limit``, or ``sample`` drawn at random (``seed``)."""
    if sample is not None:
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(SIZE, size=min(sample, SIZE), replace=False).tolist())
    return list(range(SIZE if limit is None else min(limit, SIZE)))


# -- local worker processes ----------------------------------------------------------------------
_WORKER: Runner | None = None


def _worker_run(cases: list[int]) -> Report:
    global _WORKER
    if _WORKER is None:
        _WORKER = Runner()  # each process keeps its own machine (engines cannot be pickled)
    return _WORKER.run(cases, Report())


def tasks(cases: Iterable[int]) -> list[list[int]]:
    """``cases`` cut into tasks of one CR0/access group (at most :data:`SLOTS` cases) each."""
    by_group: dict[int, list[int]] = {}
    for i in cases:
        by_group.setdefault(_locate(i)[0], []).append(i)
    return [idx[s:s + SLOTS] for g in sorted(by_group) for idx in [by_group[g]] for s in range(0, len(idx), SLOTS)]


def run_workers(cases: Sequence[int], workers: int, report: Report,
                progress: Callable[[Report], None] | None = None, space: object = SPACE) -> Report:
    """Run ``cases`` in ``workers`` spawned worker processes (as :func:`emu.conform.x86_64.run_workers`)."""
    from emu.conform.x86_64 import run_pool

    run_pool(tasks(cases), _worker_run, workers, report, None if progress is None else lambda r: progress(report))
    return report
