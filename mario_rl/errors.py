"""Errors that end a command for a reason the user must hear in one line (no traceback), and
how every command reports them.

A UserError is the user's to fix (a config value, a path, a file's content): the command prints
``error: <message>`` and exits with code 2. A RunError is a fault met while running: one line
too, exit code 1. Configuration mistakes are UserErrors of their own kind, mario_rl.config.ConfigError.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class UserError(ValueError):
    """A mistake the user can fix; its message is the one line to print (exit code 2)."""


class RunError(RuntimeError):
    """A run stopped on a fault; the message says where (env step) and what is kept."""


class StoppedError(RunError):
    """The run was stopped from outside (SIGTERM, or Ctrl-C before training began); the message
    says what was saved. A sweep ends with it instead of going on to its next job."""


class NonFiniteLossError(RunError):
    """The loss became NaN or infinite; no checkpoint is written after it."""


class EnvWorkerError(RunError):
    """An emulator worker died or stopped answering; a checkpoint is written before exiting."""


def exit_with(message: str, code: int) -> NoReturn:
    """End the command: ``error: <message>`` on stderr, exit ``code`` (2: the user's input, 1: a fault)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def user_errors_exit() -> Iterator[None]:
    """Around a command's work: a UserError ends it with its one line and exit code 2."""
    try:
        yield
    except UserError as err:
        exit_with(str(err), 2)


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's type and first sentence on one line, for one-line error messages
    (torch appends pages of advice to its errors)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text.split('. ')[0][:limit]}" if text else type(err).__name__
