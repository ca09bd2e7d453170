"""Compiled kernel walk against the Python walker on fuzzed hierarchies (issue 13 groundwork).

    python -m bench.kernel_walk_diff [--config x86_64:4level] [--hierarchies 100] [--seed 1]

Each hierarchy of ``emu.fuzz.HierarchyGenerator`` is loaded into one fuzzing target's RAM and
every case walked twice (flags 0 and FW_MIGRATION|FW_ZEROPAGE) by the kernel, then reloaded and
walked in the same order by the model (a walk may clear a bad entry, so both see the same
history).  Rows are compared by :func:`emu.kernel.walkview.walk_differs` (the judge's
``model-vs-kernel-walk`` rule): folio pfn, page pfn, level, entry address and value, PTL held and
released, and "the kernel oopsed" vs the model's predicted oops.  Differences are counted by
class (the first two were found by this bench and are now predicted by the model, so both count 0):

* ``oops-no-struct-page`` -- the kernel dereferenced the struct page of a pfn that has none
  (pud_page()/page_folio() of a PUD leaf, pfn_swap_entry_to_page() of a migration entry, beyond
  the memmap) and faulted; the model returns ``Folio(pfn, 0)``;
* ``pfn-valid-section`` -- vm_normal_page_pmd() in a VM_MIXEDMAP VMA: the kernel's pfn_valid()
  is true for a whole present SPARSEMEM section, the model's stops at highest_memmap_pfn;
* ``other`` -- anything else (printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


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
            for c, r in zip(cases, got, strict=True):
                fw = FolioWalk()
                f = folio_walk_start(fw, c.vma, c.addr, flags)
                w = walk_result(t.sc.ops, fw, c.addr, flags)
                if f is not None:
                    folio_walk_end(fw, c.vma)
                walks += 1
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
                else:
                    cls = "other"
                    if show > 0:
                        show -= 1
                        print(f"  other: hierarchy {i} addr {c.addr:#x} flags {flags}: {diff}")
                classes[cls] = classes.get(cls, 0) + 1
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
    for key in args.config or ["x86_64:4level"]:
        r = run(key, args.hierarchies, args.seed)
        print(f"{r['config']}: {r['hierarchies']} hierarchies, {r['walks']} walks "
              f"(kernel {r['kernel_per_s']:,}/s in per-VMA batches, model {r['model_per_s']:,}/s)")
        for cls, count in sorted(r["classes"].items(), key=lambda kv: -kv[1]):
            print(f"  {cls:22} {count:>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
