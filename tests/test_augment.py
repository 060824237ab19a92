"""Random-shift augmentation: crops of the border-repeated stack, checked pixel by pixel."""

import torch

from mario_rl.augment import random_shift, shift

# one stack of two 3x3 frames; the second is the first plus 10
FRAME = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.uint8)
STACK = torch.stack([FRAME, FRAME + 10]).unsqueeze(0)


def test_centre_offset_leaves_the_stack_unchanged():
    assert torch.equal(shift(STACK, 1, torch.tensor([[1, 1]])), STACK)


def test_corner_offsets_shift_by_pad_and_repeat_the_border():
    down_right = shift(STACK, 1, torch.tensor([[0, 0]]))  # the window starts in the padding
    assert down_right.dtype == torch.uint8
    assert down_right[0, 0].tolist() == [[1, 1, 2], [1, 1, 2], [4, 4, 5]]
    assert down_right[0, 1].tolist() == [[11, 11, 12], [11, 11, 12], [14, 14, 15]]
    up_left = shift(STACK, 1, torch.tensor([[2, 2]]))
    assert up_left[0, 0].tolist() == [[5, 6, 6], [8, 9, 9], [8, 9, 9]]


def test_each_stack_of_a_batch_takes_its_own_offset():
    batch = torch.cat([STACK, STACK])
    out = shift(batch, 1, torch.tensor([[1, 1], [2, 1]]))
    assert torch.equal(out[0], STACK[0])
    assert out[1, 0].tolist() == [[4, 5, 6], [7, 8, 9], [7, 8, 9]]  # one row up, last row repeated


def test_random_offsets_cover_every_shift_and_keep_shape():
    torch.manual_seed(0)
    batch = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(400, 1, 1, 1)
    out = random_shift(batch, 2)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    # the top-left pixel of a crop at offset (dy, dx) is the original pixel (dy - 2, dx - 2), clamped
    seen = {int(v) for v in out[:, 0, 0, 0]}
    assert seen == {4 * r + c for r in range(3) for c in range(3)}
