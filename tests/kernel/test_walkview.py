"""The kernel view in verify/fixtures/fuzz rows: the compiled folio_walk_start() beside the model
and the MMU, compared by the judge's ``model-vs-kernel-walk`` rule (issue 13)."""

from __future__ import annotations

import json

import pytest

import archs
from emu.kernel.walk import WalkBuildError
from emu.mm.scenarios import build_default
from emu.verify import verify_configs, verify_scenario


@pytest.mark.parametrize("config", ["x86_64:4level", "x86_64:5level"])
def test_every_default_row_has_the_kernels_answer_and_it_agrees(walk_build, config: str) -> None:  # type: ignore[no-untyped-def]
    walk_build(config)
    rep = verify_configs([config], harness="on")
    assert rep.rows and all(r.kernel is not None for r in rep.rows)
    assert not [r.verdict for r in rep.rows if "model-vs-kernel" in r.verdict]
    assert any(f"{config}: kernel walk: folio_walk_start() of linux 6.12" in k
               and f"{len(rep.rows)} rows walked, 0 differ" in k for k in rep.kernel)
    # the kernel's answers themselves: a found row holds the PTL and releases it; the bad p4d the
    # default scenario has are cleared by the kernel's pXd_clear_bad() -- to 0 on x86-64
    # (arch/x86/include/asm/pgtable_64.h native_p4d_clear()/native_pgd_clear(): set to 0)
    found = [r for r in rep.rows if r.kernel.found]
    assert found and all(r.kernel.result.ptl_held and r.kernel.result.ptl_released for r in found)
    bad = [r for r in rep.rows if r.walk.cleared]
    assert bad
    for r in bad:
        assert list(r.kernel.cleared) == [(pa, 0) for _lv, pa, _v in r.walk.cleared], r.case


def test_a_model_of_another_kernel_is_a_named_disagreement(walk_build) -> None:  # type: ignore[no-untyped-def]
    """The seed's model (``--kernel aa39ca6940f1``) judged by the compiled 6.12 walk: 6.12's "fix
    usage of pmd_leaf()/pud_leaf() without present check" takes a non-present PMD into the leaf
    branch, so with FW_MIGRATION the kernel returns the PMD migration entry's folio
    (mm/pagewalk.c, v6.12) where the seed's walk never looks at it.  Exactly those rows differ."""
    ops = archs.get_ops("x86_64:4level", "aa39ca6940f1")
    sc = build_default(ops)
    try:
        rows = verify_scenario(sc, walk_build=walk_build("x86_64:4level"))
    finally:
        sc.close()
    differ = [r for r in rows if "model-vs-kernel folio_walk_start" in r.verdict]
    assert differ
    for r in differ:
        assert "migration" in r.case and "PMD" in r.case and r.walk.flags & 1, (r.case, r.verdict)
        assert r.kernel.found and r.kernel.result.level == 1 and r.kernel.result.page_pfn is None
        assert r.verdict.startswith("disagree: model-vs-kernel folio_walk_start: kernel folio ")
        assert ", model NULL (" in r.verdict
    pmd_mig = [r for r in rows if "migration" in r.case and "PMD" in r.case and r.walk.flags & 1]
    assert len(differ) == len(pmd_mig)


def test_json_and_table_show_the_kernel(walk_build, capsys) -> None:  # type: ignore[no-untyped-def]
    from emu.cli import main

    walk_build("x86_64:4level")
    assert main(["verify", "--config", "x86_64:4level", "--harness", "on", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all("kernel" in r for r in data["rows"])
    r0 = data["rows"][0]["kernel"]
    assert set(r0) >= {"folio_pfn", "page_pfn", "level", "entry_pa", "entry", "ptl_held", "ptl_released", "oops"}
    assert main(["verify", "--config", "x86_64:4level", "--harness", "on"]) == 0
    out = capsys.readouterr().out
    assert " kernel " in out.splitlines()[2] and "= folio 0x" in out


def test_an_unsupported_arch_is_said_not_hidden(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """build_walk() raises WalkBuildError for an architecture the walk does not run on yet:
    verify says so on its kernel line and carries on (no traceback, exit 0)."""
    import emu.kernel.build
    import emu.kernel.walk
    from emu.cli import main

    def refuse(key, *a, **k):  # type: ignore[no-untyped-def]
        raise WalkBuildError(f"no runner for {key} yet")

    monkeypatch.setattr(emu.kernel.walk, "build_walk", refuse)
    monkeypatch.setattr(emu.kernel.build, "cached_build", lambda *a, **k: object())
    monkeypatch.setattr("emu.verify.kernel_view", lambda key, p, h: (archs.get_ops(key).kconfig, None, f"{key}: x"))
    assert main(["verify", "--config", "arm64:4k:48", "--harness", "auto"]) == 0
    out = capsys.readouterr().out
    assert "kernel: arm64:4k:48: kernel walk not available on arm64: no runner for arm64:4k:48 yet" in out


def test_a_fixture_set_records_the_kernels_answer(walk_build, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from emu.fixtures import build_fixture_sets, check_fixture_set

    walk_build("x86_64:4level")
    path, _kernel_half = build_fixture_sets(tmp_path, ["x86_64:4level"], harness="on")
    m = json.loads((path / "manifest.json").read_text())
    walks = [w for c in m["checks"] for w in c["walks"]]
    assert walks and all("kernel" in w for w in walks)
    for w in walks:
        k, mw = w["kernel"], w["linux"]
        assert k["found"] == mw["found"]
        if k["found"]:
            assert (k["folio_pfn"], k["page_pfn"], k["level"], k["entry_pa"], k["entry"]) == (
                mw["folio_pfn"], mw["page_pfn"], mw["level"], mw["entry_pa"], mw["entry"])
            assert k["ptl_held"] and k["ptl_released"]
    assert check_fixture_set(path) == []


def test_user_addresses_get_the_kernels_answer_too(walk_build, capsys) -> None:  # type: ignore[no-untyped-def]
    from emu.cli import main

    walk_build("x86_64:4level")
    assert main(["verify", "--config", "x86_64:4level", "--addr", "0x8000015238", "--harness", "on", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["rows"]) == 4
    for r in data["rows"]:  # page 5 of the default scenario's order-4 folio (README)
        assert r["kernel"]["found"] and r["kernel"]["page_pfn"] == r["walk"]["page_pfn"] == r["kernel"]["folio_pfn"] + 5


def test_a_model_that_does_not_clear_a_bad_entry_is_caught(walk_build) -> None:  # type: ignore[no-untyped-def]
    """The kernel's p4d_none_or_clear_bad() clears the default scenario's bad p4d entry (to 0 on
    x86-64).  A model that says it does not is a difference, found on the very call that wrote,
    and the tables are as built afterwards."""
    from emu.kernel.walkview import KernelWalkView, walk_differs
    from emu.verify import walk_cases

    sc = build_default(archs.get_ops("x86_64:4level"), with_oracle=False)
    try:
        model = walk_cases(sc, sc.cases, (0,))
        bad = [k for k, w in model.items() if w.cleared]
        assert bad
        before = sc.ram.snapshot(sc.builder.tables)
        for k in bad:
            model[k].cleared = []  # the broken model
        view = KernelWalkView(walk_build("x86_64:4level"), sc.mm)
        try:
            got = view.walk_cases(sc.cases, (0,), model, sc.builder.tables)
        finally:
            view.close()
        assert sc.ram.snapshot(sc.builder.tables) == before
        for k, w in model.items():
            diff = walk_differs(w, got[k], sc.ops.pxd_clear)
            if k in bad:
                assert got[k].cleared and all(v == 0 for _pa, v in got[k].cleared)
                assert diff is not None and "cleared" in diff
            else:
                assert diff is None and not got[k].cleared
    finally:
        sc.close()


def test_a_renewed_guest_answers_as_the_first(walk_build, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The view takes a fresh guest after RENEW_STARTS emu_start() calls (Unicorn keeps memory per
    call until the Uc is closed); with a renewal before every batch the answers are the model's."""
    import emu.kernel.walkview as wv
    from emu.kernel import uc_renewal
    from emu.verify import walk_cases

    monkeypatch.setattr(uc_renewal, "RENEW_STARTS", 1)
    sc = build_default(archs.get_ops("x86_64:4level"), with_oracle=False)
    view = wv.KernelWalkView(walk_build("x86_64:4level"), sc.mm)
    try:
        first = view.kw
        for _ in range(2):
            model = walk_cases(sc, sc.cases, (0, 3))
            got = view.walk_cases(sc.cases, (0, 3), model, sc.builder.tables)
            assert all(wv.walk_differs(w, got[k], sc.ops.pxd_clear) is None for k, w in model.items())
        assert view.kw is not first
    finally:
        view.close()
        sc.close()


def test_a_table_pointer_into_the_probe_machines_buffer_reads_the_same_for_model_and_kernel(  # type: ignore[no-untyped-def]
        walk_build) -> None:
    """Fuzz s390x:region3, seed 0: hierarchies 74, 160 and 220 point a region-third entry into the
    probe machine's batch buffer (160: the PMD at 0x8268).  The model walks before the MMU probe
    and the compiled kernel after it; they agree only if a probe leaves the machine's frames as
    it found them (Oracle._untouched)."""
    from emu.fuzz.evaluate import Target
    from emu.fuzz.hierarchy_gen import HierarchyGenerator

    key = "s390x:region3"
    gen = HierarchyGenerator(key)
    with Target(key, walk_build=walk_build(key)) as target:
        for index in (74, 160, 220, 160):  # 160 again: after other hierarchies' probes
            ev = target.evaluate(gen.generate(0, index))
            bad = [(hex(a), v) for a, row in zip(ev.addrs, ev.verdicts, strict=True) for v in row
                   if v.startswith("disagree")]
            assert not bad, (index, bad[:3])


def test_a_walk_into_the_s390x_lowcore_is_not_the_kernels_to_check(walk_build) -> None:  # type: ignore[no-untyped-def]
    """Fuzz s390x:region3, seed 0, hierarchy 2546: a region-third origin 0xfffffffffffff000 wraps
    the segment index into real 0x3a8.  The model reads that word of RAM (0: a PTE table at 0x680,
    a swap PTE); a running kernel reads its own lowcore there by prefixing and oopses on what it
    finds.  The row is oracle-cannot-check, naming both answers -- not a model-vs-kernel
    disagreement, and not hidden."""
    from emu.fuzz.evaluate import Target
    from emu.fuzz.hierarchy_gen import HierarchyGenerator

    key, addr = "s390x:region3", 0x385275D0840
    with Target(key, walk_build=walk_build(key)) as target:
        ev = target.evaluate(HierarchyGenerator(key).generate(0, 2546))
        row = ev.verdicts[ev.addrs.index(addr)]
        assert all(v.startswith("oracle-cannot-check: kernel: the entry at real 0x3a8 is in the lowcore") for v in row)
        assert all("model-vs-kernel folio_walk_start: kernel oops" in v for v in row)
        assert not [v for r in ev.verdicts for v in r if v.startswith("disagree")]
