"""The registry of known Unicorn 2.1.4 (QEMU 5 fork) departures from the architectures.

Each :class:`Deviation` names the departure, cites the architecture reference it departs from and
ORACLE-NOTES.md, and (where rows can hit it) carries a detector: given a row the verifier would
call ``disagree``, does this deviation explain it?  Each deviation has a test that shows it still
exists (tests/test_deviations*.py), so a fixed emulator fails a test instead of hiding a bug.
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
    # -- s390x (tests: tests/test_verify_s390x.py) ----------------------------------------------
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
        "mmu_handle_skey() 'TODO: key-controlled protection'; ORACLE-NOTES s390x",
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
        "emu/machines/s390x.py; ORACLE-NOTES s390x",
    ),
]


def register(dev: Deviation) -> None:
    """Add an architecture's deviations (machine modules call this at import)."""
    if any(d.name == dev.name for d in REGISTRY):
        return
    REGISTRY.append(dev)


def for_arch(arch: str) -> list[Deviation]:
    return [d for d in REGISTRY if d.arch == arch]


def explain(ops: LinuxPgtable, walk: Any, mmu: Any) -> Deviation | None:
    """The registered deviation that explains a row judged ``disagree``, if any."""
    for dev in for_arch(ops.arch):
        if dev.detect is not None and dev.detect(ops, walk, mmu):
            return dev
    return None
