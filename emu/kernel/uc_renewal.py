"""When a long-lived kernel guest is replaced by a fresh one.

Unicorn 2.1.4 keeps ~300 bytes per ``emu_start()`` until its ``Uc`` is closed: a fuzz worker with
the compiled walk in the loop grew ~34 MiB a minute (docs/robustness.md, ``bench/soak.py``).  The
predicate harness (:class:`emu.kernel.runner.KernelHarness`) and the kernel walk view
(:class:`emu.kernel.walkview.KernelWalkView`) each own a ``Uc`` and count their own calls; both
take a fresh CPU after this many.
"""

from __future__ import annotations

#: emu_start() calls on one Uc before its owner replaces it (the memory then stays bounded).
RENEW_STARTS = 10_000

__all__ = ["RENEW_STARTS"]
