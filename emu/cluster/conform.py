"""``foliowalk conform --scheduler ADDRESS``: a conformance campaign on a Dask cluster.

Nothing here is specific to an architecture or a space.  A conformance space is a module
``emu.conform.<space>`` with

* ``tasks(cases) -> list[list[int]]`` -- the enumeration cut into shards (case index ranges, each
  within one group of CPU controls and access, in case order);
* ``Runner(**kw)`` with ``run(cases, report) -> report`` and ``close()`` -- runs a shard on its
  own machines (``kw``: the space's options, e.g. x86-64's ``space=PKU``);
* ``new_report(**kw)`` and ``merge(report, part)`` (default: x86-64's, for the report class every
  space derives from) -- a shard's results and how they add up (the digest,
  :mod:`emu.conform.digest`, when the runner records each case's outcome).

A shard goes to the workers as a ``range`` when its cases are consecutive (the whole space, or
``--limit``) and as a list otherwise (``--sample``); each worker thread keeps one ``Runner`` per
space (:func:`emu.cluster.plugin.cached`).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from emu.errors import EmulatorError


def _merge(mod: Any) -> Callable[[Any, Any], None]:
    """The module's ``merge``, else that of the report class they all derive from (x86-64's)."""
    if hasattr(mod, "merge"):
        return mod.merge  # type: ignore[no-any-return]
    from emu.conform.x86_64 import merge

    return merge


def run_range(shard: Sequence[int], space: str, kw: dict[str, Any]) -> Any:
    """On a worker: run ``shard`` of the space module ``space`` (with its keyword arguments ``kw``,
    e.g. ``{"space": PKU}``) on this thread's runner for it."""
    from emu.cluster.plugin import cached

    mod = importlib.import_module(space)
    key = ("conform", space, tuple((k, getattr(v, "name", repr(v))) for k, v in sorted(kw.items())))
    runner = cached(key, lambda: mod.Runner(**kw))
    return runner.run(shard, mod.new_report(**kw))


def compact(cases: Sequence[int]) -> Sequence[int]:
    """``cases`` as a ``range`` when they are consecutive (a few bytes to send, not a list): as
    many distinct numbers as the span from the least to the greatest."""
    if len(cases) and max(cases) - min(cases) == len(cases) - 1 and len(set(cases)) == len(cases):
        return range(min(cases), max(cases) + 1)
    return list(cases)


def run_conform(address: str, module: str, cases: Sequence[int], report: Any,
                progress: Callable[[Any], None] | None = None, **kw: Any) -> Any:
    """Run ``cases`` of the space module ``module`` (``"emu.conform.x86_64"``; ``kw``: what its
    ``Runner`` and ``new_report`` take, e.g. ``space=PKU``) on the Dask cluster at ``address``,
    merging each shard's report into ``report`` as it comes back.  Ctrl-C cancels the
    running shards and keeps the merged ones (``report.interrupted``)."""
    from emu.cluster import ClusterLost, connect, describe, run_shards

    mod = importlib.import_module(module)
    merge = _merge(mod)
    client = connect(address)
    t0 = time.perf_counter()
    try:  # Ctrl-C anywhere from here on keeps what came back
        report.ran_on = describe(client)

        def done(_shard: Sequence[int], part: Any) -> None:
            merge(report, part)
            report.seconds = time.perf_counter() - t0
            if progress:
                progress(report)

        def died(shard: Sequence[int], exc: BaseException) -> list[Any]:
            raise EmulatorError(f"a Dask worker died running conformance cases {shard[0]}..{shard[-1]} "
                                f"({exc}); the same cases in one local process: --limit/--sample without "
                                f"--scheduler") from None

        # cut lazily, inside run_shards: for the whole space that takes seconds, and a Ctrl-C meanwhile
        # is a Ctrl-C of the campaign
        shards = (compact(t) for t in mod.tasks(cases))
        report.interrupted = run_shards(client, run_range, shards, done, args=(module, kw), failed=died)
    except KeyboardInterrupt:
        report.interrupted = True
    except ClusterLost as exc:  # keep what came back; the command line says what happened
        report.interrupted = True
        report.lost = f"{exc} after {report.run} of {len(cases)} cases"
    finally:
        client.close()
    report.mismatches.sort(key=lambda m: (m.case, m.field))
    report.seconds = time.perf_counter() - t0
    return report
