"""The kernel harness: Linux's own inlines compiled from Debian's 6.12 tree, run as guest code,
against foliowalk's model.  Every expected value here is computed by the compiled kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

import archs
from archs.kconfig import PROFILES, kernel_config
from emu.errors import ConfigError
from emu.kernel import toolchain as tc_mod
from emu.kernel.build import HarnessBuild, not_yet
from emu.kernel.check import MODEL_OPS, check, prot_of
from emu.kernel.image import HarnessImageError
from emu.kernel.runner import HarnessRunError, KernelHarness
from emu.kernel.tree import user_tree

#: every configuration with a compiled-kernel harness: not arm64's 52-bit ones, which
#: emu.kernel.build.not_yet() names (tests/kernel/test_harness.py::test_52bit_configs_have_no_harness_yet)
ALL_CONFIGS = [k for k in archs.all_config_keys() if not not_yet(archs.get_config(k))]
# the README's x86-64 migration rows and the example: raw PTEs whose meaning depends on Kconfig
MIGRATION_READ_24 = 0xC7FFFFFFFFFFFA00  # swap type 24: migration-read only with DEVICE_PRIVATE=y
TYPE_25 = 0xCFFFFFFFFFFF1C00


@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_model_matches_the_compiled_kernel(config: str, harness_build: Callable[..., HarnessBuild]) -> None:
    """Every predicate, decoder, encoder, index function and constant the harness exports, on
    every encoding the model makes (each with every bit flipped) plus noise: no difference."""
    build = harness_build(config)
    report = check(build, config, n=20_000, seed=1)
    compared = [o for o in report.ops if not o.note]
    assert len(compared) >= 40
    assert report.unmodelled == []  # every op the harness exports has a model answer
    problems = [(o.op, o.count, o.examples[:2]) for o in report.ops if o.count]
    problems += [(n, k, m) for n, k, m in report.constants if m is not None and k != m]
    assert problems == []
    assert {n for n, _, m in report.constants if m is not None} >= {
        "MAX_SWAPFILES", "SWP_MIGRATION_READ", "SWP_PTE_MARKER", "PAGE_SHIFT", "SWP_PFN_BITS"}


@pytest.mark.parametrize("arch,config", [("x86_64", "x86_64:4level"), ("arm64", "arm64:4k:48"),
                                         ("s390x", "s390x:region3")])
@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("version", ["6.12", "6.1"])
def test_kconfig_resolution_matches_kbuild(arch: str, config: str, profile: str, version: str,
                                           harness_build: Callable[..., HarnessBuild]) -> None:
    """archs.kconfig predicts which layout options a profile ends up with on each arch and kernel
    version; the .config that Kconfig itself resolved must say the same."""
    build = harness_build(config, profile, version)
    assert build.kconfig.options == kernel_config(arch, profile, version).options


def test_device_private_decides_what_a_swap_type_means(harness: Callable[..., KernelHarness]) -> None:
    """include/linux/swap.h (6.12): SWP_DEVICE_NUM is 4 with CONFIG_DEVICE_PRIVATE, else 0, so
    type 24 is migration-read on one kernel and an ordinary swap file on the other."""
    answers = {}
    for profile in ("distro", "device-private"):
        h = harness("x86_64:4level", profile)
        ops = archs.get_ops("x86_64:4level", kconfig=h.build.kconfig)
        vals = [MIGRATION_READ_24, TYPE_25]
        types, mig = h.eval("pte_swp_type", vals), h.eval("is_migration_entry", vals)
        kernel = [(int(t), bool(m)) for t, m in zip(types, mig, strict=True)]
        model = [(ops.pte_to_swp_entry(v).type, ops.swap.is_migration_entry(ops.pte_to_swp_entry(v))) for v in vals]
        assert model == kernel
        answers[profile] = kernel
        consts = h.constants()
        assert consts["SWP_MIGRATION_READ"] == ops.swap.SWP_MIGRATION_READ
    assert answers["distro"] == [(24, False), (25, False)]
    assert answers["device-private"] == [(24, True), (25, True)]


def test_an_altered_model_predicate_is_caught(harness_build: Callable[..., HarnessBuild]) -> None:
    """A model whose pte_present() forgets PROT_NONE (x86 _PAGE_PROTNONE) must show differences."""
    build = harness_build("x86_64:4level")
    ops = archs.get_ops("x86_64:4level", kconfig=build.kconfig)
    ops.pte_present = lambda pte: bool(pte & 1)  # type: ignore[method-assign]
    report = check(build, "x86_64:4level", n=5_000, model=ops)
    bad = {o.op: o for o in report.ops if o.count}
    assert "pte_present" in bad and bad["pte_present"].examples
    assert report.differences > 0


def test_encoders_the_harness_found(harness: Callable[..., KernelHarness]) -> None:
    """The leaves the model made wrong until the compiled kernel's pfn_pte op showed it, as hand-
    built values from v6.12 arch/x86/include/asm/pgtable.h and pgtable_types.h: pte_mkdirty() sets
    _PAGE_SOFT_DIRTY (bit 11, MEM_SOFT_DIRTY=y) and on a Write=0 entry moves Dirty to
    _PAGE_SAVED_DIRTY (bit 58, mksaveddirty_shift()); pte_mkold() clears PAGE_NONE's Accessed;
    pte_mkspecial() applies to PROT_NONE as to any pgprot."""
    h = harness("x86_64:4level")
    ops = archs.get_ops("x86_64:4level", kconfig=h.build.kconfig)
    pfn = 0x1234
    p, rw, us, a, d, g, special, soft_dirty, saved_dirty, nx = (
        1, 2, 4, 1 << 5, 1 << 6, 1 << 8, 1 << 9, 1 << 11, 1 << 58, 1 << 63)
    cases = {  # harness protection bits (check.PROT_BITS) -> the entry the kernel makes
        0b0001101: (pfn << 12) | p | rw | us | a | d | soft_dirty | nx,  # write young dirty
        0b0001100: (pfn << 12) | p | us | a | saved_dirty | soft_dirty | nx,  # read-only young dirty
        0b1000000: (~pfn << 12) & ((1 << 52) - 1) & ~0xFFF | g,  # PROT_NONE, old (pfn inverted: L1TF)
        0b1010100: (~pfn << 12) & ((1 << 52) - 1) & ~0xFFF | a | g | special,  # PROT_NONE young special
    }
    got = h.eval("pfn_pte", [pfn] * len(cases), list(cases)).tolist()
    assert got == list(cases.values())
    assert [ops.pfn_pte(pfn, prot_of(b)) for b in cases] == got


def test_runner_errors_are_named(harness: Callable[..., KernelHarness]) -> None:
    h = harness("x86_64:4level")
    with pytest.raises(HarnessImageError, match="no op 'pte_frobnicate'"):
        h.eval("pte_frobnicate", [0])
    with pytest.raises(HarnessRunError, match="harness failed"):
        h._call(0xDEAD0000, (0, 0, 0, 0))
    assert h.eval("pte_none", np.array([0, 1], dtype=np.uint64)).tolist() == [1, 0]  # still usable


def test_every_model_op_exists_in_the_harness(harness: Callable[..., KernelHarness]) -> None:
    assert set(MODEL_OPS) <= set(harness("x86_64:4level").ops)


def test_missing_toolchain_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc_mod.shutil, "which", lambda name: None)
    with pytest.raises(tc_mod.ToolchainMissing, match="apt-get install .*gcc-aarch64-linux-gnu"):
        tc_mod.toolchain("arm64")


def test_a_folder_that_is_not_a_tree(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="not a kernel tree"):
        user_tree(tmp_path)


def test_kernel_check_command(harness_build: Callable[..., HarnessBuild]) -> None:
    harness_build("x86_64:4level")  # built (or the toolchain's absence reported) first
    res = subprocess.run([sys.executable, "-m", "emu", "kernel", "check", "--config", "x86_64:4level",
                          "-n", "2000", "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc[0]["differences"] == 0 and doc[0]["release"].startswith("6.12.")


def test_verify_names_the_function_a_broken_model_gets_wrong(
    harness_build: Callable[..., HarnessBuild], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model whose pte_pfn() is off by one: with the harness, verify's rows say which kernel
    function disagrees (before the MMU comparison), and verify exits 1."""
    import emu.mm.pagewalk_batch
    from archs import x86_64
    from emu import cli

    harness_build("x86_64:4level")
    real = x86_64.X86_64.pte_pfn
    monkeypatch.setattr(x86_64.X86_64, "pte_pfn", lambda self, pte: real(self, pte) + 1)
    monkeypatch.setattr(emu.mm.pagewalk_batch, "VECTOR_RULES", {})
    assert cli.main(["verify", "--config", "x86_64:4level", "--harness", "on"]) == 1
    out = capsys.readouterr().out
    assert "disagree: model-vs-kernel pte_pfn on pte@" in out
    assert "(compiled)" in out and " differ" in out and ", 0 differ" not in out


def test_52bit_configs_have_no_harness_yet() -> None:
    """arm64's 52-bit configurations are left out of ALL_CONFIGS by name: building their harness
    is refused with the reason, and verify --harness on checks them against the model only."""
    from emu.kernel.build import build_harness
    from emu.verify import kernel_view

    wide = [k for k in archs.all_config_keys() if not_yet(archs.get_config(k))]
    assert wide == ["arm64:4k:52", "arm64:16k:52", "arm64:64k:52"]
    for key in wide:
        with pytest.raises(ConfigError, match="no compiled-kernel harness for .* yet: .*FEAT_LPA2/FEAT_LVA"):
            build_harness(key)
        _kconfig, audit, note = kernel_view(key, None, "on")
        assert audit is None and "model only: no compiled-kernel harness" in note


def test_verify_with_the_harness_is_clean_on_every_configuration(harness_build: Callable[..., HarnessBuild]) -> None:
    """The default scenarios with every entry also asked of the compiled kernel: no difference."""
    from emu.verify import verify_configs

    for key in ALL_CONFIGS:
        harness_build(key)
    report = verify_configs(ALL_CONFIGS, harness="on")
    # two lines per configuration: the predicates (audit), the kernel's own folio_walk_start()
    predicates = [k for k in report.kernel if "kernel walk" not in k]
    walks = [k for k in report.kernel if "kernel walk" in k]
    assert report.ok and len(predicates) == len(walks) == len(ALL_CONFIGS)
    assert all("(compiled)" in k and k.endswith(", 0 differ") for k in predicates), predicates
    for key, k in zip(ALL_CONFIGS, walks, strict=True):
        assert k.startswith(f"{key}: kernel walk")
        assert k.endswith(" rows walked, 0 differ") or f"kernel walk not available on {key.split(':')[0]}: " in k, k
    assert any(k.endswith(" rows walked, 0 differ") for k in walks)


def test_a_fresh_cpu_answers_as_the_first(harness_build, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The predicate harness takes a fresh CPU after RENEW_STARTS emu_start() calls (Unicorn keeps
    memory per call until the Uc is closed) and replays the run-time state (zero page, 5-level
    paging): with a renewal before every eval, every answer is the model's."""
    from emu.kernel import uc_renewal

    config = "x86_64:5level"
    ops = archs.get_ops(config)
    h = KernelHarness(harness_build(config), config)
    try:
        h.eval("set_zero_page", [0x1234])
        monkeypatch.setattr(uc_renewal, "RENEW_STARTS", 1)
        first = h.uc
        vals = [0x8000_0000_0000_0025, 0x1234_000 | 0x67, 0x80 | 0x1, 0]
        pfns = h.eval("pte_pfn", vals)
        assert h.uc is not first
        assert pfns.tolist() == [MODEL_OPS["pte_pfn"](ops, v, 0) for v in vals]
        assert h.eval("is_zero_pfn", [0x1234, 0x1235]).tolist() == [1, 0]  # the zero pfn set above
        # bit 48 is PGD index 1 with 5-level paging (fw_setup's __pgtable_l5_enabled), 0 without
        assert h.eval("pgd_index", [1 << 48]).tolist() == [1]
    finally:
        h.close()
