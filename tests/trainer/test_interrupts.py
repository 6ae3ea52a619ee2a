"""A signal ends the run even when the first KeyboardInterrupt is dropped, and never cuts cleanup short."""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Iterator

import pytest

from skfleet.interrupts import RESEND_SECONDS, Interrupts


@pytest.fixture
def signal_inside_gc_callback() -> Iterator[list[int]]:
    """Raise SIGINT from inside a gc callback, once: Python prints and drops what the handler raises there."""
    delivered: list[int] = []

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and not delivered:
            delivered.append(1)
            signal.raise_signal(signal.SIGINT)

    gc.callbacks.append(callback)
    yield delivered
    gc.callbacks.remove(callback)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop itself
def test_an_interrupt_dropped_in_a_gc_callback_is_raised_again(signal_inside_gc_callback: list[int]) -> None:
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match="SIGINT"), Interrupts() as interrupts:
        gc.collect()  # the first KeyboardInterrupt is raised, and dropped, in here
        assert signal_inside_gc_callback == [1]
        while time.monotonic() - started < 10:
            time.sleep(0.01)
    assert interrupts.received == signal.SIGINT
    assert time.monotonic() - started < 2 * RESEND_SECONDS + 1


def test_cleanup_after_an_interrupt_runs_to_its_end() -> None:
    cleaned = False
    with pytest.raises(KeyboardInterrupt), Interrupts():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            time.sleep(4 * RESEND_SECONDS)  # resends arrive here, in a finally unwinding from the interrupt
            cleaned = True
    assert cleaned


def test_an_error_raised_while_handling_the_interrupt_is_not_interrupted_again() -> None:
    class StoppedError(Exception):
        pass

    with pytest.raises(StoppedError), Interrupts():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise StoppedError from None  # as the paused-worker watchdog turns its interrupt into a ClusterError
        finally:
            time.sleep(3 * RESEND_SECONDS)


def test_leaving_the_block_puts_the_previous_handlers_back_and_stops_resending() -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt), Interrupts():
        signal.raise_signal(signal.SIGINT)
    assert {number: signal.getsignal(number) for number in before} == before
    time.sleep(3 * RESEND_SECONDS)  # no KeyboardInterrupt arrives here
