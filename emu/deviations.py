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
