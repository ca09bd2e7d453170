"""The kernel harness: Linux's own page-table code, compiled from a real tree, run as guest code.

The MMU is the oracle of foliowalk's hardware half; this package makes the kernel the oracle of
its Linux half.  For one (architecture, kernel version, Kconfig profile) it

* finds a tree (``--tree PATH``, or Debian's ``linux-source-6.12`` / ``linux-source-6.1``
  unpacked into a cache) -- :mod:`emu.kernel.tree`;
* configures it (``defconfig`` plus the options of :mod:`archs.kconfig`), runs
  ``modules_prepare`` with the architecture's cross compiler, compiles ``harness/`` (GPL-2.0: it
  includes kernel headers) as an external kbuild object and links it into a flat guest image,
  cached by tree, version and configuration -- :mod:`emu.kernel.build`;
* loads that image into Unicorn and calls the kernel's inline functions on batches of raw entry
  values in one ``emu_start`` -- :mod:`emu.kernel.runner`;
* compares every answer with foliowalk's Python model -- :mod:`emu.kernel.check`;
* compiles the tree's own ``folio_walk_start()`` and runs it against the tables under test --
  :mod:`emu.kernel.walk`; as the kernel view of every verify/fixtures/fuzz row, compared with the
  model by the judge -- :mod:`emu.kernel.walkview`;
* applies a patch to a copy of a tree (the seed: ``patches/seed-folio_walk_start.patch``) --
  :mod:`emu.kernel.patched`; runs a (patched) tree's walk against the model and the MMU
  (``foliowalk kernel verify``) -- :mod:`emu.kernel.treeverify`.
"""
