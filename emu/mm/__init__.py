"""The Python model of the kernel's memory management, one module per kernel file it mirrors
(as drgn's helpers mirror kernel paths).  Every function keeps its kernel name; its docstring
says which kernel object it takes and from which release (default v6.12).

* :mod:`emu.mm.pagewalk` -- mm/pagewalk.c: ``folio_walk_start()``, ``folio_walk_end()`` and the
  ``folio_walk()`` context manager; the reference walker is the specification (see its docstring
  and ``emu/mm/WALKERS.md`` for the three walkers and what ties them);
* :mod:`emu.mm.pagewalk_h` -- include/linux/pagewalk.h: ``struct folio_walk``, the ``FW_*`` flags;
* :mod:`emu.mm.pagewalk_fast`, :mod:`emu.mm.pagewalk_batch` (``walk_many()``) and
  :mod:`emu.mm.pagewalk_batch_rules` -- the fast forms of the same walk (one address; many at once);
* :mod:`emu.mm.memory` -- mm/memory.c: ``vm_normal_page()``, ``vm_normal_page_pmd()``;
* :mod:`emu.mm.mm_types` -- include/linux/mm_types.h and mm.h: ``mm_struct``, VMAs, the mmap
  lock, split page-table locks, the zero pages, struct page / folio and the memmap;
* :mod:`emu.mm.tables` -- the page-table builder (the kernel's set_p?d() side, through archs/);
* :mod:`emu.mm.scenarios` -- the built-in default address spaces ``foliowalk verify`` checks.
"""
