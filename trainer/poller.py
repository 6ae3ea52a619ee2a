"""A thread that polls until stopped: the search's watchdogs and the benchmark's memory sampler share its shape."""

from __future__ import annotations

import threading
from typing import Self


class Poller:
    """Call `poll` from a daemon thread every INTERVAL seconds, from entering the block until leaving it.

    `poll` returns False to stop early. Leaving the block stops the thread and joins it, so
    nothing polls once the block has ended (within `join_timeout`, where one is set).
    """

    thread_name = "skfleet-poller"
    # Seconds leaving the block waits for a poll under way (None: until it ends). A poller whose poll
    # may block on a silent peer, and whose late result is harmless, bounds it; the thread is a daemon.
    join_timeout: float | None = None

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def poll(self) -> bool | None:
        """Look once; give False to stop polling."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the thread ends after its current poll)."""
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Wait SECONDS, or until stopped; give whether it was stopped."""
        return self._stop.wait(seconds)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self._thread.is_alive():
            self._thread.join(self.join_timeout)

    def _run(self) -> None:
        while not self.wait(self.interval):
            if self.poll() is False:
                return
