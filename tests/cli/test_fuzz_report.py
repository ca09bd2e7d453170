"""The campaign report says where findings went: saved under --out, or not saved (no --out)."""

from __future__ import annotations

from pathlib import Path

from emu.fuzz.records import CampaignOptions, CampaignResult, FindingRecord, Stats
from emu.fuzz.report import format_report


def _result(out: Path | None, findings: int) -> CampaignResult:
    opts = CampaignOptions(configs=["x86_64:4level"], seed=7, seconds=None, hierarchies=1, out=out)
    recs = [FindingRecord("disagree", f"k{i}", "x86_64:4level", i, 0x1000, "disagree: mismatch",
                          str(out / f"f{i}") if out else None) for i in range(findings)]
    return CampaignResult(opts, Stats(), recs, wall_s=1.0, worker_busy_s=1.0, interrupted=False, crashes=0)


def test_findings_without_out_are_said_not_saved() -> None:
    text = format_report(_result(None, 2))
    assert "findings (2):" in text and "findings not saved: no --out DIR was given" in text


def test_findings_with_out_name_their_files(tmp_path: Path) -> None:
    text = format_report(_result(tmp_path, 1))
    assert f"saved: {tmp_path / 'f0'}" in text and "not saved" not in text


def test_no_findings_no_note() -> None:
    text = format_report(_result(None, 0))
    assert "findings: none" in text and "not saved" not in text
