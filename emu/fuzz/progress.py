"""The campaign's live progress line on stderr.
"""

from __future__ import annotations

import time

from emu.fuzz.records import Stats
from emu.verify import VERDICT_CLASSES


class Progress:
    """The live line on stderr (a TTY: rewritten in place; else one line every 10 s)."""

    def __init__(self, enabled: bool, label: str) -> None:
        import sys

        self.out = sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.out.isatty()
        self.label = label
        self.t0 = time.monotonic()
        self.last = 0.0 if self.tty else self.t0
        self.width = 0
        self.shown: tuple[int, int, int] | None = None

    def update(self, stats: Stats, findings: int, crashes: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.5 if self.tty else 10.0):
            return
        state = (stats.cases, findings, crashes)
        if force and state == self.shown:
            return
        self.last, self.shown = now, state
        el = now - self.t0
        rate = stats.cases / el if el > 0 else 0.0
        fr = stats.faults / stats.cases if stats.cases else 0.0
        v = stats.verdicts
        text = (f"fuzz {self.label} {el:6.1f}s {stats.cases:>10,} cases {rate:>8,.0f}/s faults {fr:4.0%} | "
                + " ".join(f"{_SHORT[c]} {v.get(c, 0):,}" for c in VERDICT_CLASSES)
                + f" | findings {findings} crashes {crashes}")
        if self.tty:
            pad = max(0, self.width - len(text))
            self.out.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()


_SHORT = {
    "agree": "agree", "linux-only": "linux-only", "emulator-deviation": "emu-dev",
    "oracle-cannot-check": "cannot-check", "oracle-error": "oracle-error", "disagree": "DISAGREE",
}
