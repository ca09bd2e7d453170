"""The Python model of the kernel's memory management, one module per kernel file it mirrors
(as drgn's helpers mirror kernel paths).  Every function keeps its kernel name; its docstring
says which kernel object it takes and from which release (default v6.12).

* :mod:`emu.mm.pagewalk` -- mm/pagewalk.c: ``folio_walk_start()``, ``folio_walk_end()`` and the
  ``folio_walk()`` context manager; the reference walker is the specification (see its docstring
  and ``emu/mm/WALKERS.md`` for the three walkers and what ties them);
* :mod:`emu.mm.pagewalk_batch` -- ``walk_many()``: the same walk for many addresses at once;
* :mod:`emu.mm.mm_types` -- include/linux/mm_types.h and mm.h: ``mm_struct``, VMAs, the mmap
  lock, split page-table locks, the zero pages, ``vm_normal_page()`` (mm/memory.c);
* :mod:`emu.mm.tables` -- the page-table builder (the kernel's set_p?d() side, through archs/);
* :mod:`emu.mm.scenarios` -- the built-in default address spaces ``foliowalk verify`` checks.
"""
