"""``foliowalk explain`` as a user runs it (a subprocess).  The expectations are read from the
manuals' layouts by hand, not from foliowalk: an arm64 64K-granule page descriptor (Arm ARM D8
"Translation table descriptor formats": bit 0 valid, bit 1 table/page, bits 9:8 SH, bit 10 AF,
bit 11 nG, bits 47:16 the output address) and an x86-64 4K PTE (SDM vol. 3A table 4-19: P, R/W,
U/S, A, D, bits 51:12 the frame, bit 63 XD)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", "explain", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=os.environ)


# 0x00e8000000200f43: valid, page (bit 1), AP[1] (bit 6), SH = 0b11, AF, nG, OA 0x200000 (bits 47:16
# = 0x20), DBM (bit 51), PXN (53), UXN (54), bit 55 (Linux's PTE_DIRTY)
ARM64_PAGE = 0x00E8000000200F43


def test_arm64_page_every_view() -> None:
    res = run("--config", "arm64:64k:48", "--level", "pte", hex(ARM64_PAGE), "--harness", "off")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"== arm64:64k:48 pte (L3) = {ARM64_PAGE:#018x}" in out
    for field in ("valid=1", "table=1", "af=1", "ng=1", "sh=3", "ap1=1", "ap2=0", "addr=0x20", "dbm=1", "pxn=1",
                  "uxn=1", "dirty=1", "special=0"):
        assert f" {field} " in out or out.count(f" {field}\n"), field
    assert "architecture: valid" in out
    assert "pte_present=1" in out and "pte_none=0" in out and "pte_pfn=0x20" in out
    assert "kernel (compiled): not asked" in out and "the compiled kernel's answers are not shown" in out
    # the MMU reaches the descriptor's output address, 0x20 << 16, under every flag set
    rows = [ln for ln in out.splitlines() if ln.strip().startswith(("0 ", "FW_"))]
    assert len(rows) == 4 and all("pa 0x200000" in r and r.rstrip().endswith("agree") for r in rows), out


def test_arm64_af_clear_is_an_access_flag_fault() -> None:
    res = run("--config", "arm64:64k:48", "--pte", hex(ARM64_PAGE & ~(1 << 10)), "--harness", "off", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (view,) = doc["entries"]
    assert view["fields"]["af"] == 0
    arch = view["architecture"]
    assert arch["verdict"] == "faults" and (arch["fault"]["kind"], arch["fault"]["level"]) == ("access-flag", 3)
    assert view["linux"]["pte_present"] == 1  # Linux: an old page is present
    assert {(r["mmu"]["fault"], r["mmu"]["level"]) for r in doc["rows"]} == {("access-flag", 3)}
    assert all(r["verdict"].startswith("linux-only: old-page") for r in doc["rows"])


def test_x86_64_swap_pte_json() -> None:
    """An x86-64 migration entry made by hand with v6.12 arch/x86/include/asm/pgtable_64.h:
    ``__swp_entry(type, offset) = (~offset << SWP_OFFSET_SHIFT(14) >> SWP_TYPE_BITS(5)) |
    type << 59``; type 28 is SWP_MIGRATION_READ in the distro Kconfig (32 swap types minus
    PTE_MARKER 1, MIGRATION 3, HWPOISON 1: MAX_SWAPFILES 27, hwpoison 27, migration 28..30),
    offset = pfn 0x71."""
    mask = (1 << 64) - 1
    value = ((~0x71 << 14) & mask) >> 5 | 28 << 59
    assert value == 0xE7FFFFFFFFFF1C00
    res = run("--config", "x86_64:4level", "--pte", hex(value), "--harness", "off", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (view,) = doc["entries"]
    assert view["fields"]["present"] == 0
    assert view["architecture"]["verdict"] == "faults" and "P=0" in view["architecture"]["why"]
    assert view["linux"]["pte_present"] == 0 and view["linux"]["is_migration_entry"] == 1
    assert view["swap"]["meaning"] == "migration-read" and view["swap"]["pfn"] == 0x71
    by_flags = {r["walk"]["flags"]: r for r in doc["rows"]}
    assert by_flags["0"]["walk"]["reason"] == "migration-entry@pte" and by_flags["0"]["verdict"] == "agree"
    assert by_flags["FW_MIGRATION"]["walk"]["folio_pfn"] == 0x71
    assert by_flags["FW_MIGRATION"]["verdict"] == "linux-only: migration-entry"
    assert by_flags["0"]["mmu"]["fault"] == "page-fault"


def test_x86_64_whole_path() -> None:
    """Several levels at once: the given table pointers are moved onto the explanation's tables
    (only their address bits), the leaf is the given PTE: P, R/W, U/S, A, D, frame 0x65, XD."""
    pte = 0x8000000000065067
    res = run("--config", "x86_64:4level", "--pud", "0x3063", "--pmd", "0x4063", "--pte", hex(pte),
              "--addr", "0x7f0000201000", "--harness", "off", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [v["level"] for v in doc["entries"]] == ["pud", "pmd", "pte"]
    f = doc["entries"][2]["fields"]
    assert (f["p"], f["rw"], f["us"], f["a"], f["d"], f["addr"], f["xd"]) == (1, 1, 1, 1, 1, 0x65, 1)
    placed = {p["level"]: p for p in doc["hierarchy"]}
    assert placed["pte"]["value"] == pte and placed["pte"]["what"] == "given"
    assert placed["pud"]["value"] & 0xFFF == 0x063 and "moved" in placed["pud"]["what"]
    assert doc["addr"] == 0x7F0000201000
    assert {r["mmu"]["pa"] for r in doc["rows"]} == {0x65000}
    assert {r["verdict"] for r in doc["rows"]} == {"agree"}


def test_kernel_answers_or_a_note() -> None:
    """With --harness auto the compiled kernel answers every function where a harness is built;
    where none is, the output says so instead of showing nothing."""
    res = run("--config", "x86_64:4level", "--pte", "0x8000000000065067", "--json", "--no-walk")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (view,) = doc["entries"]
    if view["kernel"] is None:
        assert any("not shown" in n for n in doc["notes"])
    else:
        assert set(view["kernel"]) == set(view["linux"]) and view["kernel_differs"] == []
        assert view["kernel"]["pte_present"] == 1 and view["kernel"]["pte_pfn"] == 0x65
    assert doc["rows"] == [] and doc["hierarchy"] == []


@pytest.mark.parametrize("args,message", [
    (["--config", "arm64:64k:48", "--level", "pgd", "0x3"], "pgd is folded in arm64:64k:48"),
    (["--config", "x86_64:4level", "--level", "pte"], "--level LEVEL and VALUE go together"),
    (["--config", "x86_64:4level"], "no entry to explain"),
    (["--config", "x86_64:4level", "--pte", "0xzz"], "explain: argument --pte: not a number"),
    (["--config", "x86_64:4level", "--pte", "0x1" + "0" * 16], "not a 64-bit entry value"),
    (["--config", "x86_64:4level", "--pte", "1", "--addr", "0x0000800000000000"], "not a canonical"),
    (["--config", "x86_64:9level", "--pte", "1"], "unknown configuration '9level'"),
    (["--config", "x86_64:4level", "--pte", "1", "--level", "pte", "2"], "given twice"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    res = run(*args, "--harness", "off")
    assert res.returncode == 2, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("foliowalk: error: ") and message in lines[0], res.stderr
    assert "foliowalk: error: foliowalk" not in lines[0]


def test_s390x_empty_pte() -> None:
    """z/Architecture PoP ch. 3, page-table entry: bit 53 (0x400 in the 64-bit value, counting
    from the MSB) is the page-invalid bit I; Linux v6.12's empty PTE is exactly _PAGE_INVALID.
    DAT gives a page-translation exception (program-interruption code 0x11)."""
    res = run("--config", "s390x:region3", "--pte", "0x400", "--harness", "off", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (view,) = doc["entries"]
    assert view["fields"]["i"] == 1 and view["fields"]["pfra"] == 0
    assert view["architecture"]["verdict"] == "faults" and "0x11" in view["architecture"]["why"]
    assert view["linux"]["pte_none"] == 1 and view["linux"]["pte_present"] == 0
    assert {(r["mmu"]["fault"], r["mmu"]["code"]) for r in doc["rows"]} == {("page-translation", 0x11)}
    assert {(r["walk"]["reason"], r["verdict"]) for r in doc["rows"]} == {("none@pte", "agree")}


def test_a_given_leaf_above_is_kept_as_given() -> None:
    """A 2M PDE (PS = bit 7, SDM table 4-18: 0xe7 = P, R/W, U/S, A, D, PS) above a given PTE is a
    leaf: its bits are never changed to point at the PTE's table, and the walk stops at it."""
    pde = 0x80000000062000E7
    res = run("--config", "x86_64:4level", "--pmd", hex(pde), "--pte", "0x8000000000065067", "--harness", "off",
              "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    placed = {p["level"]: p for p in doc["hierarchy"]}
    assert placed["pmd"]["value"] == pde and "kept as it is" in placed["pmd"]["what"]
    assert {r["walk"]["level"] for r in doc["rows"]} == {"PMD"}
    assert {r["mmu"]["pa"] for r in doc["rows"]} == {0x6200000 + (doc["addr"] & 0x1FFFFF)}


def test_arm64_high_half_goes_through_ttbr1() -> None:
    """An address with bits 63:48 set is translated through TTBR1_EL1 (Arm ARM D8 "Translation
    table base address": the upper VA range); the page descriptor's OA 0x200000 (4K granule:
    bits 47:12) is reached there as in the low half."""
    res = run("--config", "arm64:4k:48", "--pte", hex(0x0060000000200F43), "--addr", "0xffff000000201000",
              "--harness", "off", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {r["mmu"].get("pa") for r in doc["rows"]} == {0x200000}
    assert {r["verdict"] for r in doc["rows"]} == {"agree"}
    assert any("TTBR1_EL1" in n for n in doc["notes"])
