"""``foliowalk kernel verify``: a patched tree's own folio_walk_start() against the model (v6.12)
and the MMU; the seed as 6.12 with foliowalk's patch (issue 13)."""

from __future__ import annotations

import hashlib
import re

import pytest

from emu.cli import main
from emu.kernel.patched import SEED_PATCH, bundled_patch, patched_tree
from emu.kernel.tree import distro_tree

from .conftest import need_toolchain


def _fn(text: str) -> str:
    """folio_walk_start()'s body in mm/pagewalk.c."""
    m = re.search(r"^struct folio \*folio_walk_start\(.*?^}", text, re.S | re.M)
    assert m
    return m.group(0)


def test_the_seed_patch_makes_a_copy_and_reverts_both_fixes() -> None:
    need_toolchain("x86_64")
    base = distro_tree("6.12")
    orig = (base.path / "mm/pagewalk.c").read_bytes()
    seed = patched_tree(base, bundled_patch(SEED_PATCH))
    assert seed.path != base.path and seed.release == base.release
    assert hashlib.sha256((base.path / "mm/pagewalk.c").read_bytes()).digest() == hashlib.sha256(orig).digest()
    new = _fn((seed.path / "mm/pagewalk.c").read_text())
    old = _fn(orig.decode())
    # 6.12 (after "fix usage of pmd_leaf()/pud_leaf() without present check" and "check pfnmap
    # for folio_walk_start()") ...
    assert "(!pud_present(pud) || pud_leaf(pud))" in old and "pud_special(pud)" in old
    # ... and the seed patch's text (shared/seed/folio_walk_start.patch.txt)
    assert "if (IS_ENABLED(CONFIG_PGTABLE_HAS_HUGE_LEAVES) && pud_leaf(pud)) {" in new
    assert "if (IS_ENABLED(CONFIG_PGTABLE_HAS_HUGE_LEAVES) && pmd_leaf(pmd)) {" in new
    assert "} else if (!pmd_leaf(pmd)) {" in new and "VM_WARN_ON_ONCE(pud_leaf(*pudp));" in new
    assert "VM_WARN_ON_ONCE(pmd_leaf(pmdp_get_lockless(pmdp)));" in new
    assert "pud_special" not in new and "(!pud_present(pud) || pud_leaf(pud))" not in new
    # the rest of the file is 6.12's
    assert (seed.path / "mm/pagewalk.c").read_text().replace(new, "") == orig.decode().replace(old, "")


def test_seed_kernel_departs_exactly_on_the_pmd_migration_rows(capsys) -> None:  # type: ignore[no-untyped-def]
    """The seed takes the PMD branch on pmd_leaf() alone: x86-64's pmd_leaf() is _PAGE_PSE, clear
    in a PMD migration entry (arch/x86/include/asm/pgtable.h, swap entries), so the seed's kernel
    goes to pte_table, where __pte_offset_map() sees a migration entry and gives NULL -- the
    default scenario's three PMD migration entries, with FW_MIGRATION (2 flag sets each)."""
    need_toolchain("x86_64")
    rc = main(["kernel", "verify", "--config", "x86_64:4level", "--kernel-version", "seed", "--cases", "0",
               "--show", "20"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "+ seed-folio_walk_start.patch" in out
    assert "default scenario: 100 rows, 6 depart from the model" in out
    blocks = re.findall(r"^   default +(0x[0-9a-f]+)  ([^\n]*)\n      model +([^\n]*)\n      kernel +([^\n]*)",
                        out, re.M)
    assert len(blocks) == 3
    for _addr, what, model, kernel in blocks:
        assert what.startswith("FW_MIGRATION, FW_MIGRATION|FW_ZEROPAGE") and "PMD" in what and "migration" in what
        assert model.startswith("folio 0x") and " PMD pmd@" in model and kernel == "NULL"


def test_the_release_does_not_depart(capsys) -> None:  # type: ignore[no-untyped-def]
    need_toolchain("x86_64")
    rc = main(["kernel", "verify", "--config", "x86_64:4level", "--cases", "3000"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "default scenario: 100 rows, 0 depart" in out and re.search(r"fuzz: [\d,]+ cases .*: 0 depart", out)


@pytest.mark.parametrize("args, says", [
    (["--patch", "/nonexistent.patch"], "no such file"),
    (["--kernel-version", "seed", "--patch", "x"], ""),
    (["--cases", "-1"], "must be 0 or more"),
])
def test_bad_input_is_one_line_and_exit_2(args, says, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if args[-1] == "x":
        p = tmp_path / "x.patch"
        p.write_text("--- a/mm/pagewalk.c\n+++ b/mm/pagewalk.c\n")
        args = [*args[:-1], str(p)]
    rc = main(["kernel", "verify", "--config", "x86_64:4level", *args])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err


def test_a_patch_that_does_not_apply_is_one_line(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    need_toolchain("x86_64")
    p = tmp_path / "bad.patch"
    p.write_text("--- a/mm/pagewalk.c\n+++ b/mm/pagewalk.c\n@@ -1,1 +1,1 @@\n-no such line here\n+x\n")
    rc = main(["kernel", "verify", "--config", "x86_64:4level", "--patch", str(p), "--cases", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not apply" in err and len(err.strip().splitlines()) == 1


def test_a_tree_without_folio_walk_start_says_so(capsys) -> None:  # type: ignore[no-untyped-def]
    """6.1 predates the seed patch (merged for 6.12): nothing to walk, said in one line, exit 2."""
    need_toolchain("x86_64", "6.1")
    rc = main(["kernel", "verify", "--config", "x86_64:4level", "--kernel-version", "6.1", "--cases", "0"])
    cap = capsys.readouterr()
    assert rc == 2 and "has no folio_walk_start()" in cap.out
    assert cap.err.strip() == "foliowalk kernel verify: no configuration could be walked by this tree's kernel"
