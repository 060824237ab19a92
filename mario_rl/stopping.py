"""Stopping a run from outside: Ctrl-C, SIGTERM and SIGHUP end it at the next env step, with everything whole.

A KeyboardInterrupt raised wherever the main thread happens to be can land between the reads
of one vector step's worker pipes: the step is then half collected, and closing the envs waits
for an answer that was already read, forever. Raised inside a finalizer, Python prints and
drops it, and the run goes on. So while a run trains (``taking_stops``), Ctrl-C only notes the
request and the stream's next env step raises it (``raise_if_stopped``), with no step in flight
and the replay and counters consistent; a second Ctrl-C raises at once. Lightning notes a
SIGTERM and raises it at the next batch, but the warm-up yields no batch for learning_starts
env steps, so the next env step raises that too. Both are noted from the job's start
(``run_job``), so a stop while the run starts ends it before training begins.

SIGHUP (the terminal of a run in the foreground closed: an ssh connection that dropped) ends
the run as SIGTERM does, where Python's default ended it on the spot with nothing saved; a run
started with ``nohup`` ignores it and trains on.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mario_rl.errors import StoppedError

log = logging.getLogger(__name__)

_interrupted = threading.Event()
_terminated = threading.Event()
_terminated_by = ["SIGTERM"]  # the name of the signal that set _terminated: SIGTERM or SIGHUP


def _note_interrupt(signum: int, frame: FrameType | None) -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt
    _interrupted.set()
    log.warning(
        "Ctrl-C: stopping before training begins, or at the next env step after saving last.ckpt "
        "(Ctrl-C again to stop at once)"
    )


def _note_sigterm(signum: int, frame: FrameType | None) -> None:
    if not _terminated.is_set():
        _terminated_by[0] = signal.Signals(signum).name
    _terminated.set()
    log.warning("%s: stopping before training begins, or at the next env step after saving last.ckpt", terminated_by())


def terminated_by() -> str:
    """The name of the signal that ended the run, as ``sigterm_noted`` reports it: SIGTERM (also
    when Lightning noted it) or SIGHUP."""
    return _terminated_by[0]


@contextlib.contextmanager
def taking_stops() -> Iterator[None]:
    """While inside, Ctrl-C, SIGTERM and SIGHUP (unless ignored, as under ``nohup``) are noted,
    not raised where they land: while the run
    starts ``raise_if_stopped_while_starting`` raises them, once it trains ``raise_if_stopped``
    (every env step). A second Ctrl-C raises at once.

    Python's defaults would end a run that is starting (the imports, the checkpoint and the
    replay being read back) on the spot for SIGTERM, with no status.json and no line saying
    why, and raise Ctrl-C wherever it lands, where importing torch swallows it and the run
    trains on. While a Trainer fits, Lightning's SIGTERM handler is the process's; it
    calls this one too (it keeps the handler it found). Blocks may nest; the outermost's end
    drops the notes. Only the main thread can set signal handlers: elsewhere (a launcher's
    worker thread) both keep Python's defaults.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = signal.getsignal(signal.SIGINT) is not _note_interrupt
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, _note_interrupt)}
    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _note_sigterm)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _note_sigterm)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if outermost:
            _interrupted.clear()
            _terminated.clear()
            _terminated_by[0] = "SIGTERM"


STOPS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # the signals that stop a run from outside


@contextlib.contextmanager
def stops_blocked() -> Iterator[None]:
    """Block Ctrl-C, SIGTERM and SIGHUP in this thread while processes are started that must not die of
    them before they can set their own handlers: a process forked or exec'd inside inherits the
    blocked mask, so the signal stays pending in it until it ignores it (which drops it) or
    unblocks it. The run's own handlers still get a stop that comes meanwhile: the kernel gives
    it to another thread of the process, or at the end of the block.
    """
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def raise_if_stopped_while_starting() -> None:
    """Raise StoppedError for a Ctrl-C, SIGTERM or SIGHUP noted while the run started, before it wrote anything."""
    for event, name in ((_interrupted, "Ctrl-C"), (_terminated, terminated_by())):
        if event.is_set():
            raise StoppedError(f"stopped by {name} before training began; its files are as they were")


@contextlib.contextmanager
def keeping_stops_to_this_process() -> Iterator[None]:
    """Start processes (``ray.init``) that a SIGTERM to the run's process group does not reach,
    and put back the handlers of the stops (``STOPS``) that were in place before the block.

    ``ray.init`` in the driver starts Ray's processes (the GCS, and the raylet, which starts the
    actors' workers) in the run's process group, and installs Ray's own SIGTERM handler (and
    abseil's failure handler in front of it), which exits at once. A SIGTERM to the group then
    ended the run without saving last.ckpt in two ways: Ray's handler in the learner, and, when
    the raylet died first, Ray's core worker in the learner, which ends the process as soon as it
    finds the raylet's object store gone. Inside the block SIGTERM (and SIGHUP, a closed
    terminal's, which ends them the same way) is blocked in this thread;
    processes started there inherit the blocked mask (as Ray's own start-up blocks SIGINT in
    them), so the signal stays pending in them and they end when the learner, having saved, shuts
    Ray down (SIGKILL after a 1 s grace), or with it if it is killed (Ray's fate-sharing). Setting
    a Python handler again makes it the process's handler. A SIGTERM that comes inside the block,
    which ray.init's handler turns into ``SystemExit(15)``, ends the block early and goes to the
    handler put back, as if it had come after it: the caller then raises the stop
    (``noted_stop``). Outside the main thread (a launcher's worker thread) there is nothing to
    block or put back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in STOPS}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})
    sigterm = False
    try:
        yield
    except SystemExit as exit:
        # ray.init's handler until the driver connects is sys.exit(signum); another thread of
        # the process takes the signal while this one blocks it. With no Python handler of the
        # run's to give it to, the exit stands.
        if exit.code != signal.SIGTERM or not callable(before[signal.SIGTERM]):
            raise
        sigterm = True
    finally:
        for sig, handler in before.items():
            if handler is not None:  # None: set from C, not by Python, so it cannot be put back
                signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    if sigterm:
        before[signal.SIGTERM](signal.SIGTERM, None)  # noted as if it had come after the block


def sigterm_noted(trainer: Any | None = None) -> bool:
    """Whether a SIGTERM (or SIGHUP) came since the run started, noted by ``taking_stops`` or the Trainer."""
    return _terminated.is_set() or (trainer is not None and getattr(trainer, "received_sigterm", False))


def noted_stop(trainer: Any | None = None) -> BaseException | None:
    """The stop asked for from outside and not yet raised: KeyboardInterrupt for Ctrl-C,
    Lightning's SIGTERMException for a SIGTERM or SIGHUP (``sigterm_noted``); None while there is none."""
    if _interrupted.is_set():
        return KeyboardInterrupt()
    if sigterm_noted(trainer):
        # Imported here: train.py notes a SIGTERM (this module) before torch is loaded.
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        return SIGTERMException()
    return None


def raise_if_stopped(trainer: Any | None = None) -> None:
    """Raise the stop asked for since the last env step (``noted_stop``), if any."""
    stop = noted_stop(trainer)
    if stop is not None:
        raise stop
