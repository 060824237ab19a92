"""The agents shipped in models/ (what `make demo` plays) load and play as trained."""

from dataclasses import asdict

from mario_rl.config import default_run
from mario_rl.evaluation import play_level
from mario_rl.export import load_agent
from tests.conftest import ROOT

SHIPPED = ROOT / "models" / "mario-1-1.safetensors"


def test_the_shipped_agent_is_small_and_trained_with_the_default_recipe():
    assert SHIPPED.stat().st_size < 10_000_000
    run, net = load_agent(SHIPPED)
    assert (run.env.level, run.env.actions, run.agent.n_step, run.agent.dueling) == ("1-1", "right_only", 3, True)
    assert asdict(run.env) == asdict(default_run().env)  # the env the default config builds
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in net.parameters())


def test_the_shipped_agent_gets_past_the_first_pipes_of_1_1():
    run, net = load_agent(SHIPPED)
    [record], _ = play_level(run.env, "1-1", net, episodes=1, epsilon=0.05, seed=0)
    # A random policy dies at the first goomba or stalls at the first pipe (x_pos about 300-700)
    assert record.x_pos > 800


WORLD_1 = ROOT / "models" / "mario-world-1.safetensors"


def test_the_world_1_agent_is_small_and_trained_on_the_four_levels_of_world_1():
    assert WORLD_1.stat().st_size < 10_000_000
    run, _ = load_agent(WORLD_1)
    assert run.env.levels == ["1-1", "1-2", "1-3", "1-4"]
    assert (run.env.level_sampling, run.env.start_states) == ("adaptive", "frontier")


def test_the_world_1_agent_gets_past_the_first_obstacles_of_1_4():
    run, net = load_agent(WORLD_1)
    [record], _ = play_level(run.env, "1-4", net, episodes=1, epsilon=0.05, seed=100)
    # random play (epsilon 1) ended at x_pos 230-743 in five episodes: the fire bars and pits stop it
    assert record.x_pos > 1000
