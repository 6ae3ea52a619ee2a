"""A live progress bar for the search on a terminal; elsewhere joblib's plain log lines stay."""

from __future__ import annotations

import threading
import time
from typing import TextIO

WIDTH = 30
# Redraw at most this often: a cached search answers hundreds of fits at once.
REDRAW_SECONDS = 0.2


class ProgressBar:
    """One line, redrawn in place: fits done out of the total, elapsed time, an estimate of what is left."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._lock = threading.Lock()

    def advance(self, fits: int) -> None:
        """Count FITS more fits as done (from the client's event loop thread)."""
        with self._lock:
            self.done = min(self.total, self.done + fits)
            now = time.monotonic()
            if self.done == self.total or now - self._drawn_at >= REDRAW_SECONDS:
                self._drawn_at = now
                self.stream.write("\r" + self.line(now - self._started))
                self.stream.flush()

    def line(self, elapsed: float) -> str:
        """Give the bar's text after ELAPSED seconds."""
        filled = WIDTH * self.done // self.total if self.total else WIDTH
        bar = "#" * filled + "." * (WIDTH - filled)
        if self.done == self.total:
            left = "done"
        elif self.done:
            left = f"~{clock(elapsed * (self.total - self.done) / self.done)} left"
        else:
            left = "estimating"
        return f"[{bar}] {self.done}/{self.total} fits  {clock(elapsed)} elapsed  {left}"

    def close(self) -> None:
        """End the bar's line, so what follows starts on its own."""
        with self._lock:
            if self._drawn_at:
                self.stream.write("\n")
                self.stream.flush()


def live_bar(total: int, stream: TextIO) -> ProgressBar | None:
    """Give a bar on STREAM when it is a terminal, else None (log files get joblib's lines)."""
    isatty = getattr(stream, "isatty", None)
    return ProgressBar(total, stream) if isatty is not None and isatty() else None


def clock(seconds: float) -> str:
    """Give SECONDS as m:ss, or h:mm:ss past an hour."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
