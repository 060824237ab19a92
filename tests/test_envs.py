import itertools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from mario_rl.config import default_run, run_dict
from mario_rl.envs import (
    ClassicReward,
    FrameTap,
    JumpRelease,
    NoProgressTimeout,
    ResizeCrop,
    SkipMaxGray,
    make_env,
    make_vector_env,
    num_actions,
)
from mario_rl.module import DQN


class ScriptedEnv(gym.Env):
    """Plays back scripted per-frame infos; frame t is a 240x256 image filled with t."""

    observation_space = gym.spaces.Box(0, 255, (240, 256, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, infos: list[dict[str, Any]], end_at: int | None = None):
        self.infos = infos
        self.end_at = end_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros((240, 256, 3), np.uint8), dict(self.infos[0])

    def step(self, action):
        self.t += 1
        done = self.end_at is not None and self.t >= self.end_at
        return np.zeros((240, 256, 3), np.uint8), 1.0, done, False, dict(self.infos[min(self.t, len(self.infos) - 1)])

    def observation(self, mode, output):
        output[:] = self.t
        return output


def info(x: int, time: float = 0.0, death: float = 0.0) -> dict[str, Any]:
    return {"x_pos": x, "reward_components": {"time": time, "death": death}}


def test_classic_reward_by_hand():
    env = ClassicReward(ScriptedEnv([info(40), info(43), info(50), info(48, time=-1), info(48, death=-25)]))
    env.reset()
    rewards = [env.step(0)[1] for _ in range(4)]
    # +3; a jump of 7 is a warp/reset artefact and pays 0; -2 - 1 for the clock; death -25 clipped to -15
    assert rewards == [3.0, 0.0, -3.0, -15.0]
    assert env.step(0)[4]["package_reward"] == 1.0


def test_skip_max_pools_the_last_two_frames_and_uses_the_last_alone_on_early_end():
    env = SkipMaxGray(ScriptedEnv([info(0)] * 10), skip=4)
    obs, _ = env.reset()
    assert obs.shape == (240, 256) and obs.dtype == np.uint8
    obs, reward, *_ = env.step(0)
    assert reward == 4.0 and (obs == 4).all()  # frames 1..4: max(3, 4)
    ended = SkipMaxGray(ScriptedEnv([info(0)] * 10, end_at=6), skip=4)
    ended.reset()
    ended.step(0)  # frames 1..4
    obs, reward, terminated, *_ = ended.step(0)  # frames 5, 6 -> ends on 6
    assert terminated and reward == 2.0 and (obs == 6).all()


def test_frame_tap_sees_every_frame_of_a_skip_window():
    seen = []
    env = SkipMaxGray(
        FrameTap(ScriptedEnv([info(x) for x in range(10)], end_at=6), lambda f, r, i: seen.append((r, i["x_pos"]))),
        skip=4,
    )
    env.reset()
    env.step(0)  # frames 1..4
    env.step(0)  # frames 5, 6: the episode ends inside the window
    assert seen == [(0.0, 0), (1.0, 1), (1.0, 2), (1.0, 3), (1.0, 4), (1.0, 5), (1.0, 6)]


def test_make_env_taps_full_size_colour_frames_only_when_asked():
    frames = []
    env = make_env(default_run().env, frame_sink=lambda frame, reward, info: frames.append(frame.copy()))
    env.reset(seed=0)
    env.step(1)
    assert len(frames) == 1 + 4 and frames[0].shape == (240, 256, 3) and frames[0].dtype == np.uint8
    plain = make_env(default_run().env)
    assert not any(isinstance(w, FrameTap) for w in iter_wrappers(plain))
    assert any(isinstance(w, FrameTap) for w in iter_wrappers(env))


def iter_wrappers(env: gym.Env):
    while isinstance(env, gym.Wrapper):
        yield env
        env = env.env


def test_crop_drops_the_score_bar():
    frame = np.zeros((240, 256), np.uint8)
    frame[:36] = 255  # the score bar band of the NES screen
    plain = ResizeCrop(ScriptedEnv([info(0)]), 84, crop=False).observation(frame)
    cropped = ResizeCrop(ScriptedEnv([info(0)]), 84, crop=True).observation(frame)
    assert plain.shape == cropped.shape == (84, 84)
    assert plain[:10].mean() > 200  # rows 0-12 of 84 are the bar
    assert cropped.max() < 20  # the notebook's crop starts at row 18 of 110 (y = 39 of 240)


def test_no_progress_timeout_truncates_a_stuck_mario():
    xs = [info(x) for x in [10, 11, 12, 12, 12, 12, 13]]
    env = NoProgressTimeout(ScriptedEnv(xs), patience=3)
    env.reset()
    flags = [env.step(0)[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]


class ScriptedRam(gym.Env):
    """Records the controller byte of each frame; Mario's float state after frame t is ``states[t]``."""

    observation_space = gym.spaces.Box(0, 255, (240, 256, 3), np.uint8)
    action_space = gym.spaces.Discrete(256)

    def __init__(self, states: list[int]):
        self.states = states
        self.ram = np.zeros(2048, np.uint8)
        self.sent: list[int] = []

    def reset(self, *, seed=None, options=None):
        self.sent = []
        return np.zeros((240, 256, 3), np.uint8), {}

    def step(self, action):
        self.ram[0x001D] = self.states[len(self.sent)]
        self.sent.append(action)
        return np.zeros((240, 256, 3), np.uint8), 0.0, False, False, {}


def test_jump_release_lets_go_of_a_after_two_grounded_frames_only():
    # take-off (air one frame after the press), 2 frames in the air, landing, then standing
    nes = ScriptedRam([0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    env = JumpRelease(nes)
    env.reset()
    for action in [0b10000001] * 8 + [0b10000000, 0b10000001, 0b10000011]:
        env.step(action)
    # frame 6 (index 5): A held on the ground after frames 4 and 5 -> sent without A, right kept;
    # frame 7 presses again; frame 9 has no A to drop; frames 10-11 are a fresh press (B kept)
    assert nes.sent == [0b10000001] * 5 + [0b10000000] + [0b10000001] * 2 + [0b10000000, 0b10000001, 0b10000011]
    env.reset()
    env.step(0b10000001)
    assert nes.sent == [0b10000001]  # reset forgets the grounded frames


def mario_heights(release_jump: bool, steps: int) -> list[int]:
    """Mario's height after each agent step of holding right+A from a standstill, on the real 1-1."""
    env = make_env(default_run(env=dict(release_jump=release_jump, stuck_patience=None)).env)
    env.reset(seed=0)
    heights = []
    for _ in range(steps):
        _, _, terminated, _, _ = env.step(2)  # right_only: right + A
        assert not terminated
        heights.append(env.unwrapped.nes._y_position)  # the current level's emulator
    env.close()
    return heights


def test_jump_release_makes_a_held_jump_action_jump_again_on_the_real_emulator():
    held, released = mario_heights(False, 30), mario_heights(True, 30)
    take_offs = [sum(1 for a, b in itertools.pairwise(h) if a == 79 and b > 79) for h in (held, released)]
    # 79 is standing on the ground of 1-1. Held A jumps once (the first step leaves the ground)
    assert held[0] > 79 and take_offs[0] == 0 and max(held[12:]) == 79
    assert take_offs[1] >= 2
    # in the air nothing changes: the first jump is the same high jump, step by step
    first_landing = held.index(79)
    assert released[:first_landing] == held[:first_landing] and max(held) == max(released[:first_landing])


@pytest.mark.parametrize(("actions", "buttons"), [("right_only", 5), ("simple", 7), ("complex", 12)])
def test_env_actions_sizes_the_pad_and_the_q_head(actions, buttons):
    env = make_env(default_run(env=dict(actions=actions)).env)
    assert env.action_space.n == num_actions(actions) == buttons
    env.close()
    module = DQN(run_dict(default_run(env=dict(actions=actions))))
    assert module(torch.zeros(2, 4, 84, 84)).shape == (2, buttons)


def test_real_emulator_observations_are_uint8_stacks():
    env = make_env(default_run(env=dict(level="1-2", actions="simple")).env)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.action_space.n == 7
    assert all((obs[i] == obs[0]).all() for i in range(4))  # reset pads with the first frame
    assert set(info) >= {"x_pos", "flag_get", "time", "world", "stage"} and (info["world"], info["stage"]) == (1, 2)
    assert obs.std() > 5  # a real picture, not a blank
    x0 = info["x_pos"]
    total = 0.0
    for _ in range(20):
        obs, reward, _terminated, _truncated, info = env.step(1)  # right
        total += reward
    # classic reward over 20 steps of running right = x progress + clock ticks (no death)
    assert info["x_pos"] > x0 and total == pytest.approx(info["x_pos"] - x0 - (400 - info["time"]), abs=1)
    assert (obs[3] != obs[0]).any()


def test_vector_env_hands_back_the_final_observation_on_time_out():
    envs = make_vector_env(default_run(env=dict(num_envs=2, vector="sync", max_episode_steps=5)).env)
    obs, _ = envs.reset(seed=0)
    for _ in range(5):
        obs, _rewards, terminated, truncated, infos = envs.step(np.array([1, 0]))
    assert truncated.tolist() == [True, True] and not terminated.any()
    final = np.stack(infos["final_obs"])
    assert final.shape == (2, 4, 84, 84)
    assert (obs[:, 0] == obs[:, 3]).all()  # the new episodes' reset stacks
    assert infos["final_info"]["x_pos"][0] > infos["final_info"]["x_pos"][1]  # right beat NOOP
    envs.close()
