"""One QEMU process per machine: started with its output captured and dying with its parent,
reached over QMP, and stopped and reaped -- its socket folder removed -- on ``close()`` or when
the machine is garbage-collected (nothing is left behind: tests/machines/test_machine_qemu_*)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable

from emu.errors import EmulatorError
from emu.machines.qemu import die_with_parent
from emu.machines.qemu.qmp import QMP


def kill_qemu(proc: subprocess.Popen[bytes], qmp: list[QMP], tmpdir: str) -> None:
    """Stop QEMU (QMP quit, then SIGKILL after 5 s), reap it, remove its socket directory."""
    if proc.poll() is None:
        if qmp:
            try:
                qmp[0].execute("quit")
            except EmulatorError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for q in qmp:
        q.close()
    qmp.clear()
    shutil.rmtree(tmpdir, ignore_errors=True)


class QemuProcess:
    """``command`` started for ``owner`` (the machine), its QMP socket ``qmp.sock`` in ``tmpdir``.
    ``finalizer()`` stops it (also run when ``owner`` is collected); ``qmp`` holds the connection
    once :meth:`connect` has made it.  A failure to start is an :class:`EmulatorError`."""

    def __init__(self, owner: object, command: list[str], binary: str, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.qmp: list[QMP] = []
        self.log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                         preexec_fn=die_with_parent)
        except OSError as err:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise EmulatorError(f"cannot start {binary}: {err}") from None
        self.finalizer = weakref.finalize(owner, kill_qemu, self.proc, self.qmp, tmpdir)

    def connect(self, timeout_s: float) -> None:
        """Connect QMP.  QEMU has then read its firmware: the files in ``tmpdir`` go, so nothing
        is left on disk even if this process is killed."""
        self.qmp.append(QMP(os.path.join(self.tmpdir, "qmp.sock"), timeout=timeout_s,
                            alive=lambda: self.proc.poll() is None))
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, lines: int) -> str:
        """The last ``lines`` lines QEMU printed, on one line."""
        self.log.seek(0)
        return " ".join(self.log.read().decode(errors="replace").strip().splitlines()[-lines:])

    def check_running(self, doing: str) -> None:
        """An :class:`EmulatorError` naming QEMU's exit status and last words if it has exited."""
        if self.proc.poll() is not None:
            raise EmulatorError(f"QEMU exited (status {self.proc.returncode}) while {doing}: {self.log_tail(3)}")

    def run_until(self, done: Callable[[], bool], doing: str, budget: float, check_alive: Callable[[str], None],
                  close: Callable[[], None]) -> None:
        """Run the paused VM (QMP cont) until ``done()``, then pause it again (QMP stop), calling
        ``check_alive(doing)`` while waiting (the firmware's panic word, then this process).  Past
        ``budget`` seconds, or on any :class:`EmulatorError`, ``close()`` (the machine kills QEMU)
        and one error naming what was being done."""
        try:
            qmp = self.qmp[0]
            qmp.execute("cont")
            deadline = time.monotonic() + budget
            pause = 20e-6
            while not done():
                check_alive(doing)
                if time.monotonic() > deadline:
                    raise EmulatorError("no answer in the mailbox")
                time.sleep(pause)
                pause = min(pause * 2, 1e-3)
            qmp.execute("stop")
        except EmulatorError as err:
            close()
            raise EmulatorError(f"QEMU did not finish {doing} within {budget:.1f} s: {err} (killed)") from None
