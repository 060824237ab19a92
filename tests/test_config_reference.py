"""The README's configuration reference is the composed config: every key, its default, its comment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mario_rl.config_reference import README, leaves, main, render, show, split_comment, table, yaml_comments
from tests.conftest import compose_train


def test_readme_reference_matches_the_composed_config():
    current = README.read_text()
    assert render(current) == current, "README.md is out of date: run python -m mario_rl.config_reference"


def test_every_composed_key_has_one_row_with_its_default(tmp_path: Path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_train([], tmp_path), resolve=False)
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip(" `") for line in table("train").splitlines()[2:]}
    expected = {key: show(value) for key, value in leaves(cfg) if not key.startswith("paths.")}
    assert {k: v for k, v in rows.items() if not k.startswith("paths.")} == expected
    assert rows["env.release_jump"] == "true"
    assert rows["callbacks.eval.every"] == "${checkpoint_every}"  # interpolations are shown, not resolved
    assert rows["env_steps"] == "1_000_000"


def test_yaml_comments_takes_the_block_above_and_the_trailing_comment(tmp_path: Path):
    path = tmp_path / "group.yaml"
    path.write_text(
        "# @package _global_\n"
        "# What the file is about: not its first key's comment.\n"
        "first: 1\n"
        "plain: 2\n"
        "# Two lines\n"
        "# above.\n"
        "block: 3   # and one beside\n"
        "\n"
        "# cut off by the blank line below\n"
        "\n"
        "nested:\n"
        "  # inner\n"
        '  name: "a # not a comment"  # the comment\n'
        "  list:\n"
        "    - x  # an item's comment belongs to no key\n"
        "after: 4  # back at the top\n"
    )
    assert yaml_comments(path) == {
        "block": "Two lines above. and one beside",
        "nested.name": "inner the comment",
        "after": "back at the top",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a: 1  # c", ("a: 1  ", "c")),
        ("a: '#x' # c", ("a: '#x' ", "c")),
        ('a: "b#c"', ('a: "b#c"', "")),
        ("a: x#y", ("a: x#y", "")),  # YAML needs a space before a comment's #
    ],
)
def test_split_comment(line: str, expected: tuple[str, str]):
    assert split_comment(line) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "null"),
        (True, "true"),
        (25_000, "25_000"),
        (8_000, "8000"),
        (1e-6, "1e-06"),
        ("", '""'),
        ([1, "a"], "[1, a]"),
        ({"_target_": "x"}, "{_target_: x}"),
    ],
)
def test_show_is_what_a_user_types(value: object, shown: str):
    assert show(value) == shown


def test_check_fails_on_a_stale_readme_and_write_fixes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text().replace("| `env.release_jump` | `true` |", "| `env.release_jump` | `false` |"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--readme", str(stale), "--check"])
    assert exit_info.value.code == 1
    assert "out of date; run python -m mario_rl.config_reference" in capsys.readouterr().out
    main(["--readme", str(stale)])
    assert stale.read_text() == README.read_text()


def test_a_readme_without_markers_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bare = tmp_path / "README.md"
    bare.write_text("# no tables here\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--readme", str(bare)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: README.md needs exactly one <!-- config-reference:train:start --> and one "
        "<!-- config-reference:train:end --> line\n"
    )
