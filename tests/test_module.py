from types import SimpleNamespace

import pytest
import torch

from mario_rl.augment import shift
from mario_rl.config import default_run, run_config_from, run_dict
from mario_rl.losses import dqn_loss
from mario_rl.module import DQN


def make_module(target_sync: int) -> DQN:
    return DQN(run_dict(default_run(agent=dict(target_sync=target_sync))))


def nudge(module: DQN) -> None:
    with torch.no_grad():
        for p in module.online.parameters():
            p.add_(0.01)


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_target_starts_equal_and_syncs_each_time_env_steps_cross_a_multiple():
    module = make_module(target_sync=100)
    assert same(module.online, module.target)
    synced = []
    for env_steps in [4, 96, 100, 104, 196, 208, 212, 300]:
        nudge(module)
        module.on_train_batch_end(None, {"env_steps": env_steps}, 0)
        synced.append(same(module.online, module.target))
    # crossings of 100, 200 (first seen at 208) and 300
    assert synced == [False, False, True, False, False, True, False, True]


def test_target_has_no_gradients_and_the_optimizer_only_moves_online():
    module = make_module(target_sync=100)
    assert not any(p.requires_grad for p in module.target.parameters())
    optimizer = module.configure_optimizers()
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in module.online.parameters()}


@pytest.mark.parametrize(("precision", "fused"), [("32-true", True), ("bf16-mixed", False), ("16-mixed", False)])
def test_adam_is_fused_unless_lightning_must_clip_mixed_precision_gradients(precision, fused):
    module = make_module(target_sync=100)
    module.trainer = SimpleNamespace(precision=precision)
    options = module.configure_optimizers().defaults
    assert (bool(options["fused"]), bool(options["foreach"])) == (fused, not fused)


def test_a_resumed_optimizer_takes_this_runs_kernel_not_the_saved_one():
    saved = make_module(target_sync=100)
    saved.trainer = SimpleNamespace(precision="bf16-mixed")
    checkpoint = {"global_step": 0, "optimizer_states": [saved.configure_optimizers().state_dict()]}
    resumed = make_module(target_sync=100)
    resumed.trainer = SimpleNamespace(precision="32-true")
    resumed.on_load_checkpoint(checkpoint)
    optimizer = resumed.configure_optimizers()
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    assert (optimizer.param_groups[0]["fused"], optimizer.param_groups[0]["foreach"]) == (True, False)


@pytest.mark.parametrize("pad", [0, 2])
def test_training_step_feeds_both_nets_the_shifted_stacks(pad, monkeypatch):
    module = DQN(run_dict(default_run(agent=dict(random_shift=pad))))
    monkeypatch.setattr(module, "_log_step", lambda *args: None)
    seen: list[tuple[str, torch.Tensor]] = []
    for name in ("online", "target"):
        getattr(module, name).register_forward_pre_hook(lambda net, args, name=name: seen.append((name, args[0])))
    generator = torch.Generator().manual_seed(3)
    obs, next_obs = (torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8, generator=generator) for _ in "ab")
    batch = {"obs": obs, "next_obs": next_obs, "actions": torch.zeros(4, dtype=torch.int64)}
    batch |= {"returns": torch.zeros(4), "discounts": torch.ones(4), "env_steps": 0}
    torch.manual_seed(7)
    module.training_step(batch, 0)
    torch.manual_seed(7)  # the same draws, in the same order: obs first, then next_obs
    expected_obs = shift(obs, pad, torch.randint(0, 2 * pad + 1, (4, 2))) if pad else obs
    expected_next = shift(next_obs, pad, torch.randint(0, 2 * pad + 1, (4, 2))) if pad else next_obs
    assert [name for name, _ in seen] == ["online", "online", "target"]
    assert torch.equal(seen[0][1], expected_obs)
    assert torch.equal(seen[1][1], expected_next) and torch.equal(seen[2][1], expected_next)
    assert torch.equal(seen[0][1], obs) == (pad == 0)


def test_without_double_q_an_update_skips_the_online_net_on_next_states_and_bootstraps_from_the_target_max(
    monkeypatch,
):
    module = DQN(run_dict(default_run(agent=dict(double_q=False))))
    monkeypatch.setattr(module, "_log_step", lambda *args: None)
    seen: list[str] = []
    for name in ("online", "target"):
        getattr(module, name).register_forward_pre_hook(lambda net, args, name=name: seen.append(name))
    generator = torch.Generator().manual_seed(5)
    obs, next_obs = (torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8, generator=generator) for _ in "ab")
    actions = torch.tensor([0, 1, 2, 3])
    returns, discounts = torch.tensor([1.0, -1.0, 0.5, 2.0]), torch.tensor([0.9, 0.0, 0.81, 0.9])
    batch = {"obs": obs, "next_obs": next_obs, "actions": actions, "returns": returns, "discounts": discounts}
    loss = module.training_step(batch | {"env_steps": 0}, 0)
    assert seen == ["online", "target"]
    with torch.no_grad():
        q_taken = module.online(obs)[torch.arange(4), actions]
        expected = returns + discounts * module.target(next_obs).max(dim=1).values
    torch.testing.assert_close(loss, torch.nn.functional.smooth_l1_loss(q_taken, expected))


class RecordingStream:
    """Stands in for the ExperienceStream: no finished episodes, remembers the priorities it gets."""

    def __init__(self):
        self.finished: list = []
        self.updates: list[tuple[torch.Tensor, ...]] = []

    def update_priorities(self, envs, slots, td_errors):
        self.updates.append((envs, slots, td_errors))


def test_a_prioritized_batch_weights_the_loss_and_sends_its_td_errors_back():
    module = DQN(run_dict(default_run(replay=dict(prioritized=True))))
    module.trainer = SimpleNamespace(log_every_n_steps=1000, global_step=0)
    module.stream = RecordingStream()
    torch.manual_seed(0)
    batch = {
        "obs": torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8),
        "next_obs": torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8),
        "actions": torch.tensor([0, 1, 2, 3]),
        "returns": torch.tensor([1.0, -1.0, 0.5, 2.0]),
        "discounts": torch.full((4,), 0.9),
        "weights": torch.tensor([1.0, 0.5, 0.25, 0.0]),
        "envs": torch.tensor([0, 1, 2, 3]),
        "slots": torch.tensor([5, 6, 7, 8]),
        "env_steps": 100,
        "epsilon": 0.5,
        "priority_beta": 0.5,
    }
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        q, next_q = module.online(batch["obs"]), module.online(batch["next_obs"])
        args = (q, batch["actions"], next_q, module.target(batch["next_obs"]), batch["returns"], batch["discounts"])
        weighted, td_errors = dqn_loss(*args, batch["weights"])
        unweighted, _ = dqn_loss(*args)
    assert loss.item() == pytest.approx(weighted.item()) and weighted.item() != pytest.approx(unweighted.item())
    [(envs, slots, priorities)] = module.stream.updates
    assert envs.tolist() == [0, 1, 2, 3] and slots.tolist() == [5, 6, 7, 8]
    torch.testing.assert_close(priorities, td_errors.abs())


def test_a_checkpoint_from_before_jump_release_plays_on_the_raw_pad():
    saved = run_dict(default_run())
    assert run_config_from({"run": saved}).env.release_jump is True  # today's default, as saved
    del saved["env"]["release_jump"]
    assert run_config_from({"run": saved}).env.release_jump is False
    saved["env"]["release_jump"] = False
    assert run_config_from({"run": saved}).env.release_jump is False


def test_a_resumed_optimizer_takes_the_runs_lr_and_eps_not_the_saved_ones():
    saved = DQN(run_dict(default_run(agent={"lr": 1e-3, "adam_eps": 1e-8})))
    saved.trainer = SimpleNamespace(precision="32-true")
    checkpoint = {"global_step": 0, "optimizer_states": [saved.configure_optimizers().state_dict()]}
    resumed = DQN(run_dict(default_run(agent={"lr": 2e-4, "adam_eps": 1e-4})))  # ckpt_path=last agent.lr=2e-4
    resumed.trainer = SimpleNamespace(precision="32-true")
    resumed.on_load_checkpoint(checkpoint)
    optimizer = resumed.configure_optimizers()
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    assert (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["eps"]) == (2e-4, 1e-4)
