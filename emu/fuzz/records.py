"""What a campaign is asked and what it reports: options, verdict statistics, finding records,
the result, and the digest of its cases.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archs.linux import (
    DEFAULT_KERNEL,
)
from emu.fuzz.entry_gen import GenParams


# -- campaigns ----------------------------------------------------------------------------------
@dataclass
class CampaignOptions:
    """What ``foliowalk fuzz`` runs.  ``hierarchies``: stop after this many (all indices below
    it), ``seconds``: stop after this long -- whichever comes first (at least one of them)."""

    configs: list[str]
    seed: int = 0
    seconds: float | None = 60.0
    hierarchies: int | None = None
    jobs: int = 1
    out: Path | None = None
    kernel: str = DEFAULT_KERNEL
    params: GenParams = field(default_factory=GenParams)
    shrink: bool = True
    shrink_budget_s: float = 30.0
    max_findings: int = 50
    hang_timeout_s: float = 120.0
    #: Test double hook: called in the worker with the hierarchy index before it runs.
    before_hierarchy: Callable[[int], None] | None = None
    progress: bool = True
    #: auto | batch | scalar: which walker evaluates the rows (auto: the batch walker when
    #: emu.mm.pagewalk_batch is there; see :meth:`Target.walk`).
    walker: str = "auto"
    #: auto | on | off: ask the compiled kernel about every entry walked (emu.kernel): "auto" when
    #: a harness is already built for the configuration, "on" builds it, "off" the model alone.
    harness: str = "off"
    #: unicorn | qemu | bochs: the MMU oracle's emulator (emu.machines.oracles.ORACLES; docs/oracles.md).
    emulator: str = "unicorn"
    #: A Dask scheduler's address: run on that cluster (emu.cluster.fuzz) instead of ``jobs``.
    scheduler: str | None = None


@dataclass
class Stats:
    """Counts a worker sends for each hierarchy and the campaign adds up."""

    hierarchies: int = 0
    cases: int = 0
    rows: int = 0
    faults: int = 0
    cpu_s: float = 0.0  # process CPU time the hierarchies took (what one core did)
    verdicts: Counter[str] = field(default_factory=Counter)
    by_level: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, o: Stats) -> None:
        self.hierarchies += o.hierarchies
        self.cases += o.cases
        self.rows += o.rows
        self.faults += o.faults
        self.cpu_s += o.cpu_s
        self.verdicts.update(o.verdicts)
        self.by_level.update(o.by_level)
        for k, v in o.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def to_json(self) -> dict[str, Any]:
        return {
            "hierarchies": self.hierarchies,
            "cases": self.cases,
            "rows": self.rows,
            "faults": self.faults,
            "cpu_s": round(self.cpu_s, 3),
            "verdicts": dict(self.verdicts),
            "by_level": {f"{lv}/{cls}": n for (lv, cls), n in sorted(self.by_level.items())},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


@dataclass
class FindingRecord:
    """A finding as the campaign reports it (``path``: its fixture set or spec file)."""

    kind: str  # disagree | emulator-deviation | crash | hang
    key: str
    config: str
    index: int | None
    addr: int | None
    verdict: str
    path: str | None
    entries: int | None = None
    fuzzed: int | None = None
    set_bits: int | None = None
    note: str = ""
    shrunk_entries: list[str] = field(default_factory=list)  # the fuzzed entries left, decoded

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CampaignResult:
    options: CampaignOptions
    stats: Stats
    findings: list[FindingRecord]
    wall_s: float
    worker_busy_s: float
    interrupted: bool
    crashes: int
    digest: str | None = None  # over the hierarchies run, in index order (count-limited runs)
    indices: list[int] = field(default_factory=list)
    #: Why the campaign stopped early, when its environment failed it (a full disk): one line
    #: naming the file.  None otherwise.
    error: str | None = None
    #: Findings of earlier, killed runs found on disk unindexed and indexed by this one.
    reindexed: int = 0
    #: over the hierarchies' verdicts (emu.fuzz.worker.outcome_digest), in index order: the same
    #: for the same cases whatever ran them (--jobs, a Dask cluster)
    outcomes_digest: str | None = None
    #: "this process", "N local worker processes" or "dask ADDRESS (N workers, T threads)"
    ran_on: str | None = None

    @property
    def cases_per_s(self) -> float:
        return self.stats.cases / self.wall_s if self.wall_s else 0.0

    @property
    def cases_per_core_s(self) -> float:
        """Cases per second of one worker's busy time (what one core does)."""
        return self.stats.cases / self.worker_busy_s if self.worker_busy_s else 0.0

    @property
    def cases_per_cpu_s(self) -> float:
        """Cases per CPU second of the workers (per core, whatever else shares the machine)."""
        return self.stats.cases / self.stats.cpu_s if self.stats.cpu_s else 0.0

    @property
    def fault_rate(self) -> float:
        return self.stats.faults / self.stats.cases if self.stats.cases else 0.0

    @property
    def ok(self) -> bool:
        return self.stats.verdicts.get("disagree", 0) == 0 and not any(
            f.kind in ("disagree", "crash", "hang") for f in self.findings
        )

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "format": "foliowalk-fuzz-campaign/1",
            "configs": o.configs,
            "kernel": o.kernel,
            "oracle": o.emulator,  # whose MMU answered (emu/machines/oracles.py)
            "seed": o.seed,
            "jobs": o.jobs,
            "seconds_limit": o.seconds,
            "hierarchies_limit": o.hierarchies,
            "wall_s": round(self.wall_s, 3),
            "worker_busy_s": round(self.worker_busy_s, 3),
            "cases_per_s": round(self.cases_per_s, 1),
            "cases_per_core_s": round(self.cases_per_core_s, 1),
            "cases_per_cpu_s": round(self.cases_per_cpu_s, 1),
            "fault_rate": round(self.fault_rate, 4),
            "interrupted": self.interrupted,
            "error": self.error,
            "reindexed": self.reindexed,
            "crashes": self.crashes,
            "digest": self.digest,
            "outcomes_digest": self.outcomes_digest,
            "ran_on": self.ran_on,
            "scheduler": o.scheduler,
            "stats": self.stats.to_json(),
            "findings": [f.to_json() for f in self.findings],
        }


def campaign_digest(digests: dict[int, str]) -> str:
    """SHA-256 over per-hierarchy digests in index order (``i:digest`` lines)."""
    h = hashlib.sha256()
    for i in sorted(digests):
        h.update(f"{i}:{digests[i]}\n".encode())
    return h.hexdigest()
