import torch

from mario_rl.nets import NatureCNN


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
