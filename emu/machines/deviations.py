"""The registry of known Unicorn 2.1.4 (QEMU 5 fork) departures from the architectures.

Each :class:`Deviation` names the departure, cites the architecture reference it departs from and
ORACLE-NOTES.md, and (where rows can hit it) carries a detector: does this row -- walk result and
MMU result -- hit the deviation?  The verifier asks before it compares (emu/judge.py, rule ``emulator-deviation``),
so a row that hits one is ``emulator-deviation: <name>``, never ``agree`` and never ``disagree``;
a detector must therefore say yes only for rows whose MMU answer the deviation can have changed.
Each deviation has a test that shows it still exists (tests/verify/test_verify_*.py,
tests/machines/test_machine_*.py), so a fixed emulator fails a test instead of hiding a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archs.linux import LinuxPgtable


@dataclass(frozen=True)
class Deviation:
    name: str
    arch: str
    summary: str
    reference: str
    detect: Callable[[LinuxPgtable, Any, Any], bool] | None = None


REGISTRY: list[Deviation] = [
    Deviation(
        "x86-1g-pages-without-pdpe1gb",
        "x86_64",
        "1-GByte pages translate although the default CPU model's CPUID.80000001H:EDX.Page1GB[26] is 0",
        "Intel SDM vol. 3A §4.1.4 and §4.5.5 (PS in a PDPTE is reserved without 1-GByte page support)",
    ),
    Deviation(
        "x86-la57-cleared-in-long-mode",
        "x86_64",
        "CR4.LA57 can be changed while IA32_EFER.LMA=1 without #GP",
        "Intel SDM vol. 3A §4.1.1 (MOV to CR4 changing LA57 with LMA=1 causes #GP)",
    ),
    Deviation(
        "x86-pat-pcd-pwt-g-ignored",
        "x86_64",
        "PAT, PCD, PWT and G have no effect on translation results (no caching/TLB-global model)",
        "Intel SDM vol. 3A §4.9 (paging and memory typing), §4.10.2.4 (global pages)",
    ),
    # -- found on QEMU 7.2 (emu/machines/placement.py places every deviation per emulator) ----------
    Deviation(
        "x86-rsvd-fault-without-p",
        "x86_64",
        "a #PF for a reserved bit set in a present paging-structure entry has error code RSVD "
        "without P (0x8 for a read, 0xa for a write) instead of P | RSVD; no verdict depends on it "
        "(the judge reads only P and RSVD together)",
        "Intel SDM vol. 3A §4.7 (RSVD: 'bit 3 of the error code can be set only if bit 0 is also "
        "set'); test: tests/machines/test_machine_qemu_x86_64.py::test_reserved_bits_fault",
    ),
    # -- s390x (tests: tests/verify/test_verify_s390x.py) ----------------------------------------------
    Deviation(
        "s390x-lra-cc3-for-every-exception",
        "s390x",
        "LRA/LRAG set condition code 3 with the interruption code in R1 for every translation "
        "exception; an invalid segment-table entry should give cc 1 and an invalid page-table "
        "entry cc 2, each with the entry's real address in R1 (the probes read faults from a real "
        "load instead, so no row depends on it)",
        "PoP SA22-7832 ch. 10, LOAD REAL ADDRESS (resulting condition code); ORACLE-NOTES s390x",
    ),
    Deviation(
        "s390x-key-controlled-protection-not-implemented",
        "s390x",
        "storage keys are kept (SSKE/ISKE) but never checked: a store, or a fetch from a "
        "fetch-protected frame, with a PSW key that matches neither 0 nor the frame's access "
        "key succeeds instead of raising a protection exception (0x04)",
        "PoP SA22-7832 ch. 3, Key-Controlled Protection; QEMU target/s390x/mmu_helper.c "
        "mmu_handle_skey() 'TODO: key-controlled protection'; ORACLE-NOTES s390x; found by "
        "foliowalk conform --arch s390x (emu/conform/s390x.py), test: "
        "tests/conform/test_conform_s390x.py::test_key_controlled_protection_is_not_implemented",
    ),
    Deviation(
        "s390x-access-register-mode-aborts",
        "s390x",
        "a PSW with ASC=01 (access-register mode) makes the emulator call abort()/exit(1): the "
        "whole host process dies instead of the address being translated through an ALET",
        "PoP SA22-7832 ch. 5, Access-Register Translation; ch. 4, PSW bits 16-17; QEMU "
        "cpu_mmu_index() / lowprot_enabled(); ORACLE-NOTES s390x",
    ),
    Deviation(
        "s390x-edat-not-in-cpu-models",
        "s390x",
        "no CPU model has the enhanced-DAT facilities (STFLE bits 8 and 78): with CR0.EDAT set, "
        "segment- and region-third-table entries with FC=1 are still taken as table pointers; "
        "the machine turns them on inside the library and proves it at start-up, else large "
        "entries are oracle-cannot-check",
        "PoP SA22-7832 ch. 3, Enhanced DAT (EDAT-1 1 MB segments, EDAT-2 2 GB regions); "
        "emu/machines/s390x/edat.py; ORACLE-NOTES s390x",
    ),
    Deviation(
        "s390x-iep-not-in-cpu-models",
        "s390x",
        "the z14, z14 ZR1, gen15a and gen15b models lack the instruction-execution-protection "
        "facility (STFLE bit 130) that those machines have (they are built from their base feature "
        "lists; only 'max' has it): with CR0 bit 43 set, an instruction fetch from a page whose "
        "PTE has the IEP bit (55) runs instead of raising a protection exception; foliowalk "
        "conform sets the bit in the z13 model like EDAT (emu/machines/s390x/edat.py)",
        "PoP SA22-7832 ch. 3, Instruction-Execution Protection; ch. 4, facility indications "
        "(bit 130); test: tests/conform/test_conform_s390x.py::test_iep_facility_missing_from_cpu_models",
    ),
]


def register(dev: Deviation) -> None:
    """Add an architecture's deviations (machine modules call this at import)."""
    if any(d.name == dev.name for d in REGISTRY):
        return
    REGISTRY.append(dev)
    _DETECTORS.clear()


def for_arch(arch: str) -> list[Deviation]:
    loader = _LAZY.get(arch)
    if loader is not None:  # registered on first use; dropped only once it has succeeded
        loader()
        _LAZY.pop(arch, None)
    return [d for d in REGISTRY if d.arch == arch]


#: arch -> its deviations that have a detector, with the detector (the judge asks for every row).
_DETECTORS: dict[str, tuple[tuple[Deviation, Callable[[LinuxPgtable, Any, Any], bool]], ...]] = {}


def _detectors(arch: str) -> tuple[tuple[Deviation, Callable[[LinuxPgtable, Any, Any], bool]], ...]:
    found = _DETECTORS.get(arch)
    if found is None:
        found = tuple((d, d.detect) for d in for_arch(arch) if d.detect is not None)
        _DETECTORS[arch] = found
    return found


def explain(ops: LinuxPgtable, walk: Any, mmu: Any) -> Deviation | None:
    """The registered deviation the row (walk result, MMU result) hits, if any: the first in
    registry order (:func:`explain_all` gives every one)."""
    for dev, detect in _detectors(ops.arch):
        if detect(ops, walk, mmu):
            return dev
    return None


def explain_all(ops: LinuxPgtable, walk: Any, mmu: Any) -> list[Deviation]:
    """Every registered deviation the row (walk result, MMU result) hits, in registry order."""
    return [dev for dev, detect in _detectors(ops.arch) if detect(ops, walk, mmu)]


@dataclass(frozen=True)
class _ArchWalk:
    """The architecture's answer in the shape the detectors read a walk in: ``trace`` as
    (Linux level, physical address, value) per entry read, ``reason`` empty (the manual's walk
    reads no table outside memory: it reads what the caller's reader returns)."""

    trace: list[tuple[str, int, int]]
    reason: str = ""


def explain_answers(ops: LinuxPgtable, answer: Any, mmu: Any) -> list[Deviation]:
    """Every registered deviation that explains why the MMU's answer ``mmu`` (a machine's
    Translation / Fault) differs from the architecture's ``answer`` (``archs.<arch>.translate``:
    an ``archs.translate`` Translation or Fault whose trace names hardware levels of ``ops``'s
    configuration) -- no Linux walk needed."""
    names = {lv.name: lv.linux for lv in ops.config.levels}
    trace = [(names[e.level], e.pa, e.value) for e in answer.trace if e.level in names]
    return explain_all(ops, _ArchWalk(trace), mmu)


# -- arm64 ----------------------------------------------------------------------------------------
# The facts (summary, Arm ARM reference, the test that shows each still exists) are the machine's
# own list, emu/machines/arm64/unicorn_deviations.py DEVIATIONS; here each gets the detector that finds the rows it
# can affect.  Registered on first use (importing the machine module imports Unicorn).

#: The PA size Unicorn's Cortex-A72 model implements: ID_AA64MMFR0_EL1.PARange = 0b0100, 44 bits
#: (TCR_EL1.IPS = 48 is capped by it, Arm ARM D8 "Address size configuration").  Checked against
#: the running machine by tests/verify/test_verify_arm64.py.
ARM64_EFFECTIVE_PA_BITS = 44
#: Descriptor bits 49:44: address bits at or above the PA size.  Bits 49:48 are RES0 with a 48-bit
#: OA (Unicorn drops them) but Linux's PTE_ADDR_LOW reads them; bits 51:50 are DBM/GP in a leaf
#: and IGNORED/RES0 in a table descriptor, never address bits without FEAT_LPA/LPA2.
_ARM64_OA_OVER_PA = ((1 << 50) - 1) & ~((1 << ARM64_EFFECTIVE_PA_BITS) - 1)
_ARM64_CONT = 1 << 52


def _arm64_path(ops: LinuxPgtable, walk: Any) -> list[tuple[int, int, int | None]]:
    """The entries the walk read that the MMU's walk reads too, once each (a folded Linux level
    reads its lower neighbour's entry again): (architectural level, value, block size 2**n there
    or None if the configuration allows no block at that level).  The path ends at the first
    invalid descriptor (bit[0] = 0): there the architecture and Unicorn (get_phys_addr_lpae) both
    stop with a Translation fault, so no entry Linux read below it can change the MMU's answer."""
    trace = walk.trace
    last = _ARM64_PATH_LAST
    if last[0] is trace and last[1] is ops and last[2] == len(trace):  # the row's other detectors
        return last[3]  # type: ignore[no-any-return]
    seen: set[int] = set()
    out = []
    for linux, pa, val in trace:
        if pa in seen:
            continue
        seen.add(pa)
        hw = ops.hw_level(linux)
        level = int(hw.name[1:])
        # a block level: Linux's leaf levels, and those the 52-bit OA formats add (archs.arm64
        # BLOCK_LEVELS_52: 4K level 0, 16K and 64K level 1), where Linux makes no leaf
        block = hw.leaf_size or level in getattr(ops, "hw_block_levels", ())
        out.append((level, val, 1 << hw.shift if block else None))
        if not val & 1:
            break
    # (holding the trace and ops keeps their ids from being reused; a trace is never changed
    # once its walk has ended)
    _ARM64_PATH_LAST[:] = [trace, ops, len(trace), out]
    return out


#: the last (trace, ops, len(trace), path) of _arm64_path(): explain() asks it once per detector
_ARM64_PATH_LAST: list[Any] = [None, None, -1, None]


def _arm64_block_at_any_level(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """A valid descriptor with bits[1:0] = 0b01 at a level that has no blocks (4K level 0, 16K
    levels 0/1, 64K level 1) on the path, and the MMU did not give the level's Translation fault."""
    for level, val, block in _arm64_path(ops, walk):
        if level < 3 and block is None and val & 3 == 1:
            return not (getattr(mmu, "kind", None) == "translation" and getattr(mmu, "level", None) == level)
    return False


def _arm64_block_oa_ored(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """A block (bits[1:0] = 0b01, level < 3) on the path with RES0 bits set between the granule
    and the block size, and the MMU translated (Unicorn ORs those bits into the PA)."""
    if getattr(mmu, "pa", None) is None:
        return False
    for level, val, _block in _arm64_path(ops, walk):
        if level < 3 and val & 3 == 1:
            n = ops.config.levels[[lv.name for lv in ops.config.levels].index(f"L{level}")].shift
            return bool(val & ((1 << n) - 1) & ~((1 << ops.config.page_shift) - 1))
    return False


def _arm64_no_address_size_fault(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """A valid descriptor on the path whose address bits 49:44 are not 0 (a table or output
    address above the 44-bit PA size, or bits 49:48 that Unicorn drops), or a translation to a PA
    of 2**44 or more: the architecture gives an Address size fault, Unicorn translates."""
    if getattr(mmu, "pa", 0) >> ARM64_EFFECTIVE_PA_BITS:
        return True
    return any(val & 1 and val & _ARM64_OA_OVER_PA for _level, val, _block in _arm64_path(ops, walk))


def _arm64_contiguous_ignored(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """The leaf on the path (a valid page, or a valid block) has the Contiguous bit: Unicorn
    never treats the run as one translation (or a misprogrammed run as a TLB conflict), so the
    row cannot confirm what the architecture allows for it."""
    for level, val, _block in _arm64_path(ops, walk):
        if val & 1 and (level == 3 or not val & 2):
            return bool(val & _ARM64_CONT)
    return False


def _arm64_txsz_clamped(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """The configuration's TxSZ (64 - va_bits) is outside 16..39: Unicorn clamps it."""
    return not 16 <= 64 - ops.config.va_bits <= 39


def _arm64_walk_outside_ram(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """Linux's walk reached a table outside RAM (it would read a bus error); the MMU's walk read
    zeros there and reports a Translation fault at that table's level instead of a Synchronous
    External abort.  A Translation fault at another level (an invalid descriptor above the table,
    which Linux walked through) is the architecture's answer: the MMU never read outside RAM.
    Also where Linux read a table through arm64's ``__va()`` alias and the MMU the table's own
    address beyond RAM (a Translation fault at that table's level)."""
    if getattr(mmu, "kind", None) != "translation":
        return False
    if walk.reason.startswith("unreadable@"):
        return getattr(mmu, "level", None) == int(ops.hw_level(walk.reason.split("@", 1)[1]).name[1:])
    # Linux read a table through a __va() alias (archs/arm64.py pgtable_pa(): an address with bits
    # at or above VA_BITS, so at or above 2**VA_BITS >= 64 GiB, beyond guest RAM), the MMU at the
    # address itself: a Translation fault at that table's level is the MMU reading zeros there.
    for (lv, _pa, val), (nlv, npa, _nval) in zip(walk.trace, walk.trace[1:], strict=False):
        if nlv == lv or lv == "pte":
            continue
        alias, table = ops.pgtable_pa(lv, val), ops.table_pa(lv, val)
        if alias != table and alias <= npa < alias + ops.hw_level(nlv).table_size:
            return getattr(mmu, "level", None) == int(ops.hw_level(nlv).name[1:])
    return False


#: name -> detector, in the order rows are matched (configuration-wide first, then the walk
#: reading outside RAM, then address size, then the descriptor-level ones).
_ARM64_DETECTORS: dict[str, Callable[[LinuxPgtable, Any, Any], bool] | None] = {
    "txsz-clamped": _arm64_txsz_clamped,
    "walk-outside-ram-reads-zero": _arm64_walk_outside_ram,
    "no-address-size-fault": _arm64_no_address_size_fault,
    "block-at-any-level": _arm64_block_at_any_level,
    "block-oa-ored": _arm64_block_oa_ored,
    "contiguous-ignored": _arm64_contiguous_ignored,
    # A 16KB walk done as the Arm ARM specifies for a PE that implements TGran16: no translation
    # result differs from such a PE's, so no row is marked (the test shows the ID field is 0).
    "tgran16-unimplemented-but-used": None,
}


_ARM64_OA_49_48 = 3 << 48


def _arm64_oa_49_48_ignored(ops: LinuxPgtable, walk: Any, mmu: Any) -> bool:
    """A valid descriptor on the path has bits 49:48 set (RES0 with a 48-bit OA and TCR.DS = 0;
    Linux's PA_BITS_52 PTE_ADDR_LOW reads them as OA[49:48]) and the MMU did not give an Address
    size fault: it dropped them."""
    if getattr(mmu, "kind", None) == "address-size":
        return False
    if getattr(ops, "oa", "48") != "48":
        # the 52-bit formats (archs.arm64 OA52): with LPA2 bits 49:48 are OA[49:48]; with 64KB and a
        # 52-bit OA they are RES0 and the architecture's view (hw_oa) leaves them out as QEMU does
        return False
    return any(val & 1 and val & _ARM64_OA_49_48 for _level, val, _block in _arm64_path(ops, walk))


#: Found on QEMU 7.2 (emu/machines/placement.py): registered after Unicorn's own arm64 list, so a
#: Unicorn row keeps the name no-address-size-fault, which covers these descriptors there.
ARM64_QEMU_FOUND = Deviation(
    "oa-bits-49-48-ignored", "arm64",
    "a valid descriptor with bits 49:48 set (the 4KB/16KB granule, TCR_EL1.DS = 0, 48-bit OA) "
    "translates with those bits dropped; Linux (CONFIG_ARM64_PA_BITS_52) reads them as OA[49:48]. "
    "Read as the no-address-size-fault deviation reads them on Unicorn: the architecture's "
    "Address size fault",
    "Arm ARM DDI 0487, D8 'Translation table descriptor formats' (bits[49:48] RES0 without "
    "FEAT_LPA2/DS) and 'Address size configuration'; test: "
    "tests/machines/test_placement.py (check_arm64_oa_bits_49_48)",
    _arm64_oa_49_48_ignored,
)


def _register_arm64() -> None:
    from emu.machines.arm64 import DEVIATIONS

    facts = {d.name: d for d in DEVIATIONS}
    unknown = set(facts) - set(_ARM64_DETECTORS)
    if unknown:  # a new machine deviation must be given a detector (or None) here
        raise RuntimeError(f"arm64 deviations without a detector entry: {sorted(unknown)}")
    for name, detect in _ARM64_DETECTORS.items():
        d = facts[name]
        register(Deviation(
            d.name, "arm64", d.summary,
            f"{d.arm_arm_reference} ORACLE-NOTES arm64; test: tests/machines/test_machine_arm64.py::{d.test}",
            detect,
        ))
    register(ARM64_QEMU_FOUND)


_LAZY: dict[str, Callable[[], None]] = {"arm64": _register_arm64}
