"""The campaign's summary report (replaying one hierarchy: ``emu/cli/fuzz.py``, ``emu/specs.py``).
"""

from __future__ import annotations

from emu.fuzz.records import CampaignResult
from emu.mm.pagewalk import FLAG_COMBINATIONS
from emu.verify import VERDICT_CLASSES


# -- the report ---------------------------------------------------------------------------------
def format_report(res: CampaignResult) -> str:
    """The end-of-run summary: rate, verdicts by class and by deciding entry level, findings."""
    st = res.stats
    o = res.options
    lines = [
        f"foliowalk fuzz: {', '.join(o.configs)}  kernel {o.kernel}  seed {o.seed}  "
        + (f"on {res.ran_on}" if o.scheduler else f"jobs {o.jobs}")
        + f"  harness {o.harness}"
        + ("  (interrupted)" if res.interrupted else ""),
        f"  {st.hierarchies:,} hierarchies, {st.cases:,} cases (addresses), {st.rows:,} rows "
        f"(x{len(FLAG_COMBINATIONS)} FW_* flag sets) in {res.wall_s:.1f} s",
        f"  rate: {res.cases_per_s:,.0f} cases/s overall; per core {res.cases_per_core_s:,.0f} cases/s "
        f"per worker-busy second, {res.cases_per_cpu_s:,.0f} per CPU second",
        f"  MMU fault rate {res.fault_rate:.1%}",
    ]
    sec = st.seconds
    total = sum(sec.values()) or 1.0
    work = total - sec.get("findings", 0.0)
    if sec.get("findings") and work > 0:
        lines.append(f"  per core without shrinking/saving findings: {st.cases / work:,.0f} cases/s")
    parts = sorted(sec.items(), key=lambda x: -x[1])
    lines.append("  time: " + ", ".join(f"{k} {v / total:.0%}" for k, v in parts))
    if res.digest:
        lines.append(f"  cases digest: {res.digest[:16]} over {len(res.indices)} hierarchies")
    if res.outcomes_digest:
        lines.append(f"  outcomes digest: {res.outcomes_digest[:16]} (their verdicts)")
    levels = ["pgd", "p4d", "pud", "pmd", "pte", "-"]
    present = [lv for lv in levels if any(st.by_level.get((lv, c)) for c in VERDICT_CLASSES)]
    w = max(12, *(len(c) for c in VERDICT_CLASSES))
    lines.append("")
    lines.append(f"  {'verdict':<{w}} {'rows':>11} " + " ".join(f"{lv:>10}" for lv in present))
    for c in VERDICT_CLASSES:
        lines.append(f"  {c:<{w}} {st.verdicts.get(c, 0):>11,} "
                     + " ".join(f"{st.by_level.get((lv, c), 0):>10,}" for lv in present))
    lines.append(f"  {'(by the level of the entry the walk decided on; - = none read)':<{w}}")
    lines.append("")
    if res.findings:
        lines.append(f"  findings ({len(res.findings)}):")
        for f in res.findings:
            where = f" {f.addr:#x}" if f.addr is not None else ""
            size = ""
            if f.entries is not None:
                noun = "entry" if f.fuzzed == 1 else "entries"
                size = f", {f.fuzzed} fuzzed {noun} of {f.entries}, {f.set_bits} set bits"
            lines.append(f"   - {f.kind} {f.config} hierarchy {f.index}{where}{size}: {f.verdict}")
            for e in f.shrunk_entries:
                lines.append(f"     {e}")
            if f.path:
                lines.append(f"     saved: {f.path}")
            if f.note:
                lines.append(f"     {f.note}")
        if o.out is None:
            lines.append("  findings not saved: no --out DIR was given; the same command with --out DIR (same "
                         "--seed) saves each as a fixture set and a hierarchy spec")
    else:
        lines.append("  findings: none")
    return "\n".join(lines)
