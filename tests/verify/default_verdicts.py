"""The verdict each case of the default scenario must give, derived from the seed's semantics
and the hardware's (not from emu/verify.py) -- shared by the per-architecture verify tests."""

from __future__ import annotations

from emu.mm.pagewalk import FW_MIGRATION, FW_ZEROPAGE


def expected_verdict(case: str, flags: int, *, bad_entry: str | None = None) -> str:
    """``bad_entry``: the verdict of the "bad <level> entry" cases where it is not Linux clearing
    an entry the MMU still walks (arm64: a p4d with the table bit clear is an L0 block to Unicorn)."""
    if "PROT_NONE" in case:
        return "linux-only: prot-none"  # Linux: present; MMU: not present / invalid
    if "migration entry" in case:
        return "linux-only: migration-entry" if flags & FW_MIGRATION else "agree"
    if "zero" in case:
        if flags & FW_ZEROPAGE:
            return "agree"
        return "linux-only: not-normal@" + ("pmd:huge-zero-page" if "huge" in case else "pte:zero-page")
    if "VM_PFNMAP" in case:
        return "linux-only: not-normal@pte:special-pfnmap"
    if "special PTE in a VM_MIXEDMAP" in case:
        return "linux-only: not-normal@pte:special-mixedmap"
    if "devmap PUD" in case:
        return "linux-only: devmap@pud"  # folio_walk_start(): pud_devmap()
    if "devmap PMD" in case:
        return "linux-only: not-normal@pmd:devmap"  # vm_normal_page_pmd(): pmd_devmap()
    if case.startswith("bad "):
        return bad_entry or "linux-only: bad@" + case.split()[1]
    if "outside the VMA" in case:
        return "linux-only: outside-vma"
    return "agree"  # pages, leaves, none entries, swap entries
