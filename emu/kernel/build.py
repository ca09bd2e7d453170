"""Build the kernel harness for one (architecture, kernel, Kconfig profile, paging geometry).

Steps, each the kernel's own build system: ``make defconfig``; ``scripts/config`` with the
profile's options (:mod:`archs.kconfig`) and the geometry's (arm64 granule and VA size);
``make olddefconfig modules_prepare``; ``make M=harness foliowalk_harness.o`` (kbuild's own
flags for that .config); ``ld -T harness.lds`` into an ELF image at a fixed base.  Everything
happens in the cache (:func:`~emu.kernel.tree.cache_dir`), keyed by a digest of the tree, the
request, the harness sources and the compiler; the finished build is renamed into place, so a
killed build leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import archs
from archs.base import PagingConfig
from archs.kconfig import PROFILES, KernelConfig, from_dotconfig
from emu.errors import ConfigError, FoliowalkError

from .toolchain import Toolchain, toolchain
from .tree import KernelTree, cache_dir, cache_lock, find_tree, tree_release

HARNESS_FILES = ("foliowalk_harness.c", "Kbuild", "harness.lds")


class HarnessBuildError(FoliowalkError):
    """The kernel's build system failed on the harness (the message quotes its last lines)."""


def not_yet(config: PagingConfig) -> str | None:
    """Why the compiled-kernel oracle has no harness for ``config`` yet, or None.  arm64's 52-bit
    configurations (archs.arm64 make_config, CONFIG_ARM64_VA_BITS_52 + PA_BITS_52): the harness
    runner (emu/kernel/runner.py) executes the compiled kernel code under Unicorn with the
    configuration's own TCR_EL1, from which such a kernel decides what it is at run time
    (lpa2_is_enabled() reads TCR_EL1.DS, vabits_actual T1SZ), and Unicorn's Cortex-A72 has
    neither FEAT_LPA2 nor FEAT_LVA (docs/kernel.md)."""
    if config.arch == "arm64" and "oa" in config.extra:
        return (f"no compiled-kernel harness for {config.key} yet: the harness runs the kernel code under "
                "Unicorn, which has no FEAT_LPA2/FEAT_LVA for a CONFIG_ARM64_VA_BITS_52 kernel (docs/kernel.md)")
    return None


def geometry_options(config: PagingConfig) -> dict[str, bool]:
    """The Kconfig options that give the kernel ``config``'s page-table geometry.

    x86-64: one build serves 4- and 5-level paging (X86_5LEVEL=y; ``pgtable_l5_enabled()`` is
    decided at run time).  s390x: one build serves every ASCE type (the folding is dynamic).
    arm64: the granule and VA size are compile-time (arch/arm64/Kconfig ARM64_*K_PAGES and the
    ARM64_VA_BITS_* choice; 36 and 47 bits are EXPERT options) and so is the physical address
    size (ARM64_PA_BITS_48, as archs/arm64.py models it)."""
    if config.arch == "x86_64":
        return {"X86_5LEVEL": True}
    if config.arch == "arm64":
        granule = {12: "4K", 14: "16K", 16: "64K"}[config.page_shift]
        opts = {f"ARM64_{g}_PAGES": g == granule for g in ("4K", "16K", "64K")}
        opts.update({f"ARM64_VA_BITS_{b}": b == config.va_bits for b in (36, 39, 42, 47, 48, 52)})
        opts["EXPERT"] = True
        # archs/arm64.py models a 48-bit output address (TCR_EL1.IPS 48): with 64K pages Kconfig
        # would default to ARM64_PA_BITS_52 (PTE_ADDR_HIGH in bits 15:12), so ask for 48
        opts["ARM64_PA_BITS_48"] = True
        opts["ARM64_PA_BITS_52"] = False
        return opts
    return {}


def geometry_key(config: PagingConfig) -> str:
    """Configurations that share one build share this key."""
    if config.arch == "arm64":
        return f"{1 << config.page_shift >> 10}k-{config.va_bits}"
    return "any"


@dataclass(frozen=True)
class HarnessBuild:
    """A finished harness build: the image and what it was built from."""

    path: Path  # the build folder
    arch: str
    tree: KernelTree
    kconfig: KernelConfig  # as the built .config resolved it
    meta: dict[str, object]

    @property
    def image(self) -> Path:
        return self.path / "harness.elf"


def _harness_source(name: str) -> bytes:
    return (resources.files("emu.kernel") / "harness" / name).read_bytes()


def _run(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-12:]
        raise HarnessBuildError(
            f"kernel build step failed (exit {proc.returncode}): {' '.join(cmd[:6])} ...\n  "
            + "\n  ".join(tail)
            + f"\nfull log: {log}"
        )


def _compiler_id(tc: Toolchain) -> str:
    out = subprocess.run([tc.gcc, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else tc.gcc


def build_key(tree: KernelTree, tc: Toolchain, config: PagingConfig, profile: str) -> str:
    h = hashlib.sha256()
    for part in (str(tree.path), tree.release, tree.origin, tc.arch, geometry_key(config), profile,
                 json.dumps(sorted({**PROFILES[profile], **geometry_options(config)}.items())), _compiler_id(tc)):
        h.update(part.encode() + b"\0")
    for name in HARNESS_FILES:
        h.update(_harness_source(name))
    if tree.origin.startswith("tree:"):
        # a user's tree changes under us: key on the files the harness compiles from
        for sub in ("include/linux/pgtable.h", "include/linux/swapops.h", "include/linux/swap.h",
                    f"arch/{tc.kbuild_arch}/include/asm/pgtable.h"):
            p = tree.path / sub
            if p.exists():
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_harness(config_key: str, profile: str = "distro", version: str = "6.12", tree: str | None = None,
                  *, log=None) -> HarnessBuild:  # type: ignore[no-untyped-def]
    """Build (or find in the cache) the harness for paging configuration ``config_key``."""
    config = archs.get_config(config_key)
    why = not_yet(config)
    if why:
        raise ConfigError(why)
    tc = toolchain(config.arch)
    build = _locate(config, tc, find_tree(version, tree), profile)
    with cache_lock(f"build-{build.name}"):
        if not (build / "build.json").exists():
            _build(find_tree(version, tree), tc, config, profile, build, log)
    return _load(build, config, find_tree(version, tree), profile)


def cached_build(config_key: str, profile: str = "distro", version: str = "6.12",
                 tree: str | None = None) -> HarnessBuild | None:
    """The finished build for these arguments if the cache has one, else None (never builds:
    what ``verify`` and the fuzzer use when no harness was asked for explicitly)."""
    config = archs.get_config(config_key)
    if not_yet(config):
        return None
    try:
        tc = toolchain(config.arch)
        ktree = find_tree(version, tree) if tree else _unpacked_distro_tree(version)
    except FoliowalkError:
        return None
    if ktree is None:
        return None
    path = _locate(config, tc, ktree, profile)
    return _load(path, config, ktree, profile) if (path / "build.json").exists() else None


def _locate(config: PagingConfig, tc: Toolchain, ktree: KernelTree, profile: str) -> Path:
    if profile not in PROFILES:
        raise FoliowalkError(f"unknown kernel configuration {profile!r}; known: {', '.join(PROFILES)}")
    key = build_key(ktree, tc, config, profile)
    return cache_dir() / "build" / f"{config.arch}-{ktree.release}-{profile}-{geometry_key(config)}-{key}"


def _load(path: Path, config: PagingConfig, ktree: KernelTree, profile: str) -> HarnessBuild:
    meta = json.loads((path / "build.json").read_text())
    kconfig = from_dotconfig(config.arch, ktree.series, profile, (path / "config").read_text())
    return HarnessBuild(path, config.arch, ktree, kconfig, meta)


def _unpacked_distro_tree(version: str) -> KernelTree | None:
    dest = cache_dir() / "src" / f"linux-source-{version}"
    return KernelTree(dest, tree_release(dest), f"linux-source-{version}") if (dest / "Makefile").exists() else None


def _build(tree: KernelTree, tc: Toolchain, config: PagingConfig, profile: str, dest: Path, log) -> None:  # type: ignore[no-untyped-def]
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "harness").mkdir(parents=True)
    logf = work / "build.log"
    kb = work / "kbuild"
    make = ["make", "-s", "-C", str(tree.path), f"O={kb}", f"ARCH={tc.kbuild_arch}",
            f"CROSS_COMPILE={tc.cross_compile}", f"-j{os.cpu_count() or 1}"]
    t0 = time.monotonic()
    if log:
        log(f"configuring {tree.origin} ({tree.release}) for {config.arch} {geometry_key(config)}, profile {profile}")
    _run([*make, "defconfig"], logf)
    request = {**PROFILES[profile], **geometry_options(config)}
    args = []
    for opt, on in sorted(request.items()):
        args += ["--enable" if on else "--disable", opt]
    if args:
        _run([str(tree.path / "scripts" / "config"), "--file", str(kb / ".config"), *args], logf)
    _run([*make, "olddefconfig"], logf)
    t1 = time.monotonic()
    if log:
        log("modules_prepare")
    _run([*make, "modules_prepare"], logf)
    t2 = time.monotonic()
    for fname in HARNESS_FILES:
        (work / "harness" / fname).write_bytes(_harness_source(fname))
    _run([*make, f"M={work / 'harness'}", "foliowalk_harness.o"], logf)
    _run([tc.ld, "-static", "-nostdlib", "--no-dynamic-linker", "--no-warn-rwx-segments",
          "-defsym", f"FW_BASE={tc.link_base:#x}", "-T", str(work / "harness" / "harness.lds"),
          "-o", str(work / "harness.elf"), str(work / "harness" / "foliowalk_harness.o")], logf)
    t3 = time.monotonic()
    shutil.copyfile(kb / ".config", work / "config")
    meta = {
        "arch": config.arch, "geometry": geometry_key(config), "profile": profile, "requested": request,
        "tree": str(tree.path), "origin": tree.origin, "release": tree.release, "compiler": _compiler_id(tc),
        "seconds": {"configure": round(t1 - t0, 1), "modules_prepare": round(t2 - t1, 1),
                    "harness": round(t3 - t2, 1)},
    }
    (work / "build.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
