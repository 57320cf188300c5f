"""Progress of blob transfers on a terminal (I/O shell).

Rules: on a TTY each blob gets one line, `label  done/total  rate`, redrawn in
place with a carriage return at most ten times a second and ended with a
newline; off a TTY (or with --quiet) nothing is drawn, and the caller may
print `summary()` once at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class Bar:
    def __init__(self, progress: Progress, label: str, total: int, done: int = 0) -> None:
        self.progress, self.label, self.total, self.done = progress, label, total, done
        self.started = time.monotonic()
        self.start_bytes = done
        self.drawn = 0.0

    def update(self, n: int) -> None:
        self.done += n
        self.progress.moved += n
        now = time.monotonic()
        if self.progress.draw and now - self.drawn >= 0.1:
            self.drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = (self.done - self.start_bytes) / elapsed
        pct = 100 * self.done / self.total if self.total else 100.0
        self.progress.out.write(f"\r{self.label}  {human(self.done)}/{human(self.total)} "
                                f"{pct:5.1f}%  {human(rate)}/s\x1b[K")
        self.progress.out.flush()

    def finish(self, note: str = "") -> None:
        if self.progress.draw:
            self._draw(time.monotonic())
            self.progress.out.write(f"  {note}\n" if note else "\n")
            self.progress.out.flush()


class Progress:
    def __init__(self, out: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out if out is not None else sys.stderr
        self.draw = not quiet and self.out.isatty()
        self.moved = 0
        self.started = time.monotonic()

    def bar(self, label: str, total: int, done: int = 0) -> Bar:
        return Bar(self, label, total, done)

    def line(self, text: str) -> None:
        if self.draw:
            self.out.write(text + "\n")
            self.out.flush()

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{human(self.moved)} in {elapsed:.1f} s ({human(self.moved / elapsed)}/s)"
