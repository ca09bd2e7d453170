"""``foliowalk translate`` as a user runs it: a subprocess, its exit status and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.archs.translate_vectors import A64_4K, S390_SEG, X86_TABLES

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", "translate", *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)


def entries_file(tmp_path: Path, entries: dict[int, int]) -> str:
    path = tmp_path / "entries.txt"
    path.write_text("# pa:value\n" + "".join(f"{pa:#x}: {value:#x}  # entry\n" for pa, value in entries.items()))
    return str(path)


def test_arm64_16k_entries_file(tmp_path: Path) -> None:
    """The issue's example: 16KB granule, 48-bit VA, TTBR0 at physical 0 (Arm ARM D8.2)."""
    f = entries_file(tmp_path, {0x0: 0x4003, 0x4000: 0x8003, 0x8000: 0xC003, 0xC008: 0x10_0403})
    got = run("--config", "arm64:16k:48", "--ttbr0", "0x0", "--entries", f, "0x4123", "0x8000")
    assert got.returncode == 0, got.stderr
    assert "pa 0x100123 (0x4000-byte page" in got.stdout
    assert "translation at L3 code 0x7" in got.stdout
    assert got.stdout.count("verdict: agree") == 2
    assert "L0 @0x0 = 0x0000000000004003  table-16k" in got.stdout


def test_json_both_halves_and_a_deviation(tmp_path: Path) -> None:
    f = entries_file(tmp_path, A64_4K)
    got = run("--config", "arm64:4k:48", "--ttbr0", "0", "--ttbr1", "0xa000", "--entries", f, "--json",
              "0x10", "0xffff000000000010", "0x8000000000")
    assert got.returncode == 0, got.stderr
    rows = json.loads(got.stdout)["rows"]
    assert [r["manual"].get("pa") for r in rows[:2]] == ["0x5010", "0x5010"]
    assert [r["verdict"] for r in rows[:2]] == ["agree", "agree"]
    assert rows[2]["manual"]["kind"] == "translation" and rows[2]["manual"]["level"] == "L0"
    assert rows[2]["verdict"] == "emulator-deviation: block-at-any-level"
    assert rows[0]["manual"]["trace"][0] == {**rows[0]["manual"]["trace"][0], "level": "L0", "pa": "0x0"}


def test_x86_raw_image_with_offset(tmp_path: Path) -> None:
    """The same tables as a raw image whose first byte is physical 0x100000 (CR3 moves with it)."""
    base = 0x10_0000
    image = bytearray(0x4000)
    for pa, value in X86_TABLES.items():
        if pa < 0x4000:  # table entries point at 0x1000.. : rebase the table pointers
            image[pa:pa + 8] = value.to_bytes(8, "little")
    rebased = bytearray(image)
    for off in (0x0, 0x1000, 0x2000):  # PML4[0], PDPT[0], PD[0] point at the next table
        value = int.from_bytes(image[off:off + 8], "little")
        rebased[off:off + 8] = (value + base).to_bytes(8, "little")
    raw = tmp_path / "mem.raw"
    raw.write_bytes(bytes(rebased))
    got = run("--config", "x86_64:4level", "--cr3", hex(base), "--image", str(raw), "--offset", hex(base),
              "--json", "0xabc", "0x2000", "0x800000000000")
    assert got.returncode == 0, got.stderr
    rows = json.loads(got.stdout)["rows"]
    assert rows[0]["manual"]["pa"] == "0x5abc" and rows[0]["verdict"] == "agree"
    assert rows[1]["manual"]["kind"] == "page-fault" and rows[1]["verdict"] == "agree"
    assert rows[2]["manual"]["kind"] == "general-protection" and rows[2]["mmu"]["kind"] == "general-protection"


def test_s390x_write_and_manual_only(tmp_path: Path) -> None:
    f = entries_file(tmp_path, S390_SEG)
    got = run("--config", "s390x", "--asce", "0x4003", "--entries", f, "--access", "write", "--no-mmu", "0x200010")
    assert got.returncode == 0, got.stderr
    assert "protection code 0x4" in got.stdout and "verdict: manual-only" in got.stdout


def test_s390x_lowcore_is_named(tmp_path: Path) -> None:
    f = entries_file(tmp_path, {0x0: 0x8000, 0x8000: 0x5000})
    got = run("--config", "s390x", "--asce", "0x3", "--entries", f, "0x123")
    assert got.returncode == 0, got.stderr
    assert "pa 0x5123" in got.stdout and "oracle-cannot-check: entries in the s390x lowcore" in got.stdout


@pytest.mark.parametrize("args, message", [
    (["--config", "arm64:8k:48", "--ttbr0", "0"], "granule of 4k, 16k or 64k"),
    (["--config", "x86_64:4level"], "x86_64 needs CR3"),
    (["--config", "arm64:4k:48", "--ttbr0", "0x10"], "not aligned"),
    (["--config", "arm64:4k:48", "--ttbr0", "0", "--cpu", "wp=1"], "--cpu 'wp=1'"),
    (["--config", "x86_64:4level", "--cr3", "0", "--cpu", "nxe=maybe"], "yes/no fact"),
    (["--config", "mips:32", "--cr3", "0"], "unknown architecture"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    f = entries_file(tmp_path, {0: 0x1003})
    got = run(*args, "--entries", f, "0x1000")
    assert got.returncode == 2
    assert got.stderr.count("\n") == 1 and message in got.stderr and "Traceback" not in got.stderr


def test_malformed_entries_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("0x0: 0x1003\n0x8 0x5\n")
    got = run("--config", "arm64:4k:48", "--ttbr0", "0", "--entries", str(path), "0x0")
    assert got.returncode == 2 and f"{path}:2: expected 'pa:value'" in got.stderr and got.stderr.count("\n") == 1


def test_va_out_of_range(tmp_path: Path) -> None:
    got = run("--config", "arm64:4k:48", "--ttbr0", "0", "--entries", entries_file(tmp_path, {0: 3}), hex(1 << 64))
    assert got.returncode == 2 and "64-bit" in got.stderr


def test_docs_example_runs() -> None:
    """docs/translate.md's Python example, as a user would paste it (documented names only)."""
    import re

    text = (ROOT / "docs" / "translate.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None and len(code.group(1).strip().splitlines()) <= 10
    got = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=300,
                         check=False, cwd=ROOT)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("pa 0x100123 (0x4000-byte page")
    assert got.stdout.count("| agree") == 2
