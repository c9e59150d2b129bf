"""Device-resident replay memory: one stored frame per step, n-step returns, proportional prioritized sampling."""
from core.replay.memory import ReplayBatch, ReplayMemory
from core.replay.sum_tree import SumTree

__all__ = ["ReplayBatch", "ReplayMemory", "SumTree"]
