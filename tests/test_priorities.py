import numpy as np
import pytest

from mario_rl.priorities import SumTree


def hand_built() -> SumTree:
    """Leaves 1, 0, 3, 2, 0, 4 (six of eight; the last two are padding)."""
    tree = SumTree(6)
    tree.set(np.arange(6), np.array([1.0, 0.0, 3.0, 2.0, 0.0, 4.0]))
    return tree


def test_totals_and_minimum_by_hand():
    tree = hand_built()
    assert tree.first_leaf == 8
    # pairs (1+0, 3+2, 0+4, 0+0), then halves (1+5, 4+0), then the root
    assert tree.sums[4:8].tolist() == [1.0, 5.0, 4.0, 0.0]
    assert tree.sums[2:4].tolist() == [6.0, 4.0]
    assert tree.total == 10.0
    assert tree.min == 1.0  # the zero leaves do not count
    tree.set(np.array([0, 4]), np.array([0.0, 5.0]))  # leaves 0, 0, 3, 2, 5, 4
    assert (tree.total, tree.min) == (14.0, 2.0)
    assert tree.get(np.array([0, 4, 5])).tolist() == [0.0, 5.0, 4.0]


def test_prefix_sum_lookup_by_hand_never_lands_on_a_zero_leaf():
    tree = hand_built()
    # cumulative sums 1, 1, 4, 6, 6, 10: leaf 0 owns [0, 1), leaf 2 [1, 4), leaf 3 [4, 6), leaf 5 [6, 10)
    mass = np.array([0.0, 0.999, 1.0, 3.999, 4.0, 5.999, 6.0, 9.999])
    assert tree.find(mass).tolist() == [0, 0, 2, 2, 3, 3, 5, 5]
    # at or past the total (rounding can get there) the walk keeps to the last positive leaf
    assert tree.find(np.array([10.0, 12.0])).tolist() == [5, 5]


@pytest.mark.parametrize("seed", range(5))
def test_stratified_sampling_takes_one_leaf_per_segment(seed):
    tree = SumTree(4)
    tree.set(np.arange(4), np.ones(4))
    # four segments of mass 1 are the four leaves: independent draws would repeat a leaf 90% of the time
    assert tree.sample(4, np.random.default_rng(seed)).tolist() == [0, 1, 2, 3]


def test_a_tree_of_one_leaf():
    tree = SumTree(1)
    tree.set(np.array([0]), np.array([2.5]))
    assert (tree.total, tree.min, tree.find(np.array([1.0])).tolist()) == (2.5, 2.5, [0])


def test_bytes_of_the_trees():
    # two float64 trees of 2 * 131,072 nodes for 100,000 leaves
    assert SumTree.nbytes(100_000) == 2 * 2 * 131_072 * 8 == SumTree(100_000).sums.nbytes * 2
