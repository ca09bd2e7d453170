"""The campaign's live progress line on stderr, drawn by ``rich``: on a terminal one line
rewritten in place and cut to the terminal's width (``rich.live.Live``); otherwise (a log, CI)
one plain line every 10 s, never wrapped or coloured.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from emu.fuzz.records import Stats
from emu.verify import VERDICT_CLASSES


class Progress:
    """The live line on stderr (a terminal: rewritten in place; else one line every 10 s)."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.console = Console(file=sys.stderr, highlight=False)
        self.enabled = enabled
        self.tty = enabled and self.console.is_terminal
        self.label = label
        self.t0 = time.monotonic()
        self.last = 0.0 if self.tty else self.t0
        self.live: Live | None = None
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
            line = Text(text, no_wrap=True, overflow="ellipsis")
            if self.live is None:
                self.live = Live(line, console=self.console, auto_refresh=False,
                                 redirect_stdout=False, redirect_stderr=False)
                self.live.start()
            self.live.update(line, refresh=True)
        else:
            self.console.print(text, soft_wrap=True, markup=False)

    def done(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


_SHORT = {
    "agree": "agree", "linux-only": "linux-only", "emulator-deviation": "emu-dev",
    "oracle-cannot-check": "cannot-check", "oracle-error": "oracle-error", "disagree": "DISAGREE",
}
