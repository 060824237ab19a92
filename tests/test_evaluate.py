"""evaluate.py on a checkpoint of a real (tiny) training run: the table, the videos, the export, the errors."""

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from mario_rl.config import ConfigError
from mario_rl.evaluation import evaluate
from mario_rl.export import RUN_KEY, load_agent
from mario_rl.export import main as export_main
from tests.conftest import ROOT, compose_config

LENGTH = 20  # the trained run's env.max_episode_steps; no episode that short meets an enemy
NES_FRAMES = 1 + 4 * LENGTH  # the reset frame and frame_skip frames per agent step
GIF_FRAMES = math.ceil(NES_FRAMES / 2)  # every 2nd frame: 41
GIF_MS = 13 * 100 + 30 + 30  # 41 frames at 30, 30, 40 ms in turn: 13 full cycles and two more frames


def run_evaluate(ckpt: Path, out: Path, *overrides: str) -> dict:
    return evaluate(compose_config("evaluate", [f"ckpt_path={ckpt}", *overrides], out))


@pytest.fixture(scope="module")
def last_ckpt(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def two_levels(last_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    """The output dir, the results, and the wall-clock seconds the whole evaluation took."""
    out = tmp_path_factory.mktemp("eval")
    start = time.perf_counter()
    results = run_evaluate(last_ckpt, out, "episodes=3", "env.levels=[1-1,1-2]", "video=true", "seed=7")
    return out, results, time.perf_counter() - start


def test_the_table_is_computed_from_the_episodes_played(two_levels):
    out, results, seconds = two_levels
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"] == results["summary"] and [r["level"] for r in on_disk["summary"]] == ["1-1", "1-2"]
    for row in on_disk["summary"]:
        played = [r for r in on_disk["records"] if r["level"] == row["level"]]
        assert [r["seed"] for r in played] == [7, 8, 9]
        # an episode ends by the time limit or by a death before it; none is long enough to clear
        assert all(r["length"] == LENGTH or (r["terminated"] and r["length"] < LENGTH) for r in played)
        assert not any(r["clear"] for r in played)
        returns = [r["episode_return"] for r in played]
        xs = [r["x_pos"] for r in played]
        assert row["episodes"] == 3
        assert row["return_mean"] == pytest.approx(sum(returns) / 3)
        assert row["return_median"] == sorted(returns)[1]
        assert row["x_pos_mean"] == pytest.approx(sum(xs) / 3) and row["x_pos_max"] == max(xs)
        assert row["clear_rate"] == 0.0 and row["length_mean"] == pytest.approx(sum(r["length"] for r in played) / 3)
        # a level's steps over the seconds it played: no slower than over the whole evaluation's
        assert sum(r["length"] for r in played) / seconds <= row["steps_per_s"] < math.inf
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["level"], float(r["x_pos_mean"])) for r in rows] == [
        (s["level"], pytest.approx(s["x_pos_mean"])) for s in on_disk["summary"]
    ]
    first = on_disk["summary"][0]
    table = (out / "results.md").read_text()
    assert "| level | episodes | return mean |" in table
    assert (
        f"| 1-1 | 3 | {first['return_mean']:.1f} | {first['return_median']:.1f} | {first['x_pos_mean']:.1f} |" in table
    )


def test_an_episode_is_played_again_from_its_recorded_seed(two_levels, last_ckpt, tmp_path):
    _, results, _ = two_levels
    again = run_evaluate(last_ckpt, tmp_path, "episodes=1", "env.level=1-2", "seed=8")
    original = next(r for r in results["records"] if r["level"] == "1-2" and r["seed"] == 8)
    assert again["records"][0] | {"episode": 1} == original


def gif_durations(path: Path) -> list[int]:
    gif = Image.open(path)
    assert gif.size == (256, 240) and gif.format == "GIF"
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    return durations


def test_gif_videos_of_the_first_and_best_episode_play_at_the_game_pace(two_levels):
    out, results, _ = two_levels
    for level in ("1-1", "1-2"):
        videos = [v for v in results["videos"] if v["level"] == level]
        assert sorted(role for v in videos for role in v["roles"]) == ["best", "first"] and videos[0]["episode"] == 0
        best = max(r["x_pos"] for r in results["records"] if r["level"] == level)
        assert [v["episode"] for v in videos if "best" in v["roles"]] == [
            next(r["episode"] for r in results["records"] if r["level"] == level and r["x_pos"] == best)
        ]
    # 1-1 is safe for 20 steps: every episode there runs into the time limit, so its length is known
    assert all(r["length"] == LENGTH for r in results["records"] if r["level"] == "1-1")
    for video in (v for v in results["videos"] if v["level"] == "1-1"):
        assert (video["nes_frames"], video["video_frames"]) == (NES_FRAMES, GIF_FRAMES)
        durations = gif_durations(out / video["path"])
        # Pillow folds a frame identical to the one before into it: maybe fewer frames, never less time
        assert 2 <= len(durations) <= GIF_FRAMES and sum(durations) == GIF_MS
    last = np.asarray(Image.open(out / video["path"]).convert("RGB"))
    corner = last[-12:, :100]  # the overlay: white text on a black box in the bottom-left corner
    assert (corner.max(axis=2) < 40).mean() > 0.5 and (corner.min(axis=2) > 200).any()


def test_mp4_holds_every_nes_frame_at_60_fps(last_ckpt, tmp_path):
    results = run_evaluate(last_ckpt, tmp_path, "episodes=1", "video=true", "video_format=mp4")
    [video] = results["videos"]
    assert video["roles"] == ["first", "best"] and video["path"].endswith(".mp4")
    frames = imageio_ffmpeg.read_frames(str(tmp_path / video["path"]))
    meta = next(frames)
    assert meta["size"] == (256, 240) and meta["fps"] == 60
    assert sum(1 for _ in frames) == NES_FRAMES


def test_an_export_plays_exactly_like_its_checkpoint(two_levels, last_ckpt, tmp_path, capsys):
    _, from_ckpt, _ = two_levels
    exported = tmp_path / "agent.safetensors"
    export_main([str(last_ckpt), str(exported)])
    assert capsys.readouterr().out.startswith(f"wrote {exported}")
    with safe_open(str(exported), framework="pt") as f:
        run = json.loads(f.metadata()[RUN_KEY])
        assert all(not name.startswith(("online.", "target.")) for name in f.keys())  # noqa: SIM118
    assert run["env"]["max_episode_steps"] == LENGTH and exported.stat().st_size < last_ckpt.stat().st_size / 3
    # no env.level: the checkpoint's own training level, 1-1
    from_export = run_evaluate(exported, tmp_path / "eval", "episodes=3", "seed=7")
    assert from_export["records"] == [r for r in from_ckpt["records"] if r["level"] == "1-1"]


def test_a_float16_export_is_half_the_size_and_loads_as_float32(last_ckpt, tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    export_main([str(last_ckpt), str(full)])
    export_main([str(last_ckpt), str(half), "--dtype", "float16"])
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    with safe_open(str(half), framework="pt") as f:
        assert {f.get_tensor(name).dtype for name in f.keys()} == {torch.float16}  # noqa: SIM118
    (_, net32), (_, net16) = load_agent(full), load_agent(half)
    for (name, a), b in zip(net32.state_dict().items(), net16.state_dict().values(), strict=True):
        assert b.dtype == torch.float32, name
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)  # float16 keeps 11 significant bits
    results = run_evaluate(half, tmp_path / "eval", "episodes=2")
    assert [r["length"] for r in results["records"]] == [LENGTH, LENGTH]


def test_export_names_a_bad_dtype(last_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(last_ckpt), str(tmp_path / "x.safetensors"), "--dtype", "int8"])
    assert exit_info.value.code == 2 and "invalid choice: 'int8'" in capsys.readouterr().err


class Evil:
    """A pickle that would run code on load: torch's weights-only unpickler must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def broken_files(ckpt: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """Bad checkpoint files and the message each must produce."""
    truncated = tmp / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:100_000])
    foreign = tmp / "foreign.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "epoch": 3}, foreign)
    pickled = tmp / "pickled.ckpt"
    torch.save({"hyper_parameters": {"run": Evil(tmp / "pwned")}}, pickled)
    cut_export = tmp / "cut.safetensors"
    cut_export.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    return {
        "missing": (tmp / "nope.ckpt", "nope.ckpt: no such file"),
        "truncated": (truncated, "truncated.ckpt: corrupt or truncated"),
        "foreign": (foreign, "foreign.ckpt: not a mario-rl training checkpoint"),
        "pickled": (pickled, "pickled.ckpt: refused: it needs to unpickle objects other than tensors"),
        "cut export": (cut_export, "cut.safetensors: truncated or not a safetensors file"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "pickled", "cut export"])
def test_a_bad_checkpoint_is_one_error_naming_the_file(case, last_ckpt, tmp_path):
    path, message = broken_files(last_ckpt, tmp_path)[case]
    with pytest.raises(ConfigError, match=message):
        run_evaluate(path, tmp_path / "eval")
    assert not (tmp_path / "pwned").exists()  # the pickled command never ran
    assert not (tmp_path / "eval" / "results.json").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["env.level=9-1"], r"env.level='9-1' is not a level of smb; use W-S with W in 1..8 and S in 1..4"),
        (["env.levels=[1-1,1-5]"], r"env.levels='1-5' is not a level of smb"),
        (["env.level=1-1", "env.levels=[1-2]"], "env.level and env.levels are both set"),
        (["episodes=0"], "episodes=0 is not allowed"),
        (["video_format=avi"], "video_format='avi' is not allowed; choose one of: gif, mp4"),
    ],
)
def test_bad_settings_are_refused(overrides, message, last_ckpt, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_evaluate(last_ckpt, tmp_path, *overrides)


def test_an_evaluation_never_overwrites_another(two_levels, last_ckpt):
    out, _, _ = two_levels
    with pytest.raises(ConfigError, match=r"already holds results\.json; each evaluation writes to a new dir"):
        run_evaluate(last_ckpt, out, "episodes=1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: ckpt_path is required"),
        (["ckpt_path=nope.ckpt"], "error: nope.ckpt: no such file"),
        # the seed is refused before the checkpoint is read (here: before its absence is noticed)
        (["ckpt_path=nope.ckpt", "seed=-3"], "error: seed=-3 is not allowed; it must be an integer in [0, 4294967286]"),
    ],
)
def test_the_cli_prints_one_line_and_exits_2(args, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "evaluate.py", *args, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1


def test_the_cli_prints_the_table(last_ckpt, tmp_path):
    done = subprocess.run(
        [sys.executable, "evaluate.py", f"ckpt_path={last_ckpt}", "episodes=2", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "results.md").read_text().split("\n\n", 1)[1]  # after the line naming the checkpoint
    assert done.stdout.endswith(table) and table.splitlines()[2].startswith("| 1-1 | 2 |")
