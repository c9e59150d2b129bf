"""Device-resident replay memory: one stored frame per step, n-step returns, uniform or proportional prioritized sampling."""
from core.replay.memory import ReplayBatch, ReplayMemory
from core.replay.samplers import PrioritizedSampler, Sampler, UniformSampler
from core.replay.sum_tree import SumTree

__all__ = ["PrioritizedSampler", "ReplayBatch", "ReplayMemory", "Sampler", "SumTree", "UniformSampler"]
