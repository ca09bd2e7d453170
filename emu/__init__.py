"""foliowalk: Linux folio_walk over real page tables, confirmed by Unicorn's MMU.

``emu/`` by role (``ls emu`` shows it):

* ``mm/`` -- the Python model of the kernel, one module per kernel file it mirrors:
  ``pagewalk.py`` (mm/pagewalk.c: ``folio_walk_start()``, the specification) with its fast forms
  ``pagewalk_fast.py``, ``pagewalk_batch.py`` / ``pagewalk_batch_rules.py`` (see
  ``mm/WALKERS.md``), ``pagewalk_h.py`` (include/linux/pagewalk.h), ``memory.py`` (mm/memory.c:
  ``vm_normal_page()``), ``mm_types.py`` (``mm_struct``, VMAs, locks, struct page/folio), the
  table builder ``tables.py`` and the default address spaces ``scenarios.py``;
* ``machines/`` -- the emulated machines: guest RAM (``ram.py``), one package per architecture
  that runs probe code on Unicorn's MMU, the oracle glue (``oracle.py``) and the registry of
  known emulator deviations (``deviations.py``);
* ``kernel/`` -- the kernel harness (the compiled kernel's own code run as guest code, the
  "kernel" view of DESIGN.md): its place, arriving from its own branch;
* ``judge.py`` -- one verdict per row from its views, by an ordered table of named rules;
* the applications: ``verify.py`` (``foliowalk verify``), ``fixtures/`` (write, load, re-check,
  export fixture sets), ``fuzz/`` (campaigns, shrinking, crash isolation), ``strategies.py``
  (the fuzzer's generators as Hypothesis strategies), and ``cli/`` (the ``foliowalk`` command,
  one module per sub-command).
"""

__version__ = "0.1.0"
