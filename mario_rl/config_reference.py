"""The README's configuration reference, written from the composed config so it cannot drift.

``python -m mario_rl.config_reference`` composes ``conf/train.yaml`` and ``conf/evaluate.yaml``
with Hydra, as a run does, and writes one table per entry config between the README's markers:
every key, its default as the YAML holds it (interpolations unresolved: they are the default)
and the comment that the YAML file gives it. ``--check`` only compares and exits 1 on a
difference; tests/test_config_reference.py fails the same way.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from mario_rl.errors import UserError, user_errors_exit

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
README = ROOT / "README.md"
ENTRY_CONFIGS = ("train", "evaluate")
SKIPPED = {"hydra", "defaults"}  # Hydra's own settings; the defaults list picks files, it holds no value
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


def markers(name: str) -> tuple[str, str]:
    """The README lines that open and close the generated table of entry config ``name``."""
    return f"<!-- config-reference:{name}:start -->", f"<!-- config-reference:{name}:end -->"


def split_comment(text: str) -> tuple[str, str]:
    """A YAML line's text before its trailing ``# comment``, and the comment; a ``#`` inside quotes is text."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i], text[i + 1 :].strip()
    return text, ""


def yaml_comments(path: Path) -> dict[str, str]:
    """Dotted key (relative to the file's package) -> its comment: the comment lines right above
    the key, then its trailing comment. The comment block that opens a file describes the file,
    not its first key, and a blank line ends a block."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    seen_key = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            if seen_key and not stripped.startswith("# @package"):
                block.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:  # a list item or a continuation line
            block = []
            continue
        seen_key = True
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        _, trailing = split_comment(match["rest"])
        text = " ".join([*block, trailing]).strip()
        if text:
            comments[".".join(key for _, key in stack)] = text
        block = []
    return comments


def compose_entry(name: str) -> DictConfig:
    """Entry config ``name`` as Hydra composes it for a run with no overrides, Hydra's node included."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, return_hydra_config=True)


def comments_of(name: str, cfg: DictConfig) -> dict[str, str]:
    """Every comment of the files that composed ``cfg``, under the keys they hold there."""
    comments = yaml_comments(CONF / f"{name}.yaml")
    for group, choice in cfg.hydra.runtime.choices.items():
        path = CONF / group / f"{choice}.yaml"
        if choice is None or group.split("/")[0] in SKIPPED or not path.is_file():
            continue
        # A group file's own defaults list (conf/collector/local.yaml takes ray.yaml's keys) comes first.
        included = [path.with_name(f"{i}.yaml") for i in OmegaConf.load(path).get("defaults", []) if i != "_self_"]
        for source in [*included, path]:
            comments |= {f"{group}.{key}": text for key, text in yaml_comments(source).items()}
    return comments


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value of a plain config tree that a user may set; ``_target_``
    names the class a block builds, not a setting."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            if key != "_target_" and not (not prefix and key in SKIPPED):
                yield from leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
    else:
        yield prefix, node


def show(value: Any) -> str:
    """A default as a user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:_}"
    if isinstance(value, list):
        return "[" + ", ".join(show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {show(item)}" for key, item in value.items()) + "}"
    return str(value) if value != "" else '""'


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def table(name: str) -> str:
    """The markdown table of entry config ``name``: one row per key, in the composed order."""
    cfg = compose_entry(name)
    comments = comments_of(name, cfg)
    plain = OmegaConf.to_container(cfg, resolve=False)
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, value in leaves(plain):
        rows.append(f"| `{key}` | `{cell(show(value))}` | {cell(comments.get(key, ''))} |")
    return "\n".join(rows) + "\n"


def render(readme: str) -> str:
    """``readme`` with every generated table replaced by the one the config composes today."""
    for name in ENTRY_CONFIGS:
        start, end = markers(name)
        if readme.count(start) != 1 or readme.count(end) != 1:
            raise UserError(f"README.md needs exactly one {start} and one {end} line")
        head, rest = readme.split(start + "\n", 1)
        _, tail = rest.split(end, 1)
        readme = f"{head}{start}\n{table(name)}{end}{tail}"
    return readme


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the README is out of date")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    with user_errors_exit():
        wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{args.readme}: the configuration reference is out of date; run python -m mario_rl.config_reference")
            sys.exit(1)
        return
    args.readme.write_text(wanted)


if __name__ == "__main__":
    main()
