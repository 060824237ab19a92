"""A sum tree over replay slots: proportional sampling in O(log n) per draw, all in numpy.

Prioritized replay (Schaul et al. 2016, proportional variant) draws transition i with
probability p_i / sum_k p_k. A flat array would need an O(n) prefix sum per batch (100,000
slots); the tree keeps every partial sum, so a draw, and a priority change, touch one node
per level. Each operation works on a whole batch of leaves at once, level by level: no
Python loop over the batch. A second tree keeps the smallest positive leaf, the
probability of the largest importance weight, which normalizes the weights.
"""

from __future__ import annotations

import numpy as np


def _leaf_count(size: int) -> int:
    """Leaves of the complete binary tree over ``size`` values: the power of two at or above it."""
    return 1 << max(0, size - 1).bit_length()


class SumTree:
    """Sums and positive minima over ``size`` non-negative leaves (float64).

    Node 1 is the root, node k's children are 2k and 2k+1, and leaf i is node
    ``first_leaf + i``, with ``first_leaf`` the power of two at or above ``size``. A leaf of 0
    is never drawn, which is how the replay keeps slots it must not sample out of the tree.
    """

    def __init__(self, size: int):
        self.first_leaf = _leaf_count(size)
        self.levels = self.first_leaf.bit_length() - 1
        self.sums = np.zeros(2 * self.first_leaf, dtype=np.float64)
        # A leaf of 0 holds +inf here, so min is the smallest leaf that can be drawn.
        self.mins = np.full(2 * self.first_leaf, np.inf, dtype=np.float64)

    @staticmethod
    def nbytes(size: int) -> int:
        """Bytes of the two trees over ``size`` leaves."""
        return 2 * 2 * _leaf_count(size) * 8

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self.sums[1])

    @property
    def min(self) -> float:
        """Smallest positive leaf; inf when every leaf is 0."""
        return float(self.mins[1])

    def get(self, leaves: np.ndarray) -> np.ndarray:
        """Values of ``leaves``."""
        return self.sums[self.first_leaf + leaves]

    def set(self, leaves: np.ndarray, values: np.ndarray) -> None:
        """Set ``leaves`` to ``values`` (>= 0) and recompute the nodes above them.

        Parents are recomputed from their children, not shifted by a difference, so no
        rounding error accumulates over millions of updates; a parent reached twice simply
        gets the same value twice. A leaf given twice keeps one of its values.
        """
        nodes = self.first_leaf + np.asarray(leaves, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        sums, mins = self.sums, self.mins
        sums[nodes] = values
        mins[nodes] = np.where(values > 0, values, np.inf)
        for _ in range(self.levels):
            nodes = nodes >> 1
            kids = nodes << 1
            sums[nodes] = sums[kids] + sums[kids + 1]
            mins[nodes] = np.minimum(mins[kids], mins[kids + 1])

    def find(self, mass: np.ndarray) -> np.ndarray:
        """The leaf i where each ``mass`` falls: sum(leaves[:i]) <= mass < sum(leaves[:i + 1]).

        The walk only enters subtrees of positive sum, so it never returns a leaf of 0, even
        when rounding puts a mass at or past the end of the sum it descends into.
        """
        mass = np.array(mass, dtype=np.float64)
        nodes = np.ones(mass.shape, dtype=np.int64)
        for _ in range(self.levels):
            kids = nodes << 1
            left = self.sums[kids]
            right = (mass >= left) & (self.sums[kids + 1] > 0)
            mass -= left * right
            nodes = kids + right
        return nodes - self.first_leaf

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Stratified draw: one leaf from each of ``batch_size`` equal segments of the total.

        Each leaf is drawn in proportion to its value, as with independent draws, but a
        batch covers the whole range of priorities instead of clustering by chance.
        """
        segment = self.total / batch_size
        return self.find((np.arange(batch_size) + rng.random(batch_size)) * segment)
