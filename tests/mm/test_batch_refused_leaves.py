"""The vector pass's refused present leaves and swap PTEs (emu/mm/pagewalk_batch.py ``REFUSED``,
``_PTE_SWAP``): PMD leaves in VM_PFNMAP/VM_MIXEDMAP VMAs (vm_normal_page_pmd(), mm/memory.c v6.12:
linear pfnmap, !COW pfnmap, invalid mixedmap pfn, normal or beyond the memmap), normal PTE/PMD
leaves beyond the memmap, swap PTEs that are no migration entry (``swap@pte:<type>``), and
migration PTEs whose records walk_many_cases() builds from the vector pass's reads.  On
generated hierarchies (fuzz mixes, three architectures) every record walk_many_cases() gives must
be the per-address reference walker's, for every FW_* flag set, and the new outcomes must actually
occur (else the comparison proves nothing about them)."""

from __future__ import annotations

from collections import Counter

import pytest

import emu.mm.pagewalk_batch as pb
from emu.fuzz import GenParams, HierarchyGenerator, Target
from emu.fuzz.evaluate import rows_from_batches
from emu.mm.pagewalk import FLAG_COMBINATIONS, FolioWalk, folio_walk_end, folio_walk_start_reference
from emu.verify import walk_result


def _reference_rows(t: Target) -> list[list[dict]]:
    sc = t.sc
    out = []
    with sc.mm.mmap_read():
        for case in sc.cases:
            row = []
            for f in FLAG_COMBINATIONS:
                with sc.ram.undo():
                    fw = FolioWalk()
                    if folio_walk_start_reference(fw, case.vma, case.addr, f) is not None:
                        folio_walk_end(fw, case.vma)
                    row.append(walk_result(sc.ops, fw, case.addr, f).to_json())
            out.append(row)
    return out


@pytest.mark.parametrize("key", ["x86_64:4level", "arm64:4k:48", "s390x:region3"])
def test_vector_refused_leaves_equal_the_reference(key: str) -> None:
    seen: Counter[str] = Counter()
    t = Target(key, oracle=False)
    try:
        for mix, params in (("bench", GenParams.bench()), ("default", GenParams())):
            gen = HierarchyGenerator(key, params=params)
            for i in range(2):
                h = gen.generate(3, i)
                t.load(h)
                sc = t.sc
                addrs = [c.addr for c in sc.cases]
                with sc.mm.mmap_read():
                    batches = pb.walk_many_cases([c.vma for c in sc.cases], addrs, FLAG_COMBINATIONS)
                for s in batches[0]._status.tolist():
                    if s in pb.REFUSED or s in (pb._FOUND_PMD, pb._PTE_SWAP):
                        seen[pb._REASON.get(s, "swap@pte") if s != pb._FOUND_PMD else "found@pmd"] += 1
                seen["migration@pte"] += len(batches[0]._migration)  # records built, not walked
                got = [[w.to_json() for w in row] for row in rows_from_batches(sc.ops, batches, addrs)]
                # the same records through WalkBatch.__getitem__ (the columns, not the fuzz rows)
                got2 = [[walk_result(sc.ops, b[k], a, b.flags).to_json() for b in batches]
                        for k, a in enumerate(addrs)]
                want = _reference_rows(t)
                assert got == want, (key, mix, i)
                assert got2 == want, (key, mix, i)
    finally:
        t.close()
    # the vector pass decided refused leaves of these kinds (not only the per-address walker)
    assert seen["not-normal@pmd:pfnmap-not-cow"] > 0, seen
    assert seen["not-normal@pte:pfn-beyond-memmap"] + seen["not-normal@pmd:pfn-beyond-memmap"] > 0, seen
    assert seen["swap@pte"] > 0, seen
    assert seen["migration@pte"] > 0, seen
