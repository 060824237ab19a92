"""Every command reports a user's mistake the same way: one line on stderr, exit code 2."""

import pytest

from mario_rl.config import ConfigError
from mario_rl.errors import RunError, UserError, exit_with, user_errors_exit
from mario_rl.plot import PlotError
from mario_rl.sweep import SweepError


@pytest.mark.parametrize("error", [UserError, ConfigError, PlotError, SweepError])
def test_a_user_error_ends_the_command_with_its_line_and_code_2(error, capsys):
    with pytest.raises(SystemExit) as exit_info, user_errors_exit():
        raise error("env.level='9-9' is not a level of smb")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: env.level='9-9' is not a level of smb\n"


def test_a_fault_is_not_a_user_error_and_passes_through(capsys):
    with pytest.raises(RunError, match="worker died"), user_errors_exit():
        raise RunError("worker died")
    assert capsys.readouterr().err == ""


def test_exit_with_prints_one_line_and_exits_with_the_code(capsys):
    with pytest.raises(SystemExit) as exit_info:
        exit_with("stopped at env step 12", 1)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: stopped at env step 12\n"
