"""Running a campaign: check its configurations, run it in-process or in worker processes,
and write ``campaign.json`` and ``findings.jsonl`` under ``--out``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import archs
from emu.errors import ConfigError, FileError
from emu.fuzz.layout import plan_layout
from emu.fuzz.outdir import campaign_lock, index_findings, remove_stale_temp, unindexed_findings
from emu.fuzz.pool import _run_processes
from emu.fuzz.progress import Progress
from emu.fuzz.records import CampaignOptions, CampaignResult, FindingRecord, Stats, campaign_digest
from emu.fuzz.worker import Worker, atomic_write, finding_claimer


def check_campaign_configs(configs: Sequence[str]) -> list[str]:
    """Full configuration keys, each with an MMU oracle (else ConfigError)."""
    keys = []
    for c in configs:
        key = archs.get_config(c).key
        if not plan_layout(key).oracle:
            raise ConfigError(f"{key}: this architecture has no MMU oracle yet; nothing to fuzz against")
        keys.append(key)
    if not keys:
        raise ConfigError("no configuration to fuzz")
    return list(dict.fromkeys(keys))


def run_campaign(opts: CampaignOptions) -> CampaignResult:
    """Run a campaign: in-process with ``jobs=0`` (no crash isolation), in ``jobs`` worker
    processes, or with ``scheduler`` on a Dask cluster (:mod:`emu.cluster.fuzz`).  Ctrl-C stops
    it and keeps what was found.

    With ``opts.out``: the folder is locked for the campaign (a second campaign into it is
    refused), temporary files of killed writers are removed, findings an earlier killed run saved
    without indexing are indexed, and every finding is indexed in ``findings.jsonl`` as soon as
    it arrives.  A failing file operation (a full disk) stops the campaign and raises
    :class:`~emu.errors.FileError` naming the file; it is never recorded as a finding."""
    if opts.seconds is None and opts.hierarchies is None:
        raise ConfigError("a campaign needs --seconds or --hierarchies")
    opts.configs = check_campaign_configs(opts.configs)
    if opts.out is None:
        return _run(opts, None)
    out = opts.out = Path(opts.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileError(f"{out}: {err.strerror or err}") from None
    with campaign_lock(out):
        remove_stale_temp(out)
        earlier = unindexed_findings(out)
        index_findings(out, earlier)
        result = _run(opts, lambda rec: index_findings(out, [rec]))
        result.reindexed = len(earlier)
        try:
            atomic_write(out / "campaign.json", json.dumps(result.to_json(), indent=1).encode())
        except FileError:
            if result.error is None:
                raise
    if result.error is not None:
        raise FileError(f"the campaign stopped: {result.error}")
    return result


def _run(opts: CampaignOptions, record: Callable[[FindingRecord], None] | None) -> CampaignResult:
    if opts.scheduler is not None:
        from emu.cluster.fuzz import run_cluster

        return run_cluster(opts, record)
    if opts.jobs <= 0:
        return _run_inline(opts, record)
    return _run_processes(opts, record)


def _run_inline(opts: CampaignOptions, record: Callable[[FindingRecord], None] | None = None) -> CampaignResult:
    stats = Stats()
    findings: list[FindingRecord] = []
    claimed: set[str] = set()
    digests: dict[int, str] = {}
    outcomes: dict[int, str] = {}
    busy = 0.0
    progress = Progress(opts.progress, ",".join(opts.configs))
    def found(rec: FindingRecord) -> None:
        findings.append(rec)
        if record is not None:
            record(rec)

    worker = Worker(opts, finding_claimer(opts, claimed), found)
    t0 = time.perf_counter()
    deadline = t0 + opts.seconds if opts.seconds is not None else None
    interrupted = False
    idx = 0
    try:
        while opts.hierarchies is None or idx < opts.hierarchies:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            t1 = time.perf_counter()
            st, dg, od = worker.run_one(idx)
            busy += time.perf_counter() - t1
            stats.add(st)
            digests[idx] = dg
            outcomes[idx] = od
            idx += 1
            progress.update(stats, len(findings), 0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        worker.close()
        progress.update(stats, len(findings), 0, force=True)
        progress.done()
    return CampaignResult(opts, stats, findings, time.perf_counter() - t0, busy, interrupted, 0,
                          campaign_digest(digests), sorted(digests), outcomes_digest=campaign_digest(outcomes),
                          ran_on="this process")
