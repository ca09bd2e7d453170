"""One Bochs process per machine, driven through its internal debugger: commands go to its stdin,
and everything up to the next ``<bochs:N>`` prompt is the answer.  Stopped and reaped -- its
folder (bochsrc, ROM, disk image) removed -- on ``close()`` or when the machine is collected."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
import weakref

from emu.errors import EmulatorError
from emu.machines.qemu import die_with_parent

PROMPT = re.compile(rb"<bochs:(\d+)> $")


def kill_bochs(proc: subprocess.Popen[bytes], tmpdir: str) -> None:
    """Quit Bochs (debugger ``quit``, SIGKILL after 5 s), reap it, remove its folder."""
    if proc.poll() is None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
    shutil.rmtree(tmpdir, ignore_errors=True)


class BochsProcess:
    """``bochs -q -f <tmpdir>/bochsrc`` for ``owner``; :meth:`until_prompt` reads its output up to
    the debugger's prompt, :meth:`command` sends one debugger command and returns its output."""

    def __init__(self, owner: object, binary: str, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.out = b""
        env = dict(os.environ, TERM="dumb")  # the term display plugin draws on its own pty
        try:
            self.proc = subprocess.Popen([binary, "-q", "-f", os.path.join(tmpdir, "bochsrc")], cwd=tmpdir,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         env=env, preexec_fn=die_with_parent, start_new_session=True)
        except OSError as err:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise EmulatorError(f"cannot start {binary}: {err}") from None
        self.finalizer = weakref.finalize(owner, kill_bochs, self.proc, tmpdir)

    def until_prompt(self, timeout_s: float, doing: str) -> str:
        """Bochs's output up to (without) the next debugger prompt.  EmulatorError if Bochs exits
        or says nothing more within ``timeout_s``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        buf = b""
        while True:
            m = PROMPT.search(buf)
            if m:
                return buf[: m.start()].decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise EmulatorError(f"Bochs gave no debugger prompt within {timeout_s:.1f} s while {doing}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait()
                    lines = buf.decode(errors="replace").strip().splitlines()
                    panics = [ln.split(">>PANIC<<", 1)[1].strip() for ln in lines if ">>PANIC<<" in ln]
                    tail = panics[-1] if panics else " ".join(lines[-3:])
                    raise EmulatorError(f"Bochs exited (status {self.proc.returncode}) while {doing}: {tail}")
                buf += chunk

    def command(self, line: str, timeout_s: float, doing: str) -> str:
        """Send one debugger command; its output (up to the next prompt)."""
        if not self.finalizer.alive or self.proc.poll() is not None:
            raise EmulatorError("the Bochs process was stopped (closed, or killed after an earlier error)")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as err:
            raise EmulatorError(f"Bochs does not read its debugger commands ({err}) while {doing}") from None
        return self.until_prompt(timeout_s, doing)
