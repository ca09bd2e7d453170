"""QEMU system emulation as an MMU oracle beside Unicorn (docs/oracles.md).

One ``qemu-system-<arch>`` process per configuration runs a bare-metal probe program; guest RAM is
the scenario's own :class:`~emu.machines.ram.PhysicalMemory`, shared with the process
(:mod:`emu.machines.qemu.shared_ram`), and requests and results go through a mailbox and batch
tables in that RAM.  QMP (:mod:`emu.machines.qemu.qmp`) wakes the guest (an NMI), asks QEMU's
debug translation where a load returned no tag word, and quits the process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from emu.errors import ConfigError

#: What installs the emulators the QEMU machines use on Debian 12 (QEMU 7.2).
INSTALL_HINT = "apt-get install -y --no-install-recommends qemu-system-x86 qemu-system-arm qemu-system-misc"
BINARIES = {"x86_64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64", "s390x": "qemu-system-s390x"}


def qemu_binary(arch: str) -> str:
    """The path of ``qemu-system-<arch>``; :class:`ConfigError` (one line: what to install) if
    it is not installed."""
    name = BINARIES.get(arch)
    if name is None:
        raise ConfigError(f"no QEMU oracle for architecture {arch!r}")
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"the qemu oracle needs {name} ({INSTALL_HINT})")
    return path


def missing(arch: str = "x86_64") -> str | None:
    """Why the QEMU oracle for ``arch`` cannot run here (what to install), or None."""
    try:
        qemu_binary(arch)
    except ConfigError as err:
        return str(err)
    prefix, package = {"arm64": ("aarch64-linux-gnu-", "binutils-aarch64-linux-gnu"),
                       "s390x": ("s390x-linux-gnu-", "binutils-s390x-linux-gnu")}.get(arch, ("", "binutils"))
    tools = [prefix + t for t in ("as", "ld", "objcopy") if shutil.which(prefix + t) is None]
    if tools:
        return f"the qemu oracle assembles its probe firmware with {', '.join(tools)} (apt-get install -y {package})"
    return None


def die_with_parent() -> None:
    """``preexec_fn`` of a QEMU process: SIGKILL it when the thread that started it dies
    (``prctl(PR_SET_PDEATHSIG)``), so a fuzz worker killed by the campaign's crash isolation
    leaves no QEMU behind.  (Machines are created by the thread that uses them.)  No core file
    either: the s390x placement check makes QEMU abort() on purpose (RLIMIT_CORE = 0)."""
    import ctypes
    import resource
    import signal

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def raw_firmware(arch: str, source: Path, as_flags: tuple[str, ...] = ()) -> bytes:
    """``source`` assembled with the architecture's cross binutils (``<prefix>as``, then ``ld
    -Ttext=0`` and ``objcopy -O binary``: a flat image whose code addresses are offsets), cached
    by the source's hash under ``$FOLIOWALK_CACHE/qemu`` (or a temporary directory); the arm64
    and s390x probe firmware.  :class:`ConfigError` (what to install) if a tool is missing,
    :class:`EmulatorError` with the assembler's message if it fails."""
    import hashlib
    import os
    import subprocess
    import tempfile

    from emu.errors import EmulatorError

    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("FOLIOWALK_CACHE") or Path(tempfile.gettempdir()) / "foliowalk") / "qemu"
    out = cache / f"{arch}-{digest}.bin"
    if not out.exists():
        problem = missing(arch)
        if problem:
            raise ConfigError(problem)
        prefix = {"arm64": "aarch64-linux-gnu-", "s390x": "s390x-linux-gnu-"}[arch]
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            try:
                for cmd in ([prefix + "as", *as_flags, "-o", str(t / "p.o"), str(source)],
                            [prefix + "ld", "-Ttext=0", "-o", str(t / "p.elf"), str(t / "p.o")],
                            [prefix + "objcopy", "-O", "binary", str(t / "p.elf"), str(t / "p.bin")]):
                    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
            except subprocess.CalledProcessError as err:
                raise EmulatorError(f"assembling {source.name} failed: {err.stderr.strip()}") from None
            tmp_out = cache / f".{out.name}.{os.getpid()}"  # workers may assemble at once
            shutil.copyfile(t / "p.bin", tmp_out)
            os.replace(tmp_out, out)
    return out.read_bytes()
