"""Reinforcement-learning agents and their training loop."""
from agents import loop  # noqa: F401  (registers the dqn task)
