"""A minimal QMP client (QEMU Machine Protocol, docs/interop/qmp-spec.rst): JSON commands over a
UNIX socket, one answer per command, asynchronous events skipped."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from emu.errors import EmulatorError


class QMP:
    def __init__(self, path: str, *, timeout: float = 10.0, alive: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(path)
                break
            except OSError as err:
                self._sock.close()
                if alive is not None and not alive():
                    raise EmulatorError("QEMU exited before its QMP socket was ready") from None
                if time.monotonic() > deadline:
                    raise EmulatorError(f"cannot connect to QEMU's QMP socket: {err}") from None
                time.sleep(0.01)
        self._file = self._sock.makefile("rwb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as err:
            raise EmulatorError(f"QMP: {err}") from None
        if not line:
            raise EmulatorError("QMP: QEMU closed the connection")
        return json.loads(line)  # type: ignore[no-any-return]

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._file.write(json.dumps(msg).encode() + b"\n")
            self._file.flush()
        except OSError as err:
            raise EmulatorError(f"QMP {command}: {err}") from None
        while True:
            answer = self._read()
            if "return" in answer:
                return answer["return"]
            if "error" in answer:
                raise EmulatorError(f"QMP {command}: {answer['error'].get('desc', answer['error'])}")

    def hmp(self, command_line: str) -> str:
        """A human-monitor command's text (e.g. ``gva2gpa``, ``info registers``)."""
        return str(self.execute("human-monitor-command", **{"command-line": command_line}))

    def close(self) -> None:
        for obj in (self._file, self._sock):
            try:
                obj.close()
            except OSError:
                pass
