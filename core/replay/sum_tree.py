"""A sum tree of sampling weights in device tensors: sqrt(N) blocks of sqrt(N) leaves, two levels deep.

Two wide levels instead of a binary tree because a whole batch is then sampled or updated with a fixed
handful of tensor operations (a cumsum over the block sums, one over each chosen block), where a binary
tree needs log2(N) rounds of tiny gathers; on both CPU and GPU it is the number of operations, not the
arithmetic, that sets the latency. Each block's sum and minimum are recomputed from its leaves on every
update, so no rounding error accumulates however long the run.
"""
from __future__ import annotations

import math

import torch


class SumTree:
    """Non-negative leaf weights; samples leaves in proportion to their weight, never a zero one."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.fanout = math.isqrt(max(size - 1, 0)) + 1  # ceil(sqrt(size)): as many blocks as leaves per block
        self.num_blocks = -(-size // self.fanout)
        self.leaves = torch.zeros(self.num_blocks * self.fanout, dtype=torch.float32, device=device)
        # Block sums in float64 so that sampling by cumulative sums stays exact to far below one leaf's weight,
        # after a constant zero so that their cumulative sum starts with the zero that precedes block 0.
        self._zero_and_block_sums = torch.zeros(self.num_blocks + 1, dtype=torch.float64, device=device)
        self.block_sums = self._zero_and_block_sums[1:]
        self._zero = self._zero_and_block_sums[0]
        self.block_mins = torch.full((self.num_blocks,), math.inf, dtype=torch.float32, device=device)

    @staticmethod
    def bytes_needed(size: int) -> int:
        """Bytes the tree of `size` leaves allocates, known before allocating it."""
        fanout = math.isqrt(max(size - 1, 0)) + 1
        num_blocks = -(-size // fanout)
        return num_blocks * fanout * 4 + (num_blocks + 1) * 8 + num_blocks * 4

    def set(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Write leaf weights (int64 indices, float values) and recompute the sums and minima of their blocks."""
        self.leaves[indices] = values.to(self.leaves.dtype)
        blocks = torch.div(indices, self.fanout, rounding_mode="floor")
        members = self.leaves.view(self.num_blocks, self.fanout).index_select(0, blocks)
        # A block listed twice gets the same recomputed value twice, so duplicate writes agree.
        self.block_sums[blocks] = members.sum(dim=1, dtype=torch.float64)
        positive = torch.where(members > 0, members, math.inf)
        self.block_mins[blocks] = positive.amin(dim=1)

    def total(self) -> torch.Tensor:
        """The root: the sum of all leaf weights (float64 scalar tensor)."""
        return self.block_sums.sum()

    def min_positive(self) -> torch.Tensor:
        """The smallest non-zero leaf weight (inf when all are zero)."""
        return self.block_mins.min()

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` leaf indices drawn independently with probability weight / total; the total must be > 0."""
        cumulative = torch.cumsum(self._zero_and_block_sums, dim=0)  # cumulative[b]: the weight before block b
        uniforms = torch.rand((count, 2), dtype=torch.float64, device=self.leaves.device, generator=generator)
        # A uniform scaled to just below a total makes searchsorted(right=True) land where the cumulative sum
        # exceeds it, so never on a zero weight, even where rounding would push a product onto the end.
        targets = uniforms[:, 0] * torch.nextafter(cumulative[-1], self._zero)
        blocks = torch.searchsorted(cumulative[1:], targets, right=True)
        members = self.leaves.view(self.num_blocks, self.fanout).index_select(0, blocks)
        within = torch.cumsum(members, dim=1, dtype=torch.float64)
        # The leaf is a second, independent draw inside the block: P = block weight / total * weight / block weight.
        targets = uniforms[:, 1:] * torch.nextafter(within[:, -1:], self._zero)
        offsets = torch.searchsorted(within, targets, right=True).squeeze(1)
        return torch.add(offsets, blocks, alpha=self.fanout)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The leaves and block figures themselves (no copies)."""
        return {"leaves": self.leaves, "block_sums": self._zero_and_block_sums, "block_mins": self.block_mins}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a `state_dict` into this tree's tensors (same size required)."""
        for name, tensor in self.state_dict().items():
            tensor.copy_(state[name])
