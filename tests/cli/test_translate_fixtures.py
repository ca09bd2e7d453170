"""``foliowalk translate`` on the tables of the committed fixture sets (the default scenarios that
``foliowalk verify`` checks) gives the MMU answers verify recorded, and the manual's walk agrees
with them (or differs by a named deviation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def table_entries(folder: Path, manifest: dict[str, Any]) -> dict[int, int]:
    """The non-zero words of the set's page-table pages, from memory.bin (extents and fills)."""
    data = (folder / "memory.bin").read_bytes()
    order = "big" if manifest["endianness"] == "big" else "little"
    words: dict[int, int] = {}
    for fill in manifest["image"]["fills"]:
        for pa in range(fill["pa"], fill["pa"] + fill["size"], 8):
            words[pa] = fill["word"]
    for ext in manifest["image"]["extents"]:
        for off in range(0, ext["size"], 8):
            words[ext["pa"] + off] = int.from_bytes(data[ext["offset"] + off:ext["offset"] + off + 8], order)
    tables = [(t["pa"], t["pa"] + t["size"]) for t in manifest["tables"]]
    return {pa: v for pa, v in words.items() if v and any(s <= pa < e for s, e in tables)}


@pytest.mark.parametrize("name", ["x86_64-4level", "arm64-4k-48", "s390x-region3"])
def test_translate_gives_verify_answers(tmp_path: Path, name: str) -> None:
    folder = ROOT / "fixtures" / name
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = tmp_path / "entries.txt"
    entries.write_text("".join(f"{pa:#x}:{v:#x}\n" for pa, v in sorted(table_entries(folder, manifest).items())))
    arch, root = manifest["arch"], manifest["root_table"]
    roots = {"x86_64": ["--cr3", hex(root)], "arm64": ["--ttbr0", hex(root)],
             "s390x": ["--asce", hex(manifest["registers"].get("CR7", 0)),
                       "--cpu", f"storage_size={manifest['ram_size']}"]}[arch]
    checks = [c for c in manifest["checks"] if c["access"] == "kernel-read"]
    got = subprocess.run([sys.executable, "-m", "emu", "translate", "--config", manifest["config"], *roots,
                          "--entries", str(entries), "--json", *[hex(c["addr"]) for c in checks]],
                         capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert got.returncode == 0, got.stderr
    rows = json.loads(got.stdout)["rows"]
    assert len(rows) == len(checks)
    assert manifest["format_version"] == 2
    for check, row in zip(checks, rows, strict=True):
        recorded, mmu = check["emulator"], row["mmu"]  # format 2: the emulator's view (Unicorn's answer)
        if "pa" in recorded:
            assert mmu["result"] == "translation" and int(mmu["pa"], 16) == recorded["pa"], (check["addr"], row)
        else:
            assert mmu["result"] == "fault" and int(mmu["code"], 16) == recorded["code"], (check["addr"], row)
        assert row["verdict"] == "agree" or row["verdict"].startswith("emulator-deviation: "), row
