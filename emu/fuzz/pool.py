"""The worker-process pool that isolates emulator crashes: spawned (never forked) workers, one
that dies or hangs is replaced and its hierarchy saved as a ``crash``/``hang`` finding.

Hand-written on purpose: ``multiprocessing.Pool`` and ``concurrent.futures`` give up the whole
pool (``BrokenProcessPool``) when one worker aborts inside Unicorn, and cannot time out a
single hung task; this pool must survive both and name the hierarchy that caused them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emu.fuzz.hierarchy_gen import HierarchyGenerator
from emu.fuzz.progress import Progress
from emu.fuzz.records import CampaignOptions, CampaignResult, FindingRecord, Stats, campaign_digest
from emu.fuzz.worker import atomic_write, finding_claimer, worker_main


@dataclass
class _Slot:
    """One worker process and where it is."""

    first: int
    proc: Any = None
    conn: Any = None
    current: int | None = None
    started: float = 0.0
    next_index: int = 0
    exited: bool = False
    respawns: int = 0


def _run_processes(opts: CampaignOptions, record: Callable[[FindingRecord], None] | None = None) -> CampaignResult:
    """The campaign in ``opts.jobs`` worker processes.  ``record`` is called with every finding as
    it arrives (the campaign indexes it on disk at once).  A worker's ("fatal", line) -- an
    OSError of its files, a full disk -- stops the campaign; the line is the result's ``error``."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # never fork a process that holds Unicorn engines and threads
    stats = Stats()
    findings: list[FindingRecord] = []
    fatal: list[str] = []

    def found(rec: FindingRecord) -> None:
        findings.append(rec)
        if record is not None:
            record(rec)

    claimed: set[str] = set()
    claim = finding_claimer(opts, claimed)
    digests: dict[int, str] = {}
    outcomes: dict[int, str] = {}
    busy = 0.0
    crashes = 0
    progress = Progress(opts.progress, ",".join(opts.configs))
    t0 = time.perf_counter()
    deadline = time.time() + opts.seconds if opts.seconds is not None else None
    slots = [_Slot(first=w, next_index=w) for w in range(opts.jobs)]

    def spawn(slot: _Slot) -> None:
        import signal
        import threading

        parent, child = ctx.Pipe(duplex=True)
        slot.proc = ctx.Process(
            target=worker_main, args=(child, opts, slot.next_index, opts.jobs, deadline),
            name=f"foliowalk-fuzz-{slot.first}", daemon=True,
        )
        # The worker starts with SIGINT ignored (inherited through exec), so a Ctrl-C meant for
        # the campaign cannot kill it while it is still importing; the campaign tells it to stop.
        main_thread = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            slot.proc.start()
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, old)
        child.close()
        slot.conn, slot.current, slot.exited = parent, None, False

    def more_to_do(slot: _Slot) -> bool:
        if opts.hierarchies is not None and slot.next_index >= opts.hierarchies:
            return False
        return deadline is None or time.time() < deadline

    def stop_all() -> None:
        for s in slots:
            if s.proc is not None and s.proc.is_alive():
                with contextlib.suppress(OSError, BrokenPipeError):
                    s.conn.send(("stop",))

    def crashed(slot: _Slot, why: str, kind: str) -> None:
        nonlocal crashes
        if interrupted[0] and kind == "crash" and slot.proc.exitcode in (-2, 1):
            slot.exited = True  # stopped by the user's Ctrl-C, not by the emulator
            return
        crashes += 1
        idx = slot.current
        rec = FindingRecord(kind, f"{kind}|{why}", "?", idx, None, f"{kind}: {why}", None,
                            note="the worker was replaced; the campaign went on")
        if idx is not None:
            key = opts.configs[idx % len(opts.configs)]
            rec.config = key
            try:
                h = HierarchyGenerator(key, opts.kernel, opts.params).generate(opts.seed, idx)
                rec.entries, rec.fuzzed, rec.set_bits = len(h.entries), len(h.fuzzed), h.set_bits()
                if opts.out is not None:
                    name = f"{kind}-{key.replace(':', '-')}-s{opts.seed}-h{idx}"
                    path = opts.out / f"{name}.hierarchy.json"
                    atomic_write(path, json.dumps({"signature": rec.key, "verdict": rec.verdict,
                                                    "hierarchy": h.to_json()}, indent=1).encode())
                    rec.path = str(path)
            except Exception as exc:  # the record itself still counts
                rec.note += f"; hierarchy not saved: {exc!r}"
            slot.next_index = idx + opts.jobs
        found(rec)
        slot.current = None
        slot.exited = True
        if slot.conn is not None:
            slot.conn.close()
        slot.respawns += 1
        if more_to_do(slot) and slot.respawns <= 100 and not interrupted[0] and not fatal:
            spawn(slot)

    interrupted = [False]
    for s in slots:
        spawn(s)
    grace_until: float | None = None
    try:
        while any(not s.exited for s in slots):
            try:
                live = [s for s in slots if not s.exited]
                waitables: list[Any] = [s.conn for s in live] + [s.proc.sentinel for s in live]
                ready = wait(waitables, timeout=0.25)
                for s in live:
                    # Drain messages first: a worker that exited normally sent ("exit",) before.
                    while not s.exited and s.conn in ready or (not s.exited and s.conn.poll()):
                        try:
                            msg = s.conn.recv()
                        except (EOFError, OSError):
                            break
                        tag = msg[0]
                        s.started = time.monotonic()  # any message shows the worker is alive
                        if tag == "start":
                            s.current, s.started = msg[1], time.monotonic()
                        elif tag == "done":
                            _tag, idx, st, dg, od, b = msg
                            stats.add(st)
                            digests[idx] = dg
                            outcomes[idx] = od
                            busy += b
                            s.current = None
                            s.next_index = idx + opts.jobs
                        elif tag == "claim":
                            s.conn.send(("claim", claim(msg[1]) and not interrupted[0] and not fatal))
                        elif tag == "finding":
                            found(msg[1])
                        elif tag == "fatal":
                            if not fatal:
                                fatal.append(msg[1])
                                grace_until = time.monotonic() + 30
                                stop_all()
                        elif tag == "exit":
                            s.exited = True
                            s.proc.join(5)
                            s.conn.close()
                        if s.exited:
                            break
                        ready = []
                    if s.exited:
                        continue
                    if not s.proc.is_alive():
                        s.proc.join(1)
                        code = s.proc.exitcode
                        why = f"worker exited with {exit_text(code)} while running hierarchy {s.current}"
                        crashed(s, why, "crash")
                    elif s.current is not None and time.monotonic() - s.started > opts.hang_timeout_s:
                        s.proc.kill()
                        s.proc.join(5)
                        why = f"hierarchy {s.current} ran longer than {opts.hang_timeout_s:.0f} s"
                        crashed(s, why, "hang")
                progress.update(stats, len(findings), crashes)
                if grace_until is not None and time.monotonic() > grace_until:
                    for s in slots:
                        if not s.exited and s.proc.is_alive():
                            s.proc.kill()
                            s.proc.join(5)
                            s.exited = True
            except KeyboardInterrupt:
                if interrupted[0]:  # a second Ctrl-C: do not wait for the workers any more
                    grace_until = time.monotonic()
                    continue
                interrupted[0] = True
                grace_until = time.monotonic() + 30
                stop_all()
    finally:
        for s in slots:
            if s.proc is not None and s.proc.is_alive():
                s.proc.kill()
                s.proc.join(5)
        progress.update(stats, len(findings), crashes, force=True)
        progress.done()
    return CampaignResult(opts, stats, findings, time.perf_counter() - t0, busy, interrupted[0], crashes,
                          campaign_digest(digests), sorted(digests), error=fatal[0] if fatal else None,
                          outcomes_digest=campaign_digest(outcomes), ran_on=f"{opts.jobs} local worker processes")


def exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        import signal

        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
