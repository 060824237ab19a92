import pytest
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from mario_rl.losses import double_dqn_targets
from mario_rl.nets import NatureCNN, pixel_conv


def test_dueling_head_is_value_plus_advantage_minus_its_mean():
    torch.manual_seed(0)
    net = NatureCNN(4, 5, dueling=True)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    features = net.torso(obs.float() / 255.0)
    value, advantage = net.value(features), net.head(features)
    expected = value + advantage - advantage.mean(dim=1, keepdim=True)
    q = net(obs)
    torch.testing.assert_close(q, expected)
    # the mean advantage is removed, so the mean Q over actions is the value stream alone
    torch.testing.assert_close(q.mean(dim=1), value.squeeze(1))


def test_plain_head_has_no_value_stream_and_the_nature_sizes():
    net = NatureCNN(4, 7, dueling=False)
    assert not hasattr(net, "value")
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 7)
    # Nature DQN: three convs and a 3136 -> 512 -> 7 head
    convs = 32 * 4 * 8 * 8 + 32 + 64 * 32 * 4 * 4 + 64 + 64 * 64 * 3 * 3 + 64
    assert sum(p.numel() for p in net.parameters()) == convs + 3136 * 512 + 512 + 512 * 7 + 7


def near_87(dueling: bool) -> NatureCNN:
    """A net whose Q-values sit near 87, where bf16 has steps of 0.5, and whose best action wins by 0.15.

    The last layers' weights are scaled down so the frames move Q by about 0.005: the torso's
    bf16 rounding then moves it far less than the gaps between the actions.
    """
    torch.manual_seed(0)
    net = NatureCNN(4, 5, dueling=dueling)
    with torch.no_grad():
        net.head[2].weight.mul_(0.01)
        net.head[2].bias.copy_(torch.tensor([87.3, 87.6, 87.0, 86.7, 87.45]))
        if dueling:
            net.value[2].weight.mul_(0.01)
            net.value[2].bias.fill_(0.0)
    return net


def test_q_head_returns_float32_while_the_torso_runs_in_bf16_under_autocast():
    net = NatureCNN(4, 5, dueling=True)
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    with MixedPrecision("bf16-mixed", "cpu").forward_context():
        assert net.torso(obs.float()).dtype == torch.bfloat16  # autocast is on
        assert net(obs).dtype == torch.float32


@pytest.mark.parametrize("dueling", [False, True])
def test_bf16_mixed_and_fp32_give_the_same_greedy_actions_and_targets(dueling):
    online, target = near_87(dueling), near_87(dueling)
    generator = torch.Generator().manual_seed(1)
    next_obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=generator)
    returns, discounts = torch.linspace(-15.0, 15.0, 8), torch.full((8,), 0.9)

    def greedy_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            next_online, next_target = online(next_obs), target(next_obs)
        return next_online.argmax(dim=1), double_dqn_targets(next_online, next_target, returns, discounts)

    fp32_actions, fp32_targets = greedy_and_targets()
    with MixedPrecision("bf16-mixed", "cpu").forward_context():
        bf16_actions, bf16_targets = greedy_and_targets()
    # the plain head's best action is 1 (87.6, next 87.45); bf16 outputs would tie 87.3, 87.6 and
    # 87.45 at 87.5 and pick action 0
    assert torch.equal(bf16_actions, fp32_actions)
    if not dueling:
        assert fp32_actions.tolist() == [1] * 8
    # Tolerance 0.01 on targets near 80, a fiftieth of bf16's step there: what the torso's bf16
    # rounding leaves after the scaled-down head (a bf16 head would be off by up to 0.25 * 0.9).
    torch.testing.assert_close(bf16_targets, fp32_targets, rtol=0.0, atol=0.01)


def test_pixel_conv_is_the_conv_of_frames_scaled_to_one_with_the_same_gradients():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, kernel_size=3, stride=2, padding=1)
    obs = torch.randint(0, 256, (2, 4, 12, 12), dtype=torch.uint8)
    folded = pixel_conv(conv, obs)
    folded.square().sum().backward()
    folded_grad, conv.weight.grad = conv.weight.grad.clone(), None
    reference = conv(obs.float() / 255.0)
    reference.square().sum().backward()
    torch.testing.assert_close(folded, reference)
    torch.testing.assert_close(folded_grad, conv.weight.grad)
