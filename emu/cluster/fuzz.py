"""``foliowalk fuzz --scheduler ADDRESS``: a fuzz campaign on a Dask cluster.

Sharded by hierarchy index: a shard is a range of consecutive indices (hierarchy ``i`` comes from
``(seed, i)`` alone, emu.fuzz.spec), run by one task on the worker thread's cached
:class:`~emu.fuzz.worker.Worker` (its Targets: walker, machines, kernel harness).  The task sends
back, per hierarchy, the statistics, the cases digest and the outcomes digest, and the finding
candidates it saw -- it saves nothing itself.  The campaign (this client) deduplicates them as
they stream in (``--max-findings`` distinct keys, first come first claimed, as with local
workers) and sends each claimed one back to the cluster as a *save* task: generate and evaluate
that hierarchy again, shrink, write the spec and fixture set into a worker-local temporary
folder, and return the files, which the campaign writes under ``--out`` and indexes.  Nothing
assumes the workers share a file system with the campaign.

With ``--seconds`` the deadline is wall-clock time (the workers' clocks are assumed to agree with
this one): no shard is submitted after it and a running shard stops at its next hierarchy.  A
worker that dies (an emulator abort) is restarted by its nanny and the scheduler retries the
task; when it gives up (``distributed.KilledWorker``) the shard is run again one hierarchy per
task.  A dying worker fails every task it held, not only the one that killed it, so the
hierarchies of every task that failed so are run again at the end, one per task and one task at
a time on the whole cluster; one that still kills its worker there is recorded as a ``crash``
finding (its spec saved), as in local campaigns.  Hung hierarchies are not timed out on a cluster.  Ctrl-C cancels
the running tasks and keeps every result and finding that came back.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emu.fuzz.progress import Progress
from emu.fuzz.records import CampaignOptions, CampaignResult, FindingRecord, Stats, campaign_digest

#: hierarchies per task: a task should take long enough (a few tenths of a second) that the
#: round trip to the scheduler does not count, and short enough that a deadline is kept
SHARD_HIERARCHIES = 4


def _worker(opts: CampaignOptions) -> Any:
    """This worker thread's campaign worker for ``opts`` (its Targets are kept between tasks:
    keyed by everything they are built from)."""
    from emu.cluster.plugin import cached
    from emu.fuzz.worker import Worker

    key = ("fuzz", opts.kernel, opts.walker, opts.harness, opts.emulator, repr(opts.params))
    w = cached(key, lambda: Worker(opts, lambda _k: False, lambda _r: None))
    w.opts = opts
    return w


def fuzz_task(item: tuple[Any, ...], opts: CampaignOptions, deadline: float | None) -> Any:
    """On a worker.  ``("run", range)``: ``[(index, stats, cases digest, outcomes digest, busy s)],
    [(index, claim key)]``.  ``("save", index, claim key)``: ``(record or None, {relative path:
    bytes})``."""
    w = _worker(opts)
    if item[0] == "run":
        done: list[tuple[int, Stats, str, str, float]] = []
        candidates: list[tuple[int, str]] = []
        current = [0]

        def claim(key: str) -> bool:
            candidates.append((current[0], key))
            return False  # the campaign decides, and asks for the save

        w.claim, w.report = claim, lambda _r: None
        for idx in item[1]:
            if deadline is not None and time.time() >= deadline:
                break
            current[0] = idx
            t0 = time.perf_counter()
            st, dg, od = w.run_one(idx)
            done.append((idx, st, dg, od, time.perf_counter() - t0))
        return done, candidates
    _tag, index, claim_key = item
    tmp = Path(tempfile.mkdtemp(prefix="foliowalk-finding-"))
    try:
        recs: list[FindingRecord] = []
        w.opts = dataclasses.replace(opts, out=tmp if opts.out is not None else None)
        w.claim, w.report = (lambda _k: False), recs.append
        w.save_claimed(index, claim_key)
        files = {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
        rec = recs[0] if recs else None
        if rec is not None and rec.path:
            rec.path = str(Path(rec.path).relative_to(tmp))
        return rec, files
    finally:
        w.opts = opts
        shutil.rmtree(tmp, ignore_errors=True)


def run_cluster(opts: CampaignOptions, record: Callable[[FindingRecord], None] | None = None) -> CampaignResult:
    """The campaign on the Dask cluster at ``opts.scheduler``; ``record`` is called with every
    finding as it arrives (the campaign indexes it under ``--out`` at once)."""
    from emu.cluster import connect, describe, run_shards, threads
    from emu.fuzz.worker import atomic_write, finding_claimer

    assert opts.scheduler is not None
    client = connect(opts.scheduler)
    stats = Stats()
    findings: list[FindingRecord] = []
    claimed: set[str] = set()
    claim = finding_claimer(opts, claimed)
    digests: dict[int, str] = {}
    outcomes: dict[int, str] = {}
    busy = [0.0]
    crashes = [0]
    progress = Progress(opts.progress, ",".join(opts.configs))
    t0 = time.perf_counter()
    deadline = time.time() + opts.seconds if opts.seconds is not None else None

    def found(rec: FindingRecord) -> None:
        findings.append(rec)
        if record is not None:
            record(rec)

    def shards() -> Any:
        # a short campaign still gives every worker thread some: at least two shards each
        size = SHARD_HIERARCHIES if opts.hierarchies is None else \
            max(1, min(SHARD_HIERARCHIES, opts.hierarchies // (2 * threads(client))))
        i = 0
        while opts.hierarchies is None or i < opts.hierarchies:
            if deadline is not None and time.time() >= deadline:
                return
            stop = i + size if opts.hierarchies is None else min(i + size, opts.hierarchies)
            yield ("run", range(i, stop))
            i = stop

    def done(item: tuple[Any, ...], result: Any) -> list[tuple[Any, ...]]:
        follow: list[tuple[Any, ...]] = []
        if item[0] == "run":
            ran, candidates = result
            for idx, st, dg, od, b in ran:
                if idx in digests:
                    continue  # a shard run again after a worker died
                stats.add(st)
                digests[idx], outcomes[idx] = dg, od
                busy[0] += b
            follow = [("save", idx, key) for idx, key in candidates if claim(key)]
        else:
            rec, files = result
            if rec is not None:
                if opts.out is not None:
                    for rel, data in files.items():
                        path = opts.out / rel
                        path.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write(path, data)
                    rec.path = str(opts.out / rec.path) if rec.path else None
                found(rec)
        progress.update(stats, len(findings), crashes[0])
        return follow

    suspects: list[tuple[Any, ...]] = []

    def failed(item: tuple[Any, ...], exc: BaseException) -> list[tuple[Any, ...]]:
        # A worker's death fails every task it held, not only the one that killed it: the
        # shard's hierarchies are run again later, one per task and one task at a time.
        if item[0] == "run":
            suspects.extend(("run", range(i, i + 1)) for i in item[1] if i not in digests)
        else:
            suspects.append(item)
        return []

    def killed_alone(item: tuple[Any, ...], exc: BaseException) -> list[tuple[Any, ...]]:
        idx = item[1][0] if item[0] == "run" else item[1]
        crashes[0] += 1
        found(_crash_record(opts, idx, "while saving a finding of " if item[0] == "save" else "", exc))
        return []

    try:
        ran_on = describe(client)
        interrupted = run_shards(client, fuzz_task, shards(), done, args=(opts, deadline), failed=failed)
        if suspects and not interrupted:  # alone, the task that kills its worker is the culprit
            interrupted = run_shards(client, fuzz_task, suspects, done, args=(opts, None), window=1,
                                     failed=killed_alone)
    finally:
        client.close()
        progress.update(stats, len(findings), crashes[0], force=True)
        progress.done()
    findings.sort(key=lambda f: (f.index if f.index is not None else -1, f.key))
    return CampaignResult(opts, stats, findings, time.perf_counter() - t0, busy[0], interrupted, crashes[0],
                          campaign_digest(digests), sorted(digests), outcomes_digest=campaign_digest(outcomes),
                          ran_on=ran_on)


def _crash_record(opts: CampaignOptions, idx: int, what: str, exc: BaseException) -> FindingRecord:
    """A ``crash`` finding for hierarchy ``idx``, which killed every worker that ran it; its spec
    is saved under ``--out`` (replay: ``foliowalk fuzz --replay``)."""
    from emu.fuzz.hierarchy_gen import HierarchyGenerator
    from emu.fuzz.worker import atomic_write

    why = f"a Dask worker died {what}hierarchy {idx} (the scheduler gave up: {type(exc).__name__})"
    rec = FindingRecord("crash", f"crash|{why}", "?", idx, None, f"crash: {why}", None,
                        note="the campaign went on")
    key = opts.configs[idx % len(opts.configs)]
    rec.config = key
    try:
        h = HierarchyGenerator(key, opts.kernel, opts.params).generate(opts.seed, idx)
        rec.entries, rec.fuzzed, rec.set_bits = len(h.entries), len(h.fuzzed), h.set_bits()
        if opts.out is not None:
            path = opts.out / f"crash-{key.replace(':', '-')}-s{opts.seed}-h{idx}.hierarchy.json"
            atomic_write(path, json.dumps({"signature": rec.key, "verdict": rec.verdict,
                                           "hierarchy": h.to_json()}, indent=1).encode())
            rec.path = str(path)
    except Exception as exc2:  # the record itself still counts
        rec.note += f"; hierarchy not saved: {exc2!r}"
    return rec
