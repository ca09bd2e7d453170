"""Running a campaign: check its configurations, run it in-process or in worker processes,
and write ``campaign.json`` and ``findings.jsonl`` under ``--out``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import archs
from emu.errors import ConfigError
from emu.fuzz.layout import plan_layout
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
    """Run a campaign: in-process with ``jobs=0`` (no crash isolation), else in ``jobs`` worker
    processes.  Ctrl-C stops it and keeps what was found."""
    if opts.seconds is None and opts.hierarchies is None:
        raise ConfigError("a campaign needs --seconds or --hierarchies")
    opts.configs = check_campaign_configs(opts.configs)
    if opts.out is not None:
        opts.out = Path(opts.out)
        opts.out.mkdir(parents=True, exist_ok=True)
    if opts.jobs <= 0:
        result = _run_inline(opts)
    else:
        result = _run_processes(opts)
    if opts.out is not None:
        atomic_write(opts.out / "campaign.json", json.dumps(result.to_json(), indent=1).encode())
        # findings.jsonl accumulates over runs: the old lines plus this run's, replaced whole.
        index = opts.out / "findings.jsonl"
        old = index.read_bytes() if index.exists() else b""
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]  # a line torn by a run killed before this fix
        new = "".join(json.dumps(rec.to_json()) + "\n" for rec in result.findings).encode()
        atomic_write(index, old + new)
    return result


def _run_inline(opts: CampaignOptions) -> CampaignResult:
    stats = Stats()
    findings: list[FindingRecord] = []
    claimed: set[str] = set()
    digests: dict[int, str] = {}
    busy = 0.0
    progress = Progress(opts.progress, ",".join(opts.configs))
    worker = Worker(opts, finding_claimer(opts, claimed), findings.append)
    t0 = time.perf_counter()
    deadline = t0 + opts.seconds if opts.seconds is not None else None
    interrupted = False
    idx = 0
    try:
        while opts.hierarchies is None or idx < opts.hierarchies:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            t1 = time.perf_counter()
            st, dg = worker.run_one(idx)
            busy += time.perf_counter() - t1
            stats.add(st)
            digests[idx] = dg
            idx += 1
            progress.update(stats, len(findings), 0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        worker.close()
        progress.update(stats, len(findings), 0, force=True)
        progress.done()
    return CampaignResult(opts, stats, findings, time.perf_counter() - t0, busy, interrupted, 0,
                          campaign_digest(digests), sorted(digests))
