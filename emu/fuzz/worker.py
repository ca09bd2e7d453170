"""One campaign worker (in a worker process, or in-process with ``jobs=0``): generate, evaluate,
judge; shrink and save the findings the campaign lets it claim.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emu.errors import FileError, FoliowalkError
from emu.fuzz.evaluate import Evaluation, Target, deciding_level, signature
from emu.fuzz.hierarchy_gen import HierarchyGenerator
from emu.fuzz.records import CampaignOptions, FindingRecord, Stats
from emu.fuzz.shrinking import shrink, single_address
from emu.fuzz.spec import Hierarchy
from emu.machines.base import Fault


class Worker:
    """What runs in a worker process (or in-process with ``jobs=0``): generate, evaluate,
    judge; shrink and save findings the campaign lets it claim."""

    def __init__(
        self, opts: CampaignOptions, claim: Callable[[str], bool], report: Callable[..., None]
    ) -> None:
        self.opts = opts
        self.claim = claim
        self.report = report
        self.targets: dict[str, Target] = {}
        self.gens: dict[str, HierarchyGenerator] = {}

    def target(self, key: str) -> Target:
        if key not in self.targets:
            self.targets[key] = Target(key, self.opts.kernel, walker=self.opts.walker, harness=self.opts.harness,
                                       emulator=self.opts.emulator)
        if key not in self.gens:
            self.gens[key] = HierarchyGenerator(key, self.opts.kernel, self.opts.params)
        return self.targets[key]

    def close(self) -> None:
        for t in self.targets.values():
            t.close()
        self.targets.clear()

    def run_one(self, index: int) -> tuple[Stats, str, str]:
        """Hierarchy ``index``: its statistics, the digest of the hierarchy (the cases) and the
        digest of its outcomes (every row's verdict, in order: :func:`outcome_digest`)."""
        opts = self.opts
        key = opts.configs[index % len(opts.configs)]
        target = self.target(key)
        c0 = time.process_time()
        t0 = time.perf_counter()
        h = self.gens[key].generate(opts.seed, index)
        t1 = time.perf_counter()
        if opts.before_hierarchy is not None:
            opts.before_hierarchy(index)
        ev = target.evaluate(h)
        st = Stats(hierarchies=1, cases=len(ev.addrs))
        st.seconds["generate"] = t1 - t0
        st.seconds.update(ev.seconds)
        for i, row in enumerate(ev.walks):
            mmu = ev.probes[i]
            if isinstance(mmu, Fault):
                st.faults += 1
            for j, w in enumerate(row):
                verdict = ev.verdicts[i][j]
                cls = verdict.split(":", 1)[0]
                st.rows += 1
                st.verdicts[cls] += 1
                st.by_level[(deciding_level(w), cls)] += 1
        t2 = time.perf_counter()
        for claim_key, (i, j, sig) in finding_candidates(h, ev).items():
            if self.claim(claim_key):
                self.save_finding(target, h, ev, i, j, sig)
        st.seconds["findings"] = time.perf_counter() - t2
        st.cpu_s = time.process_time() - c0
        return st, h.digest(), outcome_digest(ev)

    def save_claimed(self, index: int, claim_key: str) -> bool:
        """Generate and evaluate hierarchy ``index`` again and save the finding ``claim_key``
        names (a Dask campaign, emu.cluster.fuzz: a shard reported the candidate, the campaign
        claimed it).  False if the hierarchy no longer shows it."""
        key = self.opts.configs[index % len(self.opts.configs)]
        target = self.target(key)
        h = self.gens[key].generate(self.opts.seed, index)
        ev = target.evaluate(h)
        found = finding_candidates(h, ev).get(claim_key)
        if found is None:
            return False
        i, j, sig = found
        self.save_finding(target, h, ev, i, j, sig)
        return True

    def save_finding(self, target: Target, h: Hierarchy, ev: Evaluation, i: int, j: int, sig: str) -> None:
        opts = self.opts
        addr = ev.addrs[i]
        verdict = ev.verdicts[i][j]
        kind = verdict.split(":", 1)[0]
        name = f"{kind}-{h.config.replace(':', '-')}-s{opts.seed}-h{h.index}-{addr:x}"
        note = ""
        small = h
        try:
            if opts.shrink:
                res = shrink(target, h, addr, sig, budget_s=opts.shrink_budget_s)
                small = res.hierarchy
                n, nf, nb = res.before
                note = (f"shrunk from {n} entries ({nf} fuzzed, {nb} set bits) in {res.evaluations} "
                        f"evaluations, {res.seconds:.1f} s" + ("" if res.complete else " (time budget hit)"))
            else:
                small = single_address(h, addr, h.vmas)
        except FoliowalkError as exc:
            note = f"not shrunk: {exc}"
            small = single_address(h, addr, h.vmas)
        # The verdict as the minimized hierarchy gives it (addresses in it may have changed).
        sev = target.evaluate(small)
        for jj, w in enumerate(sev.walks[0]):
            if signature(w, sev.probes[0], sev.verdicts[0][jj]) == sig:
                verdict = sev.verdicts[0][jj]
                break
        path = None
        if opts.out is not None:
            path, extra_note = save_hierarchy_finding(opts.out, small, name, sig, verdict, emulator=opts.emulator)
            note = "; ".join(x for x in (note, extra_note) if x)
        self.report(FindingRecord(
            kind, sig, h.config, h.index, addr, verdict, str(path) if path else None,
            len(small.entries), len(small.fuzzed), small.set_bits(), note,
            [line for e, line in zip(sorted(small.entries, key=lambda e: (e.depth, e.pa)),
                                     small.describe(target.ops), strict=True) if e.fuzzed],
        ))


def finding_candidates(h: Hierarchy, ev: Evaluation) -> dict[str, tuple[int, int, str]]:
    """The findings a hierarchy shows, by the key the campaign claims them under (the
    configuration and the signature of a ``disagree``; the configuration and the verdict of an
    ``emulator-deviation``): ``{claim key: (address row, flags column, signature)}``, first
    occurrence of each signature."""
    seen: dict[str, tuple[int, int]] = {}
    for i, row in enumerate(ev.walks):
        for j, w in enumerate(row):
            verdict = ev.verdicts[i][j]
            if verdict.split(":", 1)[0] in ("disagree", "emulator-deviation"):
                seen.setdefault(signature(w, ev.probes[i], verdict), (i, j))
    out: dict[str, tuple[int, int, str]] = {}
    for sig, (i, j) in seen.items():
        cls = sig.split("|", 1)[0]
        key_ = sig if cls == "disagree" else f"emulator-deviation|{ev.verdicts[i][j]}"
        out.setdefault(f"{h.config}|{key_}", (i, j, sig))
    return out


def outcome_digest(ev: Evaluation) -> str:
    """SHA-256 over a hierarchy's verdicts, row by row (address order, then FW_* flag sets):
    what it came out as, the same wherever it ran."""
    text = "\n".join("\t".join(row) for row in ev.verdicts)
    return hashlib.sha256(text.encode()).hexdigest()


def save_hierarchy_finding(out: Path, h: Hierarchy, name: str, sig: str, verdict: str, *,
                           emulator: str = "unicorn") -> tuple[Path, str]:
    """Save a (shrunk, one-address) finding: its hierarchy spec, and a fixture set when the
    fixtures API is there.  The rows are recomputed on a fresh machine first: a finding must
    not depend on the state of the machine that found it.  Returns (path, note)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = {"signature": sig, "verdict": verdict, "hierarchy": h.to_json()}
    spec_path = out / f"{name}.hierarchy.json"
    atomic_write(spec_path, json.dumps(spec, indent=1).encode())
    try:
        fixtures = importlib.import_module("emu.fixtures")
    except ImportError:
        return spec_path, "fixture not written: emu.fixtures is not available"
    from emu.verify import verify_scenario

    with Target(h.config, h.kernel, emulator=emulator) as fresh:
        fresh.load(h)
        # verify_scenario() tags the frames the walks expect: never the probe machine's.
        ev = fresh.evaluate(h)
        if any(w.expected_pa is not None and fresh.layout.in_forbidden(w.expected_pa)
               for row in ev.walks for w in row):
            return spec_path, "fixture not written: a leaf maps the probe machine's frames"
        fresh.load(h)
        rows = verify_scenario(fresh.sc)
        if not any(signature(r.walk, r.mmu, r.verdict) == sig for r in rows):
            return spec_path, "fixture not written: the finding did not reproduce on a fresh machine"
        path = fixtures.write_fixture_set(
            out, fresh.sc, rows, name=name,
            extra={"fuzz": {"signature": sig, "hierarchy": h.to_json()}},
        )
    return Path(path), ""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole: a temporary file, fsync, rename, fsync the folder.
    Any failure (a full disk) removes the temporary file; an OSError becomes a
    :class:`~emu.errors.FileError` naming ``path``."""
    from emu.files import check_replaceable

    check_replaceable(path)  # never put a file where a FIFO, device or folder was
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        _fsync(tmp)
        check_replaceable(path)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise FileError(f"{path}: {exc.strerror or exc}") from None
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finding_claimer(opts: CampaignOptions, claimed: set[str]) -> Callable[[str], bool]:
    def claim(key: str) -> bool:
        if key in claimed or len(claimed) >= opts.max_findings:
            return False
        claimed.add(key)
        return True

    return claim


def os_error_text(exc: BaseException) -> str:
    """An OSError / FileError as one line naming its file."""
    if isinstance(exc, OSError) and not isinstance(exc, FileError):
        return f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc.strerror or exc)
    return str(exc)


def worker_main(conn: Any, opts: CampaignOptions, first: int, stride: int, deadline: float | None) -> None:
    """A worker process: hierarchies ``first, first+stride, ...`` until the deadline, the count
    or a "stop" from the campaign.  Messages to the campaign: ("start", i), ("done", i, stats,
    digest, outcomes digest, busy_s), ("claim", key) -> ("claim", bool), ("finding", record), ("fatal", line),
    ("exit",).

    An OSError of the worker's own files (a full disk, EIO) is no finding: it is sent as
    ("fatal", "<file>: <why>") and the worker stops.  When the campaign is gone (killed) the
    worker exits quietly at its next message."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the campaign decides when to stop
    stop = [False]
    parent = os.getppid()

    def recv_reply(tag: str) -> Any:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                stop[0] = True
            elif msg[0] == tag:
                return msg[1]

    def claim(key: str) -> bool:
        conn.send(("claim", key))
        return bool(recv_reply("claim"))

    def report(rec: FindingRecord) -> None:
        conn.send(("finding", rec))

    gone = (BrokenPipeError, ConnectionError, EOFError)
    worker = Worker(opts, claim, report)
    try:
        try:
            idx = first
            while not stop[0]:
                if opts.hierarchies is not None and idx >= opts.hierarchies:
                    break
                if deadline is not None and time.time() >= deadline:
                    break
                if os.getppid() != parent:
                    return  # the campaign died: nobody to report to
                while conn.poll():
                    if conn.recv()[0] == "stop":
                        stop[0] = True
                if stop[0]:
                    break
                conn.send(("start", idx))
                t0 = time.perf_counter()
                try:
                    st, dg, od = worker.run_one(idx)
                except gone:
                    raise
                except (OSError, FileError) as exc:
                    conn.send(("fatal", os_error_text(exc)))
                    break
                conn.send(("done", idx, st, dg, od, time.perf_counter() - t0))
                idx += stride
        finally:
            worker.close()
        conn.send(("exit",))
    except gone:
        return  # the campaign is gone (killed): exit quietly, no traceback
