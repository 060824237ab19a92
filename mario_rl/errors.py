"""Errors that end a run for a reason the user must hear in one line (no traceback).

Configuration mistakes are mario_rl.config.ConfigError; these are faults met while running.
"""


class RunError(RuntimeError):
    """A run stopped on a fault; the message says where (env step) and what is kept."""


class NonFiniteLossError(RunError):
    """The loss became NaN or infinite; no checkpoint is written after it."""


class EnvWorkerError(RunError):
    """An emulator worker died or stopped answering; a checkpoint is written before exiting."""


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's type and first sentence on one line, for one-line error messages
    (torch appends pages of advice to its errors)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text.split('. ')[0][:limit]}" if text else type(err).__name__
