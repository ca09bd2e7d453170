"""Fuzzing entry encodings: the walker against the MMU against the architecture.

A *hierarchy* is a whole page-table tree in guest RAM whose entries are random encodings, a set of
VMAs over it and the addresses to check.  A *case* is one address: walked by folio_walk_start()
with every FW_* flag combination, probed once on the MMU, each (address, flags) row judged by
:func:`emu.judge.judge`.

Everything the generators know comes from ``archs/``: the paging configuration (levels, spans,
leaf sizes), the Linux builders of the arch module (``mk_table``, ``pfn_pte``/``pfn_pmd``/
``pfn_pud``, ``swp_entry_to_pte``/``_pmd``, ``make_pfn_swp_entry``, ``clear_value``, ``mk_bad``)
and its construct entry formats (``FORMATS``: fields and masks, for field-level mutations and
reserved bits).  There is no per-architecture code here.

Entry kinds (:data:`KINDS`): valid leaves and table pointers; near-valid ones (one flipped bit, a
format field set to an edge value, reserved/ignored fields set, a leaf built for another level,
``pXd_bad`` tables); swap and migration entries with edge types and offsets; PROT_NONE,
special, devmap and zero-page leaves; hostile table pointers (to their own table, the parent,
the root, a data page, the middle of a table, beyond RAM); pure noise.

Memory layout (:class:`Layout`): the fuzzer's own frames -- table frames for every level, tagged
data folios, leaf-sized folios -- live in a *pool* at a fixed physical address, the same in every
process, so a hierarchy is plain data (entry addresses and values) that any process can rebuild.
The pool starts at ``3 << k`` above everything else (the mm's pgd, zero pages, the probe
machine's frames), so no single flipped address bit of a pool pointer lands on the probe
machine; values that could still point there under any level's interpretation are re-drawn
(the MMU sets accessed/dirty bits in the entries it walks, and must never do so in the machine's
own code and tables).

Determinism: hierarchy ``i`` of a campaign with seed ``s`` comes from ``Random("…/s/i")`` alone;
worker ``w`` of ``J`` takes indices ``w, w+J, …``, so ``--jobs`` never changes the cases, and
:meth:`Hierarchy.to_bytes` is their canonical serialization.

Shrinking (:func:`shrink`): a finding is cut to the one address that shows it, then
delta-debugging (ddmin) removes fuzzed entries (an entry that replaced a table pointer reverts to
that pointer), then the table pointers nobody needs, then clears every set bit it can -- each
step keeps a candidate only if the same *signature* (verdict class and text, walk reason,
deciding level, with numbers blanked) still shows.  The table pointers on the path stay
canonical ``mk_table()`` values: they are the structure, the rest is the finding.

Campaigns (:func:`run_campaign`, ``foliowalk fuzz``): every row is counted by verdict class and by
the level of the entry the walk decided on; the first row of every distinct ``disagree``
signature and of every ``emulator-deviation`` kind is shrunk and saved under ``--out`` as a
fixture set (emu/fixtures/; rows recomputed on a fresh machine first) plus its
``*.hierarchy.json``.  Workers are spawned processes (never forked: they hold Unicorn engines and
threads); one that dies (an emulator abort) or hangs is replaced, its hierarchy saved as a
``crash``/``hang`` finding, and the campaign goes on.  Ctrl-C stops the workers after their
current hierarchy and keeps everything found.  ``bench/fuzz_rate.py`` measures the rate.

Modules, one job each: :mod:`~emu.fuzz.layout` (the pool), :mod:`~emu.fuzz.spec` (hierarchies as
data), :mod:`~emu.fuzz.entry_gen` and :mod:`~emu.fuzz.hierarchy_gen` (generators),
:mod:`~emu.fuzz.evaluate` (materialize, walk, probe, judge), :mod:`~emu.fuzz.shrinking`,
:mod:`~emu.fuzz.records` (options, statistics, results), :mod:`~emu.fuzz.worker`,
:mod:`~emu.fuzz.pool` (crash-isolating worker processes), :mod:`~emu.fuzz.progress`,
:mod:`~emu.fuzz.campaign` (:func:`run_campaign`) and :mod:`~emu.fuzz.report`.  The names below
are the package's API; import them from ``emu.fuzz``.
"""

from __future__ import annotations

from emu.fuzz.campaign import check_campaign_configs, run_campaign
from emu.fuzz.entry_gen import BENCH_WEIGHTS, DEFAULT_WEIGHTS, KINDS, EntryGenerator, GenParams
from emu.fuzz.evaluate import Evaluation, Target, deciding_level, materialize, signature
from emu.fuzz.hierarchy_gen import HierarchyGenerator
from emu.fuzz.layout import Layout, plan_layout
from emu.fuzz.records import CampaignOptions, CampaignResult, FindingRecord, Stats
from emu.fuzz.report import format_report
from emu.fuzz.shrinking import Shrunk, shrink
from emu.fuzz.spec import Entry, Hierarchy, VmaSpec, hierarchy_seed
from emu.fuzz.worker import save_hierarchy_finding

__all__ = [
    "KINDS",
    "DEFAULT_WEIGHTS",
    "BENCH_WEIGHTS",
    "GenParams",
    "Layout",
    "plan_layout",
    "Entry",
    "VmaSpec",
    "Hierarchy",
    "EntryGenerator",
    "HierarchyGenerator",
    "Target",
    "materialize",
    "Evaluation",
    "signature",
    "shrink",
    "Shrunk",
    "CampaignOptions",
    "CampaignResult",
    "FindingRecord",
    "Stats",
    "run_campaign",
    "check_campaign_configs",
    "hierarchy_seed",
    "format_report",
    "save_hierarchy_finding",
    "deciding_level",
]
