"""Campaigns on a real Dask cluster (``--scheduler``, emu/cluster/): a ``LocalCluster`` of two
worker processes, started once for the module, runs a small conformance campaign and a small fuzz
campaign; each must give the digest of the same campaign run locally (in this process), whatever
the sharding and the order the results came back in.  The bad-input paths (no Dask, nobody at the
address) are one line and exit 2."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emu import cli
from emu.conform import x86_64 as C
from emu.fixtures import check_fixture_set
from emu.fuzz import CampaignOptions, GenParams, Hierarchy, HierarchyGenerator, run_campaign
from tests.ci import unavailable

SMALL = GenParams(max_tables=8, entries_per_table=(3, 8), max_addrs=200)
#: Unicorn's arm64 deviations give a seeded campaign findings on the released code (tests/fuzz).
FINDINGS = "arm64:4k:48"


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    try:
        from distributed import LocalCluster
    except ImportError:
        unavailable("install Dask", "Dask is not installed: pip install 'foliowalk[cluster]'")
    import dask

    # the scheduler gives up on a task at the first death of its worker (default: after 3 more
    # tries), so the crash test kills two workers, not eight
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _conform(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    rc = cli.main(["conform", "--arch", "x86_64", "--sample", "1000", "--seed", "11", "--json", "--quiet", *extra])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    return dict(out)


def test_conform_on_the_cluster_gives_the_local_digest(scheduler: str, capsys: pytest.CaptureFixture[str]) -> None:
    local = _conform(capsys)
    remote = _conform(capsys, "--scheduler", scheduler)
    assert remote["ran_on"].startswith("dask ") and "2 workers" in remote["ran_on"]
    assert remote["run"] == local["run"] == 1000
    assert remote["digest"] == local["digest"]
    assert remote["mismatches"] == local["mismatches"]


def test_a_different_outcome_changes_the_conform_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest is of the outcomes, not of the case list: the same cases with one model answer
    wrong (a fault code with the I/D bit cleared, as a model that forgot NX would give) digest
    differently."""
    cases = C.select(sample=300, seed=11)
    runner = C.Runner()
    try:
        right = runner.run(cases, C.Report())
        expected = C.expected

        def wrong(read: Any, va: int, access: Any, cr3: int, cpu: dict[str, bool]) -> Any:
            res, ad = expected(read, va, access, cr3, cpu)
            if access.kind == "fetch" and hasattr(res, "code"):
                res = type(res)(**{**res.__dict__, "code": res.code & ~0x10})
            return res, ad

        monkeypatch.setattr(C, "expected", wrong)
        broken = runner.run(cases, C.Report())
    finally:
        runner.close()
    assert broken.mismatches and not right.mismatches
    assert broken.digest() != right.digest()


def _fuzz(out: Path | None, scheduler: str | None, max_findings: int) -> Any:
    opts = CampaignOptions(configs=[FINDINGS], seed=7, seconds=None, hierarchies=4, jobs=0, out=out,
                           params=SMALL, progress=False, shrink=False, scheduler=scheduler,
                           max_findings=max_findings)
    return run_campaign(opts)


def test_fuzz_on_the_cluster_gives_the_local_digest_and_ships_findings(scheduler: str, tmp_path: Path) -> None:
    """The local run in this process, without --out (saving fixture sets is what costs); the
    cluster run saves one finding under --out: the workers write it into a folder of their own,
    the campaign receives the files and writes them."""
    local = _fuzz(None, None, 50)
    remote = _fuzz(tmp_path, scheduler, 1)
    assert remote.ran_on is not None and remote.ran_on.startswith("dask ")
    assert remote.indices == local.indices == list(range(4))
    assert remote.digest == local.digest
    assert remote.outcomes_digest == local.outcomes_digest
    assert remote.stats.verdicts == local.stats.verdicts and remote.stats.by_level == local.stats.by_level
    # findings streamed back, deduplicated and capped (--max-findings 1): one of the local ones
    kinds = {(f.config, f.kind, f.verdict) for f in local.findings}
    assert len(kinds) > 1 and len(remote.findings) == 1
    (f,) = remote.findings
    assert (f.config, f.kind, f.verdict) in kinds
    # ... its fixture set, written on a worker, is under --out and replays
    assert f.path and Path(f.path).parent == tmp_path and check_fixture_set(Path(f.path)) == []
    assert (tmp_path / f"{Path(f.path).name}.hierarchy.json").is_file()
    assert len((tmp_path / "findings.jsonl").read_text().splitlines()) == 1
    summary = json.loads((tmp_path / "campaign.json").read_text())
    assert summary["outcomes_digest"] == local.outcomes_digest and summary["scheduler"] == scheduler


def test_unreachable_scheduler_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    import emu.cluster

    monkeypatch.setattr(emu.cluster, "CONNECT_TIMEOUT_S", 1.0)
    for argv in (["conform", "--arch", "x86_64", "--limit", "10"], ["fuzz", "--hierarchies", "1"]):
        rc = cli.main([*argv, "--quiet", "--scheduler", "tcp://127.0.0.1:9"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        assert "--scheduler tcp://127.0.0.1:9: no Dask scheduler answers there" in err
    rc = cli.main(["conform", "--arch", "x86_64", "--limit", "10", "--scheduler", "no-port-here"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no-port-here: not an address Dask can connect to" in err, err


def test_scheduler_with_local_workers_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["conform", "--arch", "x86_64", "--workers", "2"], ["fuzz", "--jobs", "2"]):
        assert cli.main([*argv, "--scheduler", "tcp://127.0.0.1:9"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "with --scheduler the cluster's workers" in err


def test_without_dask_the_error_says_what_to_install(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    rc = cli.main(["conform", "--arch", "x86_64", "--limit", "10", "--quiet", "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "pip install 'foliowalk[cluster]'" in err


def test_ctrl_c_keeps_what_came_back(scheduler: str) -> None:
    """Ctrl-C in the campaign (here: in its progress callback, after the first shard came back)
    cancels the running shards and keeps the merged ones, as a local run does."""
    from emu.cluster.conform import run_conform

    cases = C.select(sample=600, seed=3)  # spread over every group: many shards
    merged: list[int] = []

    def interrupt(report: Any) -> None:
        merged.append(report.run)
        raise KeyboardInterrupt

    report = run_conform(scheduler, C.__name__, cases, C.Report(), interrupt)
    assert report.interrupted and merged and report.run == merged[0]
    assert 0 < report.run < len(cases) and report.agree == report.run and len(report.outcomes) == report.run


def abort_on_3(index: int) -> None:
    """In the worker, before hierarchy ``index`` runs: an emulator abort on hierarchy 3."""
    if index == 3:
        os.abort()


def test_a_hierarchy_that_kills_its_worker_is_a_crash_and_the_campaign_goes_on(scheduler: str,
                                                                               tmp_path: Path) -> None:
    """Hierarchy 3 aborts its worker process (as an emulator abort would); Dask's nanny restarts
    the worker, and the tasks the dead worker held fail.  The campaign runs their hierarchies again
    one task at a time: 3 is recorded as the one crash (its spec saved, the generator's own
    hierarchy 3), every other hierarchy is run (tests/fuzz: the same campaign in local workers)."""
    opts = CampaignOptions(configs=["x86_64:4level"], seed=2, seconds=None, hierarchies=6, jobs=0, out=tmp_path,
                           params=SMALL, before_hierarchy=abort_on_3, progress=False, shrink=False,
                           max_findings=0, scheduler=scheduler)
    res = run_campaign(opts)
    crashes = [f for f in res.findings if f.kind == "crash"]
    assert res.crashes == 1 and len(crashes) == 1 and crashes[0].index == 3
    assert res.indices == [0, 1, 2, 4, 5]
    saved = json.loads(Path(crashes[0].path or "").read_text())
    assert Hierarchy.from_json(saved["hierarchy"]) == HierarchyGenerator("x86_64:4level", params=SMALL).generate(2, 3)
    assert not res.ok


@pytest.mark.parametrize("arch", ["arm64", "s390x"])
def test_every_space_gives_one_digest_in_one_process_local_workers_and_the_cluster(
        arch: str, scheduler: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The cluster path knows no space: arm64's and s390x's run through the same code as the x86-64
    one.  The same 300 cases give the same report and the same outcomes digest in this process,
    in two local worker processes (--workers 2) and on the two Dask workers."""
    def report(*argv: str) -> dict[str, Any]:
        rc = cli.main(["conform", "--arch", arch, *argv, "--sample", "300", "--seed", "2", "--json", "--quiet"])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0, out
        return dict(out)

    here, local, remote = report(), report("--workers", "2"), report("--scheduler", scheduler)
    assert here["ran_on"] is None and local["ran_on"] == "2 local worker processes"
    assert remote["ran_on"].startswith("dask ") and "2 workers" in remote["ran_on"]
    assert here["run"] == local["run"] == remote["run"] == 300
    assert isinstance(here["digest"], str) and len(here["digest"]) == 64
    for key in ("agree", "mismatches", "digest"):
        assert here[key] == local[key] == remote[key], key


def test_a_lost_scheduler_keeps_what_came_back() -> None:
    """The scheduler dies mid-campaign: one line on stderr naming it, exit 1, and the report of the
    cases that came back (not a traceback that drops them)."""
    import re
    import select
    import signal
    import subprocess
    import time

    try:
        import distributed  # noqa: F401
    except ImportError:
        unavailable("install Dask", "Dask is not installed: pip install 'foliowalk[cluster]'")
    root = Path(__file__).resolve().parents[2]
    port = 20000 + os.getpid() % 20000
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                       f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-dashboard"], cwd=root,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        run = subprocess.Popen([sys.executable, "-m", "emu", "conform", "--arch", "x86_64",
                                "--scheduler", f"tcp://127.0.0.1:{port}"], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(run)
        seen, deadline = "", time.monotonic() + 300
        while not re.search(r"conform x86_64: [1-9]\d*/", seen):  # cases came back
            assert time.monotonic() < deadline and run.poll() is None, f"no progress line: {seen!r}"
            if select.select([run.stderr], [], [], 1.0)[0]:
                seen += os.read(run.stderr.fileno(), 4096).decode()  # type: ignore[union-attr]
        procs[0].send_signal(signal.SIGKILL)
        out, err = run.communicate(timeout=120)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert run.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("foliowalk conform: lost the Dask scheduler") and "cases that came back" in last, err
    ran = re.search(r"ran (\d+) of 1585152 cases \(interrupted\)", out)
    assert ran and int(ran[1]) > 0, out
