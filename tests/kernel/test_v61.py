"""The model of Linux 6.1 LTS (Debian's linux-source-6.1, 6.1.192) against the compiled 6.1 kernel.

The 6.1 model is for predicates, encoders and constants (fixtures and forensics of 6.1 dumps), not
for walks: folio_walk_start() did not exist in 6.1.  Every expected value pinned below was
obtained FROM THE COMPILED KERNEL (the harness built from linux-source-6.1 with the "distro"
profile, run in Unicorn) and is asserted both as the kernel's answer and as the model's.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import archs
from archs import arm64 as a64
from archs import x86_64 as x86
from archs.linux import SwpEntry
from emu.kernel.build import HarnessBuild, not_yet
from emu.kernel.check import check
from emu.kernel.runner import KernelHarness

#: every configuration with a compiled-kernel harness: not arm64's 52-bit ones, which
#: emu.kernel.build.not_yet() names (tests/kernel/test_harness.py::test_52bit_configs_have_no_harness_yet)
ALL_CONFIGS = [k for k in archs.all_config_keys() if not not_yet(archs.get_config(k))]
V61 = "6.1"


def _model(h: KernelHarness) -> archs.LinuxPgtable:
    return archs.get_ops(h.config.key, kconfig=h.build.kconfig)


def _kernel(h: KernelHarness, op: str, a: list[int], b: list[int] | None = None) -> list[int]:
    return [int(v) for v in h.eval(op, a, b)]


@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_model_matches_the_compiled_6_1_kernel(config: str, harness_build: Callable[..., HarnessBuild]) -> None:
    """Every predicate, decoder, encoder, index function and constant the harness exports from the
    6.1 tree, on every encoding the 6.1 model makes (each with every bit flipped) plus noise: no
    difference."""
    build = harness_build(config, "distro", V61)
    assert build.tree.release.startswith("6.1.") and build.kconfig.version == V61
    report = check(build, config, n=20_000, seed=1)
    compared = [o for o in report.ops if not o.note]
    assert len(compared) >= 40
    # pmd_special()/pud_special() are v6.12's; arm64's p4d_index() came with v6.9; s390 has no
    # pmd_mkinvalid()
    absent = {"pmd_special", "pud_special", "p4d_index", "pud_pfn"}
    absent |= {"pmd_mkinvalid"} if config.startswith("s390x") else set()
    assert {o.op for o in report.ops if o.note} <= absent
    assert report.unmodelled == []  # every op the harness exports has a model answer
    problems = [(o.op, o.count, o.examples[:2]) for o in report.ops if o.count]
    problems += [(n, k, m) for n, k, m in report.constants if m is not None and k != m]
    assert problems == []
    assert {n for n, _, m in report.constants if m is not None} >= {
        "MAX_SWAPFILES", "SWP_MIGRATION_READ", "PAGE_SHIFT", "SWP_PFN_BITS", "SWP_PTE_MARKER_NUM"}


# -- swap.h 6.1: SWP_SWAPIN_ERROR takes the last type ----------------------------------------------
#: measured on the 6.1.192 distro builds: (MAX_SWAPFILES, SWP_HWPOISON, SWP_MIGRATION_READ,
#: SWP_MIGRATION_WRITE, SWP_PTE_MARKER or None); type 31 is then SWP_SWAPIN_ERROR everywhere.
SWAP_NUMBERS_61 = {
    "x86_64:4level": (26, 26, 27, 29, 30),  # HWPOISON, MIGRATION x3, PTE_MARKER, SWAPIN_ERROR
    "arm64:4k:48": (27, 27, 28, 30, None),  # no PTE_MARKER: arm64 6.1 has no HAVE_ARCH_USERFAULTFD_WP
    "s390x:region3": (28, None, 28, 30, None),  # no MEMORY_FAILURE, no PTE_MARKER on s390
}


@pytest.mark.parametrize("config", sorted(SWAP_NUMBERS_61))
def test_swapin_error_is_the_last_swap_type(config: str, harness: Callable[..., KernelHarness]) -> None:
    h = harness(config, "distro", V61)
    ops = _model(h)
    consts = h.constants()
    kernel = (consts["MAX_SWAPFILES"], consts.get("SWP_HWPOISON"), consts["SWP_MIGRATION_READ"],
              consts["SWP_MIGRATION_WRITE"], consts.get("SWP_PTE_MARKER"))
    sw = ops.swap
    model = (sw.MAX_SWAPFILES, sw.SWP_HWPOISON, sw.SWP_MIGRATION_READ, sw.SWP_MIGRATION_WRITE, sw.SWP_PTE_MARKER)
    assert kernel == model == SWAP_NUMBERS_61[config]
    assert sw.SWP_SWAPIN_ERROR == 31 and sw.name(31) == "swapin-error"
    # the kernel's own swap PTE of type 31: a non-swapfile entry that no predicate claims
    pte = _kernel(h, "swp_entry_to_pte", [31], [0x55])[0]
    assert ops.swp_entry_to_pte(SwpEntry(31, 0x55)) == pte
    for op in ("is_migration_entry", "is_hwpoison_entry", "is_pte_marker_entry", "is_pfn_swap_entry",
               "is_device_private_entry"):
        assert _kernel(h, op, [pte]) == [0], op
    entry = ops.pte_to_swp_entry(pte)
    assert (entry.type, entry.offset) == (_kernel(h, "pte_swp_type", [pte])[0], 0x55) == (31, 0x55)
    assert ops.swap.is_swapin_error_entry(entry) and not ops.swap.is_pfn_swap_entry(entry)


#: migration_entry_to_pte(pfn 0x1234, writable): (PTE, swap type) as the 6.1.192 kernel built them.
MIGRATION_WRITE_PTE_61 = {
    "x86_64:4level": (0xEFFFFFFFFFDB9600, 29),
    "arm64:4k:48": (0x1234F0, 30),  # type in bits 3-7, offset from bit 8
    "s390x:region3": (0x1234678, 30),
}


@pytest.mark.parametrize("config", sorted(MIGRATION_WRITE_PTE_61))
def test_migration_pte_pinned(config: str, harness: Callable[..., KernelHarness]) -> None:
    h = harness(config, "distro", V61)
    ops = _model(h)
    pte, swp_type = MIGRATION_WRITE_PTE_61[config]
    assert _kernel(h, "migration_entry_to_pte", [0x1234], [2]) == [pte]
    assert _kernel(h, "pte_swp_type", [pte]) == [swp_type]
    assert _kernel(h, "is_writable_migration_entry", [pte]) == [1]
    write = ops.swap.migration_types["write"]
    assert write == swp_type
    assert ops.swp_entry_to_pte(ops.make_pfn_swp_entry(write, 0x1234)) == pte
    entry = ops.pte_to_swp_entry(pte)
    assert (entry.type, ops.swp_offset_pfn(entry)) == (swp_type, 0x1234)
    assert ops.swap.is_writable_migration_entry(entry)


# -- x86-64 6.1 --------------------------------------------------------------------------------------
def test_x86_devmap_is_bit_58_in_6_1(harness: Callable[..., KernelHarness]) -> None:
    """v6.1 pgtable_types.h: _PAGE_BIT_DEVMAP = _PAGE_BIT_SOFTW4 = 58 (v6.12: 57)."""
    h = harness("x86_64:4level", "distro", V61)
    ops = _model(h)
    bit58, bit57 = 1 << 58, 1 << 57
    leaf58, leaf57 = 0x81 | bit58, 0x81 | bit57  # PRESENT | PSE
    for op in ("pte_devmap", "pmd_devmap", "pud_devmap"):
        assert _kernel(h, op, [bit58, bit57]) == [1, 0], op
        assert [int(getattr(ops, op)(v)) for v in (bit58, bit57)] == [1, 0], op
    # pmd_trans_huge(): PSE without _PAGE_DEVMAP
    assert _kernel(h, "pmd_trans_huge", [leaf58, leaf57]) == [0, 1]
    assert [ops.pmd_trans_huge(v) for v in (leaf58, leaf57)] == [False, True]
    # the mask is derived from the v6.1 construct format, not typed
    assert ops._PAGE_DEVMAP == x86.PTE_4K_V61.mask("devmap") == bit58  # type: ignore[attr-defined]
    assert archs.get_ops("x86_64:4level")._PAGE_DEVMAP == x86._PAGE_DEVMAP == bit57  # type: ignore[attr-defined]


def test_x86_pud_leaf_needs_present_in_6_1(harness: Callable[..., KernelHarness]) -> None:
    """v6.1 pud_leaf() = pud_large(): PSE and PRESENT; v6.12's pud_leaf() tests PSE only."""
    h = harness("x86_64:4level", "distro", V61)
    vals = [0x80, 0x81, 0x4000_0080, 0x4000_0081]
    assert _kernel(h, "pud_leaf", vals) == [0, 1, 0, 1]
    assert [int(_model(h).pud_leaf(v)) for v in vals] == [0, 1, 0, 1]
    assert archs.get_ops("x86_64:4level").pud_leaf(0x80)  # v6.12: PSE alone is a leaf


# -- arm64 6.1 ---------------------------------------------------------------------------------------
def test_arm64_prot_none_is_bit_58_in_6_1(harness: Callable[..., KernelHarness]) -> None:
    """v6.1: PTE_PROT_NONE (bit 58) makes a !PTE_VALID entry present, nG (bit 11) does not (v6.12's
    PTE_PRESENT_INVALID); PMD_PRESENT_INVALID (bit 59) makes a PMD present but not a PTE."""
    h = harness("arm64:4k:48", "distro", V61)
    ops = _model(h)
    page_none = 0x1234000 | a64.PAGE_NONE_V61
    assert page_none == 0x460000001234F82
    vals = [1 << 58, 1 << 11, 1 << 59, page_none, page_none & ~(1 << 58)]
    expected = {  # measured on the 6.1.192 arm64 4k:48 distro build
        "pte_present": [1, 0, 0, 1, 0],
        "pte_protnone": [1, 0, 0, 1, 0],
        "pmd_present": [1, 0, 1, 1, 0],
        "pmd_protnone": [1, 0, 0, 1, 0],
        "pmd_leaf": [1, 0, 1, 1, 0],
        "is_swap_pte": [0, 1, 1, 0, 1],
    }
    model = {
        "pte_present": ops.pte_present, "pte_protnone": ops.pte_protnone, "pmd_present": ops.pmd_present,
        "pmd_protnone": ops.pmd_protnone, "pmd_leaf": ops.pmd_leaf,
        "is_swap_pte": lambda v: not ops.pte_none(v) and not ops.pte_present(v),
    }
    for op, want in expected.items():
        assert _kernel(h, op, vals) == want, op
        assert [int(model[op](v)) for v in vals] == want, op
    assert a64.PTE_PROT_NONE == a64.PAGE_V61[4096].mask("prot_none") == 1 << 58
    assert a64.PMD_PRESENT_INVALID == a64.PAGE_V61[4096].mask("present_invalid") == 1 << 59
    assert archs.get_ops("arm64:4k:48").pte_present(1 << 11)  # v6.12: nG without PTE_VALID is present


def test_arm64_swap_layout_in_6_1(harness: Callable[..., KernelHarness]) -> None:
    """v6.1 __SWP_TYPE_SHIFT 3, __SWP_OFFSET_SHIFT 8 (v6.12: 6 and 12); migration A/D bits above
    SWP_PFN_BITS (36 with 48-bit physical addresses and 4K pages)."""
    h = harness("arm64:4k:48", "distro", V61)
    ops = _model(h)
    assert _kernel(h, "swp_entry_to_pte", [5], [0x1234]) == [0x123428]
    assert ops.swp_entry_to_pte(SwpEntry(5, 0x1234)) == 0x123428
    assert a64.SWAP_V61.masks["type"] == (3, 0x1F << 3) and a64.SWAP_V61.masks["offset"][0] == 8
    young_dirty = _kernel(h, "migration_entry_to_pte", [0x1234], [2 | 4 | 8])[0]
    assert young_dirty == 0x3000001234F0
    assert _kernel(h, "pte_swp_offset", [young_dirty]) == [0x1234 | 1 << 36 | 1 << 37]
    assert ops.swp_pfn_bits() == h.constants()["SWP_PFN_BITS"] == 36
    want = ops.swp_entry_to_pte(ops.make_pfn_swp_entry(ops.swap.migration_types["write"], 0x1234, young=True,
                                                       dirty=True))
    assert want == young_dirty
