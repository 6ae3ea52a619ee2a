"""Ctrl-C and `docker stop` end a run, even where Python drops the first KeyboardInterrupt.

Python runs a signal handler in the main thread between two bytecodes, wherever that thread
is. When it is inside a gc callback or a `__del__`, the KeyboardInterrupt the handler raises
is printed as "Exception ignored" and dropped; distributed registers such a gc callback in
every process that hosts a scheduler or a worker (a LocalCluster's client does), and code that
catches BaseException drops it silently. The run then went on to the end and exited 0: the
signal was lost (1 run in 3 when the signal came right after "grid search:").
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How often a signal is raised again in the main thread until the run unwinds from it.
RESEND_SECONDS = 0.5


class Interrupts:
    """Context manager: SIGINT and SIGTERM raise KeyboardInterrupt in the main thread until it unwinds.

    The first signal raises at once and starts a thread that simulates it again every
    RESEND_SECONDS. Each time, the handler raises again unless the main thread is already
    unwinding from an interrupt (inside an `except`, `finally` or `__exit__` it runs for one),
    so cleanup on the way out is never cut short. Leaving the block stops the resending and puts
    the previous handlers back.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._stop = threading.Event()
        self._resender: threading.Thread | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> Interrupts:
        self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self._stop.set()
        if self._resender is not None:
            # A resend already on its way runs this class's handler (unwinding: no raise),
            # not the default one put back below.
            self._resender.join()
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if _unwinding_from_interrupt(sys.exc_info()[1]):
            return
        if self._resender is None:
            self.received = signal.Signals(number)
            self._resender = threading.Thread(target=self._resend, name="skfleet-interrupt", daemon=True)
            self._resender.start()
        raise KeyboardInterrupt(signal.Signals(number).name)

    def _resend(self) -> None:
        assert self.received is not None
        while not self._stop.wait(RESEND_SECONDS):
            _thread.interrupt_main(self.received)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, `_thread.interrupt_main()` from another thread raises KeyboardInterrupt in the main thread.

    interrupt_main simulates SIGINT, and does nothing where Python has no handler for it: where
    SIGINT is ignored, as in a script's background job (`cmd &`: a CI job's, a cron wrapper's), a
    search waited for ever for the interrupt of its paused-workers watchdog. Entered in the main
    thread, the block gives SIGINT a handler that raises KeyboardInterrupt unless the main thread
    is already unwinding from one (a late interrupt must not cut its cleanup short); a SIGINT
    sent to such a process then interrupts it too. A handler of the program's own (Interrupts')
    is kept. Elsewhere than the main thread, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if callable(previous) and previous is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _raise_unless_unwinding)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _raise_unless_unwinding(number: int, frame: FrameType | None) -> None:
    if not _unwinding_from_interrupt(sys.exc_info()[1]):
        raise KeyboardInterrupt(signal.Signals(number).name)


def _unwinding_from_interrupt(error: BaseException | None) -> bool:
    """Tell whether the exception being handled is, or arose while handling, a KeyboardInterrupt."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
