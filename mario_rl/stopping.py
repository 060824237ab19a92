"""Stopping a run from outside: Ctrl-C and SIGTERM end it at the next env step, with everything whole.

A KeyboardInterrupt raised wherever the main thread happens to be can land between the reads
of one vector step's worker pipes: the step is then half collected, and closing the envs waits
for an answer that was already read, forever. Raised inside a finalizer, Python prints and
drops it, and the run goes on. So while a run trains (``taking_stops``), Ctrl-C only notes the
request and the stream's next env step raises it (``raise_if_stopped``), with no step in flight
and the replay and counters consistent; a second Ctrl-C raises at once. Lightning notes a
SIGTERM and raises it at the next batch, but the warm-up yields no batch for learning_starts
env steps, so the next env step raises that too.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

_interrupted = threading.Event()


def _note_interrupt(signum: int, frame: FrameType | None) -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt
    _interrupted.set()
    log.warning("Ctrl-C: stopping at the next env step, after saving last.ckpt (Ctrl-C again to stop at once)")


@contextlib.contextmanager
def taking_stops() -> Iterator[None]:
    """While inside, Ctrl-C is noted and raised by ``raise_if_stopped``. Only the main thread can
    set signal handlers: elsewhere (a launcher's worker thread) Ctrl-C keeps Python's default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, _note_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()


@contextlib.contextmanager
def keeping_stop_handlers() -> Iterator[None]:
    """Put back the SIGINT and SIGTERM handlers that were in place before the block.

    ``ray.init`` in the driver installs Ray's own SIGTERM handler (and abseil's failure handler
    in front of it), which exits at once: without this, a SIGTERM to a run with Ray actors ended
    it without saving last.ckpt. Setting a Python handler again makes it the process's handler.
    Outside the main thread (a launcher's worker thread) there is nothing to put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:  # None: set from C, not by Python, so it cannot be put back
                signal.signal(sig, handler)


def noted_stop(trainer: Any | None = None) -> BaseException | None:
    """The stop asked for from outside and not yet raised: KeyboardInterrupt for Ctrl-C,
    Lightning's SIGTERMException for a SIGTERM the Trainer noted; None while there is none."""
    if _interrupted.is_set():
        return KeyboardInterrupt()
    if trainer is not None and getattr(trainer, "received_sigterm", False):
        return SIGTERMException()
    return None


def raise_if_stopped(trainer: Any | None = None) -> None:
    """Raise the stop asked for since the last env step (``noted_stop``), if any."""
    stop = noted_stop(trainer)
    if stop is not None:
        raise stop
