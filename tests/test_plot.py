"""Learning curves from event files: the mean and spread across runs, checked by hand; the PNG; the errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from mario_rl.plot import curves, main


def write_run(log_dir: Path, points: dict[int, float], suffix: str = "") -> None:
    writer = SummaryWriter(str(log_dir), filename_suffix=suffix)
    for step, value in points.items():
        writer.add_scalar("rollout/x_pos", value, global_step=step)
    writer.add_scalar("train/loss", 1.0, global_step=0)
    writer.close()


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun dir of two seeds, the second logged one point further."""
    write_run(tmp_path / "0" / "tensorboard", {0: 0.0, 100: 10.0, 200: 20.0})
    write_run(tmp_path / "1" / "tensorboard", {0: 2.0, 100: 12.0, 200: 22.0, 300: 40.0})
    return tmp_path


def test_mean_and_spread_across_runs_by_hand(sweep):
    data = curves(sweep, "rollout/x_pos")
    assert sorted(data.runs) == ["0", "1"]  # the Hydra job dirs, not their shared "tensorboard"
    assert data.steps.tolist() == [0, 100, 200, 300]
    assert data.mean.tolist() == [1.0, 11.0, 21.0, 40.0]  # at 300 only run 1 is still going
    assert data.std.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert data.count.tolist() == [2, 2, 2, 1]


def test_runs_logged_at_other_steps_are_interpolated(tmp_path):
    write_run(tmp_path / "a", {0: 0.0, 100: 10.0})
    write_run(tmp_path / "b", {50: 3.0})
    data = curves(tmp_path, "rollout/x_pos")
    assert data.steps.tolist() == [0, 50, 100]
    assert data.mean.tolist() == [0.0, 4.0, 10.0]  # at 50: (5 interpolated + 3) / 2


def test_a_resumed_run_keeps_the_later_point_of_a_step(tmp_path):
    write_run(tmp_path / "run", {0: 1.0, 100: 5.0}, suffix=".first")
    write_run(tmp_path / "run", {100: 7.0, 200: 9.0}, suffix=".resumed")
    data = curves(tmp_path / "run", "rollout/x_pos")
    assert list(data.runs) == ["run"] and data.mean.tolist() == [1.0, 7.0, 9.0]


def test_main_writes_a_png_that_opens(sweep, capsys):
    main([str(sweep), "--metric", "rollout/x_pos"])
    out = sweep / "rollout_x_pos.png"
    name = sweep.name
    assert capsys.readouterr().out == f"wrote {out}: rollout/x_pos of {name}: 2 run(s), env steps 0..300\n"
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (960, 540)
        assert np.asarray(png.convert("L")).std() > 10  # something is drawn


def test_several_dirs_are_drawn_side_by_side_in_their_own_colours(sweep, tmp_path, capsys):
    write_run(tmp_path / "other" / "tensorboard", {0: 5.0, 300: 6.0})
    out = tmp_path / "side.png"
    main([str(sweep / "0"), str(tmp_path / "other"), "--label", "a", "--label", "b", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed == f"wrote {out}: rollout/x_pos of a: 1 run(s), env steps 0..200; b: 1 run(s), env steps 0..300\n"
    with Image.open(out) as png:
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3).astype(int)
    for rgb in ((31, 119, 180), (255, 127, 14)):  # matplotlib's tab:blue and tab:orange
        assert (np.abs(pixels - rgb).sum(axis=1) < 30).sum() > 200


def test_max_steps_cuts_every_run_to_the_same_budget(sweep, tmp_path, capsys):
    write_run(sweep / "2" / "tensorboard", {150: 99.0})  # nothing at or before 100: left out
    data = curves(sweep, "rollout/x_pos", max_steps=100)
    assert sorted(data.runs) == ["0", "1"]
    assert data.steps.tolist() == [0, 100] and data.mean.tolist() == [1.0, 11.0]
    out = tmp_path / "cut.png"
    main([str(sweep / "1"), str(sweep / "0"), "--max-steps", "250", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed == f"wrote {out}: rollout/x_pos of 1: 1 run(s), env steps 0..200; 0: 1 run(s), env steps 0..200\n"


@pytest.mark.parametrize(
    ("max_steps", "message"),
    [
        ("-5", "error: --max-steps must be a positive number of env steps, got -5\n"),
        ("50", "logged 'rollout/x_pos' at or before env step 50\n"),
    ],
)
def test_max_steps_errors_say_what_is_wrong(max_steps, message, tmp_path, capsys):
    write_run(tmp_path / "late", {100: 1.0})
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "late"), "--max-steps", max_steps])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.endswith(message)


def test_one_label_per_dir(sweep, capsys):
    with pytest.raises(SystemExit):
        main([str(sweep / "0"), str(sweep / "1"), "--label", "a"])
    assert capsys.readouterr().err == "error: 1 --label for 2 run dirs; give one per dir or none\n"


def test_curves_of_a_real_training_run(trained_run, tmp_path):
    out = tmp_path / "curve.png"
    main([str(trained_run), "--metric", "rollout/x_pos", "--out", str(out)])
    data = curves(trained_run, "rollout/x_pos")
    assert list(data.runs) == [trained_run.name] and 0 < data.steps[0] < data.steps[-1] <= 400
    assert list(curves(trained_run / "tensorboard", "rollout/x_pos").runs) == [trained_run.name]
    with Image.open(out) as png:
        assert png.size == (960, 540)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("rollout/x_pos", "error: no TensorBoard event files (events.out.tfevents.*) under"),
        ("nope", "error: no run under"),
    ],
)
def test_errors_are_one_line(metric, message, sweep, tmp_path, capsys):
    root = sweep if metric == "nope" else tmp_path / "empty"
    root.mkdir(exist_ok=True)
    with pytest.raises(SystemExit) as exit_:
        main([str(root), "--metric", metric])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(message) and len(err.splitlines()) == 1
    if metric == "nope":
        assert "logged metrics: rollout/x_pos, train/loss" in err


def test_csv_holds_every_drawn_point_and_plots_like_the_event_files(sweep, tmp_path, capsys):
    saved = tmp_path / "kept" / "curves.csv"
    main([str(sweep), "--max-steps", "200", "--out", str(tmp_path / "a.png"), "--csv", str(saved)])
    assert capsys.readouterr().out.endswith(f"wrote {saved}: 6 points\n")
    assert saved.read_text().splitlines() == [
        "label,run,metric,env_step,value",
        *(f"{sweep.name},0,rollout/x_pos,{s},{v}" for s, v in ((0, 0.0), (100, 10.0), (200, 20.0))),
        *(f"{sweep.name},1,rollout/x_pos,{s},{v}" for s, v in ((0, 2.0), (100, 12.0), (200, 22.0))),
    ]
    again = curves(saved, "rollout/x_pos", max_steps=100)
    assert sorted(again.runs) == ["0", "1"]
    assert again.steps.tolist() == [0, 100] and again.mean.tolist() == [1.0, 11.0] and again.std.tolist() == [1.0, 1.0]
    main([str(saved), str(sweep / "1")])  # a CSV beside a run dir; the PNG lands beside the CSV
    out = saved.parent / "rollout_x_pos.png"
    assert capsys.readouterr().out == (
        f"wrote {out}: rollout/x_pos of {sweep.name}: 2 run(s), env steps 0..200; 1: 1 run(s), env steps 0..300\n"
    )


def test_a_csv_of_several_labels_keeps_their_runs_apart(sweep, tmp_path):
    saved = tmp_path / "both.csv"
    two_runs = [str(sweep / "0"), str(sweep / "1"), "--label", "a", "--label", "b"]
    main([*two_runs, "--out", str(tmp_path / "b.png"), "--csv", str(saved)])
    data = curves(saved, "rollout/x_pos")
    assert sorted(data.runs) == ["a/0", "b/1"] and data.mean.tolist() == [1.0, 11.0, 21.0, 40.0]


def test_a_csv_of_several_labels_draws_one_curve_per_label(sweep, tmp_path, capsys):
    saved = tmp_path / "both.csv"
    two_runs = [str(sweep / "0"), str(sweep / "1"), "--label", "a", "--label", "b"]
    main([*two_runs, "--out", str(tmp_path / "b.png"), "--csv", str(saved)])
    capsys.readouterr()
    main([str(saved), "--out", str(tmp_path / "again.png")])
    drawn = "a: 1 run(s), env steps 0..200; b: 1 run(s), env steps 0..300"
    assert capsys.readouterr().out == f"wrote {tmp_path / 'again.png'}: rollout/x_pos of {drawn}\n"
    main([str(saved), "--label", "kept", "--out", str(tmp_path / "named.png")])
    assert "of kept/a: 1 run(s), env steps 0..200; kept/b: 1 run(s)" in capsys.readouterr().out


WORLD_CSV = """label,run,metric,env_step,value
1-1,w,eval/1-1/x_pos_mean,0,100
1-1,w,eval/1-1/x_pos_mean,50,300
1-2,w,eval/1-2/x_pos_mean,0,200
1-2,w,eval/1-2/x_pos_mean,50,500
w,w,eval/x_pos_mean,0,150
w,w,eval/x_pos_mean,50,400
"""


def test_a_csv_of_per_level_and_whole_run_curves_draws_either(tmp_path, capsys):
    # the layout of a --per-level CSV and a whole-run CSV of one run kept in one file
    world = tmp_path / "world.csv"
    world.write_text(WORLD_CSV)
    main(
        [str(world), "--metric", "eval/x_pos_mean", "--out", str(tmp_path / "a.png"), "--csv", str(tmp_path / "a.csv")]
    )
    assert capsys.readouterr().out.startswith(
        f"wrote {tmp_path / 'a.png'}: eval/x_pos_mean of w: 1 run(s), env steps 0..50\n"
    )
    assert curves(tmp_path / "a.csv", "eval/x_pos_mean").mean.tolist() == [150.0, 400.0]

    main([str(world), "--metric", "eval/x_pos_mean", "--per-level", "--out", str(tmp_path / "l.png")])
    drawn = "1-1: 1 run(s), env steps 0..50; 1-2: 1 run(s), env steps 0..50"
    assert capsys.readouterr().out == f"wrote {tmp_path / 'l.png'}: eval/x_pos_mean of {drawn}\n"

    second = tmp_path / "second.csv"
    second.write_text(WORLD_CSV.replace(",w,", ",v,").replace("\nw,", "\nv,"))
    both = [str(world), str(second), "--label", "s1", "--label", "s2", "--metric", "eval/x_pos_mean"]
    main([*both, "--per-level", "--out", str(tmp_path / "b.png"), "--csv", str(tmp_path / "b.csv")])
    names = ["s1 1-1", "s1 1-2", "s2 1-1", "s2 1-2"]
    assert capsys.readouterr().out.count("1 run(s), env steps 0..50") == 4
    main([str(tmp_path / "b.csv"), "--metric", "eval/x_pos_mean", "--per-level", "--out", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert all(f"{name}: 1 run(s)" in out for name in names)
    with pytest.raises(SystemExit):
        main([str(world), str(second), "--metric", "eval/x_pos_mean", "--per-level", "--out", str(tmp_path / "d.png")])
    assert capsys.readouterr().err == "error: two curves are named '1-1'; give each dir a --label\n"


def test_two_curves_of_one_name_are_refused(sweep, tmp_path, capsys):
    write_run(tmp_path / "elsewhere" / "0" / "tensorboard", {0: 1.0})
    with pytest.raises(SystemExit):
        main([str(sweep / "0"), str(tmp_path / "elsewhere" / "0")])
    assert capsys.readouterr().err == "error: two curves are named '0'; give each dir a --label\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("step,value\n0,1\n", "is not a curves CSV: its header must be label,run,metric,env_step,value\n"),
        (
            "label,run,metric,env_step,value\na,r,train/loss,0,1.0\n",
            "logged 'rollout/x_pos'; logged metrics: train/loss\n",
        ),
        (
            "label,run,metric,env_step,value\na,r,rollout/x_pos,0,1.0\na,r,rollout/x_pos,100,\n",
            "bad.csv, line 3: env_step and value must be numbers\n",
        ),
    ],
)
def test_a_csv_that_cannot_be_drawn_is_a_one_line_error(text, message, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        main([str(bad), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.endswith(message) and len(err.splitlines()) == 1
