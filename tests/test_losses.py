import torch

from mario_rl.losses import double_dqn_targets, dqn_loss, dqn_targets


def test_double_dqn_target_uses_online_argmax_and_target_value():
    next_q_online = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    next_q_target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    returns = torch.tensor([1.0, -2.0])
    discounts = torch.tensor([0.9, 0.0])
    # row 0: online argmax is action 1 -> target value 20 -> 1 + 0.9 * 20 = 19
    # row 1: terminal (discount 0) -> -2
    torch.testing.assert_close(
        double_dqn_targets(next_q_online, next_q_target, returns, discounts), torch.tensor([19.0, -2.0])
    )


def test_dqn_target_takes_the_target_nets_max_whatever_the_online_net_prefers():
    next_q_target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    returns = torch.tensor([1.0, -2.0])
    discounts = torch.tensor([0.9, 0.0])
    # row 0: max 30 -> 1 + 0.9 * 30 = 28 (Double DQN gave 19 with the online argmax 1); row 1: terminal
    torch.testing.assert_close(dqn_targets(next_q_target, returns, discounts), torch.tensor([28.0, -2.0]))
    q = torch.tensor([[0.0, 27.0, 0.0], [1.0, 0.0, -2.5]])
    _, td = dqn_loss(q, torch.tensor([1, 2]), None, next_q_target, returns, discounts)
    torch.testing.assert_close(td, torch.tensor([1.0, 0.5]))


def test_loss_is_smooth_l1_against_hand_computation():
    q = torch.tensor([[0.0, 18.5, 0.0], [1.0, 0.0, -4.0]], requires_grad=True)
    actions = torch.tensor([1, 2])
    next_q_online = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    next_q_target = torch.tensor([[10.0, 20.0, 30.0], [7.0, 8.0, 9.0]])
    returns = torch.tensor([1.0, -2.0])
    discounts = torch.tensor([0.9, 0.0])
    loss, td = dqn_loss(q, actions, next_q_online, next_q_target, returns, discounts)
    # td = target - q(s,a): 19 - 18.5 = 0.5 (quadratic: 0.5*0.5^2 = 0.125); -2 - -4 = 2 (linear: 2 - 0.5 = 1.5)
    torch.testing.assert_close(td, torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(loss, torch.tensor((0.125 + 1.5) / 2))
    loss.backward()
    # d/dq of mean Huber: -(td clipped to [-1, 1]) / batch on the taken action only
    torch.testing.assert_close(q.grad, torch.tensor([[0.0, -0.25, 0.0], [0.0, 0.0, -0.5]]))


def test_importance_weights_scale_each_sample():
    q = torch.tensor([[0.0], [0.0]])
    actions = torch.tensor([0, 0])
    zeros = torch.zeros(2, 1)
    loss, _ = dqn_loss(q, actions, zeros, zeros, torch.tensor([0.5, 3.0]), torch.zeros(2), torch.tensor([2.0, 0.0]))
    # per-sample Huber: 0.125 and 2.5; weighted mean: (2 * 0.125 + 0) / 2
    torch.testing.assert_close(loss, torch.tensor(0.125))


def test_huber_delta_moves_the_switch_from_quadratic_to_linear():
    q = torch.tensor([[0.0], [0.0], [0.0]], requires_grad=True)
    actions = torch.zeros(3, dtype=torch.int64)
    zeros = torch.zeros(3, 1)
    returns = torch.tensor([3.0, -20.0, 10.0])  # td = returns: the targets do not bootstrap
    loss, td = dqn_loss(q, actions, zeros, zeros, returns, torch.zeros(3), huber_delta=10.0)
    torch.testing.assert_close(td, returns)
    # delta 10: |3| < 10 is quadratic, 0.5 * 9 / 10 = 0.45; |-20| is linear, 20 - 5 = 15; |10| sits
    # on the switch, where both forms give 5
    torch.testing.assert_close(loss, torch.tensor((0.45 + 15.0 + 5.0) / 3))
    loss.backward()
    # gradient -clip(td / delta, -1, 1) / batch: -0.3, +1, -1, each over 3
    torch.testing.assert_close(q.grad, torch.tensor([[-0.1], [1 / 3], [-1 / 3]]))
    # the same gradient at the output as delta 1 on rewards scaled by 1/delta
    q_scaled = torch.zeros(3, 1, requires_grad=True)
    dqn_loss(q_scaled, actions, zeros, zeros, returns / 10.0, torch.zeros(3))[0].backward()
    torch.testing.assert_close(q_scaled.grad, q.grad)
