"""The judge is one ordered table of named rules (emu/judge.py), and the README's verdict table
names, for every verdict, exactly the rules that give it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import archs
from emu.judge import COMPARISON, RULES, RULES_BY_VERDICT, Views, decide
from emu.mm.scenarios import build_default
from emu.verify import VERDICT_CLASSES, verify_scenario

README = Path(__file__).resolve().parents[2] / "docs" / "verify.md"  # the verdict table (moved from the README)


def test_rules_are_one_ordered_table_with_unique_names() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    assert RULES[-1].name == "agree" and RULES[-1].verdict == "agree"
    assert {r.verdict for r in RULES} == set(VERDICT_CLASSES)
    assert all(r.means for r in RULES)
    assert [n for n in names if n in COMPARISON] == list(COMPARISON)  # in the table's order


def test_readme_verdict_table_names_the_rules_of_each_verdict() -> None:
    text = README.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named: dict[str, set[str]] = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        classes = {m.split(":")[0] for m in re.findall(r"`([a-z-]+)(?::[^`]*)?`", cells[0])}
        if not classes <= set(VERDICT_CLASSES):
            continue
        rules = set(re.findall(r"`([a-z-]+)`", cells[2]))
        for cls in classes:
            named[cls] = named.get(cls, set()) | (rules if len(classes) == 1 else {r for r in rules if
                                                                                     r in RULES_BY_VERDICT[cls]})
    assert set(named) == set(VERDICT_CLASSES)
    for cls in VERDICT_CLASSES:
        assert named[cls] == set(RULES_BY_VERDICT[cls]), cls


def test_each_default_row_is_decided_by_a_rule_of_its_verdict() -> None:
    """On a default scenario, the deciding rule gives the row's verdict class, and the rules that
    tell Linux's design from the hardware's are the ones that decide its linux-only rows."""
    sc = build_default(archs.get_ops("x86_64:4level"))
    try:
        rows = verify_scenario(sc)
        used: Counter[str] = Counter()
        for row in rows:
            rule, verdict = decide(Views(sc.ops, row.walk, row.mmu, sc.oracle, row.addr))
            assert verdict == row.verdict and rule.verdict == row.verdict_class
            used[rule.name] += 1
    finally:
        sc.close()
    assert {"agree", "migration-entry", "absent-to-hardware", "refused-page", "stopped-above"} <= set(used)


def test_a_rules_needs_only_skip_rows_its_test_refuses() -> None:
    """``needs`` is a quick filter: with every filter off, the same rules decide the same rows."""
    unfiltered = tuple(replace(r, needs=0) for r in RULES)
    for key in ("x86_64:4level", "s390x:region1", "arm64:4k:48"):
        sc = build_default(archs.get_ops(key))
        try:
            for row in verify_scenario(sc):
                v = Views(sc.ops, row.walk, row.mmu, sc.oracle, row.addr)
                rule, verdict = decide(v)
                bare, bare_verdict = decide(v, unfiltered)
                assert (rule.name, verdict) == (bare.name, bare_verdict) == (rule.name, row.verdict)
        finally:
            sc.close()


def test_a_kernel_oops_the_model_predicts_is_linux_only() -> None:
    """A migration entry naming a pfn with no struct page (4 TiB: no present memory section),
    walked with FW_MIGRATION: pfn_swap_entry_to_page() reads it and the kernel oopses
    (include/linux/swapops.h, v6.12); the MMU faults on the non-present PTE.  Without
    FW_MIGRATION nothing reads the page: an ordinary migration-entry row."""
    from emu.mm.scenarios import Case

    sc = build_default(archs.get_ops("x86_64:4level"))
    try:
        anon = sc.mm.vmas[0]
        va = 0x100_4000_1000
        sc.builder.set_swap(va, "pte", sc.ops.make_pfn_swp_entry(sc.ops.swap.migration_types["read"], 1 << 30))
        sc.cases = [Case("migration entry, no struct page", va, anon)]
        rows = {r.walk.flags: r for r in verify_scenario(sc)}
    finally:
        sc.close()
    assert rows[0].walk.reason == "migration-entry@pte" and rows[0].verdict == "agree"
    assert rows[1].walk.reason == "oops@pte:no-struct-page"
    assert rows[1].verdict == ("linux-only: kernel-oops@pte:no-struct-page "
                               "(kernel oops: struct page of pfn 0x40000000 does not exist)")


def test_a_refused_write_is_not_a_disagreement() -> None:
    """A user write to the shared zero page (read-only, present): the MMU translates it and
    refuses the write (x86 #PF error code P|W|U = 0x7, arm64 permission fault, s390x protection);
    Linux's walk returns the page, and folio_walk_start() checks no rights: linux-only
    access-refused, never "Linux sees a present entry, the MMU faults"."""
    from emu.machines.base import Access, Fault

    for key in ("x86_64:4level", "arm64:4k:48", "s390x:region3"):
        sc = build_default(archs.get_ops(key))
        try:
            rows = verify_scenario(sc, access=Access("write", user=True))
        finally:
            sc.close()
        assert not [r for r in rows if r.verdict.startswith("disagree")], key
        zero = [r for r in rows if "zero page" in r.case and r.walk.found and isinstance(r.mmu, Fault)]
        assert zero, key
        assert all(r.verdict.startswith("linux-only: access-refused") for r in zero), (key, zero[0].verdict)
