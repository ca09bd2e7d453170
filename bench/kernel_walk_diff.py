"""Compiled kernel walk against the Python walker on fuzzed hierarchies (issue 13 groundwork).

    python -m bench.kernel_walk_diff [--config x86_64:4level ...] [--hierarchies 100] [--seed 1]

``--config`` takes any paging configuration, an architecture (all its configurations) or ``all``.

Each hierarchy of ``emu.fuzz.HierarchyGenerator`` is loaded into one fuzzing target's RAM and
every case walked twice (flags 0 and FW_MIGRATION|FW_ZEROPAGE) by the kernel, then reloaded and
walked in the same order by the model (a walk may clear a bad entry, so both see the same
history).  Rows are compared by :func:`emu.kernel.walkview.walk_differs` (the judge's
``model-vs-kernel-walk`` rule): folio pfn, page pfn, level, entry address and value, PTL held and
released, and "the kernel oopsed" vs the model's predicted oops.  Differences are counted by
class; every class was found by this bench and is now predicted by the model (archs
``pud_page_pfn``, ``ptep_get``, ``pgtable_pa``, ``pxd_clear``, s390's wrapping ``pXd_offset()``,
``MemMap.pfn_valid()`` per section, the ``oops@<level>:no-struct-page`` outcome), so each counts 0;
a row counted in one again is a regression:

* ``oops-no-struct-page`` -- the kernel dereferenced the struct page of a pfn that has none
  (pud_page()/page_folio() of a PUD leaf, pfn_swap_entry_to_page() of a migration entry, beyond
  the memmap) and faulted; the model returns ``Folio(pfn, 0)``;
* ``pfn-valid-section`` -- vm_normal_page_pmd() in a VM_MIXEDMAP VMA: the kernel's pfn_valid()
  is true for a whole present SPARSEMEM section, the model's stops at highest_memmap_pfn;
* ``contpte-ad-gather`` -- arm64 only: a PTE with the contiguous bit (PTE_CONT): the kernel's
  ptep_get() (arch/arm64/include/asm/pgtable.h, CONFIG_ARM64_CONTPTE) returns it with the
  access/dirty bits of its whole contiguous block gathered in (contpte_ptep_get(),
  arch/arm64/mm/contpte.c: pte_mkyoung()/pte_mkdirty()), the model returns the entry as stored;
  the rows differ only in fw.pte's AF, PTE_DIRTY and PTE_RDONLY bits;
* ``pud-page-unmasked`` -- arm64 only: a PUD leaf whose output address has bits below PUD_SIZE
  set (RES0 in a block descriptor): the kernel's ``pud_page()`` is ``phys_to_page(__pud_to_phys())``
  (arch/arm64/include/asm/pgtable.h), which keeps them, while ``pud_pfn()`` masks with PUD_MASK;
  the model's pud_page() is pfn_to_page(pud_pfn()) (x86's definition), so the folio and page
  differ by those bits, the entry does not;
* ``va-or-alias`` -- arm64 only: a table entry whose address has bits at or above VA_BITS (v6.12
  PTE_ADDR_LOW spans bits 49:12 for 4K/16K pages, 47:16 for 64K): the model finds the next table
  beyond RAM (unreadable), the kernel's ``__va(pa) = (pa - PHYS_OFFSET) | PAGE_OFFSET``
  (arch/arm64/include/asm/memory.h ``__phys_to_virt``) ORs those bits into PAGE_OFFSET's and
  reads a table inside the linear map without faulting;
* ``s390-clear-untyped`` -- s390x only: a row after the model cleared a bad pgd/p4d/pud entry the
  kernel does not clear: the kernel's ``pgd_clear()``/``p4d_clear()``/``pud_clear()``
  (arch/s390/include/asm/pgtable.h) store ``_REGIONn_ENTRY_EMPTY`` only into an entry of their
  own region type, the model (before archs/s390x.py ``pxd_clear``) stored the empty entry of the table's
  type whatever the entry's type; from there on the two runs walk different tables (e.g.
  a cleared first entry changes ``pgd_offset()``'s shift), so every later differing row of that
  hierarchy run is counted here;
* ``s390-table-address-wraps`` -- s390x only: the model finds the next table unreadable, the
  kernel reads one: a table origin in the last page of the 64-bit space plus ``index * 8``
  wraps (pointer arithmetic in ``pXd_offset()``; the architecture's table-entry address
  computation wraps too) to a low address of the identity map, the model computes it without
  wrapping and finds it beyond RAM;
* ``other`` -- anything else (printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def _contpte_ad_gather(key: str, k_row: tuple[Any, ...], m: tuple[Any, ...]) -> bool:
    """Equal but for fw.pte's access/dirty bits, on an arm64 PTE with the contiguous bit."""
    if not key.startswith("arm64") or k_row[:4] != m[:4] or m[2] != 0 or k_row[4] is None or m[4] is None:
        return False
    from archs.arm64 import PTE_AF, PTE_CONT, PTE_DIRTY, PTE_RDONLY

    return bool(m[4] & PTE_CONT) and not (k_row[4] ^ m[4]) & ~(PTE_AF | PTE_DIRTY | PTE_RDONLY)


def _pud_page_unmasked(key: str, k_row: tuple[Any, ...], m: tuple[Any, ...]) -> bool:
    """A PUD leaf (level 2) where the kernel's folio/page pfns are the model's plus the entry's
    address bits below PUD_SIZE: arm64 pud_page() = phys_to_page(__pud_to_phys(pud))."""
    if not key.startswith("arm64") or k_row[2:] != m[2:] or m[2] != 2 or None in k_row[:2] or None in m[:2]:
        return False
    import archs

    ops = archs.get_ops(key)
    low = (ops.pte_pfn(m[4]) - ops.pud_pfn(m[4]))  # __pte_to_phys() keeps what PUD_MASK drops
    return bool(low) and k_row[1] - m[1] == low and k_row[0] >= m[0]


_S390_TYPE = {"pgd": 3, "p4d": 2, "pud": 1}  # _REGION_ENTRY_TYPE_R1/R2/R3 >> 2


def _s390_clear_differs(ops: Any, cleared: list[Any]) -> bool:
    """A model clear the kernel would not make alike: the kernel's pXd_clear() writes
    ``_REGIONn_ENTRY_EMPTY`` (type | _REGION_ENTRY_INVALID) only when the entry's type is its own."""
    for step in cleared:
        typ = _S390_TYPE.get(step.level)
        if typ is None:
            continue
        kernel_writes = (step.value >> 2) & 3 == typ
        if not kernel_writes or ops.pxd_clear(step.level, step.value) != (typ << 2 | 0x20):
            return True
    return False


def run(key: str, n: int, seed: int, show: int = 5) -> dict[str, Any]:
    import numpy as np

    from emu.fuzz import HierarchyGenerator, Target
    from emu.kernel.walk import KernelWalk, build_walk
    from emu.kernel.walkview import KernelAnswer, walk_differs
    from emu.mm.pagewalk import FolioWalk, folio_walk_end, folio_walk_start
    from emu.verify import walk_result

    t = Target(key, oracle=False)
    kw = KernelWalk(build_walk(key), t.sc.mm)
    t.sc.mm.mmap_lock.down_read()
    gen = HierarchyGenerator(key)
    classes: dict[str, int] = {}
    walks = 0
    tk = tm = 0.0
    for i in range(n):
        h = gen.generate(seed, i)
        for flags in (0, 3):
            t.load(h)
            kw.forget_vmas()
            cases = list(t.sc.cases)
            got = []
            t0 = time.perf_counter()
            j = 0
            while j < len(cases):  # one batch per run of cases in the same VMA, in order
                k = j
                while k < len(cases) and cases[k].vma is cases[j].vma:
                    k += 1
                addrs = np.array([c.addr for c in cases[j:k]], dtype=np.uint64)
                raw, warned, oopses = kw.walk_raw(cases[j].vma, addrs, np.full(k - j, flags, dtype=np.uint64))
                got += kw._results([(c.addr, flags) for c in cases[j:k]], raw, warned, oopses)
                j = k
            tk += time.perf_counter() - t0
            t.load(h)
            t0 = time.perf_counter()
            diverged = False  # s390: the model made a clear the kernel does not (s390-clear-untyped)
            for c, r in zip(cases, got, strict=True):
                fw = FolioWalk()
                f = folio_walk_start(fw, c.vma, c.addr, flags)
                w = walk_result(t.sc.ops, fw, c.addr, flags)
                m = (f.pfn if f else None, fw.page.pfn if (f and fw.page) else None,
                     fw.level if f else None, fw.entryp if f else None, fw.entry if f else None)
                if f is not None:
                    folio_walk_end(fw, c.vma)
                walks += 1
                k_row = (r.folio_pfn, r.page_pfn, r.level, r.entryp, r.entry)
                model_oops = fw.reason.startswith("unreadable")
                # the library's comparison (the judge's model-vs-kernel-walk rule); both sides ran
                # in the same order on the same history, so the clears are not compared here
                w.cleared = []
                diff = walk_differs(w, KernelAnswer(r))
                if diff is None:
                    cls = "agree"
                elif r.oops and f is not None and f.pfn >= kw._sec_pages:  # no struct page there
                    cls = "oops-no-struct-page"
                elif fw.reason == "not-normal@pmd:mixedmap-invalid-pfn" and r.folio_pfn is not None:
                    cls = "pfn-valid-section"
                elif _contpte_ad_gather(key, k_row, m):
                    cls = "contpte-ad-gather"
                elif _pud_page_unmasked(key, k_row, m):
                    cls = "pud-page-unmasked"
                elif key.startswith("arm64") and model_oops and not r.oops:
                    cls = "va-or-alias"
                elif diverged:
                    cls = "s390-clear-untyped"
                elif key.startswith("s390x") and model_oops and not r.oops:
                    cls = "s390-table-address-wraps"
                else:
                    cls = "other"
                    if show > 0:
                        show -= 1
                        print(f"  other: hierarchy {i} addr {c.addr:#x} flags {flags}: {diff}")
                classes[cls] = classes.get(cls, 0) + 1
                if key.startswith("s390x") and _s390_clear_differs(t.sc.mm.ops, fw.cleared):
                    diverged = True
            tm += time.perf_counter() - t0
    kw.close()
    t.close()
    return {"config": key, "hierarchies": n, "walks": walks, "classes": classes,
            "kernel_per_s": round(walks / tk), "model_per_s": round(walks / tm)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernel_walk_diff", description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append")
    ap.add_argument("--hierarchies", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    from bench.kernel_walk_rate import _keys

    for key in _keys(args.config or ["x86_64:4level"]):
        r = run(key, args.hierarchies, args.seed)
        print(f"{r['config']}: {r['hierarchies']} hierarchies, {r['walks']} walks "
              f"(kernel {r['kernel_per_s']:,}/s in per-VMA batches, model {r['model_per_s']:,}/s)")
        for cls, count in sorted(r["classes"].items(), key=lambda kv: -kv[1]):
            print(f"  {cls:22} {count:>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
