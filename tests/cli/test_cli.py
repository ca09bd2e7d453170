"""The foliowalk command as a user runs it: a subprocess, its exit status and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_verify_x86_64_json() -> None:
    res = run("verify", "--arch", "x86_64", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    configs = {r["config"] for r in doc["rows"]}
    assert configs == {"x86_64:4level", "x86_64:5level"}
    assert doc["summary"]["disagree"] == 0 and doc["summary"]["agree"] > 0
    assert {r["walk"]["flags"] for r in doc["rows"]} == {"0", "FW_MIGRATION", "FW_ZEROPAGE", "FW_MIGRATION|FW_ZEROPAGE"}
    first = doc["rows"][0]
    assert first["mmu"]["observed_by"] == "tag" and first["walk"]["trace"]
    assert doc["registers"]["x86_64:4level"]["CR3"] > 0


def test_verify_table_output() -> None:
    res = run("verify", "--config", "x86_64:4level")
    assert res.returncode == 0, res.stderr
    assert "== x86_64:4level" in res.stdout and "linux-only: prot-none" in res.stdout
    assert "summary: agree" in res.stdout and "disagree 0" in res.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["verify", "--arch", "mips"], "unknown architecture 'mips'"),
        (["verify", "--config", "x86_64:6level"], "unknown configuration '6level'"),
        (["verify", "--config", "x86_64:4level", "--addr", "0x0000800000000000"], "not a canonical"),
        (["verify", "--config", "x86_64:4level", "--addr", "0x1000"], "outside every VMA"),
        (["verify", "--addr", "12q"], "not a number"),
        (["verify", "--kernel", "v5.0"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    res = run(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("foliowalk") and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_verify_exits_1_on_a_disagree(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A walker that reports the wrong page (a test double: pte_pfn off by one, vector rules off so
    every walk goes through it) makes the MMU disagree, and verify says so with exit status 1."""
    import emu.mm.pagewalk_batch
    from archs import x86_64
    from emu import cli

    real = x86_64.X86_64.pte_pfn
    monkeypatch.setattr(x86_64.X86_64, "pte_pfn", lambda self, pte: real(self, pte) + 1)
    monkeypatch.setattr(emu.mm.pagewalk_batch, "VECTOR_RULES", {})
    # --harness off: the MMU alone must catch it (tests/kernel: the compiled kernel catches it first)
    assert cli.main(["verify", "--config", "x86_64:4level", "--harness", "off"]) == 1
    out = capsys.readouterr().out
    assert "disagree: entry maps" in out and "disagree 0" not in out
