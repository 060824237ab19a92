import gymnasium as gym
import numpy as np

from mario_rl.config import default_run
from mario_rl.synthetic import ENV_ID, frame_origin, make_vector_env


def test_frames_say_their_episode_step_and_action_and_the_reward_is_the_action():
    env = gym.make(ENV_ID, size=36, actions=5, episode_steps=3)
    frame, _ = env.reset(seed=7)
    tag, step, action = frame_origin(frame)
    assert frame.shape == (36, 36) and frame.dtype == np.uint8 and (step, action) == (0, 0)
    results = [env.step(a) for a in (4, 2, 1)]
    assert [frame_origin(r[0])[1:] for r in results] == [(1, 4), (2, 2), (3, 1)]
    assert {frame_origin(r[0])[0] for r in results} == {tag}
    assert [r[1] for r in results] == [4.0, 2.0, 1.0]
    assert [r[2] for r in results] == [False, False, True] and results[-1][4]["flag_get"]
    assert frame_origin(env.reset()[0])[0] != tag  # the next episode has a tag of its own
    assert frame_origin(gym.make(ENV_ID, size=36).reset(seed=7)[0])[0] == tag  # from the seed


def test_vector_env_stacks_frames_and_applies_the_time_limit():
    envs = make_vector_env(
        default_run(env=dict(num_envs=2, vector="sync", frame_size=36, max_episode_steps=2)).env, episode_steps=50
    )
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 36, 36)
    assert frame_origin(obs[0, -1])[0] != frame_origin(obs[1, -1])[0]  # each worker its own episodes
    envs.step(np.array([1, 1]))
    _, _, terminated, truncated, infos = envs.step(np.array([3, 3]))
    assert truncated.all() and not terminated.any()
    # the final stack: reset frame twice (padding), then the frames after actions 1 and 3
    assert [frame_origin(f)[1:] for f in infos["final_obs"][0]] == [(0, 0), (0, 0), (1, 1), (2, 3)]
    envs.close()
