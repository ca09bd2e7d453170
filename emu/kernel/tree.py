"""Kernel source trees: a user's (``--tree PATH``) or the distribution's, unpacked into a cache.

Debian ships the sources as ``/usr/src/linux-source-<series>.tar.xz`` (packages
``linux-source-6.12`` and ``linux-source-6.1``).  The harness needs headers, Kconfig files,
``scripts/`` and ``tools/objtool`` -- not drivers, filesystems, networking or sound, which are
most of the archive -- so those are unpacked only for their ``Kconfig`` files (the arch Kconfig
sources them).  That takes ~30 s once; the result is reused.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from archs.kconfig import VERSIONS
from emu.errors import ConfigError

from .toolchain import INSTALL_HINT, ToolchainMissing

DISTRO_TARBALL = "/usr/src/linux-source-{series}.tar.xz"
# Top-level folders the harness never compiles from: unpacked for their Kconfig files only.
_KCONFIG_ONLY = ("drivers", "sound", "fs", "net", "Documentation")


def cache_dir() -> Path:
    """Where unpacked trees and harness builds live: ``$FOLIOWALK_CACHE``, else
    ``$XDG_CACHE_HOME/foliowalk`` (``~/.cache/foliowalk``)."""
    env = os.environ.get("FOLIOWALK_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "foliowalk"


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise unpacking and building between processes (fuzz workers, parallel tests)."""
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class KernelTree:
    """A kernel source tree and the version its Makefile says (``make kernelversion``)."""

    path: Path
    release: str  # e.g. "6.12.118"
    origin: str  # "linux-source-6.12" or "tree:/path"

    @property
    def series(self) -> str:
        """``6.12`` of ``6.12.118`` -- the key foliowalk's model uses."""
        return ".".join(self.release.split(".")[:2])


def tree_release(path: Path) -> str:
    """The version of the tree at ``path`` (VERSION.PATCHLEVEL.SUBLEVEL of its Makefile)."""
    mk = path / "Makefile"
    try:
        text = mk.read_text(errors="replace")[:4096]
    except OSError as e:
        raise ConfigError(f"{path} is not a kernel tree: cannot read {mk} ({e.strerror})") from None
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d+)", text, re.M))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise ConfigError(f"{path} is not a kernel tree: its Makefile has no VERSION/PATCHLEVEL")
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields.get('SUBLEVEL', '0')}"


def user_tree(path: str | os.PathLike[str]) -> KernelTree:
    """A tree the user gives (``--tree``): used in place, never modified (builds go elsewhere)."""
    p = Path(path).resolve()
    for need in ("Makefile", "Kconfig", "include/linux/pgtable.h", "mm/pagewalk.c"):
        if not (p / need).exists():
            raise ConfigError(f"{p} is not a kernel tree: {need} is missing")
    return KernelTree(p, tree_release(p), f"tree:{p}")


def _unpack(tarball: Path, dest: Path) -> None:
    """Unpack ``tarball`` into ``dest`` (atomically: a temporary folder renamed at the end)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball, "r:xz") as tf:
        top = None
        for member in tf:
            parts = member.name.split("/")
            top = top or parts[0]
            if len(parts) > 2 and parts[1] in _KCONFIG_ONLY and not parts[-1].startswith("Kconfig"):
                continue
            if not (member.isfile() or member.isdir() or member.issym()):
                continue
            member.name = "/".join(parts[1:]) or "."
            tf.extract(member, tmp, filter="tar")
    tmp.rename(dest)


def distro_tree(series: str) -> KernelTree:
    """Debian's ``linux-source-<series>``, unpacked once into :func:`cache_dir`."""
    if series not in VERSIONS:
        raise ConfigError(f"unknown kernel version {series!r}; known: {', '.join(VERSIONS)}")
    tarball = Path(DISTRO_TARBALL.format(series=series))
    dest = cache_dir() / "src" / f"linux-source-{series}"
    with cache_lock("unpack"):
        if not (dest / "Makefile").exists():
            if not tarball.exists():
                raise ToolchainMissing(
                    f"kernel {series} sources not found ({tarball}); install them with: {INSTALL_HINT}"
                )
            shutil.rmtree(dest, ignore_errors=True)
            _unpack(tarball, dest)
    return KernelTree(dest, tree_release(dest), f"linux-source-{series}")


def find_tree(version: str, tree: str | None = None) -> KernelTree:
    """The tree for kernel ``version``: the user's ``tree`` if given, else the distribution's."""
    if tree:
        return user_tree(tree)
    return distro_tree(version)


def make_version(path: Path) -> str:
    """``make -s kernelversion`` (with EXTRAVERSION), for the record."""
    out = subprocess.run(["make", "-s", "-C", str(path), "kernelversion"], capture_output=True, text=True)
    return out.stdout.strip() or tree_release(path)
