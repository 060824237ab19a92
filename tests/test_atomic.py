"""Every file a later run reads is written beside its target, flushed and renamed: a kill at any moment
leaves the previous version whole, also when the run dir is on another filesystem than the temp dir."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from mario_rl import atomic
from mario_rl.checkpointing import SafeCheckpointIO
from mario_rl.replay import ReplayBuffer, saved_replay
from tests.conftest import ROOT, compose_train

SAVE_MB = 64

# Saves checkpoints of SAVE_MB over one path as fast as it can: checkpoint i holds i in every weight.
SAVER = f"""
import sys, torch
from mario_rl.checkpointing import SafeCheckpointIO
io, path, i = SafeCheckpointIO(), sys.argv[1], 0
weights = torch.zeros({SAVE_MB} * 2**18)
while True:
    i += 1
    io.save_checkpoint({{"hyper_parameters": {{"run": {{}}}}, "global_step": i, "w": weights.fill_(i)}}, path)
"""


@pytest.fixture
def second_filesystem(tmp_path: Path):
    """A tmpfs mounted under tmp_path, so the run dir and the system temp dir are two filesystems."""
    mount = tmp_path / "scratch"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600m", "tmpfs", str(mount)], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no mount command: cannot make a second filesystem")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def whole(path: Path) -> int:
    """The global step of the checkpoint at ``path``, after checking every weight says the same."""
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["w"].numel() == SAVE_MB * 2**18 and bool((ckpt["w"] == ckpt["global_step"]).all())
    return ckpt["global_step"]


@pytest.mark.slow
def test_a_kill_during_a_save_on_another_filesystem_leaves_the_previous_checkpoint(second_filesystem, tmp_path):
    temp_dir = tmp_path / "tmp"  # the saver's temp dir, on the filesystem the tests run on
    temp_dir.mkdir()
    assert os.stat(temp_dir).st_dev != os.stat(second_filesystem).st_dev
    target = second_filesystem / "run" / "checkpoints" / "last.ckpt"
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(target)], cwd=ROOT, env={**os.environ, "TMPDIR": str(temp_dir)}
    )
    try:
        deadline = time.time() + 120
        while not target.exists():
            assert saver.poll() is None and time.time() < deadline, "the saver never finished a save"
            time.sleep(0.01)
        time.sleep(0.5)  # the first file is complete by now (or being copied into: Lightning's save)
        full = SAVE_MB * 2**20
        # Kill while a save is under way: its temporary file is beside the target, or (Lightning's
        # own save) the target itself is being copied into from the other filesystem.
        deadline = time.time() + 60
        while True:
            assert time.time() < deadline, "no save seen under way"
            saving = any(p.name.endswith(atomic.TMP_SUFFIX) for p in target.parent.iterdir())
            if saving or target.stat().st_size < full:
                break
        os.kill(saver.pid, signal.SIGKILL)
    finally:
        saver.kill()
        saver.wait()
    assert whole(target) >= 1


def test_the_trainer_saves_through_the_atomic_checkpoint_io(tmp_path):
    cfg = compose_train(["debug=default"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "status.json"
    atomic.write_text(target, "old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_with(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["status.json"]


def empty_replay(seed: int = 0) -> ReplayBuffer:
    return ReplayBuffer(64, 2, (8, 8), frame_stack=2, n_step=1, gamma=0.9, seed=seed, prioritized=True)


def make_replay(seed: int) -> ReplayBuffer:
    buf = empty_replay(seed)
    rng = np.random.default_rng(seed)
    buf.start(rng.integers(0, 255, (2, 8, 8), dtype=np.uint8))
    for _ in range(10 + seed):
        frames = rng.integers(0, 255, (2, 8, 8), dtype=np.uint8)
        buf.add(np.zeros(2, np.int64), np.ones(2, np.float32), np.zeros(2, bool), np.zeros(2, bool), frames)
    return buf


def test_a_crash_between_the_replays_two_renames_leaves_the_previous_save(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "replay"
    first = make_replay(seed=1)
    first.save(path)
    real_rename = Path.rename

    def die_before_the_new_one_is_in_place(self, target):
        if self.name.endswith(".tmp"):
            raise KeyboardInterrupt  # the process stops here: old renamed away, new not yet in place
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", die_before_the_new_one_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        make_replay(seed=2).save(path)
    monkeypatch.undo()
    assert not path.exists()
    found = saved_replay(path)
    assert found == path.with_name("replay.old")
    restored = empty_replay()
    restored.load(found)
    assert restored.written.tolist() == first.written.tolist()
    assert np.array_equal(restored.frames, first.frames) and np.array_equal(restored.priorities, first.priorities)
    # the next save finds the leftover and ends with one whole copy in place
    make_replay(seed=2).save(path)
    assert saved_replay(path) == path and not path.with_name("replay.old").exists()
    assert json.loads((path / "meta.json").read_text())["written"] == make_replay(seed=2).written.tolist()


def test_every_replay_file_is_on_disk_before_it_replaces_the_previous_save(tmp_path, monkeypatch):
    path = tmp_path / "replay"
    synced: set[str] = set()
    real_fsync = os.fsync

    def fsync(fd):
        synced.add(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    real_rename = Path.rename

    def rename(self, target):
        if self.name.endswith(".tmp"):  # the new save replaces the old one: all of it must be on disk
            assert {f"{n}.npy" for n in ReplayBuffer._saved_arrays(buf)} | {"meta.json", self.name} <= synced
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "rename", rename)
    buf = make_replay(seed=1)
    buf.save(path)
    assert saved_replay(path) == path
