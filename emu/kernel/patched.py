"""A kernel tree with a patch applied: a copy of a tree (hard links, so ~seconds), each file the
patch touches copied for real and patched with GNU ``patch -p1``; the original is never changed.

* ``--kernel-version seed``: Debian's 6.12 tree with ``patches/seed-folio_walk_start.patch``
  (ours, GPL-2.0 as kernel diff): ``folio_walk_start()`` as the seed patch wrote it, the two
  later 6.12 fixes reverted -- the kernel of foliowalk's ``--kernel aa39ca6940f1`` model;
* ``--patch FILE``: the user's patch, on the distribution's tree or on ``--tree PATH``.

Patched trees live in ``$FOLIOWALK_CACHE/src/<tree>+<patch>-<digest>`` and are used as a
user's tree would be (``tree:`` origin: builds go elsewhere, keyed on the path).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from emu.errors import ConfigError

from .tree import KernelTree, cache_dir, cache_lock, find_tree, tree_release

#: the versions ``foliowalk kernel verify --kernel-version`` knows: the distribution's trees, and
#: the seed (6.12 with SEED_PATCH)
SEED = "seed"
SEED_PATCH = "seed-folio_walk_start.patch"
#: foliowalk's model version for each tree version it reproduces (archs.linux.KERNELS)
MODEL_KERNEL = {"6.12": "v6.12", SEED: "aa39ca6940f1"}


def bundled_patch(name: str) -> Path:
    """A patch shipped with foliowalk (emu/kernel/patches/)."""
    p = resources.files("emu.kernel") / "patches" / name
    return Path(str(p))


def _touched(text: str) -> list[str]:
    """The files a unified diff changes (its ``+++ b/...`` and ``--- a/...`` names, -p1)."""
    names = re.findall(r"^(?:\+\+\+|---) (?:[ab]/)?(\S+)", text, re.M)
    return sorted({n for n in names if n != "/dev/null"})


def patched_tree(base: KernelTree, patch: Path) -> KernelTree:
    """``base`` with ``patch`` applied, in the cache (made once per tree and patch content)."""
    try:
        text = patch.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"--patch {patch}: cannot read it ({e.strerror or e})") from None
    files = _touched(text)
    if not files:
        raise ConfigError(f"--patch {patch}: not a unified diff (no ---/+++ file names)")
    digest = hashlib.sha256(text.encode() + b"\0" + str(base.path).encode() + base.release.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", patch.stem)[:40]
    dest = cache_dir() / "src" / f"{base.path.name}+{stem}-{digest}"
    with cache_lock(f"patch-{dest.name}"):
        if not (dest / ".foliowalk-patch").exists():
            tmp = dest.with_name(dest.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            cp = subprocess.run(["cp", "-al", str(base.path), str(tmp)], capture_output=True, text=True)
            if cp.returncode:
                raise ConfigError(f"cannot copy {base.path}: {cp.stderr.strip().splitlines()[-1:]}")
            for name in files:  # a file the patch changes must not be a link into the original
                f = tmp / name
                if f.is_file():
                    data = f.read_bytes()
                    f.unlink()
                    f.write_bytes(data)
            run = subprocess.run(["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch",
                                  "-d", str(tmp), "-i", str(patch.resolve())], capture_output=True, text=True)
            if run.returncode:
                shutil.rmtree(tmp, ignore_errors=True)
                last = (run.stdout + run.stderr).strip().splitlines()[-3:]
                raise ConfigError(f"--patch {patch} does not apply to {base.path} ({base.release}): "
                                  + " / ".join(last))
            (tmp / ".foliowalk-patch").write_text(f"{base.origin}\n{patch.resolve()}\n{text}")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    return KernelTree(dest, tree_release(dest), f"tree:{dest}")


def resolve_tree(version: str, tree: str | None = None, patch: str | None = None) -> tuple[str, str | None]:
    """``(version, tree path or None)`` for the build functions: ``seed`` is 6.12 with the seed
    patch; ``patch`` (a file) is applied to ``tree`` or to the distribution's tree of ``version``."""
    patch_path: Path | None
    if version == SEED:
        if patch:
            raise ConfigError("--kernel-version seed is 6.12 with foliowalk's seed patch; give --patch with 6.12")
        version, patch_path = "6.12", bundled_patch(SEED_PATCH)
    else:
        patch_path = Path(patch) if patch else None
    if patch_path is None:
        return version, tree
    base = find_tree(version, tree)
    return version, str(patched_tree(base, patch_path).path)


__all__ = ["MODEL_KERNEL", "SEED", "SEED_PATCH", "bundled_patch", "patched_tree", "resolve_tree"]
